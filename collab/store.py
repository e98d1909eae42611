"""Storage of documents and operations: the commit path of every edit.

All functions here are synchronous and use the ORM; the consumer calls them through
`database_sync_to_async`. A commit is one transaction that reads the operations
since the edit's base version, transforms the edit over them, applies it, stores it
and bumps the version. Commits to one document are serialized: PostgreSQL takes a
row lock on the document, and SQLite runs every transaction in IMMEDIATE mode, which
takes the database's write lock at BEGIN. If two commits still collide on the unique
version, the loser rolls back and retries.
"""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, transaction

from collab import errors, ot
from collab.models import Document, DocumentMembership, Operation, Role

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class CommitResult:
    """The outcome of one commit.

    `preceding` holds the stored operations from the requested `since` version up
    to `operation.version - 1`, so the caller can deliver them before the ack.
    """

    operation: StoredOperation
    duplicate: bool
    preceding: list[StoredOperation] = field(default_factory=list)


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
    """What a connecting client is sent.

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


def commit(
    document_id: uuid.UUID,
    user: AbstractBaseUser,
    client_id: str,
    message_id: str,
    base_version: int,
    components: list[Any],
    since: int | None = None,
) -> CommitResult:
    """Transform, apply and store one edit, exactly once per (client_id, message_id).

    `since` asks for the stored operations from that version on to be returned in
    `CommitResult.preceding`; it defaults to `base_version`.
    """
    limits = settings.MATERI
    try:
        ot.validate(components, max_insert_length=limits["MAX_INSERT_LENGTH"])
    except ot.InvalidOperation as exc:
        raise errors.InvalidOperation(str(exc), message_id) from None
    components = ot.normalize(components)
    since = base_version if since is None else min(since, base_version)

    attempts = limits["COMMIT_ATTEMPTS"]
    for attempt in range(1, attempts + 1):
        try:
            return _commit_once(
                document_id,
                user,
                client_id,
                message_id,
                base_version,
                components,
                since,
            )
        except IntegrityError:
            # A concurrent commit took this version or stored the same message
            # first; the next attempt sees it and transforms or acknowledges.
            logger.warning(
                "commit conflict on document %s (attempt %d of %d)",
                document_id,
                attempt,
                attempts,
            )
        except DatabaseError as exc:
            logger.error("commit failed on document %s: %s", document_id, exc)
            raise errors.Unavailable(
                "the edit could not be stored because the database is unavailable; "
                "resend it later",
                message_id,
            ) from None
    raise errors.Unavailable(
        f"the edit lost {attempts} commit races in a row; resend it", message_id
    )


def _commit_once(
    document_id, user, client_id, message_id, base_version, components, since
) -> CommitResult:
    with transaction.atomic():
        document = (
            Document.objects.select_for_update()
            .only("content", "version")
            .get(pk=document_id)
        )
        _check_can_edit(document_id, user, message_id)
        existing = (
            Operation.objects.filter(
                document_id=document_id, client_id=client_id, message_id=message_id
            )
            .select_related("author")
            .first()
        )
        if existing is not None:
            stored = StoredOperation.from_model(existing)
            preceding = operations_since(document_id, since, until=stored.version)
            return CommitResult(stored, duplicate=True, preceding=preceding)

        if base_version > document.version:
            raise errors.VersionAhead(
                f"edit is based on version {base_version} but the document is at "
                f"version {document.version}",
                message_id,
            )
        preceding = operations_since(document_id, since)
        concurrent = [op for op in preceding if op.version >= base_version]
        transformed = _transform_over(
            components, concurrent, document.content, message_id
        )
        content = ot.apply(document.content, transformed)

        operation = Operation.objects.create(
            document_id=document_id,
            version=document.version,
            components=transformed,
            author=user,
            client_id=client_id,
            message_id=message_id,
        )
        document.content = content
        document.version += 1
        document.save(update_fields=["content", "version", "updated_at"])
    stored = StoredOperation.from_model(operation)
    return CommitResult(stored, duplicate=False, preceding=preceding)


def _transform_over(components, concurrent, current_content, message_id):
    """Check the edit against its base document, then transform it over `concurrent`."""
    base_length = len(current_content) - sum(
        ot.length_change(op.components) for op in concurrent
    )
    try:
        ot.validate(components, doc_length=base_length)
        for op in concurrent:
            components = ot.transform(components, op.components, "right")
        return components
    except ot.InvalidOperation as exc:
        raise errors.InvalidOperation(str(exc), message_id) from None


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
