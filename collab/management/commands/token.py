"""Print a JWT access token for a user, for scripts such as the benchmark client."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework_simplejwt.tokens import AccessToken


class Command(BaseCommand):
    help = (
        "Print an access token for USERNAME on stdout. The token lives as long as "
        "MATERI_ACCESS_TOKEN_SECONDS (900 s by default)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username", help="The user the token authenticates.")
        parser.add_argument(
            "--create",
            action="store_true",
            help="Create the user, with an unusable password, if it does not exist.",
        )

    def handle(self, *args, username: str, create: bool, **options) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get_by_natural_key(username)
        except user_model.DoesNotExist:
            if not create:
                raise CommandError(
                    f"user {username!r} not found; pass --create to create it"
                ) from None
            user = user_model.objects.create_user(username=username, password=None)
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive, so a token would fail")
        self.stdout.write(str(AccessToken.for_user(user)))
