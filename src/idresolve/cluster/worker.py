"""A cluster worker: one process, one event loop, many nodes (DESIGN.md: host many nodes per loop).

It opens each node's store under ``<data_dir>/nodes/<name>/``, writes the node's own prefix record
(admin identity, secret, HS_SITE), starts its listeners, and prints one JSON line ``{"event": "ready"}``
on stdout when every node listens. SIGTERM or SIGINT stop it cleanly. Top-level nodes replicate the
registry to each other; every node's outgoing traffic pays the link latency model unless it is off.

Run by the supervisor as ``python -m idresolve.cluster.worker ...``; ``--node NAME`` hosts one node
(containers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import is_loopback
from ..core.handles import fold, prefix_handle
from ..core.latency import LatencyModel
from ..core.records import Record
from ..core.topology import load_topology
from ..core.values import HS_SECKEY, HS_SITE, seckey_value, site_value
from ..host import freeze_startup_heap, run_until_signal
from ..hosting import HostedAuthoritative, HostedRecursive, link_metrics
from ..net.client import ClientPool
from ..net.links import LinkModel
from ..net.replicator import Replicator
from ..net.services import DEFAULT_CLIENT_RATE, RecursiveService
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.bootstrap import ADMIN_INDEX, HS_SITE_INDEX, prefix_record
from ..nodes.recursive import RecursiveResolver, Target
from ..nodes.replication import SyncState, make_sync_handler
from ..store.sqlite import SqliteStore
from .credentials import cluster_secret, secret_for
from .plan import ClusterPlan, NodePlan, identity_of, make_plan

log = logging.getLogger("idresolve.worker")


@dataclass(frozen=True, slots=True)
class RecursiveSettings:
    cache_entries: int = 100_000
    negative_ttl_s: float = 0.0
    client_rate: float | None = DEFAULT_CLIENT_RATE
    shed_lag_s: float = 0.05  # 0: never shed on event-loop lag


def target_of(n: NodePlan) -> Target:
    return Target(n.name, n.dial_host, n.tcp_port, n.spec.location.name)


def ensure_own_prefix_record(node: AuthoritativeNode, n: NodePlan, secret: str, now: float) -> None:
    """The node's copy of ``0.NA/<its prefix>``: created at first start; secret and HS_SITE kept current."""
    assert n.spec.prefix is not None  # every authoritative role has a prefix (topology validation)
    prefix = n.spec.prefix
    site = n.site()
    existing = node.store.get(fold(prefix_handle(prefix)))
    if existing is None:
        node.bootstrap_record(prefix_record(prefix, secret, site=site, now=now))
        return
    key, site_v = existing.by_index(ADMIN_INDEX), existing.by_index(HS_SITE_INDEX)
    want_key, want_site = seckey_value(ADMIN_INDEX, secret), site_value(HS_SITE_INDEX, site)
    if (key is not None and key.type == HS_SECKEY and key.data == want_key.data
            and site_v is not None and site_v.type == HS_SITE and site_v.data == want_site.data):
        return
    keep = [v for v in existing.values if v.index not in (ADMIN_INDEX, HS_SITE_INDEX)]
    values = sorted([*keep, want_key.stamped(now), want_site.stamped(now)], key=lambda v: v.index)
    node.bootstrap_record(Record(existing.handle, tuple(values)))


class Worker:
    def __init__(self, plan: ClusterPlan, names: list[str], data_dir: Path, master: str, *,
                 latency: LatencyModel, bind_host: str | None = None, hop_timeout_s: float = 2.0,
                 recursive: RecursiveSettings | None = None, plain_writes: bool = True) -> None:
        self.plan, self.data_dir, self.master, self.latency = plan, data_dir, master, latency
        self.names = names
        self.bind_host = bind_host
        self.hop_timeout_s = hop_timeout_s
        self.recursive = recursive or RecursiveSettings()
        self.plain_writes = plain_writes
        self.hosted: list[HostedAuthoritative | HostedRecursive] = []
        self.replicators: list[Replicator] = []
        where = {(n.dial_host, n.tcp_port): n.spec.location for n in plan.nodes}
        self._where = where

    def _pool(self, n: NodePlan) -> ClientPool:
        link = None if self.latency.is_off else LinkModel(self.latency, n.spec.location, self._where)
        return ClientPool(delay=link)

    async def start(self) -> list[dict[str, object]]:
        ready = []
        now = time.time()
        for name in self.names:
            n = self.plan.node(name)
            host = self.bind_host or n.host
            if n.role == "recursive":
                tops = sorted(self.plan.by_role("top"), key=lambda t: (
                    t.spec.disaster_recovery, self.latency.base_one_way_ms(n.spec.location, t.spec.location), t.index))
                rs = self.recursive
                resolver = RecursiveResolver([target_of(t) for t in tops], cache_entries=rs.cache_entries,
                                             negative_ttl_s=rs.negative_ttl_s)
                service = RecursiveService(n.name, resolver, self._pool(n), hop_timeout_s=self.hop_timeout_s,
                                           client_rate=rs.client_rate)
                if service.admission is not None:
                    service.admission.lag_threshold_s = rs.shed_lag_s or float("inf")
                hosted: HostedAuthoritative | HostedRecursive = HostedRecursive(service)
                self.hosted.append(hosted)  # before start: stop() must release it even if start fails
                addrs = await hosted.start(http=f"{host}:{n.http_port}", tcp=f"{host}:{n.tcp_port}",
                                           udp=f"{host}:{n.udp_port}")
            else:
                node_dir = self.data_dir / "nodes" / n.name
                node_dir.mkdir(parents=True, exist_ok=True)
                node = AuthoritativeNode(SqliteStore(node_dir / "records.sqlite3"), n.prefixes, name=n.name)
                assert n.spec.prefix is not None
                ensure_own_prefix_record(node, n, secret_for(self.master, n.spec.prefix), now)
                extra = None
                if n.role == "top":
                    state = SyncState()
                    extra = make_sync_handler(state, n.spec.prefix)
                    peers = [target_of(t) for t in self.plan.by_role("top") if t.name != n.name]
                    auth = (identity_of(n.spec.prefix), secret_for(self.master, n.spec.prefix).encode())
                    replicator = Replicator(node, state, peers, self._pool(n), auth)
                    self.replicators.append(replicator)
                hosted = HostedAuthoritative(node, extra_handlers=extra, role=n.role,
                                             shed_lag_s=self.recursive.shed_lag_s,
                                             plain_http_writes=self.plain_writes)
                hosted.service.allow_writes = self.plain_writes
                self.hosted.append(hosted)
                if n.role == "top":
                    hosted.metrics.sample(lambda r=replicator: {
                        "idresolve_replication_pushed": ("counter", "Registry records pushed to peers", r.pushed),
                        "idresolve_replication_pending": ("gauge", "Registry records waiting for a peer",
                                                          sum(len(q) for q in r.pending.values())),
                        **link_metrics(r.pool)})
                addrs = await hosted.start(http=f"{host}:{n.http_port}", tcp=f"{host}:{n.tcp_port}",
                                           udp=f"{host}:{n.udp_port}")
            ready.append({"name": n.name, "role": n.role, "http": list(addrs.http or ()), "tcp": list(addrs.tcp or ())})
        for r in self.replicators:
            r.start()
        return ready

    async def stop(self) -> None:
        for r in self.replicators:
            await r.stop()
        results = await asyncio.gather(*(h.stop() for h in self.hosted), return_exceptions=True)
        for h, res in zip(self.hosted, results, strict=True):
            if isinstance(res, BaseException):
                log.error("stopping %s failed: %r", getattr(h, "node", h), res)


