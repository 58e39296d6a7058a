"""Hosting nodes in one event loop: each ``Hosted*`` owns its store, listeners (HTTP, binary TCP and UDP)
and its clean stop. ``host.serve_node`` runs one; the cluster worker runs many per process.

Stop order: close the listeners (no new connections), let aiohttp drain in-flight requests with a
timeout, then close the store (checkpointing the WAL).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .config import parse_hostport
from .http.app import BODY_TIMEOUT, EDGE, EdgeHooks, make_app
from .http.recursive_app import make_recursive_app
from .metrics import NodeMetrics, admission_metrics
from .net.admission import Admission
from .net.server import Limits, TcpServer, start_tcp, start_udp
from .net.services import AuthoritativeService, RecursiveService
from .nodes.authoritative import AuthoritativeNode
from .nodes.dispatch import Handler
from .store.base import Store

log = logging.getLogger("idresolve.hosting")
SHUTDOWN_TIMEOUT_S = 10.0


class _DropBadRequestTracebacks(logging.Filter):
    """aiohttp logs a traceback at ERROR for every unparsable request (an over-long request line, say):
    anyone could flood the log with them. They are the client's fault: keep them at DEBUG level."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | RequestPayloadError | ConnectionResetError):
            return logging.getLogger("aiohttp.server").isEnabledFor(logging.DEBUG)
        return True


_BAD_REQUEST_FILTER = _DropBadRequestTracebacks()
HTTP_IDLE_TIMEOUT_S = 30.0


def _quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if _BAD_REQUEST_FILTER not in server_log.filters:
        server_log.addFilter(_BAD_REQUEST_FILTER)


@dataclass(frozen=True, slots=True)
class Addresses:
    http: tuple[str, int] | None = None
    tcp: tuple[str, int] | None = None
    udp: tuple[str, int] | None = None

    def http_url(self, tls: bool = False) -> str:
        if self.http is None:
            return ""
        host = f"[{self.http[0]}]" if ":" in self.http[0] else self.http[0]
        return f"{'https' if tls else 'http'}://{host}:{self.http[1]}"


@dataclass
class _Listeners:
    runner: web.AppRunner | None = None
    tcp: TcpServer | None = None
    udp: asyncio.DatagramTransport | None = None
    bound: Addresses = field(default_factory=Addresses)

    async def start(self, app: web.Application, service: object, *, http: str | None, tcp: str | None,
                    udp: str | None, ssl_ctx: ssl.SSLContext | None, access_log: bool, limits: Limits) -> Addresses:
        try:
            return await self._start(app, service, http=http, tcp=tcp, udp=udp, ssl_ctx=ssl_ctx,
                                     access_log=access_log, limits=limits)
        except BaseException:
            await self.stop()  # release whatever did bind before the failure
            raise

    async def _start(self, app: web.Application, service: object, *, http: str | None, tcp: str | None,
                     udp: str | None, ssl_ctx: ssl.SSLContext | None, access_log: bool, limits: Limits) -> Addresses:
        http_addr = tcp_addr = udp_addr = None
        if http is not None:
            _quiet_bad_requests()
            app[BODY_TIMEOUT] = HTTP_IDLE_TIMEOUT_S  # a request body must arrive within the idle timeout
            host, port = parse_hostport(http, 8000)
            # keepalive_timeout also closes connections that never complete a request (slowloris).
            self.runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access") if access_log else None,
                                        shutdown_timeout=SHUTDOWN_TIMEOUT_S, handle_signals=False,
                                        keepalive_timeout=HTTP_IDLE_TIMEOUT_S)
            await self.runner.setup()
            await web.TCPSite(self.runner, host, port, ssl_context=ssl_ctx, reuse_address=True, backlog=1024).start()
            addr = self.runner.addresses[0]
            http_addr = (addr[0], addr[1])
        if tcp is not None:
            host, port = parse_hostport(tcp, 2641)
            self.tcp = await start_tcp(service, host, port, limits=limits)  # type: ignore[arg-type]
            tcp_addr = self.tcp.address
        if udp is not None:
            host, port = parse_hostport(udp, 2641)
            if port == 0 and tcp_addr is not None:
                port = tcp_addr[1]  # same port number as TCP, as real nodes do
            self.udp = await start_udp(service, host, port, limits=limits)  # type: ignore[arg-type]
            addr = self.udp.get_extra_info("sockname")
            udp_addr = (addr[0], addr[1])
        self.bound = Addresses(http_addr, tcp_addr, udp_addr)
        return self.bound

    async def stop(self) -> None:
        if self.udp is not None:
            self.udp.close()
        # HTTP and binary listeners drain concurrently; each has its own bounded wait.
        tasks = []
        if self.tcp is not None:
            tasks.append(self.tcp.close(SHUTDOWN_TIMEOUT_S))
        if self.runner is not None:
            tasks.append(self.runner.cleanup())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("closing listeners: %r", r)


