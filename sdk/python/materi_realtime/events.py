"""Event names and the registry that calls sync and async callbacks."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

EVENT_NAMES = frozenset(
    {
        "operation",
        "state",
        "heartbeat",
        "error",
        "rate_limited",
        "connection_state",
        "ack",
        "change",
    }
)

Callback = Callable[[Any], Awaitable[None] | None]


class EventEmitter:
    """Callbacks by event name.

    A sync callback runs inside emit(). An async callback runs as a task that
    cancel_tasks() cancels. An exception in a callback is logged and does not stop
    the other callbacks or the client.
    """

    def __init__(self, task_name_prefix: str) -> None:
        self._callbacks: dict[str, list[Callback]] = {name: [] for name in EVENT_NAMES}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task_name_prefix = task_name_prefix

    def add(self, event: str, callback: Callback) -> None:
        """Register callback for event. Raises ValueError for an unknown event."""
        self.check_event(event)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self._callbacks[event].append(callback)

    def remove(self, event: str, callback: Callback) -> None:
        """Unregister callback. Raises ValueError if it is not registered."""
        self.check_event(event)
        try:
            self._callbacks[event].remove(callback)
        except ValueError:
            raise ValueError(
                f"callback {callback!r} is not registered for event {event!r}"
            ) from None

    def emit(self, event: str, payload: object) -> None:
        """Call every callback of event with payload."""
        for callback in list(self._callbacks[event]):
            try:
                result = callback(payload)
            except Exception:
                logger.exception("%r callback %r raised", event, callback)
                continue
            if inspect.isawaitable(result):
                self._start_task(event, callback, result)

    async def cancel_tasks(self) -> None:
        """Cancel the running async callbacks, except the calling task, and wait."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start_task(
        self, event: str, callback: Callback, awaitable: Awaitable[None]
    ) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            logger.warning(
                "%r callback %r is async but no event loop is running, so it was "
                "not run; edit from inside the event loop to use async callbacks",
                event,
                callback,
            )
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            return
        task = asyncio.ensure_future(awaitable)
        task.set_name(f"{self._task_name_prefix}:{event}-callback")
        self._tasks.add(task)
        task.add_done_callback(self._finish_task)

    def _finish_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("async callback %s raised", task.get_name(), exc_info=error)

    @staticmethod
    def check_event(event: str) -> None:
        """Raise ValueError unless event is one of EVENT_NAMES."""
        if event not in EVENT_NAMES:
            names = ", ".join(sorted(EVENT_NAMES))
            raise ValueError(f"unknown event {event!r}; expected one of: {names}")
