"""A whole native message (envelope + header + body + credential section), its codec and TCP framing.

The decoder rule: for any bytes at all, ``decode_message`` returns a ``Message`` or raises
``DecodeError``; ``StreamFramer.feed`` returns whole messages' bytes, keeps a partial one (at most
20 + ``Limits.max_message`` bytes) waiting for more, or raises ``DecodeError`` (``FrameTooLarge`` when an
envelope announces more than the limit: the stream cannot be resynchronised). Nothing else, ever.

Decoding is lossless for every message the reference sends (checked against captures): a decoded message
encodes to the same bytes. ``Message.wire`` keeps the header and body exactly as received, which is what
signatures, MACs and request digests cover. Compressed or encrypted messages (envelope CP/EC) are
refused: idresolve does not offer session encryption.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ..codes import ResponseCode
from ..errors import DecodeError, FrameTooLarge
from ..wire import FrameDecoder
from .authbodies import (
    AUTH_REQUEST_READERS,
    AUTH_SUCCESS_READERS,
    Challenge,
    ChallengeAnswer,
    RequestDigest,
    SessionExchangeKey,
    SessionSetupRequest,
    SessionSetupResponse,
    VerifyRequest,
    VerifyResponse,
    read_challenge,
    read_request_digest,
)
from .bodies import (
    CODE_READERS,
    ERROR_CODES,
    REQUEST_READERS,
    SUCCESS_READERS,
    CreateResponse,
    EmptyBody,
    ErrorBody,
    HandleBody,
    HandleList,
    HandleValues,
    RawBody,
    Referral,
    RemoveValues,
    ResolutionRequest,
    SiteInfoBody,
    read_error,
    read_raw,
)
from .credential import Credential, read_credential
from .header import (
    ENVELOPE_SIZE,
    HEADER_SIZE,
    Envelope,
    EnvelopeFlag,
    Header,
    OpFlag,
    decode_envelope,
    decode_header,
)
from .primitives import DEFAULT_LIMITS, Limits, Reader

Body = (HandleBody | ResolutionRequest | HandleValues | RemoveValues | EmptyBody | CreateResponse | HandleList
        | SiteInfoBody | Referral | ErrorBody | RawBody | Challenge | ChallengeAnswer | VerifyRequest
        | VerifyResponse | SessionSetupRequest | SessionSetupResponse | SessionExchangeKey)

#: The reference's default message lifetime: expirationTime is the sender's clock plus 12 hours.
EXPIRATION_S = 12 * 3600
_NO_CREDENTIAL = b"\0\0\0\0"


@dataclass(frozen=True, slots=True)
class Message:
    """A native message. ``wire`` is set by the decoder only; a message changed with ``replace`` (other than
    its envelope or credential) must also drop it (``wire=b""``), or signatures would cover stale bytes."""

    envelope: Envelope
    header: Header
    body: Body
    credential: Credential | None = None
    digest: RequestDigest | None = None  # the request digest an answer with RD starts with
    wire: bytes = field(default=b"", compare=False, repr=False)  # header + body as received

    @property
    def is_request(self) -> bool:
        return self.header.code == 0

    def header_and_body(self) -> bytes:
        """What signatures and request digests cover: the bytes received, else this message's encoding."""
        return self.wire or encode_header_body(self)


_RD = int(OpFlag.RD)
_CP_EC = int(EnvelopeFlag.CP | EnvelopeFlag.EC)


def _needs_digest(header: Header) -> bool:
    return header.code != 0 and bool(header.op_flags & _RD)


def encode_header_body(msg: Message) -> bytes:
    if (msg.digest is not None) != _needs_digest(msg.header):
        raise ValueError("an answer carries a request digest exactly when its RD flag is set")
    body = bytearray()
    if msg.digest is not None:
        msg.digest.write(body)
    msg.body.write(body)
    return msg.header.encode(len(body)) + bytes(body)


def encode_message(msg: Message) -> bytes:
    rest = encode_header_body(msg) + (msg.credential.encode() if msg.credential else _NO_CREDENTIAL)
    return msg.envelope.encode(len(rest)) + rest


BodyReader = Callable[[Reader], object]


def body_reader(header: Header) -> BodyReader:
    op, code = header.opcode, header.code
    if code == 0:
        return REQUEST_READERS.get(op) or AUTH_REQUEST_READERS.get(op) or read_raw
    if code == ResponseCode.SUCCESS:
        return SUCCESS_READERS.get(op) or AUTH_SUCCESS_READERS.get(op) or read_raw
    if code == ResponseCode.AUTHENTICATION_NEEDED:
        return read_challenge
    reader = CODE_READERS.get(code)
    if reader is not None:
        return reader
    return read_error if code in ERROR_CODES else read_raw


def decode_message(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Message:
    """One whole message (envelope included; a datagram or a frame from ``StreamFramer``)."""
    try:
        return _decode(memoryview(data), limits)
    except (struct.error, IndexError, ValueError, OverflowError) as exc:  # a safety net; readers raise DecodeError
        raise DecodeError(f"undecodable message: {type(exc).__name__}") from None


def _decode(data: memoryview, limits: Limits) -> Message:
    envelope, length = decode_envelope(data)
    if length > limits.max_message:
        raise FrameTooLarge(f"message of {length} bytes exceeds the limit of {limits.max_message}")
    if len(data) != ENVELOPE_SIZE + length:
        raise DecodeError(f"envelope announces {length} bytes, {len(data) - ENVELOPE_SIZE} present")
    if envelope.flags & _CP_EC:
        raise DecodeError("compressed or encrypted messages are not supported")
    if length < HEADER_SIZE:
        raise DecodeError(f"a message of {length} bytes cannot hold its {HEADER_SIZE}-byte header")
    header, body_length = decode_header(data, ENVELOPE_SIZE)
    body_end = ENVELOPE_SIZE + HEADER_SIZE + body_length
    if body_length > length - HEADER_SIZE:
        raise DecodeError(f"body of {body_length} bytes does not fit in a message of {length}")
    r = Reader(data, ENVELOPE_SIZE + HEADER_SIZE, body_end, limits)
    digest = read_request_digest(r) if _needs_digest(header) else None
    body = body_reader(header)(r)
    r.done("body")
    cr = Reader(data, body_end, len(data), limits)
    # The reference reads a credential section only when there is room for one; so do we.
    credential = read_credential(cr) if cr.remaining else None
    return Message(envelope, header, body, credential, digest, bytes(data[ENVELOPE_SIZE:body_end]))  # type: ignore[arg-type]


def frame_length(buf: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS, pos: int = 0) -> int | None:
    """The size of the message at ``buf[pos:]`` (envelope included), or None until its envelope is in."""
    if len(buf) - pos < ENVELOPE_SIZE:
        return None
    (length,) = struct.unpack_from(">I", buf, pos + 16)
    if length > limits.max_message:
        raise FrameTooLarge(f"message of {length} bytes exceeds the limit of {limits.max_message}")
    return int(ENVELOPE_SIZE + length)


class StreamFramer(FrameDecoder):
    """Splits a TCP byte stream into whole messages' bytes (envelope included); decode each with
    ``decode_message``. A message may announce at most ``limits.max_message`` bytes."""

    __slots__ = ("limits",)

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits.max_message, head=ENVELOPE_SIZE, length_at=16, keep_head=True, min_length=0)
        self.limits = limits
