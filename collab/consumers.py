"""The document socket: authenticate, decode, hand each message to one method.

OT, commits and storage live in `collab.ot`, `collab.commit` and `collab.store`,
and committed operations arrive through `collab.fanout`. This module only moves
messages between the client, those modules and the document's channel-layer group.
"""

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from collab import auth, errors, protocol, store
from collab.batching import Batcher
from collab.commit import EditRequest, committer
from collab.fanout import fanout
from collab.models import Document, Role
from collab.protocol import CloseCode, Event, MessageType, group_name
from presence.session import PresenceSession

logger = logging.getLogger(__name__)

# The heartbeat's version reads of all sockets in this process, a query per window.
current_versions = Batcher(store.current_versions)


class DocumentConsumer(AsyncWebsocketConsumer):
    """One client's socket on one document.

    `next_version` is the version of the next operation this socket must receive.
    Every operation below it has been sent (or was in the state sent on connect), so
    the socket gets operations in version order with no gap and no repeat.
    """

    handlers = {
        (MessageType.OPERATION, Event.DOCUMENT_EDIT): "handle_edit",
        (MessageType.SYSTEM, Event.PING): "handle_ping",
        (MessageType.SYSTEM, Event.SYNC): "handle_sync",
        (MessageType.PRESENCE, Event.CURSOR_UPDATE): "handle_cursor_update",
        (MessageType.PRESENCE, Event.ACTIVITY): "handle_activity",
    }

    document_id: uuid.UUID | None = None
    joined = False
    gap_until: int | None = None
    group: str | None = None
    presence: PresenceSession | None = None
    next_version = 0
    heartbeat_timer: asyncio.TimerHandle | None = None
    expiry_timer: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        # Accept first: a close before accept becomes an HTTP 403, and the client
        # would never see which close code explains the rejection.
        await self.accept()
        self.last_seen = time.monotonic()
        try:
            await self.authorize()
        except errors.RealtimeError as exc:
            logger.info(
                "rejected socket on %s: %s (close %s)",
                self.scope["path"],
                exc.message,
                exc.close_code,
            )
            await self.close(code=exc.close_code)
            return

        try:
            await self.join()
        except Exception:
            # Close the socket, because it would otherwise stay open without a
            # document. disconnect() then removes whatever the join stored.
            logger.exception(
                "joining document=%s client=%s failed", self.document_id, self.client_id
            )
            await self.close(code=int(CloseCode.INTERNAL_ERROR))

    async def join(self) -> None:
        """Register presence, subscribe and send the join state."""
        self.group = group_name(self.document_id)
        self.presence = PresenceSession.for_socket(
            self.scope,
            self.channel_layer,
            self.channel_name,
            self.group,
            document_id=self.document_id,
            user=self.user,
            client_id=self.client_id,
            protocol_version=self.protocol_version,
            current_version=lambda: self.next_version,
        )
        # The row goes in before the group add and the presence list is read
        # after it, so a client that joins at the same time is listed, announced
        # by a join event, or both.
        await self.presence.join()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await fanout.subscribe(self.document_id, self)
        logger.info(
            "connected document=%s client=%s user=%s role=%s",
            self.document_id,
            self.client_id,
            self.user.pk,
            self.role.value,
        )
        await self.send_join_state(self.since)
        await self.presence.announce()
        self.schedule_heartbeat_check()
        self.schedule_token_expiry()

    async def authorize(self) -> None:
        """Check the URL, the token and the role, or raise a connection error."""
        query = {
            key: values[-1]
            for key, values in parse_qs(
                self.scope["query_string"].decode(), keep_blank_values=True
            ).items()
        }
        self.client_id = protocol.parse_client_id(query.get("client_id"))
        self.protocol_version = protocol.parse_protocol_version(query.get("version"))
        self.since = protocol.parse_since(query.get("since"))
        self.user, self.token_expires_at = await database_sync_to_async(
            auth.authenticate
        )(query.get("token"))

        raw_id = self.scope["url_route"]["kwargs"]["document_id"]
        try:
            self.document_id = uuid.UUID(raw_id)
        except ValueError:
            raise errors.DocumentNotFound(
                f"document id {raw_id!r} is not a UUID"
            ) from None
        self.role: Role = await database_sync_to_async(store.get_role)(
            self.document_id, self.user
        )

    async def disconnect(self, code: int) -> None:
        for timer in (self.heartbeat_timer, self.expiry_timer):
            if timer is not None:
                timer.cancel()
        if self.group is not None:
            await fanout.unsubscribe(self.document_id, self)
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.presence.leave()
            logger.info(
                "disconnected document=%s client=%s user=%s code=%s",
                self.document_id,
                self.client_id,
                self.user.pk,
                code,
            )

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            # The client closed the socket while this frame was on its way. The
            # disconnect event that follows cleans up.
            logger.debug(
                "dropped a frame to closed socket document=%s client=%s",
                self.document_id,
                self.client_id,
            )

    # Client messages

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.group is None:
            return
        self.last_seen = time.monotonic()
        await self.presence.heartbeat()
        message = None
        try:
            message = protocol.decode(text_data)
            handler = getattr(self, self.handlers[(message.type, message.event)])
            await handler(message)
        except DatabaseError as exc:
            logger.error(
                "database error on document=%s client=%s: %s",
                self.document_id,
                self.client_id,
                exc,
            )
            unavailable = errors.Unavailable(
                "the database is unavailable; send the message again later",
                message.message_id if message is not None else None,
            )
            await self.send(text_data=protocol.encode_error(unavailable))
        except errors.RealtimeError as exc:
            if exc.close_code is not None:
                logger.info(
                    "closing socket document=%s client=%s: %s (close %s)",
                    self.document_id,
                    self.client_id,
                    exc.message,
                    exc.close_code,
                )
                await self.close(code=int(exc.close_code))
                return
            logger.debug(
                "error frame to client=%s: %s %s", self.client_id, exc.code, exc.message
            )
            await self.send(text_data=protocol.encode_error(exc))

    async def handle_edit(self, message: protocol.Message) -> None:
        if not self.role.can_edit:
            raise errors.Forbidden(
                f"role {self.role.value!r} cannot edit this document; an owner or "
                "editor role is required",
                message.message_id,
            )
        request = protocol.parse_edit(message)
        result = await committer.submit(
            self.document_id,
            EditRequest(
                user=self.user,
                client_id=self.client_id,
                message_id=message.message_id,
                base_version=request.version,
                components=request.components,
                since=self.next_version,
            ),
        )
        for operation in result.preceding:
            await self.deliver(operation)

        operation = result.operation
        ack = {"message_id": operation.message_id, "version": operation.version}
        if result.duplicate:
            ack["duplicate"] = True
        await self.send(
            text_data=protocol.encode(MessageType.SYSTEM, Event.OPERATION_ACK, ack)
        )
        self.next_version = max(self.next_version, operation.version + 1)

    async def handle_ping(self, message: protocol.Message) -> None:
        timestamp = protocol.parse_ping(message)
        await self.send(
            text_data=protocol.encode(
                MessageType.SYSTEM, Event.PONG, {"timestamp": timestamp}
            )
        )
        await self.catch_up_on_heartbeat()

    async def catch_up_on_heartbeat(self) -> None:
        """Send what a dropped broadcast left out, when no later broadcast came.

        The channel layer drops messages to a full channel; the next broadcast
        reveals such a gap, and this check covers a document that went quiet.
        """
        try:
            version = await current_versions.submit(self.document_id)
        except DatabaseError as exc:
            # The next heartbeat checks again; the pong has been sent.
            logger.warning(
                "heartbeat version check on document=%s failed: %s",
                self.document_id,
                exc,
            )
            return
        if version is not None and version > self.next_version:
            await self.deliver_missed(version)

    async def handle_sync(self, message: protocol.Message) -> None:
        since = protocol.parse_sync(message)
        version = await database_sync_to_async(store.current_version)(self.document_id)
        if since > version:
            raise errors.VersionAhead(
                f"sync asks for operations after version {since} but the document "
                f"is at version {version}",
                message.message_id,
            )
        await self.send_join_state(since)

    async def handle_cursor_update(self, message: protocol.Message) -> None:
        await self.presence.update_cursor(message)

    async def handle_activity(self, message: protocol.Message) -> None:
        await self.presence.update_activity(message)

    # Fan-out and group messages

    async def receive_operation(self, version: int, frame: str) -> None:
        """Deliver a committed operation from the process's fan-out.

        Runs outside this consumer's message loop, so the version check and the
        increment happen with no await between them.
        """
        if not self.joined or version < self.next_version:
            # Before the join state is sent, next_version is not known yet; the
            # state's version covers what is skipped here.
            return
        if version > self.next_version:
            # Read what the layer dropped in this consumer's own loop, in order.
            # One queued request covers every frame that arrives until it runs.
            queued = self.gap_until is not None
            self.gap_until = max(self.gap_until or 0, version + 1)
            if not queued:
                await self.channel_layer.send(
                    self.channel_name, {"type": protocol.OPERATION_GAP}
                )
            return
        self.next_version = version + 1
        await self.send(text_data=frame)

    async def operation_gap(self, event: dict) -> None:
        until, self.gap_until = self.gap_until, None
        if until is not None and until > self.next_version:
            await self.deliver_missed(until)

    async def presence_broadcast(self, event: dict) -> None:
        """Send another socket's presence event, its selections moved to our version."""
        version = event["data"].get("version")
        if version is not None and version > self.next_version:
            await self.deliver_missed(version)
        frame = await self.presence.relay(event, self.next_version)
        if frame is not None:
            await self.send(text_data=frame)

    async def membership_changed(self, event: dict) -> None:
        """Close this socket when its user's role on the document changed.

        A removed member gets 4003 (4004 when the whole document was deleted); a
        member with a new role gets 4009 and reconnects to read it.
        """
        if event["user_id"] != self.user.pk:
            return
        if event["role"] is None:
            exists = await database_sync_to_async(
                Document.objects.filter(pk=self.document_id).exists
            )()
            code = CloseCode.FORBIDDEN if exists else CloseCode.NOT_FOUND
        else:
            code = CloseCode.ROLE_CHANGED
        logger.info(
            "closing socket document=%s client=%s: membership changed (close %s)",
            self.document_id,
            self.client_id,
            int(code),
        )
        await self.close(code=int(code))

    async def document_deleted(self, event: dict) -> None:
        logger.info(
            "closing socket document=%s client=%s: document deleted",
            self.document_id,
            self.client_id,
        )
        await self.close(code=int(CloseCode.NOT_FOUND))

    async def connection_terminate(self, event: dict) -> None:
        """Close the socket on an operator's request (admin action)."""
        logger.info(
            "closing socket document=%s client=%s on operator request",
            self.document_id,
            self.client_id,
        )
        await self.close(
            code=int(protocol.CloseCode.DISCONNECTED_BY_OPERATOR),
            reason=event["reason"],
        )

    # Helpers

    async def deliver_missed(self, version: int) -> None:
        """Send the operations from next_version up to `version` - 1.

        They come from the process's recent frames when it has them all, so many
        sockets that fall behind together do not each query the database.
        """
        frames = fanout.recent_frames(self.document_id, self.next_version, version)
        if frames is not None:
            for frame in frames:
                self.next_version += 1
                await self.send(text_data=frame)
            return
        # Common when a presence event overtakes the operations it refers to, and
        # after the layer dropped a message.
        logger.info(
            "document=%s client=%s missed versions %d to %d; reading them",
            self.document_id,
            self.client_id,
            self.next_version,
            version - 1,
        )
        missed = await database_sync_to_async(store.operations_since)(
            self.document_id, self.next_version, until=version
        )
        for operation in missed:
            await self.deliver(operation)

    async def deliver(self, operation: store.StoredOperation) -> None:
        if operation.version != self.next_version:
            return
        self.next_version = operation.version + 1
        await self.send(text_data=protocol.encode_operation(operation))

    async def send_join_state(self, since: int | None) -> None:
        # Read before the snapshot, so every listed selection is at or below it.
        present = await self.presence.read_present_clients()
        state = await database_sync_to_async(store.load_join_state)(
            self.document_id,
            self.client_id,
            since,
            settings.MATERI["CATCH_UP_MAX_OPERATIONS"],
        )
        snapshot = state.snapshot
        data = {
            "document_id": str(snapshot.document_id),
            "title": snapshot.title,
            "role": self.role.value,
            "version": snapshot.version,
            "presence": await self.presence.describe(present, snapshot),
        }
        if state.operations is None:
            data["content"] = snapshot.content
            data["acknowledged"] = state.acknowledged
            event = Event.DOCUMENT_STATE
        else:
            data["operations"] = [
                {**op.to_wire(), "client_id": op.client_id, "message_id": op.message_id}
                for op in state.operations
            ]
            event = Event.CATCH_UP
        await self.send(text_data=protocol.encode(MessageType.SYSTEM, event, data))
        self.next_version = max(self.next_version, snapshot.version)
        self.joined = True

    def schedule_heartbeat_check(self) -> None:
        timeout = settings.MATERI["HEARTBEAT_TIMEOUT"]
        silent_for = time.monotonic() - self.last_seen
        if silent_for >= timeout:
            logger.info(
                "closing silent socket document=%s client=%s after %.0f s",
                self.document_id,
                self.client_id,
                silent_for,
            )
            self.close_later(protocol.CloseCode.HEARTBEAT_TIMEOUT)
            return
        self.heartbeat_timer = asyncio.get_running_loop().call_later(
            timeout - silent_for, self.schedule_heartbeat_check
        )

    def schedule_token_expiry(self) -> None:
        remaining = (self.token_expires_at - datetime.now(UTC)).total_seconds()
        self.expiry_timer = asyncio.get_running_loop().call_later(
            max(remaining, 0), self.close_later, protocol.CloseCode.UNAUTHORIZED
        )

    def close_later(self, code: int) -> None:
        # Autobahn rejects int subclasses such as CloseCode members as close codes.
        self.closing_task = asyncio.ensure_future(self.close(code=int(code)))
