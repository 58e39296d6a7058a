"""Message bodies of the native protocol, one frozen dataclass per layout (RFC 3652 section 3).

Which layout a body has follows from the header: requests (responseCode 0) by opCode, successful
answers by opCode, other answers by responseCode (``body_reader``). An opCode or responseCode this codec
does not know decodes as ``RawBody`` so that a server can still answer it (operation not supported).
Authentication and session bodies live in ``authbodies.py``.

Every reader consumes the body exactly: a body with bytes left over is a ``DecodeError``, except where
the reference itself writes more than the RFC says (``authbodies``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..codes import OpCode, ResponseCode
from ..errors import DecodeError, InvalidValue
from ..site import SiteInfo
from ..values import HandleValue
from .primitives import Reader, put_i32, put_text, put_u32
from .valuecodec import read_values, write_values


@dataclass(frozen=True, slots=True)
class HandleBody:
    """Just a handle: delete, list handles (the prefix handle), get site info (``/``), session terminate."""

    handle: str

    def write(self, out: bytearray) -> None:
        put_text(out, self.handle)


@dataclass(frozen=True, slots=True)
class ResolutionRequest:
    handle: str
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()

    def write(self, out: bytearray) -> None:
        put_text(out, self.handle)
        put_u32(out, len(self.indexes))
        for i in self.indexes:
            put_i32(out, i)
        put_u32(out, len(self.types))
        for t in self.types:
            put_text(out, t)


@dataclass(frozen=True, slots=True)
class HandleValues:
    """A handle and values: create, add value and modify value requests, and resolution answers."""

    handle: str
    values: tuple[HandleValue, ...] = ()

    def write(self, out: bytearray) -> None:
        put_text(out, self.handle)
        write_values(out, self.values)


@dataclass(frozen=True, slots=True)
class RemoveValues:
    handle: str
    indexes: tuple[int, ...] = ()

    def write(self, out: bytearray) -> None:
        put_text(out, self.handle)
        put_u32(out, len(self.indexes))
        for i in self.indexes:
            put_i32(out, i)


@dataclass(frozen=True, slots=True)
class EmptyBody:
    """No body: the success answer of delete, add, remove and modify value, session terminate."""

    def write(self, out: bytearray) -> None:
        return None


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """The success answer of create: the reference (2.10) names the handle created, older ones nothing."""

    handle: str | None = None

    def write(self, out: bytearray) -> None:
        if self.handle is not None:
            put_text(out, self.handle)


@dataclass(frozen=True, slots=True)
class HandleList:
    """The success answer of list handles (and of listing homed prefixes)."""

    handles: tuple[str, ...] = ()

    def write(self, out: bytearray) -> None:
        put_u32(out, len(self.handles))
        for h in self.handles:
            put_text(out, h)


@dataclass(frozen=True, slots=True)
class SiteInfoBody:
    """The success answer of get site info: the binary HS_SITE record, with nothing around it."""

    site: SiteInfo

    def write(self, out: bytearray) -> None:
        out += self.site.to_bytes()


@dataclass(frozen=True, slots=True)
class Referral:
    """Service referral (302) and prefix referral (303): the service or prefix handle, then (2.5 and
    later) the values that say where to go: HS_SITE, HS_SERV and their ``.PREFIX`` forms."""

    handle: str
    values: tuple[HandleValue, ...] | None = ()

    def write(self, out: bytearray) -> None:
        put_text(out, self.handle)
        if self.values is not None:
            write_values(out, self.values)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """Any answer that is not a success, a referral or a challenge: a message (may be empty)."""

    message: str = ""

    def write(self, out: bytearray) -> None:
        put_text(out, self.message)


@dataclass(frozen=True, slots=True)
class RawBody:
    """A body of an opCode or responseCode this codec does not model, kept as it came."""

    data: bytes = b""

    def write(self, out: bytearray) -> None:
        out += self.data


# -- readers --------------------------------------------------------------------------------------------

def _ints(r: Reader, what: str) -> tuple[int, ...]:
    return tuple(r.i32(what) for _ in range(r.count(4, r.limits.max_list, what)))


def read_handle_body(r: Reader) -> HandleBody:
    return HandleBody(r.handle())


def read_resolution_request(r: Reader) -> ResolutionRequest:
    handle = r.handle()
    indexes = _ints(r, "index list")
    types = tuple(r.text("type", 1024) for _ in range(r.count(4, r.limits.max_list, "type list")))
    return ResolutionRequest(handle, indexes, types)


def read_handle_values(r: Reader) -> HandleValues:
    return HandleValues(r.handle(), read_values(r))


def read_remove_values(r: Reader) -> RemoveValues:
    return RemoveValues(r.handle(), _ints(r, "index list"))


def read_empty(r: Reader) -> EmptyBody:
    return EmptyBody()


def read_create_response(r: Reader) -> CreateResponse:
    return CreateResponse(r.handle() if r.remaining else None)


def read_handle_list(r: Reader) -> HandleList:
    return HandleList(tuple(r.handle() for _ in range(r.count(4, r.limits.max_list, "handle list"))))


def read_site_info(r: Reader) -> SiteInfoBody:
    try:
        return SiteInfoBody(SiteInfo.from_bytes(r.raw(r.remaining, "site info")))
    except InvalidValue as exc:
        raise DecodeError(exc.message) from None


def read_referral(r: Reader) -> Referral:
    handle = r.handle("referral handle")
    return Referral(handle, read_values(r) if r.remaining else None)


def read_error(r: Reader) -> ErrorBody:
    return ErrorBody(r.text("error message", r.remaining))


def read_raw(r: Reader) -> RawBody:
    return RawBody(r.raw(r.remaining, "body"))


BodyReader = Callable[[Reader], object]

REQUEST_READERS: dict[int, BodyReader] = {
    OpCode.RESOLUTION: read_resolution_request,
    OpCode.GET_SITEINFO: read_handle_body,
    OpCode.CREATE_HANDLE: read_handle_values,
    OpCode.DELETE_HANDLE: read_handle_body,
    OpCode.ADD_VALUE: read_handle_values,
    OpCode.REMOVE_VALUE: read_remove_values,
    OpCode.MODIFY_VALUE: read_handle_values,
    OpCode.LIST_HANDLES: read_handle_body,
    OpCode.LIST_PREFIXES: read_handle_body,
    OpCode.SESSION_TERMINATE: read_handle_body,
}

SUCCESS_READERS: dict[int, BodyReader] = {
    OpCode.RESOLUTION: read_handle_values,
    OpCode.GET_SITEINFO: read_site_info,
    OpCode.CREATE_HANDLE: read_create_response,
    OpCode.DELETE_HANDLE: read_empty,
    OpCode.ADD_VALUE: read_empty,
    OpCode.REMOVE_VALUE: read_empty,
    OpCode.MODIFY_VALUE: read_empty,
    OpCode.LIST_HANDLES: read_handle_list,
    OpCode.LIST_PREFIXES: read_handle_list,
    OpCode.SESSION_TERMINATE: read_empty,
    OpCode.SESSION_EXCHANGEKEY: read_empty,
}

#: Answers whose layout follows from the response code alone; every other code but SUCCESS and
#: AUTHENTICATION_NEEDED (``authbodies``) carries an error message.
CODE_READERS: dict[int, BodyReader] = {
    ResponseCode.SERVICE_REFERRAL: read_referral,
    ResponseCode.PREFIX_REFERRAL: read_referral,
}

#: Response codes the reference answers with an error message (its list; anything else is RawBody).
ERROR_CODES = frozenset({
    2, 3, 4, 5, 6, 7, 100, 101, 102, 200, 201, 202, 300, 301, 400, 401, 403, 404, 405, 406,
    500, 501, 502, 503, 504, 505, 601, 602, 603, 604, 605,
})
