"""A cluster worker: one process, one event loop, many nodes (docs/architecture.md: many nodes share one event loop).

It opens each node's store under ``<data_dir>/nodes/<name>/`` (with the node's own key pair,
``server-key.pem``, generated there on first start), writes the node's own prefix record (admin identity,
secret, HS_SITE with its key), starts its listeners (REST, msgpack, native Handle protocol), and prints
one JSON line ``{"event": "ready"}``
on stdout when every node listens. SIGTERM or SIGINT stop it cleanly. Top-level nodes replicate the
registry to each other, secondary nodes their records to their mirrors; every node's outgoing traffic
to the other nodes goes through its ``LinkModel`` (the latency model, when on, and the faults in force).

With ``--control`` it also serves the control channel (``cluster.control``, on a loopback port of its own,
named in the ready line): faults (``cluster.faults``) and the latency setting, changed at run time. A
killed node is stopped as a crash would stop it (listeners and connections closed at once, store
closed) and started again on the same store and ports when its fault is removed.

Run by the supervisor as ``python -m idresolve.cluster.worker ...``; ``--node NAME`` hosts one node
(containers). ``--node NAME --share I/N``: this process is share I of the N processes serving a node with
``workers = N`` in the topology: its sockets share the node's ports (SO_REUSEPORT), its answer caches
follow the others' writes and its /metrics sums theirs (``runtime/workers.py``); share 0 alone reports the
node as ready.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.latency import LatencyModel
from ..core.topology import Topology, load_topology
from ..http.edge import WORKER
from ..net.client import ClientPool
from ..net.links import LinkModel, Peer
from ..net.replicator import Replicator
from ..net.services import DEFAULT_CLIENT_RATE
from ..nodes.bootstrap import ensure_prefix_record
from ..nodes.pipeline import RecursiveNode
from ..nodes.recursive import RecursiveResolver, Upstream
from ..nodes.replication import MirrorNode, SyncState, make_mirror_handler, make_sync_handler
from ..runtime.balance import ConnectionBalancer
from ..runtime.config import is_loopback
from ..runtime.hosted import (
    HostedAuthoritative,
    HostedRecursive,
    HostSettings,
    TemplateSources,
    authoritative_host,
)
from ..runtime.listeners import NativeOptions
from ..runtime.serve import freeze_startup_heap, run_until_signal
from ..runtime.serverkey import load_or_create_server_key, public_key_bytes
from ..runtime.workers import PeerMetrics, SharedGenerations
from ..store.sqlite import SqliteStore
from .control import start_control
from .credentials import cluster_secret, secret_for
from .faults import Fault, FaultSet, control_token
from .plan import ClusterPlan, NodePlan, identity_of, make_plan

log = logging.getLogger("idresolve.worker")
Hosted = HostedAuthoritative | HostedRecursive


@dataclass(frozen=True, slots=True)
class RecursiveOptions:
    """What the recursive nodes' resolvers are built with."""

    cache_entries: int = 100_000
    negative_ttl_s: float = 0.0


