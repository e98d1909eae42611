"""Stored snapshots and the per-process text cache behind every commit and join."""

import pytest

from collab import errors, store
from collab.commit import commit
from collab.models import Document
from collab.store import TextCache, load_snapshot, text_cache
from tests.stored import stored_text


@pytest.fixture
def interval(settings):
    settings.MATERI = {**settings.MATERI, "SNAPSHOT_INTERVAL": 3}
    return 3


def append(document, user, index: int, base: int):
    ops = ([{"retain": base}] if base else []) + [{"insert": "x"}]
    return commit(document.pk, user, "c1", f"m{index}", base, ops)


def test_edit_keeps_snapshot_below_interval(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, content="")
    for version in range(5):
        append(document, ada, version, version)
    document.refresh_from_db()
    # The default interval is 100 operations, so the stored text was not rewritten.
    assert (document.snapshot, document.snapshot_version, document.version) == (
        "",
        0,
        5,
    )
    assert stored_text(document.pk) == "xxxxx"
    assert load_snapshot(document.pk).content == "xxxxx"


def test_snapshot_moves_every_interval(interval, make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, content="")
    seen = []
    for version in range(7):
        append(document, ada, version, version)
        document.refresh_from_db()
        seen.append((document.snapshot_version, document.snapshot))
    assert seen == [
        (0, ""),
        (0, ""),
        (3, "xxx"),
        (3, "xxx"),
        (3, "xxx"),
        (6, "xxxxxx"),
        (6, "xxxxxx"),
    ]
    text_cache.clear()
    assert load_snapshot(document.pk).content == "x" * 7


def test_commit_updates_stale_cached_text(make_user, make_document):
    """A process whose cached text is behind, because another process committed
    since, applies the stored operations after it instead of trusting it."""
    ada = make_user("ada")
    document = make_document(ada, content="ab")
    commit(document.pk, ada, "c1", "m1", 0, [{"insert": "1"}])
    text_cache.put(document.pk, 1, "1ab")
    commit(document.pk, ada, "c1", "m2", 1, [{"retain": 3}, {"insert": "2"}])
    commit(document.pk, ada, "c1", "m3", 2, [{"insert": "3"}])
    # Back to the text at version 1, as another process would have it.
    text_cache.clear()
    text_cache.put(document.pk, 1, "1ab")
    result = commit(document.pk, ada, "c1", "m4", 3, [{"retain": 5}, {"insert": "4"}])
    assert result.operation.version == 3
    assert stored_text(document.pk) == "31ab24"
    assert load_snapshot(document.pk).content == "31ab24"


def test_rebuilt_text_checks_edit_length(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, content="abc")
    commit(document.pk, ada, "c1", "m1", 0, [{"delete": 2}])
    text_cache.clear()
    with pytest.raises(
        errors.InvalidOperation,
        match="retains or deletes 2 characters but the document has 1",
    ):
        commit(document.pk, ada, "c1", "m2", 1, [{"retain": 2}, {"insert": "x"}])
    assert stored_text(document.pk) == "c"
    assert Document.objects.get(pk=document.pk).version == 1


def test_missing_operations_raise_unavailable(make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, content="abc")
    commit(document.pk, ada, "c1", "m1", 0, [{"insert": "x"}])
    document.operations.all().delete()
    text_cache.clear()
    with pytest.raises(errors.Unavailable, match="missing stored operations"):
        store.text_at(document.pk, 1)


def test_text_cache_evicts_least_recent():
    cache = TextCache(max_size=10)
    cache.put("a", 1, "aaaaa")
    cache.put("b", 1, "bbbbb")
    assert cache.get("a") == (1, "aaaaa")
    cache.put("c", 1, "ccccc")
    assert cache.get("b") is None
    assert cache.get("a") == (1, "aaaaa")
    assert cache.size == 10
    # An older text never replaces a newer one.
    cache.put("a", 0, "")
    assert cache.get("a") == (1, "aaaaa")
    cache.put("a", 2, "aa")
    assert (cache.get("a"), cache.size) == ((2, "aa"), 7)
    # A text larger than the whole cache is not kept.
    cache.put("d", 1, "d" * 11)
    assert cache.get("d") is None
    assert cache.get("a") == (2, "aa")


def test_newer_snapshot_beats_old_cache(interval, make_user, make_document):
    ada = make_user("ada")
    document = make_document(ada, content="")
    for version in range(7):
        append(document, ada, version, version)
    text_cache.clear()
    text_cache.put(document.pk, 1, "x")
    # Without the operations below the stored snapshot (at 6), only a commit that
    # starts from that snapshot, not from the cached text at 1, can succeed.
    document.operations.filter(version__lt=6).delete()
    result = append(document, ada, 7, 7)
    assert result.operation.version == 7
    text_cache.clear()
    text_cache.put(document.pk, 1, "x")
    assert load_snapshot(document.pk).content == "x" * 8


def test_text_cache_counts_cached_operations(monkeypatch):
    monkeypatch.setattr(store, "HISTORY_ENTRY_SIZE", 10)
    operation = store.StoredOperation(0, [{"insert": "a"}], "c1", "m1", 1, "ada", None)
    cache = TextCache(max_size=30)
    cache.put("a", 1, "a", (operation,))
    assert cache.size == 11
    cache.put("b", 2, "bb", (operation, operation))
    assert cache.size == 22
    assert cache.get("a") is None
    assert cache.entry("b").history == (operation, operation)
