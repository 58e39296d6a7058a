"""Locust users of the native binary protocol, on ``idresolve.net.blocking.BlockingClient`` (plain
sockets, made cooperative by Locust's gevent monkey-patching) sharing the project's codec.

Each call fires Locust's ``request`` event: request_type "BIN", name by operation ("resolve",
"resolve-unknown", "create", "batch-create"), response_time in ms (float, from ``perf_counter``),
response_length the answer's frame size, and an exception on connection errors or on answers that fail
under --idr-fail-on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cluster_info import Node
from locust import User, task
from locust.env import Environment
from workload import Workload, Writer, record_values, workload_of

from idresolve.core.codes import ResponseCode
from idresolve.core.messages import Response
from idresolve.core.wire import Codec
from idresolve.net.blocking import BlockingClient, ProtocolClientError

FRAME_HEADER_BYTES = 4


class UnexpectedAnswer(Exception):
    """An answer that counts as a failure under --idr-fail-on (the message names codes, not handles)."""


def _code_name(code: int) -> str:
    try:
        return f"{int(code)} {ResponseCode(code).name}"
    except ValueError:
        return str(int(code))


class BinaryTransport:
    """One kept-alive ``BlockingClient`` per (endpoint, identity), each call reported to Locust."""

    def __init__(self, environment: Environment, workload: Workload) -> None:
        self.fire = environment.events.request.fire
        self.workload = workload
        self.timeout_s = workload.settings.timeout_s
        self.codec = Codec()  # only to size answers; BlockingClient has its own
        self._clients: dict[tuple[str, int, str], BlockingClient] = {}

    def client(self, node: Node, writer: Writer | None = None) -> BlockingClient:
        host, port = node.tcp
        key = (host, port, writer.identity if writer else "")
        c = self._clients.get(key)
        if c is None:
            auth = (writer.identity, writer.secret.encode()) if writer else None
            c = self._clients[key] = BlockingClient(host, port, timeout_s=self.timeout_s, auth=auth)
        return c

    def call(self, name: str, client: BlockingClient, op: Callable[[BlockingClient], Response],
             expected: int) -> Response | None:
        start_time = time.time()
        t0 = time.perf_counter()
        resp: Response | None = None
        exc: Exception | None = None
        try:
            resp = op(client)
        except ProtocolClientError as e:  # the client has closed the socket; the next call reconnects
            exc = e
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        length = 0
        if resp is not None:
            # The re-encoded answer has the size of the frame received (msgpack is deterministic).
            length = len(self.codec.encode(resp)) + FRAME_HEADER_BYTES
            problem = self.workload.verdict(success=resp.code == ResponseCode.SUCCESS, as_expected=resp.code == expected,
                                            got=f"code {_code_name(resp.code)}", expected=f"code {_code_name(expected)}")
            if problem is not None:
                exc = UnexpectedAnswer(problem)
        self.fire(request_type="BIN", name=name, response_time=elapsed_ms, response_length=length, response=resp,
                  context={}, exception=exc, start_time=start_time, url=f"tcp://{client.host}:{client.port}")
        return resp

    def resolve(self, node: Node, handle: str, *, seeded: bool) -> Response | None:
        expected = ResponseCode.SUCCESS if seeded else ResponseCode.HANDLE_NOT_FOUND
        return self.call("resolve" if seeded else "resolve-unknown", self.client(node),
                         lambda c: c.resolve(handle), expected)

    def create(self, writer: Writer, handle: str) -> Response | None:
        return self.call("create", self.client(writer.enterprise.holder, writer),
                         lambda c: c.create(handle, record_values(handle)), ResponseCode.SUCCESS)

    def batch_create(self, writer: Writer, handles: list[str]) -> Response | None:
        items = [(h, record_values(h)) for h in handles]
        return self.call("batch-create", self.client(writer.enterprise.holder, writer),
                         lambda c: c.batch_create(items), ResponseCode.SUCCESS)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()


class BinaryResolver(User):
    """Resolves over the binary protocol at a recursive node (or the holder, --idr-target authoritative);
    with --idr-write-share, some tasks register one identifier (binary create) at the holder instead."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.workload = workload_of(environment)
        self.node = self.workload.assign_recursive()  # None: ask each prefix's holder
        self.transport = BinaryTransport(environment, self.workload)

    def wait_time(self) -> float:
        return self.workload.wait(self)

    @task
    def work(self) -> None:
        wl = self.workload
        if wl.wants_write():
            writer = wl.next_writer()
            self.transport.create(writer, wl.fresh_handle(writer))
            return
        lookup = wl.next_lookup()
        self.transport.resolve(self.node or lookup.holder, lookup.handle, seeded=lookup.seeded)

    def on_stop(self) -> None:
        self.transport.close()
