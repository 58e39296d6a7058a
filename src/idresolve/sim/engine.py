"""The discrete-event scheduler and the resolution path: arrivals, hops, answers, timeouts in virtual time.

Time is the seconds since the epoch of the virtual day (``clock.now``, read by every node). Two sources
of work, merged in time order: the arrival blocks (``draw.ArrivalBlocks``: lists, no event objects) and
a heap of scheduled events ``(time, seq, handler, argument)``, ``seq`` breaking ties in the order they
were scheduled. So every node sees its work in time order, and each request's start and finish on the
node's ``Server`` are known when it arrives (Lindley's recursion): one heap event for the request's
arrival at the upstream node and one for its answer back, none for a recursive node's cache hit.

A resolution is the project's own ``Walk``: ``next_hop(now)`` names the upstream and the request, which
goes out as bytes on the recursive node's ``ClientConnection``; the upstream's ``ServerConnection`` and
``AuthoritativeService`` answer it (``SimAuthoritative.serve``); the answer's bytes come back, are
decoded by the same ``ClientConnection`` and handed to ``answered(resp, now)``; a lost request, a late
answer or a dead node become ``timed_out(now)``. TTL expiry is checked by the caches at lookup.

The order of events is folded into ``fingerprint`` (each heap event's ``seq`` and each arrival's index),
so a test can check that a seed gives the same run.
"""

from __future__ import annotations

import gc
import heapq
import time
from collections.abc import Callable
from typing import Any

from ..core.codes import OpCode, ResponseCode
from ..core.messages import FLAG_AUTHORITATIVE, FLAG_TRACE, Request
from ..nodes.recursive import Failure
from .build import SimCluster
from .draw import READ, REGISTER, WRITE, ArrivalBlocks
from .links import Links
from .nodes import BUSY, SimRecursive
from .stats import HOUR_S, Hour, Stats, add

MASK = (1 << 61) - 1
#: Allocations between two young collections of the cyclic garbage collector while a run goes (CPython's
#: default: 700). A run's caches keep objects alive that the collector tracks (1.1 million after an hour
#: of ``shandong-day`` from 10:00), and every full collection walks all of them: 10 in that hour, 1 at
#: 50,000. The hour goes 1.20x as fast
#: (medians of 3 alternating runs, 41.1k against 49.2k resolutions/s) and the whole day 1.29x; 20,000 and
#: 100,000 gave the same within the noise, 200,000 less (``docs/benchmarks/simulation.md``). What a run
#: makes in cycles (585 objects in that hour) is still collected.
RUN_GC_YOUNG = 50_000
TIMEOUT_FAILURES = frozenset({Failure.UPSTREAM_TIMEOUT, Failure.NO_UPSTREAM})
# Enum members read on hot paths, as module constants: a member read off its class costs ~75 ns on 3.11.
_SUCCESS, _RESOLUTION = ResponseCode.SUCCESS, OpCode.RESOLUTION
_HANDLE_NOT_FOUND, _SERVER_TOO_BUSY = ResponseCode.HANDLE_NOT_FOUND, ResponseCode.SERVER_TOO_BUSY
Handler = Callable[[float, Any], None]


