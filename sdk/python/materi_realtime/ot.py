"""Operational transform for plain-text documents.

An operation is a list of components: ``{"retain": n}`` keeps n characters,
``{"insert": "text"}`` inserts text and ``{"delete": n}`` removes n characters. All
lengths and positions count Unicode code points, as Python ``str`` indexing does. An
operation may end before the document does, and the characters after its last
component stay unchanged, as if it ended with a retain of the rest.

Tie rule: when two concurrent operations insert at the same position, the operation
that the server committed first keeps its text on the left. So the server transforms
an incoming operation against an already committed one with ``side="right"``, and a
client transforms an incoming committed operation against its own pending operation
with ``side="left"``.

Cursor rule: ``transform_position`` leaves a caret before text that another client
inserts exactly at the caret (``own=False``), but moves it after text that the caret's
own author inserts there (``own=True``). A caret inside a deleted range moves to the
start of the deletion, and text inserted in place of the deleted range then follows
the same rule as an insert at the caret.

This module uses only the standard library, because both the Python SDK and the
server import it. No function here mutates its arguments, and the functions that
return operations return new lists and dicts.
"""

from __future__ import annotations

import re

__all__ = [
    "InvalidOperation",
    "apply",
    "compose",
    "consumed_length",
    "length_change",
    "normalize",
    "transform",
    "transform_pair",
    "transform_position",
    "validate",
]

RETAIN = "retain"
INSERT = "insert"
DELETE = "delete"
_KINDS = (RETAIN, INSERT, DELETE)

# Python strings decoded from JSON can contain U+D800..U+DFFF. A valid surrogate pair
# in JSON decodes to one code point, so any surrogate left in a str is unpaired.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Maximum length of a value's repr inside an error message.
_MAX_REPR_LENGTH = 80

Component = dict[str, int | str]
Operation = list[Component]

# Validated component: (kind, count) for retain and delete, (kind, text) for insert.
_ParsedComponent = tuple[str, int | str]


class InvalidOperation(ValueError):
    """An operation that is malformed or does not fit the document it is applied to."""


# Validation


