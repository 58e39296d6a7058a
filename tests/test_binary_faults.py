"""The binary server under faults: garbage frames, oversized lengths, unknown opcodes, pipelining, idle
clients, and a recursive node whose upstream never answers. Real sockets on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from fuzzutil import LoopClock, held_then_closed, wait_until
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.messages import FLAG_TRACE, Request, Response
from idresolve.core.site import Interface, Server, SiteInfo
from idresolve.core.values import string_value
from idresolve.core.wire import MAX_FRAME_BYTES, Codec, decode_message
from idresolve.net.blocking import BlockingClient
from idresolve.net.client import ClientPool
from idresolve.net.server import Limits
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import prefix_record
from idresolve.nodes.pipeline import RecursiveNode
from idresolve.nodes.recursive import TIMEOUT_CODE, RecursiveResolver, Upstream
from idresolve.runtime.config import NodeConfig
from idresolve.runtime.hosted import HostedAuthoritative, HostedRecursive, HostSettings
from idresolve.runtime.serve import RunningNode, serve_node
from idresolve.store.memory import MemoryStore

SECRET = "binary-faults-secret"
IO_TIMEOUT_S = 5.0
RECORDS = 20
IDLE_S = Limits().idle_timeout_s  # the default, on the node's clock (LoopClock)
codec = Codec()


# --------------------------------------------------------------------------------------------------
# A node with the binary protocol, and raw connections to it


@dataclass
class TcpNode:
    running: RunningNode
    port: int


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[TcpNode]:
    cfg = NodeConfig(name="faults", prefixes=("88.100",), http="127.0.0.1:0", tcp="127.0.0.1:0", udp="127.0.0.1:0",
                     data_dir=tmp_path, store="memory", admin_secret=SECRET)
    ready: asyncio.Future[RunningNode] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_node(cfg, shutdown_trigger=stop.wait(), on_ready=ready.set_result))
    running = await asyncio.wait_for(asyncio.shield(ready), 10)
    assert running.addresses is not None and running.addresses.tcp is not None
    port = running.addresses.tcp[1]

    def seed() -> Response:
        with BlockingClient("127.0.0.1", port, timeout_s=IO_TIMEOUT_S, auth=("300:0.NA/88.100", SECRET.encode())) as c:
            return c.batch_create([(f"88.100/R{i}", (string_value(1, "URL", f"https://r{i}.example"),))
                                   for i in range(RECORDS)])

    assert (await asyncio.to_thread(seed)).code == ResponseCode.SUCCESS
    try:
        yield TcpNode(running, port)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


class Raw:
    """A raw TCP connection: write any bytes, read frames, see the close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT_S)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, req: Request) -> Response:
        await self.send(codec.frame(req))
        return await self.frame()

    async def frame(self, timeout_s: float = IO_TIMEOUT_S) -> Response:
        header = await asyncio.wait_for(self.reader.readexactly(4), timeout_s)
        (n,) = struct.unpack(">I", header)
        msg = decode_message(await asyncio.wait_for(self.reader.readexactly(n), timeout_s))
        assert isinstance(msg, Response)
        return msg

    async def closed(self, timeout_s: float = IO_TIMEOUT_S) -> bool:
        """True when the peer closes the connection (EOF) within the timeout."""
        rest = await asyncio.wait_for(self.reader.read(), timeout_s)
        return rest == b"" or self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), IO_TIMEOUT_S)


@pytest.fixture
async def raw(node: TcpNode) -> AsyncIterator[Raw]:
    conn = await Raw.open(node.port)
    try:
        yield conn
    finally:
        await conn.close()


