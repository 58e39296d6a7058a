"""The sending side of replication (see ``nodes.replication`` for both consistency models): the national
registry among the top-level nodes, and a secondary node's records to its mirrors.

Every change of a record in scope is queued per peer, coalesced by record (only the newest version of each
record waits), and pushed by one task per peer, up to ``WINDOW`` at a time; failures are retried with
backoff until the peer answers. Memory is bounded by the number of distinct records, not of writes.

Lag, per peer, is measured continuously: ``lag_s(peer)`` is the age of the oldest change the peer has
not applied yet (0 when it has every change), kept in the order changes arrive so that reading it costs
nothing. A change coalesced with a newer one keeps the time of the first, so the lag is never understated.
Records offered at start (anti-entropy) are not changes and do not count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from itertools import islice

from ..core.codes import OpCode, ResponseCode
from ..core.handles import PREFIX_RECORDS_KEY, fold, is_prefix_record, prefix_handle
from ..core.messages import Request
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.recursive import Upstream
from ..nodes.replication import FLAG_SYNC_DELETE, SyncState, record_version
from .client import ClientPool

log = logging.getLogger("idresolve.replication")
RETRY_MAX_S = 5.0
WINDOW = 64  # pushes in flight to one peer


class Replicator:
    """Pushes changes of ``node`` to ``peers``. ``mirrors`` False: the registry (prefix records only, durable
    versions); True: every record but the node's own prefix records, to read-only mirrors."""

    def __init__(self, node: AuthoritativeNode, state: SyncState, peers: list[Upstream], pool: ClientPool,
                 auth: tuple[str, bytes], *, timeout_s: float = 5.0, mirrors: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.node, self.state, self.peers, self.pool, self.auth = node, state, peers, pool, auth
        self.timeout_s = timeout_s
        self.mirrors = mirrors
        self.clock = clock
        self.pending: dict[str, dict[str, int]] = {p.address: {} for p in peers}  # peer -> key -> version
        self.unapplied: dict[str, dict[str, float]] = {p.address: {} for p in peers}  # peer -> key -> since
        self._wake: dict[str, asyncio.Event] = {p.address: asyncio.Event() for p in peers}
        self._tasks: list[asyncio.Task[None]] = []
        self._versions: dict[str, int] = {}  # mirrors: the last version given to each key (in memory)
        self.pushed = 0
        # A node's own prefix records name its own site: never pushed.
        self.own_keys = {fold(prefix_handle(p)) for p in node.configured}
        self.own_key = next((fold(prefix_handle(p)) for p in sorted(node.configured)), "")
        node.on_change(self._changed)

    def _in_scope(self, key: str) -> bool:
        if key in self.own_keys:
            return False
        return self.mirrors or is_prefix_record(key)

    def _offers(self) -> dict[str, int]:
        """Every record in scope held here, prefix records first, and every tombstone."""
        store = self.node.store
        handles = list(store.list_handles(PREFIX_RECORDS_KEY))
        if self.mirrors:
            for prefix in self.node.prefixes:
                handles.extend(store.list_handles(fold(prefix)))
        offers: dict[str, int] = {}
        for handle in handles:
            key = fold(handle)
            if self._in_scope(key):
                record = store.get(key)
                if record is not None:
                    offers[key] = record_version(record)
        for key, version, _deleted in self.state.all_versions(self.node):
            if self._in_scope(key):
                offers[key] = version  # the exact version, or a tombstone's
        return offers

    def start(self) -> None:
        """Start pushing; first offer every record held here to every peer (anti-entropy), so a write
        acknowledged just before a crash reaches the peers when this node is back. Registry peers keep only
        versions newer than their own; a mirror takes what its primary sends."""
        offers = self._offers()
        for key, version in offers.items():
            for peer in self.peers:
                self.pending[peer.address].setdefault(key, version)
        for peer in self.peers:
            if self.pending[peer.address]:
                self._wake[peer.address].set()
        for peer in self.peers:
            self._tasks.append(asyncio.create_task(self._run(peer), name=f"replicate-{peer.name}"))

    def lag_s(self, peer: Upstream, now: float | None = None) -> float:
        """Age of the oldest change ``peer`` has not applied yet; 0 when it has them all."""
        waiting = self.unapplied[peer.address]
        if not waiting:
            return 0.0
        since = next(iter(waiting.values()))
        return max(0.0, (self.clock() if now is None else now) - since)

    def metrics(self) -> dict[str, tuple[str, str, object]]:
        """What this replicator counts, for the node's ``/metrics`` (read when scraped)."""
        now = self.clock()
        return {"idresolve_replication_pushed": ("counter", "Records pushed to peers or mirrors", self.pushed),
                "idresolve_replication_pending": ("gauge", "Records waiting for a peer or mirror",
                                                  sum(len(q) for q in self.pending.values())),
                "idresolve_replication_peer_pending": (
                    "gauge", "Records waiting for each peer or mirror",
                    {(("peer", p.name),): float(len(self.pending[p.address])) for p in self.peers}),
                "idresolve_replication_lag_seconds": (
                    "gauge", "Age of the oldest change each peer or mirror has not applied yet (0: caught up)",
                    {(("peer", p.name),): self.lag_s(p, now) for p in self.peers}),
                **self.pool.metrics()}

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _changed(self, key: str) -> None:
        if self.state.applying or not self._in_scope(key):
            return
        now = self.clock()
        deleted = self.node.store.get(key) is None
        if self.mirrors:
            # One primary: versions need only grow per key. Deletions are kept durably (tombstones) so that
            # a mirror which missed one learns it at the next start; other versions live in memory.
            version = max(int(now * 1000), self._versions.get(key, 0) + 1)
            self._versions[key] = version
            if deleted:
                self.state.save(self.node, key, version, True)
        else:
            version = max(int(now * 1000), self.state.version_of(self.node, key) + 1)
            self.state.save(self.node, key, version, deleted)
        for peer in self.peers:
            self.pending[peer.address][key] = version
            self.unapplied[peer.address].setdefault(key, now)
            self._wake[peer.address].set()

    def _request(self, key: str, version: int) -> Request:
        record = self.node.store.get(key)
        if record is None:
            return Request(0, OpCode.REGISTRY_SYNC, key, FLAG_SYNC_DELETE, auth=self.auth, version=version)
        return Request(0, OpCode.REGISTRY_SYNC, record.handle, values=record.values, auth=self.auth, version=version)

    async def _push(self, peer: Upstream, key: str, version: int) -> bool:
        try:
            resp = await self.pool.request(peer.host, peer.port, self._request(key, version), self.timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            return False
        if resp.code == ResponseCode.SERVER_TOO_BUSY:
            return False  # the peer shed it before doing anything: not delivered, send it again
        if resp.code != ResponseCode.SUCCESS:
            log.warning("peer %s refused sync of %s: code %s %s", peer.name, key, resp.code, resp.message)
        return True

    async def _run(self, peer: Upstream) -> None:
        """Push pending records to one peer, up to ``WINDOW`` at a time (pipelined on one connection)."""
        queue, wake = self.pending[peer.address], self._wake[peer.address]
        unapplied = self.unapplied[peer.address]
        backoff = 0.1
        while True:
            await wake.wait()
            wake.clear()
            while queue:
                batch = list(islice(queue.items(), WINDOW))  # the oldest first, without copying the queue
                results = await asyncio.gather(*(self._push(peer, k, v) for k, v in batch))
                for (key, version), delivered in zip(batch, results, strict=True):
                    if delivered:
                        self.pushed += 1
                        if queue.get(key) == version:
                            del queue[key]
                            unapplied.pop(key, None)
                if not all(results):
                    await asyncio.sleep(backoff)
                    backoff = min(RETRY_MAX_S, backoff * 2)
                else:
                    backoff = 0.1
