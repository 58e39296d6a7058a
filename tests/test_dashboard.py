"""The dashboard's figures (pure, known answers), its API on an in-process cluster, and the commands a user
runs against a cluster that runs already: ``idresolve dashboard``, ``idresolve fault``, ``idresolve status``."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from clusterutil import IDRESOLVE, ROOT, cli_env, free_base_port, run_cli, spawn, stop_proc, wait_until
from idresolve.bench.scrape import parse
from idresolve.cli.dashboard_cmd import FaultControls, topology_view
from idresolve.cluster.faults import write_control_file
from idresolve.cluster.supervisor import CLUSTER_FILE, UpOptions, cluster_description
from idresolve.http.dashboard import Dashboard
from idresolve.http.dashboard_stats import figures, quantile_ms
from opsutil import DR, ENT, REC, TOP, Ops, ops_cluster

DEMO = "88.118.8/JXDY2106023"


# -- figures (pure) ------------------------------------------------------------------------------------------

def _sample(**values: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(k, ()): v for k, v in values.items()}


def test_figures_from_two_scrapes() -> None:
    req = "idresolve_requests_total"
    older = {(req, (("code", "1"), ("op", "resolution"), ("surface", "binary"))): 100.0,
             (req, (("code", "200"), ("op", "GET /metrics"), ("surface", "rest"))): 5.0,
             **_sample(idresolve_cache_hits_total=10, idresolve_cache_misses_total=10)}
    now = {(req, (("code", "1"), ("op", "resolution"), ("surface", "binary"))): 300.0,
           (req, (("code", "2"), ("op", "resolution"), ("surface", "binary"))): 4.0,
           (req, (("code", "3"), ("op", "resolution"), ("surface", "binary"))): 6.0,
           (req, (("code", "500"), ("op", "GET /api/handles/{handle}"), ("surface", "rest"))): 2.0,
           (req, (("code", "200"), ("op", "GET /metrics"), ("surface", "rest"))): 7.0,  # the dashboard's own
           ("idresolve_shed_overload_total", ()): 2.0,
           ("idresolve_link_requests_total", (("peer", "top-a"),)): 8.0,
           ("idresolve_replication_lag_seconds", (("peer", "m1"),)): 1.5,
           ("idresolve_replication_lag_seconds", (("peer", "m2"),)): 0.25,
           **_sample(idresolve_cache_hits_total=40, idresolve_cache_misses_total=20, idresolve_records=7)}
    f = figures(now, older, 2.0)
    assert f["ops"] == {"binary resolution": 105.0, "rest GET /api/handles/{handle}": 1.0}
    assert f["rps"] == 106.0 and f["errors"] == 3.0 and f["shed"] == 4.0  # codes 2 and 500; code 3 and shed
    assert f["hit"] == 0.75 and f["records"] == 7 and f["links"] == {"top-a": 4.0}
    assert f["lag_s"] == 1.5 and f["lag"] == {"m1": 1.5, "m2": 0.25}
    first = figures(now, None, 0.0)  # no older scrape: gauges only
    assert first["rps"] is None and first["records"] == 7


def test_quantiles_are_bucket_bounds() -> None:
    buckets = [(0.001, 50.0), (0.01, 98.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert quantile_ms(buckets, 0.5) == 1.0 and quantile_ms(buckets, 0.99) == 100.0
    assert quantile_ms([], 0.5) is None and quantile_ms([(float("inf"), 0.0)], 0.5) is None
    assert quantile_ms([(0.001, 1.0), (float("inf"), 10.0)], 0.99) is None  # beyond the last bound


# -- the API on an in-process cluster ----------------------------------------------------------------------------

def _describe(ops: Ops) -> dict[str, Any]:
    """Write what ``idresolve up`` writes (cluster.json, control.json) for the in-process cluster."""
    c = ops.cluster
    opts = UpOptions(ROOT / "config" / "minimal.toml", c.data_dir, c.plan.base_port, 1, "off", None)
    desc = cluster_description(c.plan, opts)
    (c.data_dir / CLUSTER_FILE).write_text(json.dumps(desc), encoding="utf-8")
    write_control_file(c.data_dir, [{"url": ops.control.urls[0], "nodes": list(c.worker.names)}])
    return desc


@pytest.fixture
async def ops(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with ops_cluster(tmp_path) as o:
        yield o


async def _client(ops: Ops, admin: tuple[str, str] | None = None) -> tuple[TestClient, Dashboard]:
    desc = _describe(ops)
    names = [str(n["name"]) for n in desc["nodes"]]
    dash = Dashboard(desc, topology_view(desc), parse, controls=FaultControls(ops.cluster.data_dir, ops.cluster.master,
                                                                               names), admin=admin)
    client = TestClient(TestServer(dash.app()))
    await client.start_server()
    return client, dash


async def test_the_api_shows_the_cluster_its_numbers_traces_and_faults(ops: Ops) -> None:
    client, dash = await _client(ops)
    try:
        topo = await (await client.get("/api/topology")).json()
        assert {n["name"] for n in topo["nodes"]} == set(ops.cluster.worker.names)
        assert all(isinstance(n["lat"], float) and isinstance(n["lon"], float) for n in topo["nodes"])
        assert "before-interconnect" in topo["scenarios"]
        first = await dash.tick()
        assert all(f["up"] for f in first["nodes"].values())
        for _ in range(20):
            assert (await ops.call(REC, "resolve", DEMO)).code == 1
        second = await dash.tick()
        assert second["nodes"][REC]["rps"] > 0 and second["nodes"][REC]["hit"] > 0
        resolved = await (await client.get("/api/resolve", params={"handle": DEMO})).json()
        assert resolved["status"] == 200 and [h["node"] for h in resolved["answer"]["trace"]] == [TOP, "sec-tyre-qingdao", ENT]
        killed = await client.post("/api/faults", json={"kind": "kill", "nodes": [TOP], "duration": 60})
        state = await killed.json()
        assert killed.status == 200 and state["down"] == [TOP] and state["faults"][0]["until"] > time.time()
        third = await dash.tick()
        assert third["nodes"][TOP] == {"up": False} and third["control"]["down"] == [TOP]
        after = await (await client.get("/api/resolve", params={"handle": DEMO})).json()
        assert [h["node"] for h in after["answer"]["trace"]][:2] == [TOP, DR]
        history = await (await client.get("/api/history", params={"node": REC})).json()
        assert len(history["points"]) == 3 and history["points"][1]["rps"] > 0
        bad = await client.post("/api/faults", json={"kind": "kill", "nodes": ["nobody"]})
        assert bad.status == 400 and "no node named nobody" in (await bad.json())["error"]
        healed = await (await client.post("/api/heal", json={})).json()
        assert healed["faults"] == [] and healed["down"] == []
        lat = await (await client.post("/api/latency", json={"latency": "on", "scenario": "internet"})).json()
        assert (lat["latency"], lat["scenario"]) == ("on", "internet")
    finally:
        await client.close()


async def test_events_stream_snapshots(ops: Ops) -> None:
    client, dash = await _client(ops)
    try:
        async with client.get("/api/events") as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            await dash.tick()
            lines = []
            while not any(line.startswith(b"data: ") for line in lines):
                lines.append(await asyncio.wait_for(resp.content.readline(), 10))
            data = json.loads(next(line for line in lines if line.startswith(b"data: "))[6:])
            assert set(data["nodes"]) == set(ops.cluster.worker.names)
    finally:
        await client.close()


async def test_controls_beyond_loopback_need_the_admin_credentials(ops: Ops) -> None:
    client, _ = await _client(ops, admin=("300%3A0.NA%2F88", "s3cret"))
    try:
        refused = await client.post("/api/heal", json={})
        assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        nope = base64.b64encode(b"300%3A0.NA%2F88:nope").decode()
        wrong = await client.post("/api/heal", json={}, headers={"Authorization": f"Basic {nope}"})
        assert wrong.status == 401
        token = base64.b64encode(b"300%3A0.NA%2F88:s3cret").decode()
        ok = await client.post("/api/heal", json={}, headers={"Authorization": f"Basic {token}"})
        assert ok.status == 200
        assert (await client.get("/api/topology")).status == 200  # reading needs nothing
    finally:
        await client.close()


# -- the commands, against a cluster that runs already -------------------------------------------------------------

async def test_fault_status_and_dashboard_commands(ops: Ops) -> None:
    _describe(ops)
    data_dir = str(ops.cluster.data_dir)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, *args)

    kill = await cli("fault", "kill", ENT, "--duration", "120", "--data-dir", data_dir)
    assert kill.returncode == 0 and f"kill {ENT}" in kill.stdout and "s left" in kill.stdout
    status = await cli("status", "--data-dir", data_dir)
    assert status.returncode == 1  # a node is down
    assert f"kill {ENT}" in status.stdout and f"nodes down: {ENT}" in status.stdout
    part = await cli("fault", "partition", REC, "--from", TOP, DR, "--json", "--data-dir", data_dir)
    assert [f["kind"] for f in json.loads(part.stdout)["faults"]].count("partition") == 1
    bad = await cli("fault", "slow", "nobody", "--factor", "2", "--data-dir", data_dir)
    assert bad.returncode != 0 and "no node named" in bad.stderr
    heal = await cli("fault", "heal", "--data-dir", data_dir)
    assert heal.returncode == 0 and "faults in force: none" in heal.stdout
    port = free_base_port(1)
    dash = spawn([IDRESOLVE, "dashboard", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"], env=cli_env())
    try:
        line = await asyncio.to_thread(dash.wait_for_line, "dashboard of", timeout_s=30)
        assert f"http://127.0.0.1:{port}/" in line

        def snapshot() -> dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=10) as r:  # noqa: S310
                return dict(json.loads(r.read()))

        snap = await asyncio.to_thread(snapshot)
        assert set(snap["nodes"]) == set(ops.cluster.worker.names) and all(f["up"] for f in snap["nodes"].values())
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read())
        assert b"/static/dashboard.js" in page
        await asyncio.to_thread(wait_until, lambda: json.loads(
            (ops.cluster.data_dir / "control.json").read_text())["dashboard"], timeout_s=10)
    finally:
        await asyncio.to_thread(stop_proc, dash)


async def test_resolve_takes_any_identifier_and_refuses_none(ops: Ops) -> None:
    client, _ = await _client(ops)
    try:
        odd = await (await client.get("/api/resolve", params={"handle": "88.118.9/a b?c#d%e"})).json()
        assert odd["answer"]["responseCode"] == 100 and odd["answer"]["handle"] == "88.118.9/a b?c#d%e"
        missing = await client.get("/api/resolve", params={"handle": ""})
        assert missing.status == 400
    finally:
        await client.close()
