"""The document consumer over the full ASGI stack, in process."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from collab.api.membership import set_member_role
from collab.commit import commit
from collab.fanout import operations_group
from collab.models import Document, Operation, Role
from materi.asgi import application
from tests.conftest import token_for
from tests.stored import astored_text

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


@pytest.fixture
def people(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    vic = make_user("vic")
    eve = make_user("eve")
    document = make_document(
        ada, content="Hello", members=[(bob, "editor"), (vic, "viewer")]
    )
    return {"ada": ada, "bob": bob, "vic": vic, "eve": eve, "document": document}


async def open_socket(document_id, token, client_id="c1", extra=""):
    path = f"/v1/ws/documents/{document_id}?client_id={client_id}{extra}"
    if token is not None:
        path += f"&token={token}"
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def joined(document_id, user, client_id="c1"):
    communicator = await open_socket(document_id, token_for(user), client_id)
    state = await communicator.receive_json_from(timeout=5)
    assert state["event"] == "document_state"
    return communicator


def edit(ops, version, message_id="m1", client_id="c1"):
    return {
        "type": "operation",
        "event": "document_edit",
        "data": {"operation": {"ops": ops}, "version": version},
        "client_id": client_id,
        "message_id": message_id,
    }


async def receive(communicator) -> dict:
    """Return the next message that is not a presence event."""
    while True:
        message = await communicator.receive_json_from(timeout=5)
        if message["type"] != "presence":
            return message


async def quiet(communicator, timeout: float = 0.2) -> bool:
    """Return True when nothing but presence events arrives within the timeout."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await communicator.receive_json_from(timeout=timeout)
                if message["type"] != "presence":
                    raise AssertionError(f"unexpected message: {message}")
    except TimeoutError:
        return True


async def close_code(communicator) -> int:
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def stored(document_id):
    document = await Document.objects.aget(pk=document_id)
    return await astored_text(document_id), document.version


async def test_connect_sends_document_state(people):
    document = people["document"]
    communicator = await open_socket(document.pk, token_for(people["bob"]))
    state = await receive(communicator)
    assert state["type"] == "system"
    assert state["event"] == "document_state"
    assert state["data"]["document_id"] == str(document.pk)
    assert state["data"]["title"] == "Notes"
    assert state["data"]["content"] == "Hello"
    assert state["data"]["version"] == 0
    assert state["data"]["role"] == "editor"
    await communicator.disconnect()


@pytest.mark.parametrize(
    "token_kind, expected_code",
    [("missing", 4001), ("garbage", 4001), ("expired", 4001)],
)
async def test_connect_rejects_bad_token(people, token_kind, expected_code):
    token = {
        "missing": None,
        "garbage": "not-a-jwt",
        "expired": await sync_to_async(expired_token)(people["bob"]),
    }[token_kind]
    communicator = await open_socket(people["document"].pk, token)
    assert await close_code(communicator) == expected_code


def expired_token(user) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    return str(token)


async def test_connect_rejects_non_member(people):
    communicator = await open_socket(people["document"].pk, token_for(people["eve"]))
    assert await close_code(communicator) == 4003


@pytest.mark.parametrize(
    "document_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"]
)
async def test_connect_rejects_unknown_document(people, document_id):
    communicator = await open_socket(document_id, token_for(people["bob"]))
    assert await close_code(communicator) == 4004


@pytest.mark.parametrize(
    "extra", ["&client_id=", "&client_id=has%20space", "&version=2", "&since=-1"]
)
async def test_connect_rejects_bad_parameters(people, extra):
    communicator = await open_socket(
        people["document"].pk, token_for(people["bob"]), client_id="c1", extra=extra
    )
    assert await close_code(communicator) == 4000


