"""Delete Connection rows of dead server processes and announce their leave."""

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from presence import reaper


class Command(BaseCommand):
    help = (
        "Delete the Connection rows whose last_seen is older than the heartbeat "
        "timeout (rows of server processes that died) and send 'leave' for them."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help=(
                "Age in seconds of the oldest last_seen to keep (default: "
                "MATERI_HEARTBEAT_TIMEOUT, now "
                f"{settings.MATERI['HEARTBEAT_TIMEOUT']:g})."
            ),
        )

    def handle(self, *args, max_age: float | None, **options) -> None:
        if max_age is not None and max_age < 0:
            raise CommandError(f"--max-age must be at least 0, got {max_age:g}")
        reaped = async_to_sync(reaper.reap)(max_age)
        self.stdout.write(f"Reaped {len(reaped)} stale connections.")
