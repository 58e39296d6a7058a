"""The listeners of one node in this event loop: HTTP (aiohttp's AppRunner and TCPSite, never ``run_app``),
the msgpack binary protocol over TCP and UDP, and the native Handle protocol over TCP and UDP on one port
(both through ``net.server``), started together and stopped together.

The native listener's connections share one ``core.native.state.ListenerState`` (challenges, sessions,
the node's key and its site); its site names the port it actually bound, so ``--handle 127.0.0.1:0`` works.

Stop order: close the listeners (no new connections), let aiohttp and the binary servers drain in-flight
requests concurrently, each with a bounded wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..core.answers import EncodedAnswers
from ..core.native import connection as native
from ..core.native.credential import PrivateKey
from ..core.native.state import ListenerState
from ..core.site import Interface, Server, SiteInfo
from ..core.wire_connection import DatagramEndpoint
from ..http.edge import with_fast_path
from ..net.server import Gate, Limits, TcpServer, msgpack_connections, start_tcp, start_udp
from ..net.services import Service
from .balance import ConnectionBalancer
from .config import parse_hostport

log = logging.getLogger("idresolve.runtime")
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


def _quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if _BAD_REQUEST_FILTER not in server_log.filters:
        server_log.addFilter(_BAD_REQUEST_FILTER)


NATIVE_PORT = 2641


@dataclass(frozen=True, slots=True)
class NativeOptions:
    """How a node speaks the native protocol: its key, and the site it publishes (None: one server at the
    listener's own address, with its native and HTTP ports). ``authoritative``: answers carry AT."""

    key: PrivateKey
    site: SiteInfo | None = None
    authoritative: bool = True


def own_site(host: str, port: int, public_key: bytes, http_port: int | None) -> SiteInfo:
    """The site of a node that was not given one: its native TCP and UDP port, and HTTP when it has it."""
    address = "127.0.0.1" if host in ("", "localhost", "0.0.0.0") else ("::1" if host == "::" else host)
    interfaces = [Interface("TCP", port), Interface("UDP", port)]
    if http_port is not None:
        interfaces.append(Interface("HTTP", http_port))
    return SiteInfo((Server(1, address, tuple(interfaces), public_key=public_key),))


@dataclass(frozen=True, slots=True)
class Addresses:
    http: tuple[str, int] | None = None
    tcp: tuple[str, int] | None = None
    udp: tuple[str, int] | None = None
    handle: tuple[str, int] | None = None  # the native protocol, TCP and UDP

    def http_url(self, tls: bool = False) -> str:
        if self.http is None:
            return ""
        host = f"[{self.http[0]}]" if ":" in self.http[0] else self.http[0]
        return f"{'https' if tls else 'http'}://{host}:{self.http[1]}"


class GatedSite(web.BaseSite):
    """aiohttp's plain TCP site, with every new connection passing ``gate`` (the workers' balancer) before
    aiohttp's protocol is made for it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, gate: Gate, *, backlog: int,
                 reuse_port: bool) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.gate, self.reuse_port = host, port, gate, reuse_port

    @property
    def name(self) -> str:
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.gate(server, lambda: len(server.connections)), self.host, self.port, backlog=self._backlog,
            reuse_address=True, reuse_port=self.reuse_port or None)


@dataclass
class Listeners:
    """HTTP, binary TCP and UDP listeners of one node; any may be off (address None)."""

    limits: Limits = field(default_factory=Limits)
    http_idle_timeout_s: float = 30.0  # HTTP connections that stay idle or never complete a request close
    access_log: bool = False
    reuse_port: bool = False  # SO_REUSEPORT on every socket: worker processes share the ports (runtime/workers)
    balancer: ConnectionBalancer | None = None  # workers: new connections go to the least loaded (runtime/balance)
    runner: web.AppRunner | None = None
    tcp: TcpServer | None = None
    udp: asyncio.DatagramTransport | None = None
    native_tcp: TcpServer | None = None
    native_udp: asyncio.DatagramTransport | None = None
    native_state: ListenerState | None = None
    bound: Addresses = field(default_factory=Addresses)

    async def start(self, app: web.Application, service: Service, *, http: str | None, tcp: str | None,
                    udp: str | None, ssl_ctx: ssl.SSLContext | None = None, handle: str | None = None,
                    native_options: NativeOptions | None = None) -> Addresses:
        try:
            bound = await self._start(app, service, http=http, tcp=tcp, udp=udp, ssl_ctx=ssl_ctx)
            if handle is not None:
                if native_options is None:
                    raise ValueError("a native listener needs the node's key (NativeOptions)")
                bound = await self._start_native(service, handle, native_options, bound)
            # The balancer opens its handoff socket only now: another worker may hand this one a connection
            # as soon as it is open, and one for a listener not yet registered would be closed unanswered
            # (a reset, seen in CI). Until then this worker keeps what it accepts.
            if self.balancer is not None:
                await self.balancer.start()
            self.bound = bound
            return bound
        except BaseException:
            await self.stop()  # release whatever did bind before the failure
            raise

    async def _start_native(self, service: Service, address: str, options: NativeOptions,
                            bound: Addresses) -> Addresses:
        """TCP and UDP on one port; the site is made for the port bound."""
        from .serverkey import public_key_bytes

        host, port = parse_hostport(address, NATIVE_PORT)
        state = ListenerState(clock=time.time, random=os.urandom, key=options.key, site=None,
                              authoritative=options.authoritative)
        r = native.responder(state)
        self.native_state = state
        self.native_tcp = await start_tcp(service, host, port,
                                          lambda limits: native.ServerConnection(r, max_inflight=limits.max_inflight),
                                          limits=self.limits, reuse_port=self.reuse_port, gate=self._gate("native"))
        port = self.native_tcp.address[1]
        self.native_udp = await start_udp(service, host, port, native.DatagramEndpoint(r), limits=self.limits,
                                          reuse_port=self.reuse_port)
        site = options.site or own_site(host, port, public_key_bytes(options.key),
                                        bound.http[1] if bound.http else None)
        state.site, state.site_serial = site, site.serial
        return Addresses(bound.http, bound.tcp, bound.udp, (host, port))

    async def _start(self, app: web.Application, service: Service, *, http: str | None, tcp: str | None,
                     udp: str | None, ssl_ctx: ssl.SSLContext | None) -> Addresses:
        http_addr = tcp_addr = udp_addr = None
        if http is not None:
            _quiet_bad_requests()
            host, port = parse_hostport(http, 8000)
            # keepalive_timeout also closes connections that never complete a request (slowloris).
            access = logging.getLogger("aiohttp.access") if self.access_log else None
            self.runner = web.AppRunner(app, access_log=access, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                                        handle_signals=False, keepalive_timeout=self.http_idle_timeout_s)
            await self.runner.setup()
            server = self.runner.server
            if server is not None:  # the app's commonest request answered before routing (http.edge.FastPath)
                server.request_handler = with_fast_path(app, server.request_handler)
            if self.balancer is not None and ssl_ctx is None:  # TLS connections stay where their handshake was
                await GatedSite(self.runner, host, port, self.balancer.gate("http"), backlog=1024,
                                reuse_port=self.reuse_port).start()
            else:
                await web.TCPSite(self.runner, host, port, ssl_context=ssl_ctx, reuse_address=True, backlog=1024,
                                  reuse_port=self.reuse_port or None).start()
            addr = self.runner.addresses[0]
            http_addr = (addr[0], addr[1])
        encoded = EncodedAnswers()  # TCP and UDP answers share their encodings
        if tcp is not None:
            host, port = parse_hostport(tcp, 2641)
            self.tcp = await start_tcp(service, host, port, msgpack_connections(encoded), limits=self.limits,
                                       reuse_port=self.reuse_port, gate=self._gate("tcp"))
            tcp_addr = self.tcp.address
        if udp is not None:
            host, port = parse_hostport(udp, 2641)
            if port == 0 and tcp_addr is not None:
                port = tcp_addr[1]  # same port number as TCP, as real nodes do
            self.udp = await start_udp(service, host, port, DatagramEndpoint(encoded), limits=self.limits,
                                       reuse_port=self.reuse_port)
            addr = self.udp.get_extra_info("sockname")
            udp_addr = (addr[0], addr[1])
        self.bound = Addresses(http_addr, tcp_addr, udp_addr)
        return self.bound

    def _gate(self, tag: str) -> Gate | None:
        return self.balancer.gate(tag) if self.balancer is not None else None

    async def stop(self) -> None:
        if self.balancer is not None:  # no more handoffs either way: this worker is stopping
            await self.balancer.stop()
        for transport in (self.udp, self.native_udp):
            if transport is not None:
                transport.close()
        tasks = []
        for server in (self.tcp, self.native_tcp):
            if server is not None:
                tasks.append(server.close(SHUTDOWN_TIMEOUT_S))
        if self.runner is not None:
            tasks.append(self.runner.cleanup())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("closing listeners: %r", r)
