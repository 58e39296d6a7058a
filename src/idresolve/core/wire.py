"""The msgpack wire format of the binary protocol: the codec of ``core.messages`` and stream framing
with hard limits.

Framing (TCP): each message is a 4-byte big-endian length, then that many bytes of msgpack. UDP carries
one msgpack message per datagram, with no length prefix. See docs/protocol.md for the full description.

Messages are msgpack arrays:
    request:  [0, request_id, opcode, flags, handle, body]
    response: [1, request_id, opcode, code, handle, body]
``body`` is a map with short string keys (``request_body``/``response_body``); unknown keys are ignored,
unknown opcodes and codes decode as plain ints.

The decoder rule: for any bytes at all, ``FrameDecoder.feed`` returns complete frames, keeps a bounded
partial frame waiting for more, or raises ``DecodeError``/``FrameTooLarge``. ``decode_message`` returns a
message or raises ``DecodeError``. Nothing else, ever.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Any

import msgpack

from .codes import ResponseCode
from .errors import DecodeError, FrameTooLarge, InvalidValue
from .events import PlainResolution
from .messages import Hop, Message, Request, Response
from .values import HandleValue, checked_decoded

KIND_REQUEST, KIND_RESPONSE = 0, 1
MAX_FRAME_BYTES = 8 * 1024 * 1024  # a batch of 2,000 identifiers fits; any one handle <= 256 KiB
UDP_ANSWER_LIMIT = 512
MAX_HANDLE_BYTES = 1024
MAX_ITEMS = 10_000

_LEN = struct.Struct(">I")


def _hop_list(h: Hop) -> list[Any]:
    return [h.node, h.address, h.code, h.elapsed_us, h.cached]


def _hop(raw: Any) -> Hop:
    if not isinstance(raw, tuple) or len(raw) != 5:
        raise DecodeError("a trace hop is [node, address, code, elapsed_us, cached]")
    node, address, code, elapsed_us, cached = raw
    return Hop(_str(node, "hop node"), _str(address, "hop address"), _int(code, "hop code"),
               _int(elapsed_us, "hop time"), bool(cached))


def request_body(req: Request) -> dict[str, Any]:
    """The body map of an encoded request: only the fields that differ from their defaults."""
    b: dict[str, Any] = {}
    if req.version:
        b["ver"] = req.version
    if req.indexes:
        b["i"] = list(req.indexes)
    if req.types:
        b["t"] = list(req.types)
    if req.values:
        b["v"] = HandleValue.to_lists(req.values)
    if req.auth is not None:
        b["a"] = [req.auth[0], req.auth[1]]
    if req.items:
        b["b"] = [[h, HandleValue.to_lists(vals)] for h, vals in req.items]
    if req.page is not None:
        b["p"] = list(req.page)
    if req.hops:
        b["h"] = req.hops
    return b


def response_body(resp: Response) -> dict[str, Any]:
    """The body map of an encoded response."""
    b: dict[str, Any] = {}
    if resp.values:
        b["v"] = HandleValue.to_lists(resp.values)
    if resp.message:
        b["m"] = resp.message
    if resp.node:
        b["n"] = resp.node
    if resp.trace:
        b["tr"] = [_hop_list(h) for h in resp.trace]
    if resp.results:  # tuples pack as arrays: a batch's 2,000 results go as they are
        b["r"] = resp.results
    if resp.handles:
        b["l"] = list(resp.handles)
    if resp.total is not None:
        b["c"] = resp.total
    if resp.truncated:
        b["x"] = True
    return b


class Codec:
    """Encodes messages with one reused ``msgpack.Packer``. Not thread-safe: one per event loop/thread."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, msg: Message) -> bytes:
        """The msgpack payload of ``msg`` (no length prefix)."""
        if isinstance(msg, Request):
            return self._packer.pack([KIND_REQUEST, msg.request_id, msg.opcode, msg.flags, msg.handle, request_body(msg)])
        return self._packer.pack([KIND_RESPONSE, msg.request_id, msg.opcode, msg.code, msg.handle, response_body(msg)])

    def frame(self, msg: Message) -> bytes:
        payload = self.encode(msg)
        return _LEN.pack(len(payload)) + payload

    def frame_request(self, req: Request, request_id: int) -> bytes:
        """``frame(replace(req, request_id=request_id))``, without building another Request."""
        payload = self._packer.pack([KIND_REQUEST, request_id, req.opcode, req.flags, req.handle, request_body(req)])
        return _LEN.pack(len(payload)) + payload

    def response_tail(self, resp: Response) -> bytes:
        """Everything of an encoded response after its request id, so a cached answer can be re-sent to
        another request id cheaply with ``frame_with_tail``."""
        p = self._packer.pack
        return p(resp.opcode) + p(resp.code) + p(resp.handle) + p(response_body(resp))

    def frame_with_tail(self, request_id: int, tail: bytes) -> bytes:
        payload = b"\x96\x01" + self._packer.pack(request_id) + tail
        return _LEN.pack(len(payload)) + payload

    def payload_with_tail(self, request_id: int, tail: bytes) -> bytes:
        return b"\x96\x01" + self._packer.pack(request_id) + tail


