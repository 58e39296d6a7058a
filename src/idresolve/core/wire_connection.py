"""Sans-I/O connections of the msgpack wire format (in the manner of h11): bytes in, events out, bytes to
send. No sockets, no clock: the asyncio shells (``net.server``, ``net.client``, ``net.blocking``, the
benchmark's load generator) and the virtual-time simulator only move what these give them.

- ``ServerConnection``: one TCP stream, server side (``core.events.StreamConnection``): frame bounds, the
  fast path for plain resolutions, protocol-error answers to garbage, the limit of awaited answers in
  flight, cheap SERVER_TOO_BUSY answers for load shedding.
- ``DatagramEndpoint``: the UDP side: one message per datagram; answers over 512 bytes go out truncated
  (no values, the truncated flag set) so that the client asks again over TCP; answers are never answered.
- ``ClientConnection``: one TCP stream, client side: request ids, matching answers to requests (a token
  per request, whatever the shell needs: a future, a send time), frame bounds, an optional limit of
  requests in flight, answers read whole or only as far as their id and code (load generators).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from .answers import Answer, EncodedAnswers, answer_response
from .codes import OpCode, ResponseCode
from .errors import DecodeError
from .events import Close, Event, Reply
from .messages import Request, Response, error_response
from .wire import (
    MAX_FRAME_BYTES,
    UDP_ANSWER_LIMIT,
    Codec,
    FrameDecoder,
    ResponseMemo,
    answer_head,
    decode_message,
    peek_request,
    plain_resolution,
)

DEFAULT_MAX_INFLIGHT = 512
_KNOWN_OPCODES = frozenset(int(op) for op in OpCode)
T = TypeVar("T")


class _Encoder:
    """Encoding shared by the server sides: answers from cached Answers, busy answers by opcode."""

    def __init__(self, encoded: EncodedAnswers | None, codec: Codec | None) -> None:
        self.codec = codec or Codec()
        self.encoded = encoded if encoded is not None else EncodedAnswers()
        self._busy: dict[int, bytes] = {}  # encoded "server too busy" tails of the known opcodes

    def cached_tail(self, handle: str, answer: Answer) -> bytes:
        """The encoded answer to a plain resolution after its request id, made once per Answer."""
        hit = self.encoded.entries.get(handle)
        if hit is not None and hit[0] is answer:
            return hit[1]
        tail = self.codec.response_tail(answer_response(0, handle, answer))
        self.encoded.put(handle, answer, tail)
        return tail

    def busy_payload(self, request_id: int, opcode: int) -> bytes:
        tail = self._busy.get(opcode)
        if tail is None:
            tail = self.codec.response_tail(error_response(0, opcode, ResponseCode.SERVER_TOO_BUSY, "server too busy"))
            if opcode in _KNOWN_OPCODES:
                self._busy[opcode] = tail
        return self.codec.payload_with_tail(request_id, tail)

    @staticmethod
    def decode(payload: bytes, stamp: int | None = None) -> Request | Response | DecodeError:
        """What a payload that is not a plain resolution is: a request, an answer (servers are not sent
        answers), or the ``DecodeError`` of garbage. ``stamp``: see ``wire.decode_message``."""
        try:
            return decode_message(payload, None, stamp)
        except DecodeError as exc:
            return exc


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class ServerConnection:
    """One msgpack TCP connection, server side. See ``core.events`` for how a shell uses it."""

    __slots__ = ("_enc", "_entries", "_decoder", "_waiting", "_fatal", "inflight", "max_inflight", "closed")

    def __init__(self, encoded: EncodedAnswers | None = None, *, max_frame: int = MAX_FRAME_BYTES,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, codec: Codec | None = None) -> None:
        self._enc = _Encoder(encoded, codec)
        self._entries = self._enc.encoded.entries  # read on the hot path
        self._decoder = FrameDecoder(max_frame)
        self._waiting: deque[bytes] = deque()
        self._fatal: bytes | None = None
        self.inflight = 0
        self.max_inflight = max_inflight
        self.closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def buffered(self) -> int:
        """Bytes of a frame received in part (bounded by the frame limit)."""
        return self._decoder.buffered

    def receive_data(self, data: bytes) -> bool:
        if self.closed or self._fatal is not None:
            return False
        try:
            payloads = self._decoder.feed(data)
        except DecodeError as exc:  # a bad length: the stream cannot be resynchronised
            self._fatal = self.send(error_response(0, 0, ResponseCode.PROTOCOL_ERROR, exc.message))
            return False
        self._waiting.extend(payloads)
        return bool(payloads)

    def next_event(self, stamp: int | None = None) -> Event | None:
        """The next request (or what to send instead of one). ``stamp``: the server's timestamp now, which
        a batch's values are decoded with (``wire.decode_message``); the node stamps them all the same."""
        if self._waiting:
            payload = self._waiting.popleft()
            plain = plain_resolution(payload)  # the hot request: not decoded
            if plain is not None:
                return plain
            event = self._enc.decode(payload, stamp)
            if isinstance(event, DecodeError):
                return Reply(self.send(error_response(0, 0, ResponseCode.PROTOCOL_ERROR, event.message)))
            if isinstance(event, Response):
                return Reply(self.send(error_response(event.request_id, event.opcode, ResponseCode.PROTOCOL_ERROR,
                                                      "expected a request")))
            return event
        if self._fatal is not None:
            data, self._fatal = self._fatal, None
            self.closed = True
            return Close(data)
        return None

    def busy_answer_for_next(self) -> bytes | None:
        if not self._waiting:
            return None
        head = peek_request(self._waiting[0])
        if head is None:
            return None
        self._waiting.popleft()
        return _frame(self._enc.busy_payload(*head))

    def answer_cached(self, request_id: int, handle: str, answer: Answer) -> bytes:
        hit = self._entries.get(handle)
        tail = hit[1] if hit is not None and hit[0] is answer else self._enc.cached_tail(handle, answer)
        # The request id as a fixed-width uint32 (0xce: valid msgpack for any id below 2**32, which every
        # plain resolution has), so the frame's length is known from the tail alone.
        return (len(tail) + 7).to_bytes(4, "big") + b"\x96\x01\xce" + request_id.to_bytes(4, "big") + tail

    def send(self, response: Response) -> bytes:
        return self._enc.codec.frame(response)

    def refuse(self, request_id: int, opcode: int, message: str) -> bytes:
        return self.send(error_response(request_id, opcode, ResponseCode.SERVER_TOO_BUSY, message))

    def start(self) -> bool:
        if self.inflight >= self.max_inflight:
            return False
        self.inflight += 1
        return True

    def finish(self, response: Response) -> bytes:
        self.inflight -= 1
        return self.send(response)


