"""The message envelope (20 bytes) and message header (24 bytes) of the native protocol (RFC 3652 2.2).

Envelope: majorVersion u8, minorVersion u8, flags u8, suggestedMinor u8, sessionId u32, requestId u32,
sequenceNumber u32, messageLength u32. The flags octet holds CP 0x80, EC 0x40, TC 0x20 in its top bits
and the *suggested major version* in its low two bits (Handle.Net 2.8 and later), so ``02 0a 02 0a`` is
version 2.10 suggesting 2.10. messageLength counts header + body + credential section, not the envelope.

Header: opCode u32, responseCode u32 (0 in requests), opFlags u32, siteInfoSerialNumber u16,
recursionCount u8, a reserved octet, expirationTime u32 (seconds since the epoch), bodyLength u32.

Both decode losslessly: every octet read is kept, so a decoded envelope or header encodes to the same
bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag

from ..errors import DecodeError

ENVELOPE_SIZE = 20
HEADER_SIZE = 24
#: The protocol version idresolve speaks (Handle.Net 9's).
PROTOCOL_VERSION = (2, 10)

_ENVELOPE = struct.Struct(">BBBBIIII")
_HEADER = struct.Struct(">IIIHBBII")


class EnvelopeFlag(IntFlag):
    CP = 0x80  # compressed
    EC = 0x40  # encrypted
    TC = 0x20  # truncated: one datagram of a message split over several


class OpFlag(IntFlag):
    """opFlags bits (RFC 3652 2.2.2.3 and the reference's later additions)."""

    AT = 0x80000000  # authoritative: answer from a primary, bypass caches
    CT = 0x40000000  # certify: the answer must be signed
    ENC = 0x20000000  # encrypt the answer (session key)
    REC = 0x10000000  # recursive: a server may resolve on the client's behalf
    CA = 0x08000000  # cache certify: a caching server signs its answers
    CN = 0x04000000  # continuous: more messages follow
    KA = 0x02000000  # keep the connection open
    PO = 0x01000000  # public only: leave out restricted values
    RD = 0x00800000  # the answer starts with a digest of the request
    OVERWRITE = 0x00400000  # create / add value: replace what exists
    MINT = 0x00200000  # create: the server mints the suffix
    DNRF = 0x00100000  # do not refer: resolve or fail, never answer with a referral


@dataclass(frozen=True, slots=True)
class Envelope:
    major: int = PROTOCOL_VERSION[0]
    minor: int = PROTOCOL_VERSION[1]
    flags: int = 0  # EnvelopeFlag bits (the top six bits of the flags octet)
    suggested_major: int = PROTOCOL_VERSION[0]  # 0..3: the flags octet's low two bits
    suggested_minor: int = PROTOCOL_VERSION[1]
    session_id: int = 0
    request_id: int = 0
    sequence: int = 0

    @property
    def version(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def suggested(self) -> tuple[int, int]:
        """The version the sender suggests; an old sender that leaves it 0 suggests its own version."""
        if self.suggested_major == 0:
            return (self.major, self.minor)
        return (self.suggested_major, self.suggested_minor)

    def encode(self, message_length: int) -> bytes:
        return _ENVELOPE.pack(self.major, self.minor, (self.flags & 0xFC) | (self.suggested_major & 0x03),
                              self.suggested_minor, self.session_id, self.request_id, self.sequence,
                              message_length)


def decode_envelope(data: bytes | memoryview) -> tuple[Envelope, int]:
    """The envelope at the start of ``data`` and its messageLength. Raises ``DecodeError``."""
    if len(data) < ENVELOPE_SIZE:
        raise DecodeError(f"an envelope is {ENVELOPE_SIZE} bytes, got {len(data)}")
    major, minor, flags, sminor, session, request, seq, length = _ENVELOPE.unpack_from(data, 0)
    return Envelope(major, minor, flags & 0xFC, flags & 0x03, sminor, session, request, seq), length


@dataclass(frozen=True, slots=True)
class Header:
    opcode: int
    code: int = 0  # responseCode; 0 in every request
    op_flags: int = 0
    site_serial: int = 0
    recursion: int = 0
    expiration: int = 0
    reserved: int = 0

    @property
    def is_request(self) -> bool:
        return self.code == 0

    def has(self, flag: OpFlag) -> bool:
        return bool(self.op_flags & flag)

    def encode(self, body_length: int) -> bytes:
        return _HEADER.pack(self.opcode, self.code, self.op_flags, self.site_serial, self.recursion,
                            self.reserved, self.expiration, body_length)


def decode_header(data: bytes | memoryview, pos: int) -> tuple[Header, int]:
    """The header at ``data[pos:]`` and its bodyLength. The caller checks that ``data`` holds 24 bytes."""
    opcode, code, flags, serial, recursion, reserved, expiration, body_length = _HEADER.unpack_from(data, pos)
    return Header(opcode, code, flags, serial, recursion, expiration, reserved), body_length


def version_at_least(version: tuple[int, int], wanted: tuple[int, int]) -> bool:
    """The reference's version test, including its quirk: very old clients that sent major version 5 by
    mistake count as older than every 2.x."""
    major, minor = version
    if major == 5:
        return wanted[0] == 5 and minor >= wanted[1]
    if wanted[0] == 5:
        return True
    return version >= wanted


def answer_version(request: Envelope) -> tuple[int, int]:
    """The version to answer a request in: the lower of ours and what the client suggests (the reference
    answers a 2.3 GetSiteInfo request that suggests 2.10 in 2.10)."""
    suggested = request.suggested
    return suggested if not version_at_least(suggested, PROTOCOL_VERSION) else PROTOCOL_VERSION