class Worker:
    """Hosts the nodes ``names`` of ``plan`` in this event loop. ``settings`` applies to every node (listener
    limits, load shedding, write rules, the recursive nodes' client rate and hop timeout)."""

    def __init__(self, plan: ClusterPlan, names: list[str], data_dir: Path, master: str, *,
                 latency: LatencyModel, bind_host: str | None = None, settings: HostSettings | None = None,
                 recursive: RecursiveOptions | None = None, topology: Topology | None = None,
                 scenario: str | None = None, share: tuple[int, int] | None = None,
                 sockets_dir: Path | None = None) -> None:
        self.plan, self.data_dir, self.master, self.latency = plan, data_dir, master, latency
        self.share = share
        # where a shared node's processes keep their Unix sockets: the supervisor's directory, which it
        # removes when it stops; without one, <tmp>/idresolve-<digest of the node's data directory>
        self.sockets_dir = sockets_dir
        self.peers: dict[str, PeerMetrics] = {}  # node -> its worker processes' metrics (a shared node)
        self.names = names
        self.bind_host = bind_host
        self.settings = settings or HostSettings()
        self.recursive = recursive or RecursiveOptions()
        self.topology = topology or plan.topology
        self.scenario = None if latency.is_off else (scenario or self.topology.default_scenario)
        self.hosted: dict[str, Hosted] = {}
        self.replicators: dict[str, Replicator] = {}
        self.links: dict[str, list[LinkModel]] = {}  # node -> the links of its pools
        self.faults = FaultSet()
        self.errors: dict[str, str] = {}  # node -> why it could not be started again
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._where = {(n.dial_host, n.tcp_port): Peer(n.name, n.spec.location) for n in plan.nodes}

    # -- building nodes --------------------------------------------------------------------------------
    def _pool(self, n: NodePlan) -> ClientPool:
        link = LinkModel(self.latency, n.spec.location, self._where, own_name=n.name, faults=self.faults)
        self.links.setdefault(n.name, []).append(link)
        return ClientPool(delay=link)

    def _tops(self, n: NodePlan) -> list[Upstream]:
        """The top-level nodes as ``n`` asks them: primaries first, nearest first."""
        tops = sorted(self.plan.by_role("top"), key=lambda t: (
            t.spec.disaster_recovery, self.latency.base_one_way_ms(n.spec.location, t.spec.location), t.index))
        return [t.upstream() for t in tops]

    def _recursive(self, n: NodePlan) -> HostedRecursive:
        ro = self.recursive
        resolver = RecursiveResolver(self._tops(n), cache_entries=ro.cache_entries, negative_ttl_s=ro.negative_ttl_s)
        hosted = HostedRecursive(RecursiveNode(n.name, resolver), self._pool(n), self.settings)
        if self.share is not None:  # answers cached per process, each bounded by its TTL: nothing to share
            self._share_ports(hosted)
        return hosted

    def _native(self, n: NodePlan) -> NativeOptions:
        """The node's key (``<data_dir>/nodes/<name>/server-key.pem``) and the site that publishes it."""
        key = load_or_create_server_key(self.data_dir / "nodes" / n.name)
        return NativeOptions(key, n.site(n.site_address, public_key_bytes(key)))

    def _template_sources(self, n: NodePlan) -> TemplateSources | None:
        """Secondary and enterprise nodes fetch templates through the top level; an enterprise node asks its
        own secondary directly (its industry's templates; a secondary not registered at the top is
        reachable only so)."""
        if n.role not in ("secondary", "enterprise"):
            return None
        holders: tuple[tuple[str, Upstream], ...] = ()
        if n.role == "enterprise" and n.spec.parent is not None:
            sec = self.plan.node(n.spec.parent)
            holders = ((sec.spec.prefix or "", sec.upstream()),)
        return TemplateSources(tuple(self._tops(n)), holders, self._pool(n))

    def _authoritative(self, n: NodePlan, now: float, native: NativeOptions) -> HostedAuthoritative:
        assert n.spec.prefix is not None  # every authoritative role has a prefix (topology validation)
        node_dir = self.data_dir / "nodes" / n.name
        node_dir.mkdir(parents=True, exist_ok=True)
        secret = secret_for(self.master, n.spec.prefix)
        store = SqliteStore(node_dir / "records.sqlite3")
        if n.role == "mirror":
            return self._mirror(n, store, secret, now, native)
        state = SyncState() if n.role == "top" else None
        extra = make_sync_handler(state, n.spec.prefix) if state is not None else None
        hosted = authoritative_host(n.name, store, n.prefixes, secret,
                                    settings=self.settings, role=n.role, site=native.site, extra_handlers=extra,
                                    now=now, templates=self._template_sources(n))
        auth = (identity_of(n.spec.prefix), secret.encode())
        if self.share is not None:
            self._share(hosted, node_dir)
        if state is not None:
            peers = [t.upstream() for t in self.plan.by_role("top") if t.name != n.name]
            self.replicators[n.name] = Replicator(hosted.node, state, peers, self._pool(n), auth)
        elif n.role == "secondary" and self.plan.mirrors_of(n.name):
            mirrors = [m.upstream() for m in self.plan.mirrors_of(n.name)]
            self.replicators[n.name] = Replicator(hosted.node, SyncState(), mirrors, self._pool(n), auth,
                                                  mirrors=True)
        if n.name in self.replicators:
            hosted.metrics.sample(self.replicators[n.name].metrics)
        return hosted

    def _mirror(self, n: NodePlan, store: SqliteStore, secret: str, now: float,
                native: NativeOptions) -> HostedAuthoritative:
        """A read-only copy of a secondary node: its prefix, its admin, its records as its primary pushes them."""
        assert n.spec.prefix is not None and n.spec.mirror_of is not None
        node = MirrorNode(store, n.prefixes, name=n.name)
        node.primary = n.spec.mirror_of
        ensure_prefix_record(node, n.spec.prefix, secret, now, site=native.site)
        return HostedAuthoritative(node, self.settings, role="mirror", extra_handlers=make_mirror_handler(n.spec.prefix))

    async def _start_node(self, name: str, now: float) -> dict[str, object]:
        n = self.plan.node(name)
        host = self.bind_host or n.host
        self.links.pop(name, None)
        native = self._native(n)
        hosted = self._recursive(n) if n.role == "recursive" else self._authoritative(n, now, native)
        self.hosted[name] = hosted  # before start: stop() must release it even if start fails
        for link in self.links.get(name, []):
            hosted.metrics.sample(link.metrics)
        addrs = await hosted.start(http=f"{host}:{n.http_port}", tcp=f"{host}:{n.tcp_port}", udp=f"{host}:{n.udp_port}",
                                   handle=f"{host}:{n.handle_port}", native=native)
        peers = self.peers.get(name)
        if peers is not None:  # once its node exists: the other processes scrape it through these
            await peers.start()
        replicator = self.replicators.get(name)
        if replicator is not None:
            replicator.start()
        return {"name": n.name, "role": n.role, "http": list(addrs.http or ()), "tcp": list(addrs.tcp or ()),
                "handle": list(addrs.handle or ())}

    def _share(self, hosted: HostedAuthoritative, node_dir: Path) -> None:
        generations = SharedGenerations(node_dir / "generations")
        hosted.node.share_writes(generations)
        for prefix in hosted.node.configured:  # this process may have rewritten the prefix records: all resync
            generations.bump(f"0.na/{prefix}")
        self._share_ports(hosted)

    def _share_ports(self, hosted: HostedAuthoritative | HostedRecursive) -> None:
        assert self.share is not None
        index, count = self.share
        hosted.listeners.reuse_port = True
        hosted.app[WORKER] = {"index": index, "pid": os.getpid(), "workers": count}
        node_dir = self.data_dir / "nodes" / hosted.node.name
        digest = hashlib.sha256(str(node_dir.resolve()).encode()).hexdigest()[:16]  # short: socket paths are bounded
        if self.sockets_dir is not None:
            sockets = self.sockets_dir / digest
            self.sockets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # one given by hand may not exist yet
        else:
            sockets = Path(tempfile.gettempdir()) / f"idresolve-{digest}"
        sockets.mkdir(mode=0o700, exist_ok=True)
        peers = PeerMetrics(sockets, index, count, hosted.metrics.render_own)
        hosted.metrics.peers = peers.merged
        hosted.listeners.balancer = balancer = ConnectionBalancer(sockets, index, count)
        hosted.metrics.sample(balancer.metrics)
        self.peers[hosted.node.name] = peers

    async def start(self) -> list[dict[str, object]]:
        now = time.time()
        started = [await self._start_node(name, now) for name in self.names]
        # A node of several processes is reported by its first (the supervisor reads one line per process).
        return started if self.share is None or self.share[0] == 0 else []

    async def _stop_node(self, name: str, *, crash: bool = False) -> None:
        replicator = self.replicators.pop(name, None)
        if replicator is not None:
            await replicator.stop()
            replicator.pool.close()
        peers = self.peers.pop(name, None)
        if peers is not None:
            await peers.stop()
        hosted = self.hosted.pop(name, None)
        if hosted is None:
            return
        try:
            if crash:
                await _halt(hosted)
            else:
                await hosted.stop()
        except Exception as exc:  # noqa: BLE001 - a node that fails to stop must not stop the others
            log.error("stopping %s failed: %r", name, exc)

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        await asyncio.gather(*(self._stop_node(name) for name in list(self.hosted)))

    # -- faults and the latency setting (the control channel) ----------------------------------------------
    def state(self) -> dict[str, object]:
        return {"nodes": list(self.names), "down": sorted(n for n in self.names if n not in self.hosted),
                "faults": [f.to_json() for f in self.faults.faults.values()], "errors": dict(self.errors),
                "latency": "off" if self.latency.is_off else "on", "scenario": self.scenario}

    async def add_fault(self, fault: Fault) -> None:
        self.faults.add(fault)
        if fault.until is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, fault.until - time.time())
            self._timers[fault.id] = loop.call_later(delay, lambda: asyncio.ensure_future(self.remove_faults(fault.id)))
        if fault.kind == "kill" and fault.nodes[0] in self.hosted:
            await self._stop_node(fault.nodes[0], crash=True)

    async def remove_faults(self, fault_id: str | None = None, *, kind: str | None = None,
                            node: str | None = None) -> list[Fault]:
        """Remove the fault ``fault_id``, or every fault of ``kind`` naming ``node`` (all: heal)."""
        chosen = ([self.faults.faults[fault_id]] if fault_id in self.faults.faults else []) if fault_id \
            else self.faults.matching(kind, node)
        for f in chosen:
            self.faults.remove(f.id)
            timer = self._timers.pop(f.id, None)
            if timer is not None:
                timer.cancel()
        await self._revive()
        return chosen

    async def _revive(self) -> None:
        """Start again every node of this worker that is down and no longer killed."""
        killed = self.faults.killed()
        now = time.time()
        for name in self.names:
            if name in self.hosted or name in killed:
                continue
            try:
                await self._start_node(name, now)
                self.errors.pop(name, None)
            except OSError as exc:
                self.errors[name] = f"cannot listen again: {exc.strerror or exc}"
                log.error("restarting %s failed: %r", name, exc)
                await self._stop_node(name, crash=True)

    def set_latency(self, latency: str, scenario: str | None) -> None:
        model = LatencyModel.off() if latency == "off" else LatencyModel.for_topology(self.topology, scenario)
        self.latency = model
        self.scenario = None if latency == "off" else (scenario or self.topology.default_scenario)
        for links in self.links.values():
            for link in links:
                link.model = model


