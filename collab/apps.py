from django.apps import AppConfig


class CollabConfig(AppConfig):
    name = "collab"
    verbose_name = "Collaborative documents"

    def ready(self) -> None:
        from collab import signals  # noqa: F401
