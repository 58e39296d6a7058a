"""The messages every surface and wire format share: a ``Request`` to a node and its ``Response``.

They are protocol-neutral. The msgpack wire format (``core.wire``), the native Handle protocol and the
REST API all turn what arrives into a ``Request``, the node logic answers it with a ``Response``, and
each surface turns that back into its own bytes. Opcodes and response codes are the Handle numbers
(``core.codes``). Messages are frozen dataclasses: a request makes its own response.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codes import OpCode
from .proofs import Credential
from .values import HandleValue

# Request flags.
FLAG_AUTHORITATIVE = 1  # bypass caches (``?auth=true``)
FLAG_OVERWRITE = 2  # create: replace an existing record; add value: replace existing values
FLAG_TRACE = 4  # answers name the node; the recursive node returns each hop
FLAG_NO_REFERRAL_CACHE = 8


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of a recursive resolution, for ``--trace``."""

    node: str
    address: str
    code: int
    elapsed_us: int
    cached: bool = False


@dataclass(frozen=True, slots=True)
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

    @property
    def is_plain_resolution(self) -> bool:
        """An anonymous resolution with no filter and no flag: the request answer caches serve."""
        return self.opcode == OpCode.RESOLUTION and not (self.flags or self.auth or self.indexes or self.types)


@dataclass(frozen=True, slots=True)
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


Message = Request | Response


def error_response(request_id: int, opcode: int, code: int, message: str = "", handle: str = "") -> Response:
    return Response(request_id, opcode, code, handle, message=message)
