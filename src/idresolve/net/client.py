"""Asyncio binary-protocol clients: one pipelined TCP connection per endpoint, many requests in flight.

``ClientPool.request(host, port, request, timeout_s)`` sends a request (its ``request_id`` is replaced by
the connection's own) and returns the ``Response``, or raises ``asyncio.TimeoutError`` / ``ConnectionError``.
A ``LinkModel`` (``links.py``) may delay each direction of each request, or drop it: the delay is paid in
the transport, by timers (``delays.DelayTimers``, trimmed to last what was asked on average), so every hop
of a resolution pays it and node logic never sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from ..core.errors import DecodeError
from ..core.wire import Codec, FrameDecoder, Request, Response, ResponseMemo, decode_message
from .delays import DelayTimers

# (host, port) -> (one-way delay out in seconds or None if lost, one-way delay back or None if lost)
DelayFn = Callable[[str, int], tuple[float | None, float | None]]


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.decoder = FrameDecoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except DecodeError as exc:
            self.conn.fail(ConnectionError(f"bad framing from {self.conn.address}: {exc.message}"))
            return
        for payload in payloads:
            try:
                msg = decode_message(payload, self.conn.memo)
            except DecodeError:
                continue  # an undecodable answer: its request will time out
            if isinstance(msg, Response):
                self.conn.deliver(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.fail(ConnectionError(f"connection to {self.conn.address} closed"))


class Connection:
    """One TCP connection with pipelined requests matched to answers by request id."""

    def __init__(self, host: str, port: int, codec: Codec, delay: DelayFn | None,
                 memo: ResponseMemo | None = None, timers: DelayTimers | None = None) -> None:
        self.host, self.port, self.codec, self.delay = host, port, codec, delay
        self.memo = memo
        self.timers = timers if timers is not None else DelayTimers()
        self.address = f"{host}:{port}"
        self.transport: asyncio.Transport | None = None
        # request id -> (future, delay in seconds to apply to the answer on its way back)
        self.pending: dict[int, tuple[asyncio.Future[Response], float]] = {}
        self._ids = itertools.count(1)
        self.closed = False
        # Requests written in one event-loop pass leave in one write (one send() for many hops).
        self._out: list[bytes] = []
        self._flush_soon = False

    async def connect(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: _ClientProtocol(self), self.host, self.port), timeout_s)

    def deliver(self, msg: Response) -> None:
        entry = self.pending.pop(msg.request_id, None)
        if entry is None:
            return
        fut, back = entry
        if fut.done():
            return
        if back:
            self.timers.call_later(back, _set_result, fut, msg)
        else:
            fut.set_result(msg)

    def fail(self, exc: Exception) -> None:
        self.closed = True
        self._out.clear()
        pending, self.pending = self.pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def request(self, req: Request, timeout_s: float) -> Response:
        if self.closed or self.transport is None:
            raise ConnectionError(f"connection to {self.address} is closed")
        rid = next(self._ids) & 0xFFFFFFFF
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Response] = loop.create_future()
        frame = self.codec.frame_request(req, rid)
        out, back = (0.0, 0.0) if self.delay is None else self.delay(self.host, self.port)
        self.pending[rid] = (fut, back or 0.0)
        timer = loop.call_later(timeout_s, _time_out, fut, self.pending, rid)
        try:
            if out is None or back is None:
                pass  # lost on the link: the timer will fire
            elif out > 0:
                self.timers.call_later(out, self._write, frame)
            else:
                self._out.append(frame)
                if not self._flush_soon:
                    self._flush_soon = True
                    loop.call_soon(self._flush)
            return await fut
        finally:
            timer.cancel()
            self.pending.pop(rid, None)

    def _write(self, frame: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(frame)

    def _flush(self) -> None:
        self._flush_soon = False
        out, self._out = self._out, []
        if out and not self.closed and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        self.fail(ConnectionError("closed"))


def _set_result(fut: asyncio.Future[Response], msg: Response) -> None:
    if not fut.done():
        fut.set_result(msg)


def _time_out(fut: asyncio.Future[Response], pending: dict[int, tuple[asyncio.Future[Response], float]],
              rid: int) -> None:
    pending.pop(rid, None)
    if not fut.done():
        fut.set_exception(TimeoutError())


class ClientPool:
    """Connections by endpoint, opened on first use and reopened after a failure."""

    def __init__(self, *, delay: DelayFn | None = None, connect_timeout_s: float = 5.0) -> None:
        self.codec = Codec()
        self.memo = ResponseMemo()  # answers repeat (referrals): decode each distinct one once
        self.timers = DelayTimers()  # link delays, learned per pool (one per node)
        self.delay = delay
        self.connect_timeout_s = connect_timeout_s
        self._conns: dict[tuple[str, int], Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[Connection]] = {}

    async def _get(self, host: str, port: int) -> Connection:
        key = (host, port)
        conn = self._conns.get(key)
        if conn is not None and not conn.closed:
            return conn
        waiting = self._connecting.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Connection] = loop.create_future()
        self._connecting[key] = fut
        try:
            conn = Connection(host, port, self.codec, self.delay, self.memo, self.timers)
            await conn.connect(self.connect_timeout_s)
            self._conns[key] = conn
            fut.set_result(conn)
            return conn
        except BaseException as exc:
            fut.set_exception(ConnectionError(f"cannot connect to {host}:{port}: {exc!r}"))
            fut.exception()  # mark retrieved
            raise ConnectionError(f"cannot connect to {host}:{port}") from exc
        finally:
            self._connecting.pop(key, None)

    async def request(self, host: str, port: int, req: Request, timeout_s: float = 5.0) -> Response:
        conn = await self._get(host, port)
        return await conn.request(req, timeout_s)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
