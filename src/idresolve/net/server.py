"""Binary protocol servers on raw asyncio Protocols (TCP framed and pipelined; UDP one message a datagram).

A ``Service`` answers requests: ``handle(request)`` returns a ``Response``, an encoded payload (bytes, for
cached answers), or an awaitable of either (the recursive node waits on upstream nodes).

Bounds, so nothing a peer does grows memory without limit or hangs a connection:
- frames above ``max_frame`` close the connection (the stream cannot be resynchronised);
- a frame that decodes to garbage gets a PROTOCOL_ERROR answer and the connection goes on;
- at most ``max_inflight`` requests per connection wait on awaitables; beyond, SERVER_TOO_BUSY (3);
- at most ``max_connections`` connections per server; idle connections close after ``idle_timeout_s``;
- when the peer does not read its answers (write buffer above the high-water mark) we stop reading.
UDP answers above 512 bytes are sent truncated (no values, ``x`` set) so the client retries over TCP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from ..core.codes import OpCode, ResponseCode
from ..core.errors import DecodeError
from ..core.wire import (
    UDP_ANSWER_LIMIT,
    Codec,
    FrameDecoder,
    Request,
    Response,
    decode_message,
    error_response,
    peek_request,
    plain_resolution,
)
from .admission import Admission

log = logging.getLogger("idresolve.net")
OUT_CHUNK_BYTES = 64 * 1024  # answers are written at least this often within one read
_BUSY_TAILS: dict[int, bytes] = {}  # encoded "server too busy" answers of the known opcodes (a constant table)
_KNOWN_OPCODES = frozenset(int(op) for op in OpCode)

Answer = Response | bytes


class Service(TypingProtocol):
    name: str
    admission: Admission | None

    def handle(self, request: Request) -> Answer | Awaitable[Answer]: ...


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame: int = 8 * 1024 * 1024
    max_inflight: int = 512
    max_connections: int = 4096
    idle_timeout_s: float = 300.0


class _ConnState:
    __slots__ = ("count", "open")

    def __init__(self) -> None:
        self.count = 0
        self.open: set[BinaryServerProtocol] = set()


class BinaryServerProtocol(asyncio.Protocol):
    def __init__(self, service: Service, codec: Codec, limits: Limits, conns: _ConnState) -> None:
        self.service, self.codec, self.limits, self.conns = service, codec, limits, conns
        self.decoder = FrameDecoder(limits.max_frame)
        self.transport: asyncio.Transport | None = None
        self.inflight = 0
        self._idle: asyncio.TimerHandle | None = None
        self._activity = True
        self._closed = False
        self.admission: Admission | None = getattr(service, "admission", None)
        #: ``answer_plain(request_id, handle) -> bytes | None``: a service's cache of encoded answers to
        #: plain resolutions (optional), asked before a request is decoded.
        self._answer_plain = getattr(service, "answer_plain", None)
        self.peer: str | None = None
        # Answers wait here until the end of the read that produced them, or of the event-loop pass in which
        # they completed, and leave in one write: one send() per batch instead of one per answer.
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._in_read = False
        self._flush_soon = False
        # Requests of a read not yet answered because the peer stopped reading its answers (bounded by one
        # read: reading is paused at the same time).
        self._waiting: deque[bytes] = deque()
        self._paused = False

    # -- lifecycle -----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.conns.count += 1
        self.conns.open.add(self)
        if self.conns.count > self.limits.max_connections:
            transport.close()
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._out.clear()
        self._waiting.clear()
        self.conns.count -= 1
        self.conns.open.discard(self)
        if self._idle is not None:
            self._idle.cancel()

    def _arm_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.limits.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        if self._closed or self.transport is None:
            return
        if not self._activity and self.inflight == 0:
            self.flush()
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # a peer that does not read would hold a graceful close forever
            else:
                self.transport.close()  # idle, half-open or slowloris: free the slot
            return
        self._activity = False
        self._arm_idle()

    def pause_writing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
            self._drain()

    # -- requests ------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except DecodeError as exc:
            self._send(error_response(0, 0, ResponseCode.PROTOCOL_ERROR, exc.message))
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        if payloads:
            self._activity = True  # only whole requests count: a frame dribbled byte by byte does not
            self._waiting.extend(payloads)
            self._drain()

    def _drain(self) -> None:
        """Answer waiting requests while the peer reads its answers; stop when it does not.

        With load shedding on, a batch that has taken longer than the shedding threshold is overload by
        itself: the rest of it is answered at once with code 3 (found from the frame's first bytes,
        without decoding), so the queue behind it drains and admitted requests wait at most about the
        threshold."""
        waiting = self._waiting
        backlog = len(waiting) > 1  # requests queued behind each other
        adm = self.admission
        budget_s = adm.lag_threshold_s if adm is not None and backlog else None
        t0 = time.perf_counter()
        self._in_read = True
        try:
            while waiting and not self._paused and not self._closed:
                if budget_s is not None and time.perf_counter() - t0 > budget_s:
                    self._shed(waiting)
                    break
                self._dispatch(waiting.popleft(), backlog)
                if self._out_bytes >= OUT_CHUNK_BYTES:
                    self.flush()  # may pause writing: the rest waits for resume_writing
        finally:
            self._in_read = False
            self.flush()

    def _shed(self, waiting: deque[bytes]) -> None:
        """Answer every waiting request with SERVER_TOO_BUSY, cheaply."""
        adm = self.admission
        while waiting and not self._paused and not self._closed:
            payload = waiting.popleft()
            head = peek_request(payload)
            if head is None:
                self._dispatch(payload)  # not a plain request: the decoder gives it its proper answer
                continue
            rid, opcode = head
            tail = _BUSY_TAILS.get(opcode)
            if tail is None:
                tail = self.codec.response_tail(opcode, ResponseCode.SERVER_TOO_BUSY, "", {"m": "server too busy"})
                if opcode in _KNOWN_OPCODES:
                    _BUSY_TAILS[opcode] = tail
            self._send(self.codec.payload_with_tail(rid, tail))
            if adm is not None:
                adm.stats.shed_overload += 1
            if self._out_bytes >= OUT_CHUNK_BYTES:
                self.flush()

    def _dispatch(self, payload: bytes, backlog: bool = False) -> None:
        plain = plain_resolution(payload) if self._answer_plain is not None else None
        msg: Request | None = None
        if plain is not None:  # the hottest request: admitted, it may be answered without decoding it
            rid, handle = plain
        else:
            try:
                decoded = decode_message(payload)
            except DecodeError as exc:
                self._send(error_response(0, 0, ResponseCode.PROTOCOL_ERROR, exc.message))
                return
            if not isinstance(decoded, Request):
                self._send(error_response(decoded.request_id, decoded.opcode, ResponseCode.PROTOCOL_ERROR,
                                          "expected a request"))
                return
            msg = decoded
        adm = self.admission
        if adm is not None and not adm.admit(self.peer, backlog or self.inflight > 0):
            rid, opcode = (rid, OpCode.RESOLUTION) if msg is None else (msg.request_id, msg.opcode)
            self._send(error_response(rid, opcode, ResponseCode.SERVER_TOO_BUSY, "server too busy"))
            return
        if msg is None:
            cached = _call_plain(self.service, self._answer_plain, rid, handle)
            if cached is not None:
                self._send(cached)
                return
            msg = Request(rid, OpCode.RESOLUTION, handle)  # what decode_message gives for this payload
        result = _call(self.service, msg)
        if isinstance(result, Response | bytes):
            self._send(result)
            return
        if self.inflight >= self.limits.max_inflight:
            _discard(result)
            self._send(error_response(msg.request_id, msg.opcode, ResponseCode.SERVER_TOO_BUSY, "too many requests in flight"))
            return
        self.inflight += 1
        if adm is not None:
            adm.inflight += 1
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t, m=msg: self._finished(t, m))

    def _finished(self, task: asyncio.Future[Answer], msg: Request) -> None:
        self.inflight -= 1
        if self.admission is not None:
            self.admission.inflight -= 1
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("service %s failed on opcode %s: %r", self.service.name, msg.opcode, exc)
            self._send(error_response(msg.request_id, msg.opcode, ResponseCode.ERROR, "internal error"))
            return
        self._send(task.result())

    def _send(self, answer: Answer) -> None:
        if self._closed or self.transport is None:
            return
        frame = len(answer).to_bytes(4, "big") + answer if isinstance(answer, bytes) else self.codec.frame(answer)
        self._out.append(frame)
        self._out_bytes += len(frame)
        if not self._in_read and not self._flush_soon:
            self._flush_soon = True  # an upstream answer completed: others may complete in this same pass
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the answers waiting in ``_out``, in order, in one write."""
        self._flush_soon = False
        out = self._out
        if not out:
            return
        self._out = []
        self._out_bytes = 0
        if self._closed or self.transport is None:
            return
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))


