"""Connections spread over a node's worker processes by how many each holds, not by the kernel's hash.

The workers of one node share its ports with SO_REUSEPORT, and the kernel gives each new connection to a
worker by a hash of its addresses. Over many short connections that evens out; over a few long ones it
does not: four connections split 2-2, 3-1 or 4-0 over two workers, and a 4-0 split serves at one core's
rate. So each worker passes what it accepts through a ``ConnectionBalancer`` first (least connections):

- ``SharedCounts``: one 8-byte slot per worker in a small file mapped by all of them (in the workers'
  socket directory), each the number of connections that worker holds. A worker writes its own slot when
  it takes a connection and every ``REFRESH_S`` (so closed connections leave it); a worker handing one to
  another adds it to the other's slot at once, so a burst of connections is not all sent the same way.
  A worker counts what its listeners serve and what it is adopting, having first taken in what waits on
  its handoff socket. Decisions and writes are made under an ``flock`` of the counts file, so two workers
  deciding at once see each other's newest connection. A slot stays a hint where no lock can help (a
  connection that closed since its worker last wrote), and the owner's next refresh sets it right.
- A new connection, before any byte of it is read, is kept when this worker holds no more than the
  least-loaded other (``hand_to``). Otherwise its descriptor goes to that worker over a Unix datagram
  socket (``SCM_RIGHTS``, ``<index>.handoff`` in the socket directory) with the name of the listener
  that accepted it, and this worker closes its copy. The receiver serves it on the same listener's
  protocol (``loop.connect_accepted_socket``), exactly as if it had accepted it; a connection is handed
  at most once.
- When the handoff cannot be sent (the other worker is being restarted, or its queue is full), the
  connection is served here and that worker's slot is marked unavailable until it writes it again.

What a client sees does not change: the same bytes on the same connection, answered by one process.
TLS connections are not handed (their state lives in the process that did the handshake); UDP is not
connection-based and keeps the kernel's spread.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..net.server import Gate, ProtocolFactory

log = logging.getLogger("idresolve.balance")
REFRESH_S = 0.1
UNAVAILABLE = 1 << 62  # a slot whose worker did not take a handoff: tried again once it writes its slot
LOCK_TRIES = 100  # non-blocking attempts at the counts' lock (each a system call) before going without it
MAX_QUEUED = 256  # handoffs a worker keeps while its adoptions are in progress; more are served where they land


def hand_to(me: int, counts: Sequence[int]) -> int | None:
    """The worker a new connection accepted by worker ``me`` goes to (None: ``me`` keeps it), given the
    connections each worker holds: the least-loaded other, when it holds fewer than ``me``. Ties stay."""
    best, least = None, counts[me]
    for j, c in enumerate(counts):
        if j != me and c < least:
            best, least = j, c
    return best


class SharedCounts:
    """``count`` 8-byte counters in a file mapped into every worker of one node."""

    def __init__(self, path: Path, count: int) -> None:
        self.path, self.count = path, count
        size = 8 * count
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd  # kept open for the lock
        self.slots = memoryview(self._map).cast("Q")  # aligned 8-byte loads and stores: never torn

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the node's lock on the counts (``flock``, a few microseconds at a time): a decision and
        the write it makes are then seen whole by the other workers' decisions. Never waits: a worker
        stopped while holding it (a debugger, SIGSTOP) must not stall the others' event loops, so after
        ``LOCK_TRIES`` refusals the body runs unlocked, on the counts as hints."""
        for _ in range(LOCK_TRIES):
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            return
        yield

    def close(self) -> None:
        self.slots.release()
        self._map.close()
        os.close(self._fd)