def frame_of(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


GOOD = Request(4242, OpCode.RESOLUTION, "88.100/R1")


async def assert_still_usable(conn: Raw) -> None:
    resp = await conn.request(GOOD)
    assert (resp.request_id, resp.code, resp.handle) == (4242, ResponseCode.SUCCESS, "88.100/R1")


# --------------------------------------------------------------------------------------------------
# Garbage that can be answered: the connection goes on


async def test_a_good_request(raw: Raw) -> None:
    await assert_still_usable(raw)
    resp = await raw.request(Request(7, OpCode.RESOLUTION, "88.100/Nope"))
    assert (resp.request_id, resp.code) == (7, ResponseCode.HANDLE_NOT_FOUND)


@pytest.mark.parametrize("payload", [
    b"\xc1",  # a byte msgpack never uses
    b"this is not msgpack at all",
    msgpack.packb({"a": 1}),
    msgpack.packb([0, 1, 1, 0, "88.100/R1"]),  # five elements
    msgpack.packb([0, "x", 1, 0, "88.100/R1", {}]),
    codec.encode(GOOD)[:-3],  # a valid request cut short inside its frame
])
async def test_undecodable_frame_gets_code_4_and_the_connection_goes_on(raw: Raw, payload: bytes) -> None:
    await raw.send(frame_of(payload))
    resp = await raw.frame()
    assert resp.code == ResponseCode.PROTOCOL_ERROR and resp.request_id == 0
    await assert_still_usable(raw)


async def test_infinite_float_in_a_value_gets_code_4_and_the_connection_goes_on(raw: Raw) -> None:
    bad = msgpack.packb([0, 1, OpCode.CREATE_HANDLE, 0, "88.100/x",
                         {"v": [[1, "URL", b"x", 60, 0, 14, [["88.100/r", float("inf")]]]]}], use_bin_type=True)
    await raw.send(frame_of(bad) + codec.frame(GOOD))
    first = await raw.frame()
    assert first.code == ResponseCode.PROTOCOL_ERROR
    second = await raw.frame()
    assert second.code == ResponseCode.SUCCESS and second.request_id == GOOD.request_id


async def test_unknown_opcode_gets_code_5(raw: Raw) -> None:
    resp = await raw.request(Request(99, 9999, "88.100/R1"))
    assert (resp.request_id, resp.opcode, resp.code) == (99, 9999, ResponseCode.OPERATION_NOT_SUPPORTED)
    await assert_still_usable(raw)


async def test_a_response_sent_as_a_request_gets_code_4(raw: Raw) -> None:
    await raw.send(codec.frame(Response(31, OpCode.RESOLUTION, ResponseCode.SUCCESS, "88.100/R1")))
    resp = await raw.frame()
    assert (resp.request_id, resp.code) == (31, ResponseCode.PROTOCOL_ERROR)
    await assert_still_usable(raw)


async def test_frame_split_across_writes_is_reassembled(raw: Raw) -> None:
    data = codec.frame(GOOD)
    for i in range(len(data)):  # one byte per write
        await raw.send(data[i : i + 1])
    resp = await raw.frame()
    assert resp.code == ResponseCode.SUCCESS and resp.request_id == GOOD.request_id


async def test_bad_credentials_are_answered_not_fatal(raw: Raw) -> None:
    req = Request(5, OpCode.CREATE_HANDLE, "88.100/X", values=(string_value(1, "URL", "u"),),
                  auth=("300:0.NA/88.100", b"wrong"))
    assert (await raw.request(req)).code == ResponseCode.AUTHENTICATION_FAILED
    assert (await raw.request(Request(6, OpCode.CREATE_HANDLE, "88.100/X",
                                      values=(string_value(1, "URL", "u"),)))).code == \
        ResponseCode.AUTHENTICATION_NEEDED
    await assert_still_usable(raw)


# --------------------------------------------------------------------------------------------------
# Garbage that cannot be resynchronised: answered, then the connection is closed


@pytest.mark.parametrize("length", [MAX_FRAME_BYTES + 1, 0xFFFFFFFF])
async def test_oversized_length_prefix_closes_the_connection(node: TcpNode, raw: Raw, length: int) -> None:
    await raw.send(struct.pack(">I", length) + b"x" * 16)
    resp = await raw.frame()
    assert resp.code == ResponseCode.PROTOCOL_ERROR
    assert await raw.closed()
    fresh = await Raw.open(node.port)  # the node itself is fine
    try:
        await assert_still_usable(fresh)
    finally:
        await fresh.close()


async def test_zero_length_frame_closes_the_connection(raw: Raw) -> None:
    await raw.send(b"\x00\x00\x00\x00")
    assert (await raw.frame()).code == ResponseCode.PROTOCOL_ERROR
    assert await raw.closed()


async def test_truncated_frame_then_eof_leaves_the_node_serving(node: TcpNode) -> None:
    conn = await Raw.open(node.port)
    data = codec.frame(GOOD)
    await conn.send(data[: len(data) // 2])
    conn.writer.write_eof()
    assert await conn.closed()  # the node closes its side; no answer to half a frame
    await conn.close()
    fresh = await Raw.open(node.port)
    try:
        await assert_still_usable(fresh)
    finally:
        await fresh.close()


# --------------------------------------------------------------------------------------------------
# Pipelining


async def test_many_pipelined_requests_are_matched_by_request_id(raw: Raw) -> None:
    # Handles repeat (the node answers repeats from its encoded-answer cache), ids are arbitrary.
    reqs = [Request(2**32 - 1 - 7 * i, OpCode.RESOLUTION, f"88.100/R{i % (RECORDS + 5)}") for i in range(500)]
    await raw.send(b"".join(codec.frame(r) for r in reqs))
    answers: dict[int, Response] = {}
    for _ in reqs:
        resp = await raw.frame()
        assert resp.request_id not in answers
        answers[resp.request_id] = resp
    for r in reqs:
        resp = answers[r.request_id]
        i = int(r.handle.rsplit("R", 1)[1])
        assert resp.handle == r.handle
        if i < RECORDS:
            assert resp.code == ResponseCode.SUCCESS
            assert [v.data for v in resp.values if v.type == "URL"] == [f"https://r{i}.example".encode()]
        else:
            assert resp.code == ResponseCode.HANDLE_NOT_FOUND


async def test_pipelined_requests_with_garbage_in_between(raw: Raw) -> None:
    stream = b"".join([codec.frame(Request(1, OpCode.RESOLUTION, "88.100/R1")), frame_of(b"\xc1"),
                       codec.frame(Request(2, 9999, "88.100/R2")), codec.frame(Request(3, OpCode.RESOLUTION,
                                                                                     "88.100/R3"))])
    await raw.send(stream)
    got = [await raw.frame() for _ in range(4)]
    assert sorted((r.request_id, r.code) for r in got) == [(0, 4), (1, 1), (2, 5), (3, 1)]


# --------------------------------------------------------------------------------------------------
# Limits: idle connections, connection count, requests in flight


@pytest.fixture
async def limited() -> AsyncIterator[tuple[HostedAuthoritative, int, LoopClock]]:
    """A node with the default idle timeout (300 s) on a clock the test moves (``fuzzutil.LoopClock``)."""
    node = AuthoritativeNode(MemoryStore(), ["88.100"], name="limited")
    node.bootstrap_record(prefix_record("88.100", SECRET))
    hosted = HostedAuthoritative(node, HostSettings(limits=Limits(max_connections=3)))
    clock = LoopClock()
    addrs = await hosted.start(http=None, tcp="127.0.0.1:0")
    assert addrs.tcp is not None
    try:
        yield hosted, addrs.tcp[1], clock
    finally:
        await hosted.stop()
        clock.close()


def _held(hosted: HostedAuthoritative) -> Any:
    server = hosted.listeners.tcp
    assert server is not None
    return lambda: server.conns.count


async def test_a_silent_client_is_closed_after_the_idle_timeout(limited: tuple[HostedAuthoritative, int, LoopClock]) -> None:
    hosted, port, clock = limited
    conn = await Raw.open(port)
    try:
        assert await wait_until(lambda: _held(hosted)() == 1)
        await held_then_closed(clock, _held(hosted), IDLE_S, conn.closed)  # after one to two idle periods
    finally:
        await conn.close()


async def test_a_busy_client_is_not_closed_by_the_idle_timeout(limited: tuple[HostedAuthoritative, int, LoopClock]) -> None:
    hosted, port, clock = limited
    conn = await Raw.open(port)
    try:
        for n in range(12):  # three idle periods of the node's clock, a request every quarter period
            resp = await conn.request(Request(n, OpCode.RESOLUTION, "0.NA/88.100"))
            assert resp.code == ResponseCode.SUCCESS and resp.request_id == n
            await clock.advance(IDLE_S / 4)
            assert _held(hosted)() == 1, f"a busy connection was closed after {n + 1} requests"
        assert clock.offset == 3 * IDLE_S
    finally:
        await conn.close()


async def test_connections_beyond_the_limit_are_closed(limited: tuple[HostedAuthoritative, int, LoopClock]) -> None:
    _, port, _ = limited
    conns = [await Raw.open(port) for _ in range(3)]
    try:
        for c in conns:
            assert (await c.request(Request(1, OpCode.RESOLUTION, "0.NA/88.100"))).code == ResponseCode.SUCCESS
        extra = await Raw.open(port)
        try:
            assert await extra.closed()
        finally:
            await extra.close()
        await conns[0].close()
        conns = conns[1:]

        async def accepted_again() -> bool:
            deadline = time.monotonic() + IO_TIMEOUT_S
            while time.monotonic() < deadline:  # bounded: the server notices the close asynchronously
                c = await Raw.open(port)
                try:
                    await c.send(codec.frame(Request(9, OpCode.RESOLUTION, "0.NA/88.100")))
                    try:
                        if (await c.frame(timeout_s=1.0)).code == ResponseCode.SUCCESS:
                            return True
                    except (asyncio.IncompleteReadError, ConnectionError):
                        pass
                finally:
                    await c.close()
            return False

        assert await accepted_again()
    finally:
        for c in conns:
            await c.close()


# --------------------------------------------------------------------------------------------------
# A recursive node whose upstream never answers


class BlackHole(asyncio.Protocol):
    """Accepts connections, reads everything (``received``: every chunk, in order), answers nothing."""

    transports: list[asyncio.BaseTransport]
    received: list[bytes]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


#: Upstream hop timeouts pass on the node's clock (``LoopClock``): a test waits, in real time, until the
#: recursive node has asked the silent node, then moves the clock past the timeout and reads the answer.
HOP_S = 30.0
HOLE_RECEIVED: list[bytes] = []


async def asked_then_timed_out(clock: LoopClock, asked_before: int = 0) -> None:
    """Once the black hole has been asked (more than ``asked_before`` chunks), let the hop timeout pass."""
    assert await wait_until(lambda: len(HOLE_RECEIVED) > asked_before), "the silent node was never asked"
    await clock.advance(HOP_S)


@pytest.fixture
async def black_hole() -> AsyncIterator[Upstream]:
    transports: list[asyncio.BaseTransport] = []
    HOLE_RECEIVED.clear()

    def factory() -> BlackHole:
        p = BlackHole()
        p.transports, p.received = transports, HOLE_RECEIVED
        return p

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Upstream("black-hole", "127.0.0.1", port)
    finally:
        server.close()
        for t in transports:
            t.close()
        await server.wait_closed()


async def _recursive(roots: list[Upstream], *, hop_timeout_s: float, limits: Limits | None = None,
                     http: bool = False) -> tuple[HostedRecursive, int, str]:
    hosted = HostedRecursive(RecursiveNode("rec-test", RecursiveResolver(roots)), ClientPool(connect_timeout_s=1.0),
                             HostSettings(limits=limits or Limits(), hop_timeout_s=hop_timeout_s))
    addrs = await hosted.start(http="127.0.0.1:0" if http else None, tcp="127.0.0.1:0")
    assert addrs.tcp is not None
    return hosted, addrs.tcp[1], addrs.http_url()


async def test_recursive_with_a_silent_root_answers_an_error_in_bounded_time(black_hole: Upstream) -> None:
    """The answer comes when the hop timeout has passed on the node's clock (30 s of it, within a few real
    seconds: the timer, not the wall clock, decides)."""
    clock = LoopClock()
    hosted, port, _ = await _recursive([black_hole], hop_timeout_s=HOP_S)
    conn = await Raw.open(port)
    try:
        await conn.send(codec.frame(Request(11, OpCode.RESOLUTION, "88.118.8/JXDY2106023", FLAG_TRACE)))
        await asked_then_timed_out(clock)
        resp = await conn.frame()
        assert resp.request_id == 11 and resp.code == ResponseCode.ERROR
        assert "no top-level node" in resp.message
        assert [(h.node, h.code) for h in resp.trace] == [("black-hole", TIMEOUT_CODE)]
        await assert_recursive_still_answers(conn)
    finally:
        await conn.close()
        await hosted.stop()
        clock.close()


async def assert_recursive_still_answers(conn: Raw) -> None:
    resp = await conn.request(Request(12, OpCode.RESOLUTION, "no-slash"))  # answered without upstream
    assert (resp.request_id, resp.code) == (12, ResponseCode.INVALID_HANDLE)


async def test_recursive_tries_every_silent_root_then_gives_up(black_hole: Upstream) -> None:
    with socket.socket() as s:  # a second root: a port where nothing listens (refused at once)
        s.bind(("127.0.0.1", 0))
        refused = Upstream("nobody", "127.0.0.1", s.getsockname()[1])
    clock = LoopClock()
    hosted, port, _ = await _recursive([black_hole, refused], hop_timeout_s=HOP_S)
    conn = await Raw.open(port)
    try:
        await conn.send(codec.frame(Request(1, OpCode.RESOLUTION, "88.118.8/X", FLAG_TRACE)))
        await asked_then_timed_out(clock)  # one hop timeout: the refused root fails at once
        resp = await conn.frame()
        assert resp.code == ResponseCode.ERROR
        assert [(h.node, h.code) for h in resp.trace] == [("black-hole", TIMEOUT_CODE), ("nobody", TIMEOUT_CODE)]
    finally:
        await conn.close()
        await hosted.stop()
        clock.close()


async def test_recursive_with_a_silent_secondary_answers_504_over_rest(black_hole: Upstream) -> None:
    """A live top-level node refers to a secondary that never answers."""
    top = AuthoritativeNode(MemoryStore(), ["88"], name="top-live")
    site = SiteInfo((Server(1, "127.0.0.1", (Interface("TCP", black_hole.port),)),),
                    attributes=(("name", "black-hole"),))
    top.bootstrap_record(prefix_record("88", SECRET))
    top.bootstrap_record(prefix_record("88.118", SECRET, site=site))
    top_hosted = HostedAuthoritative(top)
    top_addrs = await top_hosted.start(http=None, tcp="127.0.0.1:0")
    assert top_addrs.tcp is not None
    clock = LoopClock()
    rec, port, http_url = await _recursive([Upstream("top-live", "127.0.0.1", top_addrs.tcp[1])], hop_timeout_s=HOP_S,
                                           http=True)
    try:
        conn = await Raw.open(port)
        try:
            await conn.send(codec.frame(Request(3, OpCode.RESOLUTION, "88.118.8/X", FLAG_TRACE)))
            await asked_then_timed_out(clock)
            resp = await conn.frame()
        finally:
            await conn.close()
        assert resp.code == ResponseCode.ERROR and "did not answer" in resp.message
        assert [(h.node, h.code) for h in resp.trace] == [("top-live", 303), ("black-hole", TIMEOUT_CODE)]

        async def get() -> tuple[int, Any]:
            # No client timeout of its own (it would expire when the clock moves); the wait below bounds it.
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http, \
                    http.get(f"{http_url}/api/handles/88.118.8/Y") as r:
                return r.status, await r.json()

        asked = len(HOLE_RECEIVED)
        task = asyncio.ensure_future(get())
        await asked_then_timed_out(clock, asked)
        status, body = await asyncio.wait_for(task, IO_TIMEOUT_S)
        assert status == 504 and body["responseCode"] == ResponseCode.ERROR
    finally:
        await rec.stop()
        await top_hosted.stop()
        clock.close()


async def test_requests_in_flight_beyond_the_limit_are_told_busy(black_hole: Upstream) -> None:
    hosted, port, _ = await _recursive([black_hole], hop_timeout_s=1.0, limits=Limits(max_inflight=2))
    conn = await Raw.open(port)
    try:
        await conn.send(b"".join(codec.frame(Request(i, OpCode.RESOLUTION, f"88.118.8/B{i}")) for i in range(5)))
        got = [await conn.frame() for _ in range(5)]
        busy = [r for r in got if r.code == ResponseCode.SERVER_TOO_BUSY]
        assert sorted(r.request_id for r in busy) == [2, 3, 4]
        assert got[:3] == busy  # the busy answers come at once, before the upstream timeouts
        assert sorted((r.request_id, r.code) for r in got[3:]) == [(0, ResponseCode.ERROR), (1, ResponseCode.ERROR)]
    finally:
        await conn.close()
        await hosted.stop()


# --------------------------------------------------------------------------------------------------
# UDP


async def test_udp_garbage_is_answered_and_answers_are_never_answered(node: TcpNode) -> None:
    assert node.running.addresses is not None and node.running.addresses.udp is not None
    udp_port = node.running.addresses.udp[1]

    def exchange() -> tuple[Response, bool, Response]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(IO_TIMEOUT_S)
            s.sendto(b"\xc1garbage", ("127.0.0.1", udp_port))
            bad = decode_message(s.recvfrom(65536)[0])
            s.sendto(codec.encode(Response(5, 1, 1, "88.100/R1")), ("127.0.0.1", udp_port))
            s.settimeout(0.3)  # nothing must come back: a bounded wait for the absence of an answer
            try:
                s.recvfrom(65536)
                reflected = True
            except TimeoutError:
                reflected = False
            s.settimeout(IO_TIMEOUT_S)
            s.sendto(codec.encode(GOOD), ("127.0.0.1", udp_port))
            good = decode_message(s.recvfrom(65536)[0])
            assert isinstance(bad, Response) and isinstance(good, Response)
            return bad, reflected, good

    bad, reflected, good = await asyncio.to_thread(exchange)
    assert bad.code == ResponseCode.PROTOCOL_ERROR
    assert not reflected
    assert good.code == ResponseCode.SUCCESS and good.request_id == GOOD.request_id
