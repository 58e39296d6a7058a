"""Helpers of the hardening suites (test_harden_*.py): hostile-input generators, raw HTTP and binary
connections, an in-process minimal cluster on its own event-loop thread, and percentiles.

Rules kept here so every hardening test follows them: only 127.0.0.1; every wait has a deadline; every
generator is seeded (a failure names its seed and case, so it can be replayed); nothing sleeps to wait for
a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import strategies as st

from clusterutil import free_base_port
from idresolve.cluster.plan import PORTS_PER_NODE
from idresolve.core.codes import OpCode
from idresolve.core.messages import FLAG_OVERWRITE, FLAG_TRACE, Request, Response
from idresolve.core.values import admin_value, string_value
from idresolve.core.wire import Codec, decode_message
from idresolve.nodes.auth import parse_identity
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import prefix_record
from idresolve.store.memory import MemoryStore

LOOPBACK = "127.0.0.1"
IO_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------------------------------
# msgpack-ish structures (hypothesis)

#: Integers msgpack can carry (it refuses to pack beyond int64/uint64).
msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_leaves = st.one_of(st.none(), st.booleans(), msgpack_ints, st.text(max_size=12), st.binary(max_size=12),
                    st.floats(allow_nan=True, allow_infinity=True))
_keys = st.one_of(st.sampled_from(["v", "m", "a", "b", "p", "i", "t", "h", "ver", "l", "r", "c", "tr", "x", "n"]),
                  st.text(max_size=4))
#: Anything msgpack can hold, NaN and infinities included.
msgpack_objects = st.recursive(
    _leaves, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_keys, inner, max_size=5), max_leaves=25)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def frame_of(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# --------------------------------------------------------------------------------------------------
# Valid frames, and a seeded mutator over them


def valid_requests(prefix: str, identity: str, secret: bytes) -> list[Request]:
    """One request of every opcode a node answers, well formed, some with credentials."""
    auth = (identity, secret)
    v1 = (string_value(1, "URL", "https://example.com/a"), string_value(2, "DESC", "a part"))
    adm = admin_value(100, identity.split(":", 1)[1], 300, 0xFFF)
    return [
        Request(1, OpCode.RESOLUTION, f"{prefix}/R1"),
        Request(2, OpCode.RESOLUTION, f"{prefix}/R1", FLAG_TRACE, indexes=(1,), types=("URL",)),
        Request(3, OpCode.RESOLUTION, f"0.NA/{prefix}"),
        Request(4, OpCode.GET_SITEINFO, ""),
        Request(5, OpCode.CREATE_HANDLE, f"{prefix}/M1", FLAG_OVERWRITE, values=(*v1, adm), auth=auth),
        Request(6, OpCode.ADD_VALUE, f"{prefix}/R1", FLAG_OVERWRITE, values=(string_value(7, "EMAIL", "a@b"),),
                auth=auth),
        Request(7, OpCode.MODIFY_VALUE, f"{prefix}/R1", values=(string_value(1, "URL", "https://x"),), auth=auth),
        Request(8, OpCode.REMOVE_VALUE, f"{prefix}/R2", indexes=(2,), auth=auth),
        Request(9, OpCode.DELETE_HANDLE, f"{prefix}/M1", auth=auth),
        Request(10, OpCode.LIST_HANDLES, prefix, page=(0, 5), auth=auth),
        Request(11, OpCode.LIST_PREFIXES, "", auth=auth),
        Request(12, OpCode.BATCH_CREATE, "", FLAG_OVERWRITE, items=((f"{prefix}/B1", v1), (f"{prefix}/B2", v1)),
                auth=auth),
        Request(13, OpCode.RESOLUTION, f"{prefix}/nope"),
    ]


MUTATIONS = ("bitflip", "bytes", "truncate", "splice", "length", "duplicate", "insert", "delete", "interesting")
_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xcf" + b"\xff" * 8, b"\xd3\x80" + b"\x00" * 7,
                b"\x96", b"\x90", b"\x80", b"\xa0", b"%", b"/", b"\xed\xa0\x80"]


class Mutator:
    """Mutations of valid frames: bit flips, byte changes, truncation, splicing of two frames, corrupted
    length prefixes, duplication, insertion and deletion of runs, msgpack-interesting bytes."""

    def __init__(self, corpus: list[bytes], seed: int) -> None:
        self.corpus = corpus
        self.rng = random.Random(seed)

    def one(self) -> tuple[str, bytes]:
        rng = self.rng
        kind = rng.choice(MUTATIONS)
        data = bytearray(rng.choice(self.corpus))
        n = len(data)
        if kind == "bitflip":
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(n)
                data[i] ^= 1 << rng.randrange(8)
        elif kind == "bytes":
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(4, n)] = rng.randrange(256)
        elif kind == "truncate":
            del data[rng.randrange(1, n):]
        elif kind == "splice":
            other = rng.choice(self.corpus)
            data = data[: rng.randrange(1, n)] + other[rng.randrange(len(other)):]
        elif kind == "length":
            choice = rng.randrange(5)
            length = [0, 1, n - 4 - 1, n - 4 + rng.randint(1, 64), rng.randrange(2**32)][choice]
            data[:4] = struct.pack(">I", max(0, min(length, 2**32 - 1)))
        elif kind == "duplicate":
            a = rng.randrange(4, n)
            b = rng.randrange(a, n + 1)
            data[b:b] = data[a:b] * rng.randint(1, 8)
            if rng.random() < 0.5:  # keep the length prefix honest half of the time
                data[:4] = struct.pack(">I", len(data) - 4)
        elif kind == "insert":
            i = rng.randrange(4, n + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 16))
            data[:4] = struct.pack(">I", len(data) - 4)
        elif kind == "delete":
            a = rng.randrange(4, n)
            del data[a : a + rng.randint(1, 8)]
            if len(data) > 4:
                data[:4] = struct.pack(">I", len(data) - 4)
        else:
            i = rng.randrange(4, n)
            blob = rng.choice(_INTERESTING)
            data[i : i + len(blob)] = blob
            data[:4] = struct.pack(">I", len(data) - 4)
        return kind, bytes(data)


# --------------------------------------------------------------------------------------------------
# A raw binary connection


class RawBinary:
    """A raw TCP connection to a binary server: write any bytes, read frames, notice the close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, *, local_host: str | None = None) -> RawBinary:
        local = (local_host, 0) if local_host else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, port, local_addr=local, limit=1 << 22), IO_TIMEOUT_S)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), IO_TIMEOUT_S)

    async def frame(self, timeout_s: float = IO_TIMEOUT_S) -> Response:
        header = await asyncio.wait_for(self.reader.readexactly(4), timeout_s)
        (n,) = struct.unpack(">I", header)
        msg = decode_message(await asyncio.wait_for(self.reader.readexactly(n), timeout_s))
        assert isinstance(msg, Response), msg
        return msg

    async def request(self, req: Request, codec: Codec | None = None) -> Response:
        await self.send((codec or Codec()).frame(req))
        return await self.frame()

    async def read_all(self, timeout_s: float) -> list[Response]:
        """Every answer until the server closes; raises TimeoutError if it does not close in time."""
        out: list[Response] = []
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    header = await self.reader.readexactly(4)
                except asyncio.IncompleteReadError as exc:
                    assert exc.partial == b"", f"a partial frame header from the server: {exc.partial!r}"
                    return out
                except ConnectionError:
                    return out
                (n,) = struct.unpack(">I", header)
                msg = decode_message(await self.reader.readexactly(n))
                assert isinstance(msg, Response), f"the server sent a non-answer: {msg!r}"
                out.append(msg)

    async def closed_by_peer(self, timeout_s: float) -> bool:
        """True when the peer closes the connection within the timeout (answers before it are dropped)."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), IO_TIMEOUT_S)


# --------------------------------------------------------------------------------------------------
# Raw HTTP/1.1 exchanges (any bytes: invalid UTF-8 in the path, huge headers, broken framing)


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


async def http_exchange(port: int, request: bytes, *, timeout_s: float = IO_TIMEOUT_S,
                        half_close: bool = False) -> HttpReply | None:
    """Send ``request`` on a fresh connection and read one answer (skipping 1xx interim answers); None when
    the server closed without answering. Raises TimeoutError when it neither answers nor closes in time.
    ``half_close`` sends EOF after the request (aiohttp then closes at once, answering nothing)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port, limit=1 << 24), timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            with contextlib.suppress(ConnectionError):
                writer.write(request)
                await writer.drain()
                if half_close and writer.can_write_eof():
                    writer.write_eof()
            status = 100
            while 100 <= status < 200:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            if request.startswith(b"HEAD ") or status in (204, 304):
                body = b""
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(reader)
            else:
                body = await reader.read()
            return HttpReply(status, headers, body)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


