"""``idresolve up | status | seed``: run a cluster of a topology, inspect it, fill it with identifiers."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..client.rest import ClientError, RestClient
from ..cluster.plan import DEFAULT_BASE_PORT, make_plan
from ..cluster.supervisor import (
    ClusterError,
    Supervisor,
    UpOptions,
    check_ports_free,
    load_cluster,
    prepare,
    run_bootstrap,
)
from ..core.topology import TopologyError, load_topology
from ..net.blocking import ProtocolClientError
from . import fault_cmd
from .common import EXIT_HANDLE_ERROR, EXIT_OK, CliError

PACKAGE_CONFIG = Path(__file__).resolve().parents[3] / "config"


def default_config() -> Path:
    for candidate in (Path("config/shandong.toml"), PACKAGE_CONFIG / "shandong.toml"):
        if candidate.exists():
            return candidate
    raise CliError("no topology given and config/shandong.toml not found: pass --config FILE")


def data_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("IDRESOLVE_DATA_DIR") or "data")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="run a whole cluster (default: the Shandong topology) on loopback",
                       description="Start every node of a topology on loopback, many nodes per process, with the "
                       "durable store under --data-dir; allocate prefixes through the nodes' APIs; print where "
                       "things are. Ctrl-C stops it; starting again keeps every record.")
    p.add_argument("--config", type=Path, help="topology TOML (default config/shandong.toml)")
    p.add_argument("--data-dir", help="where stores, credentials and cluster.json live (env IDRESOLVE_DATA_DIR; "
                   "default ./data)")
    p.add_argument("--latency", choices=["on", "off"], default="on", help="apply the latency model (default on)")
    p.add_argument("--scenario", help="latency scenario from the topology (e.g. before-interconnect)")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                   help=f"first port; node i of N listens on base+2i (msgpack tcp/udp), base+2i+1 (http) and "
                   f"base+2N+i (native Handle protocol, tcp/udp) (default {DEFAULT_BASE_PORT})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per core)")
    p.add_argument("--own-process", action="append", default=[], metavar="NODE",
                   help="run this node in a process of its own (so it can be killed alone); repeat")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--hop-timeout", type=float, help="recursive nodes: seconds to wait for each hop (default 2)")
    p.add_argument("--cache-entries", type=int, help="recursive nodes: answers cached at most (default 100000)")
    p.add_argument("--negative-ttl", type=float, help="recursive nodes: cache 'not found' answers this many seconds "
                   "(default 0: not cached)")
    p.add_argument("--shed-lag-ms", type=float, help="answer code 3 to a share of requests when a worker's event "
                   "loop lags this many ms for 100 ms while requests queue (default 50, env IDRESOLVE_SHED_LAG_MS; "
                   "0: never)")
    p.add_argument("--client-rate", type=float, help="recursive nodes: requests/s accepted per client address, "
                   "beyond which they answer code 3 (default 100000; 0 for no limit)")
    p.add_argument("--dashboard", default=None, metavar="HOST:PORT",
                   help="serve the live dashboard there (default 127.0.0.1 and the base port - 1; 'off': none); "
                   "beyond loopback its controls need the registry admin's credentials")
    p.set_defaults(func=up)

    p = sub.add_parser("status", help="list every node of the running cluster: role, place, addresses, up/down",
                       description="Ask every node of the cluster in --data-dir for its health.")
    p.add_argument("--data-dir", help="the cluster's data directory (default ./data)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=status)

    p = sub.add_parser("seed", help="register N identifiers spread over the enterprises (batch API)",
                       description="Register N identifiers spread over every enterprise of the running cluster, "
                       "through the batch API of the node that holds each prefix, with a progress bar.")
    p.add_argument("--identifiers", type=int, required=True, help="how many identifiers to register")
    p.add_argument("--batch-size", type=int, default=2000, help="identifiers per batch call (1-2000; default 2000)")
    p.add_argument("--in-flight", type=int, default=4, metavar="N",
                   help="batches sent at once, each on its own connection (1-64; default 4)")
    p.add_argument("--data-dir", help="the cluster's data directory (default ./data)")
    p.add_argument("--prefix-suffix", default="SEED", help="suffixes are <this><number> (default SEED)")
    p.add_argument("--plain", action="store_true",
                   help="give every identifier only a URL and a product name, also under a secondary that "
                   "publishes a metadata template (by default those fill it: about 15 values each); "
                   "the fastest way to fill a large cluster for resolution load")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout (the progress bar still shows when stderr is a terminal)")
    p.set_defaults(func=seed)


def up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    config = args.config or default_config()
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    try:
        topology = load_topology(config)
        if args.scenario:
            topology.latency(args.scenario)
        plan = make_plan(topology, base_port=args.base_port, workers=args.workers)
    except (TopologyError, ValueError) as exc:
        raise CliError(str(exc)) from None
    flags: list[str] = []
    for name, flag, low in (("hop_timeout", "--hop-timeout", 0.001), ("cache_entries", "--cache-entries", 1),
                            ("negative_ttl", "--negative-ttl", 0), ("client_rate", "--client-rate", 0),
                            ("shed_lag_ms", "--shed-lag-ms", 0)):
        value = getattr(args, name)
        if value is not None:
            if value < low:
                raise CliError(f"{flag} must be at least {low}")
            flags += [flag, str(value)]
    dashboard = args.dashboard or f"127.0.0.1:{args.base_port - 1}"
    opts = UpOptions(config, data_dir_of(args), args.base_port, args.workers, args.latency, args.scenario,
                     tuple(args.own_process), args.log_level, tuple(flags),
                     dashboard=None if dashboard == "off" else dashboard)
    try:
        check_ports_free(plan)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    master, creds_path = prepare(topology, plan, opts)
    sup = Supervisor(plan, opts)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    print(f"idresolve: starting {len(plan.nodes)} nodes of {topology.name!r} in {len(sup._groups())} processes "
          f"(latency {args.latency})", flush=True)
    try:
        sup.start(progress)
        report = run_bootstrap(plan, master, progress)
    except (ClusterError, OSError, RuntimeError) as exc:
        sup.stop()
        raise CliError(f"the cluster did not start: {exc}", EXIT_HANDLE_ERROR) from None
    took = time.monotonic() - t0
    recs = plan.by_role("recursive")
    print(f"ready in {took:.1f} s: {len(plan.by_role('top'))} top-level, {len(plan.by_role('secondary'))} secondary, "
          f"{len(plan.by_role('enterprise'))} enterprise, {len(recs)} recursive nodes"
          + (f", {len(plan.by_role('mirror'))} mirrors" if plan.by_role("mirror") else ""), flush=True)
    for r in recs:
        print(f"  recursive {r.name} ({r.spec.location.name}): REST {r.http_url}  binary tcp/udp "
              f"{r.dial_host}:{r.tcp_port}  Handle protocol tcp/udp {r.handle_address}", flush=True)
    if report.demo:
        print(f"  demo identifier: {report.demo}", flush=True)
        print(f"    try: idresolve resolve {report.demo} --trace --data-dir {opts.data_dir}", flush=True)
        if recs:
            print(f"    or:  curl {recs[0].http_url}/api/handles/{report.demo}", flush=True)
    if opts.dashboard is not None:
        try:
            print(f"  dashboard: {sup.start_dashboard()}", flush=True)
        except ClusterError as exc:
            print(f"warning: {exc}; the cluster runs without it (`idresolve dashboard --listen HOST:PORT` "
                  "serves one)", file=sys.stderr, flush=True)
    print(f"  admin credentials: {creds_path} (mode 0600)", flush=True)
    print(f"  data: {opts.data_dir}/ ; `idresolve status --data-dir {opts.data_dir}` lists the nodes; Ctrl-C stops",
          flush=True)
    warned: set[int] = set()
    while not stop.wait(1.0):
        for i in sup.dead_workers():
            if i not in warned:
                warned.add(i)
                print(f"warning: worker process {i} exited (code {sup.procs[i].returncode}); its nodes are down",
                      file=sys.stderr, flush=True)
    print("stopping...", flush=True)
    sup.stop()
    print("stopped", flush=True)
    return EXIT_OK


def _probe(node: dict[str, Any]) -> dict[str, Any]:
    out = dict(node)
    try:
        with RestClient(str(node["http"]), timeout_s=2.0) as c:
            health = c.health().body
        out["up"] = True
        out["records"] = health.get("records")
        if node["role"] != "recursive":
            out["prefixes"] = health.get("prefixes")
        else:
            out["cacheEntries"] = health.get("cacheEntries")
    except ClientError:
        out["up"] = False
    return out


def status(args: argparse.Namespace) -> int:
    try:
        cluster = load_cluster(data_dir_of(args))
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    nodes = list(cluster["nodes"])  # type: ignore[call-overload]
    with ThreadPoolExecutor(max_workers=16) as pool:
        probed = list(pool.map(_probe, nodes))
    up_count = sum(1 for n in probed if n["up"])
    fault_lines, faults = fault_cmd.status_lines(data_dir_of(args))
    if args.json:
        print(json.dumps({"topology": cluster["topology"], "up": up_count, "total": len(probed), "nodes": probed,
                          "faults": faults}, indent=2, ensure_ascii=False))
        return EXIT_OK if up_count == len(probed) else EXIT_HANDLE_ERROR
    rows = [("node", "role", "location", "state", "records", "prefixes", "http", "tcp/udp", "handle")]
    for n in probed:
        prefixes = n.get("prefixes") or ([n["prefix"]] if n.get("prefix") else [])
        extra = "" if n["role"] != "secondary" else ("" if n.get("connected") else " (not connected)")
        rows.append((n["name"], n["role"] + extra, n["location"], "up" if n["up"] else "DOWN",
                     "" if n.get("records") is None else str(n["records"]), ",".join(prefixes[:4]) +
                     (f" +{len(prefixes) - 4}" if len(prefixes) > 4 else ""), n["http"], n["tcp"],
                     n.get("handle") or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{up_count}/{len(probed)} nodes up ({cluster['topology']}, latency {cluster['latency']})")
    for line in fault_lines:
        print(line)
    return EXIT_OK if up_count == len(probed) else EXIT_HANDLE_ERROR


def seed(args: argparse.Namespace) -> int:
    from ..cluster.seeding import seed_cluster

    if args.identifiers <= 0:
        raise CliError("--identifiers must be positive")
    if not 1 <= args.batch_size <= 2000:
        raise CliError("--batch-size must be between 1 and 2000 (the batch API's limit)")
    if not 1 <= args.in_flight <= 64:
        raise CliError("--in-flight must be between 1 and 64")
    data_dir = data_dir_of(args)
    try:
        cluster = load_cluster(data_dir)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    try:
        result = seed_cluster(cluster, data_dir, args.identifiers, batch_size=args.batch_size, tag=args.prefix_suffix,
                              show_progress=not args.json or sys.stderr.isatty(), in_flight=args.in_flight,
                              plain=args.plain)
    except ProtocolClientError as exc:
        raise CliError(f"seeding stopped: {exc}; what was registered stays, and running the same command "
                       "again skips it") from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"registered {result['registered']} identifiers over {result['enterprises']} enterprises in "
              f"{result['seconds']:.1f} s ({result['perSecond']:.0f}/s); e.g. {result['example']}")
    return EXIT_OK if result["failed"] == 0 else EXIT_HANDLE_ERROR