async def _halt(hosted: Hosted) -> None:
    """Stop a node as a crash would: no draining of requests in flight, connections closed now."""
    ls = hosted.listeners
    if ls.balancer is not None:  # handoffs queued for it die with it
        await ls.balancer.stop()
    for udp in (ls.udp, ls.native_udp):
        if udp is not None:
            udp.close()
    for tcp in (ls.tcp, ls.native_tcp):
        if tcp is not None:
            await tcp.close(0.0)
    if ls.runner is not None:
        await ls.runner.cleanup()
    if isinstance(hosted, HostedRecursive):
        hosted.pool.close()
    else:
        hosted.node.store.close()


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


def _share(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--share is I/N, like 0/2, not {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--share {text}: I must be from 0 to N-1")
    return i, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m idresolve.cluster.worker",
                                description="Host some nodes of a cluster in one event loop (run by `idresolve up`).")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--index", type=int, help="host the nodes of this worker index")
    p.add_argument("--node", action="append", help="host exactly these nodes (repeat)")
    p.add_argument("--share", type=_share, metavar="I/N",
                   help="be share I of the N processes of the one --node (workers = N in the topology)")
    p.add_argument("--sockets-dir", type=Path, metavar="DIR",
                   help="with --share: the directory (kept short) for the node's processes' Unix sockets; "
                   "`idresolve up` gives its own and removes it when it stops (default: "
                   "<tmp>/idresolve-<digest of the node's data directory>, left in place)")
    p.add_argument("--host", default="127.0.0.1", help="address nodes listen on and dial each other at")
    p.add_argument("--bind", help="address to listen on, when it differs from --host (containers: 0.0.0.0)")
    p.add_argument("--dial-hosts", choices=["same", "names"], default="same",
                   help="'names': nodes reach each other by node name (containers)")
    p.add_argument("--latency", choices=["on", "off"], default="on")
    p.add_argument("--stop-with-stdin", action="store_true",
                   help="stop when standard input closes (the supervisor holds it open: if the supervisor dies, "
                   "its workers do not outlive it)")
    p.add_argument("--control", action="store_true",
                   help="serve the control channel (faults, latency) on a loopback port, named in the ready line")
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
    plain_writes = args.plain_writes or is_loopback(args.bind or args.host)
    settings = HostSettings(shed_lag_s=args.shed_lag_ms / 1000.0, plain_http_writes=plain_writes,
                            binary_writes=plain_writes, client_rate=args.client_rate or None,
                            hop_timeout_s=args.hop_timeout)
    worker = Worker(plan, names, args.data_dir, master, latency=latency, bind_host=args.bind, settings=settings,
                    recursive=RecursiveOptions(args.cache_entries, args.negative_ttl), topology=topology,
                    scenario=args.scenario, share=args.share, sockets_dir=args.sockets_dir)
    if args.share is not None and (len(names) != 1 or plan.node(names[0]).role == "top"):
        p.error("--share needs exactly one --node, a secondary, enterprise or recursive node")

    async def run(stop: asyncio.Event) -> None:
        if args.stop_with_stdin:
            _stop_on_stdin_eof(stop)
        control = None
        try:
            ready = await worker.start()
            event: dict[str, object] = {"event": "ready", "worker": args.index, "nodes": ready}
            if args.control:
                control, event["control"] = await start_control(worker, control_token(master))
            freeze_startup_heap()
            print(json.dumps(event), flush=True)
            await stop.wait()
        finally:
            if control is not None:
                await control.cleanup()
            await worker.stop()

    try:
        run_until_signal(run)
    except OSError as exc:
        print(json.dumps({"event": "error", "message": f"cannot listen: {exc.strerror or exc}"}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
