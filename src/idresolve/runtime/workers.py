"""One node served by several worker processes (``idresolve node --workers N``): every core answers.

The parent process binds nothing it serves from: it fixes the ports (a port 0 is chosen once, by binding a
TCP socket with SO_REUSEPORT that never listens and so never takes a connection), forks the workers, and
supervises them. Each worker opens the same store (SQLite in WAL mode: readers in every worker; writers
take SQLite's write lock with ``BEGIN IMMEDIATE`` and a busy timeout, so writes are serialized by SQLite)
and listens on the same HTTP, binary TCP and UDP ports with SO_REUSEPORT; the kernel spreads connections
(and datagrams) across the workers, and a worker that holds more connections than another hands it the
new ones it accepts (``runtime/balance.py``).

Answer caches are per process. The rule that makes them safe: **no worker serves a record older than a
write the client has seen acknowledged from this node.** ``SharedGenerations`` is a 24-byte file mapped
into every worker (``<data_dir>/<name>.generations``): three counters (every write, writes to prefix
records, writes to template records). A writer counts its write after the store has committed it and
before it answers (``AuthoritativeNode._changed``), under an exclusive ``flock`` so that no count is lost.
Every read that could be answered from a cache first compares the counters with those the worker saw last
(two memory loads and a tuple compare) and, when they moved, drops its cached answers (and its hosted
prefixes and parsed templates when those counters moved) before it reads the store. So an answer
acknowledged to a client precedes the count, the count precedes any later read's check, and that read
finds the cache empty and the store committed.

Supervision: worker 0 starts first (it writes the node's prefix records and the generated admin secret),
then the others. A worker that dies is started again; one that dies ``MAX_RESTARTS`` times within
``RESTART_WINDOW_S`` brings the node down (every worker is stopped and ``idresolve node`` exits 1).
SIGTERM or SIGINT to the parent stops every worker (each drains its in-flight requests) and then the
parent; workers left after the drain time are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.handles import is_prefix_record
from .config import NodeConfig, parse_hostport
from .metrics import merge_texts

log = logging.getLogger("idresolve.workers")
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_WAIT_S = 15.0  # the listeners drain for up to 10 s (listeners.SHUTDOWN_TIMEOUT_S)
MAX_METRICS_BYTES = 16 * 1024 * 1024
TEMPLATE_MARK = "/tpl-"  # folded template record keys: <prefix>/TPL-<name>


def default_workers() -> int:
    """The number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def private_sockets_dir(prefix: str) -> Path:
    """A new directory ``<tmp>/<prefix><this pid>-<random>`` (mode 0700) for worker processes' Unix sockets
    and connection counts. In the temporary directory because a Unix socket path has a bound (about 108
    bytes) that a data directory's path may pass.

    Its owner removes it when it stops; one killed with SIGKILL cannot, so the directories of this prefix
    whose owner process is gone are removed here first (one whose process is alive, or is another user's,
    is kept)."""
    import shutil
    import tempfile

    from ..store.sqlite import process_alive

    for old in Path(tempfile.gettempdir()).glob(prefix + "*-*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


class SharedGenerations:
    """Three write counters in a small file mapped into every worker of one node (see the module doc)."""

    SIZE = 24

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < self.SIZE:
            os.ftruncate(self._fd, self.SIZE)
        self._map = mmap.mmap(self._fd, self.SIZE)
        self._view = memoryview(self._map).cast("Q")  # aligned 8-byte loads and stores: never torn

    @property
    def counters(self) -> memoryview:
        return self._view

    def current(self) -> tuple[int, int, int]:
        v = self._view
        return (v[0], v[1], v[2])

    def bump(self, key: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            v = self._view
            before = (v[0], v[1], v[2])
            if is_prefix_record(key):
                v[1] += 1
            if TEMPLATE_MARK in key:
                v[2] += 1
            v[0] += 1  # last: a reader seeing the new total sees the others too
            return before, (v[0], v[1], v[2])
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._view.release()
        self._map.close()
        os.close(self._fd)


def fix_ports(cfg: NodeConfig) -> tuple[NodeConfig, list[socket.socket]]:
    """``cfg`` with every port 0 replaced by a free port, and the sockets that hold those ports (bound with
    SO_REUSEPORT, never listening) for as long as the workers run."""
    held: list[socket.socket] = []

    def fixed(addr: str | None, default: int, kind: int, port_hint: int = 0) -> str | None:
        if addr is None:
            return None
        host, port = parse_hostport(addr, default)
        if port == 0:
            port = port_hint
        if port == 0:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            port = s.getsockname()[1]
            if kind == socket.SOCK_DGRAM:
                s.close()  # a bound UDP socket would take its share of datagrams
            else:
                held.append(s)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    http = fixed(cfg.http, 8000, socket.SOCK_STREAM)
    tcp = fixed(cfg.tcp, 2641, socket.SOCK_STREAM)
    tcp_port = parse_hostport(tcp, 2641)[1] if tcp is not None else 0
    udp = fixed(cfg.udp, 2641, socket.SOCK_DGRAM, tcp_port)  # same number as TCP, as real nodes do
    handle = fixed(cfg.handle, 2641, socket.SOCK_STREAM)  # the native protocol: its UDP takes the same number
    assert http is not None
    return replace(cfg, http=http, tcp=tcp, udp=udp, handle=handle), held


@dataclass
class _Worker:
    index: int
    pid: int
    ready_fd: int


@dataclass
class Supervisor:
    """Forks and watches the workers of one node. ``serve(cfg, index, ready)`` runs in each worker
    (it never returns normally: the worker exits with its status); ``ready`` is called once it listens."""

    cfg: NodeConfig
    count: int
    serve: Callable[[NodeConfig, int, Callable[[], None]], int]
    workers: dict[int, _Worker] = field(default_factory=dict)
    deaths: list[float] = field(default_factory=list)
    stopping: bool = False

    def _fork(self, index: int) -> _Worker:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(r)
                _die_with_parent()
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)

                def ready() -> None:
                    with contextlib.suppress(OSError):  # a restarted worker's parent no longer listens
                        os.write(w, b"r")
                    os.close(w)
                status = self.serve(self.cfg, index, ready)
            except BaseException:  # noqa: BLE001 - a worker reports and exits; it never returns into the parent
                log.exception("worker %d failed", index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        os.close(w)
        worker = _Worker(index, pid, r)
        self.workers[pid] = worker
        return worker

    def _await_ready(self, worker: _Worker, timeout_s: float = 60.0) -> bool:
        import select

        ok = False
        readable, _, _ = select.select([worker.ready_fd], [], [], timeout_s)
        if readable:
            ok = os.read(worker.ready_fd, 1) == b"r"
        os.close(worker.ready_fd)
        worker.ready_fd = -1
        return ok

    def start(self) -> bool:
        """Start every worker; True once all listen. Worker 0 first: it writes what the node writes once.
        A SIGTERM or SIGINT from here on stops the node (at once if it comes while the workers start)."""
        def on_signal(signum: int, frame: object) -> None:
            self.stopping = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        first = self._fork(0)
        if not self._await_ready(first):
            self.stop()
            return False
        rest = [self._fork(i) for i in range(1, self.count)]
        if not all([self._await_ready(w) for w in rest]):
            self.stop()
            return False
        return True

    def watch(self, poll_s: float = 0.2) -> int:
        """Until SIGTERM/SIGINT: restart workers that die. Answers the exit status of the node."""
        status = 0
        while not self.stopping:
            pid, code = _reap()
            if pid == 0:
                time.sleep(poll_s)
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW_S] + [now]
            log.warning("worker %d (pid %d) exited with status %d", worker.index, pid, code)
            if len(self.deaths) > MAX_RESTARTS:
                print(f"error: node {self.cfg.name!r} is down: its workers died {len(self.deaths)} times within "
                      f"{RESTART_WINDOW_S:.0f} s", file=sys.stderr, flush=True)
                status = 1
                break
            restarted = self._fork(worker.index)
            os.close(restarted.ready_fd)
            restarted.ready_fd = -1
        self.stop()
        return status

    def stop(self) -> None:
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while self.workers and time.monotonic() < deadline:
            pid, _ = _reap()
            if pid == 0:
                time.sleep(0.05)
            else:
                self.workers.pop(pid, None)
        for pid in list(self.workers):
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.workers.pop(pid, None)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks, size = [], 0
    while chunk := await reader.read(65536):
        size += len(chunk)
        if size > MAX_METRICS_BYTES:
            return b""
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class WorkerRole:
    """What one worker process knows of the node it is part of."""

    index: int
    count: int
    generations: SharedGenerations
    sockets: Path  # where the workers' metrics sockets live


def _die_with_parent() -> None:
    """A worker gets SIGKILL when the parent dies, however it dies (``kill -9`` included): a node is its
    parent process, and no worker may go on serving after it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


def _reap() -> tuple[int, int]:
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return 0, 0
    return pid, (os.waitstatus_to_exitcode(status) if pid else 0)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class PeerMetrics:
    """Each worker serves its own metrics text on a Unix socket in ``sockets``; the worker that answers
    ``GET /metrics`` fetches the others' right then and sums them (``metrics.merge_texts``), so a scrape
    counts every request any worker answered before it. A worker being restarted is missing from that
    scrape (and its counters start again from zero, as after any restart)."""

    FETCH_TIMEOUT_S = 2.0

    def __init__(self, sockets: Path, index: int, count: int, render_own: Callable[[], bytes]) -> None:
        self.sockets, self.index, self.count, self.render_own = sockets, index, count, render_own
        self._server: asyncio.AbstractServer | None = None

    def path(self, index: int) -> Path:
        return self.sockets / f"{index}.sock"

    async def start(self) -> None:
        path = self.path(self.index)
        path.unlink(missing_ok=True)  # the socket of this worker's predecessor
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))

    async def _serve(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self.render_own())
            await writer.drain()
        finally:
            writer.close()

    async def _fetch(self, index: int) -> bytes:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path(index))),
                                                    self.FETCH_TIMEOUT_S)
        except (OSError, TimeoutError):
            return b""
        try:
            return await asyncio.wait_for(_read_all(reader), self.FETCH_TIMEOUT_S)
        except (OSError, TimeoutError):
            return b""
        finally:
            writer.close()

    async def merged(self, own: bytes) -> bytes:
        others = await asyncio.gather(*(self._fetch(i) for i in range(self.count) if i != self.index))
        return merge_texts(own, [t for t in others if t])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
