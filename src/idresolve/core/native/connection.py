"""Sans-I/O native server connections, with the interface of ``core.events``: ``ServerConnection`` for one
TCP stream (``StreamConnection``), ``DatagramEndpoint`` for a UDP listener. Both hand their whole
messages to one ``responder.Responder`` per listener, which holds the ``ListenerState`` (challenges,
sessions, key, site) that every connection of the listener shares.

TCP: ``StreamFramer`` splits the stream (a message may announce at most ``Limits.max_message``; beyond,
the stream cannot be resynchronised: a PROTOCOL_ERROR answer, then ``Close``). The context of the request
an event stands for is kept until its answer is encoded: the current one (the shell answers it at once,
or ``start``s it), the awaited ones by request id.

UDP: ``Reassembler`` joins split requests (bounded; per peer and request id); answers longer than one
datagram are split as the reference server splits them (never truncated). Contexts wait by (peer,
request id), at most ``MAX_UDP_WAITING`` (the oldest is forgotten: its answer then goes out without the
request's shape, still with its request id).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from ..answers import Answer, EncodedAnswers
from ..codes import ResponseCode
from ..errors import DecodeError
from ..events import Close, Event, Reply
from ..messages import Response, error_response
from .bodies import ErrorBody
from .convert import answer_flags
from .header import Envelope, Header
from .message import EXPIRATION_S, Message, StreamFramer, encode_message
from .primitives import DEFAULT_LIMITS, Limits
from .responder import Ctx, Responder
from .state import ListenerState
from .udp import Reassembler, split_message

DEFAULT_MAX_INFLIGHT = 512
MAX_UDP_WAITING = 4096


def responder(state: ListenerState, encoded: EncodedAnswers | None = None,
              limits: Limits = DEFAULT_LIMITS) -> Responder:
    """The responder of one listener: give the same one to its TCP connections and its UDP endpoint."""
    return Responder(state, encoded, limits)


class ServerConnection:
    """One native TCP connection, server side. See ``core.events`` for how a shell uses it."""

    __slots__ = ("_r", "_framer", "_waiting", "_fatal", "_current", "_awaited", "inflight", "max_inflight", "closed")

    def __init__(self, r: Responder, *, max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self._r = r
        self._framer = StreamFramer(r.limits)
        self._waiting: deque[bytes] = deque()
        self._fatal: bytes | None = None
        self._current: Ctx | None = None  # the context of the event just given
        self._awaited: dict[int, Ctx] = {}  # request id -> context, of answers in flight
        self.inflight = 0
        self.max_inflight = max_inflight
        self.closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def buffered(self) -> int:
        return self._framer.buffered

    def receive_data(self, data: bytes) -> bool:
        if self.closed or self._fatal is not None:
            return False
        try:
            frames = self._framer.feed(data)
        except DecodeError as exc:  # a length beyond the limit: the stream cannot be resynchronised
            self._fatal = _stream_error(self._r, exc.message)
            return False
        self._waiting.extend(frames)
        return bool(frames)

    def next_event(self, stamp: int | None = None) -> Event | None:
        """``stamp`` is not used: the Handle protocol has no batch of new records to decode stamped."""
        while self._waiting:
            got = self._r.event(self._waiting.popleft(), stream=True)
            if type(got) is tuple:
                event, self._current = got
                return event
            if got:
                return got[0]  # a stream reply is one message
        if self._fatal is not None:
            data, self._fatal = self._fatal, None
            self.closed = True
            return Close(data)
        return None

    def busy_answer_for_next(self) -> bytes | None:
        if not self._waiting:
            return None
        busy = self._r.busy(self._waiting[0])
        if busy is not None:
            self._waiting.popleft()
        return busy

    def _take(self, request_id: int) -> Ctx | None:
        ctx = self._current
        if ctx is not None and _request_id(ctx) == request_id:
            self._current = None
            return ctx
        return self._awaited.pop(request_id, None)

    def answer_cached(self, request_id: int, handle: str, answer: Answer) -> bytes:
        return self._r.cached(self._take(request_id), request_id, handle, answer)

    def send(self, response: Response) -> bytes:
        return self._r.encode(self._take(response.request_id), response)

    def refuse(self, request_id: int, opcode: int, message: str) -> bytes:
        return self.send(error_response(request_id, opcode, ResponseCode.SERVER_TOO_BUSY, message))

    def start(self) -> bool:
        if self.inflight >= self.max_inflight:
            return False
        self.inflight += 1
        ctx, self._current = self._current, None
        if ctx is not None:
            self._awaited[_request_id(ctx)] = ctx
        return True

    def finish(self, response: Response) -> bytes:
        self.inflight -= 1
        return self._r.encode(self._awaited.pop(response.request_id, None), response)


def _request_id(ctx: Ctx) -> int:
    return ctx[0] if type(ctx) is tuple else ctx.request.request_id  # type: ignore[union-attr,index]


def _stream_error(r: Responder, message: str) -> bytes:
    """The answer to a stream that broke its framing (no request to take an id from)."""
    state = r.state
    header = Header(0, ResponseCode.PROTOCOL_ERROR, answer_flags(0, authoritative=state.authoritative),
                    state.site_serial, 0, int(state.clock()) + EXPIRATION_S)
    return encode_message(Message(Envelope(), header, ErrorBody(message)))


class DatagramEndpoint:
    """The native UDP side of a listener (one for all peers)."""

    __slots__ = ("_r", "_reassembler", "_waiting")

    def __init__(self, r: Responder, *, reassembler: Reassembler | None = None) -> None:
        self._r = r
        self._reassembler = reassembler or Reassembler(limits=r.limits)
        self._waiting: OrderedDict[tuple[tuple[str, int], int], Ctx] = OrderedDict()

    def receive(self, data: bytes, peer: tuple[str, int]) -> list[Event]:
        try:
            whole = self._reassembler.feed(data, peer, self._r.state.clock())
        except DecodeError as exc:
            return list(self._r.garbage(data, exc.message))
        if whole is None:
            return []
        got = self._r.event(whole, stream=False)
        if type(got) is not tuple:
            return [Reply(d) for reply in got for d in _datagrams(reply.data)]  # type: ignore[union-attr]
        event, ctx = got
        if ctx is not None:
            waiting = self._waiting
            waiting[(peer, _request_id(ctx))] = ctx
            if len(waiting) > MAX_UDP_WAITING:
                waiting.popitem(last=False)
        return [event]

    def answer_cached(self, request_id: int, handle: str, answer: Answer, peer: tuple[str, int]) -> list[bytes]:
        ctx = self._waiting.pop((peer, request_id), None)
        return _datagrams(self._r.cached(ctx, request_id, handle, answer))

    def send(self, response: Response, peer: tuple[str, int]) -> list[bytes]:
        ctx = self._waiting.pop((peer, response.request_id), None)
        return _datagrams(self._r.encode(ctx, response))


def _datagrams(message: bytes) -> list[bytes]:
    try:
        return split_message(message)
    except ValueError:  # cannot happen for our own encodings; never let it cost the listener
        return []
