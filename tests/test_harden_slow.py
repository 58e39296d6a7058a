"""Slow and hostile clients: slowloris, half-open and idle connections over HTTP and the binary protocol,
peers that never read, and the bounds on connections and requests in flight. Every wait has a deadline;
network: 127.0.0.1.
"""


from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from fuzzutil import (
    ADMIN,
    IO_TIMEOUT_S,
    LOOPBACK,
    NOW,
    SECRET,
    LoopClock,
    RawBinary,
    all_connections_gone,
    fresh_node,
    good_request_on_a_fresh_connection,
    held_then_closed,
    wait_until,
)
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.messages import Request
from idresolve.core.values import string_value
from idresolve.core.wire import Codec
from idresolve.net.client import ClientPool
from idresolve.net.server import Limits
from idresolve.nodes.auth import parse_identity
from idresolve.nodes.pipeline import RecursiveNode
from idresolve.nodes.recursive import RecursiveResolver, Upstream
from idresolve.runtime.hosted import HostedAuthoritative, HostedRecursive, HostSettings

codec = Codec()


# ==================================================================================================
# 5. Slow clients: slowloris, half-open and idle connections, connection and in-flight limits
#
# The idle timeouts are the defaults users get (HTTP 30 s, binary 300 s). They pass on the node's own clock
# (``LoopClock``: the event loop's time, moved by the test), so each test asserts what the node did and
# when by its clock, in order: the connection is still held just before the timeout, closed after it.
# Real time only bounds the waits (hang guards).

HTTP_IDLE_S = HostSettings().http_idle_timeout_s
BINARY_IDLE_S = Limits().idle_timeout_s


@dataclass
class Slow:
    hosted: HostedAuthoritative
    http_port: int
    tcp_port: int
    clock: LoopClock

    @property
    def conns(self) -> Any:
        server = self.hosted.listeners.tcp
        assert server is not None
        return server.conns

    def http_connections(self) -> int:
        runner = self.hosted.listeners.runner
        assert runner is not None and runner.server is not None
        return len(runner.server.connections)


@pytest.fixture
async def slow() -> AsyncIterator[Slow]:
    node = fresh_node()
    caller = node.authenticate(parse_identity(ADMIN), SECRET.encode())
    node.put_record("88.100/BIG", [string_value(i, "DESC", "z" * 4000) for i in range(1, 16)], caller=caller, now=NOW)
    # Shedding off: the burst test counts exactly `max_connections` answers of code 1 from 24 connections
    # opened at once in this loop, and a code 3 in their place would be the shedder's doing, not the limit's.
    hosted = HostedAuthoritative(node, HostSettings(limits=Limits(max_connections=8), shed_lag_s=0))
    clock = LoopClock()
    addrs = await hosted.start(http=f"{LOOPBACK}:0", tcp=f"{LOOPBACK}:0")
    assert addrs.http is not None and addrs.tcp is not None
    try:
        yield Slow(hosted, addrs.http[1], addrs.tcp[1], clock)
    finally:
        await hosted.stop()
        clock.close()


async def dribble_until_closed(slow: Slow, conn: RawBinary, data: bytes, held: Any, *, step_s: float) -> float | None:
    """Send ``data`` a byte at a time, the node's clock moved ``step_s`` after each: how much of the node's
    clock had passed when it let go of the connection, or None if it never did."""
    t0 = slow.clock.now()
    for i in range(len(data)):
        try:
            conn.writer.write(data[i : i + 1])
            await conn.writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.002)  # the byte on its way over loopback (what it carries does not matter)
        await slow.clock.advance(step_s)
        if not held():
            break
    else:
        return None
    assert await wait_until(lambda: held() == 0)
    return slow.clock.now() - t0


HTTP_PARTIAL = b"GET /api/handles/88.100/R1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 200


async def test_http_slowloris_partial_headers_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        assert await wait_until(lambda: slow.http_connections() == 1)
        closed = await dribble_until_closed(slow, conn, HTTP_PARTIAL, slow.http_connections, step_s=HTTP_IDLE_S / 4)
        assert closed is not None, "a dribbling HTTP client was never closed"
        assert HTTP_IDLE_S <= closed <= 2 * HTTP_IDLE_S + HTTP_IDLE_S / 4 + 1, closed  # on the node's clock
        assert await conn.closed_by_peer(IO_TIMEOUT_S)
    finally:
        await conn.close()


