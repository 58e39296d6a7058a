"""The one exception root of idresolve and its subclasses.

Each subclass carries its Handle response code; the HTTP status follows from the code
(``codes.http_status``). Errors are turned into answers at exactly one place per surface: the aiohttp
middleware (``http.app``) and the binary server's dispatch (``net.server``).

Two families are kept apart:
- ``PeerError``: the peer sent garbage (bad framing, undecodable msgpack, malformed JSON);
- everything else: the caller asked for something illegal or impossible (invalid handle, no permission).
"""

from __future__ import annotations

from .codes import ResponseCode, http_status


class HandleError(Exception):
    """Base of every error idresolve answers with a Handle response code."""

    code: int = ResponseCode.ERROR
    #: Whether answers carry ``message`` (the REST contract's bodies omit it for some codes).
    show_message: bool = True

    def __init__(self, message: str = "", *, handle: str | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.handle = handle
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return http_status(self.code)


class PeerError(HandleError):
    """The peer sent bytes or a document we cannot understand (protocol error, code 4)."""

    code = ResponseCode.PROTOCOL_ERROR


class DecodeError(PeerError):
    """A frame or message could not be decoded. The connection it came from is not trustworthy."""


class FrameTooLarge(DecodeError):
    """A frame announced a length above the configured limit."""


class StoreCorrupt(HandleError):
    """A stored record cannot be decoded: the server's fault, never the client's (code 2)."""

    code = ResponseCode.ERROR


class InvalidHandle(HandleError):
    code = ResponseCode.INVALID_HANDLE


class InvalidValue(HandleError):
    code = ResponseCode.INVALID_VALUE


class HandleNotFound(HandleError):
    show_message = False
    code = ResponseCode.HANDLE_NOT_FOUND


class HandleAlreadyExists(HandleError):
    show_message = False
    code = ResponseCode.HANDLE_ALREADY_EXISTS


class ValuesNotFound(HandleError):
    show_message = False
    code = ResponseCode.VALUES_NOT_FOUND


class ValueAlreadyExists(HandleError):
    code = ResponseCode.VALUE_ALREADY_EXISTS


class NotResponsible(HandleError):
    code = ResponseCode.SERVER_NOT_RESP


class AuthenticationNeeded(HandleError):
    show_message = False
    code = ResponseCode.AUTHENTICATION_NEEDED


class AuthenticationFailed(HandleError):
    """Wrong secret, unknown identity or malformed identity. Answers carry no detail (no oracle)."""

    code = ResponseCode.AUTHENTICATION_FAILED


class NotAuthorized(HandleError):
    code = ResponseCode.INVALID_ADMIN


class ServerBusy(HandleError):
    code = ResponseCode.SERVER_TOO_BUSY


class StoreClosed(ServerBusy):
    """The store was closed: the node is stopping. A request that still reaches it is refused as busy
    (code 3, HTTP 503), as the listeners refuse requests once they stop, so the client tries again elsewhere."""


class TooManyHops(HandleError):
    code = ResponseCode.RECURSION_COUNT_TOO_HIGH


class UpstreamUnavailable(HandleError):
    """No upstream node answered in time (recursive resolution)."""

    code = ResponseCode.ERROR
