"""Tests for the operational transform in materi_realtime.ot."""

import copy
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from materi_realtime import ot

# Text units for generated documents. Several are more than one code point ("\r\n",
# "👍🏽", "e\u0301"), so generated edits also split them, as clients may.
TEXT_UNITS = [
    "a",
    "b",
    "Z",
    " ",
    "\n",
    "\r\n",
    "😀",
    "👍🏽",
    "e\u0301",
    "中",
    "文",
    "字",
]

documents = st.lists(st.sampled_from(TEXT_UNITS), max_size=30).map("".join)
insert_texts = st.lists(st.sampled_from(TEXT_UNITS), min_size=1, max_size=5).map(
    "".join
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


@st.composite
def operations(draw, doc_length):
    """Draw a valid, often unnormalized operation on a document of doc_length.

    Components come in random order, so the result can contain adjacent components
    of one kind or a delete before an insert, and it sometimes ends early.
    """
    components = []
    remaining = doc_length
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        kind = draw(st.sampled_from(["retain", "insert", "delete"]))
        if kind == "insert":
            components.append({"insert": draw(insert_texts)})
        elif remaining > 0:
            count = draw(st.integers(min_value=1, max_value=remaining))
            remaining -= count
            components.append({kind: count})
    if remaining > 0 and draw(st.booleans()):
        components.append({"retain": remaining})
    return components


@st.composite
def concurrent_operations(draw):
    """Draw a document and two operations made against it."""
    document = draw(documents)
    a = draw(operations(len(document)))
    b = draw(operations(len(document)))
    return document, a, b


@st.composite
def sequential_operations(draw):
    """Draw a document, an operation a on it and an operation b on a's output."""
    document = draw(documents)
    a = draw(operations(len(document)))
    b = draw(operations(len(ot.apply(document, a))))
    return document, a, b


@st.composite
def split_components(draw, ops):
    """Draw an operation with the same effect as ops but with split components.

    Every component may be cut into pieces, and a delete that directly precedes an
    insert may swap places with it.
    """
    pieces = []
    for component in ops:
        ((kind, value),) = component.items()
        length = len(value) if kind == "insert" else value
        cuts = draw(st.lists(st.integers(min_value=1, max_value=length), max_size=2))
        bounds = sorted({0, length, *cuts})
        for start, end in itertools.pairwise(bounds):
            if kind == "insert":
                pieces.append({"insert": value[start:end]})
            else:
                pieces.append({kind: end - start})

    index = 0
    while index < len(pieces) - 1:
        current, following = pieces[index], pieces[index + 1]
        if "delete" in current and "insert" in following and draw(st.booleans()):
            pieces[index], pieces[index + 1] = following, current
            index += 2
        else:
            index += 1
    return pieces


def edited_span(ops):
    """Return the old positions where the first edit in ops starts and the last ends.

    Both are the consumed length when ops makes no edit.
    """
    position = 0
    first = None
    for component in ops:
        ((kind, value),) = component.items()
        if kind == "retain":
            position += value
            continue
        if first is None:
            first = position
        if kind == "delete":
            position += value
        last = position
    if first is None:
        return position, position
    return first, last


# Validation


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ("retain 3", "operation must be a list of components, got str"),
        ({"ops": []}, "operation must be a list of components, got dict"),
        ([{"retain": 1}, "x"], "component 1 is not a retain, insert or delete: 'x'"),
        (
            [{"retain": 1}, {"insert": "a"}, {"move": 3}],
            "component 2 is not a retain, insert or delete: {'move': 3}",
        ),
        ([{}], "component 0 is empty"),
        (
            [{"retain": 1, "insert": "a"}],
            (
                "component 0 must have exactly one of retain, insert or delete, "
                "got retain and insert"
            ),
        ),
        (
            [{"delete": 1, "attributes": {}}],
            "component 0 has unexpected key 'attributes'",
        ),
        (
            [{"retain": 2}, {"retain": 0}],
            "component 1: retain count must be a positive integer, got 0",
        ),
        ([{"retain": -1}], "retain count must be a positive integer, got -1"),
        ([{"retain": 1.0}], "retain count must be a positive integer, got 1.0"),
        ([{"retain": "3"}], "retain count must be a positive integer, got '3'"),
        ([{"retain": True}], "retain count must be a positive integer, got True"),
        ([{"retain": None}], "retain count must be a positive integer, got None"),
        ([{"delete": 0}], "component 0: delete count must be a positive integer"),
        ([{"delete": False}], "delete count must be a positive integer, got False"),
        (
            [{"retain": 1}, {"delete": 1}, {"retain": 1}, {"insert": 5}],
            "component 3: insert must be a non-empty string, got 5",
        ),
        ([{"insert": ""}], "component 0: insert must be a non-empty string, got ''"),
        ([{"insert": ["a"]}], "insert must be a non-empty string, got ['a']"),
        (
            [{"insert": "abc\ud83d"}],
            "component 0: insert contains a lone surrogate at offset 3",
        ),
        (
            [{"insert": "\udfff"}],
            "component 0: insert contains a lone surrogate at offset 0",
        ),
        (
            [{"insert": "😀a\x00"}],
            "component 0: insert contains U+0000 at offset 2; documents cannot "
            "contain it",
        ),
    ],
)
def test_validate_rejects_fault(ops, expected):
    with pytest.raises(ot.InvalidOperation) as error:
        ot.validate(ops)
    assert expected in str(error.value)


