"""Simulated nodes: the project's node objects behind a queue, moved by bytes instead of sockets.

- ``Server``: one node's CPU as a FIFO single server with virtual-time bookkeeping: when it is next free,
  the finish times of the work admitted (its queue), busy time and sojourn time per hour (utilisation and
  mean queue length by Little's law), requests and sheds. Work arrives in time order (the engine sees to
  that), so each request's start and finish are known when it arrives.
- ``SimAuthoritative``: an ``AuthoritativeNode`` behind the real ``AuthoritativeService`` and one
  sans-I/O ``ServerConnection`` per peer (sharing one ``EncodedAnswers``, as a listener's connections do).
  ``serve(peer, frame)`` does what the stream shell does with the bytes of one read: events out of the
  connection, the fast path for plain resolutions, ``service.handle`` for the rest, the answer's bytes.
- ``SimRecursive``: a ``RecursiveNode`` with its fast path bound to the virtual clock and one
  ``ClientConnection`` per upstream (request ids, matching answers; one ``ResponseMemo`` per node, as a
  ``ClientPool`` keeps one).
Shedding uses the real ``net.admission.Admission`` with a virtual lag: the wait a request would have in
the queue stands for the event loop's lag (see ``docs/simulation.md``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..core.answers import EncodedAnswers
from ..core.codes import OpCode
from ..core.events import Close, Reply
from ..core.messages import Request
from ..core.wire import ResponseMemo
from ..core.wire_connection import ClientConnection, ServerConnection
from ..net.admission import Admission
from ..net.services import AuthoritativeService
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.dispatch import Handler
from ..nodes.pipeline import RecursiveNode

# What a request cost, by what the node did with it (keys of ServiceTimes.seconds()).
CACHED, QUERY, WRITE, BUSY = "auth_cached", "auth_query", "auth_write", "busy"
WRITE_OPS = frozenset({OpCode.CREATE_HANDLE, OpCode.DELETE_HANDLE, OpCode.ADD_VALUE, OpCode.REMOVE_VALUE,
                       OpCode.MODIFY_VALUE, OpCode.REGISTRY_SYNC})
# Enum members read on hot paths, as module constants: a member read off its class costs ~75 ns on 3.11.
_RESOLUTION, _BATCH_CREATE = OpCode.RESOLUTION, OpCode.BATCH_CREATE


class VirtualLag:
    """Stands in for ``net.admission.LoopLag``: the engine sets ``lag_s`` before asking ``admit``."""

    __slots__ = ("lag_s",)

    def __init__(self) -> None:
        self.lag_s = 0.0


class Server:
    """A node's CPU in virtual time (see the module docstring). Totals grow with every request; the engine
    takes a snapshot of them at every hour boundary (``snapshot``), which gives the per-hour figures."""

    __slots__ = ("name", "busy_until", "finishes", "speed", "down", "killed_at", "max_queue", "requests",
                 "shed", "busy_s", "sojourn_s", "peak_queue", "hour_peak", "hourly", "lag", "admission",
                 "shed_after_s")

    def __init__(self, name: str, *, shed_after_s: float, max_queue: int) -> None:
        self.name = name
        self.busy_until = 0.0
        self.finishes: deque[float] = deque()  # of the requests admitted and not finished, in order
        self.speed = 1.0  # service time multiplier (a slowed node: > 1)
        self.down = False
        self.killed_at = -1.0
        self.max_queue = max_queue
        self.requests = self.shed = self.peak_queue = self.hour_peak = 0
        self.busy_s = self.sojourn_s = 0.0
        self.hourly: list[tuple[int, int, float, float, int]] = []  # requests, shed, busy, sojourn, peak
        self.lag = VirtualLag()
        self.shed_after_s = shed_after_s if shed_after_s > 0 else float("inf")
        self.admission = Admission(lag_threshold_s=self.shed_after_s)
        self.admission._lag = self.lag  # type: ignore[assignment]  # the virtual lag, not an event loop's

    def admit(self, t: float, start: float) -> bool:
        """Whether a request arriving at ``t`` that would start at ``start`` is served (else shed, code 3)."""
        wait = start - t
        f = self.finishes
        while f and f[0] <= t:
            f.popleft()
        if len(f) >= self.max_queue:
            return False
        if wait <= self.shed_after_s:
            return True
        self.lag.lag_s = wait
        return self.admission.admit(None, True)

    def occupy(self, t: float, start: float, cost_s: float) -> float:
        """Book ``cost_s`` (times the slow-down) from ``start`` for a request that arrived at ``t``."""
        finish = start + cost_s * self.speed
        f = self.finishes
        if self.busy_until <= t:
            f.clear()  # idle when it arrived: everything before has finished
        else:
            while f and f[0] <= t:
                f.popleft()
        self.busy_until = finish
        f.append(finish)
        self.requests += 1
        self.busy_s += finish - start
        self.sojourn_s += finish - t
        n = len(f)
        if n > self.hour_peak:
            self.hour_peak = n
            if n > self.peak_queue:
                self.peak_queue = n
        return finish

    def snapshot(self) -> None:
        """The totals at an hour boundary (the per-hour figures are the differences)."""
        self.hourly.append((self.requests, self.shed, self.busy_s, self.sojourn_s, self.hour_peak))
        self.hour_peak = len(self.finishes)

    def reset(self) -> None:
        """Forget what was counted so far (the end of a warm-up)."""
        self.requests = self.shed = self.peak_queue = self.hour_peak = 0
        self.busy_s = self.sojourn_s = 0.0
        self.hourly.clear()

    def kill(self, t: float) -> None:
        self.down, self.killed_at = True, t
        self.finishes.clear()
        self.busy_until = t

    def recover(self, t: float) -> None:
        self.down = False
        self.busy_until = t


class SimAuthoritative:
    """An authoritative node (top-level, secondary, enterprise) as the stream shell would host it."""

    def __init__(self, name: str, role: str, node: AuthoritativeNode, clock: Callable[[], float], *,
                 extra: dict[int, Handler] | None, shed_after_s: float, max_queue: int) -> None:
        self.name, self.role, self.node = name, role, node
        self.service = AuthoritativeService(node, extra=extra, clock=clock)
        self.encoded = EncodedAnswers()
        self.conns: dict[str, ServerConnection] = {}
        self.server = Server(name, shed_after_s=shed_after_s, max_queue=max_queue)
        self.last_items = 0  # identifiers in the batch ``serve`` last answered (a batch's cost grows with them)

    def connection(self, peer: str) -> ServerConnection:
        conn = self.conns.get(peer)
        if conn is None:
            conn = self.conns[peer] = ServerConnection(self.encoded)
        return conn

    def serve(self, peer: str, frame: bytes) -> tuple[bytes, str]:
        """The answer bytes to the requests in ``frame`` from ``peer``, and what they cost (the dearest)."""
        conn = self.connection(peer)
        conn.receive_data(frame)
        out: list[bytes] = []
        op = CACHED
        service = self.service
        self.last_items = 0
        stamp = int(service.clock())  # what the node stamps a batch's values with (virtual time)
        while (event := conn.next_event(stamp)) is not None:
            if type(event) is tuple:  # a PlainResolution: the fast path first
                rid, handle = event
                hit = service.cached(handle)
                if hit is not None:
                    out.append(conn.answer_cached(rid, handle, hit))
                    continue
                event = Request(rid, _RESOLUTION, handle)
            elif isinstance(event, Request):
                if event.is_plain_resolution and 0 <= event.request_id < 2**32:
                    hit = service.cached(event.handle)
                    if hit is not None:
                        out.append(conn.answer_cached(event.request_id, event.handle, hit))
                        continue
            elif isinstance(event, Reply | Close):
                out.append(event.data)
                continue
            assert isinstance(event, Request)
            if event.opcode == _BATCH_CREATE:
                op, self.last_items = WRITE, self.last_items + len(event.items)
            elif op != WRITE:
                op = WRITE if event.opcode in WRITE_OPS else QUERY
            out.append(conn.send(service.handle(event)))
        return (out[0] if len(out) == 1 else b"".join(out)), op

    def refuse(self, peer: str, frame: bytes) -> bytes:
        """Load shedding: cheap SERVER_TOO_BUSY answers to every request in ``frame``, none decoded."""
        conn = self.connection(peer)
        conn.receive_data(frame)
        out = []
        while (busy := conn.busy_answer_for_next()) is not None:
            out.append(busy)
        while (event := conn.next_event()) is not None:  # what could not be refused unread
            if isinstance(event, Request):
                out.append(conn.refuse(event.request_id, event.opcode, "server too busy"))
            elif isinstance(event, Reply | Close):
                out.append(event.data)
            else:
                out.append(conn.refuse(event[0], OpCode.RESOLUTION, "server too busy"))
        return b"".join(out)

    def restart(self) -> None:
        """A process that starts again: the store is kept (durable), caches and connections are not."""
        self.node.answers.clear()
        self.encoded.entries.clear()
        self.conns.clear()


class SimRecursive:
    """A recursive node: its fast path on the virtual clock, one client connection per upstream."""

    def __init__(self, name: str, node: RecursiveNode, clock: Callable[[], float], *, shed_after_s: float,
                 max_queue: int, hop_timeout_s: float) -> None:
        self.name, self.role, self.node = name, "recursive", node
        self.lookup = node.fast_path(clock)
        self.memo = ResponseMemo()
        self.conns: dict[str, ClientConnection[object]] = {}
        self.server = Server(name, shed_after_s=shed_after_s, max_queue=max_queue)
        self.hop_timeout_s = hop_timeout_s
        self.active: dict[int, list[object]] = {}  # walks in progress (they die with the node)
        self.timeout_handler: Callable[[float, object], None] | None = None  # set by the engine

    def connection(self, address: str) -> ClientConnection[object]:
        conn = self.conns.get(address)
        if conn is None:
            conn = self.conns[address] = ClientConnection(memo=self.memo)
        return conn

    def restart(self) -> None:
        """A recursive node that starts again has empty caches and new connections."""
        r = self.node.resolver
        r.answers.clear()
        r.referrals.clear()
        r.root_down_until.clear()
        self.conns.clear()
        self.memo = ResponseMemo()
