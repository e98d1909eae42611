"""Errors that the document socket reports to its client.

Each error has a snake_case `code`. A message error (no `close_code`) becomes an
`error` frame and the socket stays open. A connection error closes the socket with
its `close_code` and sends nothing else.
"""


class RealtimeError(Exception):
    """Base class: raise a subclass with a message that names the bad value."""

    code = "error"
    close_code: int | None = None
    default_message = "The request failed."

    def __init__(self, message: str | None = None, message_id: str | None = None):
        self.message = message or self.default_message
        self.message_id = message_id
        super().__init__(self.message)


# Message errors: the client gets an error frame and the socket stays open.


class InvalidJSON(RealtimeError):
    """Raised when a frame is not JSON text."""

    code = "invalid_json"


class InvalidMessage(RealtimeError):
    """Raised when the envelope or the data of a known event is malformed."""

    code = "invalid_message"


class UnknownType(RealtimeError):
    """Raised when a message's type is not one of the protocol's types."""

    code = "unknown_type"


class UnknownEvent(RealtimeError):
    """Raised when a message's event is not one a client may send for its type."""

    code = "unknown_event"


class InvalidOperation(RealtimeError):
    """Raised when an operation is malformed or does not fit the document."""

    code = "invalid_operation"


class VersionAhead(RealtimeError):
    """Raised when an edit's base version is newer than the document."""

    code = "version_ahead"


class Forbidden(RealtimeError):
    """Raised when the user's role does not allow the message."""

    code = "forbidden"


class Unavailable(RealtimeError):
    """Raised when an edit could not be stored; nothing was applied."""

    code = "unavailable"
    default_message = "The edit could not be stored; resend it later."


# Connection errors: the socket is closed with the close code.


class BadConnectionRequest(RealtimeError):
    """Raised when the connection URL has a missing or invalid parameter."""

    code = "bad_request"
    close_code = 4000


class AuthenticationFailed(RealtimeError):
    """Raised when the token is missing, invalid or expired."""

    code = "authentication_failed"
    close_code = 4001


class AccessDenied(RealtimeError):
    """Raised when the user has no role on the document."""

    code = "access_denied"
    close_code = 4003


class DocumentNotFound(RealtimeError):
    """Raised when no document has the requested id."""

    code = "document_not_found"
    close_code = 4004
