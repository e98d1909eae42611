"""Real server processes and WebSocket clients for end-to-end tests."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import websockets

ROOT = Path(__file__).resolve().parent.parent
PRESENCE_EVENTS = {"join", "leave", "cursor_update", "activity"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(settings_dict: dict) -> str:
    """Build a DATABASE_URL that points a server process at the test database."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    if password:
        credentials = f"{user}:{password}@"
    elif user:
        credentials = f"{user}@"
    else:
        credentials = ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{credentials}{host}:{port}/{settings_dict['NAME']}"


class ServerProcess:
    """A `manage.py serve` process on 127.0.0.1 and a free port."""

    def __init__(
        self, env: dict[str, str], port: int | None = None, args: tuple[str, ...] = ()
    ):
        self.env = env
        self.port = port or free_port()
        self.args = args
        self.ready_line = ""
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        self._ready.clear()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve",
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                break
        if not self._ready.is_set():
            self.stop()
            raise RuntimeError(
                f"server on port {self.port} did not start within {timeout} s:\n"
                + "".join(self.output[-40:])
            )
        return self

    def _drain(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.output.append(line)
            if line.startswith("READY"):
                self.ready_line = line
                self._ready.set()

    def kill(self) -> None:
        """Stop the process with SIGKILL: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        if self.process:
            self.process.stdout.close()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.stdout.close()


def server_env(database: str, **extra: str) -> dict[str, str]:
    """Return the environment of a server process that shares the test's settings."""
    from django.conf import settings

    env = dict(os.environ)
    env["DATABASE_URL"] = database
    # Tokens minted by the test must verify in the server process.
    env["DJANGO_SECRET_KEY"] = settings.SECRET_KEY
    env.update(extra)
    return env


class Client:
    """A raw protocol client over a real WebSocket, for tests."""

    def __init__(self, connection, client_id: str):
        self.connection = connection
        self.client_id = client_id
        self.counter = 0

    @classmethod
    async def connect(
        cls, server_url: str, document_id, token: str, client_id: str, **params
    ) -> "Client":
        query = f"token={token}&client_id={client_id}"
        for key, value in params.items():
            query += f"&{key}={value}"
        url = f"{server_url}/v1/ws/documents/{document_id}?{query}"
        connection = await websockets.connect(url, max_size=None)
        return cls(connection, client_id)

    async def send(self, message: dict | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.connection.send(text)

    async def receive(self, timeout: float = 10.0, presence: bool = True) -> dict:
        """Return the next message; with presence=False, skip presence events."""
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.connection.recv())
                if presence or message["type"] != "presence":
                    return message

    async def expect(self, event: str, timeout: float = 10.0) -> dict:
        """Receive the next message and check its event."""
        message = await self.receive(timeout, presence=event in PRESENCE_EVENTS)
        assert message["event"] == event, message
        return message

    async def nothing_within(self, seconds: float) -> bool:
        """Return True when no message but presence events arrives in time."""
        try:
            message = await self.receive(seconds, presence=False)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected message: {message}")

    async def edit(self, ops: list, version: int, message_id: str | None = None) -> str:
        self.counter += 1
        message_id = message_id or f"{self.client_id}-{self.counter}"
        await self.send(
            {
                "type": "operation",
                "event": "document_edit",
                "data": {"operation": {"ops": ops}, "version": version},
                "client_id": self.client_id,
                "message_id": message_id,
            }
        )
        return message_id

    async def close(self) -> None:
        await self.connection.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
