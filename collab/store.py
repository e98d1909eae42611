"""Storage of documents and operations: the commit path of every edit.

All functions here are synchronous and use the ORM; the consumer calls them through
`database_sync_to_async`. The commit path itself is in `collab.commit`.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from collab import errors, ot
from collab.models import Document, DocumentMembership, Operation, Role


@dataclass(frozen=True)
class StoredOperation:
    """An operation as it was applied, with what clients need to see of it."""

    version: int
    components: list[Any]
    client_id: str
    message_id: str
    user_id: int | None
    username: str
    created_at: datetime

    def to_wire(self) -> dict[str, Any]:
        """Return the `data` of a document_edit broadcast."""
        return {
            "operation": {"ops": self.components},
            "version": self.version,
            "timestamp": self.created_at.isoformat(),
            "user": {"id": self.user_id, "username": self.username},
        }

    @classmethod
    def from_model(cls, operation: Operation) -> "StoredOperation":
        author = operation.author
        return cls(
            version=operation.version,
            components=operation.components,
            client_id=operation.client_id,
            message_id=operation.message_id,
            user_id=author.pk if author else None,
            username=author.get_username() if author else "",
            created_at=operation.created_at,
        )


@dataclass(frozen=True)
class Snapshot:
    document_id: uuid.UUID
    title: str
    content: str
    version: int


def create_document(owner: AbstractBaseUser, title: str, content: str = "") -> Document:
    """Create a document at version 0 and make `owner` its owner member."""
    ot.validate([{"insert": content}] if content else [])
    with transaction.atomic():
        document = Document.objects.create(owner=owner, title=title, content=content)
        DocumentMembership.objects.create(
            document=document, user=owner, role=Role.OWNER
        )
    return document


def get_role(document_id: uuid.UUID, user: AbstractBaseUser) -> Role:
    """Return the user's role on the document, or raise the matching error."""
    if not Document.objects.filter(pk=document_id).exists():
        raise errors.DocumentNotFound(f"document {document_id} does not exist")
    membership = (
        DocumentMembership.objects.filter(document_id=document_id, user=user)
        .only("role")
        .first()
    )
    if membership is None:
        raise errors.AccessDenied(
            f"user {user.pk} has no access to document {document_id}"
        )
    return Role(membership.role)


def load_snapshot(document_id: uuid.UUID) -> Snapshot:
    document = Document.objects.only("title", "content", "version").get(pk=document_id)
    return Snapshot(document.pk, document.title, document.content, document.version)


def current_version(document_id: uuid.UUID) -> int:
    return (
        Document.objects.filter(pk=document_id).values_list("version", flat=True).get()
    )


def operations_since(
    document_id: uuid.UUID,
    since: int,
    until: int | None = None,
    limit: int | None = None,
) -> list[StoredOperation]:
    """Return the stored operations with since <= version < until, in version order."""
    query = Operation.objects.filter(document_id=document_id, version__gte=since)
    if until is not None:
        query = query.filter(version__lt=until)
    query = query.select_related("author").order_by("version")
    if limit is not None:
        query = query[:limit]
    return [StoredOperation.from_model(operation) for operation in query]


@dataclass(frozen=True)
class JoinState:
    """The state sent to a connecting client.

    `operations` is None when the client did not ask to catch up, or when it is too
    far behind (or ahead) for a catch-up, so it gets the snapshot instead.
    """

    snapshot: Snapshot
    operations: list[StoredOperation] | None
    acknowledged: list[dict[str, Any]]


def load_join_state(
    document_id: uuid.UUID, client_id: str, since: int | None, max_operations: int
) -> JoinState:
    """Read the snapshot and, for a reconnecting client, what it missed."""
    snapshot = load_snapshot(document_id)
    if since is None:
        return JoinState(snapshot, None, [])
    if since <= snapshot.version and snapshot.version - since <= max_operations:
        operations = operations_since(document_id, since, until=snapshot.version)
        if len(operations) == snapshot.version - since:
            return JoinState(snapshot, operations, [])
    acknowledged = acknowledged_since(document_id, client_id, since)
    return JoinState(snapshot, None, acknowledged)


def acknowledged_since(
    document_id: uuid.UUID, client_id: str, since: int
) -> list[dict[str, Any]]:
    """Return message_id and version of the client's operations from `since` on."""
    rows = Operation.objects.filter(
        document_id=document_id, client_id=client_id, version__gte=since
    ).values_list("message_id", "version")
    return [
        {"message_id": message_id, "version": version} for message_id, version in rows
    ]


def _check_can_edit(document_id, user, message_id) -> None:
    """Check the role again inside the commit, so a demotion takes effect at once."""
    role = (
        DocumentMembership.objects.filter(document_id=document_id, user=user)
        .values_list("role", flat=True)
        .first()
    )
    if role is None or not Role(role).can_edit:
        raise errors.Forbidden(
            f"role {role or 'none'!r} cannot edit this document; an owner or editor "
            "role is required",
            message_id,
        )
