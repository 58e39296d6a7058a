"""Writes in virtual time: record changes, registrations, registration bursts, and registry replication.

Writers are the enterprises' own systems: they sit at the location of the node that holds their prefix
and send, with the prefix admin's credentials, real binary requests to it (``ADD_VALUE`` of a DESC for a
change, ``CREATE_HANDLE`` for a registration, ``BATCH_CREATE`` for a burst), which go through the same
queue, shedding and ``AuthoritativeService`` as resolutions. A registration's record has the shape of a
synthetic one (URL and template fields); the node adds its HS_ADMIN, as it does for any creation.

``Replication`` is the top-level nodes' registry replication: every change of a prefix record at a top-level
node (a what-if connects or disconnects a secondary) is pushed to every other top-level node as a
REGISTRY_SYNC request over the simulated network, retried with backoff until the peer takes it (what
``net.replicator`` does on asyncio, with the version taken from the virtual clock).
"""

from __future__ import annotations

import random
from typing import Any

from ..core.codes import OpCode, ResponseCode
from ..core.handles import fold, is_prefix_record, prefix_handle
from ..core.messages import FLAG_OVERWRITE, Request
from ..core.values import HS_ADMIN, HandleValue, string_value
from ..core.wire_connection import ClientConnection
from .build import sync_request
from .space import IdentifierSpace
from .stats import add

RETRY_MAX_S = 5.0
WRITE_TIMEOUT_S = 10.0


class Client:
    """One client of authoritative nodes: where it sits (``name`` is in the links' locations), its
    connections, and what the engine calls when an answer or a timeout comes."""

    def __init__(self, name: str, on_answer: Any, on_timeout: Any) -> None:
        self.name = name
        self.on_answer = on_answer
        self.timeout_handler = on_timeout
        self.conns: dict[str, ClientConnection[Any]] = {}

    def connection(self, target: str) -> ClientConnection[Any]:
        conn = self.conns.get(target)
        if conn is None:
            conn = self.conns[target] = ClientConnection()
        return conn


class Writes:
    def __init__(self, engine: Any, space: IdentifierSpace, rng: random.Random) -> None:
        self.e, self.c, self.space, self.rng = engine, engine.c, space, rng
        self.clients: dict[str, Client] = {}
        self.seq = 0

    def _client(self, holder: str) -> Client:
        client = self.clients.get(holder)
        if client is None:
            name = f"client-of-{holder}"
            self.c.location[name] = self.c.location[holder]
            client = self.clients[holder] = Client(name, self._answer, self._timeout)
        return client

    def send(self, t: float, prefix: str, request: Request) -> None:
        holder = self.c.plan.holder_of(prefix).name
        target = self.c.auth[holder]
        client = self._client(holder)
        conn = client.connection(holder)
        request = Request(request.request_id, request.opcode, request.handle, request.flags, values=request.values,
                          auth=self.c.auth_of(prefix), items=request.items)
        rid, frame = conn.send(request, t)
        deadline = t + WRITE_TIMEOUT_S
        out = self.e.links.one_way(client.name, holder)
        if out is None:
            self.e.at(deadline, self._timeout, (client, conn, rid, t))
            return
        self.e.at(t + out, self.e._arrive, (client, conn, rid, frame, t, deadline, target, self._answer))

    def change(self, t: float, handle: str) -> None:
        """A change to an existing record: its description (index 2) replaced."""
        prefix = handle.split("/", 1)[0]
        desc = string_value(2, "DESC", f"changed at {int(t)}")
        self.send(t, prefix, Request(0, OpCode.ADD_VALUE, handle, FLAG_OVERWRITE, values=(desc,)))

    def _new(self, p: Any, tag: str) -> tuple[str, tuple[HandleValue, ...]]:
        self.seq += 1
        suffix = f"{tag}{self.seq:010d}"
        model = p.record(self.seq)
        values = tuple(v for v in model.values if v.type != HS_ADMIN and v.index != 1)
        url = string_value(1, "URL", f"https://id.example.cn/{p.prefix}/{suffix}")
        return f"{p.prefix}/{suffix}", (url, *values)

    def register(self, t: float) -> None:
        """A new identifier under a prefix drawn by size."""
        p, _ = self.space.locate(self.rng.randrange(self.space.total))
        handle, values = self._new(p, "R")
        self.send(t, p.prefix, Request(0, OpCode.CREATE_HANDLE, handle, values=values))

    def burst(self, t: float, arg: tuple[str, int]) -> None:
        """One batch of a registration burst: ``size`` new identifiers under ``prefix``."""
        prefix, size = arg
        p = self.space.of(fold(prefix))
        if p is None:
            return
        items = tuple(self._new(p, "B") for _ in range(size))
        self.send(t, prefix, Request(0, OpCode.BATCH_CREATE, "", items=items))

    def _answer(self, t: float, arg: tuple[Any, ...]) -> None:
        client, conn, data, t0, _target, _arrived = arg
        for _, resp in conn.receive_data(data):
            self._count(t0, t, resp.code == ResponseCode.SUCCESS)

    def _timeout(self, t: float, arg: tuple[Any, ...]) -> None:
        client, conn, rid, t0 = arg
        conn.forget(rid)
        self._count(t0, t, False)

    def _count(self, t0: float, t: float, ok: bool) -> None:
        hour = self.e.stats.hour(t0)
        hour.writes += 1
        if not ok:
            hour.writes_failed += 1
        add(self.e.stats.write_lat, int((t - t0) * 1e6))