async def test_http_partial_request_line_then_silence_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        await conn.send(b"GET /api/hand")
        assert await wait_until(lambda: slow.http_connections() == 1)
        await held_then_closed(slow.clock, slow.http_connections, HTTP_IDLE_S, conn.closed_by_peer)
    finally:
        await conn.close()


async def test_http_idle_keepalive_connection_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        await conn.send(b"GET /api/handles/88.100/R1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 200")
        await held_then_closed(slow.clock, slow.http_connections, HTTP_IDLE_S, conn.closed_by_peer)
    finally:
        await conn.close()


def _put_head(length: int) -> bytes:
    auth = base64.b64encode(f"{ADMIN}:{SECRET}".encode()).decode()
    return (f"PUT /api/handles/88.100/slowbody HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


SLOW_BODY = b'{"values":[{"index":1,"type":"URL","data":"' + b"b" * 200 + b'"}]}'


async def test_http_slow_body_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        await conn.send(_put_head(len(SLOW_BODY)))
        assert await wait_until(lambda: slow.http_connections() == 1)
        closed = await dribble_until_closed(slow, conn, SLOW_BODY[:-1], slow.http_connections, step_s=HTTP_IDLE_S / 4)
        assert closed is not None, "a body dribbled byte by byte held the handler for ever"
        assert HTTP_IDLE_S <= closed <= 2 * HTTP_IDLE_S + 1, closed  # the body timeout, on the node's clock
    finally:
        await conn.close()


async def test_http_client_gone_mid_body_logs_no_internal_error(slow: Slow, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    conn = await RawBinary.open(slow.http_port)
    await conn.send(_put_head(len(SLOW_BODY)) + SLOW_BODY[:20])
    assert await wait_until(lambda: slow.http_connections() == 1)  # the server has the request
    conn.writer.transport.abort()
    assert await wait_until(lambda: slow.http_connections() == 0)  # and let go of it
    grace = time.monotonic() + 1.0
    while time.monotonic() < grace and not any(r.levelno >= logging.ERROR for r in caplog.records):
        await asyncio.sleep(0.01)  # bounded: the handler learns of the reset a little after the close
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_binary_partial_frame_then_silence_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.tcp_port)
    try:
        await conn.send(codec.frame(Request(1, OpCode.RESOLUTION, "88.100/R1"))[:7])
        assert await wait_until(lambda: slow.conns.count == 1)
        await held_then_closed(slow.clock, lambda: slow.conns.count, BINARY_IDLE_S, conn.closed_by_peer)
    finally:
        await conn.close()


async def test_binary_slowloris_partial_frame_is_closed(slow: Slow) -> None:
    """Bytes that never complete a frame are not activity: the node closes after one to two idle periods."""
    conn = await RawBinary.open(slow.tcp_port)
    frame = codec.frame(Request(1, OpCode.RESOLUTION, "88.100/R1" + "x" * 60))
    try:
        assert await wait_until(lambda: slow.conns.count == 1)
        closed = await dribble_until_closed(slow, conn, frame[:-1], lambda: slow.conns.count, step_s=BINARY_IDLE_S / 4)
        assert closed is not None, "a dribbling binary client was never closed"
        assert BINARY_IDLE_S <= closed <= 2 * BINARY_IDLE_S + BINARY_IDLE_S / 4 + 1, closed
    finally:
        await conn.close()


async def test_binary_half_closed_client_gets_its_answers_then_the_close(slow: Slow) -> None:
    """The EOF closes the connection: with the node's clock not moved at all, so not its idle timer."""
    conn = await RawBinary.open(slow.tcp_port)
    try:
        await conn.send(b"".join(codec.frame(Request(i, OpCode.RESOLUTION, "88.100/R1")) for i in range(5)))
        conn.writer.write_eof()
        got = await conn.read_all(IO_TIMEOUT_S)  # raises if the node does not close (hang guard)
        assert sorted(r.request_id for r in got) == list(range(5))
        assert all(r.code == ResponseCode.SUCCESS for r in got)
        assert slow.clock.offset == 0 and await wait_until(lambda: slow.conns.count == 0)
    finally:
        await conn.close()


async def _pipelined_without_reading(slow: Slow, n: int) -> RawBinary:
    conn = await RawBinary.open(slow.tcp_port)
    conn.writer.transport.pause_reading()  # a peer that never reads its answers
    req = b"".join(codec.frame(Request(i, OpCode.RESOLUTION, "88.100/BIG")) for i in range(n))
    conn.writer.write(req)
    return conn


def _max_write_buffer(slow: Slow) -> int:
    return max((p.transport.get_write_buffer_size() for p in slow.conns.open if p.transport is not None), default=0)


async def test_binary_peer_that_does_not_read_cannot_grow_the_write_buffer(slow: Slow) -> None:
    conn = await _pipelined_without_reading(slow, 400)
    try:
        peak = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:  # bounded observation
            peak = max(peak, _max_write_buffer(slow))
            await asyncio.sleep(0.01)
        assert peak <= 8 * 1024 * 1024, f"write buffer reached {peak} bytes"
    finally:
        conn.writer.transport.abort()
        await conn.close()


async def test_binary_peer_that_never_reads_is_dropped_after_the_idle_timeout(slow: Slow) -> None:
    conn = await _pipelined_without_reading(slow, 300)
    try:
        assert await wait_until(lambda: slow.conns.count == 1)
        await held_then_closed(slow.clock, lambda: slow.conns.count, BINARY_IDLE_S)  # it reads nothing
    finally:
        conn.writer.transport.abort()
        await conn.close()


async def test_connections_per_server_are_bounded_under_a_burst(slow: Slow) -> None:
    limit = 8  # Limits(max_connections=8) in the fixture
    conns = await asyncio.gather(*(RawBinary.open(slow.tcp_port) for _ in range(3 * limit)))
    try:
        async def outcome(c: RawBinary) -> str:
            try:
                await c.send(codec.frame(Request(5, OpCode.RESOLUTION, "88.100/R1")))
                return "answered" if (await c.frame(3.0)).code == ResponseCode.SUCCESS else "other"
            except (asyncio.IncompleteReadError, ConnectionError):
                return "closed"

        results = Counter(await asyncio.gather(*(outcome(c) for c in conns)))
        assert results["answered"] == limit and results["closed"] == 2 * limit, results
        assert slow.conns.count <= limit + 2 * limit  # the refused ones are on their way out
    finally:
        for c in conns:
            await c.close()
    assert await all_connections_gone(slow.hosted.listeners.tcp)
    assert (await good_request_on_a_fresh_connection(slow.tcp_port)).code == ResponseCode.SUCCESS


async def test_inflight_requests_are_bounded_per_connection() -> None:
    """A recursive node whose only root never answers: beyond max_inflight on one connection, code 3 at once;
    another connection has its own budget."""
    transports: list[asyncio.BaseTransport] = []

    class Hole(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)

    loop = asyncio.get_running_loop()
    hole = await loop.create_server(Hole, LOOPBACK, 0)
    hole_port = hole.sockets[0].getsockname()[1]
    rec = HostedRecursive(RecursiveNode("rec-inflight", RecursiveResolver([Upstream("hole", LOOPBACK, hole_port)])),
                          ClientPool(connect_timeout_s=1.0),
                          HostSettings(limits=Limits(max_inflight=3), hop_timeout_s=0.5, client_rate=None))
    addrs = await rec.start(http=None, tcp=f"{LOOPBACK}:0")
    assert addrs.tcp is not None
    a = await RawBinary.open(addrs.tcp[1])
    b = await RawBinary.open(addrs.tcp[1])
    try:
        await a.send(b"".join(codec.frame(Request(i, OpCode.RESOLUTION, f"88.118.8/A{i}")) for i in range(7)))
        await b.send(b"".join(codec.frame(Request(100 + i, OpCode.RESOLUTION, f"88.118.8/B{i}")) for i in range(3)))
        first_a = [await a.frame() for _ in range(4)]  # before any upstream timeout: refused at once
        assert sorted(r.request_id for r in first_a) == [3, 4, 5, 6]
        assert all(r.code == ResponseCode.SERVER_TOO_BUSY for r in first_a)
        rest_a = [await a.frame() for _ in range(3)]
        got_b = [await b.frame() for _ in range(3)]
        assert sorted(r.request_id for r in rest_a) == [0, 1, 2]
        assert sorted(r.request_id for r in got_b) == [100, 101, 102]
        assert all(r.code == ResponseCode.ERROR for r in rest_a + got_b)  # the silent root timed out
    finally:
        await a.close()
        await b.close()
        await rec.stop()
        hole.close()
        for t in transports:
            t.close()
        await hole.wait_closed()
