"""Building a simulated cluster: the topology's nodes as the cluster plans them, allocated through their APIs.

Every authoritative node is a real ``AuthoritativeNode`` on a ``SyntheticStore`` (its share of the
identifier space), with its own prefix record written as every host writes it
(``nodes.bootstrap.ensure_prefix_record``, HS_SITE from ``cluster.plan``); top-level nodes run the
registry sync handler. Allocation is ``cluster.bootstrap.bootstrap`` itself, over ``SetupClient``: a
``BlockingClient`` whose socket is the simulated node's sans-I/O connection. The registry is then
replicated to the other top-level nodes with REGISTRY_SYNC requests (what ``net.replicator`` sends), and
each secondary node publishes the metadata templates its identifiers name. Recursive nodes are
``RecursiveNode``s with the top-level nodes ordered as a cluster worker orders them (primaries first,
nearest first). All of this happens at the start time, before the first arrival.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

from ..cluster.bootstrap import bootstrap, load_templates
from ..cluster.credentials import secret_for
from ..cluster.plan import ClusterPlan, identity_of, make_plan
from ..core.codes import OpCode, ResponseCode
from ..core.handles import PREFIX_RECORDS_KEY, fold, prefix_handle
from ..core.latency import LatencyModel
from ..core.messages import Request, Response
from ..core.templates import TemplateRef
from ..core.templates.storage import template_from_values, template_handle, version_value
from ..core.topology import Location, Topology
from ..net.blocking import BlockingClient, ProtocolClientError
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.bootstrap import ensure_prefix_record
from ..nodes.pipeline import RecursiveNode
from ..nodes.recursive import RecursiveResolver
from ..nodes.replication import FLAG_SYNC_DELETE, SyncState, make_sync_handler, record_version
from .nodes import SimAuthoritative, SimRecursive
from .space import IdentifierSpace, template_records
from .store import SyntheticStore

SIM_BASE_PORT = 26400  # never bound: the plan's addresses only name nodes (HS_SITE, upstreams)


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """How the simulated nodes are set up: the hosts' defaults unless a workload or a study says otherwise."""

    cache_entries: int = 100_000  # recursive: answers cached (referrals: a tenth, at least 1,000)
    ttl_cap_s: float = 3600.0
    negative_ttl_s: float = 0.0
    root_down_s: float = 30.0
    hop_timeout_s: float = 2.0
    answer_entries: int = 100_000  # authoritative: the node's answer cache
    shed_lag_ms: float = 50.0  # a request that would wait longer than this may be shed (code 3); 0: never
    max_queue: int = 20_000  # requests admitted and not finished, per node, beyond which all are shed


class VirtualClock:
    """The simulation's time, read by every node through ``clock()``."""

    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now


@dataclass
class SimCluster:
    topology: Topology
    plan: ClusterPlan
    space: IdentifierSpace
    master: str
    clock: VirtualClock
    settings: NodeSettings
    auth: dict[str, SimAuthoritative] = field(default_factory=dict)
    rec: dict[str, SimRecursive] = field(default_factory=dict)
    by_address: dict[str, SimAuthoritative] = field(default_factory=dict)
    location: dict[str, Location] = field(default_factory=dict)
    sync: dict[str, SyncState] = field(default_factory=dict)

    def node(self, name: str) -> SimAuthoritative | SimRecursive:
        found = self.auth.get(name) or self.rec.get(name)
        if found is None:
            known = ", ".join(sorted([*self.auth, *self.rec]))
            raise KeyError(f"no running node {name!r} (nodes: {known})")
        return found

    def auth_of(self, prefix: str) -> tuple[str, bytes]:
        """The credentials of ``prefix``'s admin (``300:0.NA/<prefix>``)."""
        return identity_of(prefix), secret_for(self.master, prefix).encode()

    def setup_client(self) -> type[BlockingClient]:
        return setup_client(self.by_address)


def setup_client(nodes: dict[str, SimAuthoritative]) -> type[BlockingClient]:
    """A ``BlockingClient`` class whose connection is a simulated node's: the same requests and answers as
    bytes, answered at once (set-up and administrative steps take no virtual time)."""

    class SetupClient(BlockingClient):
        network: ClassVar[dict[str, SimAuthoritative]] = nodes

        def _target(self) -> SimAuthoritative:
            target = self.network.get(f"{self.host}:{self.port}")
            if target is None:
                raise ProtocolClientError(f"cannot connect to {self.host}:{self.port}: no simulated node there")
            return target

        def connect(self) -> None:
            self._target()

        def close(self) -> None:
            pass

        def send(self, req: Request) -> int:
            if req.auth is None and self.auth is not None:
                req = replace(req, auth=self.auth)
            rid, frame = self._wire.send(req, None)
            data, _ = self._target().serve("setup", frame)
            self._ready.extend(msg for _, msg in self._wire.receive_data(data))
            return rid

        def receive(self) -> Response:
            if not self._ready:
                raise ProtocolClientError(f"no answer from {self.host}:{self.port}")
            return self._ready.pop(0)

    return SetupClient


def connect_all(topology: Topology) -> Topology:
    """The topology with every secondary node registered with the top level (a what-if)."""
    nodes = tuple(replace(n, connected=True) if n.role == "secondary" else n for n in topology.nodes)
    return replace(topology, nodes=nodes)


