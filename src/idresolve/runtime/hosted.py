"""Nodes hosted in this event loop, and the one composition root that builds them.

A ``Hosted*`` owns one node's service (``net.services``), its HTTP app (``http``), its metrics and its
listeners (``runtime.listeners``), and its clean stop. Everything about how it is hosted comes in one
``HostSettings`` at construction. ``authoritative_host`` is what ``idresolve node`` (``runtime.serve``)
and the cluster workers (``cluster.worker``) both call: it opens the node, writes its own prefix records
(``nodes.bootstrap.ensure_prefix_record``) and hosts it.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.site import SiteInfo
from ..http.app import make_app
from ..http.edge import EdgeHooks
from ..http.recursive_app import make_recursive_app
from ..net.admission import Admission
from ..net.client import ClientPool
from ..net.server import Limits
from ..net.services import DEFAULT_CLIENT_RATE, AuthoritativeService, RecursiveService
from ..net.templates import TemplateFetcher
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.bootstrap import ensure_prefix_record
from ..nodes.dispatch import Handler
from ..nodes.pipeline import RecursiveNode
from ..nodes.recursive import Upstream
from ..store.base import Store
from .listeners import Addresses, Listeners, NativeOptions
from .metrics import NodeMetrics, admission_metrics


@dataclass(frozen=True, slots=True)
class HostSettings:
    """How a node is hosted. ``shed_lag_s`` 0 never sheds on event-loop lag; ``client_rate`` None puts no
    limit on one client address (recursive nodes); writes over plain HTTP and over the binary protocol are
    allowed or not by listener (``runtime.config.NodeConfig`` decides from the addresses)."""

    limits: Limits = field(default_factory=Limits)
    http_idle_timeout_s: float = 30.0
    access_log: bool = False
    shed_lag_s: float = 0.05
    plain_http_writes: bool = True
    binary_writes: bool = True
    client_rate: float | None = DEFAULT_CLIENT_RATE
    hop_timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class TemplateSources:
    """Where an authoritative node fetches templates it does not hold (``net.templates``): ``holders``
    (prefix -> node, asked directly) and ``roots`` (where a walk through the hierarchy starts)."""

    roots: tuple[Upstream, ...] = ()
    holders: tuple[tuple[str, Upstream], ...] = ()
    pool: ClientPool | None = None  # None: a pool of its own (no link latency model)


class HostedAuthoritative:
    """An authoritative node (top-level, secondary or enterprise) with its listeners."""

    def __init__(self, node: AuthoritativeNode, settings: HostSettings | None = None, *, role: str = "authoritative",
                 extra_handlers: dict[int, Handler] | None = None, templates: TemplateSources | None = None) -> None:
        s = settings or HostSettings()
        self.node = node
        self.metrics = NodeMetrics(node.name, role)
        admission = Admission(lag_threshold_s=s.shed_lag_s) if s.shed_lag_s > 0 else None
        self.fetcher: TemplateFetcher | None = None
        if templates is not None and (templates.roots or templates.holders):
            self.fetcher = TemplateFetcher(node, templates.pool or ClientPool(), roots=templates.roots,
                                           holders=dict(templates.holders), hop_timeout_s=s.hop_timeout_s)
        self.service = AuthoritativeService(node, extra=extra_handlers, observe=self.metrics.binary_observer(),
                                            admission=admission, allow_writes=s.binary_writes, templates=self.fetcher)
        self.app = make_app(node, plain_http_writes=s.plain_http_writes, metrics=self.metrics.render,
                            hooks=EdgeHooks(admission, per_client=False, observe=self.metrics.rest_observer()),
                            body_timeout_s=s.http_idle_timeout_s, templates=self.fetcher)
        self.metrics.count_untimed("binary", "resolution", lambda: self.service.cached_counts)
        self.metrics.sample(lambda: {"idresolve_records": ("gauge", "Records in the store", node.store.count())})
        if admission is not None:
            self.metrics.sample(lambda: admission_metrics(admission))
        self.listeners = Listeners(s.limits, s.http_idle_timeout_s, s.access_log)

    @property
    def store(self) -> Store:
        return self.node.store

    async def start(self, *, http: str | None, tcp: str | None = None, udp: str | None = None,
                    ssl_ctx: ssl.SSLContext | None = None, handle: str | None = None,
                    native: NativeOptions | None = None) -> Addresses:
        """Start the listeners; ``handle`` (with ``native``: the node's key and site) adds the native one."""
        return await self.listeners.start(self.app, self.service, http=http, tcp=tcp, udp=udp, ssl_ctx=ssl_ctx,
                                          handle=handle, native_options=native)

    @property
    def addresses(self) -> Addresses:
        return self.listeners.bound

    async def stop(self) -> None:
        try:
            await self.listeners.stop()
        finally:
            if self.fetcher is not None:
                self.fetcher.pool.close()
            self.node.store.close()


class HostedRecursive:
    """A recursive node with its listeners; it reaches upstream nodes through ``pool``."""

    def __init__(self, node: RecursiveNode, pool: ClientPool, settings: HostSettings | None = None) -> None:
        s = settings or HostSettings()
        self.node = node
        self.metrics = NodeMetrics(node.name, "recursive")
        admission = Admission(lag_threshold_s=s.shed_lag_s if s.shed_lag_s > 0 else math.inf,
                              rate_per_client=s.client_rate)
        self.service = RecursiveService(node, pool, hop_timeout_s=s.hop_timeout_s,
                                        observe=self.metrics.binary_observer(), admission=admission)
        self.app = make_recursive_app(self.service, metrics=self.metrics.render,
                                      hooks=EdgeHooks(admission, per_client=True, observe=self.metrics.rest_observer()))
        self.metrics.count_untimed("binary", "resolution", lambda: self.service.cached_counts)
        self.metrics.sample(self._sampled)
        self.metrics.sample(lambda: admission_metrics(admission))
        self.listeners = Listeners(s.limits, s.http_idle_timeout_s, s.access_log)

    @property
    def pool(self) -> ClientPool:
        return self.service.pool

    async def start(self, *, http: str | None, tcp: str | None = None, udp: str | None = None,
                    handle: str | None = None, native: NativeOptions | None = None) -> Addresses:
        """Start the listeners; native requests (``handle``) are resolved with recursion, as a caching
        Handle server does; the answers are not authoritative."""
        if native is not None:
            native = NativeOptions(native.key, native.site, authoritative=False)
        return await self.listeners.start(self.app, self.service, http=http, tcp=tcp, udp=udp, handle=handle,
                                          native_options=native)

    @property
    def addresses(self) -> Addresses:
        return self.listeners.bound

    def _sampled(self) -> dict[str, tuple[str, str, Any]]:
        cache = self.node.resolver.answers
        out = {
            "idresolve_cache_hits": ("counter", "Answers served from the cache", cache.stats.hits),
            "idresolve_cache_misses": ("counter", "Resolutions that walked the hierarchy", cache.stats.misses),
            "idresolve_cache_entries": ("gauge", "Answers cached", len(cache)),
            "idresolve_upstream_requests": ("counter", "Requests sent to other nodes", self.node.upstream_requests),
        }
        out.update(self.pool.metrics())
        return out

    async def stop(self) -> None:
        await self.listeners.stop()
        self.pool.close()


def authoritative_host(name: str, store: Store, prefixes: Iterable[str], secret: str, *,
                       settings: HostSettings | None = None, role: str = "authoritative",
                       site: SiteInfo | None = None, extra_handlers: dict[int, Handler] | None = None,
                       now: float | None = None, templates: TemplateSources | None = None) -> HostedAuthoritative:
    """Open an authoritative node on ``store`` and host it: its own prefix records ``0.NA/<prefix>`` are
    written or kept current (admin key ``secret``; HS_SITE ``site`` when given) before it serves.
    ``templates``: where it fetches templates it does not hold."""
    prefixes = tuple(prefixes)
    node = AuthoritativeNode(store, prefixes, name=name)
    stamp = time.time() if now is None else now
    for prefix in prefixes:
        ensure_prefix_record(node, prefix, secret, stamp, site=site)
    return HostedAuthoritative(node, settings, role=role, extra_handlers=extra_handlers, templates=templates)
