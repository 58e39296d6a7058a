"""The asyncio shells of the binary listeners: one for streams (TCP), one for datagrams (UDP), for any wire
format. A wire format supplies sans-I/O connection objects (``core.events``: ``StreamConnection``,
``DatagramEndpoint``; the msgpack ones are in ``core.wire_connection``); a ``net.services.Service``
answers. The shells move bytes, ask the service, and add what needs a clock or a socket:

- admission (``net.admission``): a request refused there gets SERVER_TOO_BUSY (3); a read whose
  requests take longer than the shedding threshold answers the rest of itself with code 3, cheaply;
- at most ``max_connections`` connections per listener; idle connections close after ``idle_timeout_s``
  (only whole requests count as activity, so a frame dribbled byte by byte does not keep one open);
- when the peer does not read its answers (write buffer above the high-water mark) reading stops;
- answers to one read leave in one write.
The frame bound and the limit of awaited answers in flight per connection belong to the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..core.answers import Answer, EncodedAnswers
from ..core.codes import OpCode, ResponseCode
from ..core.events import Close, DatagramEndpoint, Reply, StreamConnection, plain_request
from ..core.messages import Request, Response, error_response
from ..core.wire_connection import DatagramEndpoint as MsgpackDatagrams
from ..core.wire_connection import ServerConnection as MsgpackConnection
from .services import Service

log = logging.getLogger("idresolve.net")
OUT_CHUNK_BYTES = 64 * 1024  # answers are written at least this often within one read


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame: int = 8 * 1024 * 1024
    max_inflight: int = 512
    max_connections: int = 4096
    idle_timeout_s: float = 300.0


def _answer(service: Service, request: Request) -> Response | Awaitable[Response]:
    """The service's answer; a bug in the service costs one error answer, never the connection."""
    try:
        return service.handle(request)
    except Exception:
        log.exception("service %s failed on opcode %s", service.name, request.opcode)
        return error_response(request.request_id, request.opcode, ResponseCode.ERROR, "internal error")


def _cacheable(request: Request) -> bool:
    """A decoded request the fast path answers: a plain resolution (whatever hops it carries) whose id fits
    the encoded answers' fixed-width request id."""
    return request.is_plain_resolution and 0 <= request.request_id < 2**32


def _cached(service: Service, handle: str) -> Answer | None:
    try:
        return service.cached(handle)
    except Exception:  # a bug there falls back to the full path
        log.exception("service %s failed on a cached resolution", service.name)
        return None


