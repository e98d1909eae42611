"""Presence through the document consumer over the full ASGI stack, in process."""

import asyncio
import io
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.core.management import CommandError, call_command
from django.utils import timezone

from collab import protocol
from materi.asgi import application
from presence import service
from presence.models import Connection
from tests.conftest import token_for

# One event loop for the module. channels_redis 4.3 keeps a per-process lock that
# stays bound to the event loop of a receive cancelled while waiting for it, so a
# receive in a later test's new loop fails with "bound to a different event loop".
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

HUNDRED = "".join(str(index % 10) for index in range(100))


@pytest.fixture
def people(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    vic = make_user("vic")
    document = make_document(
        ada, content=HUNDRED, members=[(bob, "editor"), (vic, "viewer")]
    )
    return {"ada": ada, "bob": bob, "vic": vic, "document": document}


class Socket:
    """An in-process socket with the document state it received on connect."""

    def __init__(self, communicator: WebsocketCommunicator, state: dict):
        self.communicator = communicator
        self.state = state

    @classmethod
    async def open(cls, document, user, client_id: str) -> "Socket":
        path = (
            f"/v1/ws/documents/{document.pk}?client_id={client_id}"
            f"&token={token_for(user)}"
        )
        communicator = WebsocketCommunicator(
            application, path, headers=[(b"user-agent", b"presence-tests/1.0")]
        )
        connected, _ = await communicator.connect()
        assert connected
        state = await communicator.receive_json_from(timeout=5)
        assert state["event"] == "document_state", state
        return cls(communicator, state)

    async def send(self, message_type: str, event: str, data: dict, **extra) -> None:
        await self.communicator.send_json_to(
            {"type": message_type, "event": event, "data": data, **extra}
        )

    async def cursor(self, selections: list, version: int) -> None:
        await self.send(
            "presence", "cursor_update", {"selections": selections, "version": version}
        )

    async def receive(self) -> dict:
        return await self.communicator.receive_json_from(timeout=5)

    async def expect(self, event: str) -> dict:
        message = await self.receive()
        assert message["event"] == event, message
        return message

    async def silent(self, seconds: float = 0.2) -> bool:
        return await self.communicator.receive_nothing(timeout=seconds)

    async def close(self) -> None:
        await self.communicator.disconnect()


# Channels' database_sync_to_async closes the thread's database connection after
# each call, which Django's async ORM methods leave open.


@database_sync_to_async
def connection_row(**lookup) -> Connection:
    return Connection.objects.get(**lookup)


@database_sync_to_async
def row_exists(**lookup) -> bool:
    return Connection.objects.filter(**lookup).exists()


@database_sync_to_async
def create_row(**fields) -> Connection:
    return Connection.objects.create(**fields)


@database_sync_to_async
def delete_rows(**lookup) -> None:
    Connection.objects.filter(**lookup).delete()


@database_sync_to_async
def remaining_client_ids() -> list[str]:
    return list(
        Connection.objects.order_by("client_id").values_list("client_id", flat=True)
    )


def clients_by_user(presence: list) -> dict[int, list[str]]:
    return {
        user["user_id"]: [client["client_id"] for client in user["clients"]]
        for user in presence
    }


async def test_state_lists_present_users_once(people):
    ada_first = await Socket.open(people["document"], people["ada"], "ada-1")
    bob = await Socket.open(people["document"], people["bob"], "bob-1")
    ada_second = await Socket.open(people["document"], people["ada"], "ada-2")

    presence = ada_second.state["data"]["presence"]
    ada_id = people["ada"].pk
    bob_id = people["bob"].pk
    assert clients_by_user(presence) == {
        ada_id: ["ada-1", "ada-2"],
        bob_id: ["bob-1"],
    }
    ada_entry = next(user for user in presence if user["user_id"] == ada_id)
    assert ada_entry["display_name"] == "ada"
    assert ada_entry["color"] == service.color_for_user(ada_id)
    assert ada_entry["clients"][0] == {
        "client_id": "ada-1",
        "selections": [],
        "activity": "active",
    }
    # The first socket saw both later sockets join, each once.
    first_join = await ada_first.expect("join")
    second_join = await ada_first.expect("join")
    assert first_join["data"]["client_id"] == "bob-1"
    assert second_join["data"]["client_id"] == "ada-2"
    assert second_join["data"]["user_id"] == ada_id
    assert second_join["data"]["color"] == ada_entry["color"]
    assert second_join["client_id"] == "ada-2"
    for socket in (ada_first, bob, ada_second):
        await socket.close()


async def test_join_and_leave_reach_others_only(people):
    ada = await Socket.open(people["document"], people["ada"], "ada-1")
    bob = await Socket.open(people["document"], people["bob"], "bob-1")
    join = await ada.expect("join")
    assert join["type"] == "presence"
    assert join["data"] == {
        "client_id": "bob-1",
        "user_id": people["bob"].pk,
        "display_name": "bob",
        "color": service.color_for_user(people["bob"].pk),
        "selections": [],
        "activity": "active",
        "version": 0,
    }
    assert await bob.silent()

    await bob.close()
    leave = await ada.expect("leave")
    assert leave["data"] == {"client_id": "bob-1", "user_id": people["bob"].pk}
    await ada.close()


async def test_connection_row_lifecycle(people):
    ada = await Socket.open(people["document"], people["ada"], "ada-1")
    row = await connection_row(client_id="ada-1")
    assert row.document_id == people["document"].pk
    assert row.user_id == people["ada"].pk
    assert row.user_agent == "presence-tests/1.0"
    assert row.protocol_version == 1
    assert row.channel_name
    await ada.close()
    assert not await row_exists(client_id="ada-1")


async def test_cursor_and_activity_reach_others_only(people):
    ada = await Socket.open(people["document"], people["ada"], "ada-1")
    bob = await Socket.open(people["document"], people["bob"], "bob-1")
    await ada.expect("join")

    await bob.cursor([{"anchor": 3, "head": 7}, {"anchor": 50, "head": 50}], 0)
    update = await ada.expect("cursor_update")
    assert update["data"] == {
        "client_id": "bob-1",
        "user_id": people["bob"].pk,
        "selections": [{"anchor": 3, "head": 7}, {"anchor": 50, "head": 50}],
        "version": 0,
    }
    await bob.send("presence", "activity", {"state": "idle"})
    activity = await ada.expect("activity")
    assert activity["data"] == {
        "client_id": "bob-1",
        "user_id": people["bob"].pk,
        "state": "idle",
    }
    # Repeating the same state sends nothing.
    await bob.send("presence", "activity", {"state": "idle"})
    assert await ada.silent()
    assert await bob.silent()

    # A late joiner sees the cursor and the activity in its state.
    late = await Socket.open(people["document"], people["vic"], "vic-1")
    bob_entry = next(
        user
        for user in late.state["data"]["presence"]
        if user["user_id"] == people["bob"].pk
    )
    assert bob_entry["clients"] == [
        {
            "client_id": "bob-1",
            "selections": [{"anchor": 3, "head": 7}, {"anchor": 50, "head": 50}],
            "activity": "idle",
        }
    ]
    for socket in (ada, bob, late):
        await socket.close()


async def test_cursor_with_old_version_is_moved(people):
    """A selection at 95..100 made before a delete of 0..20 is shown at 75..80."""
    watcher = await Socket.open(people["document"], people["ada"], "watcher")
    author = await Socket.open(people["document"], people["vic"], "author")
    editor = await Socket.open(people["document"], people["bob"], "editor")
    await watcher.expect("join")
    await watcher.expect("join")
    await author.expect("join")

    await editor.send(
        "operation",
        "document_edit",
        {"operation": {"ops": [{"delete": 20}]}, "version": 0},
        client_id="editor",
        message_id="e1",
    )
    await editor.expect("operation_ack")
    await watcher.expect("document_edit")
    await author.expect("document_edit")

    await author.cursor([{"anchor": 95, "head": 100}], 0)
    update = await watcher.expect("cursor_update")
    assert update["data"]["selections"] == [{"anchor": 75, "head": 80}]
    assert update["data"]["version"] == 1
    for socket in (watcher, author, editor):
        await socket.close()


async def test_cursor_followed_by_edit_is_moved(people):
    watcher = await Socket.open(people["document"], people["ada"], "watcher")
    author = await Socket.open(people["document"], people["vic"], "author")
    editor = await Socket.open(people["document"], people["bob"], "editor")
    await watcher.expect("join")
    await watcher.expect("join")

    await author.cursor([{"anchor": 95, "head": 100}], 0)
    update = await watcher.expect("cursor_update")
    assert update["data"]["selections"] == [{"anchor": 95, "head": 100}]
    assert update["data"]["version"] == 0
    await editor.expect("cursor_update")

    await editor.send(
        "operation",
        "document_edit",
        {"operation": {"ops": [{"delete": 20}]}, "version": 0},
        client_id="editor",
        message_id="e1",
    )
    await editor.expect("operation_ack")
    await watcher.expect("document_edit")

    # The server lists the stored selection at the new version.
    late = await Socket.open(people["document"], people["ada"], "late")
    assert late.state["data"]["version"] == 1
    author_entry = next(
        user
        for user in late.state["data"]["presence"]
        if user["user_id"] == people["vic"].pk
    )
    assert author_entry["clients"][0]["selections"] == [{"anchor": 75, "head": 80}]
    for socket in (watcher, author, editor, late):
        await socket.close()


async def test_cursor_clamped_into_document(people):
    watcher = await Socket.open(people["document"], people["ada"], "watcher")
    author = await Socket.open(people["document"], people["bob"], "author")
    await watcher.expect("join")
    await author.cursor([{"anchor": 90, "head": 5000}], 0)
    update = await watcher.expect("cursor_update")
    assert update["data"]["selections"] == [{"anchor": 90, "head": 100}]
    await watcher.close()
    await author.close()


BAD_PRESENCE_INPUT = [
    ("cursor_update", {"version": 0}, "invalid_message", "data.selections"),
    (
        "cursor_update",
        {"selections": [{"anchor": -1, "head": 0}], "version": 0},
        "invalid_message",
        "data.selections[0].anchor",
    ),
    (
        "cursor_update",
        {"selections": [{"anchor": 0, "head": 0}], "version": "x"},
        "invalid_message",
        "data.version",
    ),
    (
        "cursor_update",
        {"selections": [{"anchor": 0, "head": 0}], "version": 9},
        "version_ahead",
        "data.version",
    ),
    ("activity", {"state": "sleeping"}, "invalid_message", "data.state"),
    ("activity", {}, "invalid_message", "data.state"),
    ("join", {}, "unknown_event", "join"),
    ("leave", {}, "unknown_event", "leave"),
]


async def test_bad_presence_input_gets_error(people):
    watcher = await Socket.open(people["document"], people["ada"], "watcher")
    sender = await Socket.open(people["document"], people["bob"], "sender")
    await watcher.expect("join")

    for index, (event, data, code, field) in enumerate(BAD_PRESENCE_INPUT):
        case = f"case {index}: {event} {data}"
        await sender.send("presence", event, data, message_id=f"p{index}")
        error = await sender.expect("error")
        assert error["data"]["code"] == code, case
        assert field in error["data"]["message"], case
        assert error["data"]["message_id"] == f"p{index}", case
    assert await watcher.silent()

    # The socket is still usable.
    await sender.cursor([{"anchor": 1, "head": 2}], 0)
    update = await watcher.expect("cursor_update")
    assert update["data"]["selections"] == [{"anchor": 1, "head": 2}]
    await watcher.close()
    await sender.close()


async def test_viewer_present_but_cannot_edit(people, make_document):
    vic = people["vic"]
    other = await database_sync_to_async(make_document)(
        vic, title="Vic's own", content="mine"
    )
    viewer = await Socket.open(people["document"], vic, "vic-1")
    owner = await Socket.open(other, vic, "vic-2")
    ada = await Socket.open(people["document"], people["ada"], "ada-1")
    assert viewer.state["data"]["role"] == "viewer"
    assert owner.state["data"]["role"] == "owner"
    await viewer.expect("join")

    await viewer.cursor([{"anchor": 2, "head": 4}], 0)
    update = await ada.expect("cursor_update")
    assert update["data"]["user_id"] == vic.pk

    edit = {"operation": {"ops": [{"insert": "x"}]}, "version": 0}
    await viewer.send(
        "operation", "document_edit", edit, client_id="vic-1", message_id="v1"
    )
    rejected = await viewer.expect("error")
    assert rejected["data"]["code"] == "forbidden"
    await owner.send(
        "operation", "document_edit", edit, client_id="vic-2", message_id="v2"
    )
    await owner.expect("operation_ack")

    # Presence stays on its document: the other document lists only vic-2.
    assert clients_by_user(owner.state["data"]["presence"]) == {vic.pk: ["vic-2"]}
    assert await owner.silent()
    for socket in (viewer, owner, ada):
        await socket.close()


async def test_reconnect_same_client_sends_no_leave(people):
    ada = await Socket.open(people["document"], people["ada"], "ada-1")
    old = await Socket.open(people["document"], people["bob"], "bob-1")
    await ada.expect("join")
    new = await Socket.open(people["document"], people["bob"], "bob-1")
    await ada.expect("join")
    assert clients_by_user(new.state["data"]["presence"]) == {
        people["ada"].pk: ["ada-1"],
        people["bob"].pk: ["bob-1"],
    }

    await old.close()
    assert await ada.silent()
    await new.close()
    leave = await ada.expect("leave")
    assert leave["data"]["client_id"] == "bob-1"
    await ada.close()


async def test_heartbeat_refreshes_and_restores_row(people, settings):
    settings.MATERI = {**settings.MATERI, "HEARTBEAT_TIMEOUT": 1.5}
    ada = await Socket.open(people["document"], people["ada"], "ada-1")
    bob = await Socket.open(people["document"], people["bob"], "bob-1")
    await ada.expect("join")
    row = await connection_row(client_id="bob-1")

    # Within a third of the timeout a ping does not write.
    await ada.send("system", "ping", {"timestamp": 1})
    await ada.expect("pong")
    await bob.send("system", "ping", {"timestamp": 1})
    await bob.expect("pong")
    unchanged = await connection_row(pk=row.pk)
    assert unchanged.last_seen == row.last_seen

    await asyncio.sleep(0.55)
    await ada.send("system", "ping", {"timestamp": 2})
    await ada.expect("pong")
    await bob.send("system", "ping", {"timestamp": 2})
    await bob.expect("pong")
    refreshed = await connection_row(pk=row.pk)
    assert refreshed.last_seen > row.last_seen

    # A row deleted behind the socket's back is stored again and announced.
    await delete_rows(pk=row.pk)
    await asyncio.sleep(0.55)
    await bob.send("system", "ping", {"timestamp": 3})
    await bob.expect("pong")
    join = await ada.expect("join")
    assert join["data"]["client_id"] == "bob-1"
    assert await row_exists(client_id="bob-1")
    await ada.close()
    await bob.close()


async def test_terminate_closes_with_4010(people):
    ada = await Socket.open(people["document"], people["ada"], "ada-1")
    bob = await Socket.open(people["document"], people["bob"], "bob-1")
    await ada.expect("join")
    row = await connection_row(client_id="bob-1")

    await get_channel_layer().send(
        row.channel_name,
        {"type": protocol.CHANNEL_TERMINATE, "reason": "disconnected by an operator"},
    )
    output = await bob.communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    assert output["code"] == 4010
    assert output["reason"] == "disconnected by an operator"
    await bob.close()
    leave = await ada.expect("leave")
    assert leave["data"]["client_id"] == "bob-1"
    await ada.close()


async def test_reap_command_removes_stale_rows(people):
    watcher = await Socket.open(people["document"], people["ada"], "watcher")
    vic = await Socket.open(people["document"], people["vic"], "vic-1")
    await watcher.expect("join")
    long_ago = timezone.now() - timedelta(minutes=5)
    stale = {
        "document": people["document"],
        "instance_id": "dead-host:1:0",
        "protocol_version": 1,
        "last_seen": long_ago,
    }
    await create_row(
        user=people["bob"], client_id="bob-1", channel_name="specific.dead!1", **stale
    )
    # A stale row of a client that has reconnected since: no leave for it.
    await create_row(
        user=people["vic"], client_id="vic-1", channel_name="specific.dead!2", **stale
    )

    output = io.StringIO()
    await database_sync_to_async(call_command)("reap_connections", stdout=output)
    assert "Reaped 2 stale connections." in output.getvalue()
    leave = await watcher.expect("leave")
    assert leave["data"] == {"client_id": "bob-1", "user_id": people["bob"].pk}
    assert await watcher.silent()
    assert await remaining_client_ids() == ["vic-1", "watcher"]
    assert not await row_exists(last_seen=long_ago)
    await watcher.close()
    await vic.close()


async def test_reap_command_rejects_negative_age():
    with pytest.raises(CommandError, match="--max-age"):
        await database_sync_to_async(call_command)("reap_connections", max_age=-1)
