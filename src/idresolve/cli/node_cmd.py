"""``idresolve node``: run one authoritative node serving the given prefixes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime.config import ConfigError, NodeConfig, load_node_config

if TYPE_CHECKING:  # the server stack is imported when a node starts, not for every CLI command
    from ..runtime.serve import RunningNode


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("node", help="run one authoritative node (REST API) for some prefixes",
                       description="Run one authoritative node serving the given prefixes over the Handle "
                       "REST API. Settings come from defaults, then --config TOML, then IDRESOLVE_* "
                       "environment variables, then these flags.")
    p.add_argument("--config", type=Path, help="TOML file with a [node] table (see config/node.toml)")
    p.add_argument("--name", help="node name (default: node)")
    p.add_argument("--prefix", dest="prefixes", action="append", help="a prefix to serve, e.g. 88.100 (repeat)")
    p.add_argument("--http", help="HTTP listen address host:port (default 127.0.0.1:8000; port 0 picks one)")
    p.add_argument("--tcp", help="binary protocol TCP listen address host:port (off unless given; 2641 is usual)")
    p.add_argument("--udp", help="binary protocol UDP listen address host:port (off unless given)")
    p.add_argument("--handle", help="native Handle protocol (RFC 3652) TCP and UDP listen address host:port, what "
                   "Handle.Net's tools speak (off unless given; 2641 is usual; the node's key is generated into "
                   "DATA_DIR/server-key.pem)")
    p.add_argument("--data-dir", type=Path, help="where the store and generated secret live (default ./data)")
    p.add_argument("--store", choices=["sqlite", "memory"], help="record store (default sqlite, durable)")
    p.add_argument("--fsync", action="store_true", default=None, help="fsync every commit (survives power loss)")
    p.add_argument("--admin-secret", help="secret of the admin identities 300:0.NA/<prefix> "
                   "(env IDRESOLVE_ADMIN_SECRET; default: generated into DATA_DIR/admin-secret)")
    p.add_argument("--plain-writes", dest="plain_http_writes", action="store_true", default=None,
                   help="accept credentials and writes over plain HTTP and the binary protocol even on addresses "
                   "beyond loopback (only on a private network you trust)")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM) for HTTPS")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--access-log", action="store_true", default=None, help="log every request (slow)")
    p.add_argument("--shed-lag-ms", help="answer code 3 to a share of requests when the event loop lags this "
                   "many ms for 100 ms (default 50; 0 turns load shedding off)")
    p.add_argument("--http-idle-timeout", dest="http_idle_timeout_s", type=float, metavar="S",
                   help="close HTTP connections idle this long, and requests whose body has not arrived by then "
                   "(default 30)")
    p.add_argument("--template-resolver", dest="template_resolvers", action="append", metavar="HOST:PORT",
                   help="where to fetch metadata templates this node does not hold, over the binary protocol: a "
                   "top-level node, a recursive node or the template's holder (repeat; env "
                   "IDRESOLVE_TEMPLATE_RESOLVERS=a,b). Without it, writes naming such a template are refused")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes sharing the ports (SO_REUSEPORT) and the store (default: one per core "
                   "with the sqlite store, 1 with the memory store; env IDRESOLVE_WORKERS)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime.serve import run_until_signal, serve_node

    flags = {k: getattr(args, k) for k in ("name", "http", "tcp", "udp", "handle", "data_dir", "store", "fsync", "admin_secret",
                                           "tls_cert", "tls_key", "log_level", "access_log", "shed_lag_ms",
                                           "plain_http_writes", "http_idle_timeout_s", "workers")}
    flags["prefixes"] = tuple(args.prefixes) if args.prefixes else None
    flags["template_resolvers"] = tuple(args.template_resolvers) if args.template_resolvers else None
    try:
        cfg = load_node_config(toml_path=args.config, flags=flags)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(r: RunningNode) -> None:
        print(f"idresolve node {cfg.name!r} serving {', '.join(cfg.prefixes)} at {r.http_url}", flush=True)
        a = r.addresses
        if a is not None and a.tcp is not None:
            print(f"  binary protocol: tcp {a.tcp[0]}:{a.tcp[1]}" + (f", udp {a.udp[0]}:{a.udp[1]}" if a.udp else ""),
                  flush=True)
        if a is not None and a.handle is not None:
            print(f"  Handle protocol: tcp/udp {a.handle[0]}:{a.handle[1]}", flush=True)
        print(f"  admin identities: {', '.join(r.admin_identities)}", flush=True)
        if r.secret_generated:
            print(f"  generated admin secret (shown once): {_secret_once(r)}", flush=True)
        if r.secret_file is not None:
            print(f"  admin secret file: {r.secret_file}", flush=True)
        print(f"  data: {cfg.data_dir} ({cfg.store}); Ctrl-C stops", flush=True)

    from ..runtime.workers import default_workers

    count = cfg.worker_count(default_workers())
    if count > 1:
        return _run_workers(cfg, count, ready)

    async def main(stop: asyncio.Event) -> None:
        await serve_node(cfg, shutdown_trigger=stop.wait(), on_ready=ready)

    try:
        run_until_signal(main)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("stopped", flush=True)
    return 0


def _run_workers(cfg: NodeConfig, count: int, banner: Callable[[RunningNode], None]) -> int:
    import shutil

    from ..runtime.serve import run_until_signal, serve_node
    from ..runtime.workers import SharedGenerations, Supervisor, WorkerRole, fix_ports, private_sockets_dir

    try:
        cfg, held = fix_ports(cfg)
    except OSError as exc:
        print(f"error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 2
    cfg = replace(cfg, workers=count)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    generations = cfg.data_dir / f"{cfg.name}.generations"
    sockets = private_sockets_dir(WORKER_SOCKETS_PREFIX)

    def serve(wcfg: NodeConfig, index: int, listening: Callable[[], None]) -> int:
        role = WorkerRole(index, count, SharedGenerations(generations), sockets)

        def ready(r: RunningNode) -> None:
            if index == 0 and not supervisor.deaths:  # a restarted worker 0 stays quiet
                banner(r)
            listening()

        async def main(stop: asyncio.Event) -> None:
            await serve_node(wcfg, shutdown_trigger=stop.wait(), on_ready=ready, worker=role)

        try:
            run_until_signal(main)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    supervisor = Supervisor(cfg, count, serve)
    try:
        if not supervisor.start():
            return 2
        print(f"  workers: {count} (pids {', '.join(str(p) for p in supervisor.workers)})", flush=True)
        status = supervisor.watch()
    finally:
        for s in held:
            s.close()
        shutil.rmtree(sockets, ignore_errors=True)
    print("stopped", flush=True)
    return status


#: ``<tmp>/idresolve-workers-<supervisor pid>-<random>`` (``runtime.workers.private_sockets_dir``).
WORKER_SOCKETS_PREFIX = "idresolve-workers-"


def _secret_once(r: RunningNode) -> str:
    return r.secret_file.read_text(encoding="utf-8").strip() if r.secret_file is not None else ""