BAD_FRAMES = [
    ("not json", "invalid_json"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    (
        '{"type": "system", "event": "ping", "data": {"timestamp": '
        + "9" * 5000
        + "}}",
        "invalid_json",
    ),
    ("[1, 2]", "invalid_message"),
    ('{"type": 5, "event": "document_edit"}', "invalid_message"),
    ('{"type": "teleport", "event": "x"}', "unknown_type"),
    ('{"type": "operation", "event": "rename"}', "unknown_event"),
    ('{"type": "system", "event": "operation_ack"}', "unknown_event"),
    (json.dumps({**edit([{"insert": "x"}], 0), "data": []}), "invalid_message"),
    (json.dumps(edit([{"insert": "x"}], "0")), "invalid_message"),
    (json.dumps(edit([{"insert": "x"}], True)), "invalid_message"),
    (json.dumps({**edit([{"insert": "x"}], 0), "message_id": None}), "invalid_message"),
    (json.dumps(edit({"insert": "x"}, 0)), "invalid_operation"),
    (json.dumps(edit([{"retain": 9}, {"insert": "x"}], 0)), "invalid_operation"),
    (json.dumps(edit([{"delete": 0}], 0)), "invalid_operation"),
    (json.dumps(edit([{"insert": "\ud800"}], 0)), "invalid_operation"),
    (json.dumps(edit([{"insert": "a\x00"}], 0)), "invalid_operation"),
    (json.dumps(edit([{"bold": True}], 0)), "invalid_operation"),
    (json.dumps(edit([{"insert": "x"}], 7)), "version_ahead"),
]


@pytest.mark.parametrize("frame, code", BAD_FRAMES)
async def test_bad_frame_gets_error_and_socket_survives(people, frame, code):
    document = people["document"]
    sender = await joined(document.pk, people["bob"], "sender")
    watcher = await joined(document.pk, people["ada"], "watcher")

    await sender.send_to(text_data=frame)
    error = await receive(sender)
    assert error["event"] == "error"
    assert error["data"]["code"] == code
    assert error["data"]["message"]

    # The socket is still usable and the document is unchanged.
    await sender.send_json_to(
        {"type": "system", "event": "ping", "data": {"timestamp": 1}}
    )
    pong = await receive(sender)
    assert pong["event"] == "pong"
    assert pong["data"]["timestamp"] == 1
    assert await stored(document.pk) == ("Hello", 0)
    assert await quiet(watcher, 0.2)
    await sender.disconnect()
    await watcher.disconnect()


async def test_past_the_end_error_names_both_lengths(people):
    sender = await joined(people["document"].pk, people["bob"])
    await sender.send_json_to(edit([{"retain": 9}, {"delete": 3}], 0))
    error = await receive(sender)
    assert error["data"]["code"] == "invalid_operation"
    assert "12" in error["data"]["message"]
    assert "5" in error["data"]["message"]
    assert error["data"]["message_id"] == "m1"
    await sender.disconnect()


async def test_viewer_edit_is_forbidden(people):
    document = people["document"]
    viewer = await joined(document.pk, people["vic"], "viewer")
    watcher = await joined(document.pk, people["ada"], "watcher")
    await viewer.send_json_to(edit([{"insert": "x"}], 0))
    error = await receive(viewer)
    assert error["data"]["code"] == "forbidden"
    assert error["data"]["message_id"] == "m1"
    assert await stored(document.pk) == ("Hello", 0)
    assert await quiet(watcher, 0.2)
    await viewer.disconnect()
    await watcher.disconnect()


async def test_edit_is_acked_stored_and_broadcast(people):
    document = people["document"]
    author = await joined(document.pk, people["bob"], "author")
    other = await joined(document.pk, people["ada"], "other")
    await author.send_json_to(
        edit([{"retain": 5}, {"insert": " world"}], 0, "m1", "author")
    )

    ack = await receive(author)
    assert ack == {
        "type": "system",
        "event": "operation_ack",
        "data": {"message_id": "m1", "version": 0},
    }
    remote = await receive(other)
    assert remote["type"] == "operation"
    assert remote["event"] == "document_edit"
    assert remote["client_id"] == "author"
    assert remote["message_id"] == "m1"
    assert remote["data"]["version"] == 0
    assert remote["data"]["operation"] == {"ops": [{"retain": 5}, {"insert": " world"}]}
    assert remote["data"]["user"]["username"] == "bob"
    assert remote["data"]["timestamp"]
    assert await quiet(author, 0.2)
    assert await stored(document.pk) == ("Hello world", 1)
    await author.disconnect()
    await other.disconnect()


async def test_resubmitted_edit_is_applied_once(people):
    document = people["document"]
    author = await joined(document.pk, people["bob"], "author")
    message = edit([{"insert": ">"}], 0, "m1", "author")
    await author.send_json_to(message)
    first = await receive(author)
    await author.send_json_to(message)
    second = await receive(author)

    assert first["data"] == {"message_id": "m1", "version": 0}
    assert second["data"] == {"message_id": "m1", "version": 0, "duplicate": True}
    assert await stored(document.pk) == (">Hello", 1)
    count = await Operation.objects.filter(document=document).acount()
    assert count == 1
    await author.disconnect()


async def test_resubmit_on_new_socket_gets_original_ack(people):
    document = people["document"]
    first_socket = await joined(document.pk, people["bob"], "author")
    await first_socket.send_json_to(edit([{"insert": ">"}], 0, "m1", "author"))
    await receive(first_socket)
    await first_socket.disconnect()

    second_socket = await joined(document.pk, people["bob"], "author")
    await second_socket.send_json_to(edit([{"insert": ">"}], 0, "m1", "author"))
    ack = await receive(second_socket)
    assert ack["data"] == {"message_id": "m1", "version": 0, "duplicate": True}
    assert await stored(document.pk) == (">Hello", 1)
    await second_socket.disconnect()


async def test_concurrent_edit_gets_missed_operations_before_ack(people):
    document = people["document"]
    first = await joined(document.pk, people["ada"], "first")
    second = await joined(document.pk, people["bob"], "second")
    await first.send_json_to(edit([{"insert": "A"}], 0, "m1", "first"))
    await receive(first)

    # The second client has not read the broadcast yet; its edit is based on 0.
    await second.send_json_to(edit([{"insert": "B"}], 0, "m2", "second"))
    received = [await receive(second) for _ in range(2)]
    assert received[0]["event"] == "document_edit"
    assert received[0]["data"]["version"] == 0
    assert received[1]["event"] == "operation_ack"
    assert received[1]["data"]["version"] == 1
    # The broadcast already delivered before the ack is not sent again.
    assert await quiet(second, 0.3)
    assert await stored(document.pk) == ("ABHello", 2)
    await first.disconnect()
    await second.disconnect()


async def test_reconnect_with_since_gets_catch_up(people):
    document = people["document"]
    author = await joined(document.pk, people["ada"], "author")
    for index in range(3):
        await author.send_json_to(
            edit([{"insert": str(index)}], index, f"m{index}", "author")
        )
        await receive(author)

    late = await open_socket(document.pk, token_for(people["bob"]), "late", "&since=1")
    catch_up = await receive(late)
    assert catch_up["event"] == "catch_up"
    assert catch_up["data"]["version"] == 3
    versions = [op["version"] for op in catch_up["data"]["operations"]]
    assert versions == [1, 2]
    assert catch_up["data"]["operations"][0]["message_id"] == "m1"
    assert catch_up["data"]["operations"][0]["client_id"] == "author"
    await author.disconnect()
    await late.disconnect()


async def test_sync_request_answers_catch_up(people):
    document = people["document"]
    author = await joined(document.pk, people["ada"], "author")
    await author.send_json_to(edit([{"insert": "x"}], 0, "m1", "author"))
    await receive(author)
    await author.send_json_to(
        {"type": "system", "event": "sync", "data": {"version": 0}}
    )
    catch_up = await receive(author)
    assert catch_up["event"] == "catch_up"
    assert [op["version"] for op in catch_up["data"]["operations"]] == [0]
    await author.disconnect()


async def test_far_behind_client_gets_snapshot_with_acknowledged(people, settings):
    settings.MATERI = {**settings.MATERI, "CATCH_UP_MAX_OPERATIONS": 2}
    document = people["document"]
    author = await joined(document.pk, people["ada"], "author")
    for index in range(4):
        await author.send_json_to(
            edit([{"insert": str(index)}], index, f"m{index}", "author")
        )
        await receive(author)
    await author.disconnect()

    again = await open_socket(
        document.pk, token_for(people["ada"]), "author", "&since=1"
    )
    state = await receive(again)
    assert state["event"] == "document_state"
    assert state["data"]["content"] == "3210Hello"
    assert state["data"]["acknowledged"] == [
        {"message_id": "m1", "version": 1},
        {"message_id": "m2", "version": 2},
        {"message_id": "m3", "version": 3},
    ]
    await again.disconnect()


async def test_token_expiry_closes_open_socket(people):
    token = AccessToken.for_user(people["bob"])
    token.set_exp(lifetime=timedelta(seconds=1))
    communicator = await open_socket(people["document"].pk, str(token))
    await receive(communicator)
    await asyncio.sleep(1.2)
    assert await close_code(communicator) == 4001


async def test_silent_socket_is_closed(people, settings):
    settings.MATERI = {**settings.MATERI, "HEARTBEAT_TIMEOUT": 1.0}
    communicator = await joined(people["document"].pk, people["bob"])
    assert await close_code(communicator) == 4008


async def test_ping_delivers_operations_a_dropped_broadcast_missed(people):
    document = people["document"]
    reader = await joined(document.pk, people["bob"], "reader")
    # Committed without a broadcast, as when the channel layer drops it.
    await sync_to_async(commit)(
        document.pk, people["ada"], "writer", "m1", 0, [{"insert": ">"}]
    )
    assert await quiet(reader, 0.2)

    await reader.send_json_to({"type": "system", "event": "ping", "data": {}})
    pong = await receive(reader)
    assert pong["event"] == "pong"
    missed = await receive(reader)
    assert missed["event"] == "document_edit"
    assert missed["data"]["version"] == 0
    assert missed["message_id"] == "m1"
    await reader.disconnect()


async def test_edit_on_deleted_document_closes_with_4004(people):
    document = people["document"]
    author = await joined(document.pk, people["ada"], "author")
    await Document.objects.filter(pk=document.pk).adelete()
    await author.send_json_to(edit([{"insert": "x"}], 0, "m1", "author"))
    assert await close_code(author) == 4004


async def test_removed_member_socket_closes_with_4003(people):
    document = people["document"]
    member = await joined(document.pk, people["bob"], "member")
    await document.memberships.filter(user=people["bob"]).adelete()
    assert await close_code(member) == 4003


async def test_role_change_closes_with_4009(people):
    document = people["document"]
    member = await joined(document.pk, people["bob"], "member")
    membership = await document.memberships.aget(user=people["bob"])
    membership.role = "viewer"
    await membership.asave()
    assert await close_code(member) == 4009


async def test_deleted_document_closes_sockets_with_4004(people):
    document = people["document"]
    member = await joined(document.pk, people["bob"], "member")
    await sync_to_async(lambda: Document.objects.get(pk=document.pk).delete())()
    assert await close_code(member) == 4004


async def test_sync_ahead_of_document_is_rejected(people):
    reader = await joined(people["document"].pk, people["bob"], "reader")
    await reader.send_json_to(
        {"type": "system", "event": "sync", "data": {"version": 99}, "message_id": "s1"}
    )
    error = await receive(reader)
    assert error["data"]["code"] == "version_ahead"
    assert "99" in error["data"]["message"]
    await reader.disconnect()


async def test_local_sockets_get_edits_without_layer(people, monkeypatch, caplog):
    """The committing process delivers to its own sockets itself, so they get an
    edit at once even when the layer message to other processes fails."""
    document = people["document"]
    author = await joined(document.pk, people["bob"], "author")
    other = await joined(document.pk, people["ada"], "other")
    layer = get_channel_layer()
    group_send = layer.group_send

    async def unreachable(group, message):
        if group == operations_group(document.pk):
            raise ConnectionError("the channel layer is unreachable")
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", unreachable)
    await author.send_json_to(edit([{"insert": ">"}], 0, "m1", "author"))

    assert (await receive(author))["event"] == "operation_ack"
    remote = await receive(other)
    assert remote["event"] == "document_edit"
    assert remote["data"]["version"] == 0
    assert await quiet(author, 0.2)
    assert "publishing versions 0 to 0" in caplog.text
    assert "the channel layer is unreachable" in caplog.text
    await author.disconnect()
    await other.disconnect()


async def test_ownership_transfer_closes_old_owner_with_4009(people):
    document = people["document"]
    owner = await joined(document.pk, people["ada"], "owner")
    await sync_to_async(set_member_role)(document, "bob", Role.OWNER)
    assert await close_code(owner) == 4009