class ConnectionBalancer:
    """Worker ``index`` of ``count``'s side of the least-connections spread (see the module doc).
    ``gate(tag)`` wraps the protocol factory of each stream listener; ``start`` and ``stop`` bracket the
    listeners' lives."""

    def __init__(self, directory: Path, index: int, count: int) -> None:
        self.directory, self.index, self.count = directory, index, count
        self.counts: SharedCounts | None = None
        self.listeners: dict[bytes, tuple[ProtocolFactory, Callable[[], int]]] = {}
        self.handed = 0  # connections this worker passed to another
        self.adopted = 0  # connections another worker passed to this one
        self.kept_on_failure = 0  # handoffs that could not be sent: served here instead
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self._open = False

    def path(self, index: int) -> Path:
        return self.directory / f"{index}.handoff"

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the shared counts and this worker's handoff socket (a predecessor's is replaced)."""
        self.counts = SharedCounts(self.directory / "connections", self.count)
        self.counts.slots[self.index] = 0  # a restarted worker's connections died with its predecessor
        path = self.path(self.index)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(str(path))
        self._sock = sock
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._receive)
        self._open = True
        self._timer = loop.call_later(REFRESH_S, self._refresh)

    async def stop(self) -> None:
        """Stop handing and adopting. Handoffs queued for this worker and not adopted yet are closed with
        its socket (their clients see the connection close unanswered, as when a listener closes)."""
        self._open = False
        if self._timer is not None:
            self._timer.cancel()
        if self._sock is not None:
            with contextlib.suppress(ValueError, RuntimeError):  # the loop is closing
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._drop_queued()
            self._sock.close()
            self._sock = None
            self.path(self.index).unlink(missing_ok=True)
        for task in list(self._adopting):
            task.cancel()
        if self.counts is not None:
            self.counts.slots[self.index] = UNAVAILABLE
            self.counts.close()
            self.counts = None

    def metrics(self) -> dict[str, tuple[str, str, int]]:
        return {
            "idresolve_connections_handed_total": (
                "counter", "Connections this worker passed to a less loaded worker of the node", self.handed),
            "idresolve_connections_adopted_total": (
                "counter", "Connections another worker of the node passed to this one", self.adopted),
            "idresolve_connections_handoff_failed_total": (
                "counter", "Handoffs that could not be sent, served where they were accepted", self.kept_on_failure),
        }

    # -- the listeners' side --------------------------------------------------------------------------
    def gate(self, tag: str) -> Gate:
        """The gate of the listener named ``tag``: ``gate(factory, live)`` answers the factory to listen
        with; ``live()`` counts the listener's open connections."""
        key = tag.encode()

        def wrap(factory: ProtocolFactory, live: Callable[[], int]) -> ProtocolFactory:
            self.listeners[key] = (factory, live)
            return lambda: _Gate(self, key, factory)
        return wrap

    def held(self) -> int:
        """The connections this worker holds: those its listeners serve and those it is adopting."""
        return sum(live() for _, live in self.listeners.values()) + len(self._adopting)

    def _refresh(self) -> None:
        if not self._open or self.counts is None:
            return
        with self.counts.locked():
            self._receive()
            self.counts.slots[self.index] = self.held()
        self._timer = asyncio.get_running_loop().call_later(REFRESH_S, self._refresh)

    def place(self, key: bytes, transport: asyncio.BaseTransport) -> bool:
        """True: serve ``transport``'s connection here. False: it was handed to another worker (the caller
        closes its copy)."""
        counts = self.counts
        if not self._open or counts is None or self.count < 2:
            return True
        with counts.locked():  # two workers deciding at once would each count the other without its newest
            return self._place(key, transport, counts.slots)

    def _place(self, key: bytes, transport: asyncio.BaseTransport, slots: memoryview) -> bool:
        # Take in the connections other workers have handed here and not yet been read: in a burst they
        # wait on the handoff socket, and a count without them would keep too many here.
        self._receive()
        mine = self.held()
        loads = [slots[j] if j != self.index else mine for j in range(self.count)]
        target = hand_to(self.index, loads)
        if target is None:
            slots[self.index] = mine + 1
            return True
        sock = transport.get_extra_info("socket")
        if sock is None:
            return True
        try:
            assert self._sock is not None
            # sendmsg, not socket.send_fds: that one drops its address argument (unconnected datagrams)
            self._sock.sendmsg([key], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))],
                               0, str(self.path(target)))
        except OSError as exc:  # restarting (no socket), or its queue is full
            log.debug("handing a connection to worker %d failed: %s", target, exc)
            slots[target] = UNAVAILABLE
            slots[self.index] = mine + 1
            self.kept_on_failure += 1
            return True
        slots[target] = loads[target] + 1
        self.handed += 1
        return False

    # -- the adopting side ----------------------------------------------------------------------------
    def _receive(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("receiving a handed connection failed: %s", exc)
                return
            for fd in fds[1:]:  # one descriptor per message: anything more is not ours to keep
                os.close(fd)
            if not fds:
                continue
            conn = socket.socket(fileno=fds[0])
            entry = self.listeners.get(msg)
            if entry is None or not self._open or len(self._adopting) >= MAX_QUEUED:
                conn.close()
                continue
            task = asyncio.get_running_loop().create_task(self._adopt(entry[0], conn))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(self, factory: ProtocolFactory, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            await asyncio.get_running_loop().connect_accepted_socket(factory, conn)
        except (OSError, asyncio.CancelledError) as exc:
            conn.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.adopted += 1
        self._adopting.discard(asyncio.current_task())  # served now: counted by its listener, not twice
        if self.counts is not None and self._open:
            with self.counts.locked():
                self.counts.slots[self.index] = self.held()

    def _drop_queued(self) -> None:
        """Close the descriptors still queued on this worker's handoff socket."""
        sock = self._sock
        while sock is not None:
            try:
                _msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 4)
            except OSError:
                return
            for fd in fds:
                os.close(fd)


class _Gate(asyncio.Protocol):
    """The first protocol of a new connection: it asks the balancer where the connection goes and, when
    it stays, puts the listener's own protocol in its place before any byte is read."""

    __slots__ = ("balancer", "factory", "key")

    def __init__(self, balancer: ConnectionBalancer, key: bytes, factory: ProtocolFactory) -> None:
        self.balancer, self.key, self.factory = balancer, key, factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.balancer.place(self.key, transport):
            protocol = self.factory()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
        else:
            transport.abort()  # this process's copy only: the connection lives on in the other worker

    def connection_lost(self, exc: Exception | None) -> None:
        pass
