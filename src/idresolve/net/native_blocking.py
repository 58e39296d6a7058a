"""A blocking client of the native Handle protocol on plain sockets (the CLI, scripts, tests): the socket
side of a ``core.native.client.ClientConnection``.

TCP: one connection, one request at a time; a challenge is answered on the same connection when the
client holds credentials. UDP (``udp_call``): Handle.Net's retry schedule (0.5, 1, 1.5 s) and split
answers reassembled. Answers are native ``Message``s; ``to_response`` gives their protocol-neutral form.
"""

from __future__ import annotations

import os
import socket
import time

from ..core.codes import OpCode
from ..core.errors import DecodeError
from ..core.messages import FLAG_AUTHORITATIVE, FLAG_OVERWRITE, Request, Response
from ..core.native import Message
from ..core.native.client import ClientAuth, ClientConnection, to_response
from ..core.values import HandleValue
from .blocking import UDP_RETRY_SCHEDULE_S, ProtocolClientError


def _connection(auth: ClientAuth | None) -> ClientConnection[None]:
    return ClientConnection(clock=time.time, random=os.urandom, auth=auth)


class NativeBlockingClient:
    def __init__(self, host: str, port: int, *, timeout_s: float = 30.0, auth: ClientAuth | None = None) -> None:
        self.host, self.port, self.timeout_s, self.auth = host, port, timeout_s, auth
        self._sock: socket.socket | None = None
        self._wire = _connection(auth)

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise ProtocolClientError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._wire = _connection(self.auth)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NativeBlockingClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ProtocolClientError(f"send to {self.host}:{self.port} failed: {exc}") from None

    def call(self, request: Request, *, certify: bool = False) -> Message:
        """Send ``request`` and return its native answer (challenges answered on the way)."""
        self.connect()
        rid, data = self._wire.send(request, None, certify=certify)
        self._write(data)
        while True:
            assert self._sock is not None
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                self.close()
                raise ProtocolClientError(f"receive from {self.host}:{self.port} failed: {exc}") from None
            if not chunk:
                self.close()
                raise ProtocolClientError(f"{self.host}:{self.port} closed the connection")
            try:
                got = self._wire.receive_data(chunk)
            except DecodeError as exc:
                self.close()
                raise ProtocolClientError(f"bad framing from {self.host}:{self.port}: {exc.message}") from None
            for out in self._wire.take_outgoing():
                self._write(out)
            if got:
                return got[0][1]

    def request(self, request: Request) -> Response:
        return to_response(self.call(request))

    # -- operations ----------------------------------------------------------------------------------
    def resolve(self, handle: str, *, indexes: tuple[int, ...] = (), types: tuple[str, ...] = (),
                authoritative: bool = False) -> Response:
        flags = FLAG_AUTHORITATIVE if authoritative else 0
        return self.request(Request(0, OpCode.RESOLUTION, handle, flags, indexes, types))

    def create(self, handle: str, values: tuple[HandleValue, ...], *, overwrite: bool = False) -> Response:
        return self.request(Request(0, OpCode.CREATE_HANDLE, handle, FLAG_OVERWRITE if overwrite else 0,
                                    values=values))

    def delete(self, handle: str) -> Response:
        return self.request(Request(0, OpCode.DELETE_HANDLE, handle))

    def add_values(self, handle: str, values: tuple[HandleValue, ...], *, overwrite: bool = False) -> Response:
        return self.request(Request(0, OpCode.ADD_VALUE, handle, FLAG_OVERWRITE if overwrite else 0, values=values))

    def modify_values(self, handle: str, values: tuple[HandleValue, ...]) -> Response:
        return self.request(Request(0, OpCode.MODIFY_VALUE, handle, values=values))

    def remove_values(self, handle: str, indexes: tuple[int, ...]) -> Response:
        return self.request(Request(0, OpCode.REMOVE_VALUE, handle, indexes=indexes))

    def list_handles(self, prefix: str) -> Response:
        return self.request(Request(0, OpCode.LIST_HANDLES, prefix))

    def site_info(self) -> Response:
        return self.request(Request(0, OpCode.GET_SITEINFO, "/"))


def udp_call(host: str, port: int, request: Request, *, schedule: tuple[float, ...] = UDP_RETRY_SCHEDULE_S,
             certify: bool = False) -> Message:
    """One request over UDP with retries (anonymous: challenges are answered over TCP)."""
    wire = _connection(None)
    _, data = wire.send(request, None, certify=certify)
    datagrams = wire.datagrams(data)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for wait_s in schedule:
            for d in datagrams:
                sock.sendto(d, (host, port))
            deadline = time.monotonic() + wait_s
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    chunk, _ = sock.recvfrom(65536)
                except TimeoutError:
                    break
                got = wire.receive_datagram(chunk)
                if got:
                    return got[0][1]
    raise ProtocolClientError(f"no UDP answer from {host}:{port} after {len(schedule)} tries")
