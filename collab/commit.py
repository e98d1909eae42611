"""The commit path of every edit: transform, apply, store, in one transaction.

Commits to one document are serialized across processes: PostgreSQL takes a row
lock on the document, and SQLite runs every transaction in IMMEDIATE mode, which
takes the database's write lock at BEGIN. If two commits still collide on a unique
constraint, the loser rolls back and retries, and the retry reads the winner's row.

Within one process, `Committer` batches the edits to one document that arrive
while a commit of that document is running, and commits them together in the
next transaction: one lock, one read of the history and one update of the
document row for the whole batch.

A commit stores the operations and the new version, not the new text. The text
comes from `collab.store.text_at`. The document's stored snapshot is brought up to
date every `SNAPSHOT_INTERVAL` operations, in a transaction of its own after the
acks are sent, so an edit costs the same on a 1 KB and a 1 MB document.

On PostgreSQL, a batch whose edits are all based on the text this process has
cached is committed in one statement, with no lock taken first (see
`_commit_current`). Any other batch takes the locked path.
"""

import asyncio
import dataclasses
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from collab import errors, ot, protocol
from collab.fanout import fanout
from collab.models import Document, DocumentMembership, Operation, Role
from collab.store import StoredOperation, operations_since, text_at, text_cache

logger = logging.getLogger(__name__)

MAX_BATCH = 200
# Threads that run commits, each with its own database connection. They live as
# long as the process, so their connections are reused across event loops.
COMMIT_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="commit")


@dataclass(frozen=True)
class EditRequest:
    """One submitted edit. `since` is the first version the caller wants back."""

    user: AbstractBaseUser
    client_id: str
    message_id: str
    base_version: int
    components: list[Any]
    since: int


@dataclass(frozen=True)
class CommitResult:
    """The outcome of one edit.

    `preceding` contains the stored operations from the request's `since` version up
    to `operation.version - 1`, so the caller can deliver them before the ack.
    """

    operation: StoredOperation
    duplicate: bool
    preceding: list[StoredOperation] = field(default_factory=list)


Outcome = CommitResult | errors.RealtimeError


def commit(
    document_id: uuid.UUID,
    user: AbstractBaseUser,
    client_id: str,
    message_id: str,
    base_version: int,
    components: list[Any],
    since: int | None = None,
) -> CommitResult:
    """Commit one edit, exactly once per (client_id, message_id), or raise."""
    since = base_version if since is None else since
    request = EditRequest(user, client_id, message_id, base_version, components, since)
    [outcome] = commit_batch(document_id, [request])
    if isinstance(outcome, errors.RealtimeError):
        raise outcome
    return outcome


def commit_batch(document_id: uuid.UUID, requests: list[EditRequest]) -> list[Outcome]:
    """Commit several edits to one document in one transaction, in order.

    Return one outcome per request: its result, or the error that rejected it. A
    rejected edit changes nothing and does not affect the others.
    """
    outcomes, snapshot = _commit_batch(document_id, requests)
    if snapshot is not None:
        save_snapshot(document_id, *snapshot)
    return outcomes


# One commit's outcomes, and the (version, text) of a snapshot that is now due.
Committed = tuple[list[Outcome], tuple[int, str] | None]


def _commit_batch(document_id, requests) -> Committed:
    outcomes: list[Outcome | None] = [None] * len(requests)
    prepared: list[tuple[int, EditRequest]] = []
    for index, request in enumerate(requests):
        try:
            prepared.append((index, _prepare(request)))
        except errors.RealtimeError as exc:
            outcomes[index] = exc
    if not prepared:
        return outcomes, None

    look_up_all = False
    try:
        committed = _commit_current(document_id, prepared)
    except IntegrityError:
        # A resend of a stored edit, rebased onto the current version: the
        # transaction below looks every request up and finds it.
        committed = None
        look_up_all = True
    except DatabaseError as exc:
        logger.warning(
            "single-statement commit on %s failed, retrying under a row lock: %s",
            document_id,
            exc,
        )
        committed = None
    if committed is not None:
        results, snapshot = committed
        for index, outcome in results:
            outcomes[index] = outcome
        return outcomes, snapshot

    attempts = settings.MATERI["COMMIT_ATTEMPTS"]
    for attempt in range(1, attempts + 1):
        try:
            # After a conflict, look every request up: a client may resend a
            # stored edit rebased onto the current version.
            check_all = look_up_all or attempt > 1
            results, snapshot = _commit_once(document_id, prepared, check_all)
            for index, outcome in results:
                outcomes[index] = outcome
            return outcomes, snapshot
        except IntegrityError:
            # A concurrent commit took a version or stored one of these messages
            # first. The next attempt reads it and transforms or acknowledges.
            logger.warning(
                "commit conflict on document %s (attempt %d of %d)",
                document_id,
                attempt,
                attempts,
            )
        except Document.DoesNotExist:
            text_cache.discard(document_id)
            for index, request in prepared:
                outcomes[index] = errors.DocumentNotFound(
                    f"document {document_id} was deleted", request.message_id
                )
            return outcomes, None
        except DatabaseError as exc:
            logger.error("commit failed on document %s: %s", document_id, exc)
            return _fill(
                outcomes,
                prepared,
                "the edit could not be stored because the database is unavailable; "
                "resend it later",
            )
    return _fill(
        outcomes, prepared, f"the edit lost {attempts} commit races; resend it"
    )


