"""Client-side copy of a document and its unacknowledged edits.

This module does no I/O. The client feeds it local edits and server messages and
sends what it returns. The invariant after every method is::

    text == apply(apply(confirmed_text, inflight.ops), buffer)

where ``confirmed_text`` is the server's text at ``version``, ``inflight`` is the
one edit sent and not yet acknowledged, and ``buffer`` composes the local edits made
since it was sent. A missing inflight edit or buffer counts as an empty operation.
Every method either completes or raises before changing any field.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ot
from .diff import diff_operation


@dataclass
class PendingEdit:
    """An edit sent to the server, or about to be, with its fixed message_id."""

    ops: ot.Operation
    message_id: str
    # Id of the connection the edit was last sent on, or None while it waits to be
    # sent or resent.
    connection_id: int | None = None
    # Version from an acknowledgement that arrived out of order. The edit counts as
    # stored while the client fetches the operations before it.
    acknowledged_version: int | None = None
    # Resends after "unavailable" or "rate_limited" errors, for the backoff.
    retry_count: int = 0


class LocalDocument:
    """Text, version and pending edits of one client's copy of a document."""

    def __init__(self) -> None:
        self.text = ""
        self.version = 0
        self.confirmed_text = ""
        self.inflight: PendingEdit | None = None
        self.buffer: ot.Operation | None = None

    def has_pending_edits(self) -> bool:
        """Return whether any local edit is not yet acknowledged."""
        return self.inflight is not None or self.buffer is not None

    def edit(self, ops: ot.Operation) -> ot.Operation:
        """Apply a local edit at once and add it to the buffer.

        Returns the normalized operation, which is empty when the edit changes
        nothing. Raises ot.InvalidOperation if ops is malformed or does not fit the
        current text.
        """
        ot.validate(ops, len(self.text))
        normalized = ot.normalize(ops)
        if not normalized:
            return normalized
        new_text = ot.apply(self.text, normalized)
        if self.buffer is None:
            new_buffer = normalized
        else:
            new_buffer = ot.compose(self.buffer, normalized)

        self.text = new_text
        # Inserting and then deleting the same text composes to nothing to send.
        self.buffer = new_buffer or None
        return normalized

    def start_next_edit(self, message_id: str) -> PendingEdit | None:
        """Move the buffer to the inflight slot and return it, if both allow it."""
        if self.inflight is not None or self.buffer is None:
            return None
        self.inflight = PendingEdit(ops=self.buffer, message_id=message_id)
        self.buffer = None
        return self.inflight

    def apply_remote(self, ops: ot.Operation) -> ot.Operation:
        """Apply a committed operation made at ``version`` by another client.

        Transforms the pending edits over it and returns the operation as applied to
        ``text``. Raises ot.InvalidOperation if ops does not fit the confirmed text.
        """
        new_confirmed = ot.apply(self.confirmed_text, ops)
        remote = ops
        new_inflight_ops = None
        if self.inflight is not None:
            new_inflight_ops = ot.transform(self.inflight.ops, remote, "right")
            remote = ot.transform(remote, self.inflight.ops, "left")
        new_buffer = None
        if self.buffer is not None:
            new_buffer = ot.transform(self.buffer, remote, "right")
            remote = ot.transform(remote, self.buffer, "left")
        new_text = ot.apply(self.text, remote)

        self.confirmed_text = new_confirmed
        if self.inflight is not None and new_inflight_ops is not None:
            self.inflight.ops = new_inflight_ops
        if self.buffer is not None:
            self.buffer = new_buffer
        self.text = new_text
        self.version += 1
        return remote

    def acknowledge(self) -> PendingEdit:
        """Mark the inflight edit as stored at ``version`` and return it.

        Raises RuntimeError if no edit is in flight.
        """
        edit = self.inflight
        if edit is None:
            raise RuntimeError("no edit is in flight to acknowledge")
        self.confirmed_text = ot.apply(self.confirmed_text, edit.ops)
        self.inflight = None
        self.version += 1
        return edit

    def reject_inflight(self) -> PendingEdit:
        """Undo the inflight edit that the server rejected, keeping later edits.

        The buffer is transformed over the undo, so its positions stay right and
        text it made inside the rejected insert moves to where that insert was.
        Raises RuntimeError if no edit is in flight.
        """
        edit = self.inflight
        if edit is None:
            raise RuntimeError("no edit is in flight to reject")
        with_edit = ot.apply(self.confirmed_text, edit.ops)
        undo = diff_operation(with_edit, self.confirmed_text)
        new_buffer = None
        new_text = self.confirmed_text
        if self.buffer is not None:
            new_buffer = ot.transform(self.buffer, undo, "right") or None
            if new_buffer is not None:
                new_text = ot.apply(self.confirmed_text, new_buffer)

        self.inflight = None
        self.buffer = new_buffer
        self.text = new_text
        return edit

    def load_snapshot(
        self, content: str, version: int, acknowledged_ids: set[str]
    ) -> PendingEdit | None:
        """Replace the confirmed text with a server snapshot and rebase pending edits.

        The inflight edit is dropped as stored when acknowledged_ids contains its
        message_id or an acknowledgement for it already arrived. The remaining
        pending edits are transformed over the difference between the last confirmed
        text (with the dropped edit applied) and the snapshot, with the snapshot's
        changes first on ties. Returns the dropped edit, or None.
        """
        base_text = self.confirmed_text
        inflight = self.inflight
        dropped = None
        if inflight is not None and (
            inflight.message_id in acknowledged_ids
            or inflight.acknowledged_version is not None
        ):
            base_text = ot.apply(base_text, inflight.ops)
            dropped = inflight
            inflight = None

        server_change = diff_operation(base_text, content)
        new_inflight_ops = None
        if inflight is not None:
            new_inflight_ops = ot.transform(inflight.ops, server_change, "right")
            server_change = ot.transform(server_change, inflight.ops, "left")
        new_buffer = None
        if self.buffer is not None:
            new_buffer = ot.transform(self.buffer, server_change, "right") or None

        new_text = content
        if new_inflight_ops is not None:
            new_text = ot.apply(new_text, new_inflight_ops)
        if new_buffer is not None:
            new_text = ot.apply(new_text, new_buffer)

        if inflight is not None and new_inflight_ops is not None:
            inflight.ops = new_inflight_ops
        self.inflight = inflight
        self.buffer = new_buffer
        self.confirmed_text = content
        self.version = version
        self.text = new_text
        return dropped
