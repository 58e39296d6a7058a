"""Bounded readers and writers for the native Handle protocol's field types (RFC 3652 section 2.1).

All integers are big-endian. A ``str`` or ``bytes`` field is a u32 length and that many octets (UTF-8
for strings). The reader never allocates more than the bytes it was given: every length and every count
is checked against what is left before anything is read or built, and against the ``Limits`` in force.
It raises ``DecodeError`` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import DecodeError

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoder enforces before it buffers or builds anything.

    ``max_message`` bounds an envelope's messageLength (header + body + credential section), so also the
    bytes a stream or datagram reassembler holds for one message. 256 KiB is the reference's own
    MAX_MESSAGE_LENGTH. The other fields bound counts and strings inside a message; the reference uses
    the same numbers (2,048 values, 2,048-byte handles)."""

    max_message: int = 256 * 1024
    max_values: int = 2048
    max_handle_bytes: int = 2048
    max_list: int = 65_536  # indexes, types or handles in one list


DEFAULT_LIMITS = Limits()


class Reader:
    """Reads fields from ``buf[pos:end]``; every read is checked against ``end``."""

    __slots__ = ("buf", "end", "limits", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0, end: int | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end
        self.limits = limits

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise DecodeError(f"truncated {what}: {n} bytes needed, {self.end - self.pos} left")

    def u8(self, what: str = "octet") -> int:
        pos = self.pos
        if pos + 1 > self.end:
            self._need(1, what)
        self.pos = pos + 1
        return int(_U8.unpack_from(self.buf, pos)[0])

    def u16(self, what: str = "int2") -> int:
        pos = self.pos
        if pos + 2 > self.end:
            self._need(2, what)
        self.pos = pos + 2
        return int(_U16.unpack_from(self.buf, pos)[0])

    def u32(self, what: str = "int4") -> int:
        pos = self.pos
        if pos + 4 > self.end:
            self._need(4, what)
        self.pos = pos + 4
        return int(_U32.unpack_from(self.buf, pos)[0])

    def i32(self, what: str = "int4") -> int:
        pos = self.pos
        if pos + 4 > self.end:
            self._need(4, what)
        self.pos = pos + 4
        return int(_I32.unpack_from(self.buf, pos)[0])

    def raw(self, n: int, what: str = "octets") -> bytes:
        self._need(n, what)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def octets(self, what: str = "byte string", limit: int | None = None) -> bytes:
        """A u32-length-prefixed byte string, at most ``limit`` bytes (and never past the end)."""
        n = self.u32(what)
        if limit is not None and n > limit:
            raise DecodeError(f"{what} of {n} bytes exceeds the limit of {limit}")
        return self.raw(n, what)

    def text(self, what: str = "string", limit: int | None = None) -> str:
        data = self.octets(what, limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"{what} is not valid UTF-8") from None

    def handle(self, what: str = "handle") -> str:
        return self.text(what, self.limits.max_handle_bytes)

    def count(self, min_item_bytes: int, limit: int, what: str = "list") -> int:
        """A u32 element count, refused when the elements could not fit in what is left."""
        n = self.u32(f"{what} count")
        if n > limit:
            raise DecodeError(f"{what} of {n} elements exceeds the limit of {limit}")
        if n * min_item_bytes > self.end - self.pos:
            raise DecodeError(f"{what} of {n} elements cannot fit in {self.end - self.pos} bytes")
        return n

    def done(self, what: str) -> None:
        if self.pos != self.end:
            raise DecodeError(f"{self.end - self.pos} unexpected bytes after the {what}")


def put_u8(out: bytearray, v: int) -> None:
    out += _U8.pack(v)


def put_u16(out: bytearray, v: int) -> None:
    out += _U16.pack(v)


def put_u32(out: bytearray, v: int) -> None:
    out += _U32.pack(v)


def put_i32(out: bytearray, v: int) -> None:
    out += _I32.pack(v)


def put_octets(out: bytearray, data: bytes) -> None:
    out += _U32.pack(len(data))
    out += data


def put_text(out: bytearray, text: str) -> None:
    put_octets(out, text.encode("utf-8"))


def java_bigint(n: int) -> bytes:
    """``n`` as Java's ``BigInteger.toByteArray`` writes it: minimal two's complement, so a positive number
    whose top bit is set gets a leading zero octet. Keys in the reference's encodings use this form."""
    if n < 0:
        raise ValueError("negative numbers do not occur in key encodings")
    return n.to_bytes(n.bit_length() // 8 + 1, "big")