def _prepare(request: EditRequest) -> EditRequest:
    """Check the edit's structure and size before any database work."""
    try:
        ot.validate(
            request.components,
            max_insert_length=settings.MATERI["MAX_INSERT_LENGTH"],
        )
    except ot.InvalidOperation as exc:
        raise errors.InvalidOperation(str(exc), request.message_id) from None
    return dataclasses.replace(request, since=min(request.since, request.base_version))


def _fill(outcomes, prepared, message: str) -> Committed:
    for index, request in prepared:
        outcomes[index] = errors.Unavailable(message, request.message_id)
    return outcomes, None


def _commit_once(document_id, prepared, check_all):
    """Run one commit transaction; return its outcomes and any due snapshot."""
    with transaction.atomic():
        document = (
            Document.objects.select_for_update()
            .only("version", "snapshot_version")
            .get(pk=document_id)
        )
        text = text_at(
            document_id, document.version, snapshot_version=document.snapshot_version
        )
        batch = _Batch.read(
            document, text, [request for _, request in prepared], check_all
        )
        outcomes = [(index, batch.add(request)) for index, request in prepared]
        if batch.new_operations:
            Operation.objects.bulk_create(batch.new_operations)
            document.save(update_fields=["version", "updated_at"])
        # A text may be cached once its version is committed, not before.
        version, text, history = document.version, batch.text, tuple(batch.history)
        transaction.on_commit(
            lambda: text_cache.put(document_id, version, text, history)
        )
    interval = settings.MATERI["SNAPSHOT_INTERVAL"]
    if document.version - document.snapshot_version >= interval:
        return outcomes, (version, text)
    return outcomes, None


