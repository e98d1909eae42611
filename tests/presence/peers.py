"""A raw protocol client for presence tests against real server processes."""

import asyncio
import contextlib
import json
import time

import websockets

from collab import ot
from tests.conftest import token_for
from tests.live import Client


class Peer:
    """A socket that reads and pings in the background and keeps a presence view.

    `view` maps each present client_id to its user_id, selections and activity, and
    is updated like an editor would: from the `presence` list of document_state,
    from presence events, and by moving remote selections over each received
    operation. The peer's own entry follows what it sends.
    """

    def __init__(self, client: Client, state: dict, ping_every: float):
        self.client = client
        self.client_id = client.client_id
        self.messages: list[dict] = [state]
        # time.monotonic() at which each message of `messages` arrived.
        self.arrivals: list[float] = [time.monotonic()]
        self.version = state["data"]["version"]
        self.view: dict[str, dict] = {}
        for user in state["data"]["presence"]:
            for entry in user["clients"]:
                self.view[entry["client_id"]] = {
                    "user_id": user["user_id"],
                    "selections": entry["selections"],
                    "activity": entry["activity"],
                }
        self.close_code: int | None = None
        self.tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._ping(ping_every)),
        ]

    @classmethod
    async def connect(
        cls, server, document, user, client_id: str, ping_every: float = 0.25
    ) -> "Peer":
        client = await Client.connect(
            server.ws_url, document.pk, token_for(user), client_id
        )
        state = await client.expect("document_state")
        return cls(client, state, ping_every)

    # Background work

    async def _read(self) -> None:
        connection = self.client.connection
        try:
            async for text in connection:
                message = json.loads(text)
                self.messages.append(message)
                self.arrivals.append(time.monotonic())
                self._apply(message)
        except websockets.ConnectionClosed:
            pass
        self.close_code = connection.close_code

    async def _ping(self, every: float) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(every)
                await self.client.send(
                    {"type": "system", "event": "ping", "data": {"timestamp": 0}}
                )

    def _apply(self, message: dict) -> None:
        event = message["event"]
        data = message.get("data", {})
        if message["type"] == "presence":
            client_id = data["client_id"]
            if event == "join":
                self.view[client_id] = {
                    "user_id": data["user_id"],
                    "selections": data["selections"],
                    "activity": data["activity"],
                }
            elif event == "leave":
                self.view.pop(client_id, None)
            elif event == "cursor_update":
                self.view[client_id]["selections"] = data["selections"]
            elif event == "activity":
                self.view[client_id]["activity"] = data["state"]
        elif event == "document_edit":
            components = data["operation"]["ops"]
            for client_id, entry in self.view.items():
                if client_id != self.client_id:
                    entry["selections"] = move(entry["selections"], components)
            self.version = data["version"] + 1
        elif event == "operation_ack":
            self.version = max(self.version, data["version"] + 1)

    # Actions

    async def cursor(self, selections: list[dict]) -> None:
        self.view[self.client_id]["selections"] = selections
        await self.client.send(
            {
                "type": "presence",
                "event": "cursor_update",
                "data": {"selections": selections, "version": self.version},
            }
        )

    async def activity(self, state: str) -> None:
        self.view[self.client_id]["activity"] = state
        await self.client.send(
            {"type": "presence", "event": "activity", "data": {"state": state}}
        )

    async def edit(self, ops: list) -> str:
        return await self.client.edit(ops, self.version)

    def acked(self, message_id: str) -> bool:
        return any(
            message["event"] == "operation_ack"
            and message["data"]["message_id"] == message_id
            for message in self.messages
        )

    def received_edit(self, message_id: str) -> bool:
        return any(
            message["event"] == "document_edit"
            and message.get("message_id") == message_id
            for message in self.messages
        )

    def received(self, event: str, client_id: str | None = None) -> list[dict]:
        return [message for message, _ in self.received_at(event, client_id)]

    def received_at(
        self, event: str, client_id: str | None = None
    ) -> list[tuple[dict, float]]:
        """Return the matching messages with the time each one arrived."""
        return [
            (message, arrival)
            for message, arrival in zip(self.messages, self.arrivals, strict=True)
            if message["event"] == event
            and (client_id is None or message.get("client_id") == client_id)
        ]

    async def until(self, check, timeout: float = 10.0, interval: float = 0.01):
        """Wait until check() returns a true value, and return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.client_id}: condition not met within {timeout} s; "
                    f"view={self.view}, last messages={self.messages[-5:]}"
                )
            await asyncio.sleep(interval)

    # Endings

    def stop_pinging(self) -> None:
        self.tasks[1].cancel()

    async def abort(self) -> None:
        """Drop the TCP connection with no close frame."""
        self.client.connection.transport.abort()
        await self._stop()

    async def close(self) -> None:
        await self._stop()
        await self.client.close()

    async def _stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def move(selections: list[dict], components: list) -> list[dict]:
    return [
        {
            "anchor": ot.transform_position(selection["anchor"], components),
            "head": ot.transform_position(selection["head"], components),
        }
        for selection in selections
    ]


def others(view: dict[str, dict], client_id: str) -> dict[str, dict]:
    return {key: value for key, value in view.items() if key != client_id}
