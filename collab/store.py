"""Storage of documents and operations: reads, and the text of each version.

All functions here are synchronous and use the ORM; the consumer calls them through
`database_sync_to_async`. The commit path itself is in `collab.commit`.
"""

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
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


# Stored operations kept with each cached text, for edits based a little behind it.
MAX_CACHED_HISTORY = 256
# The size of one cached operation toward TEXT_CACHE_SIZE, in code points. It is
# an estimate of the operation's memory, so that many small documents with long
# histories are bounded too.
HISTORY_ENTRY_SIZE = 200


@dataclass(frozen=True)
class CachedText:
    """A document's text at `version`, and the operations stored just below it."""

    version: int
    text: str
    history: tuple[StoredOperation, ...] = ()

    @property
    def size(self) -> int:
        """Return what the entry counts toward the cache's size."""
        return len(self.text) + HISTORY_ENTRY_SIZE * len(self.history)

    @property
    def first_version(self) -> int:
        """Return the version of the oldest cached operation, or `version` if none."""
        return self.version - len(self.history)


class TextCache:
    """The text of recently used documents in this process, each at some version.

    A text at a version never changes, so an entry stays correct when other
    processes commit: the reader brings it forward with the operations stored
    after it. Entries are evicted least recently used first once their total
    length passes `max_size` code points.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        self.entries: OrderedDict[uuid.UUID, CachedText] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, document_id: uuid.UUID) -> tuple[int, str] | None:
        """Return the cached version and text of the document, if any."""
        entry = self.entry(document_id)
        return None if entry is None else (entry.version, entry.text)

    def entry(self, document_id: uuid.UUID) -> "CachedText | None":
        with self.lock:
            entry = self.entries.get(document_id)
            if entry is not None:
                self.entries.move_to_end(document_id)
            return entry

    def put(
        self,
        document_id: uuid.UUID,
        version: int,
        text: str,
        history: tuple["StoredOperation", ...] = (),
    ) -> None:
        """Keep `text` as the document's text at `version`, unless a newer one is kept.

        `history` contains the stored operations just below `version`, in order and
        with no gap, as far back as the caller has them.
        """
        with self.lock:
            old = self.entries.get(document_id)
            if old is not None:
                if old.version > version:
                    return
                del self.entries[document_id]
                self.size -= old.size
            entry = CachedText(version, text, history[-MAX_CACHED_HISTORY:])
            if entry.size > self.max_size:
                return
            self.entries[document_id] = entry
            self.size += entry.size
            while self.size > self.max_size and self.entries:
                _, evicted = self.entries.popitem(last=False)
                self.size -= evicted.size

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.size = 0

    def discard(self, document_id: uuid.UUID) -> None:
        with self.lock:
            old = self.entries.pop(document_id, None)
            if old is not None:
                self.size -= old.size


text_cache = TextCache(settings.MATERI["TEXT_CACHE_SIZE"])


def text_at(
    document_id: uuid.UUID,
    version: int,
    snapshot: tuple[int, str] | None = None,
    snapshot_version: int | None = None,
) -> str:
    """Return the document's text at `version`, which must be committed.

    Start from the newest text at hand: this process's cached text, or `snapshot`
    (the stored snapshot's version and text, when the caller has read them). The
    stored snapshot is read here when neither is at hand or when it is newer than
    both. Then apply the operations stored after the starting text.
    `snapshot_version`, when known, is the stored snapshot's version, so an old
    cached text is not brought forward over more operations than that snapshot.
    """
    start, text = -1, ""
    cached = text_cache.get(document_id)
    if cached is not None and cached[0] <= version:
        start, text = cached
    if snapshot is not None and start < snapshot[0] <= version:
        start, text = snapshot
    if start < 0 or (snapshot_version is not None and start < snapshot_version):
        start, text = (
            Document.objects.filter(pk=document_id)
            .values_list("snapshot_version", "snapshot")
            .get()
        )
        if start > version:
            raise errors.Unavailable(
                f"the text of document {document_id} at version {version} is no "
                f"longer stored, because the snapshot is at version {start}. Read "
                "the document again"
            )
    if start < version:
        rows = (
            Operation.objects.filter(
                document_id=document_id, version__gte=start, version__lt=version
            )
            .order_by("version")
            .values_list("components", flat=True)
        )
        applied = 0
        for components in rows:
            text = ot.apply(text, components)
            applied += 1
        if applied != version - start:
            raise errors.Unavailable(
                f"document {document_id} is missing stored operations between "
                f"versions {start} and {version}, so its text cannot be rebuilt"
            )
        text_cache.put(document_id, version, text)
    return text


def create_document(owner: AbstractBaseUser, title: str, content: str = "") -> Document:
    """Create a document at version 0 and make `owner` its owner member."""
    ot.validate([{"insert": content}] if content else [])
    with transaction.atomic():
        document = Document.objects.create(owner=owner, title=title, snapshot=content)
        DocumentMembership.objects.create(
            document=document, user=owner, role=Role.OWNER
        )
    return document


def delete_document(document_id: uuid.UUID) -> bool:
    """Delete a document with its operations and memberships; return if it existed.

    The document's row lock is taken first, as a commit takes it, so a commit in
    progress stores its operations before they are deleted with the rest, and a
    commit that starts later finds no document.
    """
    with transaction.atomic():
        locked = list(
            Document.objects.select_for_update()
            .filter(pk=document_id)
            .values_list("pk", flat=True)
        )
        if not locked:
            return False
        Document.objects.filter(pk=document_id).delete()
    text_cache.discard(document_id)
    return True


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
    """Return the document's current title, text and version.

    The stored snapshot is read only when this process has no cached text of the
    document, and then in the same query as the version, so the two agree.
    """
    if text_cache.get(document_id) is not None:
        title, version, snapshot_version = (
            Document.objects.filter(pk=document_id)
            .values_list("title", "version", "snapshot_version")
            .get()
        )
        try:
            text = text_at(document_id, version, snapshot_version=snapshot_version)
            return Snapshot(document_id, title, text, version)
        except errors.Unavailable:
            # Other commits moved the stored snapshot past `version` after the
            # read above, so read the version and the snapshot together.
            pass
    document = Document.objects.only(
        "title", "version", "snapshot", "snapshot_version"
    ).get(pk=document_id)
    text = text_at(
        document_id,
        document.version,
        snapshot=(document.snapshot_version, document.snapshot),
    )
    return Snapshot(document.pk, document.title, text, document.version)


def current_version(document_id: uuid.UUID) -> int:
    return (
        Document.objects.filter(pk=document_id).values_list("version", flat=True).get()
    )


def current_versions(documents: dict[uuid.UUID, Any]) -> dict[uuid.UUID, int]:
    """Return the version of each document that exists, in one query."""
    return dict(Document.objects.filter(pk__in=documents).values_list("pk", "version"))


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
