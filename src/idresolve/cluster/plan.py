"""The cluster plan: a pure function of the topology, the base port, the host and the worker count.

Every running node gets a fixed index in topology order (top, secondary, enterprise, recursive), and
from it fixed ports: msgpack binary TCP and UDP on ``base_port + 2*i``, HTTP on ``base_port + 2*i + 1``,
and the native Handle protocol (TCP and UDP) on ``base_port + 2*N + i`` for a cluster of N running nodes:
all of a cluster's ports lie in ``base_port .. base_port + 3*N - 1``. Fixed ports keep the HS_SITE
records written at allocation valid across restarts. Nodes are spread over workers round-robin so each
process holds a mix of roles.

A node's HS_SITE names its native interface as TCP and UDP (what a Handle client reads), HTTP, and the
msgpack port in the site attribute ``idr-msgpack.<serverId>`` that idresolve's own recursive nodes read
(``nodes.recursive.upstreams_from_site``; docs/native-protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.handles import prefix_handle
from ..core.site import Interface, Server, SiteInfo
from ..core.topology import NodeSpec, Topology
from ..nodes.recursive import Upstream

DEFAULT_BASE_PORT = 26400
PORTS_PER_NODE = 3  # msgpack tcp/udp, http, native tcp/udp
MSGPACK_ATTRIBUTE = "idr-msgpack"  # site attribute "idr-msgpack.<serverId>": that server's msgpack port


@dataclass(frozen=True, slots=True)
class NodePlan:
    spec: NodeSpec
    index: int
    worker: int
    host: str
    tcp_port: int
    http_port: int
    dial_host: str  # the address other nodes use to reach this one (a container name under compose)
    handle_port: int = 0  # the native Handle protocol, TCP and UDP

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

    @property
    def handle_address(self) -> str:
        return f"{self.dial_host}:{self.handle_port}"

    @property
    def site_address(self) -> str:
        """The IP address its HS_SITE names: the dial host when it is one, else loopback (with the dial
        host as the server's host name)."""
        return self.dial_host if self.dial_host.replace(".", "").isdigit() else "127.0.0.1"

    def site(self, address: str = "127.0.0.1", public_key: bytes = b"") -> SiteInfo:
        """The HS_SITE naming this node: address, native TCP/UDP and HTTP interfaces, its key, and its name,
        location and msgpack port as attributes."""
        host = None if self.dial_host == address else self.dial_host
        server = Server(1, address, (Interface("TCP", self.handle_port), Interface("UDP", self.handle_port),
                                     Interface("HTTP", self.http_port)), host=host, public_key=public_key)
        return SiteInfo((server,), attributes=(("name", self.name), ("location", self.spec.location.name),
                                               (f"{MSGPACK_ATTRIBUTE}.{server.server_id}", str(self.tcp_port))))


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
    count = len(running)
    if base_port < 1024 or base_port + PORTS_PER_NODE * count > 65536:
        raise ValueError(f"base port {base_port} leaves no room for {count} nodes (3 ports each)")
    nodes = []
    for i, spec in enumerate(running):
        dial = (dial_hosts or {}).get(spec.name, host)
        nodes.append(NodePlan(spec, i, i % workers, host, base_port + 2 * i, base_port + 2 * i + 1, dial,
                              base_port + 2 * count + i))
    return ClusterPlan(topology, tuple(nodes), workers, base_port)


def identity_of(prefix: str) -> str:
    return f"300:{prefix_handle(prefix)}"