def _commit_current(document_id, prepared):
    """Commit a batch in one statement when this process has the current text.

    This is the common case of one process serving a document: the cached text
    is current, and every edit is based on a version whose later operations are
    cached with it. The edits are transformed, checked and applied in memory,
    and a resend of a cached operation gets its original ack. Then one
    PostgreSQL statement checks that the document is still at the cached version
    and that every author may edit, and moves the version and stores the
    operations. It returns None, having changed nothing, whenever that does not
    hold or an edit is rejected, and the caller takes the path that reads the
    document under a row lock.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    cached = text_cache.entry(document_id)
    if cached is None:
        return None
    version = cached.version
    requests = [request for _, request in prepared]
    since = min(request.since for request in requests)
    if since < cached.first_version or any(r.base_version > version for r in requests):
        return None

    document = Document(pk=document_id, version=version)
    editors = {request.user.pk: Role.EDITOR for request in requests}
    history = list(cached.history[since - cached.first_version :])
    existing = {(op.client_id, op.message_id): op for op in history}
    batch = _Batch(document, cached.text, editors, existing, since, history)
    outcomes = [(index, batch.add(request)) for index, request in prepared]
    if any(isinstance(outcome, errors.RealtimeError) for _, outcome in outcomes):
        return None

    operations = batch.new_operations
    with connection.cursor() as cursor:
        cursor.execute(
            COMMIT_CURRENT_SQL,
            {
                "document": document_id,
                "version": version,
                "new_version": document.version,
                "now": batch.now,
                "users": sorted(editors),
                "user_count": len(editors),
                "versions": [op.version for op in operations],
                "components": [json.dumps(op.components) for op in operations],
                "authors": [op.author_id for op in operations],
                "client_ids": [op.client_id for op in operations],
                "message_ids": [op.message_id for op in operations],
            },
        )
        row = cursor.fetchone()
    if row is None or row[1] != len(operations):
        return None
    snapshot_version = row[0]
    text_cache.put(
        document_id,
        document.version,
        batch.text,
        cached.history[: since - cached.first_version] + tuple(batch.history),
    )
    interval = settings.MATERI["SNAPSHOT_INTERVAL"]
    if document.version - snapshot_version >= interval:
        return outcomes, (document.version, batch.text)
    return outcomes, None


# The document row is updated only if it is still at the expected version and
# every author has an editing role. The insert reads the update's row, so it
# stores nothing when the update matched no row, and the result is then empty.
COMMIT_CURRENT_SQL = """
WITH document AS (
    UPDATE collab_document
    SET version = %(new_version)s, updated_at = %(now)s
    WHERE id = %(document)s
      AND version = %(version)s
      AND (
        SELECT count(*) FROM collab_documentmembership
        WHERE document_id = %(document)s
          AND user_id = ANY(%(users)s)
          AND role IN ('owner', 'editor')
      ) = %(user_count)s
    RETURNING snapshot_version
),
inserted AS (
    INSERT INTO collab_operation
        (document_id, version, components, author_id, client_id, message_id,
         created_at)
    SELECT %(document)s, new.version, new.components::jsonb, new.author_id,
           new.client_id, new.message_id, %(now)s
    FROM document,
         unnest(%(versions)s::bigint[], %(components)s::text[],
                %(authors)s::bigint[], %(client_ids)s::text[],
                %(message_ids)s::text[])
         AS new(version, components, author_id, client_id, message_id)
    RETURNING 1
)
SELECT snapshot_version, (SELECT count(*) FROM inserted) FROM document
"""


def save_snapshot(document_id: uuid.UUID, version: int, text: str) -> None:
    """Store `text` as the document's snapshot at `version`, unless a newer one is.

    A failure is only logged: the snapshot is still due at the next commit, and the
    text is never lost, since the operations are stored.
    """
    try:
        Document.objects.filter(pk=document_id, snapshot_version__lt=version).update(
            snapshot=text, snapshot_version=version
        )
    except DatabaseError as exc:
        logger.warning(
            "storing the snapshot of %s at version %d failed: %s",
            document_id,
            version,
            exc,
        )


class _Batch:
    """One commit transaction: the history is read once and edits apply in turn.

    `history` contains every stored operation from version `first_version` on, with
    no gap, and grows as the batch adds operations.
    """

    def __init__(
        self,
        document: Document,
        text: str,
        roles: dict[int, Role],
        existing: dict[tuple[str, str], StoredOperation],
        first_version: int,
        history: list[StoredOperation],
    ):
        self.document = document
        self.text = text
        self.now = timezone.now()
        self.roles = roles
        self.existing = existing
        self.first_version = first_version
        self.history = history
        self.new_operations: list[Operation] = []

    @classmethod
    def read(
        cls, document: Document, text: str, requests: list[EditRequest], check_all: bool
    ) -> "_Batch":
        """Read the roles, the stored duplicates and the history the batch needs."""
        roles = _roles(document.pk, {request.user.pk for request in requests})
        # An edit first sent against the current version cannot have been stored
        # before, so the query is skipped for those on a first attempt. A resend
        # rebased onto the current version then fails the unique constraint,
        # and the retry looks it up.
        behind = [r for r in requests if check_all or r.base_version < document.version]
        existing = _existing(document.pk, behind) if behind else {}
        first_version = min(request.since for request in requests)
        history = (
            operations_since(document.pk, first_version)
            if first_version < document.version
            else []
        )
        return cls(document, text, roles, existing, first_version, history)

    def add(self, request: EditRequest) -> Outcome:
        try:
            return self._add(request)
        except errors.RealtimeError as exc:
            return exc

    def _add(self, request: EditRequest) -> CommitResult:
        _check_can_edit(self.roles.get(request.user.pk), request.message_id)
        key = (request.client_id, request.message_id)
        if key in self.existing:
            stored = self.existing[key]
            preceding = self._between(request.since, stored.version)
            return CommitResult(stored, duplicate=True, preceding=preceding)

        document = self.document
        if request.base_version > document.version:
            raise errors.VersionAhead(
                f"edit is based on version {request.base_version} but the document "
                f"is at version {document.version}",
                request.message_id,
            )
        concurrent = self.history[request.base_version - self.first_version :]
        components = _transform_over(
            request.components, concurrent, self.text, request.message_id
        )
        stored = StoredOperation(
            version=document.version,
            components=components,
            client_id=request.client_id,
            message_id=request.message_id,
            user_id=request.user.pk,
            username=request.user.get_username(),
            created_at=self.now,
        )
        self.new_operations.append(
            Operation(
                document_id=document.pk,
                version=stored.version,
                components=components,
                author=request.user,
                client_id=request.client_id,
                message_id=request.message_id,
                created_at=self.now,
            )
        )
        self.text = ot.apply(self.text, components)
        document.version += 1
        self.history.append(stored)
        self.existing[key] = stored
        preceding = self._between(request.since, stored.version)
        return CommitResult(stored, duplicate=False, preceding=preceding)

    def _between(self, since: int, version: int) -> list[StoredOperation]:
        """Return the operations with since <= version < `version`, if read."""
        start = max(since - self.first_version, 0)
        return self.history[start : max(version - self.first_version, 0)]


def _roles(document_id, user_ids) -> dict[int, Role]:
    """Read the editors' roles inside the commit, so a demotion applies at once."""
    memberships = DocumentMembership.objects.filter(
        document_id=document_id, user_id__in=user_ids
    ).values_list("user_id", "role")
    return {user_id: Role(role) for user_id, role in memberships}