def test_invalid_operation_is_value_error():
    assert issubclass(ot.InvalidOperation, ValueError)


def test_validate_accepts_well_formed():
    ot.validate([])
    ot.validate([{"retain": 2}, {"insert": "😀"}, {"delete": 1}])
    ot.validate([{"delete": 3}, {"insert": "x"}, {"insert": "y"}])


def test_validate_past_end_names_lengths():
    with pytest.raises(ot.InvalidOperation) as error:
        ot.validate([{"retain": 10}, {"delete": 2}], doc_length=10)
    message = str(error.value)
    assert "retains or deletes 12 characters" in message
    assert "the document has 10 characters" in message
    assert "transform" in message


def test_validate_fits_document():
    ot.validate([{"retain": 8}, {"delete": 2}], doc_length=10)
    ot.validate([{"retain": 3}, {"insert": "abc"}], doc_length=10)
    ot.validate([{"insert": "abc"}], doc_length=0)


def test_validate_max_insert_length():
    ops = [{"insert": "a" * 1500}, {"retain": 1}, {"insert": "b" * 500}]
    with pytest.raises(ot.InvalidOperation) as error:
        ot.validate(ops, max_insert_length=1000)
    assert "operation inserts 2000 characters but the maximum is 1000" in str(
        error.value
    )
    ot.validate(ops, max_insert_length=2000)


def test_validate_counts_code_points():
    ot.validate([{"retain": 2}], doc_length=len("😀👍"))
    ot.validate([{"insert": "👍🏽"}], max_insert_length=2)
    with pytest.raises(ot.InvalidOperation):
        ot.validate([{"insert": "👍🏽"}], max_insert_length=1)


def test_validate_rejects_bad_limits():
    with pytest.raises(ValueError, match="doc_length"):
        ot.validate([], doc_length=-1)
    with pytest.raises(ValueError, match="max_insert_length"):
        ot.validate([], max_insert_length="10")


def test_error_message_shortens_huge_value():
    with pytest.raises(ot.InvalidOperation) as error:
        ot.validate([{"delete": "x" * 10_000}])
    assert len(str(error.value)) < 200


def test_lengths_of_operation():
    ops = [{"retain": 3}, {"insert": "😀ab"}, {"delete": 2}, {"retain": 1}]
    assert ot.consumed_length(ops) == 6
    assert ot.length_change(ops) == 1
    assert ot.consumed_length([]) == 0
    assert ot.length_change([]) == 0


