"""The cluster plan: a pure function of the topology, the base port, the host and the worker count.

Every running node gets a fixed index in topology order (top, secondary, enterprise, recursive), and
from it fixed ports: binary TCP and UDP on ``base_port + 2*i``, HTTP on ``base_port + 2*i + 1``. Fixed
ports keep the HS_SITE records written at allocation valid across restarts. Nodes are spread over
workers round-robin so each process holds a mix of roles. A secondary's mirrors come after every other
node (``Topology.running_nodes``); their HS_SITE says they are not the primary site.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.handles import prefix_handle
from ..core.site import Interface, Server, SiteInfo
from ..core.topology import NodeSpec, Topology
from ..nodes.recursive import Upstream

DEFAULT_BASE_PORT = 26400


@dataclass(frozen=True, slots=True)
class NodePlan:
    spec: NodeSpec
    index: int
    worker: int
    host: str
    tcp_port: int
    http_port: int
    dial_host: str  # the address other nodes use to reach this one (a container name under compose)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def udp_port(self) -> int:
        return self.tcp_port

    @property
    def http_url(self) -> str:
        return f"http://{self.dial_host}:{self.http_port}"

    @property
    def prefixes(self) -> tuple[str, ...]:
        return (self.spec.prefix,) if self.spec.prefix else ()

    def upstream(self) -> Upstream:
        """How other nodes ask this one (its binary TCP endpoint, name and location)."""
        return Upstream(self.name, self.dial_host, self.tcp_port, self.spec.location.name)

    def site(self, address: str = "127.0.0.1") -> SiteInfo:
        """The HS_SITE naming this node: address, interfaces, and its name and location as attributes (a
        mirror's site is not primary: it answers queries, and the primary takes the writes)."""
        host = None if self.dial_host == address else self.dial_host
        server = Server(1, address, (Interface("TCP", self.tcp_port), Interface("UDP", self.udp_port),
                                     Interface("HTTP", self.http_port)), host=host)
        return SiteInfo((server,), primary=self.role != "mirror",
                        attributes=(("name", self.name), ("location", self.spec.location.name)))


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    topology: Topology
    nodes: tuple[NodePlan, ...]
    workers: int
    base_port: int

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in this cluster")

    def by_role(self, role: str) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.role == role)

    def mirrors_of(self, name: str) -> tuple[NodePlan, ...]:
        """The mirrors of the secondary node ``name``."""
        return tuple(n for n in self.nodes if n.spec.mirror_of == name)

    def for_worker(self, worker: int) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.worker == worker)

    def primary_top(self) -> NodePlan:
        tops = self.by_role("top")
        primaries = [t for t in tops if not t.spec.disaster_recovery]
        return (primaries or list(tops))[0]

    def holder_of(self, prefix: str) -> NodePlan:
        """The running node whose store holds identifiers under ``prefix``."""
        return self.node(self.topology.server_for_prefix(prefix).name)

    def enterprises(self) -> tuple[NodeSpec, ...]:
        return self.topology.nodes_by_role("enterprise")


def make_plan(topology: Topology, *, base_port: int = DEFAULT_BASE_PORT, workers: int = 2,
              host: str = "127.0.0.1", dial_hosts: dict[str, str] | None = None) -> ClusterPlan:
    if workers < 1:
        raise ValueError("workers must be at least 1")
    running = topology.running_nodes()
    if base_port < 1024 or base_port + 2 * len(running) > 65535:
        raise ValueError(f"base port {base_port} leaves no room for {len(running)} nodes (2 ports each)")
    nodes = []
    for i, spec in enumerate(running):
        dial = (dial_hosts or {}).get(spec.name, host)
        nodes.append(NodePlan(spec, i, i % workers, host, base_port + 2 * i, base_port + 2 * i + 1, dial))
    return ClusterPlan(topology, tuple(nodes), workers, base_port)


def identity_of(prefix: str) -> str:
    return f"300:{prefix_handle(prefix)}"
