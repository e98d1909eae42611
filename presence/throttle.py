"""Rate limits for presence updates: a coalescing sender and a simple interval."""

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Send the latest submitted value at most `rate` times per second.

    After a quiet period, the next send starts as soon as the event loop runs the
    sending task. Values submitted within 1/rate seconds of the last send replace
    each other, and the newest one is sent when the interval has passed, so the
    latest value always goes out. Sends run in one task, one at a time and in order.
    """

    def __init__(self, rate: float, send: Callable[[T], Awaitable[None]], name: str):
        self.interval = 1.0 / rate
        self.send = send
        self.name = name
        self.pending: T | None = None
        self.last_sent = -math.inf
        self.replaced = 0
        self.task: asyncio.Task | None = None

    def submit(self, value: T) -> None:
        if self.pending is not None:
            self.replaced += 1
        self.pending = value
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def close(self) -> None:
        """Cancel the pending send, if any, and wait until no send is running."""
        self.pending = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.replaced:
            logger.debug(
                "%s: %d updates replaced by newer ones", self.name, self.replaced
            )

    async def _drain(self) -> None:
        while self.pending is not None:
            wait = self.last_sent + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            value, self.pending = self.pending, None
            self.last_sent = time.monotonic()
            try:
                await self.send(value)
            except Exception:
                # This task has no caller to raise to; log and keep sending.
                logger.exception("%s: sending an update failed", self.name)


class Interval:
    """A timer that reports an action as due at most once per `seconds`.

    The first report is due `seconds` after creation.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True