def test_lengths_validate_operation():
    with pytest.raises(ot.InvalidOperation):
        ot.consumed_length([{"retain": 0}])
    with pytest.raises(ot.InvalidOperation):
        ot.length_change([{"insert": 1}])


# normalize


def test_normalize_merges_same_kind():
    ops = [
        {"retain": 1},
        {"retain": 2},
        {"insert": "a"},
        {"insert": "b"},
        {"delete": 1},
        {"delete": 1},
        {"retain": 1},
    ]
    assert ot.normalize(ops) == [{"retain": 3}, {"insert": "ab"}, {"delete": 2}]


def test_normalize_drops_trailing_retain():
    assert ot.normalize([{"retain": 5}]) == []
    assert ot.normalize([{"delete": 1}, {"retain": 5}]) == [{"delete": 1}]


def test_normalize_puts_insert_first():
    ops = [{"delete": 1}, {"insert": "a"}, {"delete": 2}, {"insert": "b"}]
    assert ot.normalize(ops) == [{"insert": "ab"}, {"delete": 3}]


def test_normalize_does_not_mutate():
    ops = [{"retain": 1}, {"retain": 1}, {"delete": 1}, {"insert": "x"}]
    original = copy.deepcopy(ops)
    result = ot.normalize(ops)
    assert ops == original
    result[0]["retain"] = 99
    assert ops == original


def test_normalize_returns_new_dicts():
    ops = [{"insert": "a"}]
    result = ot.normalize(ops)
    assert result == ops
    assert result is not ops
    assert result[0] is not ops[0]


# apply


def test_apply_hand_examples():
    assert ot.apply("hello", []) == "hello"
    assert ot.apply("hello", [{"retain": 5}, {"insert": "!"}]) == "hello!"
    assert ot.apply("hello", [{"delete": 1}, {"insert": "J"}]) == "Jello"
    assert ot.apply("hello", [{"retain": 1}, {"delete": 3}]) == "ho"
    assert ot.apply("", [{"insert": "new"}]) == "new"


def test_apply_counts_code_points():
    text = "a😀e\u0301\r\n中"
    assert ot.apply(text, [{"retain": 1}, {"delete": 1}]) == "ae\u0301\r\n中"
    assert ot.apply(text, [{"retain": 3}, {"delete": 1}]) == "a😀e\r\n中"
    assert ot.apply(text, [{"retain": 4}, {"insert": "👍🏽"}]) == "a😀e\u0301👍🏽\r\n中"


def test_apply_past_end_names_lengths():
    with pytest.raises(ot.InvalidOperation) as error:
        ot.apply("0123456789", [{"retain": 11}, {"delete": 1}])
    message = str(error.value)
    assert "12 characters" in message
    assert "10 characters" in message


def test_apply_rejects_non_string_text():
    with pytest.raises(TypeError):
        ot.apply(b"bytes", [])


def test_apply_large_document_small_edit():
    text = "x" * 1_000_000
    ops = [{"retain": 500_000}, {"insert": "😀"}, {"delete": 10}]
    result = ot.apply(text, ops)
    assert len(result) == 1_000_000 - 9
    assert result[500_000] == "😀"


# compose


def test_compose_hand_examples():
    assert ot.compose([{"insert": "abc"}], [{"retain": 1}, {"delete": 1}]) == [
        {"insert": "ac"}
    ]
    assert ot.compose([{"retain": 2}, {"insert": "x"}], [{"delete": 1}]) == [
        {"delete": 1},
        {"retain": 1},
        {"insert": "x"},
    ]
    assert ot.compose([{"delete": 2}], [{"delete": 1}]) == [{"delete": 3}]
    assert ot.compose([], [{"retain": 3}, {"insert": "z"}]) == [
        {"retain": 3},
        {"insert": "z"},
    ]


def test_compose_insert_then_delete_cancels():
    assert (
        ot.compose([{"retain": 1}, {"insert": "ab"}], [{"retain": 1}, {"delete": 2}])
        == []
    )


