"""One channel-layer subscription per process and document, fanned out locally.

Sending a committed operation to every socket through the channel layer costs one
layer message per socket: with Redis, a list push, a pop and a msgpack round trip
each. Instead each process subscribes once per document it has sockets on, gets
one message per operation, and writes the already encoded frame to its local
sockets.

The committing process delivers to its own sockets at once, without waiting for
its own layer message to come back, and then sends that message for the other
processes.

The layer may drop messages (a full channel, a Redis restart). A socket that then
receives a later version, or whose heartbeat finds it behind, reads what it missed
from the database, so a lost message costs latency, never an operation.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Protocol

from channels.layers import get_channel_layer

from collab import protocol

logger = logging.getLogger(__name__)

# Channels expires group memberships (a day by default); renewing them hourly
# keeps a long-lived process subscribed.
RENEW_SECONDS = 3600.0
RETRY_SECONDS = 1.0
# Frames kept per document for sockets that fall behind.
RECENT_FRAMES = 1000


def operations_group(document_id: uuid.UUID) -> str:
    return f"operations.{document_id.hex}"


class Subscriber(Protocol):
    def receive_operation(self, version: int, frame: str) -> Awaitable[None]: ...


class DocumentFanout:
    """The process's subscriptions, created on first use in the running loop."""

    def __init__(self) -> None:
        self.subscribers: dict[uuid.UUID, set[Subscriber]] = {}
        self.recent: dict[uuid.UUID, dict[int, str]] = {}
        self.channel: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None

    async def subscribe(self, document_id: uuid.UUID, subscriber: Subscriber) -> None:
        await self._ensure_started()
        subscribers = self.subscribers.setdefault(document_id, set())
        if not subscribers:
            await get_channel_layer().group_add(
                operations_group(document_id), self.channel
            )
        subscribers.add(subscriber)

    async def unsubscribe(self, document_id: uuid.UUID, subscriber: Subscriber) -> None:
        subscribers = self.subscribers.get(document_id)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self.subscribers[document_id]
            self.recent.pop(document_id, None)
            if self.channel is not None:
                await get_channel_layer().group_discard(
                    operations_group(document_id), self.channel
                )
        if not self.subscribers:
            await self._stop()

    async def _stop(self) -> None:
        """Stop receiving while no socket is subscribed.

        The receive would otherwise stay pending for the process's lifetime, and
        channels-redis binds its receive lock to the loop that waits on it.
        """
        async with self.starting:
            task, self.task = self.task, None
            if task is None or self.subscribers:
                self.task = task
                return
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def publish(
        self, document_id: uuid.UUID, frames: list[tuple[int, str]]
    ) -> None:
        """Deliver committed operations' frames, in version order, to every socket.

        This process's sockets get them first, and the other processes through
        one layer message. The caller waits for the send before publishing the
        document's next frames, which keeps them in order and paces commits to
        what the layer can take.
        """
        await self._deliver_frames(document_id, frames)
        try:
            await get_channel_layer().group_send(
                operations_group(document_id),
                {
                    "type": protocol.FANOUT_OPERATION,
                    "document": document_id.hex,
                    "origin": self.channel,
                    "frames": frames,
                },
            )
        except Exception as exc:
            # Sockets of other processes read what they missed from the database
            # at their next broadcast or heartbeat.
            logger.warning(
                "publishing versions %d to %d of %s failed: %s",
                frames[0][0],
                frames[-1][0],
                document_id,
                exc,
            )

    def recent_frames(
        self, document_id: uuid.UUID, since: int, until: int
    ) -> list[str] | None:
        """Return the frames of versions since..until-1, or None if one is missing."""
        recent = self.recent.get(document_id, {})
        frames = [recent.get(version) for version in range(since, until)]
        if None in frames:
            return None
        return frames

    async def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            # A new event loop (tests run one per test) starts with no state.
            self.loop = loop
            self.starting = asyncio.Lock()
            self.subscribers = {}
            self.recent = {}
            self.task = None
        async with self.starting:
            if self.task is not None and not self.task.done():
                return
            self.channel = await get_channel_layer().new_channel()
            self.task = loop.create_task(self._receive_forever())
            # Subscriptions of a crashed receive task move to the new channel.
            await self._renew(get_channel_layer())

    async def _receive_forever(self) -> None:
        layer = get_channel_layer()
        renew_at = self.loop.time() + RENEW_SECONDS
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "fan-out receive failed (%s); subscribing again in %.0f s",
                    exc,
                    RETRY_SECONDS,
                )
                await asyncio.sleep(RETRY_SECONDS)
                await self._renew(layer)
                continue
            await self._deliver(message)
            if self.loop.time() >= renew_at:
                renew_at = self.loop.time() + RENEW_SECONDS
                await self._renew(layer)

    async def _renew(self, layer) -> None:
        for document_id in list(self.subscribers):
            try:
                await layer.group_add(operations_group(document_id), self.channel)
            except Exception as exc:
                logger.warning("could not subscribe to %s: %s", document_id, exc)
                return

    async def _deliver(self, message: dict) -> None:
        if message.get("type") != protocol.FANOUT_OPERATION:
            return
        if message.get("origin") is not None and message["origin"] == self.channel:
            return  # delivered by publish() already
        document_id = uuid.UUID(hex=message["document"])
        await self._deliver_frames(document_id, message["frames"])

    async def _deliver_frames(
        self, document_id: uuid.UUID, frames: list[tuple[int, str]]
    ) -> None:
        if document_id not in self.subscribers:
            return
        recent = self.recent.setdefault(document_id, {})
        for version, frame in frames:
            recent[version] = frame
            if len(recent) > RECENT_FRAMES:
                del recent[next(iter(recent))]
            for subscriber in list(self.subscribers.get(document_id, ())):
                try:
                    await subscriber.receive_operation(version, frame)
                except Exception:
                    logger.exception("delivering version %s failed", version)


fanout = DocumentFanout()
