"""Documents, their stored operations and who may open them."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    OWNER = "owner"
    EDITOR = "editor"
    COMMENTER = "commenter"
    VIEWER = "viewer"

    @property
    def can_edit(self) -> bool:
        return self in (Role.OWNER, Role.EDITOR)

    @property
    def can_comment(self) -> bool:
        return self != Role.VIEWER

    @property
    def can_manage(self) -> bool:
        return self == Role.OWNER


class Document(models.Model):
    """A plain-text document at `version`.

    `snapshot` is the text at `snapshot_version`, and the stored operations from
    `snapshot_version` up to `version` turn it into the current text. The snapshot
    moves forward every few operations, not on every commit, so an edit to a large
    document does not rewrite all of it. `collab.store.load_snapshot` returns the
    current text.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents"
    )
    snapshot = models.TextField(blank=True, default="")
    snapshot_version = models.PositiveBigIntegerField(default=0)
    version = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title


class Operation(models.Model):
    """One acknowledged edit, stored as it was applied (after transform).

    `version` is the document version the operation applied to, so the document
    moved from `version` to `version + 1`.
    """

    document = models.ForeignKey(
        Document, on_delete=models.CASCADE, related_name="operations"
    )
    version = models.PositiveBigIntegerField()
    components = models.JSONField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
    )
    client_id = models.CharField(max_length=64)
    message_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["document", "version"]
        constraints = [
            models.UniqueConstraint(
                fields=["document", "version"], name="operation_unique_version"
            ),
            models.UniqueConstraint(
                fields=["document", "client_id", "message_id"],
                name="operation_unique_message",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}@{self.version}"


class DocumentMembership(models.Model):
    document = models.ForeignKey(
        Document, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="document_memberships",
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["document", "user"], name="membership_unique_user"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) on {self.document}"
