"""The listeners of one node in this event loop: HTTP (aiohttp's AppRunner and TCPSite, never ``run_app``)
and the binary protocol over TCP and UDP (``net.server``), started together and stopped together.

Stop order: close the listeners (no new connections), let aiohttp and the binary servers drain in-flight
requests concurrently, each with a bounded wait.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..core.answers import EncodedAnswers
from ..core.wire_connection import DatagramEndpoint
from ..net.server import Limits, TcpServer, msgpack_connections, start_tcp, start_udp
from ..net.services import Service
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
class Listeners:
    """HTTP, binary TCP and UDP listeners of one node; any may be off (address None)."""

    limits: Limits = field(default_factory=Limits)
    http_idle_timeout_s: float = 30.0  # HTTP connections that stay idle or never complete a request close
    access_log: bool = False
    reuse_port: bool = False  # SO_REUSEPORT on every socket: worker processes share the ports (runtime/workers)
    runner: web.AppRunner | None = None
    tcp: TcpServer | None = None
    udp: asyncio.DatagramTransport | None = None
    bound: Addresses = field(default_factory=Addresses)

    async def start(self, app: web.Application, service: Service, *, http: str | None, tcp: str | None,
                    udp: str | None, ssl_ctx: ssl.SSLContext | None = None) -> Addresses:
        try:
            return await self._start(app, service, http=http, tcp=tcp, udp=udp, ssl_ctx=ssl_ctx)
        except BaseException:
            await self.stop()  # release whatever did bind before the failure
            raise

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
            await web.TCPSite(self.runner, host, port, ssl_context=ssl_ctx, reuse_address=True, backlog=1024,
                              reuse_port=self.reuse_port or None).start()
            addr = self.runner.addresses[0]
            http_addr = (addr[0], addr[1])
        encoded = EncodedAnswers()  # TCP and UDP answers share their encodings
        if tcp is not None:
            host, port = parse_hostport(tcp, 2641)
            self.tcp = await start_tcp(service, host, port, msgpack_connections(encoded), limits=self.limits,
                                       reuse_port=self.reuse_port)
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

    async def stop(self) -> None:
        if self.udp is not None:
            self.udp.close()
        tasks = []
        if self.tcp is not None:
            tasks.append(self.tcp.close(SHUTDOWN_TIMEOUT_S))
        if self.runner is not None:
            tasks.append(self.runner.cleanup())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("closing listeners: %r", r)
