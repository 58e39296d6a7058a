"""A node's workers spread connections by how many each holds (runtime/balance.py), not by the kernel's
hash: a few long connections split evenly, a handed connection lives in exactly one process and is
served there as if it had been accepted there, and a handoff that cannot be sent is served where it
landed."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import http.client
import json
import os
import re
from pathlib import Path

import pytest

from idresolve.runtime.balance import UNAVAILABLE, ConnectionBalancer, SharedCounts, hand_to
from procs import NodeProcess

WORKERS = re.compile(r"^  workers: (\d+) \(pids ([\d, ]+)\)$")
BINARY = re.compile(r"^  binary protocol: tcp ([\d.]+):(\d+)")
NATIVE = re.compile(r"^  Handle protocol: tcp/udp ([\d.]+):(\d+)")


def test_hand_to_the_least_loaded_other_and_keep_ties() -> None:
    assert hand_to(0, [0, 0]) is None
    assert hand_to(0, [1, 0]) == 1
    assert hand_to(1, [3, 2]) is None
    assert hand_to(0, [5, 3, 1, 1]) == 2  # the first of the least loaded
    assert hand_to(2, [4, 4, 4]) is None
    assert hand_to(0, [3, UNAVAILABLE]) is None  # a worker that did not take a handoff is not tried
    assert hand_to(0, [7]) is None


def _established(port: int) -> dict[int, int]:
    """Socket inode -> remote port of the ESTABLISHED TCP connections whose local port is ``port``."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                    out[inode] = int(remote.rsplit(":", 1)[1], 16)
    return out


