"""Python SDK for Materi Realtime, collaborative plain-text editing over WebSocket.

``MateriRealtime`` is imported on first use because the server imports
``materi_realtime.ot`` too, and that import should not load the WebSocket client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ClientClosedError, ConnectionFailedError, RealtimeError
from .events import EVENT_NAMES

if TYPE_CHECKING:
    from .client import ConnectionState, MateriRealtime, backoff_delay

__version__ = "0.1.0"

__all__ = [
    "EVENT_NAMES",
    "ClientClosedError",
    "ConnectionFailedError",
    "ConnectionState",
    "MateriRealtime",
    "RealtimeError",
    "__version__",
    "backoff_delay",
]

_LAZY_EXPORTS = {
    "ConnectionState": ".client",
    "MateriRealtime": ".client",
    "backoff_delay": ".client",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value