class DatagramEndpoint:
    """The msgpack UDP side of a listener (stateless: one message per datagram)."""

    __slots__ = ("_enc", "limit")

    def __init__(self, encoded: EncodedAnswers | None = None, *, limit: int = UDP_ANSWER_LIMIT,
                 codec: Codec | None = None) -> None:
        self._enc = _Encoder(encoded, codec)
        self.limit = limit

    def receive(self, data: bytes, peer: tuple[str, int]) -> list[Event]:
        plain = plain_resolution(data)
        if plain is not None:
            return [plain]
        event = self._enc.decode(data)
        if isinstance(event, Response):
            return []  # never answer an answer (reflection loops)
        if isinstance(event, DecodeError):
            return [Reply(self._enc.codec.encode(error_response(0, 0, ResponseCode.PROTOCOL_ERROR, event.message)))]
        return [event]

    def answer_cached(self, request_id: int, handle: str, answer: Answer, peer: tuple[str, int]) -> list[bytes]:
        payload = b"\x96\x01\xce" + request_id.to_bytes(4, "big") + self._enc.cached_tail(handle, answer)
        if len(payload) > self.limit:
            return self.send(answer_response(request_id, handle, answer), peer)
        return [payload]

    def send(self, response: Response, peer: tuple[str, int]) -> list[bytes]:
        payload = self._enc.codec.encode(response)
        if len(payload) > self.limit:
            payload = self._enc.codec.encode(Response(response.request_id, response.opcode, response.code,
                                                      response.handle, truncated=True))
        return [payload]


