"""Batcher: one synchronous call for the requests of a short window."""

import asyncio

import pytest

from collab import batching
from collab.batching import Batcher

pytestmark = pytest.mark.asyncio


async def test_requests_in_window_share_one_call():
    calls = []

    def batch(items):
        calls.append(dict(items))
        return {key: item * 2 for key, item in items.items()}

    batcher = Batcher(batch)
    results = await asyncio.gather(*(batcher.submit(key, key) for key in range(5)))
    assert results == [0, 2, 4, 6, 8]
    assert calls == [{0: 0, 1: 1, 2: 2, 3: 3, 4: 4}]


async def test_later_request_starts_new_call():
    calls = []

    def batch(items):
        calls.append(sorted(items))
        return dict.fromkeys(items, True)

    batcher = Batcher(batch)
    assert await batcher.submit("a") is True
    assert await batcher.submit("b") is True
    assert calls == [["a"], ["b"]]


async def test_repeated_key_uses_latest_item():
    batcher = Batcher(lambda items: dict(items))
    first, second = await asyncio.gather(
        batcher.submit("a", "old"), batcher.submit("a", "new")
    )
    assert first == "new"
    assert second == "new"


async def test_missing_key_gets_none():
    batcher = Batcher(lambda items: {})
    assert await batcher.submit("gone") is None


async def test_failure_reaches_every_request():
    def batch(items):
        raise ConnectionError("database is down")

    batcher = Batcher(batch)
    results = await asyncio.gather(
        batcher.submit(1), batcher.submit(2), return_exceptions=True
    )
    assert [str(result) for result in results] == ["database is down"] * 2
    # The next window gets a call of its own.
    batcher.batch = lambda items: dict.fromkeys(items, "ok")
    assert await batcher.submit(3) == "ok"


async def test_large_window_is_split(monkeypatch):
    monkeypatch.setattr(batching, "MAX_KEYS", 3)
    sizes = []

    def batch(items):
        sizes.append(len(items))
        return dict(items)

    batcher = Batcher(batch)
    results = await asyncio.gather(*(batcher.submit(key, key) for key in range(7)))
    assert results == list(range(7))
    assert sizes == [3, 3, 1]
