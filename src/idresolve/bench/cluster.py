"""The cluster a load run drives: one already running (``--data-dir`` holding ``cluster.json``), or one the
bench starts itself, seeds, and always stops.

An own cluster is ``idresolve up`` in a subprocess on a temporary data directory, on base ports below the
ephemeral range (retried on a collision), with the recursive node (and, for the kill scenario, the first
top-level node) in processes of their own so their CPU can be read and the top-level node killed alone.
Its start-up time is taken from the spawn to the ``ready in`` line, its memory as the sum of VmRSS of the
``up`` process and its workers. ``stop`` interrupts ``up`` (which stops its workers), then kills by pid
whatever is left; the data directory is removed.

Identifiers come from ``idresolve seed`` with the suffix tag ``BENCH`` (a rerun on the same cluster finds
them in place); which ones exist follows ``cluster.seeding``'s spread over the enterprises, and only those
under secondary nodes registered with the top level (``connected``) resolve through the hierarchy.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..cluster.plan import PORTS_PER_NODE
from ..cluster.supervisor import CLUSTER_FILE, ephemeral_range
from ..core.topology import Topology, TopologyError, config_hash, load_topology
from .procs import children, cmdline, cpu_seconds, idresolve_argv, rss_bytes

SEED_TAG = "BENCH"
PORT_LOW, PORT_HIGH = 20000, 26000
START_TIMEOUT_S = 90.0
SEED_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
START_ATTEMPTS = 5
TOPOLOGIES = {"minimal": "minimal.toml", "shandong": "shandong.toml"}
PACKAGE_CONFIG = Path(__file__).resolve().parents[3] / "config"


class ClusterUnavailable(Exception):
    """The cluster could not be found, started, seeded or reached."""


def config_path(name_or_path: str) -> Path:
    """``minimal``/``shandong`` (the packaged topologies) or a TOML path."""
    if name_or_path in TOPOLOGIES:
        for base in (Path("config"), PACKAGE_CONFIG):
            candidate = base / TOPOLOGIES[name_or_path]
            if candidate.exists():
                return candidate.resolve()
        raise ClusterUnavailable(f"config/{TOPOLOGIES[name_or_path]} not found")
    path = Path(name_or_path)
    if not path.exists():
        raise ClusterUnavailable(f"no topology file {path}")
    return path.resolve()


@dataclass
class Cluster:
    data_dir: Path
    desc: dict[str, Any]
    topology: Topology
    own: bool = False
    up_pid: int | None = None
    ready_s: float | None = None  # spawn -> "ready in" line (own clusters)
    reported_ready_s: float | None = None  # what `up` printed
    start_attempts: int = 0
    seeded: dict[str, Any] = field(default_factory=dict)

    # -- description --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.desc.get("topology", self.topology.name))

    @property
    def latency(self) -> str:
        return str(self.desc.get("latency", "on"))

    @property
    def scenario(self) -> str | None:
        return self.desc.get("scenario")

    @property
    def config_hash(self) -> str:
        return config_hash(self.topology)

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.desc.get("nodes", []))

    def node(self, name: str) -> dict[str, Any]:
        for n in self.nodes():
            if n["name"] == name:
                return n
        raise ClusterUnavailable(f"no node {name!r} in {self.data_dir / CLUSTER_FILE}")

    def recursive(self, name: str | None = None) -> dict[str, Any]:
        recs = [n for n in self.nodes() if n["role"] == "recursive"]
        if not recs:
            raise ClusterUnavailable("the cluster has no recursive node")
        return self.node(name) if name else recs[0]

    def role_of(self, name: str) -> str:
        for n in self.nodes():
            if n["name"] == name:
                return str(n["role"])
        return "cache" if name == "cache" else "?"

    @staticmethod
    def tcp(node: dict[str, Any]) -> tuple[str, int]:
        host, _, port = str(node["tcp"]).rpartition(":")
        return host, int(port)

    @staticmethod
    def http(node: dict[str, Any]) -> tuple[str, int]:
        rest = str(node["http"]).split("://", 1)[-1]
        host, _, port = rest.rpartition(":")
        return host, int(port)

    def identifiers(self, count: int) -> list[str]:
        """The seeded identifiers (``count`` were asked for) that resolve through the top level."""
        ents = [e for e in self.desc.get("enterprises", []) if e.get("prefix")]
        if not ents:
            return []
        connected = {n["name"] for n in self.nodes() if n["role"] == "secondary" and n.get("connected")}
        share, extra = divmod(count, len(ents))
        out: list[str] = []
        per_ent = []
        for i, e in enumerate(ents):
            n = share + (1 if i < extra else 0)
            if e.get("secondary") in connected:
                per_ent.append([f"{e['prefix']}/{SEED_TAG}{k:09d}" for k in range(n)])
        # interleave the enterprises so any slice of the list spreads over all of them
        longest = max((len(x) for x in per_ent), default=0)
        for k in range(longest):
            out.extend(x[k] for x in per_ent if k < len(x))
        return out

    # -- processes ----------------------------------------------------------------------------------
    def worker_pids(self) -> dict[int, list[str]]:
        """Worker process id -> the nodes it hosts."""
        if self.own and self.up_pid is not None:
            pids = children(self.up_pid)
        else:
            pids = [int(p) for p in _proc_pids()]
        out: dict[int, list[str]] = {}
        want = str(self.data_dir.resolve())
        for pid in pids:
            argv = cmdline(pid)
            if "idresolve.cluster.worker" not in argv:
                continue
            try:
                d = argv[argv.index("--data-dir") + 1]
            except (ValueError, IndexError):
                continue
            if str(Path(d).resolve()) != want:
                continue
            names = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--node"]
            share = argv[argv.index("--share") + 1:][:1] if "--share" in argv else ["0/1"]
            if not share or not share[0].startswith("0/"):
                names = []  # one more process of a node of several (workers = N): its share 0 stands for it
            out[pid] = names
        return out

    def pid_of(self, node: str) -> tuple[int | None, bool]:
        """(process id hosting ``node``, whether it hosts that node alone)."""
        for pid, names in self.worker_pids().items():
            if node in names:
                return pid, names == [node]
        return None, False

    def rss(self) -> dict[str, Any]:
        """VmRSS of ``up`` and every worker, and what makes the sum untrustworthy: a process whose memory
        could not be read (``unreadable``), nodes of cluster.json that no worker found hosts
        (``nodes_missing``) or that two workers host (``nodes_doubled``). Target H4 fails on any of them."""
        workers = self.worker_pids()
        per = {pid: rss_bytes(pid) for pid in workers}
        unreadable = [pid for pid, b in per.items() if b is None]
        up = rss_bytes(self.up_pid) if self.up_pid else None
        if self.up_pid and up is None:
            unreadable.append(self.up_pid)
        hosted = [n for names in workers.values() for n in names]
        expected = {n["name"] for n in self.nodes()}
        total = sum(b or 0 for b in per.values())
        return {"processes": len(per) + (1 if self.up_pid else 0), "workers": len(per), "workers_bytes": total,
                "up_bytes": up, "total_bytes": total + (up or 0), "unreadable": sorted(unreadable),
                "nodes_missing": sorted(expected - set(hosted)),
                "nodes_doubled": sorted({n for n in hosted if hosted.count(n) > 1})}

    def cpu(self) -> float:
        return sum(cpu_seconds(p) or 0.0 for p in self.worker_pids())


def _proc_pids() -> list[str]:
    try:
        return [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def load_existing(data_dir: Path) -> Cluster:
    path = data_dir / CLUSTER_FILE
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClusterUnavailable(f"no cluster in {data_dir} ({path} is missing): start one with `idresolve up "
                                 f"--data-dir {data_dir}`, or leave out --data-dir to let the bench start its own") from None
    except (OSError, ValueError) as exc:
        raise ClusterUnavailable(f"cannot read {path}: {exc}") from None
    try:
        topology = load_topology(desc["config"])
    except (KeyError, OSError, TopologyError) as exc:
        raise ClusterUnavailable(f"cannot load the topology of {path}: {exc}") from None
    return Cluster(data_dir, desc, topology)


# -- an own cluster ------------------------------------------------------------------------------------

def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(count: int, rng: random.Random) -> int:
    eph = ephemeral_range()
    high = min(PORT_HIGH, eph[0]) if eph else PORT_HIGH
    for _ in range(200):
        base = rng.randrange(PORT_LOW, high - count)
        if all(_free(p, socket.SOCK_STREAM) and _free(p, socket.SOCK_DGRAM) for p in range(base, base + count)):
            return base
    raise ClusterUnavailable(f"no run of {count} free loopback ports between {PORT_LOW} and {high}")


class _Lines:
    """stdout lines of a subprocess, collected by a reader thread (so the pipe never fills)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.ended = False
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                with self.cond:
                    self.lines.append(line.rstrip("\n"))
                    self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def wait_for(self, needle: str, deadline: float) -> str | None:
        with self.cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    return None
                self.cond.wait(left)