class Replication:
    """Registry replication among the top-level nodes, in virtual time (see the module docstring)."""

    def __init__(self, engine: Any) -> None:
        self.e, self.c = engine, engine.c
        self.tops = [n.name for n in self.c.plan.by_role("top")]
        self.clients = {name: Client(name, self._answer, self._timeout) for name in self.tops}
        self.pending: dict[tuple[str, str, str], int] = {}  # (source, peer, key) -> version, coalesced
        self.pushed = 0
        own = fold(prefix_handle(self.c.topology.country_prefix))
        for name in self.tops:
            node = self.c.auth[name].node
            node.on_change(lambda key, source=name: self._changed(source, key, own))

    def _changed(self, source: str, key: str, own: str) -> None:
        state = self.c.sync[source]
        if state.applying or not is_prefix_record(key) or key == own:
            return
        node = self.c.auth[source].node
        version = max(int(self.c.clock.now * 1000), state.version_of(node, key) + 1)
        state.save(node, key, version, node.store.get(key) is None)
        for peer in self.tops:
            if peer != source:
                self.pending[(source, peer, key)] = version
                self.e.at(self.c.clock.now, self._push, (source, peer, key, version, 0.1))

    def _push(self, t: float, arg: tuple[str, str, str, int, float]) -> None:
        source, peer, key, version, backoff = arg
        if self.pending.get((source, peer, key)) != version:
            return  # a newer version replaced it, or it was delivered
        client, target = self.clients[source], self.c.auth[peer]
        if self.c.auth[source].server.down:
            self.e.at(t + backoff, self._push, (source, peer, key, version, min(RETRY_MAX_S, backoff * 2)))
            return
        conn = client.connection(peer)
        rid, frame = conn.send(sync_request(self.c, source, key, version), arg)
        deadline = t + WRITE_TIMEOUT_S
        out = self.e.links.one_way(source, peer)
        if out is None:
            self.e.at(deadline, self._timeout, (client, conn, rid, arg))
            return
        self.e.at(t + out, self.e._arrive, (client, conn, rid, frame, arg, deadline, target, self._answer))

    def _answer(self, t: float, arg: tuple[Any, ...]) -> None:
        client, conn, data, token, _target, _arrived = arg
        for _, resp in conn.receive_data(data):
            if resp.code == ResponseCode.SERVER_TOO_BUSY:
                self._retry(t, token)
            else:
                source, peer, key, version, _ = token
                if self.pending.get((source, peer, key)) == version:
                    del self.pending[(source, peer, key)]
                self.pushed += 1

    def _timeout(self, t: float, arg: tuple[Any, ...]) -> None:
        client, conn, rid, token = arg
        conn.forget(rid)
        self._retry(t, token)

    def _retry(self, t: float, token: tuple[str, str, str, int, float]) -> None:
        source, peer, key, version, backoff = token
        self.e.at(t + backoff, self._push, (source, peer, key, version, min(RETRY_MAX_S, backoff * 2)))
