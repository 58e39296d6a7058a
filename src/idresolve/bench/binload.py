"""The binary-protocol load client: a raw asyncio ``Protocol`` on ``core.wire`` framing, pipelined.

Requests are encoded once per identifier by ``core.wire.Codec`` with request id 0; a send splices a fresh
request id into that encoding (a 5-byte msgpack uint32), so the per-request cost is one bytes join. Answers
are split by ``core.wire.FrameDecoder`` and read only as far as their request id and response code (the
first bytes of the msgpack array); the body is never decoded on the hot path. Traced answers (``FLAG_TRACE``)
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
from ..core.wire import Codec, FrameDecoder, Request, Response, decode_message
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


def _int_at(p: bytes, i: int) -> tuple[int, int]:
    """A msgpack integer at ``p[i]``: (value, next offset). IndexError/ValueError on anything else."""
    c = p[i]
    if c < 0x80:
        return c, i + 1
    if c >= 0xE0:
        return c - 0x100, i + 1
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}.get(c)
    if width is None or i + 1 + width > len(p):
        raise ValueError("not an integer")
    return int.from_bytes(p[i + 1:i + 1 + width], "big", signed=c >= 0xD0), i + 1 + width


def answer_head(payload: bytes) -> tuple[int, int]:
    """(request id, response code) of an encoded response, without decoding its body."""
    if len(payload) < 5 or payload[0] != 0x96 or payload[1] != 0x01:
        raise ValueError("not a response")
    rid, i = _int_at(payload, 2)
    _, i = _int_at(payload, i)  # opcode
    code, _ = _int_at(payload, i)
    return rid, code


class BinaryLoadConnection(asyncio.Protocol):
    """One pipelined connection of a load run. Results go to the shared ``Recorder``."""

    def __init__(self, rec: Recorder, workload: BinaryWorkload,
                 on_answer: Callable[[BinaryLoadConnection], None] | None = None) -> None:
        self.rec, self.workload, self.on_answer = rec, workload, on_answer
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, int] = {}  # request id -> scheduled (or sent) time, ns; in send order
        self.decoder = FrameDecoder()
        self.closed = asyncio.get_running_loop().create_future()
        self.error: str | None = None
        self._rid = 0
        self._out: list[bytes] = []
        self.after_read: Callable[[], None] | None = None  # the open-loop driver's pump

    @property
    def alive(self) -> bool:
        return self.transport is not None

    @property
    def in_flight(self) -> int:
        return len(self.pending)

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
        rid = self._rid = self._rid % 0xFFFFFFFF + 1
        self.pending[rid] = sched_ns
        self.transport.write(self.workload.frame(i, rid))  # type: ignore[union-attr]

    def queue(self, i: int, sched_ns: int) -> None:
        """Like ``send``, but held until ``flush``: one write for the requests due in one tick."""
        rid = self._rid = self._rid % 0xFFFFFFFF + 1
        self.pending[rid] = sched_ns
        self._out.append(self.workload.frame(i, rid))

    def flush(self) -> None:
        if self._out:
            if self.transport is not None:
                self.transport.write(b"".join(self._out))
            self._out.clear()

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except DecodeError as exc:
            self.fail(f"bad framing from the server: {exc.message}")
            return
        now = time.perf_counter_ns()
        pending, record = self.pending, self.rec.record
        for p in payloads:
            try:
                rid, code = answer_head(p)
            except (ValueError, IndexError):
                self.rec.garbage += 1
                continue
            sched = pending.pop(rid, None)
            if sched is None:
                self.rec.late += 1  # expired earlier (counted as a timeout then), or never asked
                continue
            record(code, sched, now)
            if self.on_answer is not None:
                self.on_answer(self)
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

class _Collector(asyncio.Protocol):
    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.waiting: dict[int, asyncio.Future[Response]] = {}
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except DecodeError:
            self.transport.close()  # type: ignore[union-attr]
            return
        for p in payloads:
            try:
                msg = decode_message(p)
            except DecodeError:
                continue
            fut = self.waiting.pop(msg.request_id, None)
            if fut is not None and not fut.done() and isinstance(msg, Response):
                fut.set_result(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self.waiting.clear()
        if not self.lost.done():
            self.lost.set_result(None)


async def resolve_many(host: str, port: int, handles: Sequence[str], *, flags: int = 0, window: int = 64,
                       timeout_s: float = 10.0,
                       on_answer: Callable[[str, Response, float], None] | None = None) -> dict[int, int]:
    """Resolve ``handles`` over one connection with up to ``window`` in flight; returns counts by code.
    ``on_answer(handle, response, seconds)`` sees every decoded answer (traces)."""
    from .httpload import LoadError, check_loopback

    check_loopback(host)
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await asyncio.wait_for(loop.create_connection(_Collector, host, port), timeout_s)
    except (OSError, TimeoutError) as exc:
        raise LoadError(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from None
    codec = Codec()
    codes: dict[int, int] = {}
    sem = asyncio.Semaphore(window)

    async def one(rid: int, handle: str) -> None:
        async with sem:
            fut: asyncio.Future[Response] = loop.create_future()
            proto.waiting[rid] = fut
            t0 = time.perf_counter()
            transport.write(codec.frame(Request(rid, OpCode.RESOLUTION, handle, flags)))
            try:
                resp = await asyncio.wait_for(fut, timeout_s)
            except (TimeoutError, ConnectionError):
                proto.waiting.pop(rid, None)
                codes[-1] = codes.get(-1, 0) + 1
                return
            codes[resp.code] = codes.get(resp.code, 0) + 1
            if on_answer is not None:
                on_answer(handle, resp, time.perf_counter() - t0)

    try:
        await asyncio.gather(*(one(i + 1, h) for i, h in enumerate(handles)))
    finally:
        transport.close()
    return codes