def build_cluster(topology: Topology, space: IdentifierSpace, *, latency: LatencyModel, settings: NodeSettings,
                  clock: VirtualClock, master: str) -> SimCluster:
    plan = make_plan(topology, base_port=SIM_BASE_PORT, workers=1)
    cluster = SimCluster(topology, plan, space, master, clock, settings)
    now = clock.now
    read_clock: Callable[[], float] = lambda: clock.now  # noqa: E731  (one attribute read per call)
    shed_s = settings.shed_lag_ms / 1000.0
    for n in plan.nodes:
        cluster.location[n.name] = n.spec.location
        if n.role == "recursive":
            continue
        assert n.spec.prefix is not None
        node = AuthoritativeNode(SyntheticStore(space, n.name), n.prefixes, name=n.name,
                                 answer_entries=settings.answer_entries)
        ensure_prefix_record(node, n.spec.prefix, secret_for(master, n.spec.prefix), now, site=n.site())
        extra = None
        if n.role == "top":
            cluster.sync[n.name] = SyncState()
            extra = make_sync_handler(cluster.sync[n.name], n.spec.prefix)
        sim = SimAuthoritative(n.name, n.role, node, read_clock, extra=extra, shed_after_s=shed_s,
                               max_queue=settings.max_queue)
        cluster.auth[n.name] = sim
        cluster.by_address[f"{n.dial_host}:{n.tcp_port}"] = sim
    share_templates(cluster)
    client = cluster.setup_client()
    bootstrap(plan, master, client=client)
    replicate_registry(cluster)
    publish_templates(cluster)
    for n in plan.by_role("recursive"):
        tops = sorted(plan.by_role("top"), key=lambda t: (
            t.spec.disaster_recovery, latency.base_one_way_ms(n.spec.location, t.spec.location), t.index))
        resolver = RecursiveResolver([t.upstream() for t in tops], cache_entries=settings.cache_entries,
                                     ttl_cap_s=settings.ttl_cap_s, negative_ttl_s=settings.negative_ttl_s,
                                     root_down_s=settings.root_down_s)
        cluster.rec[n.name] = SimRecursive(n.name, RecursiveNode(n.name, resolver), read_clock, shed_after_s=shed_s,
                                           max_queue=settings.max_queue, hop_timeout_s=settings.hop_timeout_s)
    return cluster


def sync_request(cluster: SimCluster, source: str, key: str, version: int) -> Request:
    """The REGISTRY_SYNC a top-level node sends for ``key`` (as ``net.replicator.Replicator`` builds it)."""
    record = cluster.auth[source].node.store.get(key)
    auth = cluster.auth_of(cluster.topology.country_prefix)
    if record is None:
        return Request(0, OpCode.REGISTRY_SYNC, key, FLAG_SYNC_DELETE, auth=auth, version=version)
    return Request(0, OpCode.REGISTRY_SYNC, record.handle, values=record.values, auth=auth, version=version)


def replicate_registry(cluster: SimCluster) -> int:
    """Offer every registry record of the primary top-level node to the others (anti-entropy at start)."""
    primary = cluster.plan.primary_top()
    source = cluster.auth[primary.name].node
    own = fold(prefix_handle(cluster.topology.country_prefix))
    client = cluster.setup_client()
    pushed = 0
    for peer in cluster.plan.by_role("top"):
        if peer.name == primary.name:
            continue
        with client(peer.dial_host, peer.tcp_port) as c:
            for handle in source.store.list_handles(PREFIX_RECORDS_KEY):
                key = fold(handle)
                record = source.store.get(key)
                if key == own or record is None:
                    continue
                resp = c.call(sync_request(cluster, primary.name, key, record_version(record)))
                if resp.code != ResponseCode.SUCCESS:
                    raise RuntimeError(f"registry sync of {handle} to {peer.name} failed: {resp.code} {resp.message}")
                pushed += 1
    return pushed


def publish_templates(cluster: SimCluster) -> None:
    """Each secondary publishes the templates its identifiers name, as its own admin, through its API."""
    client = cluster.setup_client()
    for secondary, items in template_records(cluster.space).items():
        holder = cluster.plan.holder_of(secondary)
        with client(holder.dial_host, holder.tcp_port, auth=cluster.auth_of(secondary)) as c:
            for handle, template in items:
                resp = c.create(handle, (version_value(template),), overwrite=True)
                if resp.code != ResponseCode.SUCCESS:
                    raise RuntimeError(f"publishing {handle} failed: {resp.code} {resp.message}")


def share_templates(cluster: SimCluster) -> None:
    """Every authoritative node knows, from the start, each template the cluster publishes (the topology's
    and those the identifier space names), as if it had fetched it once: the nodes check every write
    against its template as the real ones do, but the fetches themselves (one per template and node per
    TTL, through the hierarchy) are not simulated. The publishers learn theirs when they store them."""
    topo = cluster.topology
    shipped = load_templates(topo)
    items = [(template_handle(sec.prefix, name), shipped[name]) for sec in topo.nodes_by_role("secondary")
             if sec.prefix is not None for name in sec.templates if name in shipped]
    items += [item for group in template_records(cluster.space).values() for item in group]
    for handle, template in items:
        ref = TemplateRef(handle, template.version)
        # Parsed once, as a node would parse the stored value (the checks of a fetched definition), then the
        # same object for every node: parsing it once per node cost seconds at start on a big topology.
        template = template_from_values((version_value(template),), ref.version, handle=handle)
        holder = cluster.plan.holder_of(handle.split("/", 1)[0]).name
        for name, sim in cluster.auth.items():
            if name != holder:
                sim.node.templates.hold(ref, template)