def http_request(method: str | bytes, target: str | bytes, *, headers: list[tuple[str | bytes, str | bytes]] = (),
                 body: bytes | None = None, content_length: int | None = None) -> bytes:
    """Raw request bytes; ``target`` may hold anything (bytes are sent as they are)."""
    def b(x: str | bytes) -> bytes:
        return x if isinstance(x, bytes) else x.encode("utf-8", "surrogateescape")

    out = b(method) + b" " + b(target) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for k, v in headers:
        out += b(k) + b": " + b(v) + b"\r\n"
    if body is not None or content_length is not None:
        out += b"Content-Length: " + str(len(body or b"") if content_length is None else content_length).encode()
        out += b"\r\n"
    return out + b"\r\n" + (body or b"")


# --------------------------------------------------------------------------------------------------
# An in-process cluster on its own event loop thread (tests talk to it with blocking clients)


@dataclass
class LoopThread:
    """An event loop running in a daemon thread; ``run(coro)`` waits for a coroutine's result (bounded)."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="harden-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def cluster_in_thread(data_dir: Path, config: Path, *, attempts: int = 5) -> Iterator[tuple[Any, str]]:
    """Every node of ``config`` in one ``cluster.worker.Worker`` (latency off) on a loop thread, allocated
    with ``cluster.bootstrap.bootstrap``. Yields (plan, master secret)."""
    from idresolve.cluster.bootstrap import bootstrap
    from idresolve.cluster.credentials import cluster_secret
    from idresolve.cluster.plan import make_plan
    from idresolve.cluster.worker import Worker
    from idresolve.core.latency import LatencyModel
    from idresolve.core.topology import load_topology

    topology = load_topology(config)
    master = cluster_secret(data_dir)
    lt = LoopThread()
    lt.start()
    worker = None
    try:
        last: Exception | None = None
        for _ in range(attempts):
            plan = make_plan(topology, base_port=free_base_port(PORTS_PER_NODE * len(topology.running_nodes())), workers=1)
            worker = Worker(plan, [n.name for n in plan.nodes], data_dir, master, latency=LatencyModel.off())
            try:
                lt.run(worker.start())
                break
            except OSError as exc:  # a port was taken between the probe and the bind
                last = exc
                lt.run(worker.stop())
                worker = None
        if worker is None:
            raise RuntimeError(f"could not start the cluster: {last!r}")
        bootstrap(plan, master, timeout_s=IO_TIMEOUT_S)
        yield plan, master
    finally:
        if worker is not None:
            lt.run(worker.stop())
        lt.stop()


# --------------------------------------------------------------------------------------------------
# The event loop's clock, moved by the test


class LoopClock:
    """The running event loop's clock plus an offset that the test moves forward.

    Servers in this loop keep time on it (binary idle timers, aiohttp's keep-alive and the request body
    timeout, upstream hop timeouts), so a test can let a configured timeout pass on the node's own clock,
    deterministically, without waiting for it, and assert on state (the connection is held, then closed).
    Move it only while no deadline of the test's own is pending in this loop (one taken before a jump
    expires at the jump); hang guards taken after it are real time again."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._real = self.loop.time
        self.offset = 0.0
        self.loop.time = self.now  # type: ignore[method-assign]

    def now(self) -> float:
        return self._real() + self.offset

    async def advance(self, seconds: float) -> None:
        """Move the clock, then let the timers now due run, and the callbacks they schedule."""
        self.offset += seconds
        for _ in range(10):
            await asyncio.sleep(0)

    def close(self) -> None:
        del self.loop.time  # the loop's own method again


