"""Wire format of protocol version 1: URLs, close codes and message fields.

docs/protocol.md at the repository root is the full description.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from . import ot

PROTOCOL_VERSION = 1
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

# Close codes after which reconnecting cannot help, with their meaning.
FATAL_CLOSE_CODES = {
    4000: "the server rejected the connection request",
    4003: "the user has no access to the document",
    4004: "the document does not exist",
    4010: "an operator closed the connection",
}
TOKEN_REJECTED_CLOSE_CODE = 4001
MESSAGE_TOO_BIG_CLOSE_CODE = 1009


class MalformedMessage(Exception):
    """A server message that lacks a field or has one of the wrong type."""


def check_base_url(url: str) -> str:
    """Return url without a trailing slash. Raises ValueError unless it is ws(s)."""
    if not isinstance(url, str):
        raise ValueError(f"url must be a string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(
            f"url must look like ws://host:port or wss://host, got {url!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"url must not have a query or fragment, got {url!r}")
    return url.rstrip("/")


def document_url(
    base_url: str,
    document_id: str,
    client_id: str,
    token: str,
    since: int | None,
    *,
    redacted_token: str | None = None,
) -> str:
    """Return the WebSocket URL of a document.

    When redacted_token is given, it replaces the token verbatim, for logging.
    """
    if redacted_token is None:
        token_value = quote(token, safe="")
    else:
        token_value = redacted_token
    query: dict[str, str | int] = {"client_id": client_id, "version": PROTOCOL_VERSION}
    if since is not None:
        query["since"] = since
    path = f"/v1/ws/documents/{quote(document_id, safe='')}"
    return f"{base_url}{path}?token={token_value}&{urlencode(query)}"


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def edit_message(
    client_id: str, message_id: str, ops: ot.Operation, version: int
) -> dict[str, Any]:
    return {
        "type": "operation",
        "event": "document_edit",
        "data": {"operation": {"ops": ops}, "version": version},
        "client_id": client_id,
        "message_id": message_id,
    }


def ping_message(timestamp: int) -> dict[str, Any]:
    return {"type": "system", "event": "ping", "data": {"timestamp": timestamp}}


def sync_message(version: int) -> dict[str, Any]:
    return {"type": "system", "event": "sync", "data": {"version": version}}


def int_field(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedMessage(
            f"field {name!r} must be a non-negative integer, got {value!r}"
        )
    return value


def str_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise MalformedMessage(f"field {name!r} must be a string, got {value!r}")
    return value


def operation_field(data: dict[str, Any]) -> ot.Operation:
    """Return the validated ops of a document_edit's data."""
    operation = data.get("operation")
    if not isinstance(operation, dict) or not isinstance(operation.get("ops"), list):
        raise MalformedMessage("field 'operation' must be an object like {'ops': []}")
    ops: ot.Operation = operation["ops"]
    ot.validate(ops)
    return ops


def acknowledged_versions(data: dict[str, Any]) -> dict[str, int | None]:
    """Return the ``acknowledged`` list of a document_state as message_id: version."""
    acknowledged = data.get("acknowledged") or []
    if not isinstance(acknowledged, list):
        raise MalformedMessage("field 'acknowledged' must be a list")
    versions: dict[str, int | None] = {}
    for entry in acknowledged:
        if not isinstance(entry, dict) or not isinstance(entry.get("message_id"), str):
            raise MalformedMessage(
                f"each entry of 'acknowledged' must have a message_id, got {entry!r}"
            )
        version = entry.get("version")
        valid = isinstance(version, int) and not isinstance(version, bool)
        versions[entry["message_id"]] = version if valid else None
    return versions
