"""Asyncio binary-protocol clients: one pipelined TCP connection per endpoint, many requests in flight.

``ClientPool.request(host, port, request, timeout_s)`` sends a request (its ``request_id`` is replaced by
the connection's own) and returns the ``Response``, or raises ``asyncio.TimeoutError`` / ``ConnectionError``.
A ``LinkModel`` (``links.py``) may delay each direction of each request, or drop it: the delay is paid in
the transport, by timers (``delays.DelayTimers``, trimmed to last what was asked on average), so every hop
of a resolution pays it and node logic never sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..core.errors import DecodeError
from ..core.messages import Request, Response
from ..core.wire import ResponseMemo
from ..core.wire_connection import ClientConnection
from .delays import LATE_BIN_S, DelayTimers

# (host, port) -> (one-way delay out in seconds or None if lost, one-way delay back or None if lost)
DelayFn = Callable[[str, int], tuple[float | None, float | None]]


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            answers = self.conn.wire.receive_data(data)
        except DecodeError as exc:
            self.conn.fail(ConnectionError(f"bad framing from {self.conn.address}: {exc.message}"))
            return
        for token, msg in answers:  # an undecodable answer is dropped: its request will time out
            self.conn.deliver(token, msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.fail(ConnectionError(f"connection to {self.conn.address} closed"))


# A pending request's token: its future, and the delay to apply to its answer on the way back.
_Token = tuple["asyncio.Future[Response]", float]


class Connection:
    """One TCP connection with pipelined requests: the socket side of a ``ClientConnection``."""

    def __init__(self, host: str, port: int, delay: DelayFn | None, memo: ResponseMemo | None = None,
                 timers: DelayTimers | None = None) -> None:
        self.host, self.port, self.delay = host, port, delay
        self.wire: ClientConnection[_Token] = ClientConnection(memo=memo)
        self.timers = timers if timers is not None else DelayTimers()
        self.address = f"{host}:{port}"
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # Requests written in one event-loop pass leave in one write (one send() for many hops).
        self._out: list[bytes] = []
        self._flush_soon = False

    async def connect(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: _ClientProtocol(self), self.host, self.port), timeout_s)

    def deliver(self, token: _Token, msg: Response) -> None:
        fut, back = token
        if fut.done():
            return
        if back:
            self.timers.call_later(back, _set_result, fut, msg)
        else:
            fut.set_result(msg)

    def fail(self, exc: Exception) -> None:
        self.closed = True
        self._out.clear()
        pending, self.wire.pending = self.wire.pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def request(self, req: Request, timeout_s: float) -> Response:
        if self.closed or self.transport is None:
            raise ConnectionError(f"connection to {self.address} is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Response] = loop.create_future()
        out, back = (0.0, 0.0) if self.delay is None else self.delay(self.host, self.port)
        rid, frame = self.wire.send(req, (fut, back or 0.0))
        timer = loop.call_later(timeout_s, self._time_out, fut, rid)
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
            self.wire.forget(rid)

    def _time_out(self, fut: asyncio.Future[Response], rid: int) -> None:
        self.wire.forget(rid)
        if not fut.done():
            fut.set_exception(TimeoutError())

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


class ClientPool:
    """Connections by endpoint, opened on first use and reopened after a failure."""

    def __init__(self, *, delay: DelayFn | None = None, connect_timeout_s: float = 5.0) -> None:
        self.memo = ResponseMemo()  # answers repeat (referrals): decode each distinct one once
        self.timers = DelayTimers()  # link delays, learned per pool (one per node)
        self.delay = delay
        self.connect_timeout_s = connect_timeout_s
        self._conns: dict[tuple[str, int], Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[Connection]] = {}

    async def connect(self, host: str, port: int) -> None:
        """Open the connection to ``host:port`` now (raises ``ConnectionError`` when it cannot)."""
        await self._get(host, port)

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
            conn = Connection(host, port, self.delay, self.memo, self.timers)
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

    def metrics(self) -> dict[str, tuple[str, str, Any]]:
        """The latency model's counters for this pool's traffic, for ``/metrics`` (empty without one)."""
        stats = getattr(self.delay, "stats", None)
        if stats is None:
            return {}
        return {
            "idresolve_link_delays": ("counter", "One-way delays applied by the latency model", stats.delays),
            "idresolve_link_delay_seconds": ("counter", "Seconds of delay applied by the latency model",
                                             stats.delay_s_total),
            "idresolve_link_lost": ("counter", "Requests dropped by the latency model", stats.lost),
            "idresolve_link_timer_late_seconds": (
                "gauge", "Mean over the delay timers of (actual - intended) firing time: what is left of their bias",
                self.timers.mean_late_s),
            "idresolve_link_timer_late": (
                "counter", "Delay timers by how late they fired (late_us: the lower bound of a 100 us bin)",
                {(("late_us", str(round(b * LATE_BIN_S * 1e6))),): n for b, n in sorted(self.timers.late_bins.items())}),
        }

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