def _stop_on_stdin_eof(stop: asyncio.Event) -> None:
    """Set ``stop`` when standard input reaches end of file (the supervisor is gone)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            log.warning("the supervisor is gone: stopping")
            stop.set()

    loop.add_reader(fd, readable)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m idresolve.cluster.worker",
                                description="Host some nodes of a cluster in one event loop (run by `idresolve up`).")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--index", type=int, help="host the nodes of this worker index")
    p.add_argument("--node", action="append", help="host exactly these nodes (repeat)")
    p.add_argument("--host", default="127.0.0.1", help="address nodes listen on and dial each other at")
    p.add_argument("--bind", help="address to listen on, when it differs from --host (containers: 0.0.0.0)")
    p.add_argument("--dial-hosts", choices=["same", "names"], default="same",
                   help="'names': nodes reach each other by node name (containers)")
    p.add_argument("--latency", choices=["on", "off"], default="on")
    p.add_argument("--stop-with-stdin", action="store_true",
                   help="stop when standard input closes (the supervisor holds it open: if the supervisor dies, "
                   "its workers do not outlive it)")
    p.add_argument("--plain-writes", action="store_true",
                   help="take credentials and writes in plain text even when --bind is beyond loopback "
                   "(a private network such as the compose network)")
    p.add_argument("--scenario")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--hop-timeout", type=float, default=2.0, help="recursive: seconds to wait for each hop")
    p.add_argument("--cache-entries", type=int, default=100_000, help="recursive: answers cached at most")
    p.add_argument("--negative-ttl", type=float, default=0.0, help="recursive: cache 'not found' this long")
    p.add_argument("--shed-lag-ms", type=float, default=float(os.environ.get("IDRESOLVE_SHED_LAG_MS", "50")),
                   help="shed load when the event loop lags this many ms for 100 ms (0: never; "
                   "env IDRESOLVE_SHED_LAG_MS)")
    p.add_argument("--client-rate", type=float, default=DEFAULT_CLIENT_RATE,
                   help="recursive: requests/s accepted per client address (0: unlimited)")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    topology = load_topology(args.config)
    dial = {n.name: n.name for n in topology.running_nodes()} if args.dial_hosts == "names" else None
    plan = make_plan(topology, base_port=args.base_port, workers=args.workers, host=args.host, dial_hosts=dial)
    names = args.node or [n.name for n in plan.for_worker(args.index if args.index is not None else 0)]
    master = cluster_secret(args.data_dir)
    latency = LatencyModel.off() if args.latency == "off" else LatencyModel.for_topology(topology, args.scenario)
    settings = RecursiveSettings(args.cache_entries, args.negative_ttl, args.client_rate or None,
                                 args.shed_lag_ms / 1000.0)
    worker = Worker(plan, names, args.data_dir, master, latency=latency, bind_host=args.bind,
                    hop_timeout_s=args.hop_timeout, recursive=settings,
                    plain_writes=args.plain_writes or is_loopback(args.bind or args.host))

    async def run(stop: asyncio.Event) -> None:
        if args.stop_with_stdin:
            _stop_on_stdin_eof(stop)
        try:
            ready = await worker.start()
            freeze_startup_heap()
            print(json.dumps({"event": "ready", "worker": args.index, "nodes": ready}), flush=True)
            await stop.wait()
        finally:
            await worker.stop()

    try:
        run_until_signal(run)
    except OSError as exc:
        print(json.dumps({"event": "error", "message": f"cannot listen: {exc.strerror or exc}"}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
