"""An HTTP/1.1 load client on raw asyncio Protocols, cheap enough per request not to be the bottleneck.

The client shares a small machine with the server it measures, so every request costs it as little as
possible: requests are pre-encoded bytes, connections are kept alive, and responses are parsed only as far
as the status code and ``Content-Length`` (no header dictionaries, no chunked bodies: the servers measured
here never send them, and a response this parser cannot frame fails the run loudly).

``HttpConnection`` carries any number of requests in flight (pipelining), answered in order, so the
closed-loop driver here (one request in flight per connection, the next sent when the answer arrives) and
an open-loop driver (requests sent on a schedule) can share it. Latency samples are counted per whole
microsecond in a dict during the run and turned into an HdrHistogram afterwards (``hist``).

Rules: loopback only; every run ends by its deadline or its request count, whichever comes first, and a
server that stops answering is cut off ``grace_s`` after the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "::1", "localhost")

T = TypeVar("T")



def transport_fd(transport: asyncio.BaseTransport | None) -> int:
    """The descriptor of a transport's socket, -1 when there is none (closed)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (OSError, ValueError):
        return -1

class LoadError(Exception):
    """The server answered something the client cannot frame, or could not be reached."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a fresh event loop, under uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def check_loopback(host: str) -> None:
    if host not in LOOPBACK and not host.startswith("127."):
        raise LoadError(f"benchmarks only drive loopback addresses, not {host!r}")


def encode_request(method: str, path: str, host: str, port: int, *, body: bytes | None = None,
                   headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete HTTP/1.1 request, ready to write as many times as needed."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _content_length(buf: bytes | bytearray, end: int) -> int:
    """The Content-Length of the response head ``buf[:end]``."""
    i = buf.find(b"\r\nContent-Length:", 0, end)
    if i < 0:
        head = bytes(buf[:end]).lower()
        i = head.find(b"\r\ncontent-length:")
        if i < 0:
            if buf[9:12] in (b"204", b"304"):
                return 0
            raise LoadError("response without Content-Length (chunked or close-delimited bodies are "
                            "not supported by this client)")
    j = buf.find(b"\r\n", i + 17, end)
    try:
        n = int(buf[i + 17: j if j >= 0 else end])
    except ValueError:
        raise LoadError("malformed Content-Length") from None
    if not 0 <= n <= MAX_BODY_BYTES:
        raise LoadError(f"response body of {n} bytes is out of bounds")
    return n


class HttpConnection(asyncio.Protocol):
    """One kept-alive connection. ``on_response(status, body, started_ns)`` runs once per answer, in order.

    ``body`` is ``None`` unless ``keep_bodies`` is set (the load loop needs only the status).
    """

    def __init__(self, on_response: Callable[[int, bytes | None, int], None], *, keep_bodies: bool = False) -> None:
        self.on_response = on_response
        self.keep_bodies = keep_bodies
        self.transport: asyncio.Transport | None = None
        self.in_flight: deque[int] = deque()
        self.error: BaseException | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._status = 0
        self._body_at = -1  # offset of the current body in _buf, -1 while reading the head
        self._end = 0

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight and self.error is None:
            self.error = exc or LoadError("server closed the connection with requests in flight")
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            if not self._buf and self._body_at < 0 and self._one_response(data):
                return
            self._buffered(data)
        except (LoadError, ValueError) as exc:
            self.fail(exc if isinstance(exc, LoadError) else LoadError(f"unparseable response: {exc}"))

    def _one_response(self, data: bytes) -> bool:
        """The common case, one whole response in one read: answer it without copying into the buffer."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or data[:5] != b"HTTP/":
            return False
        if len(data) != end + 4 + _content_length(data, end) or not self.in_flight:
            return False
        self.on_response(int(data[9:12]), data[end + 4:] if self.keep_bodies else None, self.in_flight.popleft())
        return True

    def _buffered(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            if self._body_at < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise LoadError("response head larger than the limit")
                    return
                if buf[:5] != b"HTTP/":
                    raise LoadError("response does not start with HTTP/")
                self._status = int(buf[9:12])
                self._body_at = end + 4
                self._end = self._body_at + _content_length(buf, end)
            if len(buf) < self._end:
                return
            body = bytes(buf[self._body_at:self._end]) if self.keep_bodies else None
            del buf[:self._end]
            self._body_at = -1
            if not self.in_flight:
                raise LoadError("response without a request")
            self.on_response(self._status, body, self.in_flight.popleft())

    # -- sending ------------------------------------------------------------------------------------
    def send(self, request: bytes, started_ns: int) -> None:
        self.in_flight.append(started_ns)
        self.transport.write(request)  # type: ignore[union-attr]

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, on_response: Callable[[int, bytes | None, int], None], *,
                  keep_bodies: bool = False, timeout_s: float = 10.0) -> HttpConnection:
    check_loopback(host)
    loop = asyncio.get_running_loop()
    try:
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: HttpConnection(on_response, keep_bodies=keep_bodies), host, port),
            timeout_s)
    except (OSError, TimeoutError) as exc:
        raise LoadError(f"cannot connect to {host}:{port}: {exc}") from None
    return proto


