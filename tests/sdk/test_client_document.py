"""LocalDocument and diff_operation, without a network.

The convergence test runs two LocalDocument copies against a simulated server that
transforms each edit over the operations committed since its base version, as the
protocol specifies, and delivers messages in random interleavings.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from materi_realtime import ot
from materi_realtime.diff import diff_operation
from materi_realtime.document import LocalDocument

ALPHABET = "ab\U0001f600 "
texts = st.text(alphabet=ALPHABET, max_size=12)


def assert_invariant(document: LocalDocument) -> None:
    expected = document.confirmed_text
    if document.inflight is not None:
        expected = ot.apply(expected, document.inflight.ops)
    if document.buffer is not None:
        expected = ot.apply(expected, document.buffer)
    assert document.text == expected


def make_edit(text: str, choice: int, position: int, inserted: str) -> ot.Operation:
    """Build an insert, a delete or a replace that fits text."""
    position %= len(text) + 1
    remaining = len(text) - position
    components: ot.Operation = []
    if position:
        components.append({"retain": position})
    kind = choice % 3
    if kind != 1 and inserted:
        components.append({"insert": inserted})
    if kind != 0 and remaining:
        components.append({"delete": 1 + choice % remaining})
    return components


# diff_operation


@given(texts, texts)
def test_diff_operation_turns_old_into_new(old: str, new: str) -> None:
    assert ot.apply(old, diff_operation(old, new)) == new


def test_diff_operation_keeps_common_text() -> None:
    assert diff_operation("hello world", "hello world") == []
    assert diff_operation("hello world", "hello, world") == [
        {"retain": 5},
        {"insert": ","},
    ]
    assert diff_operation("a\U0001f600b", "ab") == [{"retain": 1}, {"delete": 1}]


# LocalDocument


def test_edit_composes_into_buffer() -> None:
    document = LocalDocument()
    document.edit([{"insert": "ab"}])
    document.edit([{"retain": 2}, {"insert": "c"}])
    assert document.buffer == [{"insert": "abc"}]
    edit = document.start_next_edit("m1")
    assert edit is not None
    assert edit.ops == [{"insert": "abc"}]
    assert document.start_next_edit("m2") is None
    document.edit([{"delete": 1}])
    assert document.text == "bc"
    assert_invariant(document)


def test_edit_that_cancels_out_leaves_no_buffer() -> None:
    document = LocalDocument()
    document.edit([{"insert": "ab"}])
    document.edit([{"delete": 2}])
    assert document.buffer is None
    assert not document.has_pending_edits()


def test_failed_remote_operation_changes_nothing() -> None:
    document = LocalDocument()
    document.load_snapshot("abc", 4, set())
    document.edit([{"insert": "x"}])
    with pytest.raises(ot.InvalidOperation):
        document.apply_remote([{"retain": 9}, {"insert": "y"}])
    assert document.text == "xabc"
    assert document.version == 4
    assert document.confirmed_text == "abc"


def test_reject_inflight_keeps_later_edits() -> None:
    document = LocalDocument()
    document.load_snapshot("abc", 1, set())
    document.edit([{"retain": 3}, {"insert": "def"}])
    document.start_next_edit("m1")
    document.edit([{"retain": 6}, {"insert": "!"}])
    document.edit([{"insert": ">"}])
    rejected = document.reject_inflight()
    assert rejected.message_id == "m1"
    assert document.text == ">abc!"
    assert document.inflight is None
    assert_invariant(document)


def test_snapshot_keeps_unacknowledged_edit() -> None:
    document = LocalDocument()
    document.load_snapshot("abc", 1, set())
    document.edit([{"retain": 3}, {"insert": "!"}])
    document.start_next_edit("m1")
    dropped = document.load_snapshot("Zabc", 5, {"other"})
    assert dropped is None
    assert document.inflight is not None
    assert document.inflight.ops == [{"retain": 4}, {"insert": "!"}]
    assert document.text == "Zabc!"
    assert document.version == 5
    assert_invariant(document)


def test_snapshot_drops_acknowledged_edit() -> None:
    document = LocalDocument()
    document.load_snapshot("abc", 1, set())
    document.edit([{"retain": 3}, {"insert": "!"}])
    document.start_next_edit("m1")
    document.edit([{"insert": ">"}])
    dropped = document.load_snapshot("abc!?", 3, {"m1"})
    assert dropped is not None
    assert dropped.message_id == "m1"
    assert document.inflight is None
    assert document.buffer == [{"insert": ">"}]
    assert document.text == ">abc!?"
    assert_invariant(document)


@given(
    texts,
    texts,
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 20), texts), max_size=4),
    st.booleans(),
)
def test_snapshot_keeps_invariant(
    start: str,
    snapshot: str,
    edits: list[tuple[int, int, str]],
    send_first: bool,
) -> None:
    document = LocalDocument()
    document.load_snapshot(start, 1, set())
    for index, (choice, position, inserted) in enumerate(edits):
        document.edit(make_edit(document.text, choice, position, inserted))
        if send_first and index == 0:
            document.start_next_edit("m1")
    document.load_snapshot(snapshot, 9, set())
    assert document.confirmed_text == snapshot
    assert document.version == 9
    assert_invariant(document)


# Convergence against a simulated server


@dataclass
class SimulatedClient:
    name: str
    document: LocalDocument = field(default_factory=LocalDocument)
    uplink: deque[tuple[str, ot.Operation, int]] = field(default_factory=deque)
    downlink: deque[tuple[Any, ...]] = field(default_factory=deque)
    sent: int = 0


class SimulatedServer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.history: list[ot.Operation] = []

    def receive(self, author: SimulatedClient, clients: list[SimulatedClient]) -> None:
        message_id, ops, base = author.uplink.popleft()
        for committed in self.history[base:]:
            ops = ot.transform(ops, committed, "right")
        version = len(self.history)
        self.text = ot.apply(self.text, ops)
        self.history.append(ops)
        for client in clients:
            if client is author:
                client.downlink.append(("ack", message_id, version))
            else:
                client.downlink.append(("edit", ops, version))


def deliver(client: SimulatedClient) -> None:
    message = client.downlink.popleft()
    document = client.document
    if message[0] == "ack":
        _, message_id, version = message
        assert document.inflight is not None
        assert document.inflight.message_id == message_id
        assert version == document.version
        document.acknowledge()
    else:
        _, ops, version = message
        assert version == document.version
        document.apply_remote(ops)
    assert_invariant(document)


def send(client: SimulatedClient) -> None:
    edit = client.document.start_next_edit(f"{client.name}-{client.sent}")
    if edit is not None:
        client.sent += 1
        client.uplink.append((edit.message_id, edit.ops, client.document.version))


actions = st.lists(
    st.tuples(
        st.sampled_from(["edit", "send", "server", "deliver"]),
        st.integers(0, 1),
        st.integers(0, 8),
        st.integers(0, 20),
        texts,
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(texts, actions)
def test_clients_converge_with_server(
    start: str, steps: list[tuple[str, int, int, int, str]]
) -> None:
    server = SimulatedServer(start)
    clients = [SimulatedClient("a"), SimulatedClient("b")]
    for client in clients:
        client.document.load_snapshot(start, 0, set())

    for action, index, choice, position, inserted in steps:
        client = clients[index]
        if action == "edit":
            ops = make_edit(client.document.text, choice, position, inserted)
            client.document.edit(ops)
            assert_invariant(client.document)
        elif action == "send":
            send(client)
        elif action == "server" and client.uplink:
            server.receive(client, clients)
        elif action == "deliver" and client.downlink:
            deliver(client)

    # Drain: send every buffer, let the server commit it, deliver every message.
    while any(
        c.uplink or c.downlink or c.document.has_pending_edits() for c in clients
    ):
        for client in clients:
            send(client)
            while client.uplink:
                server.receive(client, clients)
        for client in clients:
            while client.downlink:
                deliver(client)

    for client in clients:
        assert client.document.text == server.text
        assert client.document.version == len(server.history)
        assert client.document.confirmed_text == server.text