def test_compose_does_not_mutate():
    a = [{"insert": "ab"}, {"retain": 1}]
    b = [{"retain": 1}, {"delete": 1}]
    copies = copy.deepcopy((a, b))
    ot.compose(a, b)
    assert (a, b) == copies


# transform


def test_transform_hello_world_tie():
    document = ""
    a = [{"insert": "Hello"}]
    b = [{"insert": "World"}]

    # The server commits a first, then transforms the incoming b against it.
    server = ot.apply(document, a)
    server = ot.apply(server, ot.transform(b, a, "right"))
    assert server == "HelloWorld"

    # The client that sent b applied it locally, then receives a and puts it left.
    client = ot.apply(document, b)
    client = ot.apply(client, ot.transform(a, b, "left"))
    assert client == "HelloWorld"


def test_transform_tie_sides():
    a = [{"retain": 2}, {"insert": "A"}]
    b = [{"retain": 2}, {"insert": "B"}]
    assert ot.transform(a, b, "left") == [{"retain": 2}, {"insert": "A"}]
    assert ot.transform(a, b, "right") == [{"retain": 3}, {"insert": "A"}]


def test_transform_overlapping_deletes():
    a = [{"retain": 1}, {"delete": 3}]
    b = [{"retain": 2}, {"delete": 3}]
    document = "0123456"
    assert ot.transform(a, b, "left") == [{"retain": 1}, {"delete": 1}]
    assert ot.transform(b, a, "right") == [{"retain": 1}, {"delete": 1}]
    assert ot.apply(ot.apply(document, a), ot.transform(b, a, "right")) == "056"


def test_transform_insert_inside_deleted_range():
    a = [{"retain": 2}, {"insert": "X"}]
    b = [{"retain": 1}, {"delete": 3}]
    document = "01234"
    assert ot.transform(a, b, "left") == [{"retain": 1}, {"insert": "X"}]
    assert ot.apply(ot.apply(document, b), ot.transform(a, b, "left")) == "0X4"
    assert ot.apply(ot.apply(document, a), ot.transform(b, a, "right")) == "0X4"


def test_transform_pair_matches_sides():
    a = [{"insert": "A"}, {"delete": 1}]
    b = [{"retain": 1}, {"insert": "B"}]
    a_prime, b_prime = ot.transform_pair(a, b)
    assert a_prime == ot.transform(a, b, "left")
    assert b_prime == ot.transform(b, a, "right")
    assert ot.apply(ot.apply("xy", a), b_prime) == ot.apply(ot.apply("xy", b), a_prime)


def test_transform_rejects_bad_side():
    with pytest.raises(ValueError, match="side must be 'left' or 'right'"):
        ot.transform([], [], "before")


def test_transform_validates_operations():
    with pytest.raises(ot.InvalidOperation, match="component 0 is empty"):
        ot.transform([{}], [], "left")
    with pytest.raises(ot.InvalidOperation, match="component 1"):
        ot.transform([], [{"retain": 1}, {"delete": -2}], "left")


def test_transform_does_not_mutate():
    a = [{"delete": 1}, {"insert": "a"}]
    b = [{"retain": 1}, {"retain": 1}, {"insert": "b"}]
    copies = copy.deepcopy((a, b))
    ot.transform(a, b, "left")
    ot.transform_pair(a, b)
    assert (a, b) == copies


