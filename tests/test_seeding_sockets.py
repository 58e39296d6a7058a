"""Seeding against a real node over real sockets: a connection the node closed for idleness costs nothing.

The 10M seeding run found it: with batches going round robin over the enterprises, a connection to one
node waited longer than the node's idle timeout, the node closed it, and the next batch on it failed.
Here a node on loopback with an idle timeout of a fraction of a second closes the seeding client's
connection between two batches; the second batch is sent again on a new connection and every identifier
is registered once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from idresolve.cluster import seeding
from idresolve.core.handles import fold
from idresolve.core.values import string_value
from idresolve.net.blocking import BlockingClient
from idresolve.net.server import Limits
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import prefix_record
from idresolve.runtime.hosted import HostedAuthoritative, HostSettings
from idresolve.store.memory import MemoryStore

LOOPBACK = "127.0.0.1"
PREFIX = "88.100"
SECRET = "seed-sockets-secret"
IDLE_S = 0.3  # the node closes connections idle this long


@dataclass
class LiveNode:
    node: AuthoritativeNode
    port: int


@pytest.fixture
def live_node() -> Iterator[LiveNode]:
    """An authoritative node for 88.100 serving the binary protocol on loopback, in a thread of its own
    (the seeding client blocks), with a short idle timeout."""
    node = AuthoritativeNode(MemoryStore(), [PREFIX], name="seed-sockets")
    node.bootstrap_record(prefix_record(PREFIX, SECRET))
    hosted = HostedAuthoritative(node, HostSettings(limits=Limits(idle_timeout_s=IDLE_S)))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    port: list[int] = []

    async def serve() -> None:
        bound = await hosted.start(http=None, tcp=f"{LOOPBACK}:0")
        assert bound.tcp is not None
        port.append(bound.tcp[1])
        ready.set()
        await stop.wait()
        await hosted.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the node did not start"
    try:
        yield LiveNode(node, port[0])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _items(start: int, stop: int) -> list[seeding.Item]:
    return [(f"{PREFIX}/S{k:06d}", (string_value(1, "URL", f"https://example.com/{k}"),))
            for k in range(start, stop)]


def _connection_closed_by_peer(c: BlockingClient, within_s: float) -> bool:
    """Wait until the node has closed ``c``'s socket (a zero-byte peek means the peer closed it)."""
    import socket as socketmod

    sock = c._sock  # the test looks at the socket only to know the node's idle close happened
    assert sock is not None
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sock.settimeout(0.05)
        try:
            if sock.recv(1, socketmod.MSG_PEEK) == b"":
                return True
        except (TimeoutError, BlockingIOError):
            pass
        except OSError:
            return True
    return False


def test_a_batch_after_the_node_closed_an_idle_connection_is_sent_again(live_node: LiveNode) -> None:
    identity = f"300:0.NA/{PREFIX}"
    with BlockingClient(LOOPBACK, live_node.port, timeout_s=10.0, auth=(identity, SECRET.encode())) as c:
        assert seeding._seed_batch(c, _items(0, 50)) == (50, 0)
        assert _connection_closed_by_peer(c, within_s=10 * IDLE_S + 2), "the node kept the idle connection"
        # The next batch goes out on a connection the node has closed: sent again on a new one.
        assert seeding._seed_batch(c, _items(50, 120)) == (70, 0)
        # And the same batch once more (a rerun): everything is there already, counted, not sent as new.
        assert seeding._seed_batch(c, _items(50, 120)) == (70, 0)
    store = live_node.node.store
    for k in (0, 49, 50, 119):
        assert store.get(fold(f"{PREFIX}/S{k:06d}")) is not None
    assert store.get(fold(f"{PREFIX}/S{120:06d}")) is None