class HostedAuthoritative:
    """An authoritative node (top-level, secondary or enterprise) with its listeners."""

    def __init__(self, node: AuthoritativeNode, *, plain_http_writes: bool = True,
                 extra_handlers: dict[int, Handler] | None = None, limits: Limits | None = None,
                 role: str = "authoritative", shed_lag_s: float = 0.05) -> None:
        self.node = node
        self.metrics = NodeMetrics(node.name, role)
        self.metrics.sample(lambda: {"idresolve_records": ("gauge", "Records in the store", node.store.count())})
        self.service = AuthoritativeService(node, extra=extra_handlers, observe=self.metrics.binary_observer())
        self.service.admission = Admission(lag_threshold_s=shed_lag_s) if shed_lag_s > 0 else None
        self.app = make_app(node, plain_http_writes=plain_http_writes)
        self.metrics.install(self.app)
        if self.service.admission is not None:
            install_admission(self.app, self.service.admission, per_client=False)
            self.metrics.sample(lambda: admission_metrics(self.service.admission))
        self.limits = limits or Limits()
        self._listeners = _Listeners()

    @property
    def store(self) -> Store:
        return self.node.store

    async def start(self, *, http: str | None, tcp: str | None = None, udp: str | None = None,
                    ssl_ctx: ssl.SSLContext | None = None, access_log: bool = False) -> Addresses:
        return await self._listeners.start(self.app, self.service, http=http, tcp=tcp, udp=udp, ssl_ctx=ssl_ctx,
                                           access_log=access_log, limits=self.limits)

    @property
    def addresses(self) -> Addresses:
        return self._listeners.bound

    async def stop(self) -> None:
        try:
            await self._listeners.stop()
        finally:
            self.node.store.close()


class HostedRecursive:
    def __init__(self, service: RecursiveService, *, limits: Limits | None = None) -> None:
        self.service = service
        self.metrics = NodeMetrics(service.name, "recursive")
        service.observe = self.metrics.binary_observer()
        self.metrics.sample(self._sampled)
        self.app = make_recursive_app(service)
        self.metrics.install(self.app)
        if service.admission is not None:
            install_admission(self.app, service.admission, per_client=True)
            self.metrics.sample(lambda: admission_metrics(service.admission))
        self.limits = limits or Limits()
        self._listeners = _Listeners()

    async def start(self, *, http: str | None, tcp: str | None = None, udp: str | None = None,
                    access_log: bool = False) -> Addresses:
        return await self._listeners.start(self.app, self.service, http=http, tcp=tcp, udp=udp, ssl_ctx=None,
                                           access_log=access_log, limits=self.limits)

    @property
    def addresses(self) -> Addresses:
        return self._listeners.bound

    def _sampled(self) -> dict[str, tuple[str, str, float]]:
        s = self.service
        stats = s.resolver.answers.stats
        out = {
            "idresolve_cache_hits": ("counter", "Answers served from the cache", stats.hits),
            "idresolve_cache_misses": ("counter", "Resolutions that walked the hierarchy", stats.misses),
            "idresolve_cache_entries": ("gauge", "Answers cached", len(s.resolver.answers)),
            "idresolve_upstream_requests": ("counter", "Requests sent to other nodes", s.upstream_requests),
        }
        out.update(link_metrics(s.pool))
        return out

    async def stop(self) -> None:
        await self._listeners.stop()
        self.service.pool.close()


def install_admission(app: web.Application, admission: Admission, *, per_client: bool) -> None:
    """Refuse REST requests with 503 and code 3 when the node sheds load (in the app's edge middleware,
    so refused requests are counted by the metrics)."""
    hooks = app.get(EDGE) or EdgeHooks()
    hooks.admission, hooks.per_client = admission, per_client
    app[EDGE] = hooks


def link_metrics(pool: object) -> dict[str, tuple[str, str, float]]:
    """Latency-model counters of a ClientPool whose delay function is a ``LinkModel``."""
    stats = getattr(getattr(pool, "delay", None), "stats", None)
    if stats is None:
        return {}
    return {
        "idresolve_link_delays": ("counter", "One-way delays applied by the latency model", stats.delays),
        "idresolve_link_delay_seconds": ("counter", "Seconds of delay applied by the latency model", stats.delay_s_total),
        "idresolve_link_lost": ("counter", "Requests dropped by the latency model", stats.lost),
        "idresolve_link_timer_late_seconds": (
            "gauge", "Mean over the delay timers of (actual - intended) firing time: what is left of their bias",
            pool.timers.mean_late_s if hasattr(pool, "timers") else 0.0),
    }