def test_operations_independent_of_document_length():
    # Counts far beyond any real document show that the work follows the components.
    huge = 10**15
    a = [{"retain": huge}, {"insert": "x"}, {"delete": 5}]
    b = [{"retain": huge // 2}, {"delete": huge // 4}]
    assert ot.transform(a, b, "left") == [
        {"retain": huge - huge // 4},
        {"insert": "x"},
        {"delete": 5},
    ]
    assert ot.compose(b, [{"retain": huge}, {"delete": 1}]) == [
        {"retain": huge // 2},
        {"delete": huge // 4},
        {"retain": huge // 2},
        {"delete": 1},
    ]
    assert ot.transform_position(huge, b) == huge - huge // 4


# transform_position


def test_cursor_remote_insert_at_caret():
    ops = [{"retain": 3}, {"insert": "abc"}]
    assert ot.transform_position(3, ops) == 3
    assert ot.transform_position(3, ops, own=False) == 3


def test_cursor_own_insert_at_caret():
    ops = [{"retain": 3}, {"insert": "abc"}]
    assert ot.transform_position(3, ops, own=True) == 6


def test_cursor_insert_before_and_after():
    ops = [{"retain": 3}, {"insert": "abc"}]
    assert ot.transform_position(2, ops) == 2
    assert ot.transform_position(4, ops) == 7


def test_cursor_selection_after_remote_delete():
    ops = [{"delete": 20}]
    assert ot.transform_position(95, ops) == 75
    assert ot.transform_position(100, ops) == 80
    assert len(ot.apply("x" * 100, ops)) == 80


def test_cursor_inside_deleted_range():
    ops = [{"retain": 10}, {"delete": 5}]
    assert ot.transform_position(10, ops) == 10
    assert ot.transform_position(12, ops) == 10
    assert ot.transform_position(15, ops) == 10
    assert ot.transform_position(16, ops) == 11


def test_cursor_inside_replaced_range():
    # The caret moves to the start of the deletion, and the replacement text then
    # follows the insert-at-caret rule. The component order must not matter.
    for ops in (
        [{"retain": 3}, {"insert": "ab"}, {"delete": 2}],
        [{"retain": 3}, {"delete": 2}, {"insert": "ab"}],
    ):
        assert ot.transform_position(4, ops) == 3
        assert ot.transform_position(4, ops, own=True) == 5
        assert ot.transform_position(5, ops) == 5


def test_cursor_rejects_bad_position():
    with pytest.raises(ValueError, match="position"):
        ot.transform_position(-1, [])
    with pytest.raises(ValueError, match="position"):
        ot.transform_position(True, [])


# Properties


@PROPERTY_SETTINGS
@given(concurrent_operations())
def test_property_transform_converges(case):
    document, a, b = case
    a_then_b = ot.apply(ot.apply(document, a), ot.transform(b, a, "right"))
    b_then_a = ot.apply(ot.apply(document, b), ot.transform(a, b, "left"))
    assert a_then_b == b_then_a


@PROPERTY_SETTINGS
@given(concurrent_operations())
def test_property_transform_pair_converges(case):
    document, a, b = case
    a_prime, b_prime = ot.transform_pair(a, b)
    assert ot.apply(ot.apply(document, a), b_prime) == ot.apply(
        ot.apply(document, b), a_prime
    )


@PROPERTY_SETTINGS
@given(concurrent_operations(), st.sampled_from(["left", "right"]))
def test_property_transform_keeps_validity(case, side):
    document, a, b = case
    after_b = ot.apply(document, b)
    a_prime = ot.transform(a, b, side)
    ot.validate(a_prime, doc_length=len(after_b))
    assert ot.consumed_length(a_prime) <= len(after_b)
    assert ot.normalize(a_prime) == a_prime


@PROPERTY_SETTINGS
@given(concurrent_operations(), st.sampled_from(["left", "right"]))
def test_property_transform_keeps_inserts(case, side):
    _, a, b = case
    a_prime = ot.transform(a, b, side)
    inserted = "".join(c["insert"] for c in ot.normalize(a) if "insert" in c)
    inserted_prime = "".join(c["insert"] for c in a_prime if "insert" in c)
    assert inserted_prime == inserted


@PROPERTY_SETTINGS
@given(st.data())
def test_property_server_and_client_converge(data):
    # One client sends p while the server commits c1 and then c2. The server
    # transforms p against each committed operation, and the client transforms each
    # incoming operation against its pending one.
    document = data.draw(documents)
    c1 = data.draw(operations(len(document)))
    c2 = data.draw(operations(len(ot.apply(document, c1))))
    p = data.draw(operations(len(document)))

    p_after_c1 = ot.transform(p, c1, "right")
    p_after_c2 = ot.transform(p_after_c1, c2, "right")
    server = ot.apply(ot.apply(ot.apply(document, c1), c2), p_after_c2)

    client = ot.apply(document, p)
    client = ot.apply(client, ot.transform(c1, p, "left"))
    client = ot.apply(client, ot.transform(c2, p_after_c1, "left"))
    assert client == server


@PROPERTY_SETTINGS
@given(sequential_operations())
def test_property_compose_matches_sequential_apply(case):
    document, a, b = case
    composed = ot.compose(a, b)
    assert ot.apply(document, composed) == ot.apply(ot.apply(document, a), b)
    assert ot.normalize(composed) == composed


@PROPERTY_SETTINGS
@given(st.data())
def test_property_compose_is_associative(data):
    document = data.draw(documents)
    a = data.draw(operations(len(document)))
    b = data.draw(operations(len(ot.apply(document, a))))
    c = data.draw(operations(len(ot.apply(ot.apply(document, a), b))))
    left = ot.compose(ot.compose(a, b), c)
    right = ot.compose(a, ot.compose(b, c))
    assert ot.apply(document, left) == ot.apply(document, right)
    assert left == right


@PROPERTY_SETTINGS
@given(st.data())
def test_property_normalize_preserves_effect(data):
    document = data.draw(documents)
    ops = data.draw(operations(len(document)))
    normalized = ot.normalize(ops)
    assert ot.apply(document, normalized) == ot.apply(document, ops)
    assert ot.normalize(normalized) == normalized
    assert ot.length_change(normalized) == ot.length_change(ops)


@PROPERTY_SETTINGS
@given(st.data())
def test_property_normalize_ignores_splitting(data):
    document = data.draw(documents)
    ops = data.draw(operations(len(document)))
    split = data.draw(split_components(ops))
    assert ot.apply(document, split) == ot.apply(document, ops)
    assert ot.normalize(split) == ot.normalize(ops)


@PROPERTY_SETTINGS
@given(st.data(), st.booleans())
def test_property_cursor_stays_in_document(data, own):
    document = data.draw(documents)
    ops = data.draw(operations(len(document)))
    position = data.draw(st.integers(min_value=0, max_value=len(document)))
    new_length = len(ot.apply(document, ops))
    result = ot.transform_position(position, ops, own=own)
    assert 0 <= result <= new_length


@PROPERTY_SETTINGS
@given(st.data(), st.booleans())
def test_property_cursor_is_monotonic(data, own):
    document = data.draw(documents)
    ops = data.draw(operations(len(document)))
    first = data.draw(st.integers(min_value=0, max_value=len(document)))
    second = data.draw(st.integers(min_value=first, max_value=len(document)))
    assert ot.transform_position(first, ops, own=own) <= ot.transform_position(
        second, ops, own=own
    )


@PROPERTY_SETTINGS
@given(st.data(), st.booleans())
def test_property_cursor_outside_edits(data, own):
    # A caret before the first edit or after the last one keeps the text after it.
    # Positions at the edges of the edited span follow the insert and delete rules.
    document = data.draw(documents)
    ops = ot.normalize(data.draw(operations(len(document))))
    start, end = edited_span(ops)
    outside = [*range(start), *range(end + 1, len(document) + 1)]
    if not outside:
        return
    position = data.draw(st.sampled_from(outside))
    new_document = ot.apply(document, ops)
    result = ot.transform_position(position, ops, own=own)
    if position < start:
        assert result == position
    else:
        assert new_document[result:] == document[position:]


@PROPERTY_SETTINGS
@given(st.data())
def test_property_apply_keeps_unedited_text(data):
    document = data.draw(documents)
    ops = data.draw(operations(len(document)))
    start, end = edited_span(ops)
    result = ot.apply(document, ops)
    assert result.startswith(document[:start])
    assert result.endswith(document[end:])
    assert len(result) == len(document) + ot.length_change(ops)
