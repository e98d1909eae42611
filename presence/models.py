"""Open document sockets, one row each, so every server process and the admin can
see who is connected where."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Connection(models.Model):
    """One open socket on one document.

    The owning consumer writes the row on connect, refreshes `last_seen` while the
    client sends messages (at most once per third of the heartbeat timeout) and
    deletes the row on disconnect. A row whose `last_seen` is older than the
    heartbeat timeout belongs to a server process that died, and the reaper deletes
    it. Selections and activity change too often for a database row, so they are in
    the cache (see `presence.store`).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    document = models.ForeignKey(
        "collab.Document", on_delete=models.CASCADE, related_name="connections"
    )
    client_id = models.CharField(max_length=64)
    instance_id = models.CharField(
        "server instance",
        max_length=100,
        db_index=True,
        help_text="The server process that owns the socket.",
    )
    channel_name = models.CharField(
        max_length=255,
        unique=True,
        help_text="Channel-layer address of the socket's consumer.",
    )
    remote_address = models.CharField(max_length=255, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    protocol_version = models.PositiveSmallIntegerField()
    connected_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["document", "connected_at"]
        permissions = [
            ("disconnect_connection", "Can disconnect live connections"),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} on {self.document_id}"
