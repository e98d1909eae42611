"""The single-statement commit of edits based on this process's current text.

It runs on PostgreSQL only. On SQLite every commit takes the locked path, which
the other commit tests cover.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from collab import errors
from collab.commit import EditRequest, commit, commit_batch
from collab.models import DocumentMembership, Operation, Role
from collab.store import text_cache
from tests.stored import stored_text

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the single-statement commit is written for PostgreSQL",
)


@pytest.fixture
def document(make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, content="abc", members=[(bob, "editor")])
    # The first commit reads the document under a lock and caches its text.
    commit(document.pk, ada, "c1", "m0", 0, [{"insert": ">"}])
    return document


def test_current_edit_takes_one_statement(document):
    with CaptureQueriesContext(connection) as queries:
        result = commit(document.pk, document.owner, "c1", "m1", 1, [{"insert": "1"}])
    assert len(queries) == 1
    assert result.operation.version == 1
    assert result.preceding == []
    assert stored_text(document.pk) == "1>abc"
    assert text_cache.get(document.pk) == (2, "1>abc")


def test_current_batch_transforms_in_memory(document):
    bob = DocumentMembership.objects.get(role=Role.EDITOR).user
    requests = [
        EditRequest(document.owner, "c1", "m1", 1, [{"insert": "1"}], 1),
        EditRequest(bob, "c2", "m2", 1, [{"insert": "2"}], 1),
    ]
    with CaptureQueriesContext(connection) as queries:
        outcomes = commit_batch(document.pk, requests)
    assert len(queries) == 1
    assert [outcome.operation.version for outcome in outcomes] == [1, 2]
    # The second edit was transformed over the first, which it receives first.
    assert outcomes[1].operation.components == [{"retain": 1}, {"insert": "2"}]
    assert [op.version for op in outcomes[1].preceding] == [1]
    assert stored_text(document.pk) == "12>abc"


def test_demoted_author_is_rejected(document):
    DocumentMembership.objects.filter(user=document.owner).update(role=Role.VIEWER)
    with pytest.raises(errors.Forbidden):
        commit(document.pk, document.owner, "c1", "m1", 1, [{"insert": "1"}])
    assert stored_text(document.pk) == ">abc"
    assert Operation.objects.filter(document=document).count() == 1


def test_stale_cache_falls_back_to_locked_commit(document):
    """Another process committed since this one cached its text."""
    ada = document.owner
    commit(document.pk, ada, "c1", "m1", 1, [{"insert": "1"}])
    commit(document.pk, ada, "c1", "m2", 2, [{"insert": "2"}])
    text_cache.clear()
    text_cache.put(document.pk, 1, ">abc")

    result = commit(document.pk, ada, "c2", "m3", 1, [{"retain": 4}, {"insert": "!"}])
    assert result.operation.version == 3
    assert [op.version for op in result.preceding] == [1, 2]
    assert stored_text(document.pk) == "21>abc!"


def test_stored_resend_is_duplicate(document):
    ada = document.owner
    first = commit(document.pk, ada, "c1", "m1", 1, [{"insert": "1"}])
    again = commit(document.pk, ada, "c1", "m1", 2, [{"insert": "1"}])
    assert again.duplicate is True
    assert again.operation.version == first.operation.version
    assert stored_text(document.pk) == "1>abc"


def test_snapshot_due_after_one_statement_commit(document, settings):
    settings.MATERI = {**settings.MATERI, "SNAPSHOT_INTERVAL": 2}
    commit(document.pk, document.owner, "c1", "m1", 1, [{"insert": "1"}])
    document.refresh_from_db()
    assert (document.snapshot_version, document.snapshot) == (2, "1>abc")


def test_behind_edit_uses_cached_history(document):
    ada = document.owner
    commit(document.pk, ada, "c1", "m1", 1, [{"insert": "1"}])
    with CaptureQueriesContext(connection) as queries:
        result = commit(
            document.pk, ada, "c2", "m2", 1, [{"retain": 4}, {"insert": "!"}]
        )
    assert len(queries) == 1
    assert result.operation.version == 2
    assert result.operation.components == [{"retain": 5}, {"insert": "!"}]
    assert [op.message_id for op in result.preceding] == ["m1"]
    assert stored_text(document.pk) == "1>abc!"


def test_resend_of_cached_operation_is_duplicate(document):
    ada = document.owner
    first = commit(document.pk, ada, "c1", "m1", 1, [{"insert": "1"}])
    commit(document.pk, ada, "c2", "m2", 2, [{"insert": "2"}])
    with CaptureQueriesContext(connection) as queries:
        again = commit(document.pk, ada, "c1", "m1", 1, [{"insert": "1"}])
    assert len(queries) == 1
    assert again.duplicate is True
    assert again.operation == first.operation
    assert stored_text(document.pk) == "21>abc"


def test_edit_behind_cached_history_takes_locked_path(document):
    ada = document.owner
    commit(document.pk, ada, "c1", "m1", 1, [{"insert": "1"}])
    # The cached text without its operations, as after a read brought it forward.
    text_cache.clear()
    text_cache.put(document.pk, 2, "1>abc")
    with CaptureQueriesContext(connection) as queries:
        result = commit(document.pk, ada, "c2", "m2", 1, [{"insert": "2"}])
    assert len(queries) > 1
    assert result.operation.version == 2
    # The edit committed first stays on the left of a tie.
    assert stored_text(document.pk) == "12>abc"
