"""Handle values in the native protocol's binary form (RFC 3651 3.1, RFC 3652 2.2.4) <-> ``HandleValue``.

A value: index i32, timestamp u32 (seconds since the epoch), ttlType u8 (0 relative, 1 absolute),
ttl i32, permissions u8 (8 admin read, 4 admin write, 2 public read, 1 public write), type str, data
bytes, then a u32 count of references, each a str handle and an i32 index.

``HandleValue`` has no TTL type: a value whose TTL is absolute (an expiry time, rarely sent) decodes as
``AbsoluteTTLValue``, a ``HandleValue`` that remembers it, so that it encodes back to the same bytes;
``relative_ttl`` turns it into the relative TTL the rest of idresolve keeps. Only the four permission
bits are kept (the reference reads no others).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import DecodeError
from ..values import HandleValue
from .primitives import Reader, put_text, put_u32

TTL_RELATIVE, TTL_ABSOLUTE = 0, 1
#: The fixed part of a value: index, timestamp, ttl type, ttl, permissions, and the three u32 counts.
MIN_VALUE_BYTES = 4 + 4 + 1 + 4 + 1 + 4 + 4 + 4


@dataclass(frozen=True, slots=True)
class AbsoluteTTLValue(HandleValue):
    """A value whose ``ttl_s`` is an absolute expiry time (seconds since the epoch), not a duration."""


def relative_ttl(value: HandleValue, now: float) -> HandleValue:
    """``value`` with a relative TTL: an absolute one becomes the seconds left until it, at least 0."""
    if isinstance(value, AbsoluteTTLValue):
        return HandleValue(value.index, value.type, value.data, max(0, value.ttl_s - int(now)),
                           value.timestamp, value.perms, value.refs)
    return value


_HEAD = struct.Struct(">iIBiBI")
_U32 = struct.Struct(">I")
_REF_INDEX = struct.Struct(">i")


def write_value(out: bytearray, value: HandleValue) -> None:
    vtype = value.type.encode("utf-8")
    ttl_type = TTL_ABSOLUTE if isinstance(value, AbsoluteTTLValue) else TTL_RELATIVE
    out += _HEAD.pack(value.index, value.timestamp, ttl_type, value.ttl_s, value.perms & 0x0F, len(vtype))
    out += vtype
    out += _U32.pack(len(value.data))
    out += value.data
    out += _U32.pack(len(value.refs))
    for handle, index in value.refs:
        put_text(out, handle)
        out += _REF_INDEX.pack(index)


def read_value(r: Reader) -> HandleValue:
    index = r.i32("value index")
    timestamp = r.u32("value timestamp")
    ttl_type = r.u8("value ttl type")
    if ttl_type not in (TTL_RELATIVE, TTL_ABSOLUTE):
        raise DecodeError(f"unknown ttl type {ttl_type}")
    ttl = r.i32("value ttl")
    perms = r.u8("value permissions") & 0x0F
    vtype = r.text("value type", 1024)
    data = r.octets("value data")
    refs = tuple((r.handle("reference handle"), r.i32("reference index"))
                 for _ in range(r.count(8, r.limits.max_values, "references")))
    cls = AbsoluteTTLValue if ttl_type == TTL_ABSOLUTE else HandleValue
    return cls(index, vtype, data, ttl, timestamp, perms, refs)


def write_values(out: bytearray, values: Iterable[HandleValue]) -> None:
    values = tuple(values)
    put_u32(out, len(values))
    for v in values:
        write_value(out, v)


def read_values(r: Reader) -> tuple[HandleValue, ...]:
    return tuple(read_value(r) for _ in range(r.count(MIN_VALUE_BYTES, r.limits.max_values, "values")))


def stamp_absolute(value: HandleValue) -> AbsoluteTTLValue:
    """``value`` marked as carrying an absolute TTL (for tests and for clients that send expiry times)."""
    return AbsoluteTTLValue(**{f: getattr(value, f) for f in ("index", "type", "data", "ttl_s", "timestamp",
                                                                "perms", "refs")})


__all__ = ["MIN_VALUE_BYTES", "TTL_ABSOLUTE", "TTL_RELATIVE", "AbsoluteTTLValue", "read_value", "read_values",
           "relative_ttl", "stamp_absolute", "write_value", "write_values"]
