"""The presence of one socket: what the document consumer calls on connect,
on each client message and on disconnect.

Presence events travel through the document's channel-layer group as
`protocol.GROUP_PRESENCE` messages that name the sending channel, so a socket can
skip its own events. Selections in an event refer to the `version` in the event's
data. Each receiving socket moves them to the version its client has before it
sends them on.
"""

import logging
import uuid
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError

from collab import ot, protocol
from collab import store as document_store
from collab.batching import Batcher
from collab.protocol import Event, MessageType
from presence import service, store
from presence.cursors import (
    CursorUpdate,
    parse_activity,
    parse_cursor_update,
    rebase_selections,
    transform_selections,
)
from presence.service import ConnectionInfo
from presence.store import PresenceState
from presence.throttle import Coalescer, Interval

logger = logging.getLogger(__name__)

# The heartbeat refreshes of all sockets in this process, one update per window.
connection_refreshes = Batcher(service.refresh_connections)


def presence_event(sender: str, event: Event, data: dict[str, Any]) -> dict:
    """Build the channel-layer message of a presence event sent by `sender`."""
    return {
        "type": protocol.GROUP_PRESENCE,
        "sender": sender,
        "event": event.value,
        "data": data,
    }


class PresenceSession:
    """One socket's presence on one document.

    The consumer calls `join` before it adds the socket to the document's group,
    `announce` after it has sent the document state, `heartbeat` on every client
    message, and `leave` on disconnect. `current_version` returns the version of
    the next operation the socket will receive, which is the document version its
    client has.
    """

    def __init__(
        self,
        channel_layer,
        group: str,
        info: ConnectionInfo,
        current_version: Callable[[], int],
    ):
        self.channel_layer = channel_layer
        self.group = group
        self.info = info
        self.current_version = current_version
        self.state = PresenceState()
        self.requested_activity = self.state.activity
        self.connection_pk: int | None = None
        # (version, length) of the document as this socket last saw it, for
        # clamping selections without reading the content again.
        self.document_length: tuple[int, int] = (0, 0)

        limits = settings.MATERI
        rate = limits["CURSOR_UPDATES_PER_SECOND"]
        self.cursor_sender = Coalescer(
            rate, self._broadcast_cursor, f"cursor updates of client {info.client_id}"
        )
        self.activity_sender = Coalescer(
            rate, self._broadcast_activity, f"activity of client {info.client_id}"
        )
        # A third of the timeout leaves two refreshes of margin before the reaper
        # considers the row stale.
        self.refresh_interval = Interval(limits["HEARTBEAT_TIMEOUT"] / 3)

    @classmethod
    def for_socket(
        cls,
        scope: dict,
        channel_layer,
        channel_name: str,
        group: str,
        *,
        document_id: uuid.UUID,
        user: AbstractBaseUser,
        client_id: str,
        protocol_version: int,
        current_version: Callable[[], int],
    ) -> "PresenceSession":
        """Create the session of a socket from its ASGI scope."""
        client = scope.get("client") or ("", 0)
        headers = dict(scope.get("headers", []))
        info = ConnectionInfo(
            document_id=document_id,
            user=user,
            client_id=client_id,
            channel_name=channel_name,
            remote_address=str(client[0] or ""),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
            protocol_version=protocol_version,
        )
        return cls(channel_layer, group, info, current_version)

    # Connect and disconnect

    async def join(self) -> None:
        """Store the socket's Connection row and its initial state."""
        try:
            self.connection_pk = await database_sync_to_async(
                service.register_connection
            )(self.info, self.state)
        except DatabaseError as exc:
            # The next heartbeat tries again; until then joining clients do not
            # list this socket, but they receive its events.
            logger.error(
                "storing the connection of document=%s client=%s failed: %s",
                self.info.document_id,
                self.info.client_id,
                exc,
            )

    async def announce(self) -> None:
        """Send `join` to the other sockets on the document."""
        data = {
            **self._client_data(),
            "display_name": service.display_name(self.info.user),
            "color": service.color_for_user(self.info.user.pk),
            "selections": self.state.selections,
            "activity": self.state.activity,
            "version": self.state.version,
        }
        if not self.state.selections:
            data["version"] = self.current_version()
        await self._group_send(Event.JOIN, data)

    async def leave(self) -> None:
        """Stop pending sends, delete the row and state, and send `leave`."""
        await self.cursor_sender.close()
        await self.activity_sender.close()
        try:
            announce = await database_sync_to_async(service.unregister_connection)(
                self.connection_pk,
                self.info.channel_name,
                self.info.document_id,
                self.info.client_id,
            )
        except DatabaseError as exc:
            # The reaper deletes the row once its last_seen is old enough.
            logger.error(
                "deleting the connection of document=%s client=%s failed: %s",
                self.info.document_id,
                self.info.client_id,
                exc,
            )
            announce = True
        if announce:
            await self._group_send(Event.LEAVE, self._client_data())

    async def heartbeat(self) -> None:
        """Refresh the row's last_seen, at most once per third of the timeout.

        When the row is gone (the reaper deleted it during a database outage), store
        it again and send `join`, so that others see the socket again.
        """
        if not self.refresh_interval.due():
            return
        try:
            if self.connection_pk is not None and await connection_refreshes.submit(
                self.connection_pk, (self.info.channel_name, self.state)
            ):
                return
            self.connection_pk = await database_sync_to_async(
                service.register_connection
            )(self.info, self.state)
        except DatabaseError as exc:
            logger.error(
                "refreshing the connection of document=%s client=%s failed: %s",
                self.info.document_id,
                self.info.client_id,
                exc,
            )
            return
        logger.warning(
            "connection of document=%s client=%s was missing; stored it again",
            self.info.document_id,
            self.info.client_id,
        )
        await self.announce()

    # The list sent on connect

    async def read_present_clients(self) -> list[service.PresentClient]:
        """Read who is present; call it before reading the document snapshot."""
        return await database_sync_to_async(service.load_present_clients)(
            self.info.document_id
        )

    async def describe(
        self, clients: list[service.PresentClient], snapshot: document_store.Snapshot
    ) -> list[dict[str, Any]]:
        """Return the `presence` list of the state sent to this socket.

        It also records the snapshot's length, which later cursor updates of this
        socket are clamped to.
        """
        length = len(snapshot.content)
        self.document_length = (snapshot.version, length)
        return await database_sync_to_async(service.describe_presence)(
            self.info.document_id, clients, snapshot.version, length
        )

    # Client messages

    async def update_cursor(self, message: protocol.Message) -> None:
        """Validate a cursor_update and queue its broadcast, or raise an error."""
        update = parse_cursor_update(
            message,
            self.current_version(),
            settings.MATERI["CATCH_UP_MAX_OPERATIONS"],
        )
        self.cursor_sender.submit(update)

    async def update_activity(self, message: protocol.Message) -> None:
        """Validate an activity message and queue its broadcast, or raise an error."""
        activity = parse_activity(message)
        if activity != self.requested_activity:
            self.requested_activity = activity
            self.activity_sender.submit(activity)

    async def _broadcast_cursor(self, update: CursorUpdate) -> None:
        version = self.current_version()
        selections = await database_sync_to_async(self._rebase_and_save)(
            update, version
        )
        await self._group_send(
            Event.CURSOR_UPDATE,
            {**self._client_data(), "selections": selections, "version": version},
        )

    def _rebase_and_save(self, update: CursorUpdate, version: int) -> list[dict]:
        """Move the selections to `version`, clamp them and save the state.

        It reads the operations stored since the older of two versions: the
        update's, and the last one at which this socket measured the document
        length. When no edit came in between, it reads nothing.
        """
        known_version, known_length = self.document_length
        start = min(update.version, known_version)
        operations = (
            document_store.operations_since(self.info.document_id, start, until=version)
            if start < version
            else []
        )
        length = known_length + sum(
            ot.length_change(op.components)
            for op in operations
            if op.version >= known_version
        )
        self.document_length = (version, length)
        selections = rebase_selections(
            update.selections, update.version, operations, version, length
        )
        self.state.selections = selections
        self.state.version = version
        store.save_state(self.info.channel_name, self.state)
        return selections

    async def _broadcast_activity(self, activity: str) -> None:
        self.state.activity = activity
        await database_sync_to_async(store.save_state)(
            self.info.channel_name, self.state
        )
        await self._group_send(
            Event.ACTIVITY, {**self._client_data(), "state": activity}
        )

    # Group messages

    async def relay(self, event: dict, version: int) -> str | None:
        """Return the frame to send for a group presence event, or None.

        Own events are skipped. Selections are moved to `version`, the document
        version this socket's client has; the consumer has already sent it every
        operation up to the event's version.
        """
        if event["sender"] == self.info.channel_name:
            return None
        data = event["data"]
        if data.get("selections") and data["version"] < version:
            operations = await database_sync_to_async(document_store.operations_since)(
                self.info.document_id, data["version"], until=version
            )
            data = {
                **data,
                "selections": transform_selections(data["selections"], operations),
                "version": version,
            }
        return protocol.encode(
            MessageType.PRESENCE,
            Event(event["event"]),
            data,
            client_id=data["client_id"],
        )

    # Helpers

    def _client_data(self) -> dict[str, Any]:
        return {"client_id": self.info.client_id, "user_id": self.info.user.pk}

    async def _group_send(self, event: Event, data: dict[str, Any]) -> None:
        await self.channel_layer.group_send(
            self.group, presence_event(self.info.channel_name, event, data)
        )
