"""Asyncio client that keeps one document in sync with a Materi Realtime server.

The wire protocol is described in docs/protocol.md at the repository root. The
client keeps at most one edit in flight. Local edits made meanwhile compose into a
buffer that is sent when the server acknowledges the inflight edit, and remote
operations are transformed over both. So insert(), delete() and submit() change the
local text at once and return without waiting on the network.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

from websockets.exceptions import ConnectionClosed, InvalidHandshake

try:
    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.client import connect as open_websocket
except ImportError:  # websockets 12 has only the legacy asyncio implementation.
    from websockets.legacy.client import (  # type: ignore[assignment]
        WebSocketClientProtocol as ClientConnection,
    )
    from websockets.legacy.client import (  # type: ignore[assignment]
        connect as open_websocket,
    )

from . import ot, protocol
from .diff import diff_operation
from .document import LocalDocument, PendingEdit
from .errors import ClientClosedError, ConnectionFailedError, RealtimeError
from .events import Callback, EventEmitter
from .tokens import read_token_expiry

logger = logging.getLogger(__name__)

ConnectionState = Literal[
    "connecting", "connected", "disconnected", "reconnecting", "closing", "failed"
]
TokenProvider = Callable[[], str | Awaitable[str]]
CallbackType = TypeVar("CallbackType", bound=Callback)

REDACTED = "[redacted]"

# Seconds allowed for the TCP and WebSocket opening handshake.
OPEN_TIMEOUT = 10.0
# Seconds to wait for the server's close frame in reply to the client's before
# dropping the TCP connection.
CLOSE_TIMEOUT = 5.0
# A token is refreshed this many seconds before its exp claim, or sooner for a
# short-lived token: at most TOKEN_REFRESH_FRACTION of its remaining lifetime.
TOKEN_REFRESH_MARGIN = 30.0
TOKEN_REFRESH_FRACTION = 0.1
# Caps the exponent of the backoff so that 2**attempt stays a small float.
MAX_BACKOFF_EXPONENT = 30


def backoff_delay(
    attempt: int,
    base_delay: float,
    max_delay: float,
    rng: random.Random | None = None,
) -> float:
    """Return a retry delay in seconds with full jitter.

    The delay is uniform in [0, min(max_delay, base_delay * 2**attempt)], where
    attempt counts from 0.
    """
    exponent = min(max(attempt, 0), MAX_BACKOFF_EXPONENT)
    cap = min(max_delay, base_delay * 2**exponent)
    return (rng or random).uniform(0.0, cap)


@dataclass(eq=False)
class _Connection:
    """One open WebSocket and the tasks that serve it."""

    id: int
    websocket: ClientConnection
    # Whether the token came from token_provider for this connection and was not
    # yet accepted by the server.
    token_untested: bool
    # Whether the client asked for every operation since version 0 to rebuild the
    # document (see MateriRealtime._resync).
    full_resync: bool
    outgoing: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    synced: bool = False
    awaiting_catch_up: bool = False
    # (timestamp sent, monotonic send time, future resolved by the pong)
    pending_ping: tuple[int, float, asyncio.Future[None]] | None = None
    resend_task: asyncio.Task[None] | None = None
    # Set when the client ends the connection itself.
    end_reason: str | None = None
    reconnect_now: bool = False


@dataclass
class _ConnectionOutcome:
    reason: str
    code: int | None = None
    synced: bool = False
    reconnect_now: bool = False
    fatal: bool = False


class MateriRealtime:
    """Realtime connection to one document: local text, edits and events.

    Edits apply to ``text`` at once and are sent in the background. Callbacks
    registered with on() receive the events listed in EVENT_NAMES. The object is
    not thread-safe: call it from the thread that runs its event loop.
    """

    def __init__(
        self,
        access_token: str,
        document_id: str,
        url: str = "ws://127.0.0.1:8000",
        client_id: str | None = None,
        debug: bool = False,
        token_provider: TokenProvider | None = None,
        reconnect_base_delay: float = 0.5,
        reconnect_max_delay: float = 10.0,
        reconnect_max_attempts: int | None = 20,
        heartbeat_interval: float = 15.0,
        heartbeat_timeout: float = 10.0,
    ) -> None:
        if not isinstance(access_token, str) or not access_token:
            raise ValueError("access_token must be a non-empty string")
        if not isinstance(document_id, str) or not document_id:
            raise ValueError("document_id must be a non-empty string")
        if client_id is None:
            client_id = f"py-{uuid.uuid4().hex}"
        elif not protocol.CLIENT_ID_PATTERN.fullmatch(client_id):
            raise ValueError(
                "client_id must be 1 to 64 characters of A-Z a-z 0-9 _ . : -, "
                f"got {client_id!r}"
            )
        if token_provider is not None and not callable(token_provider):
            raise TypeError(f"token_provider must be callable, got {token_provider!r}")
        _check_delay("reconnect_base_delay", reconnect_base_delay, allow_zero=True)
        _check_delay("reconnect_max_delay", reconnect_max_delay, allow_zero=True)
        if reconnect_max_delay < reconnect_base_delay:
            raise ValueError(
                f"reconnect_max_delay ({reconnect_max_delay}) must not be less than "
                f"reconnect_base_delay ({reconnect_base_delay})"
            )
        if reconnect_max_attempts is not None and (
            isinstance(reconnect_max_attempts, bool)
            or not isinstance(reconnect_max_attempts, int)
            or reconnect_max_attempts < 0
        ):
            raise ValueError(
                "reconnect_max_attempts must be a non-negative integer or None, "
                f"got {reconnect_max_attempts!r}"
            )
        _check_delay("heartbeat_interval", heartbeat_interval, allow_zero=False)
        _check_delay("heartbeat_timeout", heartbeat_timeout, allow_zero=False)

        self._base_url = protocol.check_base_url(url)
        self._document_id = document_id
        self._client_id = client_id
        self._debug_enabled = debug
        self._token_provider = token_provider
        self._reconnect_base_delay = float(reconnect_base_delay)
        self._reconnect_max_delay = float(reconnect_max_delay)
        self._reconnect_max_attempts = reconnect_max_attempts
        self._heartbeat_interval = float(heartbeat_interval)
        self._heartbeat_timeout = float(heartbeat_timeout)
        self._random = random.Random()

        self._token = access_token
        # Tokens to replace with [redacted] in debug logs: the current one and the
        # last few before it.
        self._known_tokens: list[str] = [access_token]
        self._token_rejected = False
        self._token_untested = False

        self._document = LocalDocument()
        self._role: str | None = None
        self._title: str | None = None
        self._synced_once = False
        self._resync_pending = False

        self._state: ConnectionState = "disconnected"
        self._events = EventEmitter(task_name_prefix=f"materi_realtime:{document_id}")
        self._supervisor: asyncio.Task[None] | None = None
        self._connection: _Connection | None = None
        self._connection_count = 0
        self._sync_waiters: list[asyncio.Future[None]] = []
        self._flush_waiters: list[asyncio.Future[None]] = []

    # Properties

    @property
    def connection_state(self) -> ConnectionState:
        """Connection state: connecting, connected, disconnected, reconnecting,
        closing or failed."""
        return self._state

    @property
    def text(self) -> str:
        """Local text, including edits that the server has not acknowledged."""
        return self._document.text

    @property
    def version(self) -> int:
        """Server version that the local text is based on."""
        return self._document.version

    @property
    def role(self) -> str | None:
        """User's role on the document from the last sync, or None before it."""
        return self._role

    @property
    def title(self) -> str | None:
        """Document title from the last sync, or None before it."""
        return self._title

    @property
    def document_id(self) -> str:
        return self._document_id

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def has_pending_edits(self) -> bool:
        """Whether any local edit is not yet acknowledged by the server."""
        return self._document.has_pending_edits()

    # Events

    @overload
    def on(self, event: str) -> Callable[[CallbackType], CallbackType]: ...

    @overload
    def on(self, event: str, callback: CallbackType) -> CallbackType: ...

    def on(
        self, event: str, callback: CallbackType | None = None
    ) -> CallbackType | Callable[[CallbackType], CallbackType]:
        """Register a sync or async callback for event, directly or as a decorator.

        Returns the callback. Raises ValueError for an unknown event name.
        """
        if callback is None:

            def register(function: CallbackType) -> CallbackType:
                self._events.add(event, function)
                return function

            self._events.check_event(event)
            return register
        self._events.add(event, callback)
        return callback

    def off(self, event: str, callback: Callback) -> None:
        """Unregister a callback. Raises ValueError if it is not registered."""
        self._events.remove(event, callback)

    # Local edits

    def insert(self, position: int, text: str) -> None:
        """Insert text at a code-point position of the local text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        self._check_range(position, 0)
        if not text:
            return
        self.submit(_at_position(position, {"insert": text}))

    def delete(self, position: int, length: int) -> None:
        """Delete length code points starting at position of the local text."""
        self._check_range(position, length)
        if length == 0:
            return
        self.submit(_at_position(position, {"delete": length}))

    def submit(self, ops: ot.Operation) -> None:
        """Apply an operation to the local text at once and queue it for sending.

        Raises ot.InvalidOperation (a ValueError) if ops is malformed or does not
        fit the local text.
        """
        applied = self._document.edit(ops)
        if not applied:
            return
        self._events.emit(
            "change", {"text": self._document.text, "ops": applied, "source": "local"}
        )
        self._debug("applied local edit %s", applied)
        self._send_pending(self._connection)

    def _check_range(self, position: int, length: int) -> None:
        for name, value in (("position", position), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"{name} must be a non-negative integer, got {value!r}"
                )
        text_length = len(self._document.text)
        if position + length > text_length:
            raise ValueError(
                f"range {position}..{position + length} is outside the text, which "
                f"has {text_length} characters"
            )

    # Lifecycle

    async def connect(self) -> None:
        """Connect, or wait for the running connection, until the document is synced.

        Raises ConnectionFailedError if the client reaches the "failed" state first,
        and ClientClosedError if close() runs first. Cancelling connect() does not
        stop the connection attempts; call close() for that.
        """
        if self._state == "connected":
            return
        if self._supervisor is None or self._supervisor.done():
            self._forget_finished_supervisor()
            self._set_state("reconnecting" if self._synced_once else "connecting", None)
            self._supervisor = asyncio.create_task(
                self._maintain_connection(),
                name=f"materi_realtime:{self._document_id}:connection",
            )
        waiter = asyncio.get_running_loop().create_future()
        self._sync_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._sync_waiters:
                self._sync_waiters.remove(waiter)

    async def flush(self) -> None:
        """Wait until the server has acknowledged every local edit.

        Raises ConnectionFailedError if the connection fails first and
        ClientClosedError if close() runs first. Raises RealtimeError at once if
        edits are pending but connect() is not running.
        """
        if not self._document.has_pending_edits():
            return
        if self._state == "failed":
            raise RealtimeError(
                "cannot flush: the connection failed; call connect() to retry"
            )
        if self._supervisor is None or self._supervisor.done():
            raise RealtimeError(
                "cannot flush: the client is not connected; call connect() first"
            )
        waiter = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._flush_waiters:
                self._flush_waiters.remove(waiter)

    async def close(self) -> None:
        """Close the connection and cancel every task of the client.

        Local edits that were not acknowledged stay in ``text`` and are sent if
        connect() is called again. Waiting connect() and flush() calls raise
        ClientClosedError.
        """
        supervisor = self._supervisor
        if supervisor is not None and not supervisor.done():
            self._set_state("closing", "closed by the client")
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        self._forget_finished_supervisor()

        error = ClientClosedError("the client was closed")
        self._reject_waiters(self._sync_waiters, error)
        self._reject_waiters(self._flush_waiters, error)
        if self._state != "failed":
            self._set_state("disconnected", "closed by the client")
        await self._events.cancel_tasks()

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _forget_finished_supervisor(self) -> None:
        supervisor = self._supervisor
        self._supervisor = None
        if supervisor is not None and supervisor.done() and not supervisor.cancelled():
            # Retrieve any exception so that asyncio does not report it as never
            # retrieved.
            supervisor.exception()

    # Connection loop

    async def _maintain_connection(self) -> None:
        """Open connections until close() or the "failed" state, with backoff."""
        attempt = 0
        try:
            while True:
                outcome = await self._run_connection()
                if outcome.synced:
                    attempt = 0
                if outcome.fatal:
                    self._fail(outcome.reason, outcome.code)
                    return
                self._set_state("disconnected", outcome.reason)

                max_attempts = self._reconnect_max_attempts
                if max_attempts is not None and attempt >= max_attempts:
                    self._fail(
                        f"gave up after {attempt} reconnect attempts; last error: "
                        f"{outcome.reason}"
                    )
                    return
                if outcome.reconnect_now:
                    delay = 0.0
                else:
                    delay = backoff_delay(
                        attempt,
                        self._reconnect_base_delay,
                        self._reconnect_max_delay,
                        self._random,
                    )
                attempt += 1
                self._set_state("reconnecting", outcome.reason)
                logger.info(
                    "reconnecting to document %s in %.2f s (attempt %d of %s): %s",
                    self._document_id,
                    delay,
                    attempt,
                    "unlimited" if max_attempts is None else max_attempts,
                    outcome.reason,
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.exception(
                "connection loop of document %s crashed", self._document_id
            )
            self._fail(f"internal error in the client: {error!r}")

    async def _run_connection(self) -> _ConnectionOutcome:
        """Open one connection, serve it until it ends, and return why it ended."""
        try:
            token, token_untested = await self._token_for_connection()
        except Exception as error:
            logger.warning("token_provider failed: %r", error)
            return _ConnectionOutcome(reason=f"token_provider failed: {error!r}")

        since: int | None = None
        full_resync = self._resync_pending
        if full_resync:
            since = 0
        elif self._synced_once:
            since = self._document.version
        self._debug("opening %s", self._build_url(token, since, redact=True))
        try:
            websocket = await open_websocket(
                self._build_url(token, since),
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                ping_interval=None,
                max_size=None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as error:
            reason = f"cannot open the connection: {error}"
            logger.info("document %s: %s", self._document_id, reason)
            return _ConnectionOutcome(reason=reason)

        self._connection_count += 1
        connection = _Connection(
            id=self._connection_count,
            websocket=websocket,
            token_untested=token_untested,
            full_resync=full_resync,
        )
        self._connection = connection
        self._start_task(connection, self._write_frames(connection), "writer")
        self._start_task(connection, self._send_heartbeats(connection), "heartbeat")
        if self._token_provider is not None:
            self._start_task(
                connection, self._refresh_token_before_expiry(connection), "token"
            )
        try:
            async for frame in websocket:
                self._receive_frame(connection, frame)
                if connection.end_reason is not None:
                    break
        except ConnectionClosed:
            pass
        finally:
            self._connection = None
            await self._stop_tasks(connection)
            await websocket.close()
        return self._connection_outcome(connection)

    def _connection_outcome(self, connection: _Connection) -> _ConnectionOutcome:
        websocket = connection.websocket
        code = websocket.close_code
        synced = connection.synced
        if connection.end_reason is not None:
            return _ConnectionOutcome(
                reason=connection.end_reason,
                synced=synced,
                reconnect_now=connection.reconnect_now,
            )

        detail = f": {websocket.close_reason}" if websocket.close_reason else ""
        if code in protocol.FATAL_CLOSE_CODES:
            return _ConnectionOutcome(
                reason=f"{protocol.FATAL_CLOSE_CODES[code]}{detail}",
                code=code,
                fatal=True,
            )
        if code == protocol.TOKEN_REJECTED_CLOSE_CODE:
            return self._token_rejected_outcome(connection, detail)
        if code == protocol.MESSAGE_TOO_BIG_CLOSE_CODE:
            self._drop_oversized_edit(connection)
        return _ConnectionOutcome(
            reason=f"connection closed with code {code}{detail}",
            code=code,
            synced=synced,
        )

    def _token_rejected_outcome(
        self, connection: _Connection, detail: str
    ) -> _ConnectionOutcome:
        code = protocol.TOKEN_REJECTED_CLOSE_CODE
        if self._token_provider is None:
            return _ConnectionOutcome(
                reason="the server rejected the access token as missing, invalid or "
                f"expired, and no token_provider is set{detail}",
                code=code,
                fatal=True,
            )
        if connection.token_untested and not connection.synced:
            return _ConnectionOutcome(
                reason="the server rejected the token that token_provider returned"
                f"{detail}",
                code=code,
                fatal=True,
            )
        logger.info(
            "the server rejected the access token of document %s; requesting a new "
            "one from token_provider",
            self._document_id,
        )
        self._token_rejected = True
        return _ConnectionOutcome(
            reason=f"access token rejected{detail}",
            code=code,
            synced=connection.synced,
            reconnect_now=True,
        )

    def _start_task(
        self, connection: _Connection, coroutine: Awaitable[None], name: str
    ) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(f"materi_realtime:{self._document_id}:{name}")
        connection.tasks.add(task)
        task.add_done_callback(connection.tasks.discard)
        return task

    async def _stop_tasks(self, connection: _Connection) -> None:
        tasks = [
            task for task in connection.tasks if task is not asyncio.current_task()
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_frames(self, connection: _Connection) -> None:
        while True:
            frame = await connection.outgoing.get()
            try:
                await connection.websocket.send(frame)
            except ConnectionClosed:
                return

    def _send(self, connection: _Connection, message: dict[str, Any]) -> None:
        frame = protocol.encode(message)
        if self._debug_enabled:
            logger.debug("sent %s", self._redact(frame))
        connection.outgoing.put_nowait(frame)

    # Tokens

    async def _token_for_connection(self) -> tuple[str, bool]:
        """Return the token to connect with and whether the server has yet to see it."""
        if self._token_rejected and self._token_provider is not None:
            token = await self._call_token_provider()
            self._set_token(token)
            self._token_rejected = False
            self._token_untested = True
        untested = self._token_untested
        self._token_untested = False
        return self._token, untested

    async def _call_token_provider(self) -> str:
        assert self._token_provider is not None
        result = self._token_provider()
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str) or not result:
            raise TypeError(
                f"token_provider must return a non-empty string, got {type(result)}"
            )
        return result

    def _set_token(self, token: str) -> None:
        self._token = token
        if token not in self._known_tokens:
            self._known_tokens.append(token)
            del self._known_tokens[:-4]

    async def _refresh_token_before_expiry(self, connection: _Connection) -> None:
        """Fetch a new token shortly before the current one expires and reconnect.

        The server closes an open socket with 4001 when its token expires, so the
        client reconnects with the new token before that happens.
        """
        expiry = read_token_expiry(self._token)
        if expiry is None:
            return
        remaining = expiry - time.time()
        margin = min(TOKEN_REFRESH_MARGIN, max(remaining, 0.0) * TOKEN_REFRESH_FRACTION)
        await asyncio.sleep(max(0.0, remaining - margin))
        try:
            token = await self._call_token_provider()
        except Exception as error:
            logger.warning(
                "token refresh before expiry failed: %r; the client calls "
                "token_provider again when the server rejects the current token",
                error,
            )
            return
        new_expiry = read_token_expiry(token)
        self._set_token(token)
        if new_expiry is not None and new_expiry <= expiry:
            logger.warning(
                "token_provider returned a token that expires no later than the "
                "current one; keeping the connection until the server rejects it"
            )
            return
        self._token_untested = True
        self._debug("access token refreshed before expiry; reconnecting")
        connection.end_reason = "access token refreshed"
        connection.reconnect_now = True
        await connection.websocket.close(1000, "access token refreshed")

    # Heartbeat

    async def _send_heartbeats(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            timestamp = int(time.time() * 1000)
            pong: asyncio.Future[None] = loop.create_future()
            connection.pending_ping = (timestamp, time.monotonic(), pong)
            self._send(connection, protocol.ping_message(timestamp))
            try:
                async with asyncio.timeout(self._heartbeat_timeout):
                    await pong
            except TimeoutError:
                reason = f"no pong within {self._heartbeat_timeout:g} s"
                logger.warning(
                    "document %s: %s; reconnecting", self._document_id, reason
                )
                connection.end_reason = reason
                # The server sent no pong, so a closing handshake would only wait
                # for CLOSE_TIMEOUT. Drop the TCP connection instead.
                connection.websocket.transport.abort()
                return
            finally:
                connection.pending_ping = None

    def _on_pong(self, connection: _Connection, data: dict[str, Any]) -> None:
        pending = connection.pending_ping
        if pending is None or data.get("timestamp") != pending[0]:
            self._debug("ignoring a pong that answers no pending ping")
            return
        _, sent_at, pong = pending
        latency = (time.monotonic() - sent_at) * 1000.0
        if not pong.done():
            pong.set_result(None)
        self._events.emit("heartbeat", latency)

    # Incoming frames

    def _receive_frame(self, connection: _Connection, frame: str | bytes) -> None:
        if self._debug_enabled:
            logger.debug("received %s", self._redact(str(frame)))
        if not isinstance(frame, str):
            logger.warning("ignoring a binary frame from the server")
            return
        try:
            message = json.loads(frame)
        except ValueError as error:
            logger.warning("ignoring a frame that is not valid JSON: %s", error)
            return
        if not isinstance(message, dict):
            logger.warning("ignoring a frame that is not a JSON object")
            return

        message_type = message.get("type")
        event = message.get("event")
        try:
            self._dispatch(connection, message)
        except (protocol.MalformedMessage, ot.InvalidOperation) as error:
            self._resync(connection, f"invalid {message_type}/{event} message: {error}")
        except Exception as error:
            logger.exception("failed to process a %s/%s message", message_type, event)
            self._resync(
                connection, f"failed to process {message_type}/{event}: {error!r}"
            )

    def _dispatch(self, connection: _Connection, message: dict[str, Any]) -> None:
        message_type = message.get("type")
        event = message.get("event")
        data = message.get("data", {})
        if not isinstance(data, dict):
            raise protocol.MalformedMessage("field 'data' must be an object")

        if message_type == "operation" and event == "document_edit":
            self._on_remote_edit(connection, data, message)
            return
        if message_type != "system":
            self._debug("ignoring %s/%s", message_type, event)
            return
        handlers: dict[str, Callable[[_Connection, dict[str, Any]], None]] = {
            "document_state": self._on_document_state,
            "catch_up": self._on_catch_up,
            "operation_ack": self._on_ack,
            "error": self._on_error,
            "pong": self._on_pong,
            "rate_limited": self._on_rate_limited,
        }
        handler = handlers.get(str(event))
        if handler is None:
            self._debug("ignoring system/%s", event)
            return
        handler(connection, data)

    # Document synchronisation

    def _on_remote_edit(
        self, connection: _Connection, data: dict[str, Any], envelope: dict[str, Any]
    ) -> None:
        if not connection.synced or connection.awaiting_catch_up:
            self._debug("ignoring an edit that arrived before the document was synced")
            return
        version = protocol.int_field(data, "version")
        document = self._document
        if version < document.version:
            self._debug("ignoring the repeated edit at version %d", version)
            return
        if version > document.version:
            self._request_catch_up(
                connection, f"received version {version} at version {document.version}"
            )
            return

        client_id = envelope.get("client_id")
        message_id = envelope.get("message_id")
        if self._is_inflight(client_id, message_id):
            # The server broadcast this client's own edit, for example one that an
            # earlier socket sent and that was stored after this socket caught up.
            self._acknowledge(connection, version)
            return
        self._apply_remote(data, client_id, message_id)

    def _apply_remote(
        self, data: dict[str, Any], client_id: object, message_id: object
    ) -> None:
        version = protocol.int_field(data, "version")
        ops = protocol.operation_field(data)
        old_text = self._document.text
        applied = self._document.apply_remote(ops)
        new_text = self._document.text
        # Capture the text first: an "operation" callback may edit it.
        self._events.emit(
            "operation",
            {
                "ops": applied,
                "version": version,
                "user": data.get("user"),
                "client_id": client_id,
                "message_id": message_id,
                "timestamp": data.get("timestamp"),
            },
        )
        if new_text != old_text:
            self._events.emit(
                "change", {"text": new_text, "ops": applied, "source": "remote"}
            )

    def _is_inflight(self, client_id: object, message_id: object) -> bool:
        inflight = self._document.inflight
        return (
            inflight is not None
            and client_id == self._client_id
            and message_id == inflight.message_id
        )

    def _acknowledge(self, connection: _Connection, version: int) -> None:
        """Record the inflight edit as stored at version, the current version."""
        edit = self._document.acknowledge()
        self._events.emit("ack", {"message_id": edit.message_id, "version": version})
        self._send_pending(connection)
        self._notify_if_idle()

    def _on_ack(self, connection: _Connection, data: dict[str, Any]) -> None:
        message_id = protocol.str_field(data, "message_id")
        version = protocol.int_field(data, "version")
        document = self._document
        inflight = document.inflight
        if inflight is None or inflight.message_id != message_id:
            self._debug(
                "ignoring the acknowledgement of %s, which is not in flight", message_id
            )
            return
        if version == document.version:
            self._acknowledge(connection, version)
            return

        inflight.acknowledged_version = version
        if version > document.version:
            # Operations between the client's version and the edit are missing, and
            # the catch_up reply contains them and the edit.
            self._request_catch_up(
                connection,
                f"edit {message_id} acknowledged at version {version} while the "
                f"client is at version {document.version}",
            )
            return
        # The client already applied another operation at the edit's version, so
        # its text may have diverged from the server's.
        self._resync(
            connection,
            f"edit {message_id} acknowledged at version {version} but the client "
            f"applied versions up to {document.version - 1} from others",
        )

    def _request_catch_up(self, connection: _Connection, reason: str) -> None:
        if connection.awaiting_catch_up:
            return
        connection.awaiting_catch_up = True
        logger.info(
            "document %s: %s; requesting the operations since version %d",
            self._document_id,
            reason,
            self._document.version,
        )
        self._send(connection, protocol.sync_message(self._document.version))

    def _resync(self, connection: _Connection, reason: str) -> None:
        """Reconnect and rebuild the document from the server, keeping pending edits.

        The next connection requests every operation since version 0 (``since=0``).
        The server replies with a catch_up from which the client rebuilds the text,
        or with a snapshot whose ``acknowledged`` list names every stored edit of
        this client. Either way the client learns whether its inflight edit was
        stored.
        """
        logger.warning(
            "document %s: %s; reconnecting to reload the document",
            self._document_id,
            reason,
        )
        self._resync_pending = True
        if connection.end_reason is None:
            connection.end_reason = f"reloading the document: {reason}"
            connection.reconnect_now = True

    def _on_document_state(self, connection: _Connection, data: dict[str, Any]) -> None:
        content = protocol.str_field(data, "content")
        version = protocol.int_field(data, "version")
        acknowledged = protocol.acknowledged_versions(data)
        self._load_snapshot(connection, content, version, acknowledged)
        self._finish_sync(connection, data)

    def _load_snapshot(
        self,
        connection: _Connection,
        content: str,
        version: int,
        acknowledged_versions: dict[str, int | None],
    ) -> None:
        document = self._document
        old_text = document.text
        dropped = document.load_snapshot(content, version, set(acknowledged_versions))
        connection.awaiting_catch_up = False
        if dropped is not None:
            ack_version = acknowledged_versions.get(dropped.message_id)
            if ack_version is None:
                ack_version = dropped.acknowledged_version
            self._events.emit(
                "ack", {"message_id": dropped.message_id, "version": ack_version}
            )
        if document.text != old_text:
            self._events.emit(
                "change",
                {
                    "text": document.text,
                    "ops": diff_operation(old_text, document.text),
                    "source": "sync",
                },
            )

    def _on_catch_up(self, connection: _Connection, data: dict[str, Any]) -> None:
        operations = data.get("operations")
        if not isinstance(operations, list):
            raise protocol.MalformedMessage("field 'operations' must be a list")
        entries: list[dict[str, Any]] = []
        for entry in operations:
            if not isinstance(entry, dict):
                raise protocol.MalformedMessage(
                    "each entry of 'operations' must be an object"
                )
            entries.append(entry)

        if connection.full_resync:
            self._rebuild_from_catch_up(connection, entries)
            self._finish_sync(connection, data)
            return

        document = self._document
        for entry in entries:
            version = protocol.int_field(entry, "version")
            if version < document.version:
                continue
            if version > document.version:
                self._resync(
                    connection,
                    f"catch_up jumps from version {document.version} to {version}",
                )
                return
            client_id = entry.get("client_id")
            message_id = entry.get("message_id")
            if self._is_inflight(client_id, message_id):
                edit = document.acknowledge()
                self._events.emit(
                    "ack", {"message_id": edit.message_id, "version": version}
                )
            else:
                self._apply_remote(entry, client_id, message_id)
        connection.awaiting_catch_up = False

        inflight = document.inflight
        if inflight is not None and inflight.acknowledged_version is not None:
            self._resync(
                connection,
                f"edit {inflight.message_id} was acknowledged at version "
                f"{inflight.acknowledged_version} but catch_up does not contain it",
            )
            return
        self._finish_sync(connection, data)

    def _rebuild_from_catch_up(
        self, connection: _Connection, entries: list[dict[str, Any]]
    ) -> None:
        """Rebuild the text from every operation since version 0 and load it."""
        content = ""
        own_versions: dict[str, int | None] = {}
        for expected_version, entry in enumerate(entries):
            version = protocol.int_field(entry, "version")
            if version != expected_version:
                raise protocol.MalformedMessage(
                    f"catch_up since version 0 has version {version} at position "
                    f"{expected_version}"
                )
            content = ot.apply(content, protocol.operation_field(entry))
            message_id = entry.get("message_id")
            if entry.get("client_id") == self._client_id and isinstance(
                message_id, str
            ):
                own_versions[message_id] = version
        self._load_snapshot(connection, content, len(entries), own_versions)

    def _finish_sync(self, connection: _Connection, data: dict[str, Any]) -> None:
        role = data.get("role")
        if isinstance(role, str):
            self._role = role
        title = data.get("title")
        if isinstance(title, str):
            self._title = title
        if connection.full_resync:
            connection.full_resync = False
            self._resync_pending = False
        connection.synced = True
        connection.token_untested = False
        self._synced_once = True

        document = self._document
        self._events.emit(
            "state",
            {"text": document.text, "version": document.version, "role": self._role},
        )
        if self._state != "connected":
            logger.info(
                "document %s synced at version %d", self._document_id, document.version
            )
            self._set_state("connected", None)
        for waiter in self._sync_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._sync_waiters.clear()
        self._send_pending(connection)
        self._notify_if_idle()

    # Sending edits

    def _send_pending(self, connection: _Connection | None) -> None:
        """Send the inflight edit if this connection has not carried it yet, or else
        start the buffer as the next inflight edit."""
        if connection is None or not connection.synced or connection.awaiting_catch_up:
            return
        if connection.end_reason is not None:
            return
        document = self._document
        edit = document.inflight
        if edit is not None:
            waiting_to_resend = (
                connection.resend_task is not None and not connection.resend_task.done()
            )
            if edit.connection_id != connection.id and not waiting_to_resend:
                self._send_edit(connection, edit)
            return
        edit = document.start_next_edit(uuid.uuid4().hex)
        if edit is not None:
            self._send_edit(connection, edit)

    def _send_edit(self, connection: _Connection, edit: PendingEdit) -> None:
        edit.connection_id = connection.id
        self._send(
            connection,
            protocol.edit_message(
                self._client_id, edit.message_id, edit.ops, self._document.version
            ),
        )

    def _schedule_resend(
        self, connection: _Connection, edit: PendingEdit, delay: float
    ) -> None:
        """Resend the inflight edit on this connection after delay seconds."""
        if connection.resend_task is not None and not connection.resend_task.done():
            return
        # A later connection resends it at once because it has not carried it.
        edit.connection_id = None
        edit.retry_count += 1
        connection.resend_task = self._start_task(
            connection, self._resend_later(connection, delay), "resend"
        )

    async def _resend_later(self, connection: _Connection, delay: float) -> None:
        await asyncio.sleep(delay)
        connection.resend_task = None
        self._send_pending(connection)

    def _on_error(self, connection: _Connection, data: dict[str, Any]) -> None:
        code = str(data.get("code", "error"))
        message = str(data.get("message", ""))
        message_id = data.get("message_id")
        self._events.emit(
            "error", {"code": code, "message": message, "message_id": message_id}
        )
        inflight = self._document.inflight
        if inflight is None or message_id is None or inflight.message_id != message_id:
            logger.warning(
                "document %s: server error %s: %s (message_id %s)",
                self._document_id,
                code,
                message,
                message_id,
            )
            return

        if code == "unavailable":
            delay = backoff_delay(
                inflight.retry_count,
                self._reconnect_base_delay,
                self._reconnect_max_delay,
                self._random,
            )
            logger.warning(
                "document %s: the server could not store edit %s (%s); resending in "
                "%.2f s",
                self._document_id,
                message_id,
                message,
                delay,
            )
            self._schedule_resend(connection, inflight, delay)
            return
        if code == "version_ahead":
            self._resync(connection, f"the server reported version_ahead: {message}")
            return

        logger.error(
            "document %s: the server rejected edit %s with %s: %s; undoing it locally",
            self._document_id,
            message_id,
            code,
            message,
        )
        self._undo_inflight()
        if code == "invalid_operation":
            # The local text may differ from the server's, so reload it.
            self._resync(connection, f"edit {message_id} was invalid: {message}")
            return
        self._send_pending(connection)

    def _undo_inflight(self) -> None:
        document = self._document
        old_text = document.text
        document.reject_inflight()
        if document.text != old_text:
            self._events.emit(
                "change",
                {
                    "text": document.text,
                    "ops": diff_operation(old_text, document.text),
                    "source": "rejected",
                },
            )
        self._notify_if_idle()

    def _on_rate_limited(self, connection: _Connection, data: dict[str, Any]) -> None:
        retry_after = data.get("retry_after")
        message = data.get("message")
        self._events.emit(
            "rate_limited", {"retry_after": retry_after, "message": message}
        )

        inflight = self._document.inflight
        message_id = data.get("message_id")
        if inflight is None or inflight.connection_id != connection.id:
            return
        if message_id is not None and message_id != inflight.message_id:
            return
        # A rate-limited edit is not applied; resending it is safe because the
        # server stores each message_id once. retry_after is in milliseconds.
        if isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool):
            delay = max(float(retry_after), 0.0) / 1000
        else:
            delay = backoff_delay(
                inflight.retry_count,
                self._reconnect_base_delay,
                self._reconnect_max_delay,
                self._random,
            )
        logger.warning(
            "document %s: rate limited (%s); resending edit %s in %.2f s",
            self._document_id,
            message,
            inflight.message_id,
            delay,
        )
        self._schedule_resend(connection, inflight, delay)

    def _drop_oversized_edit(self, connection: _Connection) -> None:
        """Undo the inflight edit after the server closed with 1009.

        NOTE: the close frame does not name the message, so the client assumes the
        inflight edit sent on this connection was the oversized one, because pings
        and sync requests are small.
        """
        inflight = self._document.inflight
        if inflight is None or inflight.connection_id != connection.id:
            return
        logger.error(
            "document %s: edit %s is larger than the server's maximum message size; "
            "undoing it locally",
            self._document_id,
            inflight.message_id,
        )
        self._events.emit(
            "error",
            {
                "code": "message_too_big",
                "message": "the edit is larger than the server's maximum message "
                "size and was undone",
                "message_id": inflight.message_id,
            },
        )
        self._undo_inflight()

    # State and waiters

    def _set_state(self, state: ConnectionState, reason: str | None) -> None:
        previous = self._state
        if state == previous:
            return
        self._state = state
        self._debug("connection state %s -> %s (%s)", previous, state, reason)
        self._events.emit(
            "connection_state", {"state": state, "previous": previous, "reason": reason}
        )

    def _fail(self, reason: str, code: int | None = None) -> None:
        error = ConnectionFailedError(reason, code)
        logger.error("connection to document %s failed: %s", self._document_id, error)
        self._set_state("failed", reason)
        self._reject_waiters(self._sync_waiters, error)
        self._reject_waiters(self._flush_waiters, error)

    @staticmethod
    def _reject_waiters(
        waiters: list[asyncio.Future[None]], error: BaseException
    ) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        waiters.clear()

    def _notify_if_idle(self) -> None:
        if self._document.has_pending_edits():
            return
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._flush_waiters.clear()

    # Helpers

    def _build_url(self, token: str, since: int | None, *, redact: bool = False) -> str:
        return protocol.document_url(
            self._base_url,
            self._document_id,
            self._client_id,
            token,
            since,
            redacted_token=REDACTED if redact else None,
        )

    def _redact(self, text: str) -> str:
        for token in self._known_tokens:
            text = text.replace(token, REDACTED)
        return text

    def _debug(self, message: str, *args: object) -> None:
        if self._debug_enabled:
            logger.debug(message, *args)


def _at_position(position: int, component: ot.Component) -> ot.Operation:
    # A retain count must be positive, so an edit at 0 starts with the component.
    if position == 0:
        return [component]
    return [{"retain": position}, component]


def _check_delay(name: str, value: float, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {bound} number of seconds, got {value!r}")
