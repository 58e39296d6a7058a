"""The minimal topology running in-process on loopback: real sockets, real bootstrap, real resolution.

Every node of config/minimal.toml is hosted by one ``cluster.worker.Worker`` in the test's event loop on a
free run of ports. Blocking clients (bootstrap, ``BlockingClient``, ``udp_resolve``) run in
``asyncio.to_thread`` so the servers keep running in this loop while they wait.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from clusterutil import MINIMAL, LocalCluster, free_base_port, listening_socket, start_local_cluster
from idresolve.cluster.bootstrap import DEMO_PREFIX, DEMO_SUFFIX, BootstrapReport, bootstrap
from idresolve.cluster.credentials import cluster_secret, secret_for
from idresolve.cluster.plan import NodePlan, identity_of, make_plan
from idresolve.cluster.worker import Worker
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.latency import LatencyModel
from idresolve.core.messages import Request, Response
from idresolve.core.topology import load_topology
from idresolve.core.values import site_value, string_value
from idresolve.core.wire import UDP_ANSWER_LIMIT, Codec, decode_message
from idresolve.net.blocking import BlockingClient, udp_resolve
from idresolve.runtime.hosted import HostedAuthoritative

DEMO = f"{DEMO_PREFIX}/{DEMO_SUFFIX}"
REC, TOP, DR, SEC, ENT = "rec-jinan", "top-beijing", "top-nanjing", "sec-tyre-qingdao", "ent-tyre-qingdao-8"
CLIENT_TIMEOUT_S = 10.0
REPLICATION_DEADLINE_S = 5.0
TIMER_RESOLUTION_MS = 1.0  # the event loop's timers (uvloop: whole milliseconds)


@dataclass
class Running:
    cluster: LocalCluster
    report: BootstrapReport

    def node(self, name: str) -> NodePlan:
        return self.cluster.plan.node(name)

    def client(self, name: str, prefix: str | None = None) -> BlockingClient:
        n = self.node(name)
        auth = None if prefix is None else (identity_of(prefix), secret_for(self.cluster.master, prefix).encode())
        return BlockingClient(n.dial_host, n.tcp_port, timeout_s=CLIENT_TIMEOUT_S, auth=auth)


async def _running(tmp_path: Path, latency_on: bool) -> AsyncIterator[Running]:
    cluster = await start_local_cluster(tmp_path, latency_on=latency_on)
    try:
        report = await asyncio.to_thread(bootstrap, cluster.plan, cluster.master)
        yield Running(cluster, report)
    finally:
        await cluster.worker.stop()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async for r in _running(tmp_path, latency_on=False):
        yield r


@pytest.fixture
async def running_with_latency(tmp_path: Path) -> AsyncIterator[Running]:
    async for r in _running(tmp_path, latency_on=True):
        yield r


def _call(client: BlockingClient, fn: str, *args: Any, **kwargs: Any) -> Response:
    with client as c:
        resp = getattr(c, fn)(*args, **kwargs)
    assert isinstance(resp, Response)
    return resp


async def call(client: BlockingClient, fn: str, *args: Any, **kwargs: Any) -> Response:
    return await asyncio.to_thread(_call, client, fn, *args, **kwargs)


# --------------------------------------------------------------------------------------------------
# Bootstrap and binary TCP


async def test_bootstrap_allocates_once(running: Running) -> None:
    assert sorted(running.report.created) == ["0.NA/88.118", "0.NA/88.118.8", "0.NA/88.118.9"]
    assert running.report.demo == DEMO
    again = await asyncio.to_thread(bootstrap, running.cluster.plan, running.cluster.master)
    assert again.created == [], "a second bootstrap must find everything in place"
    assert len(again.unchanged) == 3


async def test_resolve_demo_over_binary_tcp(running: Running) -> None:
    def flow() -> list[Response]:
        with running.client(REC) as c:
            return [c.resolve(DEMO, trace=True), c.resolve(DEMO, trace=True), c.resolve(DEMO), c.resolve(DEMO)]

    cold, warm, plain1, plain2 = await asyncio.to_thread(flow)
    assert cold.code == ResponseCode.SUCCESS and cold.node == REC
    assert [(h.node, h.code) for h in cold.trace] == [(TOP, 303), (SEC, 303), (ENT, 1)]
    assert all(h.elapsed_us > 0 and not h.cached for h in cold.trace)
    top = running.node(TOP)
    assert cold.trace[0].address == f"{top.dial_host}:{top.tcp_port}"
    assert {v.type for v in cold.values} >= {"URL", "DESC", "productName", "batchNumber"}
    assert warm.code == ResponseCode.SUCCESS and [h.cached for h in warm.trace] == [True]
    # Plain resolutions: the second is the recursive node's encoded answer re-sent under a new request id.
    assert plain1.values == plain2.values == cold.values
    assert plain1.trace == () and plain1.node == ""


async def test_pipelined_requests_through_the_recursive_node(running: Running) -> None:
    handles = [DEMO, "88.118.8/Missing1", "88.118.9/Missing2", "88.999/Nowhere", "no-slash"] * 4

    def flow() -> tuple[dict[int, str], dict[int, Response]]:
        with running.client(REC) as c:
            ids = {c.send(Request(0, OpCode.RESOLUTION, h)): h for h in handles}
            got = {}
            for _ in handles:
                r = c.receive()
                got[r.request_id] = r
            return ids, got

    ids, got = await asyncio.to_thread(flow)
    expected = {DEMO: 1, "88.118.8/Missing1": 100, "88.118.9/Missing2": 100, "88.999/Nowhere": 100,
                "no-slash": 102}
    assert sorted(got) == sorted(ids)
    for rid, handle in ids.items():
        assert got[rid].code == expected[handle], (handle, got[rid])
        assert got[rid].handle == handle


async def test_recursive_node_refuses_writes(running: Running) -> None:
    resp = await call(running.client(REC, "88.118.8"), "create", "88.118.8/ViaRecursive",
                      (string_value(1, "URL", "https://x.example"),))
    assert resp.code == ResponseCode.OPERATION_NOT_SUPPORTED


# --------------------------------------------------------------------------------------------------
# UDP with truncation


def _raw_udp(host: str, port: int, req: Request, timeout_s: float = 5.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.sendto(Codec().encode(req), (host, port))
        data, _ = s.recvfrom(65536)
        return data


async def test_udp_small_answer_and_truncated_large_answer(running: Running) -> None:
    big = "x" * 700
    create = await call(running.client(ENT, "88.118.8"), "create", "88.118.8/BigRecord",
                        (string_value(1, "URL", "https://big.example"), string_value(2, "DESC", big)))
    assert create.code == ResponseCode.SUCCESS
    rec = running.node(REC)
    # Small: answered in one datagram.
    small = await asyncio.to_thread(udp_resolve, rec.dial_host, rec.udp_port, DEMO)
    assert small.code == ResponseCode.SUCCESS and not small.truncated and small.values
    # Large, raw: the datagram is cut to a truncated answer without values, under the 512-byte limit.
    data = await asyncio.to_thread(_raw_udp, rec.dial_host, rec.udp_port,
                                   Request(77, OpCode.RESOLUTION, "88.118.8/BigRecord"))
    raw = decode_message(data)
    assert len(data) <= UDP_ANSWER_LIMIT
    assert isinstance(raw, Response) and raw.truncated and raw.values == () and raw.request_id == 77
    assert raw.code == ResponseCode.SUCCESS
    # Large through the client: it sees the truncation and asks again over TCP.
    full = await asyncio.to_thread(udp_resolve, rec.dial_host, rec.udp_port, "88.118.8/BigRecord")
    assert full.code == ResponseCode.SUCCESS and not full.truncated
    assert [v.data for v in full.values if v.type == "DESC"] == [big.encode()]


# --------------------------------------------------------------------------------------------------
# REST at the recursive node


async def test_rest_resolution_with_trace(running: Running) -> None:
    created = await call(running.client(ENT, "88.118.8"), "create", "88.118.8/RestOne",
                         (string_value(1, "URL", "https://rest.example"),))
    assert created.code == ResponseCode.SUCCESS
    base = running.node(REC).http_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as http:
        async with http.get(f"{base}/api/handles/88.118.8/RestOne?trace") as r:
            assert r.status == 200
            cold = await r.json()
        async with http.get(f"{base}/api/handles/88.118.8/RestOne?trace") as r:
            warm = await r.json()
        async with http.get(f"{base}/api/handles/88.118.8/NotThere") as r:
            missing_status, missing = r.status, await r.json()
        async with http.put(f"{base}/api/handles/88.118.8/RestOne", json=[]) as r:
            write_status = r.status
    assert cold["responseCode"] == 1 and cold["handle"] == "88.118.8/RestOne"
    assert [v["data"]["value"] for v in cold["values"] if v["type"] == "URL"] == ["https://rest.example"]
    assert [(h["node"], h["responseCode"], h["cached"]) for h in cold["trace"]] == [
        (TOP, 303, False), (SEC, 303, False), (ENT, 1, False)]
    assert all(h["elapsedUs"] > 0 for h in cold["trace"])
    assert [h["cached"] for h in warm["trace"]] == [True]
    assert missing_status == 404 and missing["responseCode"] == 100
    assert write_status == 400


async def test_rest_plain_resolutions_reuse_the_body_and_keep_the_clients_spelling(running: Running) -> None:
    created = await call(running.client(ENT, "88.118.8"), "create", "88.118.8/BodyOne",
                         (string_value(1, "URL", "https://body.example"),))
    assert created.code == ResponseCode.SUCCESS
    base = running.node(REC).http_url
    bodies = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as http:
        for path in ("88.118.8/BodyOne", "88.118.8/BodyOne", "88.118.8/bodyone", "88.118.8/BodyOne?pretty"):
            async with http.get(f"{base}/api/handles/{path}") as r:
                assert r.status == 200
                bodies.append(await r.read())
    first, again, other_case, pretty = bodies
    assert again == first  # a cached answer: the same bytes
    assert orjson.loads(first)["handle"] == "88.118.8/BodyOne"
    assert orjson.loads(other_case)["handle"] == "88.118.8/bodyone"  # the client's own spelling
    assert orjson.loads(other_case)["values"] == orjson.loads(first)["values"]
    assert b"\n" in pretty and orjson.loads(pretty) == orjson.loads(first)


# --------------------------------------------------------------------------------------------------
# Registry replication between the top-level nodes


async def _answers_within(r: Running, node: str, handle: str, code: int) -> bool:
    """Whether ``node`` answers ``handle`` with ``code`` within the replication deadline (polled)."""
    def poll() -> bool:
        with r.client(node) as c:
            deadline = time.monotonic() + REPLICATION_DEADLINE_S
            while time.monotonic() < deadline:
                if c.resolve(handle).code == code:
                    return True
                time.sleep(0.002)
        return False

    return await asyncio.to_thread(poll)


async def _replication_lag(r: Running, prefix: str) -> float:
    """Write 0.NA/<prefix> at the primary top-level node; seconds until the DR node answers with it."""
    handle = f"0.NA/{prefix}"
    values = (site_value(1, r.node(SEC).site()),)
    resp = await call(r.client(TOP, "88"), "create", handle, values)
    assert resp.code == ResponseCode.SUCCESS
    t0 = time.monotonic()

    def poll() -> float:
        with r.client(DR) as c:
            deadline = t0 + REPLICATION_DEADLINE_S
            while time.monotonic() < deadline:
                got = c.resolve(handle)
                if got.code == ResponseCode.SUCCESS:
                    assert [v.data for v in got.values if v.type == "HS_SITE"] == [values[0].data]
                    return time.monotonic() - t0
                assert got.code == ResponseCode.HANDLE_NOT_FOUND
                time.sleep(0.002)
        raise AssertionError(f"{handle} did not reach {DR} within {REPLICATION_DEADLINE_S} s")

    return await asyncio.to_thread(poll)


async def test_write_at_primary_top_replicates_to_dr(running: Running) -> None:
    lag = await _replication_lag(running, "88.130")
    print(f"\nreplication lag, latency off: {lag * 1000:.1f} ms")
    assert lag < REPLICATION_DEADLINE_S
    # The DR node now refers 88.130 to the secondary, as the primary does.
    ref = await call(running.client(DR), "resolve", "88.130/anything")
    assert ref.code == ResponseCode.PREFIX_REFERRAL and ref.handle == "0.NA/88.130"
    # A deletion replicates too.
    deleted = await call(running.client(TOP, "88"), "delete", "0.NA/88.130")
    assert deleted.code == ResponseCode.SUCCESS

    assert await _answers_within(running, DR, "0.NA/88.130", ResponseCode.HANDLE_NOT_FOUND)


async def test_write_at_dr_top_replicates_to_primary(running: Running) -> None:
    """Multi-primary: a write taken by the DR node reaches the primary."""
    values = (site_value(1, running.node(SEC).site()),)
    assert (await call(running.client(DR, "88"), "create", "0.NA/88.131", values)).code == ResponseCode.SUCCESS

    assert await _answers_within(running, TOP, "0.NA/88.131", ResponseCode.SUCCESS)


# --------------------------------------------------------------------------------------------------
# Latency model on


async def _link_delays(r: Running, name: str) -> tuple[int, float, int]:
    """(delays applied, their seconds, messages lost) by the latency model of ``name``'s outgoing traffic,
    from its own /metrics (a node's pool delays its requests out and their answers back)."""
    from idresolve.bench.scrape import scrape_one

    sample = await asyncio.to_thread(scrape_one, r.node(name).http_url)
    assert sample is not None, f"no /metrics at {name}"
    return (int(sample.get(("idresolve_link_delays_total", ()), 0)),
            sample.get(("idresolve_link_delay_seconds_total", ()), 0.0),
            int(sample.get(("idresolve_link_lost_total", ()), 0)))


async def test_trace_delays_follow_the_latency_model(running_with_latency: Running) -> None:
    """The delays the recursive node's links applied (its own counters) are the model's round trips to the
    top-level, secondary and enterprise nodes; the hops it measured are not shorter than those."""
    r = running_with_latency
    plan = r.cluster.plan
    model = LatencyModel.for_topology(plan.topology)
    rec_loc = r.node(REC).spec.location
    expected_ms = {name: model.round_trip_ms(rec_loc, r.node(name).spec.location) for name in (TOP, SEC, ENT)}
    assert expected_ms[TOP] == pytest.approx(30.2)  # inter-province: 30 ms round trip + 2 x 0.1 ms per hop
    before = await _link_delays(r, REC)

    def flow() -> list[Response]:
        with r.client(REC) as c:
            # authoritative=True bypasses the cache: every run walks top -> secondary -> enterprise.
            return [c.resolve(DEMO, trace=True, authoritative=True) for _ in range(5)]

    runs = await asyncio.to_thread(flow)
    after = await _link_delays(r, REC)
    for resp in runs:
        assert resp.code == ResponseCode.SUCCESS
        assert [h.node for h in resp.trace] == [TOP, SEC, ENT]
    delays, seconds, lost = (a - b for a, b in zip(after, before, strict=True))
    jitter_ms = 3 * model.spec.jitter_ms  # each one-way sample is clipped at 3 sigma
    assert (delays, lost) == (5 * 3 * 2, 0)  # 15 requests, each delayed out and back
    assert seconds * 1000 == pytest.approx(5 * sum(expected_ms.values()), abs=delays * jitter_ms)
    best_ms = {name: min(resp.trace[i].elapsed_us for resp in runs) / 1000 for i, name in enumerate((TOP, SEC, ENT))}
    print("\nhop round trips (model -> best measured): "
          + ", ".join(f"{n} {expected_ms[n]:.2f} -> {best_ms[n]:.2f} ms" for n in (TOP, SEC, ENT))
          + f"; delays applied {seconds * 1000:.2f} ms for a model sum of {5 * sum(expected_ms.values()):.2f} ms")
    for name in (TOP, SEC, ENT):
        # Not faster than the model beyond the timers' resolution (delays are paid in event-loop timers
        # of whole milliseconds, trimmed so that they are exact on average: net/delays.py). How much slower
        # depends on the machine's load: the counters above say what the model added.
        assert best_ms[name] >= expected_ms[name] - 2 * jitter_ms - TIMER_RESOLUTION_MS, name


async def _replicator_idle(r: Running, name: str) -> None:
    """Wait (bounded) until the node's replicator has no push waiting for an answer."""
    rep = r.cluster.worker.replicators[name]
    deadline = time.monotonic() + REPLICATION_DEADLINE_S
    while any(rep.pending.values()):
        assert time.monotonic() < deadline, "replicator never became idle"
        await asyncio.sleep(0.005)


async def test_replication_lag_with_latency_pays_the_link(running_with_latency: Running) -> None:
    """Each push pays the Beijing -> Nanjing link: the primary's replicator delays it by the model's one-way
    delay out and back (its own counters), and the copy is not at the DR node sooner than one way."""
    r = running_with_latency
    model = LatencyModel.for_topology(r.cluster.plan.topology)
    one_way_ms = model.base_one_way_ms(r.node(TOP).spec.location, r.node(DR).spec.location)
    jitter_ms = 3 * model.spec.jitter_ms
    await _replicator_idle(r, TOP)  # bootstrap's pushes have been answered
    before = await _link_delays(r, TOP)
    idle_lag = await _replication_lag(r, "88.132")
    # Right after: the previous push's answer is still on its way back, and pushes to a peer go one at a
    # time, so this write waits for it (head-of-line) before paying its own one-way delay.
    busy_lag = await _replication_lag(r, "88.133")
    await _replicator_idle(r, TOP)
    delays, seconds, lost = (a - b for a, b in zip(await _link_delays(r, TOP), before, strict=True))
    print(f"\nreplication lag, latency on (beijing -> nanjing one-way {one_way_ms:.1f} ms): idle "
          f"{idle_lag * 1000:.1f} ms, right after another write {busy_lag * 1000:.1f} ms; the primary's links "
          f"applied {delays} delays, {seconds * 1000:.2f} ms")
    assert (delays, lost) == (2 * 2, 0)  # two pushes, each out and back
    assert seconds * 1000 == pytest.approx(2 * 2 * one_way_ms, abs=delays * jitter_ms)
    assert idle_lag * 1000 >= one_way_ms - jitter_ms - TIMER_RESOLUTION_MS
    assert busy_lag * 1000 >= one_way_ms - jitter_ms - TIMER_RESOLUTION_MS


# --------------------------------------------------------------------------------------------------
# Restarts, a late peer, and a failed start


async def test_restart_on_another_base_port_updates_the_sites(tmp_path: Path) -> None:
    first = await start_local_cluster(tmp_path, latency_on=False)
    try:
        report = await asyncio.to_thread(bootstrap, first.plan, first.master)
        assert len(report.created) == 3
    finally:
        await first.worker.stop()
    second = await start_local_cluster(tmp_path, latency_on=False)
    try:
        assert second.plan.base_port != first.plan.base_port
        report = await asyncio.to_thread(bootstrap, second.plan, second.master)
        # The delegations name the old ports: they are rewritten; the hosted one has no site and stays.
        assert sorted(report.created) == ["0.NA/88.118", "0.NA/88.118.8"]
        assert report.unchanged == ["0.NA/88.118.9"]
        r = Running(second, report)
        resp = await call(r.client(REC), "resolve", DEMO, trace=True)
        assert resp.code == ResponseCode.SUCCESS
        assert [h.address for h in resp.trace] == [f"127.0.0.1:{r.node(n).tcp_port}" for n in (TOP, SEC, ENT)]
    finally:
        await second.worker.stop()


async def test_a_top_level_node_that_starts_late_still_gets_the_registry(tmp_path: Path) -> None:
    """Pushes to a peer that is down are retried until it answers (writes are not lost)."""
    cluster = await start_local_cluster(tmp_path, latency_on=False)
    plan = cluster.plan
    worker = cluster.worker
    dr = plan.node(DR)
    late: Worker | None = None
    try:
        # Take the DR node out of the running worker: stop its listeners before any write.
        hosted = worker.hosted.pop(DR)
        assert isinstance(hosted, HostedAuthoritative)
        await hosted.stop()
        report = await asyncio.to_thread(bootstrap, plan, cluster.master)
        assert "0.NA/88.118" in report.created
        late = Worker(plan, [DR], tmp_path, cluster.master, latency=LatencyModel.off())
        await late.start()

        def arrived() -> float:
            t0 = time.monotonic()
            with BlockingClient(dr.dial_host, dr.tcp_port, timeout_s=CLIENT_TIMEOUT_S) as c:
                while time.monotonic() - t0 < 10.0:
                    if c.resolve("0.NA/88.118").code == ResponseCode.SUCCESS:
                        return time.monotonic() - t0
                    time.sleep(0.01)
            raise AssertionError("the registry never reached the late top-level node")

        waited = await asyncio.to_thread(arrived)
        print(f"\nlate DR node caught up {waited * 1000:.0f} ms after it started")
    finally:
        if late is not None:
            await late.stop()
        await worker.stop()


def _port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_failed_start_releases_every_port(tmp_path: Path) -> None:
    """The first node's binary port is taken: the start fails, and afterwards every port of every node of
    the plan (HTTP, binary TCP, UDP) is free again and no listener object of the failed start is alive."""
    import gc

    from idresolve.cluster.worker import Worker
    from idresolve.runtime.hosted import HostedAuthoritative, HostedRecursive

    topology = load_topology(MINIMAL)
    plan = make_plan(topology, base_port=free_base_port(12), workers=1)
    top = plan.node(TOP)
    worker = Worker(plan, [n.name for n in plan.nodes], tmp_path, cluster_secret(tmp_path),
                    latency=LatencyModel.off())
    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, HostedAuthoritative | HostedRecursive)}
    with listening_socket(top.tcp_port):  # the first node's binary port is taken
        with pytest.raises(OSError):
            await worker.start()
        await worker.stop()
    ports = [(n.name, kind, port, sock) for n in plan.nodes
             for kind, port, sock in (("http", n.http_port, socket.SOCK_STREAM), ("tcp", n.tcp_port, socket.SOCK_STREAM),
                                      ("udp", n.udp_port, socket.SOCK_DGRAM))]
    assert len(ports) == 3 * len(plan.nodes) == 18
    busy = [(name, kind, port) for name, kind, port, sock in ports if not _port_free(port, sock)]
    assert busy == [], f"ports still held after the failed start: {busy}"
    gc.collect()
    alive = [o.node.name if isinstance(o, HostedAuthoritative) else o.service.name for o in gc.get_objects()
             if isinstance(o, HostedAuthoritative | HostedRecursive) and id(o) not in earlier
             and o not in worker.hosted.values()]
    assert alive == [], f"listeners of the failed start still alive outside the worker: {alive}"


async def test_registry_root_record_change_keeps_each_top_nodes_own_site(running: Running) -> None:
    from idresolve.core.site import SiteInfo

    add = await call(running.client(TOP, "88"), "add_values", "0.NA/88",
                     (string_value(5, "DESC", "national prefix registry"),))
    assert add.code == ResponseCode.SUCCESS
    await _replicator_idle(running, TOP)  # whatever the primary pushes has been answered by now
    info = await call(running.client(DR), "site_info")
    sites = [dict(SiteInfo.from_bytes(v.data).attributes).get("name") for v in info.values if v.type == "HS_SITE"]
    assert sites == [DR]
