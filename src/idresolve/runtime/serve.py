"""Serving one node in a process (``idresolve node``): store, node logic, listeners, and a clean stop.

``serve_node(cfg, shutdown_trigger=...)`` opens the store, writes the node's own prefix records, starts the
listeners (HTTP through aiohttp's AppRunner/TCPSite in this loop, never ``run_app``; binary TCP/UDP when
configured), reports readiness, waits for the trigger, then closes listeners, drains in-flight requests
(with a timeout) and closes the store.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import HandleError
from ..http.edge import WORKER
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.bootstrap import admin_identity
from ..nodes.recursive import Upstream
from ..store import open_store
from .balance import ConnectionBalancer
from .config import ConfigError, NodeConfig, is_loopback, parse_hostport
from .hosted import HostedAuthoritative, HostSettings, TemplateSources, authoritative_host
from .listeners import Addresses, NativeOptions
from .secrets import load_or_create_secret
from .serverkey import load_or_create_server_key

if TYPE_CHECKING:
    from .workers import WorkerRole

log = logging.getLogger("idresolve.serve")


@dataclass
class RunningNode:
    cfg: NodeConfig
    node: AuthoritativeNode
    http_url: str
    secret_file: Path | None
    secret_generated: bool
    admin_identities: list[str] = field(default_factory=list)
    addresses: Addresses | None = None


async def serve_node(cfg: NodeConfig, *, shutdown_trigger: Awaitable[object],
                     on_ready: Callable[[RunningNode], None] | None = None,
                     worker: WorkerRole | None = None) -> None:
    """``worker``: this process is one of the node's workers (``runtime/workers.py``): its sockets share
    their ports, its answer caches follow the writes of the others, its /metrics sums theirs."""
    trigger = asyncio.ensure_future(shutdown_trigger)  # owned here: cancelled if we fail before waiting on it
    try:
        await _serve(cfg, trigger, on_ready, worker)
    finally:
        if not trigger.done():
            trigger.cancel()


def beyond_loopback(cfg: NodeConfig) -> list[str]:
    """The listen addresses of ``cfg`` that are not loopback."""
    out = []
    for addr, default in ((cfg.http, 8000), (cfg.tcp, 2641), (cfg.udp, 2641), (cfg.handle, 2641)):
        if addr is not None and not is_loopback(parse_hostport(addr, default)[0]):
            out.append(addr)
    return out


async def _serve(cfg: NodeConfig, shutdown_trigger: Awaitable[object],
                 on_ready: Callable[[RunningNode], None] | None, worker: WorkerRole | None = None) -> None:
    public = beyond_loopback(cfg)
    if public and not cfg.admin_secret:
        raise ConfigError("listening beyond loopback needs a configured admin secret "
                          "(--admin-secret or IDRESOLVE_ADMIN_SECRET); there are no default passwords")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    secret, secret_file, generated = load_or_create_secret(cfg.data_dir, cfg.admin_secret)
    try:
        shed_lag_s = float(cfg.shed_lag_ms) / 1000.0
    except ValueError:
        raise ConfigError(f"shed_lag_ms must be a number of milliseconds, not {cfg.shed_lag_ms!r}") from None
    settings = HostSettings(shed_lag_s=shed_lag_s, plain_http_writes=cfg.writes_over_plain_http(),
                            binary_writes=cfg.writes_over_binary(), access_log=cfg.access_log,
                            http_idle_timeout_s=cfg.http_idle_timeout_s)
    store = open_store(cfg.store, cfg.data_dir, name=cfg.name, fsync=cfg.fsync)
    hosted: HostedAuthoritative | None = None
    peers: PeerMetrics | None = None
    try:
        hosted = authoritative_host(cfg.name, store, cfg.prefixes, secret, settings=settings,
                                    templates=template_sources(cfg))
        node = hosted.node
        if worker is not None:
            hosted.listeners.reuse_port = True
            hosted.listeners.balancer = balancer = ConnectionBalancer(worker.sockets, worker.index, worker.count)
            hosted.metrics.sample(balancer.metrics)
            hosted.app[WORKER] = {"index": worker.index, "pid": os.getpid(), "workers": worker.count}
            node.share_writes(worker.generations)
            for prefix in cfg.prefixes:  # a (re)started worker may have rewritten its prefix records: all resync
                worker.generations.bump(f"0.na/{prefix.lower()}")
            from .workers import PeerMetrics

            peers = PeerMetrics(worker.sockets, worker.index, worker.count, hosted.metrics.render_own)
            await peers.start()
            hosted.metrics.peers = peers.merged
        ssl_ctx = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        native = NativeOptions(load_or_create_server_key(cfg.data_dir)) if cfg.handle is not None else None
        addrs = await hosted.start(http=cfg.http, tcp=cfg.tcp, udp=cfg.udp, ssl_ctx=ssl_ctx, handle=cfg.handle,
                                   native=native)
        running = RunningNode(cfg, node, addrs.http_url(tls=ssl_ctx is not None), secret_file, generated,
                              [admin_identity(p) for p in cfg.prefixes], addrs)
        freeze_startup_heap()
        if on_ready is not None:
            on_ready(running)
        await shutdown_trigger
        log.info("stopping node %s", cfg.name)
    except OSError as exc:
        raise ConfigError(f"cannot listen: {exc.strerror or exc}") from None
    except HandleError as exc:
        raise ConfigError(f"bad node setting: {exc.message}") from None
    finally:
        if peers is not None:
            await peers.stop()
        if hosted is not None:
            await hosted.stop()
        else:
            store.close()


def template_sources(cfg: NodeConfig) -> TemplateSources | None:
    """Where ``cfg``'s node fetches templates it does not hold (``--template-resolver``); None: nowhere."""
    roots = []
    for addr in cfg.template_resolvers:
        host, port = parse_hostport(addr, 2641)
        roots.append(Upstream(f"{host}:{port}", host, port))
    return TemplateSources(tuple(roots)) if roots else None


#: Allocations between two young collections of the cyclic garbage collector (CPython's default: 700).
#: A batch of 2,000 identifiers allocates some 40,000 objects that live until it commits: at 700 the
#: collector ran about 60 young collections a batch and every tenth an older one over their survivors, 6 %
#: of a batch's instructions (callgrind). A young collection of 10,000 objects takes about 0.13 ms here.
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Once a process's nodes are up, move everything alive (modules, configuration, stores, listeners)
    out of the cyclic garbage collector's reach. Its full collections would otherwise walk all of it and
    stall the event loop, and with it every request and link-delay timer waiting there (measured: a 24 ms
    pause for a minimal cluster in one process; mean timer lateness 26 us, 1.2 us frozen). Reference
    counting still frees these objects; only cycles among them would never be collected, and what is
    alive at start-up lives as long as the process. Young collections then run every
    ``GC_YOUNG_THRESHOLD`` allocations."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop_event)`` under uvloop when available; SIGINT and SIGTERM set the event."""
    import signal

    async def _wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(_wrapper())
    except ImportError:
        asyncio.run(_wrapper())
