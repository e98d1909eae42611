"""Exceptions that the client raises to its caller."""

from __future__ import annotations


class RealtimeError(Exception):
    """Base class of the exceptions that this package raises."""


class ConnectionFailedError(RealtimeError):
    """Raised when the connection ends in the "failed" state.

    ``code`` is the WebSocket close code that caused the failure, or None when the
    client gave up for another reason, such as running out of reconnect attempts.
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason if code is None else f"{reason} (close code {code})")


class ClientClosedError(RealtimeError):
    """Raised by connect() or flush() when close() runs before they finish."""
