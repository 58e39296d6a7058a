"""A blocking binary-protocol client on plain sockets (Locust and scripts need one): the socket side of a
``core.wire_connection.ClientConnection``.

TCP: one connection, requests sent one at a time (or pipelined with ``send``/``receive``). UDP: the
retry schedule of real clients (0.5 s, 1.0 s, 1.5 s), and a retry over TCP when the answer is truncated.
"""

from __future__ import annotations

import socket
from dataclasses import replace

from ..core.codes import OpCode
from ..core.errors import DecodeError
from ..core.messages import FLAG_AUTHORITATIVE, FLAG_OVERWRITE, FLAG_TRACE, Request, Response
from ..core.values import HandleValue
from ..core.wire import Codec, decode_message
from ..core.wire_connection import ClientConnection

UDP_RETRY_SCHEDULE_S = (0.5, 1.0, 1.5)


class ProtocolClientError(Exception):
    """The node could not be reached, closed the connection, or answered garbage."""


class BlockingClient:
    def __init__(self, host: str, port: int, *, timeout_s: float = 60.0,
                 auth: tuple[str, bytes] | None = None) -> None:
        self.host, self.port, self.timeout_s, self.auth = host, port, timeout_s, auth
        self._sock: socket.socket | None = None
        self._wire: ClientConnection[None] = ClientConnection()
        self._ready: list[Response] = []

    # -- connection ----------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise ProtocolClientError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._wire = ClientConnection()
        self._ready = []

    def close(self) -> None:
        """Close the connection; the next call opens a new one, with nothing left of this one (a partial
        answer in the decoder, answers not yet read)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._wire = ClientConnection()
            self._ready = []

    def __enter__(self) -> BlockingClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pipelining primitives -------------------------------------------------------------------------
    def send(self, req: Request) -> int:
        """Send without waiting; returns the request id to match with ``receive``."""
        self.connect()
        if req.auth is None and self.auth is not None:
            req = replace(req, auth=self.auth)
        rid, frame = self._wire.send(req, None)
        assert self._sock is not None
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            self.close()
            raise ProtocolClientError(f"send to {self.host}:{self.port} failed: {exc}") from None
        return rid

    def receive(self) -> Response:
        """The next answer on the connection (answers may come in any order; match by request id)."""
        while not self._ready:
            if self._sock is None:
                raise ProtocolClientError(f"not connected to {self.host}:{self.port}")
            try:
                data = self._sock.recv(65536)
            except OSError as exc:
                self.close()
                raise ProtocolClientError(f"receive from {self.host}:{self.port} failed: {exc}") from None
            if not data:
                self.close()
                raise ProtocolClientError(f"{self.host}:{self.port} closed the connection")
            try:
                got = self._wire.receive_data(data)
            except DecodeError as exc:
                self.close()
                raise ProtocolClientError(f"bad framing from {self.host}:{self.port}: {exc.message}") from None
            if self._wire.garbage:
                self.close()
                raise ProtocolClientError(f"undecodable answer from {self.host}:{self.port}")
            self._ready.extend(msg for _, msg in got)
        return self._ready.pop(0)

    def call(self, req: Request) -> Response:
        rid = self.send(req)
        while True:
            resp = self.receive()
            if resp.request_id == rid:
                return resp

    # -- operations ----------------------------------------------------------------------------------
    def resolve(self, handle: str, *, indexes: tuple[int, ...] = (), types: tuple[str, ...] = (),
                trace: bool = False, authoritative: bool = False) -> Response:
        flags = (FLAG_TRACE if trace else 0) | (FLAG_AUTHORITATIVE if authoritative else 0)
        return self.call(Request(0, OpCode.RESOLUTION, handle, flags, indexes, types))

    def create(self, handle: str, values: tuple[HandleValue, ...], *, overwrite: bool = False) -> Response:
        return self.call(Request(0, OpCode.CREATE_HANDLE, handle, FLAG_OVERWRITE if overwrite else 0, values=values))

    def delete(self, handle: str) -> Response:
        return self.call(Request(0, OpCode.DELETE_HANDLE, handle))

    def add_values(self, handle: str, values: tuple[HandleValue, ...], *, overwrite: bool = False) -> Response:
        return self.call(Request(0, OpCode.ADD_VALUE, handle, FLAG_OVERWRITE if overwrite else 0, values=values))

    def modify_values(self, handle: str, values: tuple[HandleValue, ...]) -> Response:
        return self.call(Request(0, OpCode.MODIFY_VALUE, handle, values=values))

    def remove_values(self, handle: str, indexes: tuple[int, ...]) -> Response:
        return self.call(Request(0, OpCode.REMOVE_VALUE, handle, indexes=indexes))

    def batch_create(self, items: list[tuple[str, tuple[HandleValue, ...]]], *, overwrite: bool = False) -> Response:
        return self.call(Request(0, OpCode.BATCH_CREATE, "", FLAG_OVERWRITE if overwrite else 0, items=tuple(items)))

    def list_handles(self, prefix: str, page: tuple[int, int] | None = None) -> Response:
        return self.call(Request(0, OpCode.LIST_HANDLES, prefix, page=page))

    def site_info(self) -> Response:
        return self.call(Request(0, OpCode.GET_SITEINFO, ""))


def udp_resolve(host: str, port: int, handle: str, *, schedule: tuple[float, ...] = UDP_RETRY_SCHEDULE_S,
                tcp_port: int | None = None) -> Response:
    """Resolve over UDP with retries; a truncated answer is asked again over TCP."""
    codec = Codec()
    payload = codec.encode(Request(1, OpCode.RESOLUTION, handle))
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for wait_s in schedule:
            sock.sendto(payload, (host, port))
            sock.settimeout(wait_s)
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            try:
                msg = decode_message(data)
            except DecodeError as exc:
                raise ProtocolClientError(f"undecodable UDP answer: {exc.message}") from None
            if not isinstance(msg, Response):
                continue
            if msg.truncated:
                with BlockingClient(host, tcp_port or port) as tcp:
                    return tcp.resolve(handle)
            return msg
    raise ProtocolClientError(f"no UDP answer from {host}:{port} after {len(schedule)} tries")