def _short_repr(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_REPR_LENGTH:
        return text[: _MAX_REPR_LENGTH - 3] + "..."
    return text


def _is_count(value: object) -> bool:
    # bool is a subclass of int, but True is not a character count.
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_component(index: int, component: object) -> _ParsedComponent:
    """Validate one component and return it as a (kind, value) pair."""
    if not isinstance(component, dict):
        raise InvalidOperation(
            f"component {index} is not a retain, insert or delete: "
            f"{_short_repr(component)}"
        )
    if not component:
        raise InvalidOperation(f"component {index} is empty")

    kinds = [kind for kind in _KINDS if kind in component]
    if not kinds:
        raise InvalidOperation(
            f"component {index} is not a retain, insert or delete: "
            f"{_short_repr(component)}"
        )
    if len(kinds) > 1:
        raise InvalidOperation(
            f"component {index} must have exactly one of retain, insert or delete, "
            f"got {' and '.join(kinds)}: {_short_repr(component)}"
        )
    if len(component) > 1:
        unexpected = [_short_repr(key) for key in component if key != kinds[0]]
        noun = "key" if len(unexpected) == 1 else "keys"
        raise InvalidOperation(
            f"component {index} has unexpected {noun} {', '.join(unexpected)}: "
            f"{_short_repr(component)}"
        )

    kind = kinds[0]
    value = component[kind]
    if kind == INSERT:
        if not isinstance(value, str) or not value:
            raise InvalidOperation(
                f"component {index}: insert must be a non-empty string, "
                f"got {_short_repr(value)}"
            )
        surrogate = _SURROGATE.search(value)
        if surrogate is not None:
            raise InvalidOperation(
                f"component {index}: insert contains a lone surrogate at offset "
                f"{surrogate.start()} (U+{ord(surrogate.group()):04X})"
            )
        if "\x00" in value:
            # PostgreSQL cannot store U+0000 in text or jsonb.
            raise InvalidOperation(
                f"component {index}: insert contains U+0000 at offset "
                f"{value.index(chr(0))}; documents cannot contain it"
            )
    elif not _is_count(value):
        raise InvalidOperation(
            f"component {index}: {kind} count must be a positive integer, "
            f"got {_short_repr(value)}"
        )
    return kind, value


def _parse(ops: object) -> list[_ParsedComponent]:
    """Validate the structure of an operation and return its (kind, value) pairs."""
    if not isinstance(ops, list):
        raise InvalidOperation(
            f"operation must be a list of components, got {type(ops).__name__}"
        )
    return [_parse_component(index, component) for index, component in enumerate(ops)]


def _consumed(parts: list[_ParsedComponent]) -> int:
    return sum(value for kind, value in parts if kind != INSERT)


def _inserted(parts: list[_ParsedComponent]) -> int:
    return sum(len(value) for kind, value in parts if kind == INSERT)


def _check_non_negative_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _check_fits(parts: list[_ParsedComponent], doc_length: int) -> None:
    consumed = _consumed(parts)
    if consumed > doc_length:
        raise InvalidOperation(
            f"operation retains or deletes {consumed} characters but the document "
            f"has {doc_length} characters. Fetch the operations that this one is "
            f"missing and transform it against them"
        )


def validate(
    ops: object, doc_length: int | None = None, max_insert_length: int | None = None
) -> None:
    """Raise InvalidOperation unless ops is a well-formed operation.

    When doc_length is given, the operation must also fit a document of that many
    characters, that is, retain and delete at most doc_length characters in total.
    When max_insert_length is given, the operation must insert at most that many
    characters in total. Raises ValueError if either limit is not a non-negative
    integer.
    """
    if doc_length is not None:
        _check_non_negative_int("doc_length", doc_length)
    if max_insert_length is not None:
        _check_non_negative_int("max_insert_length", max_insert_length)

    parts = _parse(ops)
    if doc_length is not None:
        _check_fits(parts, doc_length)
    if max_insert_length is not None:
        inserted = _inserted(parts)
        if inserted > max_insert_length:
            raise InvalidOperation(
                f"operation inserts {inserted} characters but the maximum is "
                f"{max_insert_length}"
            )


def consumed_length(ops: Operation) -> int:
    """Validate ops and return the number of characters it retains or deletes.

    This is the minimum length of a document that the operation applies to.
    """
    return _consumed(_parse(ops))


def length_change(ops: Operation) -> int:
    """Validate ops and return the inserted minus the deleted characters."""
    parts = _parse(ops)
    deleted = sum(value for kind, value in parts if kind == DELETE)
    return _inserted(parts) - deleted


# Building and iterating


class _OperationBuilder:
    """Accumulator that appends components in normalized form.

    Adjacent components of one kind merge, and an insert that follows a delete moves
    in front of it. So after the last retain there is at most one insert followed by
    at most one delete.
    """

    def __init__(self) -> None:
        # Each entry is [kind, value]. An insert's value is a list of strings that
        # build() joins, so that merging many inserts stays linear in their length.
        self._components: list[list] = []

    def retain(self, count: int) -> None:
        if count <= 0:
            return
        if self._components and self._components[-1][0] == RETAIN:
            self._components[-1][1] += count
        else:
            self._components.append([RETAIN, count])

    def delete(self, count: int) -> None:
        if count <= 0:
            return
        if self._components and self._components[-1][0] == DELETE:
            self._components[-1][1] += count
        else:
            self._components.append([DELETE, count])

    def insert(self, text: str) -> None:
        if not text:
            return
        components = self._components
        if components and components[-1][0] == DELETE:
            if len(components) >= 2 and components[-2][0] == INSERT:
                components[-2][1].append(text)
            else:
                components.insert(len(components) - 1, [INSERT, [text]])
        elif components and components[-1][0] == INSERT:
            components[-1][1].append(text)
        else:
            components.append([INSERT, [text]])

    def add(self, kind: str, value: int | str) -> None:
        if kind == RETAIN:
            self.retain(value)
        elif kind == INSERT:
            self.insert(value)
        else:
            self.delete(value)

    def build(self) -> Operation:
        """Return the operation as new component dicts, without a trailing retain."""
        components = self._components
        end = len(components)
        if end and components[-1][0] == RETAIN:
            end -= 1
        result = []
        for kind, value in components[:end]:
            if kind == INSERT:
                result.append({INSERT: "".join(value)})
            else:
                result.append({kind: value})
        return result


class _ComponentIterator:
    """Cursor over validated components that can take part of the current one.

    Past the last component the iterator behaves as an endless retain, which is how
    an operation treats the rest of the document.
    """

    __slots__ = ("_index", "_offset", "_parts")

    def __init__(self, parts: list[_ParsedComponent]) -> None:
        self._parts = parts
        self._index = 0
        self._offset = 0

    def exhausted(self) -> bool:
        return self._index >= len(self._parts)

    def kind(self) -> str | None:
        """Return the kind of the current component, or None when exhausted."""
        if self.exhausted():
            return None
        return self._parts[self._index][0]

    def remaining(self) -> int:
        """Return the part of the current component not yet taken (0 when exhausted)."""
        if self.exhausted():
            return 0
        kind, value = self._parts[self._index]
        length = len(value) if kind == INSERT else value
        return length - self._offset

    def take(self, count: int) -> _ParsedComponent:
        """Take count characters of the current component and return them.

        count must not exceed remaining() unless the iterator is exhausted, in which
        case the result is a retain of count.
        """
        if self.exhausted():
            return RETAIN, count
        kind, value = self._parts[self._index]
        if kind == INSERT:
            piece = value[self._offset : self._offset + count]
            length = len(value)
        else:
            piece = count
            length = value
        self._offset += count
        if self._offset >= length:
            self._index += 1
            self._offset = 0
        return kind, piece

    def take_rest(self) -> _ParsedComponent:
        """Take what remains of the current component, which must exist."""
        return self.take(self.remaining())


def _common_length(first: _ComponentIterator, second: _ComponentIterator) -> int:
    """Return the length that both iterators can take next.

    At least one of the iterators must have components left.
    """
    if first.exhausted():
        return second.remaining()
    if second.exhausted():
        return first.remaining()
    return min(first.remaining(), second.remaining())


def _normalized_parts(parts: list[_ParsedComponent]) -> list[_ParsedComponent]:
    builder = _OperationBuilder()
    for kind, value in parts:
        builder.add(kind, value)
    normalized = []
    for component in builder.build():
        normalized.extend(component.items())
    return normalized


# Public operations


def normalize(ops: Operation) -> Operation:
    """Validate ops and return its canonical form.

    Adjacent components of the same kind merge, a trailing retain is dropped, and an
    insert next to a delete goes first. Two operations whose effect is equal on every
    document normalize to equal lists.
    """
    builder = _OperationBuilder()
    for kind, value in _parse(ops):
        builder.add(kind, value)
    return builder.build()


def apply(text: str, ops: Operation) -> str:
    """Apply ops to text and return the new text.

    Raises InvalidOperation if ops is malformed or retains or deletes more characters
    than text has. The work is linear in the number of components, the inserted text
    and one copy of the document.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    parts = _parse(ops)
    _check_fits(parts, len(text))

    pieces = []
    position = 0
    for kind, value in parts:
        if kind == RETAIN:
            pieces.append(text[position : position + value])
            position += value
        elif kind == INSERT:
            pieces.append(value)
        else:
            position += value
    pieces.append(text[position:])
    return "".join(pieces)


def compose(a: Operation, b: Operation) -> Operation:
    """Return one normalized operation equivalent to applying a and then b.

    b applies to the output of a. On a document where a fits and b fits a's output,
    the result fits and gives the same text.
    """
    first = _ComponentIterator(_parse(a))
    second = _ComponentIterator(_parse(b))
    builder = _OperationBuilder()

    while True:
        # Text that a deletes never reaches b, and text that b inserts is not in a.
        if first.kind() == DELETE:
            builder.delete(first.take_rest()[1])
            continue
        if second.kind() == INSERT:
            builder.insert(second.take_rest()[1])
            continue
        if first.exhausted() and second.exhausted():
            break

        length = _common_length(first, second)
        first_kind, first_value = first.take(length)
        second_kind, _ = second.take(length)
        if first_kind == RETAIN:
            builder.add(second_kind, length)
        elif second_kind == RETAIN:
            # b keeps text that a inserted.
            builder.insert(first_value)
        # Otherwise b deletes text that a inserted, and neither appears.

    return builder.build()


def _check_side(side: str) -> None:
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def transform(a: Operation, b: Operation, side: str) -> Operation:
    """Return a rewritten to apply after b, where a and b apply to the same document.

    side is "left" or "right" and sets where a's insert goes when a and b insert at
    the same position: "left" puts a's text before b's. By the tie rule in the module
    docstring, the server transforms an incoming operation against a committed one
    with "right". For a and b valid on a document d, convergence holds:
    ``apply(apply(d, a), transform(b, a, "right"))`` equals
    ``apply(apply(d, b), transform(a, b, "left"))``.

    NOTE: transforming against compose(b1, b2) can order tied inserts differently
    from transforming against b1 and then b2. The server and the clients must both
    transform against committed operations one at a time.
    """
    _check_side(side)
    # Normalized inputs put an insert before an adjacent delete, so a tie means the
    # same position whichever way the caller ordered its components.
    mine = _ComponentIterator(_normalized_parts(_parse(a)))
    theirs = _ComponentIterator(_normalized_parts(_parse(b)))
    builder = _OperationBuilder()
    mine_first = side == "left"

    while True:
        if mine.kind() == INSERT and (mine_first or theirs.kind() != INSERT):
            builder.insert(mine.take_rest()[1])
            continue
        if theirs.kind() == INSERT:
            builder.retain(theirs.remaining())
            theirs.take_rest()
            continue
        if mine.exhausted() and theirs.exhausted():
            break

        length = _common_length(mine, theirs)
        mine_kind, _ = mine.take(length)
        theirs_kind, _ = theirs.take(length)
        if theirs_kind == DELETE:
            # b already removed this text, so a's retain or delete of it is dropped.
            continue
        builder.add(mine_kind, length)

    return builder.build()


def transform_pair(a: Operation, b: Operation) -> tuple[Operation, Operation]:
    """Transform two concurrent operations against each other, a on the left on ties.

    Returns (a_prime, b_prime), where a_prime applies after b and b_prime after a,
    and both orders give the same text.
    """
    return transform(a, b, "left"), transform(b, a, "right")


def transform_position(position: int, ops: Operation, own: bool = False) -> int:
    """Return where a caret at position ends up after ops is applied.

    Set own to True when the caret belongs to the author of ops. It decides the side
    of an insert exactly at the caret (see the cursor rule in the module docstring).
    If position is within the document that ops applies to, the result lies within
    [0, new length]. Raises ValueError if position is not a non-negative integer.
    """
    _check_non_negative_int("position", position)
    old_index = 0
    new_index = 0
    # Length of the insert just before the current delete, which replaces the
    # deleted text and shares its start position.
    replacement_length = 0

    for kind, value in _normalized_parts(_parse(ops)):
        if kind == RETAIN:
            if position < old_index + value:
                return new_index + position - old_index
            old_index += value
            new_index += value
            replacement_length = 0
        elif kind == INSERT:
            if position == old_index:
                return new_index + len(value) if own else new_index
            new_index += len(value)
            replacement_length = len(value)
        else:
            if position < old_index + value:
                # The caret was at the start of or inside the deleted range.
                return new_index if own else new_index - replacement_length
            old_index += value
            replacement_length = 0

    return new_index + position - old_index
