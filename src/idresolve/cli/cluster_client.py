"""Finding the right node of a running cluster for a command given only an identifier.

Without ``--server``, commands look for ``<data_dir>/cluster.json`` (``--data-dir``, ``IDRESOLVE_DATA_DIR``
or ``./data``): reads go to a recursive node, which walks the hierarchy; writes go to the node that
holds the identifier's prefix, with that prefix admin's credentials from ``credentials.json`` unless
others are given. ``resolve --trace`` asks the recursive node over the binary protocol for each hop.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..cluster.credentials import read_credentials
from ..cluster.plan import identity_of
from ..cluster.supervisor import CLUSTER_FILE, ClusterError, load_cluster
from ..core.codes import ResponseCode
from ..net.blocking import BlockingClient, ProtocolClientError
from ..nodes.recursive import TIMEOUT_CODE
from .common import EXIT_HANDLE_ERROR, EXIT_OK, EXIT_UNREACHABLE, CliError, values_table

CODE_WORDS = {1: "success", 100: "not found", 200: "no values", 301: "not here", 303: "referral", 2: "error",
              3: "busy", TIMEOUT_CODE: "timeout"}


def data_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data_dir", None) or os.environ.get("IDRESOLVE_DATA_DIR") or "data")


def cluster_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running cluster's description when no server was named and one is there."""
    if getattr(args, "server", None) or os.environ.get("IDRESOLVE_SERVER"):
        return None
    d = data_dir(args)
    if not (d / CLUSTER_FILE).exists():
        return None
    return load_cluster(d)


def recursive_of(cluster: dict[str, Any]) -> dict[str, Any]:
    recs = [n for n in cluster["nodes"] if n["role"] == "recursive"]
    if not recs:
        raise CliError("the cluster has no recursive node")
    return recs[0]


def holder_of(cluster: dict[str, Any], prefix: str) -> dict[str, Any]:
    nodes = {n["name"]: n for n in cluster["nodes"]}
    p = prefix.lower()
    for e in cluster["enterprises"]:
        if (e.get("prefix") or "").lower() == p:
            return nodes[e["holder"]]
    for n in cluster["nodes"]:
        if (n.get("prefix") or "").lower() == p and n["role"] in ("secondary", "enterprise"):
            return n
    raise CliError(f"no node of the cluster holds prefix {prefix} (see `idresolve status`)")


def apply_cluster_defaults(args: argparse.Namespace, prefix: str | None, *, write: bool) -> None:
    """Fill in ``args.server`` (and credentials for writes) from the running cluster, if any."""
    try:
        cluster = cluster_of(args)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    if cluster is None:
        return
    if not write or prefix is None:
        args.server = recursive_of(cluster)["http"]
        return
    args.server = holder_of(cluster, prefix)["http"]
    if not (args.secret or args.secret_file or os.environ.get("IDRESOLVE_SECRET") or os.environ.get("IDRESOLVE_SECRET_FILE")):
        creds = read_credentials(data_dir(args))
        identity = args.identity or identity_of(prefix)
        if identity in creds:
            args.identity, args.secret = identity, creds[identity]


def resolve_with_trace(args: argparse.Namespace) -> int:
    try:
        cluster = cluster_of(args)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    if cluster is None:
        raise CliError(f"--trace needs a running cluster (no {CLUSTER_FILE} in {data_dir(args)}; pass --data-dir)")
    rec = recursive_of(cluster)
    host, _, port = str(rec["tcp"]).rpartition(":")
    t0 = time.perf_counter()
    try:
        with BlockingClient(host, int(port), timeout_s=30.0) as c:
            resp = c.resolve(args.handle, trace=True, authoritative=bool(getattr(args, "no_cache", False)))
    except ProtocolClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    total_ms = (time.perf_counter() - t0) * 1000
    if args.json:
        import json

        print(json.dumps({"responseCode": resp.code, "handle": resp.handle, "via": rec["name"],
                          "trace": [{"node": h.node, "address": h.address, "responseCode": h.code,
                                     "ms": h.elapsed_us / 1000, "cached": h.cached} for h in resp.trace],
                          "values": [v.to_json() for v in resp.values], "totalMs": total_ms}, indent=2))
        return EXIT_OK if resp.code == ResponseCode.SUCCESS else EXIT_HANDLE_ERROR
    print(f";; {args.handle} via {rec['name']} ({rec['tcp']}), latency model {cluster.get('latency')}")
    rows = [(str(i), h.node, h.address or "-", f"{h.code} {CODE_WORDS.get(h.code, '')}".strip(),
             "cached" if h.cached else f"{h.elapsed_us / 1000:.1f} ms") for i, h in enumerate(resp.trace, 1)]
    header = ("hop", "node", "address", "answer", "time")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print(";; " + "  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip())
    for r in rows:
        print("   " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    hop_ms = sum(h.elapsed_us for h in resp.trace) / 1000
    print(f";; {len(resp.trace)} hop(s), {hop_ms:.1f} ms in the hierarchy, {total_ms:.1f} ms end to end")
    if resp.code == ResponseCode.SUCCESS:
        print(resp.handle)
        print(values_table([v.to_json() for v in resp.values]))
        return EXIT_OK
    print(f"error: response code {resp.code} {CODE_WORDS.get(resp.code, '')} {resp.message}".rstrip(), file=sys.stderr)
    return EXIT_HANDLE_ERROR