class ClientConnection(Generic[T]):
    """One msgpack TCP connection, client side. ``send(request, token)`` gives the bytes to write (with a
    request id of its own); ``receive_data`` gives ``(token, response)`` for each answer to a request still
    pending. Answers to unknown ids (given up with ``forget``, or never asked) are counted in ``stray``.
    ``DecodeError`` from ``receive_data``/``receive_heads`` means the stream is broken: close it."""

    __slots__ = ("_codec", "_decoder", "_memo", "_rid", "pending", "max_pending", "stray", "garbage")

    def __init__(self, *, max_frame: int = MAX_FRAME_BYTES, max_pending: int | None = None,
                 memo: ResponseMemo | None = None, codec: Codec | None = None) -> None:
        self._codec = codec or Codec()
        self._decoder = FrameDecoder(max_frame)
        self._memo = memo
        self._rid = 0
        self.pending: dict[int, T] = {}  # request id -> token, in send order
        self.max_pending = max_pending
        self.stray = 0  # answers to no pending request
        self.garbage = 0  # answers that did not decode

    def next_id(self, token: T) -> int:
        """A fresh request id for a request the shell encodes itself, now pending with ``token``.
        Raises ``OverflowError`` beyond ``max_pending``."""
        if self.max_pending is not None and len(self.pending) >= self.max_pending:
            raise OverflowError(f"more than {self.max_pending} requests in flight on one connection")
        rid = self._rid = self._rid % 0xFFFFFFFF + 1
        while rid in self.pending:  # only after 2**32 requests with one still pending
            rid = self._rid = self._rid % 0xFFFFFFFF + 1
        self.pending[rid] = token
        return rid

    def send(self, request: Request, token: T) -> tuple[int, bytes]:
        """(request id, bytes to write) for ``request``, which is now pending with ``token``."""
        rid = self.next_id(token)
        return rid, self._codec.frame_request(request, rid)

    def forget(self, request_id: int) -> T | None:
        """Give up on a request (timed out): its answer, if it comes, is stray."""
        return self.pending.pop(request_id, None)

    def receive_data(self, data: bytes) -> list[tuple[T, Response]]:
        """Each answer in ``data`` to a pending request, decoded, with its token."""
        out: list[tuple[T, Response]] = []
        pending = self.pending
        for payload in self._decoder.feed(data):
            try:
                msg = decode_message(payload, self._memo)
            except DecodeError:
                self.garbage += 1  # its request will time out
                continue
            if not isinstance(msg, Response):
                self.garbage += 1
                continue
            token = pending.pop(msg.request_id, _MISSING)
            if token is _MISSING:
                self.stray += 1
                continue
            out.append((token, msg))  # type: ignore[arg-type]
        return out

    def receive_heads(self, data: bytes) -> list[tuple[T, int]]:
        """Each answer in ``data`` to a pending request as ``(token, response code)``, without decoding its
        body (load generators)."""
        out: list[tuple[T, int]] = []
        pending = self.pending
        for payload in self._decoder.feed(data):
            try:
                rid, code = answer_head(payload)
            except (ValueError, IndexError):
                self.garbage += 1
                continue
            token = pending.pop(rid, _MISSING)
            if token is _MISSING:
                self.stray += 1
                continue
            out.append((token, code))  # type: ignore[arg-type]
        return out


_MISSING: object = object()
