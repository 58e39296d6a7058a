"""The messages every surface and wire format share: a ``Request`` to a node and its ``Response``.

They are protocol-neutral. The msgpack wire format (``core.wire``), the native Handle protocol and the
REST API all turn what arrives into a ``Request``, the node logic answers it with a ``Response``, and
each surface turns that back into its own bytes. Opcodes and response codes are the Handle numbers
(``core.codes``). Messages are frozen dataclasses: a request makes its own response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from .codes import OpCode
from .proofs import Credential
from .values import HandleValue

# Request flags.
FLAG_AUTHORITATIVE = 1  # bypass caches (``?auth=true``)
FLAG_OVERWRITE = 2  # create: replace an existing record; add value: replace existing values
FLAG_TRACE = 4  # answers name the node; the recursive node returns each hop
FLAG_NO_REFERRAL_CACHE = 8


@dataclass(frozen=True, slots=True, init=False)
class Hop:
    """One step of a recursive resolution, for ``--trace``."""

    node: str
    address: str
    code: int
    elapsed_us: int
    cached: bool = False

    # Written out, as Request's: every walk of a recursive node makes one or two.
    def __init__(self, node: str, address: str, code: int, elapsed_us: int, cached: bool = False) -> None:
        s = _HOP_SLOTS
        s[0](self, node)
        s[1](self, address)
        s[2](self, code)
        s[3](self, elapsed_us)
        s[4](self, cached)


@dataclass(frozen=True, slots=True, init=False)
class Request:
    request_id: int
    opcode: int
    handle: str = ""
    flags: int = 0
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()
    values: tuple[HandleValue, ...] = ()
    auth: tuple[str, Credential] | None = field(default=None, repr=False)  # (identity, secret or proof)
    items: tuple[tuple[str, tuple[HandleValue, ...]], ...] = ()  # batch create
    page: tuple[int, int] | None = None  # list handles: (page, page size)
    hops: int = 0  # hops already taken (referral loop guard)
    version: int = 0  # registry sync: the record's version (ms since the epoch at its last change)

    # Written out: every message of every node (and of the simulator, several per resolution) is one of
    # these, and the generated frozen __init__ sets each of the twelve fields through object.__setattr__;
    # the slot setters take half the time (2.6 against 1.3 us a message).
    def __init__(self, request_id: int, opcode: int, handle: str = "", flags: int = 0,
                 indexes: tuple[int, ...] = (), types: tuple[str, ...] = (), values: tuple[HandleValue, ...] = (),
                 auth: tuple[str, Credential] | None = None,
                 items: tuple[tuple[str, tuple[HandleValue, ...]], ...] = (), page: tuple[int, int] | None = None,
                 hops: int = 0, version: int = 0) -> None:
        s = _REQUEST_SLOTS
        s[0](self, request_id)
        s[1](self, opcode)
        s[2](self, handle)
        s[3](self, flags)
        s[4](self, indexes)
        s[5](self, types)
        s[6](self, values)
        s[7](self, auth)
        s[8](self, items)
        s[9](self, page)
        s[10](self, hops)
        s[11](self, version)

    @property
    def is_plain_resolution(self) -> bool:
        """An anonymous resolution with no filter and no flag: the request answer caches serve."""
        return self.opcode == OpCode.RESOLUTION and not (self.flags or self.auth or self.indexes or self.types)


@dataclass(frozen=True, slots=True, init=False)
class Response:
    request_id: int
    opcode: int
    code: int
    handle: str = ""
    values: tuple[HandleValue, ...] = ()
    message: str = ""
    node: str = ""  # the answering node, when the request asked for a trace
    trace: tuple[Hop, ...] = ()
    results: tuple[tuple[str, int, str], ...] = ()  # batch: (handle, code, message)
    handles: tuple[str, ...] = ()  # list handles / prefixes
    total: int | None = None
    truncated: bool = False

    # Written out, as Request's.
    def __init__(self, request_id: int, opcode: int, code: int, handle: str = "",
                 values: tuple[HandleValue, ...] = (), message: str = "", node: str = "", trace: tuple[Hop, ...] = (),
                 results: tuple[tuple[str, int, str], ...] = (), handles: tuple[str, ...] = (),
                 total: int | None = None, truncated: bool = False) -> None:
        s = _RESPONSE_SLOTS
        s[0](self, request_id)
        s[1](self, opcode)
        s[2](self, code)
        s[3](self, handle)
        s[4](self, values)
        s[5](self, message)
        s[6](self, node)
        s[7](self, trace)
        s[8](self, results)
        s[9](self, handles)
        s[10](self, total)
        s[11](self, truncated)


def slot_setters(cls: type) -> tuple[Callable[[object, object], None], ...]:
    """The slot descriptors' setters of a slotted dataclass, in its fields' order (what its __init__ sets)."""
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))


_HOP_SLOTS = slot_setters(Hop)
_REQUEST_SLOTS = slot_setters(Request)
_RESPONSE_SLOTS = slot_setters(Response)


Message = Request | Response


def error_response(request_id: int, opcode: int, code: int, message: str = "", handle: str = "") -> Response:
    return Response(request_id, opcode, code, handle, message=message)
