"""Presence logic that needs neither a socket nor a database."""

import asyncio
import time
from datetime import UTC, datetime

import pytest

from collab import errors
from collab.protocol import Event, Message, MessageType
from collab.store import StoredOperation
from presence import cursors, service
from presence.throttle import Coalescer


def cursor_message(data) -> Message:
    return Message(MessageType.PRESENCE, Event.CURSOR_UPDATE, data, "c1", "m1")


def stored(version: int, components: list) -> StoredOperation:
    return StoredOperation(
        version=version,
        components=components,
        client_id="other",
        message_id=f"m{version}",
        user_id=1,
        username="ada",
        created_at=datetime.now(UTC),
    )


def relative_luminance(color: str) -> float:
    channels = []
    for start in (1, 3, 5):
        value = int(color[start : start + 2], 16) / 255
        if value <= 0.03928:
            channels.append(value / 12.92)
        else:
            channels.append(((value + 0.055) / 1.055) ** 2.4)
    red, green, blue = channels
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_palette_contrast_against_white():
    for color in service.PALETTE:
        # WCAG 2 contrast ratio; white has relative luminance 1.
        ratio = 1.05 / (relative_luminance(color) + 0.05)
        assert ratio >= 4.5, (color, ratio)


def test_color_stable_per_user():
    assert service.color_for_user(7) == service.color_for_user(7)
    assert service.color_for_user(7) in service.PALETTE
    consecutive = {service.color_for_user(user_id) for user_id in range(1, 13)}
    assert len(consecutive) == len(service.PALETTE)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"version": 0}, "data.selections"),
        ({"selections": "0..3", "version": 0}, "data.selections"),
        ({"selections": [5], "version": 0}, "data.selections[0]"),
        ({"selections": [{"anchor": 1}], "version": 0}, "data.selections[0].head"),
        (
            {"selections": [{"anchor": 1, "head": 2}, {"anchor": -1, "head": 0}]},
            "data.selections[1].anchor",
        ),
        ({"selections": [{"anchor": True, "head": 0}], "version": 0}, "anchor"),
        ({"selections": [{"anchor": 1.5, "head": 0}], "version": 0}, "anchor"),
        ({"selections": [{"anchor": 0, "head": 0}]}, "data.version"),
        ({"selections": [], "version": "3"}, "data.version"),
        ({"selections": [{"anchor": 0, "head": 0}] * 101, "version": 0}, "maximum"),
    ],
)
def test_cursor_update_invalid_names_field(data, field):
    with pytest.raises(errors.InvalidMessage) as raised:
        cursors.parse_cursor_update(cursor_message(data), 5, max_behind=1000)
    assert field in raised.value.message
    assert raised.value.message_id == "m1"


def test_cursor_update_version_ahead():
    data = {"selections": [{"anchor": 0, "head": 0}], "version": 6}
    with pytest.raises(errors.VersionAhead) as raised:
        cursors.parse_cursor_update(cursor_message(data), 5, max_behind=1000)
    assert "data.version" in raised.value.message


def test_cursor_update_too_far_behind():
    data = {"selections": [{"anchor": 0, "head": 0}], "version": 1}
    with pytest.raises(errors.InvalidMessage) as raised:
        cursors.parse_cursor_update(cursor_message(data), 20, max_behind=10)
    assert "data.version" in raised.value.message


def test_cursor_update_keeps_only_positions():
    data = {"selections": [{"anchor": 3, "head": 1, "color": "red"}], "version": 2}
    update = cursors.parse_cursor_update(cursor_message(data), 2, max_behind=1000)
    assert update.selections == [{"anchor": 3, "head": 1}]
    assert update.version == 2


@pytest.mark.parametrize("state", [None, "asleep", 1, "Active"])
def test_activity_invalid_names_field(state):
    message = Message(MessageType.PRESENCE, Event.ACTIVITY, {"state": state})
    with pytest.raises(errors.InvalidMessage) as raised:
        cursors.parse_activity(message)
    assert "data.state" in raised.value.message


def test_rebase_moves_selection_over_delete():
    delete_front = stored(0, [{"delete": 20}, {"retain": 80}])
    moved = cursors.rebase_selections(
        [{"anchor": 95, "head": 100}], 0, [delete_front], 1, 80
    )
    assert moved == [{"anchor": 75, "head": 80}]


def test_rebase_clamps_past_the_end():
    moved = cursors.rebase_selections([{"anchor": 4, "head": 500}], 3, [], 3, 10)
    assert moved == [{"anchor": 4, "head": 10}]


def test_rebase_keeps_caret_before_remote_insert():
    insert_at_caret = stored(0, [{"retain": 5}, {"insert": "abc"}])
    moved = cursors.rebase_selections(
        [{"anchor": 5, "head": 5}], 0, [insert_at_caret], 1, 8
    )
    assert moved == [{"anchor": 5, "head": 5}]


def test_rebase_uses_only_operations_from_its_version():
    older = stored(0, [{"insert": "0123456789"}])
    newer = stored(1, [{"delete": 2}, {"retain": 8}])
    moved = cursors.rebase_selections(
        [{"anchor": 4, "head": 6}], 1, [older, newer], 2, 8
    )
    assert moved == [{"anchor": 2, "head": 4}]


async def collect_coalesced(rate: float, count: int, spread: float):
    sent: list[int] = []

    async def send(value: int) -> None:
        sent.append(value)

    coalescer = Coalescer(rate, send, "test")
    started = time.monotonic()
    for value in range(count):
        coalescer.submit(value)
        if value % 50 == 49:
            await asyncio.sleep(spread / (count / 50))
    await asyncio.sleep(2 / rate)
    await coalescer.close()
    return sent, time.monotonic() - started


@pytest.mark.asyncio
async def test_coalescer_limits_rate_and_sends_latest():
    sent, elapsed = await collect_coalesced(rate=20, count=1000, spread=0.5)
    # The first send carries the newest value when the sending task first runs,
    # which is after this coroutine's first sleep.
    assert sent[0] < 50
    assert sent[-1] == 999
    assert sent == sorted(sent)
    assert len(sent) <= elapsed * 20 + 1


@pytest.mark.asyncio
async def test_coalescer_close_drops_pending():
    sent: list[int] = []

    async def send(value: int) -> None:
        sent.append(value)

    coalescer = Coalescer(1, send, "test")
    coalescer.submit(1)
    await asyncio.sleep(0.05)
    coalescer.submit(2)
    await coalescer.close()
    await asyncio.sleep(0.05)
    assert sent == [1]
