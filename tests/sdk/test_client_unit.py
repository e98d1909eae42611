"""MateriRealtime against a scripted WebSocket server on 127.0.0.1.

Each test starts a FakeServer, which records every frame the client sends and
sends only the messages that the test scripts, so each step of the protocol is
checked on its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import socket
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from materi_realtime import (
    EVENT_NAMES,
    ClientClosedError,
    ConnectionFailedError,
    MateriRealtime,
    RealtimeError,
    backoff_delay,
    ot,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# Seconds each test may take before it fails.
TEST_TIMEOUT = 10.0
# Seconds to wait when checking that the client sends nothing.
QUIET_PERIOD = 0.15
TOKEN = "secret-token-abc"


class FakeConnection:
    """One client socket accepted by FakeServer."""

    def __init__(self, websocket: ServerConnection) -> None:
        self.websocket = websocket
        assert websocket.request is not None
        self.path = urlsplit(websocket.request.path).path
        query = parse_qs(urlsplit(websocket.request.path).query)
        self.query = {name: values[0] for name, values in query.items()}
        self.frames: list[dict[str, Any]] = []
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        """Return the next frame other than a ping."""
        return await self.incoming.get()

    async def receive_edit(self) -> dict[str, Any]:
        frame = await self.receive()
        assert frame["type"] == "operation", frame
        assert frame["event"] == "document_edit", frame
        return frame

    async def expect_silence(self) -> None:
        await asyncio.sleep(QUIET_PERIOD)
        assert self.incoming.empty(), self.incoming.get_nowait()

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send(json.dumps(message))

    async def send_state(
        self,
        content: str,
        version: int,
        role: str = "editor",
        acknowledged: list[dict[str, Any]] | None = None,
    ) -> None:
        await self.send(
            {
                "type": "system",
                "event": "document_state",
                "data": {
                    "document_id": "doc-1",
                    "title": "Notes",
                    "content": content,
                    "version": version,
                    "role": role,
                    "acknowledged": acknowledged or [],
                },
            }
        )

    async def send_edit(
        self,
        ops: list[dict[str, Any]],
        version: int,
        client_id: str = "other-client",
        message_id: str | None = None,
    ) -> None:
        await self.send(
            {
                "type": "operation",
                "event": "document_edit",
                "data": edit_data(ops, version),
                "client_id": client_id,
                "message_id": message_id or f"other-{version}",
            }
        )

    async def send_ack(
        self, message_id: str, version: int, duplicate: bool = False
    ) -> None:
        data: dict[str, Any] = {"message_id": message_id, "version": version}
        if duplicate:
            data["duplicate"] = True
        await self.send({"type": "system", "event": "operation_ack", "data": data})

    async def send_catch_up(
        self, version: int, operations: list[dict[str, Any]]
    ) -> None:
        await self.send(
            {
                "type": "system",
                "event": "catch_up",
                "data": {
                    "document_id": "doc-1",
                    "title": "Notes",
                    "role": "editor",
                    "version": version,
                    "operations": operations,
                },
            }
        )

    async def send_error(
        self, code: str, message: str, message_id: str | None = None
    ) -> None:
        data: dict[str, Any] = {"code": code, "message": message}
        if message_id is not None:
            data["message_id"] = message_id
        await self.send({"type": "system", "event": "error", "data": data})

    async def close(self, code: int, reason: str = "") -> None:
        await self.websocket.close(code, reason)


class FakeServer:
    """WebSocket server on 127.0.0.1 that hands each connection to the test.

    It replies to each ping with a pong when send_pongs is true. When close_code is
    set, it closes every new connection with that code at once.
    """

    def __init__(self, send_pongs: bool = True, close_code: int | None = None) -> None:
        self.send_pongs = send_pongs
        self.close_code = close_code
        self.connections: list[FakeConnection] = []
        self._new_connections: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self._server: Server | None = None

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def next_connection(self) -> FakeConnection:
        return await self._new_connections.get()

    async def _handle(self, websocket: ServerConnection) -> None:
        connection = FakeConnection(websocket)
        self.connections.append(connection)
        self._new_connections.put_nowait(connection)
        if self.close_code is not None:
            await websocket.close(self.close_code, "scripted close")
            return
        try:
            async for raw in websocket:
                frame = json.loads(raw)
                connection.frames.append(frame)
                if frame.get("event") == "ping":
                    if self.send_pongs:
                        await connection.send(
                            {"type": "system", "event": "pong", "data": frame["data"]}
                        )
                    continue
                connection.incoming.put_nowait(frame)
        except ConnectionClosed:
            pass


def edit_data(ops: list[dict[str, Any]], version: int) -> dict[str, Any]:
    return {
        "operation": {"ops": ops},
        "version": version,
        "timestamp": "2026-12-04T10:30:00+00:00",
        "user": {"id": 3, "username": "ada"},
    }


def catch_up_entry(
    ops: list[dict[str, Any]], version: int, client_id: str, message_id: str
) -> dict[str, Any]:
    return {**edit_data(ops, version), "client_id": client_id, "message_id": message_id}


def make_client(server_url: str, **options: Any) -> MateriRealtime:
    settings: dict[str, Any] = {
        "access_token": TOKEN,
        "document_id": "doc-1",
        "url": server_url,
        "client_id": "client-a",
        "reconnect_base_delay": 0.01,
        "reconnect_max_delay": 0.05,
        "heartbeat_interval": 60.0,
        "heartbeat_timeout": 60.0,
    }
    settings.update(options)
    return MateriRealtime(**settings)


async def connect_client(
    server: FakeServer, content: str = "", version: int = 0, **options: Any
) -> tuple[MateriRealtime, FakeConnection]:
    """Return a client synced to content at version, and its server connection."""
    client = make_client(server.url, **options)
    connecting = asyncio.create_task(client.connect())
    connection = await server.next_connection()
    await connection.send_state(content, version)
    await connecting
    return client, connection


def make_jwt(expiry: float) -> str:
    def encode(part: dict[str, Any]) -> str:
        raw = json.dumps(part).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = encode({"alg": "HS256", "typ": "JWT"})
    payload = encode({"exp": expiry, "user_id": 1, "nonce": random.random()})
    return f"{header}.{payload}.signature"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def client_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("materi_realtime:") and not task.done()
    ]


# Connecting


@pytest.mark.asyncio
async def test_connect_sends_query_and_syncs() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client = make_client(server.url)
        states: list[dict[str, Any]] = []
        client.on("connection_state", states.append)
        snapshots: list[dict[str, Any]] = []
        client.on("state", snapshots.append)

        connecting = asyncio.create_task(client.connect())
        connection = await server.next_connection()
        assert connection.path == "/v1/ws/documents/doc-1"
        assert connection.query == {
            "token": TOKEN,
            "client_id": "client-a",
            "version": "1",
        }
        await connection.send_state("Hello", 7, role="viewer")
        await connecting

        assert client.connection_state == "connected"
        assert client.text == "Hello"
        assert client.version == 7
        assert client.role == "viewer"
        assert client.title == "Notes"
        assert snapshots == [{"text": "Hello", "version": 7, "role": "viewer"}]
        assert [state["state"] for state in states] == ["connecting", "connected"]
        assert states[0]["previous"] == "disconnected"
        await client.close()
        assert client.connection_state == "disconnected"


@pytest.mark.asyncio
async def test_async_with_connects_and_closes() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client = make_client(server.url)

        async def serve_state() -> None:
            connection = await server.next_connection()
            await connection.send_state("abc", 2)

        serving = asyncio.create_task(serve_state())
        async with client as realtime:
            assert realtime is client
            assert realtime.text == "abc"
        await serving
        assert client.connection_state == "disconnected"
        assert client_tasks() == []


@pytest.mark.asyncio
async def test_close_leaves_no_tasks() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(
            server, "abc", 1, heartbeat_interval=0.05
        )

        async def slow_callback(payload: object) -> None:
            await asyncio.sleep(60)

        client.on("change", slow_callback)
        client.insert(0, "x")
        await connection.receive_edit()
        assert client_tasks() != []

        await client.close()
        assert client_tasks() == []
        assert client.connection_state == "disconnected"


@pytest.mark.asyncio
async def test_close_during_backoff_stops_retrying() -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        url = f"ws://127.0.0.1:{unused_port()}"
        client = make_client(url, reconnect_base_delay=30.0, reconnect_max_delay=30.0)
        connecting = asyncio.create_task(client.connect())
        while client.connection_state != "reconnecting":
            await asyncio.sleep(0.01)
        await client.close()
        with pytest.raises(ClientClosedError):
            await connecting
        assert client_tasks() == []


# Local edits, acknowledgements and the buffer


@pytest.mark.asyncio
async def test_one_edit_in_flight_and_buffer() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "", 0)
        acks: list[dict[str, Any]] = []
        client.on("ack", acks.append)

        client.insert(0, "a")
        first = await connection.receive_edit()
        assert first["client_id"] == "client-a"
        assert first["data"] == {"operation": {"ops": [{"insert": "a"}]}, "version": 0}

        client.insert(1, "b")
        client.insert(2, "c")
        assert client.text == "abc"
        await connection.expect_silence()

        await connection.send_ack(first["message_id"], 0)
        second = await connection.receive_edit()
        assert second["message_id"] != first["message_id"]
        assert second["data"] == {
            "operation": {"ops": [{"retain": 1}, {"insert": "bc"}]},
            "version": 1,
        }
        assert client.version == 1

        flushing = asyncio.create_task(client.flush())
        await asyncio.sleep(0)
        assert not flushing.done()
        await connection.send_ack(second["message_id"], 1)
        await flushing
        assert client.version == 2
        assert not client.has_pending_edits
        assert acks == [
            {"message_id": first["message_id"], "version": 0},
            {"message_id": second["message_id"], "version": 1},
        ]
        await client.close()


@pytest.mark.asyncio
async def test_local_edit_validation() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 0)
        with pytest.raises(ValueError, match="outside the text"):
            client.insert(4, "x")
        with pytest.raises(ValueError, match="outside the text"):
            client.delete(2, 2)
        with pytest.raises(ValueError, match="non-negative"):
            client.delete(-1, 1)
        with pytest.raises(ot.InvalidOperation):
            client.submit([{"retain": 5}])
        client.insert(1, "")
        client.delete(1, 0)
        client.submit([{"retain": 3}])
        await connection.expect_silence()
        assert client.text == "abc"
        await client.close()


@pytest.mark.asyncio
async def test_edits_before_connect_are_sent_after_sync() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client = make_client(server.url)
        client.insert(0, "hi ")
        connecting = asyncio.create_task(client.connect())
        connection = await server.next_connection()
        await connection.send_state("there", 4)
        await connecting
        assert client.text == "therehi "
        frame = await connection.receive_edit()
        assert frame["data"] == {
            "operation": {"ops": [{"retain": 5}, {"insert": "hi "}]},
            "version": 4,
        }
        await client.close()


# Remote operations


@pytest.mark.asyncio
async def test_remote_edit_transforms_pending_edits() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abcdef", 5)
        operations: list[dict[str, Any]] = []
        client.on("operation", operations.append)
        changes: list[dict[str, Any]] = []
        client.on("change", changes.append)

        client.insert(0, "X")
        inflight = await connection.receive_edit()
        client.delete(3, 1)
        assert client.text == "Xabdef"

        # Another client deleted "b" and inserted "Y" at the start.
        remote: list[dict[str, Any]] = [{"insert": "Y"}, {"retain": 1}, {"delete": 1}]
        await connection.send_edit(remote, 5)
        await connection.send_ack(inflight["message_id"], 6)
        buffered = await connection.receive_edit()

        server_text = ot.apply("abcdef", remote)
        server_text = ot.apply(
            server_text,
            ot.transform(inflight["data"]["operation"]["ops"], remote, "right"),
        )
        assert buffered["data"]["version"] == 7
        server_text = ot.apply(server_text, buffered["data"]["operation"]["ops"])
        assert client.text == server_text == "YXadef"
        assert client.version == 7
        assert operations[0]["version"] == 5
        assert operations[0]["user"] == {"id": 3, "username": "ada"}
        assert operations[0]["client_id"] == "other-client"
        assert operations[0]["message_id"] == "other-5"
        assert ot.apply("Xabdef", operations[0]["ops"]) == "YXadef"
        assert [change["source"] for change in changes] == ["local", "local", "remote"]
        await client.close()


@pytest.mark.asyncio
async def test_repeated_remote_edit_is_ignored() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        await connection.send_edit([{"insert": "x"}], 3)
        await connection.send_edit([{"insert": "y"}], 3)
        await connection.send_edit([{"insert": "z"}], 2)
        await connection.send_edit([{"retain": 4}, {"insert": "!"}], 4)
        while client.version < 5:
            await asyncio.sleep(0.01)
        assert client.text == "xabc!"
        await connection.expect_silence()
        await client.close()


@pytest.mark.asyncio
async def test_version_gap_sends_sync_then_applies_catch_up() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        snapshots: list[dict[str, Any]] = []
        client.on("state", snapshots.append)

        await connection.send_edit([{"insert": "3"}], 5)
        sync = await connection.receive()
        assert sync == {"type": "system", "event": "sync", "data": {"version": 3}}
        # Until catch_up arrives, edits are not applied.
        await connection.send_edit([{"insert": "4"}], 6)
        await asyncio.sleep(QUIET_PERIOD)
        assert client.text == "abc"

        await connection.send_catch_up(
            6,
            [
                catch_up_entry([{"insert": "1"}], 3, "other", "m3"),
                catch_up_entry([{"insert": "2"}], 4, "other", "m4"),
                catch_up_entry([{"insert": "3"}], 5, "other", "m5"),
            ],
        )
        await connection.send_edit([{"insert": "4"}], 6)
        while client.version < 7:
            await asyncio.sleep(0.01)
        assert client.text == "4321abc"
        assert snapshots[-1] == {"text": "321abc", "version": 6, "role": "editor"}
        await client.close()


@pytest.mark.asyncio
async def test_own_broadcast_counts_as_ack() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        client.insert(3, "!")
        edit = await connection.receive_edit()
        await connection.send_edit(
            [{"retain": 3}, {"insert": "!"}], 3, "client-a", edit["message_id"]
        )
        await client.flush()
        assert client.version == 4
        assert client.text == "abc!"
        await connection.send_ack(edit["message_id"], 3, duplicate=True)
        await connection.expect_silence()
        assert client.version == 4
        await client.close()


@pytest.mark.asyncio
async def test_duplicate_ack_ahead_sends_sync() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        client.insert(0, "x")
        edit = await connection.receive_edit()
        await connection.send_ack(edit["message_id"], 4, duplicate=True)
        sync = await connection.receive()
        assert sync["event"] == "sync"
        assert sync["data"] == {"version": 3}

        await connection.send_catch_up(
            5,
            [
                catch_up_entry([{"retain": 3}, {"insert": "!"}], 3, "other", "m3"),
                catch_up_entry([{"insert": "x"}], 4, "client-a", edit["message_id"]),
            ],
        )
        await client.flush()
        assert client.text == "xabc!"
        assert client.version == 5
        await connection.expect_silence()
        await client.close()


# Server errors


@pytest.mark.asyncio
async def test_unavailable_error_resends_same_edit() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "", 0)
        errors: list[dict[str, Any]] = []
        client.on("error", errors.append)
        client.insert(0, "a")
        first = await connection.receive_edit()
        client.insert(1, "b")
        await connection.send_error(
            "unavailable", "database is down", first["message_id"]
        )
        await connection.send_edit([{"insert": "r"}], 0)

        resent = await connection.receive_edit()
        assert resent["message_id"] == first["message_id"]
        assert resent["data"] == {
            "operation": {"ops": [{"retain": 1}, {"insert": "a"}]},
            "version": 1,
        }
        assert errors == [
            {
                "code": "unavailable",
                "message": "database is down",
                "message_id": first["message_id"],
            }
        ]
        await connection.send_ack(first["message_id"], 1)
        buffered = await connection.receive_edit()
        assert buffered["data"]["operation"]["ops"] == [{"retain": 2}, {"insert": "b"}]
        await client.close()


@pytest.mark.asyncio
async def test_rate_limited_edit_is_resent() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "", 0)
        limits: list[dict[str, Any]] = []
        client.on("rate_limited", limits.append)
        client.insert(0, "a")
        first = await connection.receive_edit()
        await connection.send(
            {
                "type": "system",
                "event": "rate_limited",
                "data": {"retry_after": 50, "message": "slow down"},
            }
        )
        resent = await connection.receive_edit()
        assert resent["message_id"] == first["message_id"]
        assert limits == [{"retry_after": 50, "message": "slow down"}]
        await client.close()


@pytest.mark.asyncio
async def test_forbidden_edit_is_undone() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 0)
        changes: list[dict[str, Any]] = []
        client.on("change", changes.append)
        client.insert(3, "def")
        first = await connection.receive_edit()
        client.insert(6, "!")
        await connection.send_error(
            "forbidden", "viewers cannot edit", first["message_id"]
        )
        second = await connection.receive_edit()
        assert second["message_id"] != first["message_id"]
        assert second["data"]["operation"]["ops"] == [{"retain": 3}, {"insert": "!"}]
        assert client.text == "abc!"
        assert changes[-1]["source"] == "rejected"
        assert ot.apply("abcdef!", changes[-1]["ops"]) == "abc!"
        await client.close()


@pytest.mark.asyncio
async def test_message_too_big_close_undoes_edit() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 0)
        errors: list[dict[str, Any]] = []
        client.on("error", errors.append)
        client.insert(0, "huge")
        edit = await connection.receive_edit()
        await connection.close(1009, "message too big")

        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "0"
        await reconnection.send_catch_up(0, [])
        await reconnection.expect_silence()
        assert client.text == "abc"
        assert errors[0]["code"] == "message_too_big"
        assert errors[0]["message_id"] == edit["message_id"]
        await client.close()


# Recovery after a reconnect


@pytest.mark.asyncio
async def test_catch_up_with_own_edit_acknowledges_it() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        acks: list[dict[str, Any]] = []
        client.on("ack", acks.append)
        client.insert(3, "!")
        edit = await connection.receive_edit()
        await connection.close(1011, "server restart")

        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "3"
        client.insert(0, ">")
        await reconnection.send_catch_up(
            5,
            [
                catch_up_entry([{"insert": "R"}], 3, "other", "m3"),
                catch_up_entry(
                    [{"retain": 4}, {"insert": "!"}], 4, "client-a", edit["message_id"]
                ),
            ],
        )
        buffered = await reconnection.receive_edit()
        assert buffered["message_id"] != edit["message_id"]
        # The committed "R" goes first where both insert at position 0.
        assert buffered["data"] == {
            "operation": {"ops": [{"retain": 1}, {"insert": ">"}]},
            "version": 5,
        }
        assert client.text == "R>abc!"
        assert acks == [{"message_id": edit["message_id"], "version": 4}]
        await client.close()


@pytest.mark.asyncio
async def test_catch_up_without_own_edit_resends_it() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        client.insert(3, "!")
        edit = await connection.receive_edit()
        await connection.close(1011, "server restart")

        reconnection = await server.next_connection()
        await reconnection.send_catch_up(
            4, [catch_up_entry([{"insert": "R"}], 3, "other", "m3")]
        )
        resent = await reconnection.receive_edit()
        assert resent["message_id"] == edit["message_id"]
        assert resent["data"] == {
            "operation": {"ops": [{"retain": 4}, {"insert": "!"}]},
            "version": 4,
        }
        assert client.text == "Rabc!"
        await client.close()


@pytest.mark.asyncio
async def test_snapshot_rebases_pending_edits() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "hello world", 10)
        client.insert(5, ",")
        edit = await connection.receive_edit()
        client.insert(12, "!")
        assert client.text == "hello, world!"
        await connection.close(1011, "server restart")

        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "10"
        await reconnection.send_state("Oh, hello world today", 25)
        resent = await reconnection.receive_edit()
        assert resent["message_id"] == edit["message_id"]
        assert resent["data"]["version"] == 25
        resent_ops = resent["data"]["operation"]["ops"]
        assert ot.apply("Oh, hello world today", resent_ops) == "Oh, hello, world today"
        # The snapshot's text goes first where both insert at the same position.
        assert client.text == "Oh, hello, world today!"
        assert client.version == 25

        await reconnection.send_ack(edit["message_id"], 25)
        buffered = await reconnection.receive_edit()
        assert buffered["data"]["version"] == 26
        assert buffered["data"]["operation"]["ops"] == [{"retain": 22}, {"insert": "!"}]
        await client.close()


@pytest.mark.asyncio
async def test_snapshot_drops_acknowledged_edit() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        acks: list[dict[str, Any]] = []
        client.on("ack", acks.append)
        client.insert(3, "d")
        edit = await connection.receive_edit()
        client.insert(4, "e")
        await connection.close(1011, "server restart")

        reconnection = await server.next_connection()
        await reconnection.send_state(
            "Zabcd",
            9,
            acknowledged=[{"message_id": edit["message_id"], "version": 3}],
        )
        buffered = await reconnection.receive_edit()
        assert buffered["message_id"] != edit["message_id"]
        assert buffered["data"] == {
            "operation": {"ops": [{"retain": 5}, {"insert": "e"}]},
            "version": 9,
        }
        assert client.text == "Zabcde"
        assert acks == [{"message_id": edit["message_id"], "version": 3}]
        await client.close()


@pytest.mark.asyncio
async def test_version_ahead_reloads_document() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        client.insert(0, "x")
        edit = await connection.receive_edit()
        await connection.send_error(
            "version_ahead", "version 3 is newer", edit["message_id"]
        )

        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "0"
        await reconnection.send_catch_up(
            2,
            [
                catch_up_entry([{"insert": "ab"}], 0, "other", "m0"),
                catch_up_entry([{"retain": 2}, {"insert": "c"}], 1, "other", "m1"),
            ],
        )
        resent = await reconnection.receive_edit()
        assert resent["message_id"] == edit["message_id"]
        assert resent["data"] == {"operation": {"ops": [{"insert": "x"}]}, "version": 2}
        assert client.text == "xabc"
        await client.close()


@pytest.mark.asyncio
async def test_invalid_remote_edit_reloads_document() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        client.insert(3, "!")
        edit = await connection.receive_edit()
        await connection.send_edit([{"retain": 10}, {"insert": "?"}], 3)

        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "0"
        # The rebuilt history contains the client's edit, so it is not resent.
        await reconnection.send_catch_up(
            2,
            [
                catch_up_entry([{"insert": "abc"}], 0, "other", "m0"),
                catch_up_entry(
                    [{"retain": 3}, {"insert": "!"}], 1, "client-a", edit["message_id"]
                ),
            ],
        )
        await client.flush()
        assert client.text == "abc!"
        assert client.version == 2
        await reconnection.expect_silence()
        await client.close()


# Reconnecting and failing


def test_backoff_delay_stays_within_bounds() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        cap = min(10.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert min(delays) >= 0.0
        assert max(delays) <= cap
        # Full jitter spreads the delays over the whole range.
        assert max(delays) > cap * 0.9
        assert min(delays) < cap * 0.1
    assert backoff_delay(10_000, 0.5, 10.0, rng) <= 10.0


@pytest.mark.asyncio
async def test_failed_after_max_attempts() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer(close_code=1011) as server:
        client = make_client(server.url, reconnect_max_attempts=3)
        states: list[str] = []
        client.on("connection_state", lambda change: states.append(change["state"]))
        with pytest.raises(ConnectionFailedError, match="gave up after 3"):
            await client.connect()
        assert len(server.connections) == 4
        assert client.connection_state == "failed"
        assert states == [
            "connecting",
            *["disconnected", "reconnecting"] * 3,
            "disconnected",
            "failed",
        ]
        assert all(
            connection.query.get("since") is None for connection in server.connections
        )
        await client.close()
        assert client_tasks() == []


@pytest.mark.asyncio
async def test_unreachable_server_fails() -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        client = make_client(
            f"ws://127.0.0.1:{unused_port()}", reconnect_max_attempts=2
        )
        with pytest.raises(ConnectionFailedError, match="cannot open the connection"):
            await client.connect()
        assert client.connection_state == "failed"
        await client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [4000, 4003, 4004, 4010])
async def test_fatal_close_code_fails(code: int) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer(close_code=code) as server:
        client = make_client(server.url)
        states: list[dict[str, Any]] = []
        client.on("connection_state", states.append)
        with pytest.raises(ConnectionFailedError) as raised:
            await client.connect()
        assert raised.value.code == code
        assert "scripted close" in raised.value.reason
        await asyncio.sleep(QUIET_PERIOD)
        assert len(server.connections) == 1
        assert client.connection_state == "failed"
        assert states[-1]["reason"] == raised.value.reason
        await client.close()


@pytest.mark.asyncio
async def test_reconnect_after_close_resumes_with_since() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        states: list[str] = []
        client.on("connection_state", lambda change: states.append(change["state"]))
        await connection.close(1001, "going away")
        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "3"
        await reconnection.send_catch_up(3, [])
        while client.connection_state != "connected":
            await asyncio.sleep(0.01)
        assert states == ["disconnected", "reconnecting", "connected"]
        await client.close()


# Tokens


@pytest.mark.asyncio
async def test_token_rejected_calls_provider_and_reconnects() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        calls: list[int] = []

        async def provide_token() -> str:
            calls.append(1)
            return "fresh-token"

        client, connection = await connect_client(
            server, "abc", 3, token_provider=provide_token
        )
        await connection.close(4001, "token expired")
        reconnection = await server.next_connection()
        assert calls == [1]
        assert reconnection.query["token"] == "fresh-token"
        assert reconnection.query["since"] == "3"
        await reconnection.send_catch_up(3, [])
        while client.connection_state != "connected":
            await asyncio.sleep(0.01)
        await client.close()


@pytest.mark.asyncio
async def test_token_rejected_without_provider_fails() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer(close_code=4001) as server:
        client = make_client(server.url)
        with pytest.raises(ConnectionFailedError, match="no token_provider") as raised:
            await client.connect()
        assert raised.value.code == 4001
        assert len(server.connections) == 1
        await client.close()


@pytest.mark.asyncio
async def test_fresh_token_rejected_fails() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer(close_code=4001) as server:
        client = make_client(server.url, token_provider=lambda: "also-bad")
        with pytest.raises(ConnectionFailedError, match="token that token_provider"):
            await client.connect()
        assert [connection.query["token"] for connection in server.connections] == [
            TOKEN,
            "also-bad",
        ]
        await client.close()


@pytest.mark.asyncio
async def test_token_refreshed_before_expiry() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        first_token = make_jwt(time.time() + 0.5)
        second_token = make_jwt(time.time() + 3600)
        client, connection = await connect_client(
            server,
            "abc",
            3,
            access_token=first_token,
            token_provider=lambda: second_token,
        )
        assert connection.query["token"] == first_token
        reconnection = await server.next_connection()
        assert reconnection.query["token"] == second_token
        assert reconnection.query["since"] == "3"
        await reconnection.send_catch_up(3, [])
        while client.connection_state != "connected":
            await asyncio.sleep(0.01)
        await client.close()


# Heartbeat


@pytest.mark.asyncio
async def test_heartbeat_reports_latency() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(
            server, heartbeat_interval=0.05, heartbeat_timeout=1.0
        )
        latencies: asyncio.Queue[float] = asyncio.Queue()
        client.on("heartbeat", latencies.put_nowait)
        latency = await latencies.get()
        assert isinstance(latency, float)
        assert 0.0 <= latency < 1000.0
        pings = [frame for frame in connection.frames if frame["event"] == "ping"]
        assert isinstance(pings[0]["data"]["timestamp"], int)
        await client.close()


@pytest.mark.asyncio
async def test_heartbeat_timeout_reconnects() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer(send_pongs=False) as server:
        client, connection = await connect_client(
            server, "abc", 3, heartbeat_interval=0.05, heartbeat_timeout=0.1
        )
        reasons: list[str | None] = []
        client.on(
            "connection_state",
            lambda change: (
                reasons.append(change["reason"])
                if change["state"] == "disconnected"
                else None
            ),
        )
        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "3"
        assert reasons == ["no pong within 0.1 s"]
        await client.close()


# Events and logging


@pytest.mark.asyncio
async def test_on_decorator_and_direct_forms() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client = make_client(server.url)
        received: list[tuple[str, str]] = []
        async_done = asyncio.Event()

        @client.on("change")
        def on_change_sync(change: dict[str, Any]) -> None:
            received.append(("decorated", change["text"]))

        async def on_change_async(change: dict[str, Any]) -> None:
            received.append(("direct async", change["text"]))
            async_done.set()

        assert client.on("change", on_change_async) is on_change_async
        assert on_change_sync.__name__ == "on_change_sync"

        connecting = asyncio.create_task(client.connect())
        connection = await server.next_connection()
        await connection.send_state("hi", 1)
        await connecting
        await async_done.wait()
        assert received == [("decorated", "hi"), ("direct async", "hi")]

        client.off("change", on_change_sync)
        client.insert(2, "!")
        await asyncio.sleep(0)
        assert received[-1] == ("direct async", "hi!")
        assert ("decorated", "hi!") not in received
        await client.close()


def test_on_rejects_unknown_event() -> None:
    client = make_client("ws://127.0.0.1:9")
    with pytest.raises(ValueError, match="unknown event 'opration'"):
        client.on("opration", print)
    with pytest.raises(ValueError, match="unknown event"):
        client.on("opration")
    assert "operation" in EVENT_NAMES


@pytest.mark.asyncio
async def test_failing_callback_does_not_stop_client() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 0)

        def broken(change: object) -> None:
            raise RuntimeError("callback bug")

        client.on("change", broken)
        client.insert(0, "x")
        edit = await connection.receive_edit()
        assert edit["data"]["operation"]["ops"] == [{"insert": "x"}]
        await client.close()


@pytest.mark.asyncio
async def test_debug_log_redacts_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="materi_realtime")
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 0, debug=True)
        client.insert(0, "x")
        await connection.receive_edit()
        await client.close()

    messages = [record.getMessage() for record in caplog.records]
    assert all(TOKEN not in message for message in messages)
    assert any("token=[redacted]" in message for message in messages)
    assert any(
        message.startswith("sent ") and "document_edit" in message
        for message in messages
    )
    assert any(
        message.startswith("received ") and "document_state" in message
        for message in messages
    )
    assert any(
        "connection state connecting -> connected" in message for message in messages
    )


@pytest.mark.asyncio
async def test_without_debug_frames_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="materi_realtime")
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, _ = await connect_client(server, "abc", 0)
        await client.close()
    assert not any(
        record.getMessage().startswith(("sent ", "received "))
        for record in caplog.records
    )


# Options


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="url"):
        MateriRealtime(access_token="t", document_id="d", url="http://127.0.0.1:8000")
    with pytest.raises(ValueError, match="client_id"):
        MateriRealtime(access_token="t", document_id="d", client_id="has space")
    with pytest.raises(ValueError, match="access_token"):
        MateriRealtime(access_token="", document_id="d")
    with pytest.raises(ValueError, match="reconnect_max_delay"):
        MateriRealtime(
            access_token="t",
            document_id="d",
            reconnect_base_delay=5,
            reconnect_max_delay=1,
        )
    with pytest.raises(ValueError, match="heartbeat_interval"):
        MateriRealtime(access_token="t", document_id="d", heartbeat_interval=0)


def test_generated_client_id_is_valid() -> None:
    first = MateriRealtime(access_token="t", document_id="d")
    second = MateriRealtime(access_token="t", document_id="d")
    assert first.client_id != second.client_id
    assert 1 <= len(first.client_id) <= 64
    assert first.connection_state == "disconnected"
    assert first.text == ""
    assert first.version == 0


@pytest.mark.asyncio
async def test_flush_without_connection_raises() -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        client = make_client("ws://127.0.0.1:9")
        await client.flush()
        client.insert(0, "x")
        with pytest.raises(RealtimeError, match="call connect"):
            await client.flush()


@pytest.mark.asyncio
async def test_connect_after_close_sends_pending_edits() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        await client.close()
        client.insert(3, "!")

        connecting = asyncio.create_task(client.connect())
        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "3"
        await reconnection.send_catch_up(3, [])
        await connecting
        edit = await reconnection.receive_edit()
        assert edit["data"] == {
            "operation": {"ops": [{"retain": 3}, {"insert": "!"}]},
            "version": 3,
        }
        await client.close()


@pytest.mark.asyncio
async def test_catch_up_with_gap_reloads_document() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), FakeServer() as server:
        client, connection = await connect_client(server, "abc", 3)
        await connection.send_edit([{"insert": "x"}], 4)
        await connection.receive()
        await connection.send_catch_up(
            5, [catch_up_entry([{"insert": "x"}], 4, "other", "m4")]
        )

        reconnection = await server.next_connection()
        assert reconnection.query["since"] == "0"
        await reconnection.send_state("yxabc", 5)
        while client.version != 5:
            await asyncio.sleep(0.01)
        assert client.text == "yxabc"
        await client.close()