def _discard(result: Awaitable[Response]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class OpenConnections:
    """The connections of one listener (bounded by ``Limits.max_connections``)."""

    __slots__ = ("closing", "count", "open")

    def __init__(self) -> None:
        self.count = 0
        self.open: set[StreamProtocol] = set()
        # Set when the listener closes: a connection the loop accepted just before, whose protocol is made
        # only after (asyncio makes it in a task of its own), is closed at once instead of being served.
        self.closing = False


class StreamProtocol(asyncio.Protocol):
    """One stream connection: the socket side of a ``StreamConnection``."""

    def __init__(self, service: Service, conn: StreamConnection, limits: Limits, conns: OpenConnections) -> None:
        self.service, self.conn, self.limits, self.conns = service, conn, limits, conns
        self.admission = service.admission
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._activity = True
        self._closed = False
        self._paused = False
        # Answers wait here until the end of the read that produced them, or of the event-loop pass in which
        # they completed, and leave in one write.
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._in_read = False
        self._flush_soon = False

    @property
    def inflight(self) -> int:
        return self.conn.inflight

    # -- lifecycle -----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.conns.count += 1
        self.conns.open.add(self)
        if self.conns.closing or self.conns.count > self.limits.max_connections:
            transport.close()
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._out.clear()
        self.conns.count -= 1
        self.conns.open.discard(self)
        if self._idle is not None:
            self._idle.cancel()

    def _arm_idle(self) -> None:
        self._idle = asyncio.get_running_loop().call_later(self.limits.idle_timeout_s, self._check_idle)

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
        if self.conn.receive_data(data):
            self._activity = True
        self._drain()

    def _drain(self) -> None:
        """Answer waiting requests while the peer reads its answers; stop when it does not.

        With load shedding on, a read that has taken longer than the shedding threshold is overload by
        itself: the rest of it is answered at once with code 3 (found from the request's first bytes,
        without decoding), so the queue behind it drains and admitted requests wait at most about the
        threshold."""
        conn = self.conn
        backlog = conn.waiting > 1  # requests queued behind each other
        adm = self.admission
        budget_s = adm.lag_threshold_s if adm is not None and backlog else None
        t0 = time.perf_counter()
        stamp = int(time.time())  # a batch's values are decoded with it (the node stamps them the same)
        self._in_read = True
        try:
            while not self._paused and not self._closed:
                if budget_s is not None and time.perf_counter() - t0 > budget_s:
                    busy = conn.busy_answer_for_next()
                    if busy is not None:
                        self._write(busy)
                        if adm is not None:
                            adm.stats.shed_overload += 1
                        continue
                event = conn.next_event(stamp)
                if event is None:
                    break
                self._dispatch(event, backlog)
                if self._out_bytes >= OUT_CHUNK_BYTES:
                    self.flush()  # may pause writing: the rest waits for resume_writing
        finally:
            self._in_read = False
            self.flush()

    def _dispatch(self, event: object, backlog: bool) -> None:
        conn = self.conn
        adm = self.admission
        if type(event) is tuple:  # a PlainResolution: the hottest request first
            rid, handle = event
            if adm is not None and not adm.admit(self.peer, backlog or conn.inflight > 0):
                self._write(conn.refuse(rid, OpCode.RESOLUTION, "server too busy"))
                return
            try:
                hit = self.service.cached(handle)
            except Exception:  # a bug there falls back to the full path
                log.exception("service %s failed on a cached resolution", self.service.name)
                hit = None
            if hit is not None:
                self._write(conn.answer_cached(rid, handle, hit))
                return
            request = Request(rid, OpCode.RESOLUTION, handle)
        elif isinstance(event, Request):
            request = event
            if adm is not None and not adm.admit(self.peer, backlog or conn.inflight > 0):
                self._write(conn.refuse(request.request_id, request.opcode, "server too busy"))
                return
            if _cacheable(request):  # decoded, but the same question: the hops a walk has taken change no answer
                hit = _cached(self.service, request.handle)
                if hit is not None:
                    self._write(conn.answer_cached(request.request_id, request.handle, hit))
                    return
        elif isinstance(event, Reply):
            self._write(event.data)
            return
        elif isinstance(event, Close):
            self._write(event.data)
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        else:
            raise TypeError(f"unknown connection event {event!r}")
        result = _answer(self.service, request)
        if isinstance(result, Response):
            self._write(conn.send(result))
            return
        if not conn.start():
            _discard(result)
            self._write(conn.refuse(request.request_id, request.opcode, "too many requests in flight"))
            return
        if adm is not None:
            adm.inflight += 1
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t, r=request: self._finished(t, r))

    def _finished(self, task: asyncio.Future[Response], request: Request) -> None:
        if self.admission is not None:
            self.admission.inflight -= 1
        if task.cancelled():
            self.conn.finish(error_response(request.request_id, request.opcode, ResponseCode.ERROR))
            return
        exc = task.exception()
        if exc is not None:
            log.error("service %s failed on opcode %s: %r", self.service.name, request.opcode, exc)
            resp = error_response(request.request_id, request.opcode, ResponseCode.ERROR, "internal error")
        else:
            resp = task.result()
        data = self.conn.finish(resp)
        if not self._closed:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._closed or self.transport is None:
            return
        self._out.append(data)
        self._out_bytes += len(data)
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


