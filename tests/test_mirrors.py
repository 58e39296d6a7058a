"""Mirrors of a secondary node: the topology, HS_SITE naming primary and mirrors, replication of every
record, read-only mirrors, recursive failover between the servers of a referral, and the lag measured."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from clusterutil import MINIMAL, run_cli, wait_until
from idresolve.cluster.faults import new_fault
from idresolve.cluster.plan import make_plan
from idresolve.core.codes import ResponseCode
from idresolve.core.messages import Response
from idresolve.core.site import SiteInfo
from idresolve.core.topology import TopologyError, load_topology, parse_topology
from idresolve.core.values import HS_SITE, site_value, string_value
from idresolve.nodes.recursive import TIMEOUT_CODE, Ask, Done, RecursiveResolver, Upstream
from opsutil import HOSTED, MIR, REC, SEC, TOP, Ops, mirrored_minimal, ops_cluster

# -- the topology ----------------------------------------------------------------------------------------


def test_a_mirror_is_a_node_of_its_own_placed_last(tmp_path: Path) -> None:
    topo = load_topology(mirrored_minimal(tmp_path))
    (mirror,) = topo.mirrors_of(SEC)
    assert (mirror.name, mirror.role, mirror.prefix, mirror.mirror_of, mirror.location.name) == (
        MIR, "mirror", "88.118", SEC, "jinan")
    assert topo.running_nodes()[-1] == mirror and topo.server_for_prefix("88.118").name == SEC
    assert topo.resolvable_nationally(mirror)
    plain = make_plan(load_topology(MINIMAL))
    mirrored = make_plan(topo)
    for n in plain.nodes:  # adding a mirror moves no other node's ports
        assert mirrored.node(n.name).tcp_port == n.tcp_port
    assert mirrored.node(MIR).site().primary is False and mirrored.node(SEC).site().primary is True
    assert [m.name for m in mirrored.mirrors_of(SEC)] == [MIR]


@pytest.mark.parametrize(("mirrors", "problem"), [
    ('[{ name = "m1", location = "atlantis" }]', "location 'atlantis' does not exist"),
    ('[{ name = "m1" }]', "missing 'location'"),
    ('[{ name = "m1", location = "jinan", prefix = "88.1" }]', "unknown key"),
    ('"m1"', "must be a list"),
    ('[{ name = "sec-tyre-qingdao", location = "jinan" }]', "already used"),
])
def test_bad_mirrors_are_refused(mirrors: str, problem: str) -> None:
    text = MINIMAL.read_text(encoding="utf-8").replace(
        'industry = "tyres and rubber"\n', f'industry = "tyres and rubber"\nmirrors = {mirrors}\n', 1)
    with pytest.raises(TopologyError, match=problem):
        parse_topology(text)


def test_shandong_has_mirrors_and_their_ports_come_last() -> None:
    topo = load_topology(MINIMAL.parent / "shandong.toml")
    plan = make_plan(topo)
    mirrors = plan.by_role("mirror")
    assert len(mirrors) == 2 and {m.spec.mirror_of for m in mirrors} == {"sec-tyre-qingdao", "sec-appliance-qingdao"}
    assert max(n.index for n in plan.nodes if n.role != "mirror") < min(m.index for m in mirrors)
    assert plan.node("rec-jinan").http_port == 26523  # the documented address stays


# -- failover in the node logic (pure) -----------------------------------------------------------------------

def _referral(*servers: Upstream) -> Response:
    sites = tuple(site_value(i + 1, _site(u, primary=i == 0)) for i, u in enumerate(servers))
    return Response(0, 1, ResponseCode.PREFIX_REFERRAL, "0.NA/88.118", values=sites)


def _site(u: Upstream, *, primary: bool) -> SiteInfo:
    from idresolve.core.site import Interface, Server

    return SiteInfo((Server(1, u.host, (Interface("TCP", u.port),)),), primary=primary,
                    attributes=(("name", u.name), ("location", u.location)))


def test_a_resolution_fails_over_from_primary_to_mirror_and_remembers() -> None:
    top, sec, mir = (Upstream("top", "127.0.0.1", 1), Upstream("sec", "127.0.0.1", 2), Upstream("mir", "127.0.0.1", 3))
    r = RecursiveResolver([top], root_down_s=30)
    res = r.begin("88.118/X", 100.0)
    res.on_response(_referral(sec, mir), 100.0, 10)
    assert isinstance(res.step, Ask) and res.step.target == sec
    res.on_timeout(100.5, 500_000)
    assert isinstance(res.step, Ask) and res.step.target == mir  # the next server of the site
    found = Response(0, 1, ResponseCode.SUCCESS, "88.118/X", values=(string_value(1, "URL", "u"),))
    res.on_response(found, 100.6, 100)
    assert isinstance(res.step, Done) and res.step.code == ResponseCode.SUCCESS
    assert [(h.node, h.code) for h in res.step.trace] == [("top", 303), ("sec", TIMEOUT_CODE), ("mir", 1)]
    # The next resolution under the prefix (from the cached referral) asks the mirror first...
    nxt = r.begin("88.118/Y", 101.0)
    assert isinstance(nxt.step, Ask) and nxt.step.target == mir
    # ... until the primary's down time has passed.
    later = r.begin("88.118/Z", 131.0)
    assert isinstance(later.step, Ask) and later.step.target == sec


def test_the_last_server_timing_out_ends_the_resolution() -> None:
    top, sec, mir = (Upstream("top", "127.0.0.1", 1), Upstream("sec", "127.0.0.1", 2), Upstream("mir", "127.0.0.1", 3))
    res = RecursiveResolver([top]).begin("88.118/X", 0.0)
    res.on_response(_referral(sec, mir), 0.0, 1)
    res.on_timeout(1.0, 1)
    res.on_timeout(2.0, 1)
    assert isinstance(res.step, Done) and res.step.code == ResponseCode.ERROR and "mir" in res.step.message


def test_a_busy_primary_sends_the_walk_to_its_mirror() -> None:
    top, sec, mir = (Upstream("top", "127.0.0.1", 1), Upstream("sec", "127.0.0.1", 2), Upstream("mir", "127.0.0.1", 3))
    res = RecursiveResolver([top]).begin("88.118/X", 0.0)
    res.on_response(_referral(sec, mir), 0.0, 1)
    res.on_response(Response(0, 1, ResponseCode.SERVER_TOO_BUSY, "88.118/X"), 0.1, 1)
    assert isinstance(res.step, Ask) and res.step.target == mir


# -- a running cluster with a mirror ---------------------------------------------------------------------------

@pytest.fixture
async def ops(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with ops_cluster(tmp_path, config=mirrored_minimal(tmp_path)) as o:
        yield o


def _lag(ops: Ops) -> tuple[float, int]:
    rep = ops.cluster.worker.replicators[SEC]
    (peer,) = rep.peers
    return rep.lag_s(peer), len(rep.pending[peer.address])


async def _at_mirror(ops: Ops, handle: str, code: int = ResponseCode.SUCCESS) -> None:
    def there() -> bool:
        with ops.client(MIR) as c:
            return c.resolve(handle).code == code

    await asyncio.to_thread(wait_until, there, timeout_s=10)


async def test_hs_site_names_primary_then_mirror(ops: Ops) -> None:
    rec = await ops.call(TOP, "resolve", "0.NA/88.118")
    sites = [SiteInfo.from_bytes(v.data) for v in rec.values if v.type == HS_SITE]
    assert [(dict(s.attributes)["name"], s.primary) for s in sites] == [(SEC, True), (MIR, False)]


async def test_the_mirror_holds_the_secondarys_records_and_refuses_writes(ops: Ops) -> None:
    # What the secondary held before the mirror started (the enterprise prefix records) arrives too.
    await _at_mirror(ops, f"0.NA/{HOSTED}")
    handle = f"{HOSTED}/MIRRORED-1"
    made = await ops.call(SEC, "create", handle, (string_value(1, "URL", "https://example.com/1"),), prefix=HOSTED)
    assert made.code == ResponseCode.SUCCESS
    await _at_mirror(ops, handle)
    refused = await ops.call(MIR, "create", f"{HOSTED}/AT-MIRROR", (string_value(1, "URL", "x"),), prefix=HOSTED)
    assert refused.code == ResponseCode.SERVER_BACKUP and SEC in refused.message
    gone = await ops.call(SEC, "delete", handle, prefix=HOSTED)
    assert gone.code == ResponseCode.SUCCESS
    await _at_mirror(ops, handle, ResponseCode.HANDLE_NOT_FOUND)
    assert _lag(ops) == (0.0, 0)


async def test_a_killed_primary_is_answered_for_by_its_mirror(ops: Ops) -> None:
    handle = f"{HOSTED}/FAILOVER-1"
    await ops.call(SEC, "create", handle, (string_value(1, "URL", "https://example.com/f"),), prefix=HOSTED)
    await _at_mirror(ops, handle)
    await ops.ctl("add", new_fault("kill", [SEC], now=time.time()))
    first = await ops.resolve(handle)
    assert first.code == ResponseCode.SUCCESS
    assert [(h.node, h.code) for h in first.trace][-2:] == [(SEC, TIMEOUT_CODE), (MIR, ResponseCode.SUCCESS)]
    second = await ops.resolve(handle)  # the primary is known to be down: straight to the mirror
    assert [h.node for h in second.trace] == [TOP, MIR]
    await ops.ctl("heal")


async def test_lag_grows_while_a_mirror_is_down_and_returns_to_zero(ops: Ops) -> None:
    await ops.ctl("add", new_fault("kill", [MIR], now=time.time()))
    for i in range(5):
        resp = await ops.call(SEC, "create", f"{HOSTED}/WHILE-DOWN-{i}", (string_value(1, "URL", "u"),), prefix=HOSTED)
        assert resp.code == ResponseCode.SUCCESS
    await asyncio.to_thread(wait_until, lambda: _lag(ops)[0] > 0.05, timeout_s=10)
    lag, pending = _lag(ops)
    assert pending == 5
    metrics = ops.cluster.worker.hosted[SEC].metrics.render().decode()
    assert f'idresolve_replication_peer_pending{{peer="{MIR}"}} 5.0' in metrics
    assert f'idresolve_replication_lag_seconds{{peer="{MIR}"}}' in metrics
    await ops.ctl("heal")  # the mirror starts again on its store; the primary's retries reach it
    await asyncio.to_thread(wait_until, lambda: _lag(ops) == (0.0, 0), timeout_s=20)
    await _at_mirror(ops, f"{HOSTED}/WHILE-DOWN-4")
    via = await ops.resolve(f"{HOSTED}/WHILE-DOWN-0", via=REC)
    assert via.code == ResponseCode.SUCCESS


async def test_the_registry_lag_is_measured_between_top_level_nodes(tmp_path: Path) -> None:
    async with ops_cluster(tmp_path) as o:
        rep = o.cluster.worker.replicators[TOP]
        (peer,) = rep.peers
        assert rep.lag_s(peer) == 0.0
        text = o.cluster.worker.hosted[TOP].metrics.render().decode()
        assert f'idresolve_replication_lag_seconds{{peer="{peer.name}"}} 0.0' in text


def test_bench_replication_reports_lag_and_the_catch_up(tmp_path: Path) -> None:
    """``idresolve bench run --scenario replication`` on a topology with a mirror, as a user runs it."""
    out = tmp_path / "repl.json"
    res = run_cli("bench", "run", "--topology", str(mirrored_minimal(tmp_path)), "--scenario", "replication",
                  "--duration", "1", "--rate", "100", "--identifiers", "50", "--out", str(out), timeout_s=180)
    assert res.returncode == 0, res.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    rp = result["replication"]
    assert (rp["primary"], rp["mirror"]) == (SEC, MIR) and rp["writes"]["mirror"] >= 100
    assert rp["steady"]["mirror"]["samples"] > 0 and rp["steady"]["registry"]["samples"] > 0
    assert rp["mirror_down"]["pending_max"] > 0 and rp["mirror_down"]["lag_max_ms"] > 0  # it fell behind...
    assert rp["back"]["caught_up_s"] is not None  # ... and caught up once started again
    assert "lag (sampled every 50 ms)" in res.stdout


def test_bench_replication_needs_a_mirror() -> None:
    res = run_cli("bench", "run", "--scenario", "replication", "--duration", "1", "--identifiers", "10", timeout_s=120)
    assert res.returncode != 0 and "has no secondary node with a mirror" in (res.stdout + res.stderr)


def test_failover_between_the_servers_of_one_site() -> None:
    """One HS_SITE with two servers (the other way to list primary and mirror) fails over the same way."""
    from idresolve.core.site import Interface, Server

    top = Upstream("top", "127.0.0.1", 1)
    site = SiteInfo((Server(1, "127.0.0.1", (Interface("TCP", 2),)), Server(2, "127.0.0.1", (Interface("TCP", 3),))),
                    attributes=(("name", "sec"),))
    res = RecursiveResolver([top]).begin("88.118/X", 0.0)
    res.on_response(Response(0, 1, ResponseCode.PREFIX_REFERRAL, "0.NA/88.118", values=(site_value(1, site),)), 0.0, 1)
    assert isinstance(res.step, Ask) and res.step.target.port == 2
    res.on_timeout(1.0, 1)
    assert isinstance(res.step, Ask) and res.step.target.port == 3