def _call(service: Service, msg: Request) -> Answer | Awaitable[Answer]:
    """The service's answer; a bug in the service costs one error answer, never the connection."""
    try:
        return service.handle(msg)
    except Exception:
        log.exception("service %s failed on opcode %s", service.name, msg.opcode)
        return error_response(msg.request_id, msg.opcode, ResponseCode.ERROR, "internal error")


def _call_plain(service: Service, answer_plain: Any, rid: int, handle: str) -> bytes | None:
    """The service's cached answer to a plain resolution, or None; a bug there falls back to ``handle``."""
    try:
        return answer_plain(rid, handle)  # type: ignore[no-any-return]
    except Exception:
        log.exception("service %s failed on a cached resolution", service.name)
        return None


def _discard(result: Awaitable[Answer]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class BinaryDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: Service, codec: Codec, limits: Limits) -> None:
        self.service, self.codec, self.limits = service, codec, limits
        self.transport: asyncio.DatagramTransport | None = None
        self.inflight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = decode_message(data)
        except DecodeError as exc:
            self._send(error_response(0, 0, ResponseCode.PROTOCOL_ERROR, exc.message), addr, 0, 0)
            return
        if not isinstance(msg, Request):
            return  # never answer an answer over UDP (reflection loops)
        adm = getattr(self.service, "admission", None)
        if adm is not None and not adm.admit(addr[0], self.inflight > 0):
            self._send(error_response(msg.request_id, msg.opcode, ResponseCode.SERVER_TOO_BUSY), addr, 0, 0)
            return
        result = _call(self.service, msg)
        if isinstance(result, Response | bytes):
            self._send(result, addr, msg.request_id, msg.opcode)
            return
        if self.inflight >= self.limits.max_inflight:
            _discard(result)
            self._send(error_response(msg.request_id, msg.opcode, ResponseCode.SERVER_TOO_BUSY), addr, 0, 0)
            return
        self.inflight += 1
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t, a=addr, m=msg: self._finished(t, a, m))

    def _finished(self, task: asyncio.Future[Answer], addr: tuple[str, int], msg: Request) -> None:
        self.inflight -= 1
        if task.cancelled():
            return
        if task.exception() is not None:
            self._send(error_response(msg.request_id, msg.opcode, ResponseCode.ERROR, "internal error"), addr, 0, 0)
            return
        self._send(task.result(), addr, msg.request_id, msg.opcode)

    def _send(self, answer: Answer, addr: tuple[str, int], request_id: int, opcode: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        payload = answer if isinstance(answer, bytes) else self.codec.encode(answer)
        if len(payload) > UDP_ANSWER_LIMIT:
            if isinstance(answer, bytes):
                answer = decode_message(answer)  # type: ignore[assignment]
            assert isinstance(answer, Response)
            payload = self.codec.encode(Response(answer.request_id, answer.opcode, answer.code, answer.handle,
                                                 truncated=True))
        self.transport.sendto(payload, addr)


class TcpServer:
    """A listening binary TCP server and its open connections, with a graceful close."""

    def __init__(self, server: asyncio.Server, conns: _ConnState) -> None:
        self.server, self.conns = server, conns

    @property
    def address(self) -> tuple[str, int]:
        name = self.server.sockets[0].getsockname()
        return name[0], name[1]

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, stop reading, let requests in flight finish (up to ``timeout_s``), flush answers
        and close every connection."""
        self.server.close()
        for proto in list(self.conns.open):
            if proto.transport is not None and not proto._closed:
                proto.transport.pause_reading()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(p.inflight for p in self.conns.open) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for proto in list(self.conns.open):
            if proto.transport is not None:
                proto.flush()
                proto.transport.close()  # buffered answers are written before the socket closes
        await self.server.wait_closed()


async def start_tcp(service: Service, host: str, port: int, *, limits: Limits | None = None) -> TcpServer:
    limits = limits or Limits()
    codec, conns = Codec(), _ConnState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: BinaryServerProtocol(service, codec, limits, conns), host, port,
                                      reuse_address=True, backlog=1024)
    return TcpServer(server, conns)


async def start_udp(service: Service, host: str, port: int, *, limits: Limits | None = None) -> asyncio.DatagramTransport:
    limits = limits or Limits()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: BinaryDatagramProtocol(service, Codec(), limits),
                                                       local_addr=(host, port))
    return transport
