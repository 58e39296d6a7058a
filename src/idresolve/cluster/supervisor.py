"""``idresolve up``: plan the cluster, start the workers, allocate prefixes, report, and stop cleanly.

The supervisor writes ``<data_dir>/cluster.json`` (every node's role, location, prefixes and addresses)
so that ``status``, ``seed``, ``register`` and ``resolve`` find the cluster, and ``credentials.json``
(mode 0600) with every prefix admin's secret. Once the workers listen it writes ``control.json``: each
worker's control channel (``cluster.control``: faults and the latency setting at run time) and the
dashboard's address.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.topology import Topology
from .bootstrap import BootstrapReport, bootstrap
from .credentials import cluster_secret, write_credentials
from .faults import write_control_file
from .plan import ClusterPlan

CLUSTER_FILE = "cluster.json"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class ClusterError(RuntimeError):
    pass


@dataclass
class UpOptions:
    config: Path
    data_dir: Path
    base_port: int
    workers: int
    latency: str  # on | off
    scenario: str | None
    own_process: tuple[str, ...] = ()
    log_level: str = "WARNING"
    worker_flags: tuple[str, ...] = ()  # passed through to every worker (recursive settings)
    dashboard: str | None = None  # HOST:PORT of the dashboard, None: none


def cluster_description(plan: ClusterPlan, opts: UpOptions) -> dict[str, object]:
    return {
        "topology": plan.topology.name,
        "config": str(opts.config.resolve()),
        "basePort": plan.base_port,
        "latency": opts.latency,
        "scenario": opts.scenario or plan.topology.default_scenario,
        "nodes": [
            {"name": n.name, "role": n.role, "location": n.spec.location.name, "province": n.spec.location.province,
             "prefix": n.spec.prefix, "connected": n.spec.connected if n.role == "secondary" else None,
             "disasterRecovery": n.spec.disaster_recovery if n.role == "top" else None,
             "hosted": [e.prefix for e in plan.topology.hosted_by(n.name)] if n.role == "secondary" else [],
             "http": n.http_url, "tcp": f"{n.dial_host}:{n.tcp_port}", "udp": f"{n.dial_host}:{n.udp_port}",
             "handle": n.handle_address}
            for n in plan.nodes
        ],
        "enterprises": [
            {"name": e.name, "prefix": e.prefix, "secondary": e.parent, "hosted": e.hosted,
             "holder": plan.holder_of(e.prefix).name}
            for e in plan.topology.nodes_by_role("enterprise") if e.prefix
        ],
    }


def ephemeral_range() -> tuple[int, int] | None:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def check_ports_free(plan: ClusterPlan) -> None:
    for n in plan.nodes:
        for port, kind in ((n.tcp_port, socket.SOCK_STREAM), (n.http_port, socket.SOCK_STREAM), (n.udp_port, socket.SOCK_DGRAM),
                           (n.handle_port, socket.SOCK_STREAM), (n.handle_port, socket.SOCK_DGRAM)):
            with socket.socket(socket.AF_INET, kind) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((n.host, port))
                except OSError:
                    hint = ""
                    eph = ephemeral_range()
                    if eph is not None and eph[0] <= port <= eph[1]:
                        hint = (f" (it is inside the ephemeral range {eph[0]}-{eph[1]}, where client connections "
                                f"in TIME_WAIT hold ports: choose a base port below {eph[0]})")
                    raise ClusterError(f"port {port} on {n.host} (node {n.name}) is in use: is a cluster already "
                                       f"running? Stop it, or choose another --base-port{hint}") from None


#: ``<tmp>/idresolve-cluster-<supervisor pid>-<random>``: the sockets of the cluster's shared nodes.
CLUSTER_SOCKETS_PREFIX = "idresolve-cluster-"


class Supervisor:
    def __init__(self, plan: ClusterPlan, opts: UpOptions) -> None:
        self.plan, self.opts = plan, opts
        self.procs: list[subprocess.Popen[str]] = []
        self.ready_nodes: list[dict[str, object]] = []
        self.controls: list[dict[str, object]] = []  # per worker: its control channel and its nodes
        self.dashboard: subprocess.Popen[str] | None = None
        # The Unix sockets of the nodes served by several processes (``workers`` in the topology), one
        # directory for all of them, made at start and removed at stop (``runtime.workers.private_sockets_dir``).
        self.sockets: Path | None = None

    def _groups(self) -> list[tuple[list[str], tuple[int, int] | None]]:
        """The processes to start: the nodes each hosts, and for a node of several processes (``workers``
        in the topology) which share of it (index, count)."""
        own = set(self.opts.own_process)
        unknown = own - {n.name for n in self.plan.nodes}
        if unknown:
            raise ClusterError(f"--own-process names unknown nodes: {', '.join(sorted(unknown))}")
        shared = [n for n in self.plan.nodes if n.spec.workers > 1]
        alone = own | {n.name for n in shared}
        groups: list[list[str]] = [[n.name for n in self.plan.for_worker(w) if n.name not in alone]
                                   for w in range(self.plan.workers)]
        out: list[tuple[list[str], tuple[int, int] | None]] = [(g, None) for g in groups if g]
        out += [([name], None) for name in self.opts.own_process if name not in {n.name for n in shared}]
        out += [([n.name], (i, n.spec.workers)) for n in shared for i in range(n.spec.workers)]
        return out

    def worker_argv(self, names: list[str], share: tuple[int, int] | None = None) -> list[str]:
        o = self.opts
        argv = [sys.executable, "-m", "idresolve.cluster.worker", "--config", str(o.config), "--data-dir",
                str(o.data_dir), "--base-port", str(self.plan.base_port), "--workers", str(self.plan.workers),
                "--latency", o.latency, "--log-level", o.log_level]
        if o.scenario:
            argv += ["--scenario", o.scenario]
        argv += list(o.worker_flags)
        for name in names:
            argv += ["--node", name]
        if share is not None:
            argv += ["--share", f"{share[0]}/{share[1]}"]
            if self.sockets is not None:
                argv += ["--sockets-dir", str(self.sockets)]
        return argv

    def start(self, progress: Callable[[str], None]) -> None:
        groups = self._groups()
        if any(share is not None for _, share in groups) and self.sockets is None:
            # imported here: the commands that only read cluster.json (resolve, register) skip it
            from ..runtime.workers import private_sockets_dir

            self.sockets = private_sockets_dir(CLUSTER_SOCKETS_PREFIX)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for names, share in groups:
            # stdin is a pipe nobody writes: when this process dies, however, it closes and the workers stop.
            self.procs.append(subprocess.Popen(self.worker_argv(names, share) + ["--stop-with-stdin", "--control"],
                                               stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE,
                                               stderr=None, text=True, env=env, start_new_session=True))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc, (names, _share) in zip(self.procs, groups, strict=True):
            line = _readline(proc, deadline)
            if line is None:
                raise ClusterError(f"a worker (nodes {', '.join(names[:3])}...) did not start; see its errors above")
            try:
                event = json.loads(line)
            except ValueError:
                raise ClusterError(f"a worker printed something unexpected: {line.strip()[:200]}") from None
            if event.get("event") != "ready":
                raise ClusterError(f"a worker failed: {event.get('message', line.strip())}")
            self.ready_nodes.extend(event["nodes"])
            if event.get("control"):
                self.controls.append({"url": event["control"], "nodes": names, "pid": proc.pid})
            progress(f"worker {len(self.ready_nodes)}/{len(self.plan.nodes)} nodes listening")
        write_control_file(self.opts.data_dir, self.controls)

    def start_dashboard(self) -> str:
        """Start ``idresolve dashboard`` for this cluster (it stops when this process goes); its URL, or why
        it did not start (the cluster runs without it)."""
        argv = [sys.executable, "-c", "from idresolve.cli.main import entry; entry()", "dashboard", "--data-dir",
                str(self.opts.data_dir),
                "--listen", str(self.opts.dashboard), "--ready-json", "--stop-with-stdin"]
        self.dashboard = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True,
                                          env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        line = _readline(self.dashboard, time.monotonic() + READY_TIMEOUT_S)
        try:
            event = json.loads(line or "{}")
        except ValueError:
            event = {"message": (line or "").strip()[:200]}
        if event.get("event") != "ready":
            raise ClusterError(f"the dashboard did not start: {event.get('message', 'no answer')}")
        return str(event["url"])

    def stop(self) -> None:
        if self.dashboard is not None and self.dashboard.poll() is None:
            self.procs.append(self.dashboard)
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.sockets is not None:  # every process that used it has exited
            shutil.rmtree(self.sockets, ignore_errors=True)
            self.sockets = None

    def dead_workers(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p.poll() is not None]


def _readline(proc: subprocess.Popen[str], deadline: float) -> str | None:
    result: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        result.append(proc.stdout.readline())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if not result or not result[0]:
        return None
    return result[0]


def prepare(topology: Topology, plan: ClusterPlan, opts: UpOptions) -> tuple[str, Path]:
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    master = cluster_secret(opts.data_dir)
    creds = write_credentials(opts.data_dir, plan, master)
    tmp = opts.data_dir / (CLUSTER_FILE + ".tmp")
    tmp.write_text(json.dumps(cluster_description(plan, opts), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, opts.data_dir / CLUSTER_FILE)
    return master, creds


def run_bootstrap(plan: ClusterPlan, master: str, progress: Callable[[str], None]) -> BootstrapReport:
    return bootstrap(plan, master, progress=progress)


def load_cluster(data_dir: Path) -> dict[str, object]:
    path = data_dir / CLUSTER_FILE
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ClusterError(f"no cluster in {data_dir} ({path} is missing): start one with `idresolve up "
                           f"--data-dir {data_dir}`, or give --server") from None