def _existing(document_id, requests) -> dict[tuple[str, str], StoredOperation]:
    """Read the already stored operations among the requests' (client, message) ids."""
    keys = {(request.client_id, request.message_id) for request in requests}
    rows = Operation.objects.filter(
        document_id=document_id,
        client_id__in={client_id for client_id, _ in keys},
        message_id__in={message_id for _, message_id in keys},
    ).select_related("author")
    return {
        (row.client_id, row.message_id): StoredOperation.from_model(row)
        for row in rows
        if (row.client_id, row.message_id) in keys
    }


def _check_can_edit(role: Role | None, message_id: str) -> None:
    if role is None or not role.can_edit:
        name = role.value if role else "none"
        raise errors.Forbidden(
            f"role {name!r} cannot edit this document; an owner or editor role is "
            "required",
            message_id,
        )


def _transform_over(components, concurrent, current_content, message_id):
    """Check the edit against its base document, then transform it over `concurrent`."""
    base_length = len(current_content) - sum(
        ot.length_change(op.components) for op in concurrent
    )
    try:
        # Check the length before normalizing, which drops a trailing retain.
        ot.validate(components, doc_length=base_length)
        components = ot.normalize(components)
        for op in concurrent:
            components = ot.transform(components, op.components, "right")
        return components
    except ot.InvalidOperation as exc:
        raise errors.InvalidOperation(str(exc), message_id) from None


def in_commit_thread(function):
    """Wrap a synchronous database function to run on a commit thread."""
    return database_sync_to_async(
        function, thread_sensitive=False, executor=COMMIT_THREADS
    )


class Committer:
    """Group commit of one process's edits, per document.

    The first edit to an idle document is committed at once. Edits that arrive
    while that commit runs wait and are committed together in the next one, so a
    busy document costs one transaction per batch instead of one per edit.
    """

    def __init__(self) -> None:
        self.queues: dict[uuid.UUID, list[tuple[EditRequest, asyncio.Future]]] = {}
        self.running: set[uuid.UUID] = set()
        self.tasks: set[asyncio.Task] = set()

    async def submit(
        self, document_id: uuid.UUID, request: EditRequest
    ) -> CommitResult:
        """Commit the edit, or raise the error that rejected it."""
        future = asyncio.get_running_loop().create_future()
        self.queues.setdefault(document_id, []).append((request, future))
        if document_id not in self.running:
            self.running.add(document_id)
            task = asyncio.create_task(self._drain(document_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await future

    async def _drain(self, document_id: uuid.UUID) -> None:
        try:
            while queue := self.queues.get(document_id):
                batch, self.queues[document_id] = queue[:MAX_BATCH], queue[MAX_BATCH:]
                await self._commit(document_id, batch)
        finally:
            self.queues.pop(document_id, None)
            self.running.discard(document_id)

    async def _commit(self, document_id, batch) -> None:
        requests = [request for request, _ in batch]
        snapshot = None
        try:
            # Off the shared ORM thread: commits to different documents run in
            # parallel, each worker thread with its own database connection.
            outcomes, snapshot = await in_commit_thread(_commit_batch)(
                document_id, requests
            )
        except Exception as exc:
            logger.exception("commit of %d edits to %s failed", len(batch), document_id)
            outcomes = [
                errors.Unavailable(
                    f"the edit could not be stored ({type(exc).__name__}); resend it",
                    request.message_id,
                )
                for request in requests
            ]
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, errors.RealtimeError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        await self._publish(document_id, outcomes)
        if snapshot is not None:
            await in_commit_thread(save_snapshot)(document_id, *snapshot)

    async def _publish(self, document_id, outcomes) -> None:
        """Deliver the batch's new operations in version order.

        The next batch of this document waits for the delivery, so sockets
        receive its operations with no gap. The acks are already on their way.
        """
        frames = [
            (outcome.operation.version, protocol.encode_operation(outcome.operation))
            for outcome in outcomes
            if isinstance(outcome, CommitResult) and not outcome.duplicate
        ]
        if not frames:
            return
        # Let the woken consumers send their acks first, so an author's own
        # socket has moved past its operation when the fan-out arrives there.
        await asyncio.sleep(0)
        await fanout.publish(document_id, frames)


committer = Committer()
