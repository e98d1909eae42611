"""A loopback TCP proxy that tests can use to cut or blackhole connections."""

import asyncio
import contextlib


class FaultyProxy:
    """Forward 127.0.0.1:port to a target port, with faults on demand.

    `cut()` closes every open connection at once. `blackhole()` keeps the
    connections open but stops forwarding bytes, as a dead network path does,
    and refuses new connections until `restore()`.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.forwarding = True
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> "FaultyProxy":
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, client_reader, client_writer) -> None:
        if not self.forwarding:
            client_writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            client_writer.close()
            return
        link = (client_writer, upstream_writer)
        self.links.add(link)
        for reader, writer in (
            (client_reader, upstream_writer),
            (upstream_reader, client_writer),
        ):
            task = asyncio.create_task(self._pipe(reader, writer, link))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, reader, writer, link) -> None:
        try:
            while data := await reader.read(65536):
                if self.forwarding:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close_link(link)

    def _close_link(self, link) -> None:
        self.links.discard(link)
        for writer in link:
            with contextlib.suppress(Exception):
                writer.transport.abort()

    def cut(self) -> None:
        for link in list(self.links):
            self._close_link(link)

    def blackhole(self) -> None:
        self.forwarding = False

    def restore(self) -> None:
        """Forward again; connections that were blackholed are cut first."""
        self.cut()
        self.forwarding = True

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