async def wait_until(condition: Any, timeout_s: float = IO_TIMEOUT_S) -> bool:
    """Poll ``condition()`` (bounded, real time) until it holds: state the loop settles asynchronously."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def held_then_closed(clock: LoopClock, held: Any, idle_s: float, peer_closed: Any = None) -> None:
    """Just before ``idle_s`` has passed on the node's clock the node still holds the connection (``held()``
    is 1); by two idle periods and a step (a binary idle check runs once per period) it has closed it, and
    ``peer_closed(timeout_s)`` (when given; not for a peer that does not read) sees the close. The clock
    moves in quarter periods, so that timers re-armed as they fire fire again in turn."""
    t0 = clock.now()
    await clock.advance(0.9 * idle_s)
    assert held() == 1, "closed before the idle timeout"
    for _ in range(8):
        await clock.advance(idle_s / 4)
        if not held():
            break
    assert await wait_until(lambda: held() == 0), f"still held after {clock.now() - t0:g} s of the node's clock"
    assert clock.now() - t0 <= 2 * idle_s + idle_s / 4 + 1
    assert peer_closed is None or await peer_closed(IO_TIMEOUT_S)


# --------------------------------------------------------------------------------------------------
# Small things


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def contains_any(blob: bytes | str, needles: list[str]) -> str | None:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    for n in needles:
        if n and n in text:
            return n
    return None


# -- the fuzzed authoritative node ------------------------------------------------------------------

SECRET = "harden-fuzz-secret"
ADMIN = "300:0.NA/88.100"
ADMIN2 = "300:0.NA/88.200"
NOW = 1_700_000_000.0
SEEDED = {f"88.100/R{i}": (string_value(1, "URL", f"https://r{i}.example"), string_value(2, "DESC", f"record {i}"))
          for i in range(1, 6)}


def fresh_node() -> AuthoritativeNode:
    """An in-memory authoritative node for prefixes 88.100 and 88.200, with SEEDED under 88.100."""
    node = AuthoritativeNode(MemoryStore(), ["88.100", "88.200"], name="fuzz")
    node.bootstrap_record(prefix_record("88.100", SECRET))
    node.bootstrap_record(prefix_record("88.200", SECRET + "-2"))
    caller = node.authenticate(parse_identity(ADMIN), SECRET.encode())
    for h, vals in SEEDED.items():
        node.put_record(h, vals, caller=caller, now=NOW)
    return node


async def good_request_on_a_fresh_connection(port: int) -> Response:
    """A fresh connection still gets its answer: the node kept serving."""
    conn = await RawBinary.open(port)
    try:
        return await conn.request(Request(777, OpCode.RESOLUTION, "88.100/R1"))
    finally:
        await conn.close()


async def all_connections_gone(server: Any, timeout_s: float = 5.0) -> bool:
    """True once ``server`` (a binary listener) holds no connection; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.conns.count == 0:
            return True
        await asyncio.sleep(0.01)  # the server notices closes asynchronously: bounded poll
    return server.conns.count == 0
