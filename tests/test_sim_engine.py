"""The scheduler, the queue model and what the node code does in virtual time (minimal topology, in process)."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest

from clusterutil import MINIMAL
from idresolve.core.codes import ResponseCode
from idresolve.core.handles import fold
from idresolve.sim.build import NodeSettings
from idresolve.sim.engine import RUN_GC_YOUNG, Engine
from idresolve.sim.events import parse_event
from idresolve.sim.nodes import Server
from idresolve.sim.report import build_report, dumps
from idresolve.sim.run import RunSpec, simulate
from idresolve.sim.space import SpaceSpec
from idresolve.sim.workload import Workload


def workload(**kw: object) -> Workload:
    base = Workload("t", topology=MINIMAL, resolutions=200 * 86_400.0, profile=(1.0,), duration_s=60.0,
                    keys="uniform", space=SpaceSpec(identifiers=5000), client_timeout_s=10.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def events(*lines: str) -> tuple:  # type: ignore[type-arg]
    return tuple(parse_event(x, 0.0) for x in lines)


# -- the queue model ----------------------------------------------------------------------------------

def test_a_server_serves_in_arrival_order_and_knows_its_queue() -> None:
    s = Server("n", shed_after_s=0.05, max_queue=3)
    assert s.occupy(0.0, 0.0, 0.010) == pytest.approx(0.010)
    start = max(0.001, s.busy_until)  # arrives while busy: waits for the one before (Lindley)
    assert s.occupy(0.001, start, 0.010) == pytest.approx(0.020)
    assert s.occupy(0.002, s.busy_until, 0.010) == pytest.approx(0.030)
    assert len(s.finishes) == 3 and s.peak_queue == 3
    assert not s.admit(0.003, s.busy_until)  # three admitted and not finished: the bound
    assert s.admit(0.025, s.busy_until)  # two have finished by then
    s.occupy(0.1, 0.1, 0.001)  # idle when it came: everything before has finished
    assert list(s.finishes) == [pytest.approx(0.101)]
    assert s.busy_s == pytest.approx(0.031) and s.sojourn_s == pytest.approx(0.010 + 0.019 + 0.028 + 0.001)
    slow = replace_speed(Server("m", shed_after_s=0.05, max_queue=10), 4.0)
    assert slow.occupy(0.0, 0.0, 0.01) == pytest.approx(0.04)


def replace_speed(s: Server, speed: float) -> Server:
    s.speed = speed
    return s


def test_shedding_follows_the_nodes_admission_rule_on_the_virtual_lag() -> None:
    s = Server("n", shed_after_s=0.05, max_queue=1000)
    s.occupy(0.0, 0.0, 1.0)
    assert s.admit(0.96, 1.0)  # would wait 40 ms: under the threshold
    # Waits far above the threshold: Admission refuses a growing share, deterministically (no draw).
    verdicts = [s.admit(0.5, 1.0) for _ in range(20)]  # 500 ms of lag: 95 % refused
    assert verdicts.count(False) >= 18 and s.admission.stats.shed_overload == verdicts.count(False)


def test_events_run_in_time_order_and_ties_in_the_order_scheduled() -> None:
    res = simulate(RunSpec(workload(duration_s=1.0), seed=1))
    engine: Engine = res.engine
    seen: list[str] = []
    t = engine.clock.now + 10
    for name, dt in (("b", 0.2), ("a", 0.1), ("c", 0.2), ("d", 0.0)):
        engine.at(t + dt, lambda _t, n: seen.append(n), name)
    engine._events_until(t + 1)
    assert seen == ["d", "a", "b", "c"]


# -- determinism ----------------------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_run_and_another_run_number_another() -> None:
    w = workload(duration_s=12.0, write_share=0.01, register_share=0.01, unknown_share=0.05)
    a, b = simulate(RunSpec(w, seed=3)), simulate(RunSpec(w, seed=3))
    assert a.engine.fingerprint == b.engine.fingerprint and a.engine.events_done == b.engine.events_done
    ra, rb = build_report(a), build_report(b)
    ra["wall_seconds"] = rb["wall_seconds"] = 0
    assert dumps(ra) == dumps(rb)
    c = simulate(RunSpec(w, seed=3, run=1))
    assert c.engine.fingerprint != a.engine.fingerprint
    assert simulate(RunSpec(w, seed=4)).engine.fingerprint != a.engine.fingerprint


def test_young_collections_run_less_often_during_a_run_and_as_before_after_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    next_hour = Engine._next_hour

    def spy(self: Engine, t: float) -> None:  # called inside the run, at every virtual hour and at its start
        seen.append(gc.get_threshold()[0])
        next_hour(self, t)

    monkeypatch.setattr(Engine, "_next_hour", spy)
    before = gc.get_threshold()
    simulate(RunSpec(workload(duration_s=2.0), seed=1))
    assert seen and min(seen) >= RUN_GC_YOUNG > before[0]
    assert gc.get_threshold() == before


# -- the node code in virtual time ------------------------------------------------------------------------

def test_walks_go_top_secondary_enterprise_then_straight_to_the_cached_referral() -> None:
    res = simulate(RunSpec(workload(duration_s=30.0), seed=1), paths=True)
    paths = res.engine.paths
    assert paths is not None
    assert "top-beijing>sec-tyre-qingdao>ent-tyre-qingdao-8" in paths  # the first walk under 88.118.8
    assert sum(paths.get("ent-tyre-qingdao-8", {}).values()) > 10 * sum(
        paths["top-beijing>sec-tyre-qingdao>ent-tyre-qingdao-8"].values())
    hop = build_report(res)["per_hop"]["top"]["latency_ms"]
    assert 30.2 <= hop["p50"] < 31.0  # 30 ms round trip between provinces, plus the service times
    t = res.stats.totals()
    assert t["answered"] == t["offered"] > 5_500 and t["ok"] > 0 and t["hits"] > 0
    # identifiers of the unconnected secondary (88.120) are not found nationally
    assert t["not_found"] > 0 and res.stats.failures == {}


def test_measured_timer_lateness_widens_each_hop_by_its_own_draws() -> None:
    """Every message draws its own timer error from the emulator's measured lateness: a hop (two messages)
    moves by the sum of two draws, and the model's jitter stays under it."""
    w = workload(duration_s=30.0)
    plain = build_report(simulate(RunSpec(w, seed=1)))["per_hop"]["top"]["latency_ms"]
    late = ((0.0001, 90), (0.00505, 10))  # 90% of firings 0.1 ms late, 10% about 5 ms late
    slow = build_report(simulate(RunSpec(w, seed=1, timer_late=late)))["per_hop"]["top"]["latency_ms"]
    assert 0.15 <= slow["p50"] - plain["p50"] <= 0.6  # most hops: two small draws
    assert slow["p99"] - plain["p99"] >= 4.0  # a fifth of hops has a 5 ms draw in it: the tail carries it
    assert slow["p99"] - plain["p99"] <= 11.0  # two large draws at most


