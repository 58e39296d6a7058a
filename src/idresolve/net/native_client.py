"""An asyncio client of the native Handle protocol: one pipelined TCP connection (``NativeConnection``),
and one-off UDP requests (``udp_request``); both are the socket side of a
``core.native.client.ClientConnection``, so challenges are answered on the way when the client holds
credentials. Answers are native ``Message``s (``to_response`` gives their protocol-neutral form).
"""

from __future__ import annotations

import asyncio
import os
import time

from ..core.errors import DecodeError
from ..core.messages import Request
from ..core.native import Message
from ..core.native.client import ClientAuth, ClientConnection
from .blocking import UDP_RETRY_SCHEDULE_S


class _Stream(asyncio.Protocol):
    def __init__(self, conn: NativeConnection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            got = conn.wire.receive_data(data)
        except DecodeError as exc:
            conn.fail(ConnectionError(f"bad framing from {conn.address}: {exc.message}"))
            return
        for out in conn.wire.take_outgoing():
            conn.write(out)
        for fut, msg in got:
            if not fut.done():
                fut.set_result(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.fail(ConnectionError(f"connection to {self.conn.address} closed"))


class NativeConnection:
    """One TCP connection with pipelined requests. ``await NativeConnection.open(host, port)``."""

    def __init__(self, host: str, port: int, auth: ClientAuth | None = None) -> None:
        self.address = f"{host}:{port}"
        self.wire: ClientConnection[asyncio.Future[Message]] = ClientConnection(clock=time.time, random=os.urandom,
                                                                                auth=auth)
        self.transport: asyncio.Transport | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, *, auth: ClientAuth | None = None,
                   timeout_s: float = 5.0) -> NativeConnection:
        conn = cls(host, port, auth)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: _Stream(conn), host, port), timeout_s)
        return conn

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def fail(self, exc: Exception) -> None:
        self.closed = True
        pending, self.wire.pending = self.wire.pending, {}
        for sent in pending.values():
            if not sent.token.done():
                sent.token.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def request(self, request: Request, *, timeout_s: float = 5.0, certify: bool = False) -> Message:
        """Send ``request``; its answer, or ``TimeoutError`` / ``ConnectionError``."""
        if self.closed:
            raise ConnectionError(f"connection to {self.address} is closed")
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        rid, data = self.wire.send(request, fut, certify=certify)
        self.write(data)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self.wire.forget(rid)

    def close(self) -> None:
        self.fail(ConnectionError("closed"))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, wire: ClientConnection[asyncio.Future[Message]]) -> None:
        self.wire = wire

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for fut, msg in self.wire.receive_datagram(data, addr):
            if not fut.done():
                fut.set_result(msg)


async def udp_request(host: str, port: int, request: Request, *,
                      schedule: tuple[float, ...] = UDP_RETRY_SCHEDULE_S, certify: bool = False) -> Message:
    """One anonymous request over UDP with Handle.Net's retries; raises ``TimeoutError`` after the last."""
    loop = asyncio.get_running_loop()
    wire: ClientConnection[asyncio.Future[Message]] = ClientConnection(clock=time.time, random=os.urandom)
    transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(wire), remote_addr=(host, port))
    try:
        fut: asyncio.Future[Message] = loop.create_future()
        _, data = wire.send(request, fut, certify=certify)
        for wait_s in schedule:
            for d in wire.datagrams(data):
                transport.sendto(d)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), wait_s)
            except TimeoutError:
                continue
        raise TimeoutError(f"no UDP answer from {host}:{port} after {len(schedule)} tries")
    finally:
        transport.close()
