"""The binary-protocol load client: a raw asyncio ``Protocol`` on ``core.wire`` framing, pipelined.

Requests are encoded once per identifier by ``core.wire.Codec`` with request id 0; a send splices a fresh
request id into that encoding (a 5-byte msgpack uint32), so the per-request cost is one bytes join. Answers
are taken by a ``core.wire_connection.ClientConnection`` and read only as far as their request id and
response code (``receive_heads``); the body is never decoded on the hot path. Traced answers (``FLAG_TRACE``)
are decoded in full by ``trace_sample`` instead, which is not timed.

A connection keeps any number of requests in flight, matched to answers by request id, each with the time
it was *scheduled* (open loop) or sent (closed loop): latency runs from there. Requests older than the
run's timeout are expired by ``expire`` (the driver calls it) and counted as timeouts; an answer arriving
after that counts as late, never as a success.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..core.codes import OpCode
from ..core.errors import DecodeError
from ..core.messages import Request, Response
from ..core.wire import Codec
from ..core.wire_connection import ClientConnection
from ..net.client import ClientPool
from .httpload import transport_fd

if TYPE_CHECKING:
    from .loadgen import Recorder

_REQ_HEAD = b"\x96\x00\x00"  # array of 6, kind 0 (request), request id 0: what Codec writes for id 0


class BinaryWorkload:
    """Pre-encoded RESOLUTION requests for ``handles`` with ``flags``; ``frame(i, rid)`` is ready to write."""

    __slots__ = ("handles", "parts")

    def __init__(self, handles: Sequence[str], flags: int = 0, codec: Codec | None = None) -> None:
        if not handles:
            raise ValueError("a workload needs at least one identifier")
        codec = codec or Codec()
        self.handles = list(handles)
        self.parts: list[tuple[bytes, bytes]] = []
        for h in self.handles:
            payload = codec.encode(Request(0, OpCode.RESOLUTION, h, flags))
            if payload[:3] != _REQ_HEAD:
                raise ValueError("unexpected request encoding")  # the codec changed shape
            tail = payload[3:]
            size = 2 + 5 + len(tail)  # array head + kind, request id as 0xce + 4 bytes, the rest
            self.parts.append((size.to_bytes(4, "big") + b"\x96\x00\xce", tail))

    def __len__(self) -> int:
        return len(self.parts)

    def frame(self, i: int, rid: int) -> bytes:
        head, tail = self.parts[i % len(self.parts)]
        return head + rid.to_bytes(4, "big") + tail


class BinaryLoadConnection(asyncio.Protocol):
    """One pipelined connection of a load run. Results go to the shared ``Recorder``."""

    def __init__(self, rec: Recorder, workload: BinaryWorkload,
                 on_answer: Callable[[BinaryLoadConnection], None] | None = None) -> None:
        self.rec, self.workload, self.on_answer = rec, workload, on_answer
        self.transport: asyncio.Transport | None = None
        # request id -> scheduled (or sent) time, ns; in send order
        self.wire: ClientConnection[int] = ClientConnection()
        self.closed = asyncio.get_running_loop().create_future()
        self.error: str | None = None
        self._out: list[bytes] = []
        self.after_read: Callable[[], None] | None = None  # the open-loop driver's pump

    @property
    def alive(self) -> bool:
        return self.transport is not None

    @property
    def pending(self) -> dict[int, int]:
        """Request id -> scheduled (or sent) time in ns, of every request not answered yet, in send order."""
        return self.wire.pending

    @property
    def in_flight(self) -> int:
        return len(self.wire.pending)

    def fileno(self) -> int:
        """The socket's descriptor, -1 when closed (the open-loop driver waits on it)."""
        return transport_fd(self.transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending:
            self.rec.lost += len(self.pending)
            self.pending.clear()
            if self.error is None:
                self.error = f"connection closed by the server{f': {exc}' if exc else ''}"
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, i: int, sched_ns: int) -> None:
        self.transport.write(self.workload.frame(i, self.wire.next_id(sched_ns)))  # type: ignore[union-attr]

    def queue(self, i: int, sched_ns: int) -> None:
        """Like ``send``, but held until ``flush``: one write for the requests due in one tick."""
        self._out.append(self.workload.frame(i, self.wire.next_id(sched_ns)))

    def flush(self) -> None:
        if self._out:
            if self.transport is not None:
                self.transport.write(b"".join(self._out))
            self._out.clear()

    def data_received(self, data: bytes) -> None:
        wire = self.wire
        try:
            answers = wire.receive_heads(data)
        except DecodeError as exc:
            self.fail(f"bad framing from the server: {exc.message}")
            return
        now = time.perf_counter_ns()
        if wire.stray or wire.garbage:
            self.rec.late += wire.stray  # expired earlier (counted as a timeout then), or never asked
            self.rec.garbage += wire.garbage
            wire.stray = wire.garbage = 0
        record, on_answer = self.rec.record, self.on_answer
        for sched, code in answers:
            record(code, sched, now)
            if on_answer is not None:
                on_answer(self)
        if self.after_read is not None:
            self.after_read()

    def expire(self, now_ns: int, timeout_ns: int) -> int:
        """Drop requests older than ``timeout_ns`` (oldest first: the dict is in send order)."""
        pending = self.pending
        cutoff = now_ns - timeout_ns
        expired = []
        for rid, sched in pending.items():
            if sched > cutoff:
                break
            expired.append(rid)
        for rid in expired:
            del pending[rid]
        if expired:
            self.rec.timed_out(len(expired), now_ns)
        return len(expired)

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect_binary(host: str, port: int, rec: Recorder, workload: BinaryWorkload, *,
                         on_answer: Callable[[BinaryLoadConnection], None] | None = None,
                         timeout_s: float = 5.0) -> BinaryLoadConnection:
    from .httpload import LoadError, check_loopback

    check_loopback(host)
    loop = asyncio.get_running_loop()
    try:
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: BinaryLoadConnection(rec, workload, on_answer), host, port), timeout_s)
    except (OSError, TimeoutError) as exc:
        raise LoadError(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from None
    return proto


# -- set-up and traced requests (decoded in full; not timed) ------------------------------------------------

async def resolve_many(host: str, port: int, handles: Sequence[str], *, flags: int = 0, window: int = 64,
                       timeout_s: float = 10.0,
                       on_answer: Callable[[str, Response, float], None] | None = None) -> dict[int, int]:
    """Resolve ``handles`` over one connection with up to ``window`` in flight; returns counts by code
    (-1: no answer). ``on_answer(handle, response, seconds)`` sees every decoded answer (traces)."""
    from .httpload import LoadError, check_loopback

    check_loopback(host)
    pool = ClientPool(connect_timeout_s=timeout_s)
    codes: dict[int, int] = {}
    sem = asyncio.Semaphore(window)

    async def one(handle: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            try:
                resp = await pool.request(host, port, Request(0, OpCode.RESOLUTION, handle, flags), timeout_s)
            except (TimeoutError, ConnectionError):
                codes[-1] = codes.get(-1, 0) + 1
                return
            codes[resp.code] = codes.get(resp.code, 0) + 1
            if on_answer is not None:
                on_answer(handle, resp, time.perf_counter() - t0)

    try:
        try:
            await pool.connect(host, port)
        except ConnectionError as exc:
            raise LoadError(f"cannot connect to {host}:{port}: {exc.__cause__ or exc}") from None
        await asyncio.gather(*(one(h) for h in handles))
    finally:
        pool.close()
    return codes