class Engine:
    def __init__(self, cluster: SimCluster, links: Links, costs: dict[str, float], stats: Stats, *,
                 t_start: float, t_end: float, client_timeout_s: float, trace: bool = False,
                 authoritative: bool = False, progress: Callable[[str], None] | None = None) -> None:
        self.c, self.links, self.costs, self.stats = cluster, links, costs, stats
        self.clock = cluster.clock
        self.t_start, self.t_end = t_start, t_end
        self.client_timeout_s = client_timeout_s
        self.flags = (FLAG_TRACE if trace else 0) | (FLAG_AUTHORITATIVE if authoritative else 0)
        self.heap: list[tuple[float, int, Handler, Any]] = []
        self.seq = 0
        self.fingerprint = 0
        self.events_done = 0
        self.arrivals_done = 0
        self.progress = progress
        self.role = {n.name: n.role for n in cluster.plan.nodes}
        self.recs: list[SimRecursive] = list(cluster.rec.values())
        for rec in self.recs:
            rec.timeout_handler = self._hop_timeout
        self.writes: Any = None  # sim.writes.Writes, for write and registration arrivals
        # Opt-in (agreement): end-to-end latency per path (the nodes asked, or "cache") and per-node hop times.
        self.paths: dict[str, dict[int, int]] | None = None
        self.hop_nodes: dict[str, dict[int, int]] | None = None
        self.wall_s = 0.0
        self.servers = [n.server for n in (*cluster.auth.values(), *cluster.rec.values())]
        self.hour = stats.warm  # where arrivals of the current hour are counted
        self.hour_end = t_start  # when the current hour ends (the warm-up ends at t_start)
        self.hour_index = -1
        c = costs
        self._cached_s, self._walk_s, self._hop_s, self._busy_s = c["rec_cached"], c["rec_walk"], c["rec_hop"], c[BUSY]
        self._client_s = c.get("client", 0.0)  # the client's own round trip, added to every resolution
        links.transport_s = c.get("transport", 0.0)

    # -- scheduling ---------------------------------------------------------------------------------
    def at(self, t: float, handler: Handler, arg: Any = None) -> None:
        heapq.heappush(self.heap, (t, self.seq, handler, arg))
        self.seq += 1

    def _events_until(self, t: float) -> None:
        heap, pop, clock = self.heap, heapq.heappop, self.clock
        fp = self.fingerprint
        n = 0
        while heap and heap[0][0] <= t:
            te, s, handler, arg = pop(heap)
            clock.now = te
            fp = (fp * 1_000_003 ^ s) & MASK
            n += 1
            handler(te, arg)
        self.fingerprint = fp
        self.events_done += n

    def run(self, blocks: ArrivalBlocks, *, drain_s: float = 120.0) -> None:
        """Every arrival of ``blocks``, then the events still scheduled (bounded by ``drain_s``); the
        collector runs young collections less often meanwhile (``RUN_GC_YOUNG``), after one full
        collection: a study's runs in one process would otherwise hold two runs' caches at once."""
        gc.collect()  # what an earlier run in this process left in cycles goes now, not at the end of this one
        thresholds = gc.get_threshold()
        gc.set_threshold(max(RUN_GC_YOUNG, thresholds[0]), *thresholds[1:])
        try:
            self._run(blocks, drain_s)
        finally:
            gc.set_threshold(*thresholds)

    def _run(self, blocks: ArrivalBlocks, drain_s: float) -> None:
        wall0 = time.perf_counter()
        next_report = wall0 + 1.0
        resolve, write = self._resolve, self._write_arrival
        recs, heap, clock = self.recs, self.heap, self.clock
        index = 0
        fp = self.fingerprint  # kept here between the calls that read or fold into it (the heap's events)
        hour_end = self.hour_end
        while (block := blocks.next_block()) is not None:
            times, which, kinds, handles = block
            for i in range(len(times)):
                t = times[i]
                if heap and heap[0][0] <= t:
                    self.fingerprint = fp
                    self._events_until(t)
                    fp = self.fingerprint
                if t >= hour_end:
                    self._next_hour(t)
                    hour_end = self.hour_end
                clock.now = t
                fp = (fp * 1_000_003 ^ (index << 1 | 1)) & MASK
                index += 1
                if kinds[i] == READ:
                    resolve(t, recs[which[i]], handles[i])
                else:
                    write(t, kinds[i], handles[i])
            self.fingerprint = fp
            self.arrivals_done = index
            if self.progress is not None and time.perf_counter() >= next_report:
                next_report = time.perf_counter() + 1.0
                self._report(wall0)
        while self.hour_end <= self.t_end:
            self._next_hour(self.hour_end)
        self._events_until(self.t_end + drain_s)
        for srv in self.servers:
            srv.snapshot()  # the last hour gets what its answers cost after it ended
        self.wall_s = time.perf_counter() - wall0
        if self.progress is not None:
            self._report(wall0)

    def _next_hour(self, t: float) -> None:
        """Arrivals from ``t`` on count in the hour that holds ``t``; the servers' hourly snapshots follow."""
        while t >= self.hour_end:
            for srv in self.servers:
                if self.hour_index >= 0:
                    srv.snapshot()
                else:
                    srv.reset()  # the warm-up (if any) is over: count from here
            self.hour_index += 1
            self.hour_end = self.t_start + (self.hour_index + 1) * HOUR_S
        hours = self.stats.hours
        self.hour = hours[min(self.hour_index, len(hours) - 1)]

    def _report(self, wall0: float) -> None:
        assert self.progress is not None
        wall = max(1e-9, time.perf_counter() - wall0)
        done = (self.clock.now - self.t_start) / max(1e-9, self.t_end - self.t_start)
        v = self.clock.now - self.t_start
        self.progress(f"virtual {int(v // 3600):02d}:{int(v % 3600 // 60):02d}:{int(v % 60):02d} "
                      f"({min(1.0, done):.0%})  {self.arrivals_done:,} arrivals  "
                      f"{self.arrivals_done / wall:,.0f} arrivals/s  {self.events_done / wall:,.0f} events/s")

    # -- a resolution at a recursive node -------------------------------------------------------------
    def _resolve(self, t: float, rec: SimRecursive, handle: str) -> None:
        srv = rec.server
        hour = self.hour
        hour.offered += 1
        if srv.down:
            hour.unreachable += 1
            return
        bu = srv.busy_until
        start = bu if bu > t else t
        if start > t and not srv.admit(t, start):
            srv.shed += 1
            self._answered(t, srv.occupy(t, start, self._busy_s), ResponseCode.SERVER_TOO_BUSY, False)
            return
        self.clock.now = start
        if not self.flags:
            hit = rec.lookup(handle)
            if hit is not None:  # the hot path: a cache hit, answered at once (``_answered`` inlined)
                finish = srv.occupy(t, start, self._cached_s)
                hour.hits += 1
                hour.answered += 1
                us = int((finish - t + self._client_s) * 1e6)
                if us >= 2048:
                    sh = us.bit_length() - 11
                    us = ((us >> sh) << sh) + (1 << (sh - 1))
                lat = hour.lat
                lat[us] = lat.get(us, 0) + 1
                code = hit.code
                codes = self.stats.codes
                codes[code] = codes.get(code, 0) + 1
                if code == _SUCCESS:
                    hour.ok += 1
                else:
                    self._count_code(hour, code)
                return
        request = Request(0, _RESOLUTION, handle, self.flags)
        walk = rec.node.begin(request, start)
        finish = srv.occupy(t, start, self._walk_s)
        token = [walk, t, request, True, hour]  # the walk, its arrival, request, alive, the hour counting it
        if walk.finished:
            self._done(rec, token, finish)
        else:
            rec.active[id(token)] = token
            self._hop(rec, token, finish)

    def _hop(self, rec: SimRecursive, token: list[Any], now: float) -> None:
        walk = token[0]
        hop = walk.next_hop(now)
        if hop is None:
            self._done(rec, token, now)
            return
        upstream, request = hop
        token[4].upstream += 1
        conn = rec.connection(upstream.address)
        rid, frame = conn.send(request, token)
        deadline = now + rec.hop_timeout_s
        target = self.c.by_address.get(upstream.address)
        out = None if target is None else self.links.one_way(rec.name, target.name)
        if out is None:
            self.at(deadline, self._hop_timeout, (rec, conn, rid, token))
            return
        # ``self.at``, written out here and for the answer in ``_arrive``: every hop schedules these two.
        heapq.heappush(self.heap, (now + out, self.seq, self._arrive,
                                   (rec, conn, rid, frame, token, deadline, target, self._hop_answer)))
        self.seq += 1

    def _arrive(self, t: float, arg: tuple[Any, ...]) -> None:
        """A request reaches an authoritative node: queue, shed or serve, and send the answer back."""
        client, conn, rid, frame, token, deadline, target, on_answer = arg
        srv = target.server
        back = self.links.one_way(target.name, client.name)
        if srv.down:  # a host whose node died refuses the connection: known after the way back
            self.at(min(deadline, t + (back or 0.0)), self._refused, (client, conn, rid, token))
            return
        bu = srv.busy_until
        start = bu if bu > t else t
        self.clock.now = start
        if start > t and not srv.admit(t, start):
            srv.shed += 1
            data, cost = target.refuse(client.name, frame), self.costs[BUSY]
        else:
            data, op = target.serve(client.name, frame)
            cost = self.costs[op]
            if op == "auth_write" and target.last_items:
                cost += target.last_items * self.costs["auth_batch_item"]
        finish = srv.occupy(t, start, cost)
        if back is None or finish + back > deadline:
            self.at(deadline, client.timeout_handler, (client, conn, rid, token))
            return
        heapq.heappush(self.heap, (finish + back, self.seq, on_answer, (client, conn, data, token, target, t)))
        self.seq += 1

    def _refused(self, t: float, arg: tuple[Any, ...]) -> None:
        client, conn, rid, token = arg
        client.timeout_handler(t, arg)

    def _hop_answer(self, t: float, arg: tuple[Any, ...]) -> None:
        rec, conn, data, token, target, arrived = arg
        if target.server.killed_at >= arrived:  # the node died before its answer left: the connection broke
            self._hop_timeout(t, (rec, conn, None, token))
            return
        if not token[3]:
            return  # the recursive node died since: the walk died with it (counted then)
        srv = rec.server
        bu = srv.busy_until
        start = bu if bu > t else t
        finish = srv.occupy(t, start, self._hop_s)
        self.clock.now = start
        for tok, resp in conn.receive_data(data):
            tok[0].answered(resp, start)
        self._hop(rec, token, finish)

    def _hop_timeout(self, t: float, arg: tuple[Any, ...]) -> None:
        rec, conn, rid, token = arg
        if rid is not None:
            conn.forget(rid)
        if not token[3]:
            return
        srv = rec.server
        bu = srv.busy_until
        start = bu if bu > t else t
        finish = srv.occupy(t, start, self._hop_s)
        self.clock.now = start
        token[0].timed_out(start)
        self._hop(rec, token, finish)

    def _done(self, rec: SimRecursive, token: list[Any], now: float) -> None:
        walk, t0, request, hour = token[0], token[1], token[2], token[4]
        rec.active.pop(id(token), None)
        done = walk.done
        resp = rec.node.respond(request, done)
        if done.cached:
            hour.hits += 1
        stats = self.stats
        hops = 0
        for h in done.trace:
            if h.cached:
                continue
            hops += 1
            role = self.role.get(h.node, "?")
            if h.code < 0:
                stats.hop_timeouts[role] = stats.hop_timeouts.get(role, 0) + 1
            else:
                add(stats.hops.setdefault(role, {}), h.elapsed_us)
        stats.hop_counts[hops] = stats.hop_counts.get(hops, 0) + 1
        if self.paths is not None and self.hop_nodes is not None:
            asked = [h for h in done.trace if not h.cached]
            key = ">".join(h.node for h in asked) if asked else "cache"
            add(self.paths.setdefault(key, {}), int((now - t0 + self._client_s) * 1e6))
            for h in asked:
                if h.code >= 0:
                    add(self.hop_nodes.setdefault(h.node, {}), h.elapsed_us)
        if done.failure is not None:
            stats.failures[done.failure.value] = stats.failures.get(done.failure.value, 0) + 1
        self._answered(t0, now, resp.code, done.cached, done.failure in TIMEOUT_FAILURES, hour)

    def _answered(self, t0: float, now: float, code: int, cached: bool, timed_out: bool = False,
                  hour: Hour | None = None) -> None:
        """``hour``: the hour that counts an arrival at ``t0`` (the engine's ``hour`` then), if known."""
        if hour is None:
            hour = self.stats.hour(t0)
        latency = now - t0 + self._client_s
        if latency > self.client_timeout_s:  # the client gave up: it waited the timeout
            latency, timed_out = self.client_timeout_s, True
        hour.answered += 1
        add(hour.lat, int(latency * 1e6))
        codes = self.stats.codes
        codes[code] = codes.get(code, 0) + 1
        if timed_out:
            hour.timeouts += 1
        elif code == _SUCCESS:
            hour.ok += 1
        else:
            self._count_code(hour, code)

    @staticmethod
    def _count_code(hour: Any, code: int) -> None:
        if code == _HANDLE_NOT_FOUND:
            hour.not_found += 1
        elif code == _SERVER_TOO_BUSY:
            hour.shed += 1
        else:
            hour.failed += 1

    def _write_arrival(self, t: float, kind: int, handle: str) -> None:
        if self.writes is not None:
            if kind == WRITE:
                self.writes.change(t, handle)
            elif kind == REGISTER:
                self.writes.register(t)

    # -- node deaths ------------------------------------------------------------------------------------
    def kill(self, name: str, t: float) -> None:
        node = self.c.node(name)
        node.server.kill(t)
        if isinstance(node, SimRecursive):  # its walks in progress die with it: their clients see an error
            for token in node.active.values():
                token[3] = False
                self._answered(token[1], t, ResponseCode.ERROR, False, False, token[4])
            node.active.clear()

    def recover(self, name: str, t: float) -> None:
        node = self.c.node(name)
        node.server.recover(t)
        node.restart()
