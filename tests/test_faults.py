"""Faults at run time: what a client sees during each one (failover, timeouts) and after it is undone.

The minimal topology runs in-process (one worker in the test's loop, latency model off, hop timeout
0.3 s) with its control channel; faults go through ``cluster.faults.Controller``, the client the CLI and
the dashboard use. Delays are checked on the link counters (what the emulated network applied), never on
the wall clock.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clusterutil import wait_until
from idresolve.cluster.bootstrap import DEMO_PREFIX, DEMO_SUFFIX
from idresolve.cluster.faults import Controller, FaultError, FaultSet, fault_from_json, new_fault
from idresolve.core.codes import ResponseCode
from idresolve.net.blocking import ProtocolClientError
from idresolve.net.links import LinkEffect
from idresolve.nodes.recursive import TIMEOUT_CODE
from opsutil import DR, ENT, REC, SEC, TOP, Ops, ops_cluster

DEMO = f"{DEMO_PREFIX}/{DEMO_SUFFIX}"
NODES = (TOP, DR, SEC, ENT, REC, "sec-steel-jinan")


def hops(resp) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [(h.node, h.code) for h in resp.trace]


# -- the fault table (pure) ---------------------------------------------------------------------------------

def test_partition_drops_both_ways_between_the_sides_only() -> None:
    fs = FaultSet()
    assert fs.effect("a", "b") is None
    fs.add(fault_from_json({"id": "p", "kind": "partition", "nodes": ["a", "b"]}))
    assert fs.effect("a", "c") == fs.effect("c", "b") == LinkEffect(dropped=True)
    assert fs.effect("a", "b") is None and fs.effect("c", "d") is None  # each side works inside itself
    fs.add(fault_from_json({"id": "q", "kind": "partition", "nodes": ["c"], "others": ["d"]}))
    assert fs.effect("d", "c") == LinkEffect(dropped=True) and fs.effect("c", "e") is None
    assert fs.remove("p") is not None and fs.effect("a", "c") is None


def test_slow_and_link_faults_combine() -> None:
    fs = FaultSet()
    fs.add(fault_from_json({"id": "s1", "kind": "slow", "nodes": ["a"], "factor": 3}))
    fs.add(fault_from_json({"id": "s2", "kind": "slow", "nodes": ["b"], "factor": 2}))
    fs.add(fault_from_json({"id": "l1", "kind": "link", "nodes": ["a", "b"], "delayMs": 5, "loss": 0.5}))
    fs.add(fault_from_json({"id": "l2", "kind": "link", "nodes": ["b", "a"], "delayMs": 1, "loss": 0.5}))
    eff = fs.effect("b", "a")
    assert eff is not None and (eff.factor, eff.extra_ms, eff.loss, eff.dropped) == (6.0, 6.0, 0.75, False)
    assert fs.effect("a", "c") == LinkEffect(factor=3.0)
    assert fs.effect("c", "d") is None


@pytest.mark.parametrize(("data", "problem"), [
    ({"kind": "explode", "nodes": ["a"]}, "kind must be one of"),
    ({"kind": "kill", "nodes": ["a", "b"]}, "names 1 node"),
    ({"kind": "link", "nodes": ["a"]}, "names 2 nodes"),
    ({"kind": "partition", "nodes": []}, "at least one node"),
    ({"kind": "partition", "nodes": ["a"], "others": ["a"]}, "both sides"),
    ({"kind": "slow", "nodes": ["a"], "factor": 0.5}, "factor must be"),
    ({"kind": "slow", "nodes": ["a"], "factor": True}, "factor must be"),
    ({"kind": "link", "nodes": ["a", "b"], "loss": 2}, "loss must be"),
    ({"kind": "kill", "nodes": ["nobody"]}, "no node named nobody"),
    ({"kind": "kill", "nodes": "a"}, "list of node names"),
    ([], "JSON object"),
])
def test_bad_faults_are_refused_with_the_reason(data: object, problem: str) -> None:
    with pytest.raises(FaultError, match=problem):
        fault_from_json(data, known=["a", "b"])


def test_a_duration_sets_the_expiry() -> None:
    f = new_fault("kill", ["a"], duration_s=30, now=1000.0, known=["a"])
    assert f.until == 1030.0 and FaultSet(faults={f.id: f}).expired(1030.0) == [f]
    with pytest.raises(FaultError, match="duration"):
        new_fault("kill", ["a"], duration_s=-1, now=1000.0)


# -- what a client sees ---------------------------------------------------------------------------------------

@pytest.fixture
async def ops(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with ops_cluster(tmp_path) as o:
        yield o


async def test_kill_a_top_level_node_fails_over_and_restart_brings_it_back(ops: Ops) -> None:
    before = await ops.resolve(DEMO)
    assert before.code == ResponseCode.SUCCESS and hops(before)[0] == (TOP, 303)
    state = await ops.ctl("add", new_fault("kill", [TOP], now=time.time(), known=NODES))
    assert state["down"] == [TOP] and [f["kind"] for f in state["faults"]] == ["kill"]
    during = await ops.resolve(DEMO)
    assert during.code == ResponseCode.SUCCESS
    assert hops(during)[:2] == [(TOP, TIMEOUT_CODE), (DR, 303)]  # refused at once, then the DR node
    with pytest.raises(ProtocolClientError, match="Connection refused"):  # dialling the killed node itself
        await ops.call(TOP, "resolve", "0.NA/88.118")
    state = await ops.ctl("remove", kind="kill", node=TOP)
    assert state["down"] == [] and state["faults"] == []
    back = await ops.call(TOP, "resolve", "0.NA/88.118")
    assert back.code == ResponseCode.SUCCESS  # the same store: the registry is still there


async def test_a_killed_secondary_without_mirror_times_out_the_resolution(ops: Ops) -> None:
    await ops.ctl("add", new_fault("kill", [SEC], now=time.time(), known=NODES))
    during = await ops.resolve(DEMO)
    assert during.code == ResponseCode.ERROR and hops(during)[-1] == (SEC, TIMEOUT_CODE)
    await ops.ctl("heal")
    assert (await ops.resolve(DEMO)).code == ResponseCode.SUCCESS


async def test_partition_from_every_top_level_node_then_heal(ops: Ops) -> None:
    await ops.ctl("add", new_fault("partition", [REC], others=[TOP, DR], now=time.time(), known=NODES))
    during = await ops.resolve(DEMO)
    assert during.code == ResponseCode.ERROR and "no top-level node answered" in during.message
    assert hops(during) == [(TOP, TIMEOUT_CODE), (DR, TIMEOUT_CODE)]  # both waited for, both timed out
    # The rest of the cluster still talks: the top-level nodes reach each other (not partitioned).
    assert (await ops.call(DR, "resolve", "0.NA/88.118")).code == ResponseCode.SUCCESS
    state = await ops.ctl("heal")
    assert state["faults"] == []
    after = await ops.resolve(DEMO)
    assert after.code == ResponseCode.SUCCESS


async def test_slow_node_multiplies_its_link_delays(ops: Ops) -> None:
    link = ops.cluster.worker.links[REC][0]
    await ops.resolve(DEMO)
    base = link.stats.delay_s_total  # latency model off: no delay at all
    assert base == 0.0
    await ops.ctl("add", new_fault("slow", [SEC], factor=20, now=time.time(), known=NODES))
    resp = await ops.resolve(DEMO)
    assert resp.code == ResponseCode.SUCCESS
    # One hop to the slowed secondary: 20 x the 1 ms floor, out and back; the other hops pay nothing.
    assert link.stats.delay_s_total - base == pytest.approx(0.040)
    await ops.ctl("heal")
    await ops.resolve(DEMO)
    assert link.stats.delay_s_total - base == pytest.approx(0.040)


async def test_a_lossy_link_times_out_its_hop_and_a_delayed_one_pays(ops: Ops) -> None:
    link = ops.cluster.worker.links[REC][0]
    state = await ops.ctl("add", new_fault("link", [REC, ENT], loss=1.0, now=time.time(), known=NODES))
    (fid,) = [f["id"] for f in state["faults"]]
    lossy = await ops.resolve(DEMO)
    assert lossy.code == ResponseCode.ERROR and hops(lossy)[-1] == (ENT, TIMEOUT_CODE)
    await ops.ctl("remove", fault_id=fid)
    await ops.ctl("add", new_fault("link", [ENT, REC], delay_ms=7.5, now=time.time(), known=NODES))
    before = link.stats.delay_s_total
    assert (await ops.resolve(DEMO)).code == ResponseCode.SUCCESS
    assert link.stats.delay_s_total - before == pytest.approx(0.015)  # 7.5 ms each way, that hop only


async def test_a_fault_with_a_duration_undoes_itself(ops: Ops) -> None:
    await ops.ctl("add", new_fault("kill", [ENT], duration_s=0.2, now=time.time(), known=NODES))
    assert (await ops.ctl("state"))["down"] == [ENT]

    def healed() -> bool:
        state = ops.control.state()
        return not state["faults"] and not state["down"]

    await asyncio.to_thread(wait_until, healed, timeout_s=10)
    assert (await ops.resolve(DEMO)).code == ResponseCode.SUCCESS


async def test_the_latency_switch_reaches_every_link(ops: Ops) -> None:
    link = ops.cluster.worker.links[REC][0]
    state = await ops.ctl("latency", "on", "before-interconnect")
    assert (state["latency"], state["scenario"]) == ("on", "before-interconnect")
    assert not link.model.is_off
    with pytest.raises(FaultError, match="no latency scenario"):
        await ops.ctl("latency", "on", "no-such-scenario")
    state = await ops.ctl("latency", "off", None)
    assert state["latency"] == "off" and link.model.is_off


async def test_the_control_channel_needs_the_token(ops: Ops) -> None:
    url = ops.control.urls[0]

    def anonymous() -> int:
        try:
            urllib.request.urlopen(url + "/control", timeout=5)  # noqa: S310 - loopback
        except urllib.error.HTTPError as exc:
            return exc.code
        return 200

    assert await asyncio.to_thread(anonymous) == 401
    wrong = Controller([{"url": url}], "0" * 64)
    with pytest.raises(FaultError, match="control token"):
        await asyncio.to_thread(wrong.state)
    with pytest.raises(FaultError, match="no node named"):
        await asyncio.to_thread(ops.control.remove, kind="kill", node="nobody")


async def test_a_node_that_cannot_listen_again_says_why_and_can_be_retried(ops: Ops) -> None:
    from clusterutil import listening_socket

    await ops.ctl("add", new_fault("kill", [ENT], now=time.time(), known=NODES))
    with listening_socket(ops.cluster.plan.node(ENT).http_port):  # someone took its port meanwhile
        state = await ops.ctl("heal")
        assert state["down"] == [ENT] and "cannot listen again" in state["errors"][ENT]
    state = await ops.ctl("remove", kind="kill", node=ENT)  # `idresolve fault restart` tries again
    assert state["down"] == [] and state["errors"] == {}
    assert (await ops.resolve(DEMO)).code == ResponseCode.SUCCESS