class Client:
    """Sequential requests over one kept-alive connection: ``await client.request(raw) -> (status, body)``.

    For set-up traffic and for measured bulk requests whose client-side cost must stay tiny (the request is
    pre-encoded; the answer is framed, not parsed).
    """

    def __init__(self, host: str, port: int, *, timeout_s: float = 120.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._conn: HttpConnection | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    async def __aenter__(self) -> Client:
        self._conn = await connect(self.host, self.port, self._answered, keep_bodies=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
            await self._conn.closed

    def _answered(self, status: int, body: bytes | None, _started: int) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, body or b""))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        conn = self._conn
        if conn is None or conn.transport is None:
            raise LoadError(f"connection to {self.host}:{self.port} is closed"
                            + (f": {conn.error}" if conn is not None and conn.error else ""))
        self._waiter = asyncio.get_running_loop().create_future()
        conn.send(raw, 0)
        done, _ = await asyncio.wait([self._waiter, conn.closed], timeout=self.timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._waiter in done:
            return self._waiter.result()
        self._waiter.cancel()
        raise LoadError(f"no answer from {self.host}:{self.port}"
                        + (f": {conn.error}" if conn.error else f" within {self.timeout_s:g} s"))


# -- the closed loop ---------------------------------------------------------------------------------

@dataclass
class LoadResult:
    """One measured run. ``latency_us`` counts answers with the expected status per whole microsecond
    (bounded by the number of distinct values); other answers are only counted, by status."""

    connections: int
    requests: int = 0  # answers with the expected status: the rate is of these
    errors: int = 0  # answers with any other status
    elapsed_s: float = 0.0
    latency_us: dict[int, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    cut_off: int = 0  # requests still unanswered when the run was cut off

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def closed_loop(host: str, port: int, requests: Sequence[bytes], *, connections: int, duration_s: float,
                      max_requests: int, expect_status: int = 200, grace_s: float = 5.0) -> LoadResult:
    """Drive ``connections`` keep-alive connections, one request in flight each, until ``duration_s`` has
    passed or ``max_requests`` were sent. Requests rotate through ``requests``; each connection starts at a
    different place in the list."""
    if connections < 1 or duration_s <= 0 or max_requests < 1 or not requests:
        raise ValueError("closed_loop needs connections >= 1, duration_s > 0, max_requests >= 1, requests")
    loop = asyncio.get_running_loop()
    result = LoadResult(connections)
    lat = result.latency_us
    statuses = result.statuses
    clock = time.perf_counter_ns
    n_req = len(requests)
    state = {"sent": 0, "idle": 0}
    all_idle = loop.create_future()
    deadline_ns = 0
    conns: list[HttpConnection] = []
    cursors: list[int] = []

    def make_handler(slot: int) -> Callable[[int, bytes | None, int], None]:
        def on_response(status: int, _body: bytes | None, started_ns: int) -> None:
            now = clock()
            if status == expect_status:
                us = (now - started_ns) // 1000
                lat[us] = lat.get(us, 0) + 1
            else:
                statuses[status] = statuses.get(status, 0) + 1
            if now < deadline_ns and state["sent"] < max_requests:
                state["sent"] += 1
                i = cursors[slot] + 1
                cursors[slot] = i
                conns[slot].send(requests[i % n_req], now)
            else:
                state["idle"] += 1
                if state["idle"] == len(conns) and not all_idle.done():
                    all_idle.set_result(None)
        return on_response

    try:
        for slot in range(connections):
            cursors.append(slot * max(1, n_req // connections))
            conns.append(await connect(host, port, make_handler(slot)))
        start_ns = clock()
        deadline_ns = start_ns + int(duration_s * 1e9)
        for slot, conn in enumerate(conns):
            if state["sent"] >= max_requests:
                state["idle"] += 1
                continue
            state["sent"] += 1
            conn.send(requests[cursors[slot] % n_req], clock())
        if state["idle"] == len(conns):
            all_idle.set_result(None)
        lost = [c.closed for c in conns]
        remaining = duration_s + grace_s
        while not all_idle.done() and remaining > 0:
            t0 = loop.time()
            done, _ = await asyncio.wait([all_idle, *lost], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            remaining -= loop.time() - t0
            broken = [c for c in conns if c.closed.done() and c.in_flight]
            if broken:
                raise LoadError(f"connection failed during the run: {broken[0].error}")
            lost = [f for f in lost if not f.done()]
        result.elapsed_s = (clock() - start_ns) / 1e9
        result.cut_off = sum(len(c.in_flight) for c in conns)
    finally:
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=2.0)
    result.requests = sum(lat.values())
    result.errors = sum(statuses.values())
    return result