def test_a_killed_top_level_node_is_skipped_for_the_next() -> None:
    res = simulate(RunSpec(workload(duration_s=20.0), seed=1, events=events("+0s kill top-beijing")), paths=True)
    assert res.engine.hop_nodes is not None and "top-nanjing" in res.engine.hop_nodes
    assert res.stats.hop_timeouts.get("top", 0) >= 1  # the refused connection, once: then root_down_s
    t = res.stats.totals()
    assert t["timeouts"] == 0 and t["failed"] == 0 and t["ok"] > 0


def test_a_partitioned_top_level_means_timeouts_and_no_upstream() -> None:
    w = workload(duration_s=20.0, nodes=NodeSettings(hop_timeout_s=1.0))
    res = simulate(RunSpec(w, seed=1, events=events("+0s partition top-beijing,top-nanjing")))
    assert res.stats.failures.get("no-upstream", 0) > 0
    assert res.stats.totals()["timeouts"] > 0


def test_an_overloaded_recursive_node_sheds_with_code_3() -> None:
    res = simulate(RunSpec(workload(duration_s=10.0), seed=1, events=events("+2s slow rec-jinan 500")))
    rep = build_report(res)
    assert rep["shed"] > 0 and rep["codes"]["server_too_busy"] == rep["shed"]
    assert rep["nodes"]["rec-jinan"]["shed"] > 0 and rep["nodes"]["rec-jinan"]["utilisation"] > 0.5


def test_connecting_a_secondary_allocates_and_replicates_its_prefix() -> None:
    w = workload(duration_s=15.0, keys="uniform")
    before = simulate(RunSpec(w, seed=2))
    after = simulate(RunSpec(w, seed=2, events=events("+1s connect sec-steel-jinan")))
    for top in ("top-beijing", "top-nanjing"):  # allocated at the primary, replicated to the other
        assert after.cluster.auth[top].node.store.get(fold("0.NA/88.120")) is not None
    assert before.cluster.auth["top-nanjing"].node.store.get(fold("0.NA/88.120")) is None
    assert after.stats.totals()["ok"] > before.stats.totals()["ok"]
    assert after.stats.totals()["not_found"] < before.stats.totals()["not_found"]
    assert after.stats.events[0]["note"] == "connected 1 secondary node(s)"


def test_writes_registrations_and_bursts_go_through_the_nodes() -> None:
    from idresolve.sim.workload import Burst

    w = workload(duration_s=20.0, write_share=0.02, register_share=0.02,
                 bursts=(Burst(5.0, "88.118.8", 3, 500, 1.0),))
    res = simulate(RunSpec(w, seed=1))
    t = res.stats.totals()
    assert t["writes"] > 100 and t["writes_failed"] == 0
    ent = res.cluster.auth["ent-tyre-qingdao-8"].node.store
    assert sum(1 for _ in ent.list_handles("88.118.8")) > 1500  # the bursts' 1,500 among them
    assert ent.overlay.count("88.118.8") >= 1500
    assert ResponseCode.SUCCESS in res.stats.codes


def test_a_parent_s_garbage_is_collected_once_before_its_runs_are_forked() -> None:
    import weakref

    from idresolve.sim.study import run_many

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    gc.disable()
    try:
        del a, b
        assert gone() is not None
        w = workload(duration_s=2.0)
        results = run_many([("a", RunSpec(w, seed=1, run=1)), ("b", RunSpec(w, seed=1, run=2))], None,
                           jobs=2, progress=False)
        assert gone() is None  # freed in the parent, not copied into each child
    finally:
        gc.enable()
    assert [label for label, _, _ in results] == ["a", "b"] and all(r["resolutions"] > 0 for _, r, _ in results)
