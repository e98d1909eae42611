"""Validation of presence messages and the moving of selections over edits.

Positions are Unicode code points, like every position in the protocol. Selections
are moved with `ot.transform_position` and the remote rule (`own=False`), so a
caret stays before text that is inserted exactly at it.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collab import errors, ot
from collab.protocol import Message
from collab.store import StoredOperation

logger = logging.getLogger(__name__)

# Maximum selections in one cursor_update; editors with several carets send one each.
MAX_SELECTIONS = 100

ACTIVITY_STATES = ("active", "idle", "away")

Selection = dict[str, int]


@dataclass(frozen=True)
class CursorUpdate:
    """A client's selections against document version `version`."""

    selections: list[Selection]
    version: int


def parse_cursor_update(
    message: Message, current_version: int, max_behind: int
) -> CursorUpdate:
    """Read the data of a presence/cursor_update message.

    `current_version` is the version of the next operation the socket will receive.
    Raise errors.InvalidMessage naming the field for malformed data or for a version
    more than `max_behind` operations old, and errors.VersionAhead for a version the
    socket has not received yet.
    """
    message_id = message.message_id
    selections = message.data.get("selections")
    if not isinstance(selections, list):
        raise errors.InvalidMessage(
            'field \'data.selections\' must be a list of {"anchor", "head"} '
            f"objects, got {_short(selections)}",
            message_id,
        )
    if len(selections) > MAX_SELECTIONS:
        raise errors.InvalidMessage(
            f"field 'data.selections' has {len(selections)} selections; the maximum "
            f"is {MAX_SELECTIONS}",
            message_id,
        )
    parsed = [
        _parse_selection(selection, index, message_id)
        for index, selection in enumerate(selections)
    ]

    version = message.data.get("version")
    if not _is_position(version):
        raise errors.InvalidMessage(
            "field 'data.version' must be a non-negative integer, got "
            f"{_short(version)}",
            message_id,
        )
    if version > current_version:
        raise errors.VersionAhead(
            f"field 'data.version' is {version} but this socket has only received "
            f"the document up to version {current_version}",
            message_id,
        )
    if current_version - version > max_behind:
        raise errors.InvalidMessage(
            f"field 'data.version' is {version}, more than {max_behind} operations "
            f"behind the document's version {current_version}; send the selections "
            "against a recent version",
            message_id,
        )
    return CursorUpdate(parsed, version)


def parse_activity(message: Message) -> str:
    """Read the state of a presence/activity message, or raise InvalidMessage."""
    state = message.data.get("state")
    if state not in ACTIVITY_STATES:
        raise errors.InvalidMessage(
            f"field 'data.state' must be one of {', '.join(ACTIVITY_STATES)}, got "
            f"{_short(state)}",
            message.message_id,
        )
    return state


def clamp_selections(selections: list[Selection], length: int) -> list[Selection]:
    """Return the selections with every position limited to [0, length]."""
    return [
        {
            "anchor": min(selection["anchor"], length),
            "head": min(selection["head"], length),
        }
        for selection in selections
    ]


def rebase_selections(
    selections: list[Selection],
    version: int,
    operations: Sequence[StoredOperation],
    target_version: int,
    target_length: int,
) -> list[Selection]:
    """Move selections made against `version` to `target_version`.

    `operations` must contain every stored operation from `version` up to
    `target_version - 1` in version order, and may start earlier. The selections
    are first clamped into the document as it was at `version`, whose length is
    computed back from `target_length`.
    """
    later = [op for op in operations if version <= op.version < target_version]
    if [op.version for op in later] != list(range(version, target_version)):
        # Cannot happen while operations are stored with consecutive versions; the
        # clamped selections are still inside the document.
        logger.warning(
            "cannot move selections from version %d to %d: operations are missing",
            version,
            target_version,
        )
        return clamp_selections(selections, target_length)

    length = target_length - sum(ot.length_change(op.components) for op in later)
    moved = transform_selections(clamp_selections(selections, max(length, 0)), later)
    return clamp_selections(moved, target_length)


def transform_selections(
    selections: list[Selection], operations: Sequence[StoredOperation]
) -> list[Selection]:
    """Move selections over `operations`, which must start at their version."""
    for op in operations:
        selections = [
            {
                "anchor": ot.transform_position(selection["anchor"], op.components),
                "head": ot.transform_position(selection["head"], op.components),
            }
            for selection in selections
        ]
    return selections


def _parse_selection(selection: Any, index: int, message_id: str | None) -> Selection:
    name = f"data.selections[{index}]"
    if not isinstance(selection, dict):
        raise errors.InvalidMessage(
            f'field {name!r} must be an object like {{"anchor": 0, "head": 0}}, '
            f"got {_short(selection)}",
            message_id,
        )
    parsed = {}
    for key in ("anchor", "head"):
        value = selection.get(key)
        if not _is_position(value):
            raise errors.InvalidMessage(
                f"field '{name}.{key}' must be a non-negative integer (a code point "
                f"offset), got {_short(value)}",
                message_id,
            )
        parsed[key] = value
    return parsed


def _is_position(value: Any) -> bool:
    # bool is a subclass of int, but True is not a position.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
