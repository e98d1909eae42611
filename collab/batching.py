"""One database call for the requests that many sockets make at about the same time.

Every socket pings every few seconds, and each ping reads the document's version
and refreshes the socket's presence row. With thousands of idle sockets that is
hundreds of queries a second, one at a time on the process's database thread,
which also serves every connect. `Batcher` gathers the requests made within a
short window and runs one call for all of them.
"""

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from channels.db import database_sync_to_async

K = TypeVar("K", bound=Hashable)

# Seconds a request waits for others to join its call.
WINDOW_SECONDS = 0.01
# Maximum keys in one call, which keeps SQL parameter lists short.
MAX_KEYS = 500


class Batcher(Generic[K]):
    """Run `batch(items)` for the requests of a short window, in a database thread.

    `batch` receives a dict of key to item and returns a dict of key to result;
    a key it leaves out gets None. When it raises, every request of the call
    raises the same exception. When one key is requested twice in a window, the
    later item is used and both requests get its result.
    """

    def __init__(self, batch: Callable[[dict[K, Any]], dict[K, Any]]) -> None:
        self.batch = batch
        self.loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, key: K, item: Any = None) -> Any:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            # A new event loop (tests run one per test) starts with no state.
            self.loop = loop
            self.pending: dict[K, tuple[Any, list[asyncio.Future]]] = {}
            self.flushing: asyncio.Task | None = None
        future = loop.create_future()
        _, waiters = self.pending.get(key, (None, []))
        waiters.append(future)
        self.pending[key] = (item, waiters)
        if self.flushing is None:
            self.flushing = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(WINDOW_SECONDS)
        while self.pending:
            keys = list(self.pending)[:MAX_KEYS]
            batch = {key: self.pending.pop(key) for key in keys}
            try:
                results = await database_sync_to_async(self.batch)(
                    {key: item for key, (item, _) in batch.items()}
                )
            except Exception as exc:
                for _, waiters in batch.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                continue
            for key, (_, waiters) in batch.items():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(results.get(key))
        self.flushing = None
