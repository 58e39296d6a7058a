"""What a load test needs to know about a running ``idresolve up`` cluster, from its data directory.

``cluster.json`` gives every node's addresses, the recursive nodes, and each enterprise prefix with the
node that holds it; ``credentials.json`` (mode 0600) gives each prefix admin's secret, needed for writes
only. No Locust here, so tests can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idresolve.cluster.credentials import read_credentials
from idresolve.cluster.plan import identity_of
from idresolve.cluster.supervisor import ClusterError, load_cluster


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
    data_dir: Path
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


def read_cluster(data_dir: Path) -> ClusterInfo:
    """The cluster in ``data_dir``; without a readable credentials.json it has no secrets (reads only)."""
    try:
        raw: dict[str, Any] = load_cluster(data_dir)
        nodes = {n["name"]: Node(n["name"], n["role"], str(n["http"]), _endpoint(str(n["tcp"])))
                 for n in raw["nodes"]}
        connected = {n["name"]: bool(n.get("connected")) for n in raw["nodes"] if n["role"] == "secondary"}
        enterprises = tuple(Enterprise(e["prefix"], nodes[e["holder"]], connected.get(e["secondary"], False))
                            for e in raw["enterprises"] if e.get("prefix"))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ClusterInfoError(f"cannot use {data_dir}/cluster.json: {exc!r}") from None
    except ClusterError:  # no cluster.json
        raise ClusterInfoError(f"no cluster in {data_dir} (cluster.json is missing): start one with `idresolve up "
                               f"--data-dir {data_dir}`, or point --idr-data-dir at its data directory") from None
    if not enterprises:
        raise ClusterInfoError(f"the cluster in {data_dir} has no enterprise prefixes")
    try:
        secrets = read_credentials(data_dir)
    except (OSError, ValueError, KeyError):
        secrets = {}
    return ClusterInfo(data_dir, nodes, enterprises, secrets)