def _values(raw: Any, remember: bool = True, stamp: int | None = None) -> tuple[HandleValue, ...]:
    """``remember``: keep decoded values in the shared memo (answers repeat values; a batch does not).
    ``stamp`` (not remembered values only): their timestamp instead of the one sent."""
    if not isinstance(raw, tuple) or len(raw) > MAX_ITEMS:
        raise DecodeError("values must be a list")
    # each checked as decoded: the node needn't again
    if stamp is not None and not remember:
        return checked_decoded(HandleValue.from_lists(raw, False, stamp))
    return checked_decoded(HandleValue.from_lists(raw, remember))


def _str(raw: Any, what: str, limit: int = MAX_HANDLE_BYTES) -> str:
    if not isinstance(raw, str) or len(raw) > limit:
        raise DecodeError(f"{what} must be a string of at most {limit} characters")
    return raw


def _int(raw: Any, what: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or not -(2**63) <= raw < 2**64:
        raise DecodeError(f"{what} must be an integer")
    return raw


_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


def _int_at(p: bytes, i: int) -> tuple[int, int] | None:
    """The msgpack integer at ``p[i]`` and the offset after it, or None when there is none."""
    if len(p) <= i:
        return None
    c = p[i]
    if c < 0x80:
        return c, i + 1
    if c >= 0xE0:
        return c - 0x100, i + 1
    width = _UINT_WIDTH.get(c)
    if width is None or len(p) < i + 1 + width:
        return None
    return int.from_bytes(p[i + 1:i + 1 + width], "big", signed=c >= 0xD0), i + 1 + width


def answer_head(payload: bytes) -> tuple[int, int]:
    """(request id, response code) of an encoded response, without decoding its body. ValueError when it
    is not one."""
    if len(payload) < 5 or payload[0] != 0x96 or payload[1] != 0x01:
        raise ValueError("not a response")
    rid = _int_at(payload, 2)
    opcode = _int_at(payload, rid[1]) if rid is not None else None
    code = _int_at(payload, opcode[1]) if opcode is not None else None
    if rid is None or code is None:
        raise ValueError("not a response")
    return rid[0], code[0]


def peek_request(payload: bytes) -> tuple[int, int] | None:
    """(request id, opcode) of an encoded request without decoding it, or None when the payload does not
    start like one. Used to refuse a request cheaply (load shedding)."""
    if payload[:2] != b"\x96\x00":
        return None
    head = _int_at(payload, 2)
    if head is None or not 0 <= head[0] < 2**32:
        return None
    rest = payload[head[1]:]
    if not rest:
        return None
    c = rest[0]
    if c < 0x80:
        return head[0], c
    width = {0xCC: 1, 0xCD: 2}.get(c)
    if width is None or len(rest) < 1 + width:
        return None
    return head[0], int.from_bytes(rest[1:1 + width], "big")


_RESOLUTION_NO_FLAGS = b"\x01\x00"  # opcode RESOLUTION (1), flags 0: as Codec writes them


def plain_resolution(payload: bytes) -> PlainResolution | None:
    """``(request id, handle)`` (a ``core.events.PlainResolution``) when ``payload`` is exactly a plain
    resolution request as ``Codec`` writes it (``[0, rid, RESOLUTION, 0, handle, {}]``, request id below 2**32), else None. For such a payload
    ``decode_message`` gives ``Request(rid, OpCode.RESOLUTION, handle)``; anything else (another shape or
    encoding, invalid UTF-8, a handle too long) is left to it. Lets a server answer its hottest request
    from a cache without decoding it."""
    head = _int_at(payload, 2) if payload[:2] == b"\x96\x00" else None
    if head is None or not 0 <= head[0] < 2**32:
        return None
    i = head[1]
    if payload[i:i + 2] != _RESOLUTION_NO_FLAGS or len(payload) < i + 4:
        return None
    c = payload[i + 2]
    if 0xA0 <= c <= 0xBF:
        n, start = c & 0x1F, i + 3
    elif c == 0xD9:
        n, start = payload[i + 3], i + 4
    elif c == 0xDA and len(payload) >= i + 5:
        n, start = int.from_bytes(payload[i + 3:i + 5], "big"), i + 5
    else:
        return None
    end = start + n
    if len(payload) != end + 1 or payload[end] != 0x80:
        return None
    try:
        handle = payload[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return (head[0], handle) if len(handle) <= MAX_HANDLE_BYTES else None


class ResponseMemo:
    """Decoded referrals by their bytes after the request id, so a referral seen before (the same one, again
    and again, to a recursive node) is not decoded and validated again. Bounded (oldest dropped) and only
    for small messages; the result is exactly what decoding would give. A client owns one and passes it to
    ``decode_message``. Other answers are not kept. One with values names its identifier, and the recursive
    node caches it: in a simulated peak hour 6 of 136,477 were seen again. A not-found answer repeats while
    nothing caches it (44 % of them did), but it holds no values and decodes cheaply: a memo of every answer
    cost the run 1.5 % more instructions than none."""

    MAX_ENTRIES = 4096
    MAX_BYTES = 4096

    def __init__(self) -> None:
        # An OrderedDict, for the O(1) ``popitem(last=False)``: a plain dict keeps the slots of deleted
        # entries until it is resized, and ``next(iter(d))`` walks over them (2.1 against 0.3 us a put once full).
        self.entries: OrderedDict[bytes, tuple[Any, ...]] = OrderedDict()

    def get(self, key: bytes) -> tuple[Any, ...] | None:
        return self.entries.get(key)

    def put(self, key: bytes, fields: tuple[Any, ...]) -> None:
        entries = self.entries
        if len(entries) >= self.MAX_ENTRIES:
            entries.popitem(last=False)
        entries[key] = fields


_REFERRAL_CODE = b"\xcd" + int(ResponseCode.PREFIX_REFERRAL).to_bytes(2, "big")  # msgpack's uint16 of 303
# The bytes of the msgpack integer that starts with each byte (0: none starts so): fixints, u/int 8 to 64.
_INT_BYTES = bytes([1] * 0x80 + [0] * 0x4C + [2, 3, 5, 9] * 2 + [0] * 0x0C + [1] * 0x20)


def decode_message(payload: bytes, memo: ResponseMemo | None = None, stamp: int | None = None) -> Message:
    """Decode one msgpack payload into a Request or Response. Raises ``DecodeError`` only.

    ``stamp``: the server's timestamp for the values of a batch's items (a batch creates records, and the
    server stamps every value it stores: with its stamp at hand the node keeps the decoded values as they
    are instead of copying each one). Other values keep the timestamps sent (a registry sync carries the
    record's own)."""
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"message of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    key = None
    if memo is not None and 2 < len(payload) <= ResponseMemo.MAX_BYTES and payload[:2] == b"\x96\x01":
        # A referral: after the request id, the opcode as one byte and the code 303 as Codec writes it.
        i = 2 + _INT_BYTES[payload[2]]
        if i > 2 and payload[i + 1:i + 4] == _REFERRAL_CODE and payload[i] < 0x80:
            head = _int_at(payload, 2)
            if head is not None and -(2**63) <= head[0] < 2**64:
                key = payload[i:]
                hit = memo.get(key)
                if hit is not None:
                    return Response(head[0], *hit)
    msg = _decode_message(payload, stamp)
    if memo is not None and key is not None and isinstance(msg, Response):
        memo.put(key, (msg.opcode, msg.code, msg.handle, msg.values, msg.message, msg.node, msg.trace, msg.results,
                       msg.handles, msg.total, msg.truncated))
    return msg


def _decode_message(payload: bytes, stamp: int | None = None) -> Message:
    try:
        # Arrays as tuples: a value's compact form is then its own memo key (``HandleValue.from_lists``).
        raw = msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=True,
                              max_array_len=MAX_ITEMS * 2, max_map_len=64, max_str_len=MAX_FRAME_BYTES,
                              max_bin_len=MAX_FRAME_BYTES)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise DecodeError(f"undecodable msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, tuple) or len(raw) != 6:
        raise DecodeError("a message is an array of 6 elements")
    kind, request_id, opcode, fourth, handle, body = raw
    # msgpack's integers are all in _int's range and never bools (its booleans decode as bool): exact ints
    # are sound as they are; anything else _int names.
    if not (type(request_id) is int and type(opcode) is int and type(fourth) is int):
        request_id, opcode, fourth = _int(request_id, "request id"), _int(opcode, "opcode"), _int(fourth, "flags/code")
    handle = _str(handle, "handle")
    if not isinstance(body, dict):
        raise DecodeError("message body must be a map")
    try:
        if kind == KIND_REQUEST:
            if not body:  # the common resolution request: every field takes its default
                return Request(request_id, opcode, handle, fourth)
            return _decode_request(request_id, opcode, fourth, handle, body, stamp)
        if kind == KIND_RESPONSE:
            return _decode_response(request_id, opcode, fourth, handle, body)
    except InvalidValue as exc:
        raise DecodeError(f"malformed value: {exc.message}") from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"malformed message body: {type(exc).__name__}") from None
    raise DecodeError(f"unknown message kind {kind!r}")


def _decode_request(request_id: int, opcode: int, flags: int, handle: str, body: dict[str, Any],
                    stamp: int | None = None) -> Request:
    auth = None
    if "a" in body:
        ident, secret = body["a"]
        if not isinstance(secret, bytes | str):
            raise DecodeError("auth secret must be bytes")
        auth = (_str(ident, "identity"), secret if isinstance(secret, bytes) else secret.encode())
    items: tuple[tuple[str, tuple[HandleValue, ...]], ...] = ()
    if "b" in body:
        if not isinstance(body["b"], tuple) or len(body["b"]) > MAX_ITEMS:
            raise DecodeError("batch items must be a list")
        items = tuple((_str(h, "handle"), _values(v, False, stamp)) for h, v in body["b"])
    page = None
    if "p" in body:
        p, s = body["p"]
        page = (_int(p, "page"), _int(s, "page size"))
    indexes = tuple(_int(i, "index") for i in body.get("i", ()))
    types = tuple(_str(t, "type", 255) for t in body.get("t", ()))
    if len(indexes) > MAX_ITEMS or len(types) > MAX_ITEMS:
        raise DecodeError("too many filters")
    return Request(request_id, opcode, handle, flags, indexes, types, _values(body.get("v", ())), auth, items,
                   page, _int(body.get("h", 0), "hops"), _int(body.get("ver", 0), "version"))


def _decode_response(request_id: int, opcode: int, code: int, handle: str, body: dict[str, Any]) -> Response:
    if len(body) == 1 and "v" in body:  # the usual answer, values and nothing else: no empty fields to read
        return Response(request_id, opcode, code, handle, _values(body["v"]))
    total = body.get("c")
    return Response(
        request_id, opcode, code, handle,
        values=_values(body.get("v", ())),
        message=_str(body.get("m", ""), "message", 4096),
        node=_str(body.get("n", ""), "node"),
        trace=tuple(_hop(h) for h in body.get("tr", ())),
        results=tuple((_str(h, "handle"), _int(c, "code"), _str(m, "message", 4096)) for h, c, m in body.get("r", ())),
        handles=tuple(_str(h, "handle") for h in body.get("l", ())),
        total=None if total is None else _int(total, "total"),
        truncated=bool(body.get("x", False)),
    )


class FrameDecoder:
    """Splits a TCP byte stream into frames. Each frame starts with a header of ``head`` bytes holding its
    length (u32, big-endian) at ``length_at``: msgpack's 4-byte prefix by default (``feed`` gives the
    payloads after it), or a wire format's own envelope (``keep_head``: whole messages, header included).
    Bounded: a frame may not announce more than ``max_frame`` bytes, nor fewer than ``min_length``.

    A frame longer than ``GATHER_BYTES`` (a batch of 2,000 records is about 2 MB) arrives in many reads:
    its pieces are kept as they come and joined once it is complete, instead of growing one buffer on
    every read and copying the frame at each resize (a 1.8 MB frame read in 64 KiB pieces: 3.0 ms so,
    0.06 ms gathered; docs/benchmarks/scale-bulk.md)."""

    __slots__ = ("_buf", "max_frame", "_head", "_length_at", "_keep_head", "_min_length", "_parts", "_have", "_need")

    GATHER_BYTES = 64 * 1024

    def __init__(self, max_frame: int = MAX_FRAME_BYTES, *, head: int = 4, length_at: int = 0,
                 keep_head: bool = False, min_length: int = 1) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame
        self._head, self._length_at, self._keep_head, self._min_length = head, length_at, keep_head, min_length
        self._parts: list[bytes] = []  # the pieces of a long frame (what ``feed`` will return of it)
        self._have = 0  # the bytes of the stream they took (its header included)
        self._need = 0  # the bytes of that frame still to come (0: not gathering)

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._have

    def feed(self, data: bytes) -> list[bytes]:
        if type(data) is not bytes:  # a bytearray or memoryview: frames are bytes, whatever the read gave
            data = bytes(data)
        if self._need:  # the rest of a long frame
            need = self._need
            if len(data) < need:
                self._parts.append(data)
                self._have += len(data)
                self._need = need - len(data)
                return []
            self._parts.append(data if len(data) == need else data[:need])
            frame = b"".join(self._parts)  # the one copy of it
            self._parts, self._have, self._need = [], 0, 0
            return [frame, *self.feed(data[need:])] if len(data) > need else [frame]
        buf = self._buf
        if not buf and len(data) >= self._head:  # the usual read: exactly one whole frame, nothing kept
            (length,) = _LEN.unpack_from(data, self._length_at)
            if len(data) == self._head + length and self._min_length <= length <= self.max_frame:
                return [data if self._keep_head else data[self._head:]]
        if buf:
            buf += data
            src: bytes | bytearray = buf
        else:
            src = data
        out: list[bytes] = []
        pos = 0
        n = len(src)
        head, at, skip = self._head, self._length_at, 0 if self._keep_head else self._head
        while n - pos >= head:
            (length,) = _LEN.unpack_from(src, pos + at)
            if length > self.max_frame:
                buf.clear()
                raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
            if length < self._min_length:
                buf.clear()
                raise DecodeError("empty frame")
            end = pos + head + length
            if end > n:
                if end - pos > self.GATHER_BYTES:  # a long frame: keep its pieces from here, join them once
                    self._parts = [bytes(src[pos + skip:])]
                    self._have, self._need = n - pos, end - n
                    buf.clear()
                    return out
                break
            out.append(bytes(src[pos + skip:end]) if src is buf else src[pos + skip:end])
            pos = end
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < n:
            buf += src[pos:]
        return out

