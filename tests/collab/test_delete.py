"""Deleting a document while a commit to it is in progress."""

import threading

import pytest
from django.db import connection, transaction

from collab import store
from collab.models import Document, DocumentMembership, Operation

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite runs one write transaction at a time, so they cannot overlap",
)


def test_delete_waits_for_commit_in_progress(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, content="abc")
    locked = threading.Event()
    finish = threading.Event()

    def commit_in_progress() -> None:
        # The steps of a commit: lock the row, store an operation, move the version.
        try:
            with transaction.atomic():
                Document.objects.select_for_update().get(pk=document.pk)
                locked.set()
                finish.wait(10)
                Operation.objects.create(
                    document_id=document.pk,
                    version=0,
                    components=[{"insert": "x"}],
                    author=ada,
                    client_id="c1",
                    message_id="m1",
                )
                Document.objects.filter(pk=document.pk).update(version=1)
        finally:
            connection.close()

    outcome = {}

    def delete() -> None:
        try:
            outcome["deleted"] = store.delete_document(document.pk)
        except Exception as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    committer = threading.Thread(target=commit_in_progress)
    committer.start()
    assert locked.wait(10)
    deleter = threading.Thread(target=delete)
    deleter.start()
    # The delete waits for the row lock while the commit stores its operation.
    deleter.join(0.3)
    assert deleter.is_alive()
    finish.set()
    committer.join(10)
    deleter.join(10)

    assert outcome == {"deleted": True}
    assert not Document.objects.filter(pk=document.pk).exists()
    assert not Operation.objects.filter(document_id=document.pk).exists()
    assert not DocumentMembership.objects.filter(document_id=document.pk).exists()


def test_delete_of_missing_document_returns_false(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada)
    assert store.delete_document(document.pk) is True
    assert store.delete_document(document.pk) is False
