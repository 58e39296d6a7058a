"""Helpers shared by the hierarchy tests: free loopback ports, an in-process cluster, waiting on lines.

Rules kept here so every test follows them: only 127.0.0.1; every wait has a deadline; nothing sleeps to
wait for a server (readiness is a line on stdout, or a bounded poll of a condition).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from idresolve.cluster.credentials import cluster_secret
from idresolve.cluster.plan import PORTS_PER_NODE, ClusterPlan, make_plan
from idresolve.cluster.worker import Worker
from idresolve.core.latency import LatencyModel
from idresolve.core.topology import load_topology
from idresolve.runtime.hosted import HostSettings
from procs import assert_not_shed

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
MINIMAL = CONFIG / "minimal.toml"
LOOPBACK = "127.0.0.1"
IDRESOLVE = str(Path(sys.executable).with_name("idresolve"))


# --------------------------------------------------------------------------------------------------
# Ports


def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


DEFAULT_PORTS = range(26300, 27300)  # where `idresolve up` and `node` listen by default: left to them


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (client sockets, TIME_WAIT), 32768 if unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base_port(count: int, *, lo: int = 20000, hi: int | None = None, tries: int = 200,
                   rng: random.Random | None = None) -> int:
    """A base port ``b`` such that ``b .. b+count-1`` are free for TCP and UDP on loopback right now, below
    the ephemeral range (no client socket in TIME_WAIT holds it) and away from ``DEFAULT_PORTS``.

    Probes by binding (another process may still take a port before we do: callers retry on collision).
    """
    rng = rng or random.Random(os.getpid() ^ time.monotonic_ns())
    top = min(hi if hi is not None else 60000, ephemeral_low())
    for _ in range(tries):
        base = rng.randrange(lo, top - count)
        if base < DEFAULT_PORTS.stop and base + count > DEFAULT_PORTS.start:
            continue
        if all(_free(p, socket.SOCK_STREAM) and _free(p, socket.SOCK_DGRAM) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no run of {count} free loopback ports between {lo} and {top} in {tries} tries")


# --------------------------------------------------------------------------------------------------
# Waiting


def wait_until(predicate: Callable[[], object], *, timeout_s: float, interval_s: float = 0.01) -> object:
    """Poll ``predicate`` until it returns something truthy; raise ``TimeoutError`` after ``timeout_s``.

    For conditions with no event to wait on (a replicated write arriving at a peer). Bounded.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


@dataclass
class Proc:
    """A subprocess whose stdout and stderr lines are collected by reader threads (so pipes never fill)."""

    popen: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _threads: list[threading.Thread] = field(default_factory=list)
    _ended: dict[str, bool] = field(default_factory=lambda: {"stdout": False, "stderr": False})

    def start_readers(self) -> None:
        def pump(stream, sink: list[str], name: str) -> None:  # type: ignore[no-untyped-def]
            for line in stream:
                with self._cond:
                    sink.append(line)
                    self._cond.notify_all()
            stream.close()
            with self._cond:
                self._ended[name] = True
                self._cond.notify_all()

        for stream, sink, name in ((self.popen.stdout, self.out, "stdout"), (self.popen.stderr, self.err, "stderr")):
            t = threading.Thread(target=pump, args=(stream, sink, name), daemon=True)
            t.start()
            self._threads.append(t)

    def wait_for_line(self, needle: str, *, timeout_s: float, stream: str = "stdout") -> str:
        """The first line of ``stream`` containing ``needle`` (already printed or still to come); raises
        when the process closes the stream without it or when time runs out."""
        sink = self.out if stream == "stdout" else self.err
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in sink:
                    if needle in line:
                        return line
                if self._ended[stream]:
                    raise RuntimeError(f"process ended its output ({self.popen.poll()}) without {needle!r}; "
                                       f"stdout={self.stdout!r} stderr={self.stderr[-2000:]!r}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no line with {needle!r} within {timeout_s} s; stdout={self.stdout!r} "
                                       f"stderr={self.stderr[-2000:]!r}")
                self._cond.wait(remaining)

    def join_readers(self, timeout_s: float) -> None:
        for t in self._threads:
            t.join(timeout_s)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def spawn(argv: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Proc:
    popen = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    proc = Proc(popen)
    proc.start_readers()
    return proc


def stop_proc(proc: Proc, *, timeout_s: float = 30.0) -> None:
    """Make sure a process we started is gone: Ctrl-C first (``idresolve up`` then stops its own workers,
    which run in sessions of their own), then kill it by its own pid if it does not exit in time."""
    if proc.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGINT)
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.kill()
    proc.popen.wait(timeout_s)
    proc.join_readers(5)


def run_cli(*args: str, timeout_s: float = 60.0, env: dict[str, str] | None = None,
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``idresolve ARGS`` to completion (bounded), without IDRESOLVE_* settings from our environment; fails
    when the CLI met a load-shedding 503 (``procs.assert_not_shed``)."""
    return assert_not_shed(subprocess.run([IDRESOLVE, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                          text=True, timeout=timeout_s, env=cli_env() if env is None else env))


def cli_env() -> dict[str, str]:
    """The environment for CLI subprocesses, without settings that would point them elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRESOLVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------------------
# An in-process cluster (cluster.worker.Worker hosting every node of a plan in the test's event loop)


@dataclass
class LocalCluster:
    plan: ClusterPlan
    worker: Worker
    master: str
    data_dir: Path


async def start_local_cluster(data_dir: Path, *, latency_on: bool, config: Path = MINIMAL, attempts: int = 5,
                              hop_timeout_s: float = 2.0) -> LocalCluster:
    """Plan the topology on a free base port and start every node in this loop; retry on a port collision."""
    topology = load_topology(config)
    latency = LatencyModel.for_topology(topology) if latency_on else LatencyModel.off()
    master = cluster_secret(data_dir)
    last: OSError | None = None
    for _ in range(attempts):
        count = PORTS_PER_NODE * len(topology.running_nodes())
        plan = make_plan(topology, base_port=free_base_port(count), workers=1)
        worker = Worker(plan, [n.name for n in plan.nodes], data_dir, master, latency=latency,
                        settings=HostSettings(hop_timeout_s=hop_timeout_s))
        try:
            await worker.start()
        except OSError as exc:  # someone took one of the ports between the probe and the bind
            last = exc
            await worker.stop()
            continue
        return LocalCluster(plan, worker, master, data_dir)
    raise RuntimeError(f"could not start the cluster after {attempts} attempts: {last!r}")


@contextlib.contextmanager
def listening_socket(port: int) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((LOOPBACK, port))
        s.listen(1)
        yield s
    finally:
        s.close()