class DatagramProtocol(asyncio.DatagramProtocol):
    """A datagram listener: the socket side of a ``DatagramEndpoint``."""

    def __init__(self, service: Service, endpoint: DatagramEndpoint, limits: Limits) -> None:
        self.service, self.endpoint, self.limits = service, endpoint, limits
        self.transport: asyncio.DatagramTransport | None = None
        self.inflight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for event in self.endpoint.receive(data, addr):
            self._dispatch(event, addr)

    def _dispatch(self, event: object, addr: tuple[str, int]) -> None:
        if isinstance(event, Reply | Close):
            self._sendto([event.data], addr)
            return
        if not isinstance(event, tuple | Request):
            raise TypeError(f"unknown datagram event {event!r}")
        adm = self.service.admission
        request = plain_request(event) if type(event) is tuple else event
        if adm is not None and not adm.admit(addr[0], self.inflight > 0):
            busy = error_response(request.request_id, request.opcode, ResponseCode.SERVER_TOO_BUSY)
            self._sendto(self.endpoint.send(busy, addr), addr)
            return
        if type(event) is tuple or _cacheable(request):  # a plain resolution
            hit = _cached(self.service, request.handle)
            if hit is not None:
                self._sendto(self.endpoint.answer_cached(request.request_id, request.handle, hit, addr), addr)
                return
        result = _answer(self.service, request)
        if isinstance(result, Response):
            self._sendto(self.endpoint.send(result, addr), addr)
            return
        if self.inflight >= self.limits.max_inflight:
            _discard(result)
            busy = error_response(request.request_id, request.opcode, ResponseCode.SERVER_TOO_BUSY)
            self._sendto(self.endpoint.send(busy, addr), addr)
            return
        self.inflight += 1
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t, a=addr, r=request: self._finished(t, a, r))

    def _finished(self, task: asyncio.Future[Response], addr: tuple[str, int], request: Request) -> None:
        self.inflight -= 1
        if task.cancelled():
            return
        if task.exception() is not None:
            resp = error_response(request.request_id, request.opcode, ResponseCode.ERROR, "internal error")
        else:
            resp = task.result()
        self._sendto(self.endpoint.send(resp, addr), addr)

    def _sendto(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for d in datagrams:
            self.transport.sendto(d, addr)


class TcpServer:
    """A listening stream server and its open connections, with a graceful close."""

    def __init__(self, server: asyncio.Server, conns: OpenConnections) -> None:
        self.server, self.conns = server, conns

    @property
    def address(self) -> tuple[str, int]:
        name = self.server.sockets[0].getsockname()
        return name[0], name[1]

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, stop reading, let requests in flight finish (up to ``timeout_s``), flush answers
        and close every connection."""
        self.server.close()
        self.conns.closing = True
        for proto in list(self.conns.open):
            if proto.transport is not None and not proto._closed:
                proto.transport.pause_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(p.inflight for p in self.conns.open) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for proto in list(self.conns.open):
            if proto.transport is not None:
                proto.flush()
                proto.transport.close()  # buffered answers are written before the socket closes
        await self.server.wait_closed()


ConnectionFactory = Callable[[Limits], StreamConnection]


def msgpack_connections(encoded: EncodedAnswers) -> ConnectionFactory:
    """Connections of the msgpack wire format, sharing one store of encoded answers."""
    return lambda limits: MsgpackConnection(encoded, max_frame=limits.max_frame, max_inflight=limits.max_inflight)


ProtocolFactory = Callable[[], asyncio.BaseProtocol]
# Wraps a listener's protocol factory, given a count of its open connections (runtime.balance: workers).
Gate = Callable[[ProtocolFactory, Callable[[], int]], ProtocolFactory]


async def start_tcp(service: Service, host: str, port: int, connection: ConnectionFactory | None = None, *,
                    limits: Limits | None = None, reuse_port: bool = False, gate: Gate | None = None) -> TcpServer:
    """Listen on ``host:port``; each connection speaks the wire format of ``connection(limits)`` (msgpack
    by default). ``reuse_port``: share the port with other processes (SO_REUSEPORT, worker processes).
    ``gate``: new connections pass it first (the worker processes' balancer)."""
    limits = limits or Limits()
    connection = connection or msgpack_connections(EncodedAnswers())
    conns = OpenConnections()
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.BaseProtocol:
        return StreamProtocol(service, connection(limits), limits, conns)
    server = await loop.create_server(factory if gate is None else gate(factory, lambda: conns.count),
                                      host, port, reuse_address=True, backlog=1024,
                                      reuse_port=reuse_port or None)
    return TcpServer(server, conns)


async def start_udp(service: Service, host: str, port: int, endpoint: DatagramEndpoint | None = None, *,
                    limits: Limits | None = None, reuse_port: bool = False) -> asyncio.DatagramTransport:
    limits = limits or Limits()
    endpoint = endpoint or MsgpackDatagrams()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: DatagramProtocol(service, endpoint, limits),
                                                       local_addr=(host, port), reuse_port=reuse_port or None)
    return transport
