"""Message names, close codes and the only JSON encode and decode of the socket.

The wire format is documented in docs/protocol.md; every name a client can see is
defined here once.
"""

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from collab import errors

PROTOCOL_VERSION = 1
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class MessageType(StrEnum):
    OPERATION = "operation"
    PRESENCE = "presence"
    COMMENT = "comment"
    SYSTEM = "system"


class Event(StrEnum):
    DOCUMENT_EDIT = "document_edit"
    DOCUMENT_STATE = "document_state"
    CATCH_UP = "catch_up"
    OPERATION_ACK = "operation_ack"
    ERROR = "error"
    PING = "ping"
    PONG = "pong"
    SYNC = "sync"
    RATE_LIMITED = "rate_limited"
    JOIN = "join"
    LEAVE = "leave"
    CURSOR_UPDATE = "cursor_update"
    ACTIVITY = "activity"


class CloseCode(IntEnum):
    BAD_REQUEST = 4000
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003
    NOT_FOUND = 4004
    HEARTBEAT_TIMEOUT = 4008
    ROLE_CHANGED = 4009
    DISCONNECTED_BY_OPERATOR = 4010
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


# Events a client may send, by type.
CLIENT_EVENTS: dict[MessageType, frozenset[Event]] = {
    MessageType.OPERATION: frozenset({Event.DOCUMENT_EDIT}),
    MessageType.PRESENCE: frozenset({Event.CURSOR_UPDATE, Event.ACTIVITY}),
    MessageType.COMMENT: frozenset(),
    MessageType.SYSTEM: frozenset({Event.PING, Event.SYNC}),
}


# Channel-layer event types; Channels dispatches "a.b" to the consumer method a_b.
def group_name(document_id) -> str:
    """Return the channel-layer group of a document (ASCII, well under 100 chars)."""
    return f"document.{document_id.hex}"


MEMBERSHIP_CHANGED = "membership.changed"  # to a document's sockets
DOCUMENT_DELETED = "document.deleted"  # to a document's sockets
FANOUT_OPERATION = "fanout.operation"  # to each process's fan-out channel
OPERATION_GAP = "operation.gap"  # from a consumer to itself
GROUP_PRESENCE = "presence.broadcast"
# Sent to one socket's channel to close it with DISCONNECTED_BY_OPERATOR.
CHANNEL_TERMINATE = "connection.terminate"


@dataclass(frozen=True)
class Message:
    type: MessageType
    event: Event
    data: dict[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class EditData:
    components: list[Any]
    version: int


def decode(text: str | None) -> Message:
    """Parse one client frame, or raise the error that names the fault."""
    if text is None:
        raise errors.InvalidJSON("binary frames are not supported; send JSON text")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidJSON(f"frame is not valid JSON: {exc}") from None
    except (ValueError, RecursionError):
        # Python's own limits: integers of over 4300 digits, deep nesting.
        raise errors.InvalidJSON(
            "frame is not valid JSON here: it nests too deeply or has a number "
            "with too many digits"
        ) from None
    if not isinstance(raw, dict):
        raise errors.InvalidMessage(
            f"message must be a JSON object, got {type(raw).__name__}"
        )

    message_id = _optional_id(raw, "message_id")
    client_id = _optional_id(raw, "client_id", message_id)
    message_type = _member(raw, "type", MessageType, errors.UnknownType, message_id)
    event_name = raw.get("event")
    if not isinstance(event_name, str):
        raise errors.InvalidMessage("field 'event' must be a string", message_id)
    if event_name not in CLIENT_EVENTS[message_type]:
        allowed = ", ".join(sorted(CLIENT_EVENTS[message_type])) or "none"
        raise errors.UnknownEvent(
            f"event {event_name!r} is not one a client may send for type "
            f"{message_type.value!r} (allowed: {allowed})",
            message_id,
        )
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise errors.InvalidMessage("field 'data' must be an object", message_id)
    return Message(message_type, Event(event_name), data, client_id, message_id)


def encode(
    message_type: MessageType,
    event: Event,
    data: dict[str, Any],
    client_id: str | None = None,
    message_id: str | None = None,
) -> str:
    message: dict[str, Any] = {
        "type": message_type.value,
        "event": event.value,
        "data": data,
    }
    if client_id is not None:
        message["client_id"] = client_id
    if message_id is not None:
        message["message_id"] = message_id
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def encode_error(error: errors.RealtimeError) -> str:
    data = {"code": error.code, "message": error.message}
    if error.message_id is not None:
        data["message_id"] = error.message_id
    return encode(MessageType.SYSTEM, Event.ERROR, data)


def parse_edit(message: Message) -> EditData:
    """Read the data of an operation/document_edit message."""
    if message.message_id is None:
        raise errors.InvalidMessage("an edit needs a 'message_id'")
    operation = message.data.get("operation")
    if not isinstance(operation, dict) or "ops" not in operation:
        raise errors.InvalidMessage(
            "field 'data.operation' must be an object like {\"ops\": [...]}",
            message.message_id,
        )
    version = _non_negative_int(message, "version")
    return EditData(components=operation["ops"], version=version)


def parse_sync(message: Message) -> int:
    return _non_negative_int(message, "version")


def parse_ping(message: Message) -> Any:
    timestamp = message.data.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, (int, float, str)):
        raise errors.InvalidMessage(
            "field 'data.timestamp' must be a number or a string", message.message_id
        )
    return timestamp


def parse_client_id(value: str | None) -> str:
    if not value:
        raise errors.BadConnectionRequest("query parameter 'client_id' is required")
    if not ID_PATTERN.match(value):
        raise errors.BadConnectionRequest(
            "query parameter 'client_id' must be 1 to 64 characters of "
            "A-Z a-z 0-9 _ . : -"
        )
    return value


def parse_protocol_version(value: str | None) -> int:
    if value in (None, "", str(PROTOCOL_VERSION)):
        return PROTOCOL_VERSION
    raise errors.BadConnectionRequest(
        f"protocol version {value!r} is not supported; use {PROTOCOL_VERSION}"
    )


def parse_since(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    if not value.isdigit():
        raise errors.BadConnectionRequest(
            f"query parameter 'since' must be a non-negative integer, got {value!r}"
        )
    return int(value)


def _optional_id(raw: dict, name: str, message_id: str | None = None) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise errors.InvalidMessage(
            f"field {name!r} must be 1 to 64 characters of A-Z a-z 0-9 _ . : -",
            message_id,
        )
    return value


def _member(raw, name, enum, error_class, message_id):
    value = raw.get(name)
    if not isinstance(value, str):
        raise errors.InvalidMessage(f"field {name!r} must be a string", message_id)
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise error_class(
            f"{name} {value!r} is not one of: {allowed}", message_id
        ) from None


def _non_negative_int(message: Message, name: str) -> int:
    value = message.data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.InvalidMessage(
            f"field 'data.{name}' must be a non-negative integer, got {value!r}",
            message.message_id,
        )
    return value


def encode_operation(operation) -> str:
    """Encode the document_edit frame of a stored operation for other clients."""
    return encode(
        MessageType.OPERATION,
        Event.DOCUMENT_EDIT,
        operation.to_wire(),
        client_id=operation.client_id,
        message_id=operation.message_id,
    )