def _holders(pids: list[int], port: int) -> dict[int, list[int]]:
    """Remote port -> the processes among ``pids`` holding a descriptor of that connection to ``port``."""
    conns = _established(port)
    held: dict[int, list[int]] = collections.defaultdict(list)
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in conns:
                    held[conns[inode]].append(pid)
    return held


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads /proc to see which process holds what")
def test_connections_split_evenly_over_two_workers(tmp_path: Path) -> None:
    node = NodeProcess("--prefix", "88.100", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--handle",
                       "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), "--workers", "2", log=tmp_path / "node.log")
    conns: list[http.client.HTTPConnection] = []
    try:
        url = node.wait_ready()
        http_port = int(url.rsplit(":", 1)[1])
        bhost, bport = node.wait_for(BINARY).groups()
        nhost, nport = node.wait_for(NATIVE).groups()
        pids = [int(p) for p in node.wait_for(WORKERS).group(2).split(", ")]

        # HTTP: eight keep-alive connections opened at once; each worker serves four of them, and every
        # connection stays with the worker that first answered it
        conns += [http.client.HTTPConnection("127.0.0.1", http_port, timeout=10) for _ in range(8)]
        for c in conns:
            c.connect()
        first, again = [], []
        for answers in (first, again):
            for c in conns:
                c.request("GET", "/healthz")
                answers.append(json.loads(c.getresponse().read())["worker"]["pid"])
        assert first == again
        assert sorted(collections.Counter(first).values()) == [4, 4], first
        held = _holders(pids, http_port)
        assert sorted(len(v) for v in held.values()) == [1] * 8, held  # no connection in both processes

        # binary: four connections, each answered (a handed one too), two in each worker
        from idresolve.net.blocking import BlockingClient
        from idresolve.net.native_blocking import NativeBlockingClient

        clients = [BlockingClient(bhost, int(bport), timeout_s=10) for _ in range(4)]
        try:
            for c in clients:
                resp = c.resolve("0.NA/88.100")
                assert resp.code == 1, resp
            held = _holders(pids, int(bport))
            assert sorted(len(v) for v in held.values()) == [1] * 4, held
            assert sorted(collections.Counter(v[0] for v in held.values()).values()) == [2, 2], held
            # the native Handle protocol's listener is balanced the same way
            natives = [NativeBlockingClient(nhost, int(nport), timeout_s=10) for _ in range(4)]
            try:
                for n in natives:
                    assert n.resolve("0.NA/88.100").code == 1
                held = _holders(pids, int(nport))
                assert sorted(collections.Counter(v[0] for v in held.values()).values()) == [2, 2], held
            finally:
                for n in natives:
                    n.close()
        finally:
            for c in clients:
                c.close()
        for c in conns:
            c.close()

        metrics = urllib_get(f"{url}/metrics")
        handed = _metric(metrics, "idresolve_connections_handed_total")
        adopted = _metric(metrics, "idresolve_connections_adopted_total")
        assert handed == adopted > 0  # summed over both workers
    finally:
        for c in conns:  # closing twice is harmless; a failed assertion must not leave them to the collector
            c.close()
        node.close()


def urllib_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _echo(index: int, seen: list[tuple[int, bytes]]) -> type[asyncio.Protocol]:
    """A protocol standing for worker ``index``'s listener: it notes and echoes what it reads."""
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            seen.append((index, data))
            self.transport.write(data)  # type: ignore[attr-defined]
    return Echo


async def test_a_handoff_that_cannot_be_sent_is_served_where_it_landed(tmp_path: Path) -> None:
    """Worker 1 is not there (being restarted): worker 0 keeps the connection, serves it, and stops trying
    worker 1 until it writes its slot again."""
    balancer = ConnectionBalancer(tmp_path, 0, 2)
    await balancer.start()
    served: list[tuple[int, bytes]] = []
    held = [0, 0]
    factory = balancer.gate("tcp")(_echo(0, served), lambda: held[0])
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert balancer.counts is not None
        held[0] = 3  # worker 0 holds more than worker 1's slot says: the next connection goes to worker 1
        balancer.counts.slots[1] = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        assert served == [(0, b"ping")]
        assert balancer.kept_on_failure == 1 and balancer.handed == 0
        assert balancer.counts.slots[1] == UNAVAILABLE
        writer.close()
    finally:
        server.close()
        await balancer.stop()
    assert not (tmp_path / "0.handoff").exists()


async def test_a_handed_connection_is_adopted_by_the_other_worker(tmp_path: Path) -> None:
    """Two balancers in one loop stand for two workers: the connection accepted by 0 is served by 1's
    protocol, from its first byte."""
    b0, b1 = ConnectionBalancer(tmp_path, 0, 2), ConnectionBalancer(tmp_path, 1, 2)
    await b0.start()
    await b1.start()
    who: list[tuple[int, bytes]] = []
    echo = functools.partial(_echo, seen=who)
    loop = asyncio.get_running_loop()
    s0 = await loop.create_server(b0.gate("tcp")(echo(0), lambda: 5), "127.0.0.1", 0)
    b1.gate("tcp")(echo(1), lambda: 0)  # worker 1's listener of the same name
    port = s0.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        assert who == [(1, b"hello")]
        assert (b0.handed, b1.adopted) == (1, 1)
        writer.close()
        # a handoff naming a listener worker 1 does not have is closed, not served
        b0.counts.slots[1] = 0  # type: ignore[union-attr]
        s_other = await loop.create_server(b0.gate("http")(echo(0), lambda: 5), "127.0.0.1", 0)
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", s_other.sockets[0].getsockname()[1])
            w2.write(b"x")
            with contextlib.suppress(ConnectionResetError):  # closed unanswered: end of file, or a reset
                assert await asyncio.wait_for(r2.read(), 5) == b""
            w2.close()
        finally:
            s_other.close()
    finally:
        s0.close()
        await b0.stop()
        await b1.stop()



def test_the_counts_lock_excludes_and_never_waits(tmp_path: Path) -> None:
    # two workers map the same counts file: one's lock keeps the other out, and a worker stopped while it
    # holds the lock leaves the other deciding on the counts as hints instead of stalling its event loop
    a, b = SharedCounts(tmp_path / "connections", 2), SharedCounts(tmp_path / "connections", 2)
    try:
        with a.locked():
            with pytest.raises(BlockingIOError):  # held: another worker's attempt is refused
                fcntl.flock(b._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            ran = False
            with b.locked():  # refused every time, so it goes without
                ran = True
                b.slots[1] = 3
            assert ran and a.slots[1] == 3
        with b.locked(), pytest.raises(BlockingIOError):  # released: taken at once, and now b holds it
            fcntl.flock(a._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        a.close()
        b.close()


async def test_a_worker_opens_its_handoff_socket_only_once_every_listener_is_registered(tmp_path: Path) -> None:
    """Another worker may hand this one a connection as soon as its handoff socket exists; one for a listener
    not registered yet would be closed unanswered (a client saw a reset in CI). So the listeners start
    first, and until the balancer opens, a worker keeps what it accepts."""
    from idresolve.nodes.authoritative import AuthoritativeNode
    from idresolve.runtime.hosted import HostedAuthoritative
    from idresolve.store.memory import MemoryStore

    seen: list[set[bytes]] = []

    class Recording(ConnectionBalancer):
        async def start(self) -> None:
            seen.append(set(self.listeners))
            await super().start()

    hosted = HostedAuthoritative(AuthoritativeNode(MemoryStore(), ["88.100"], name="n"))
    hosted.listeners.reuse_port = True
    hosted.listeners.balancer = Recording(tmp_path, 0, 2)
    try:
        await hosted.start(http="127.0.0.1:0", tcp="127.0.0.1:0")
        assert seen == [{b"http", b"tcp"}]
        assert hosted.listeners.balancer.path(0).exists()
    finally:
        await hosted.stop()
