"""What a load test needs to know about a running cluster: from the data directory of ``idresolve up``,
or from the topology file of a cluster that runs in containers.

``cluster.json`` gives every node's addresses, the recursive nodes, and each enterprise prefix with the
node that holds it; ``credentials.json`` (mode 0600) gives each prefix admin's secret, needed for writes
only. A cluster in containers (``idresolve compose``, ``idresolve k8s``) has neither file where Locust
runs, but its addresses follow from the topology: the plan's ports, each node at its name. The same
description is built from it, by the code ``idresolve up`` writes cluster.json with; it has no secrets.
No Locust here, so tests can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idresolve.cluster.credentials import read_credentials
from idresolve.cluster.plan import identity_of, make_plan
from idresolve.cluster.supervisor import ClusterError, UpOptions, cluster_description, load_cluster
from idresolve.core.topology import TopologyError, load_topology


class ClusterInfoError(RuntimeError):
    """The data directory does not describe a usable cluster."""


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    role: str
    http: str  # http://host:port
    tcp: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Enterprise:
    prefix: str
    holder: Node  # the node that holds the prefix's records (its own node, or its secondary when hosted)
    reachable: bool  # resolvable through a recursive node (its secondary is registered at the top level)


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    source: str  # where the description came from, for messages
    seed_hint: str  # how to seed more identifiers ({n}: how many), for messages
    secrets_hint: str  # why there may be no admin secrets, for messages
    nodes: dict[str, Node]
    enterprises: tuple[Enterprise, ...]  # in cluster.json order: the order ``idresolve seed`` fills them
    secrets: dict[str, str]  # admin identity -> secret; empty when credentials.json is unreadable

    @property
    def recursive(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == "recursive"]

    def recursive_named(self, name: str | None) -> list[Node]:
        """The recursive nodes to spread users over: all of them, or the one named."""
        nodes = self.recursive
        if name:
            nodes = [n for n in nodes if n.name == name]
            if not nodes:
                known = ", ".join(n.name for n in self.recursive) or "none"
                raise ClusterInfoError(f"no recursive node named {name!r} (the cluster has: {known})")
        if not nodes:
            raise ClusterInfoError("the cluster has no recursive node")
        return nodes

    def admin_of(self, prefix: str) -> tuple[str, str] | None:
        """(identity, secret) of the prefix's admin, e.g. ('300:0.NA/88.118.8', '...'); None if unknown."""
        identity = identity_of(prefix)
        secret = self.secrets.get(identity)
        return None if secret is None else (identity, secret)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _parse(raw: dict[str, Any], source: str) -> tuple[dict[str, Node], tuple[Enterprise, ...]]:
    try:
        nodes = {n["name"]: Node(n["name"], n["role"], str(n["http"]), _endpoint(str(n["tcp"])))
                 for n in raw["nodes"]}
        connected = {n["name"]: bool(n.get("connected")) for n in raw["nodes"] if n["role"] == "secondary"}
        enterprises = tuple(Enterprise(e["prefix"], nodes[e["holder"]], connected.get(e["secondary"], False))
                            for e in raw["enterprises"] if e.get("prefix"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ClusterInfoError(f"cannot use {source}: {exc!r}") from None
    if not enterprises:
        raise ClusterInfoError(f"the cluster of {source} has no enterprise prefixes")
    return nodes, enterprises


def read_cluster(data_dir: Path) -> ClusterInfo:
    """The cluster in ``data_dir``; without a readable credentials.json it has no secrets (reads only)."""
    source = f"{data_dir}/cluster.json"
    try:
        raw: dict[str, Any] = load_cluster(data_dir)
    except (OSError, ValueError) as exc:
        raise ClusterInfoError(f"cannot use {source}: {exc!r}") from None
    except ClusterError:  # no cluster.json
        raise ClusterInfoError(f"no cluster in {data_dir} (cluster.json is missing): start one with `idresolve up "
                               f"--data-dir {data_dir}`, or point --idr-data-dir at its data directory") from None
    nodes, enterprises = _parse(raw, source)
    try:
        secrets = read_credentials(data_dir)
    except (OSError, ValueError, KeyError):
        secrets = {}
    return ClusterInfo(source, f"`idresolve seed --identifiers {{n}} --data-dir {data_dir}`",
                       f"{data_dir}/credentials.json is missing or unreadable", nodes, enterprises, secrets)


def cluster_from_topology(path: Path, base_port: int, dial_hosts: str) -> ClusterInfo:
    """The cluster of the topology at ``path`` as containers run it: each node at its name (``dial_hosts``
    'names') or all at 127.0.0.1 ('same'), at the ports of ``base_port``. No secrets: reads only."""
    source = f"the topology {path}"
    try:
        topology = load_topology(path)
        names = {n.name: n.name for n in topology.running_nodes()} if dial_hosts == "names" else None
        plan = make_plan(topology, base_port=base_port, workers=1, dial_hosts=names)
    except OSError as exc:
        raise ClusterInfoError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (TopologyError, ValueError) as exc:
        raise ClusterInfoError(f"cannot use {source}: {exc}") from None
    # The description `idresolve up` writes to cluster.json, made the same way (only its nodes and
    # enterprises are read; the options fill fields of it that are not).
    raw = cluster_description(plan, UpOptions(path, Path("."), base_port, 1, "off", None))
    nodes, enterprises = _parse(raw, source)
    return ClusterInfo(source, "`idresolve bootstrap --seed {n}`, the bootstrap container's step",
                       "a cluster found from its topology comes without them (use --idr-data-dir)", nodes,
                       enterprises, {})
