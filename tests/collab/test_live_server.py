"""End-to-end tests against real server processes over real sockets."""

import asyncio
import os
import random

import pytest
import websockets
from django.conf import settings
from django.db import connection
from materi_realtime import MateriRealtime

from collab.models import Operation
from tests.conftest import token_for
from tests.live import Client, database_url
from tests.stored import stored_text

services_only = pytest.mark.skipif(
    not settings.REDIS_URL or "sqlite" in settings.DATABASES["default"]["ENGINE"],
    reason="several server processes need PostgreSQL and Redis",
)


async def random_edits(client: MateriRealtime, count: int, seed: int) -> None:
    """Make random inserts and deletes without waiting for acknowledgements."""
    rng = random.Random(seed)
    for _ in range(count):
        length = len(client.text)
        if length > 5 and rng.random() < 0.3:
            position = rng.randrange(length)
            client.delete(position, min(rng.randint(1, 3), length - position))
        else:
            text = rng.choice(["a", "b", "😀", "e\u0301", "\r\n", "xyz"])
            client.insert(rng.randint(0, length), text)
        await asyncio.sleep(rng.random() * 0.004)


async def converge(clients: list[MateriRealtime], edits: int) -> None:
    for client in clients:
        await client.connect()
    await asyncio.gather(
        *(random_edits(client, edits, seed) for seed, client in enumerate(clients))
    )
    for client in clients:
        await asyncio.wait_for(client.flush(), 60)
    # Every client has its own edits acknowledged; wait for the others' broadcasts.
    for _ in range(200):
        if len({client.version for client in clients}) == 1:
            break
        await asyncio.sleep(0.05)


def sdk_client(server, document, user, name):
    return MateriRealtime(
        access_token=token_for(user),
        document_id=str(document.pk),
        url=server.ws_url,
        client_id=name,
    )


def test_random_concurrent_edits_converge(server, make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, content="start", members=[(bob, "editor")])
    clients = [
        sdk_client(server, document, ada, "ada-1"),
        sdk_client(server, document, bob, "bob-1"),
    ]

    async def scenario():
        try:
            await asyncio.wait_for(converge(clients, edits=300), 120)
        finally:
            for client in clients:
                await client.close()

    asyncio.run(scenario())
    document.refresh_from_db()
    assert clients[0].text == clients[1].text
    assert clients[0].text == stored_text(document.pk)
    assert clients[0].version == document.version
    # The SDK composes edits made while one is in flight, so there are fewer
    # stored operations than edits, but exactly one per version.
    assert Operation.objects.filter(document=document).count() == document.version


@services_only
def test_two_processes_share_one_document(start_server, make_user, make_document):
    # Each process caches the text it last committed, while the other process
    # moves the document on. Snapshots every 7 operations are often newer than
    # either cache.
    first = start_server(MATERI_SNAPSHOT_INTERVAL="7")
    second = start_server(MATERI_SNAPSHOT_INTERVAL="7")
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "editor")])
    clients = [
        sdk_client(first, document, ada, "ada-1"),
        sdk_client(second, document, bob, "bob-1"),
    ]

    async def scenario():
        try:
            await asyncio.wait_for(converge(clients, edits=200), 120)
        finally:
            for client in clients:
                await client.close()

    asyncio.run(scenario())
    document.refresh_from_db()
    assert clients[0].text == clients[1].text
    assert clients[0].text == stored_text(document.pk)
    assert Operation.objects.filter(document=document).count() == document.version


def test_oversized_frame_closes_with_1009(start_server, make_user, make_document):
    server = start_server(MATERI_MAX_MESSAGE_BYTES="4096")
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, content="keep", members=[(bob, "editor")])

    async def scenario():
        sender = await Client.connect(server.ws_url, document.pk, token_for(ada), "s")
        watcher = await Client.connect(server.ws_url, document.pk, token_for(bob), "w")
        await sender.expect("document_state")
        await watcher.expect("document_state")
        await sender.edit([{"insert": "x" * 5000}], 0)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:  # presence events may come before the close
                await sender.receive()
        assert await watcher.nothing_within(0.3)
        await watcher.close()
        return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 1009
    document.refresh_from_db()
    assert stored_text(document.pk) == "keep"


def test_acknowledged_edits_survive_restart(start_server, make_user, make_document):
    server = start_server()
    ada = make_user("ada")
    document = make_document(ada)

    async def write(count):
        client = await Client.connect(server.ws_url, document.pk, token_for(ada), "a")
        state = await client.expect("document_state")
        version = state["data"]["version"]
        length = len(state["data"]["content"])
        for index in range(count):
            text = f"{index};"
            retain = [{"retain": length}] if length else []
            await client.edit([*retain, {"insert": text}], version)
            ack = await client.expect("operation_ack")
            version = ack["data"]["version"] + 1
            length += len(text)
        await client.close()

    async def read():
        client = await Client.connect(server.ws_url, document.pk, token_for(ada), "b")
        state = await client.expect("document_state")
        await client.close()
        return state["data"]

    asyncio.run(write(20))
    server.kill()
    server.start()
    state = asyncio.run(read())
    expected = "".join(f"{index};" for index in range(20))
    assert state["content"] == expected
    assert state["version"] == 20
    assert stored_text(document.pk) == expected


def test_unknown_path_is_refused(server):
    async def scenario():
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(f"{server.ws_url}/v1/ws/nothing-here")

    asyncio.run(scenario())


@pytest.mark.skipif(os.environ.get("DJANGO_DEBUG") != "true", reason="needs debug")
def test_production_settings_refuse_missing_secret(tmp_path):
    import subprocess
    import sys

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SECRET_KEY", "REDIS_URL")
    }
    env["DJANGO_DEBUG"] = "false"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr

    env["DJANGO_SECRET_KEY"] = "x" * 50
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "REDIS_URL is not set" in result.stderr


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="ending the server's database sessions needs PostgreSQL",
)
def test_lost_database_session_keeps_sockets_open(
    start_server, make_user, make_document
):
    # The name marks the server's sessions, so only they are ended.
    url = database_url(connection.settings_dict) + f"?application_name={SERVER_NAME}"
    server = start_server(DATABASE_URL=url)
    ada = make_user("ada")
    document = make_document(ada, content="abc")
    ping = {"type": "system", "event": "ping", "data": {"timestamp": 1}}

    async def scenario():
        client = await Client.connect(server.ws_url, document.pk, token_for(ada), "a")
        await client.expect("document_state")
        await client.send(ping)
        await client.expect("pong")
        # The server's pooled sessions die, as when PostgreSQL restarts.
        await asyncio.to_thread(end_server_sessions)
        for _ in range(3):
            await client.send(ping)
            await client.expect("pong")
        await client.edit([{"insert": ">"}], 0, "m1")
        while (reply := await client.receive(presence=False))["event"] == "error":
            # An edit that met the broken session is refused, never applied.
            assert reply["data"]["code"] == "unavailable", reply
            await client.edit([{"insert": ">"}], 0, "m1")
        assert reply["event"] == "operation_ack", reply
        await client.close()

    asyncio.run(scenario())
    assert stored_text(document.pk) == ">abc"


SERVER_NAME = "materi-lost-session"


def end_server_sessions() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                [SERVER_NAME],
            )
            assert cursor.fetchall(), "the server has no database session to end"
    finally:
        connection.close()