def with_workers(config: Path, node: str, workers: int) -> Path:
    """A copy of topology ``config`` (in a new temporary directory, its ``templates/`` linked) in which
    ``node`` has ``workers = N``."""
    lines = config.read_text(encoding="utf-8").splitlines()
    want = f'name = "{node}"'
    at = next((i for i, line in enumerate(lines) if line.strip() == want), None)
    if at is None:
        raise ClusterUnavailable(f"no node {node!r} in {config}")
    lines.insert(at + 1, f"workers = {workers}")
    out_dir = Path(tempfile.mkdtemp(prefix="idresolve-topology-"))
    if (config.parent / "templates").is_dir():
        (out_dir / "templates").symlink_to((config.parent / "templates").resolve())
    out = out_dir / config.name
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        load_topology(out)
    except TopologyError as exc:
        raise ClusterUnavailable(f"cannot give {node!r} {workers} workers: {exc}") from None
    return out


class OwnCluster:
    """``with OwnCluster(...) as cluster:`` starts ``idresolve up`` and stops it whatever happens."""

    def __init__(self, config: Path, *, latency: str, own_process: tuple[str, ...] = (),
                 progress: Any = None, extra_flags: tuple[str, ...] = ()) -> None:
        self.config, self.latency, self.own_process = config, latency, own_process
        self.extra_flags = extra_flags
        self.progress = progress or (lambda _m: None)
        self.tmp: Path | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.stderr: IO[bytes] | None = None
        self.cluster: Cluster | None = None
        self._workers: list[int] = []

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        topology = load_topology(self.config)
        count = PORTS_PER_NODE * len(topology.running_nodes())
        rng = random.Random(os.getpid() ^ time.monotonic_ns())
        self.tmp = Path(tempfile.mkdtemp(prefix="idresolve-bench-"))
        last = ""
        for attempt in range(1, START_ATTEMPTS + 1):
            data_dir = self.tmp / f"cluster{attempt}"
            base = free_base_port(count, rng)
            argv = idresolve_argv("up", "--config", str(self.config), "--data-dir", str(data_dir), "--base-port",
                                  str(base), "--latency", self.latency, "--log-level", "WARNING", "--dashboard", "off",
                                  *self.extra_flags)
            for name in self.own_process:
                argv += ["--own-process", name]
            env = {k: v for k, v in os.environ.items() if not k.startswith("IDRESOLVE_")}
            env["PYTHONUNBUFFERED"] = "1"
            self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
                                         text=True, env=env)
            lines = _Lines(self.proc.stdout)  # type: ignore[arg-type]
            line = lines.wait_for("ready in ", t0 + START_TIMEOUT_S)
            if line is not None:
                ready_s = time.monotonic() - t0
                cluster = load_existing(data_dir)
                cluster.own, cluster.up_pid, cluster.ready_s = True, self.proc.pid, round(ready_s, 3)
                cluster.start_attempts = attempt
                with contextlib.suppress(ValueError, IndexError):
                    cluster.reported_ready_s = float(line.split("ready in ", 1)[1].split()[0])
                self.cluster = cluster
                self._workers = list(cluster.worker_pids())
                return cluster
            last = self._tail()
            self._stop_proc()
            if "in use" not in last:
                break
            self.progress(f"cluster: ports {base}+ taken ({attempt}/{START_ATTEMPTS}); trying others")
        raise ClusterUnavailable(f"`idresolve up` did not become ready: {last or 'no output'}")

    def _tail(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        return self.stderr.read()[-1500:].decode("utf-8", "replace").strip()

    def _stop_proc(self) -> None:
        proc, self.proc = self.proc, None
        workers = list(self._workers)
        if proc is not None:
            workers += children(proc.pid)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_S)
            if proc.stdout is not None:
                proc.stdout.close()
        for pid in set(workers):  # workers run in sessions of their own: never leave one behind
            if "idresolve.cluster.worker" in cmdline(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._workers = []
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

    def stop(self) -> None:
        try:
            self._stop_proc()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None


def seed(cluster: Cluster, count: int) -> dict[str, Any]:
    """``idresolve seed`` ``count`` identifiers tagged ``BENCH`` (those already there are kept)."""
    argv = idresolve_argv("seed", "--identifiers", str(count), "--data-dir", str(cluster.data_dir),
                          "--prefix-suffix", SEED_TAG, "--json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRESOLVE_")}
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=SEED_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ClusterUnavailable(f"`idresolve seed` did not finish within {SEED_TIMEOUT_S:g} s") from None
    try:
        out = json.loads(res.stdout)
    except ValueError:
        raise ClusterUnavailable(f"`idresolve seed` failed: {(res.stderr or res.stdout).strip()[-800:]}") from None
    if res.returncode != 0 or out.get("failed"):
        raise ClusterUnavailable(f"`idresolve seed` registered {out.get('registered')} and failed {out.get('failed')} "
                                 f"identifiers: {res.stderr.strip()[-500:]}")
    cluster.seeded = out
    return dict(out)
