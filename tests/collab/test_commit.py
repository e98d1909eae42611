"""The commit path: batches, duplicates, rejections and concurrent commits."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from collab import errors
from collab.commit import Committer, EditRequest, commit, commit_batch
from collab.models import Document, Operation
from tests.stored import astored_text, stored_text


@pytest.fixture
def document(make_user, make_document):
    ada = make_user("ada")
    vic = make_user("vic")
    return make_document(ada, content="abc", members=[(vic, "viewer")])


def request(user, ops, base, message_id, client_id="c1", since=None):
    return EditRequest(
        user, client_id, message_id, base, ops, base if since is None else since
    )


def test_batch_applies_edits_in_order(document):
    ada = document.owner
    outcomes = commit_batch(
        document.pk,
        [
            request(ada, [{"insert": "1"}], 0, "m1"),
            request(ada, [{"insert": "2"}], 0, "m2", client_id="c2"),
            request(ada, [{"retain": 3}, {"insert": "3"}], 0, "m3", client_id="c3"),
        ],
    )
    versions = [outcome.operation.version for outcome in outcomes]
    assert versions == [0, 1, 2]
    # Each later edit was transformed over the earlier ones of the batch.
    assert [op.version for op in outcomes[2].preceding] == [0, 1]
    document.refresh_from_db()
    assert stored_text(document.pk) == "12abc3"
    assert document.version == 3
    assert Operation.objects.filter(document=document).count() == 3


def test_batch_rejects_one_edit_without_affecting_others(document):
    ada = document.owner
    vic = document.memberships.get(role="viewer").user
    outcomes = commit_batch(
        document.pk,
        [
            request(ada, [{"insert": "x"}], 0, "m1"),
            request(ada, [{"retain": 99}], 0, "m2"),
            request(vic, [{"insert": "v"}], 0, "m3", client_id="viewer"),
            request(ada, [{"insert": "y"}], 5, "m4"),
            request(ada, [{"bold": 1}], 0, "m5"),
            request(ada, [{"insert": "z"}], 1, "m6"),
        ],
    )
    assert isinstance(outcomes[0].operation.version, int)
    assert isinstance(outcomes[1], errors.InvalidOperation)
    assert "99" in outcomes[1].message
    assert isinstance(outcomes[2], errors.Forbidden)
    assert isinstance(outcomes[3], errors.VersionAhead)
    assert isinstance(outcomes[4], errors.InvalidOperation)
    assert outcomes[5].operation.version == 1
    document.refresh_from_db()
    assert stored_text(document.pk) == "zxabc"
    assert document.version == 2


def test_duplicate_in_same_batch_is_applied_once(document):
    ada = document.owner
    outcomes = commit_batch(
        document.pk,
        [
            request(ada, [{"insert": "x"}], 0, "m1"),
            request(ada, [{"insert": "x"}], 0, "m1"),
        ],
    )
    assert outcomes[0].duplicate is False
    assert outcomes[1].duplicate is True
    assert outcomes[1].operation.version == 0
    document.refresh_from_db()
    assert stored_text(document.pk) == "xabc"


def test_duplicate_across_commits_returns_original(document):
    ada = document.owner
    first = commit(document.pk, ada, "c1", "m1", 0, [{"insert": "x"}])
    commit(document.pk, ada, "c2", "m1", 1, [{"insert": "y"}])
    again = commit(document.pk, ada, "c1", "m1", 0, [{"insert": "x"}], since=0)
    assert again.duplicate is True
    assert again.operation.version == first.operation.version
    assert again.operation.created_at == first.operation.created_at
    assert Operation.objects.filter(document=document).count() == 2


def test_commit_raises_rejection(document):
    with pytest.raises(errors.VersionAhead, match="version 3"):
        commit(document.pk, document.owner, "c1", "m1", 3, [{"insert": "x"}])
    document.refresh_from_db()
    assert document.version == 0


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_committer_batches_concurrent_edits(document):
    committer = Committer()
    ada = await sync_to_async(lambda: document.owner)()
    requests = [
        request(ada, [{"insert": str(index % 10)}], 0, f"m{index}", f"c{index}")
        for index in range(50)
    ]
    results = await asyncio.gather(
        *(committer.submit(document.pk, item) for item in requests)
    )
    versions = sorted(result.operation.version for result in results)
    assert versions == list(range(50))
    stored = await Document.objects.aget(pk=document.pk)
    assert stored.version == 50
    assert len(await astored_text(document.pk)) == 53
    assert committer.queues == {}
    assert committer.running == set()


def test_resend_rebased_onto_current_version_is_duplicate(document):
    ada = document.owner
    first = commit(document.pk, ada, "c1", "m1", 0, [{"insert": "x"}])
    again = commit(document.pk, ada, "c1", "m1", 1, [{"insert": "x"}])
    assert again.duplicate is True
    assert again.operation.version == first.operation.version
    assert Operation.objects.filter(document=document).count() == 1


def test_commit_to_deleted_document_is_not_found(document):
    document_id = document.pk
    Document.objects.filter(pk=document_id).delete()
    with pytest.raises(errors.DocumentNotFound):
        commit(document_id, document.owner, "c1", "m1", 0, [{"insert": "x"}])
