"""Serve HTTP and WebSockets with daphne, configured from settings."""

import logging

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from collab.workers import WorkerPool
from presence import reaper

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve the application (HTTP and WebSockets) with daphne."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind.")
        parser.add_argument("--port", type=int, default=8000, help="TCP port to bind.")
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="Number of server processes sharing the port (default 1). More "
            "than one needs REDIS_URL, so broadcasts reach every process.",
        )
        parser.add_argument(
            "--fd",
            type=int,
            default=None,
            help="Serve on this inherited listening socket instead of binding; "
            "used by --processes.",
        )

    def handle(
        self, *args, host: str, port: int, processes: int, fd: int | None, **options
    ) -> None:
        if processes < 1:
            raise CommandError(f"--processes must be at least 1, got {processes}")
        if processes > 1:
            if not settings.REDIS_URL:
                raise CommandError(
                    "--processes above 1 needs REDIS_URL: the in-memory channel "
                    "layer cannot carry broadcasts between processes"
                )
            WorkerPool(host, port, processes, self.stdout._out).run()
            return
        self.serve(host, port, fd)

    def serve(self, host: str, port: int, fd: int | None) -> None:
        from materi.asgi import application

        max_bytes = settings.MATERI["MAX_MESSAGE_BYTES"]
        if fd is None:
            endpoints = build_endpoint_description_strings(host=host, port=port)
        else:
            endpoints = build_endpoint_description_strings(file_descriptor=fd)

        def ready() -> None:
            # Autobahn drops the TCP connection on a protocol fault by default, so
            # the client would see 1006; a closing handshake delivers 1009 instead.
            server.ws_factory.setProtocolOptions(failByDrop=False)
            # Reap at once, for the sockets of processes that died before this one
            # started, and then periodically, for processes that die later.
            reaper.start_periodic_reaper()
            # A line that scripts and tests wait for before they connect.
            self.stdout.write(f"READY http://{host}:{port}", ending="\n")
            self.stdout.flush()

        server = Server(
            application=application,
            endpoints=endpoints,
            websocket_max_message_size=max_bytes,
            websocket_max_frame_size=max_bytes,
            # Clients send their own pings; daphne's protocol-level pings would
            # only duplicate them, and the consumer closes silent sockets itself.
            ping_interval=settings.MATERI["HEARTBEAT_TIMEOUT"],
            ping_timeout=settings.MATERI["HEARTBEAT_TIMEOUT"],
            ready_callable=ready,
            verbosity=0,
            **proxy_header_options(),
        )
        logger.info("serving on %s:%s", host, port)
        server.run()


def proxy_header_options() -> dict[str, str]:
    """Return daphne's options for reading a reverse proxy's forwarding headers."""
    if not settings.MATERI["PROXY_HEADERS"]:
        return {}
    return {
        "proxy_forwarded_address_header": "X-Forwarded-For",
        "proxy_forwarded_port_header": "X-Forwarded-Port",
        "proxy_forwarded_proto_header": "X-Forwarded-Proto",
    }
