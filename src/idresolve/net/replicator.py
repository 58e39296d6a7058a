"""The sending side of registry replication (see ``nodes.replication`` for the consistency model).

Every change of a prefix record at this top-level node is queued per peer, coalesced by record (only the
newest version of each record waits), and pushed by one task per peer; failures are retried with backoff
until the peer answers. Memory is bounded by the number of distinct records, not the number of writes.
"""

from __future__ import annotations

import asyncio
import logging
import time

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
    def __init__(self, node: AuthoritativeNode, state: SyncState, peers: list[Upstream], pool: ClientPool,
                 auth: tuple[str, bytes], *, timeout_s: float = 5.0) -> None:
        self.node, self.state, self.peers, self.pool, self.auth = node, state, peers, pool, auth
        self.timeout_s = timeout_s
        self.pending: dict[str, dict[str, int]] = {p.address: {} for p in peers}  # peer -> key -> version
        self._wake: dict[str, asyncio.Event] = {p.address: asyncio.Event() for p in peers}
        self._tasks: list[asyncio.Task[None]] = []
        self.pushed = 0
        # Each top-level node's own copy of the country prefix record names its own site: never pushed.
        self.own_key = next((fold(prefix_handle(p)) for p in sorted(node.configured)), "")
        node.on_change(self._changed)

    def start(self) -> None:
        """Start pushing; first offer every registry record held here to every peer (anti-entropy), so a
        write acknowledged just before a crash reaches the peers when this node is back. Peers keep only
        versions newer than their own, so the offer costs one small exchange per record."""
        offers: dict[str, int] = {}
        for handle in self.node.store.list_handles(PREFIX_RECORDS_KEY):
            key = fold(handle)
            record = self.node.store.get(key)
            if record is not None and key != self.own_key:
                offers[key] = record_version(record)
        for key, version, _deleted in self.state.all_versions(self.node):
            if key != self.own_key:
                offers[key] = version  # the exact version, or a tombstone's
        for key, version in offers.items():
            for peer in self.peers:
                self.pending[peer.address].setdefault(key, version)
        for peer in self.peers:
            if self.pending[peer.address]:
                self._wake[peer.address].set()
        for peer in self.peers:
            self._tasks.append(asyncio.create_task(self._run(peer), name=f"replicate-{peer.name}"))

    def metrics(self) -> dict[str, tuple[str, str, float]]:
        """What this replicator counts, for the node's ``/metrics`` (read when scraped)."""
        return {"idresolve_replication_pushed": ("counter", "Registry records pushed to peers", self.pushed),
                "idresolve_replication_pending": ("gauge", "Registry records waiting for a peer",
                                                  sum(len(q) for q in self.pending.values())),
                **self.pool.metrics()}

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _changed(self, key: str) -> None:
        if self.state.applying or not is_prefix_record(key) or key == self.own_key:
            return
        version = max(int(time.time() * 1000), self.state.version_of(self.node, key) + 1)
        self.state.save(self.node, key, version, self.node.store.get(key) is None)
        for peer in self.peers:
            self.pending[peer.address][key] = version
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
        backoff = 0.1
        while True:
            await wake.wait()
            wake.clear()
            while queue:
                batch = list(queue.items())[:WINDOW]
                results = await asyncio.gather(*(self._push(peer, k, v) for k, v in batch))
                for (key, version), delivered in zip(batch, results, strict=True):
                    if delivered:
                        self.pushed += 1
                        if queue.get(key) == version:
                            del queue[key]
                if not all(results):
                    await asyncio.sleep(backoff)
                    backoff = min(RETRY_MAX_S, backoff * 2)
                else:
                    backoff = 0.1
