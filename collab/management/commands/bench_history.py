"""Create a document with a long stored history, for the S6 benchmark."""

import string

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from collab import store
from collab.models import Document, Operation

BATCH_SIZE = 5000


class Command(BaseCommand):
    help = (
        "Create a document owned by USERNAME whose content is SIZE ASCII characters, "
        "built by OPERATIONS stored appends, and print its id. Rows are written "
        "directly with bulk_create, not through the socket."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "username", help="Owner; created with an unusable password if missing."
        )
        parser.add_argument(
            "--size", type=int, required=True, help="Content length in characters."
        )
        parser.add_argument(
            "--operations", type=int, required=True, help="Number of stored operations."
        )
        parser.add_argument("--title", default="bench history", help="Document title.")

    def handle(self, *args, username, size, operations, title, **options) -> None:
        if operations < 1 or size < operations:
            raise CommandError(
                f"--operations must be at least 1 and at most --size, got "
                f"--size {size} and --operations {operations}"
            )
        user, _ = get_user_model().objects.get_or_create(username=username)
        if not user.has_usable_password():
            user.set_unusable_password()
            user.save(update_fields=["password"])

        # Operation i appends the i-th slice of the final content, so every stored
        # operation fits the document at its version, as a real history would.
        alphabet = string.ascii_letters
        content = (alphabet * (size // len(alphabet) + 1))[:size]
        bounds = [size * i // operations for i in range(operations + 1)]
        with transaction.atomic():
            document = store.create_document(user, title)
            rows = (
                Operation(
                    document=document,
                    version=version,
                    components=(
                        [{"retain": bounds[version]}] if bounds[version] else []
                    )
                    + [{"insert": content[bounds[version] : bounds[version + 1]]}],
                    author=user,
                    client_id="bench-history",
                    message_id=str(version),
                )
                for version in range(operations)
            )
            batch = []
            for row in rows:
                batch.append(row)
                if len(batch) == BATCH_SIZE:
                    Operation.objects.bulk_create(batch)
                    batch = []
            Operation.objects.bulk_create(batch)
            Document.objects.filter(pk=document.pk).update(
                snapshot=content, snapshot_version=operations, version=operations
            )
        self.stdout.write(str(document.pk))
