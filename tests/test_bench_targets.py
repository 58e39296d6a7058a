"""``bench.targets``: each target's status from hand-made reports (known answers), and what ``--check``
fails on. No cluster: the reports are the shape ``bench run`` writes."""

from __future__ import annotations

from typing import Any

import pytest

from idresolve.bench import targets

MB = 1024 * 1024


def _rss(mb: float, **extra: Any) -> dict[str, Any]:
    return {"total_bytes": int(mb * MB), "unreadable": [], "nodes_missing": [], "nodes_doubled": [], **extra}


def _cached_closed(cpu_rate: float | None, latency: str = "off", verdict: str = "agree") -> dict[str, Any]:
    node = {"runs": 3, "rate_per_s": 90_000.0, "crosscheck": verdict}
    if cpu_rate is not None:
        node["server_answers_per_cpu_s"] = cpu_rate
    return {"scenario": "cached", "protocol": "binary", "mode": "closed", "latency": latency, "cluster": "minimal",
            "median": {"node": node, "baseline": {"runs": 3, "server_answers_per_cpu_s": 100_000.0}}}


def _sweep(p99_us: int) -> dict[str, Any]:
    half = {"offered_per_s": 40_000.0, "flat": {"p99_us": p99_us}, "send_lag": {"p99_us": 100},
            "crosscheck": {"verdict": "agree"}}
    return {"scenario": "cached", "protocol": "binary", "mode": "sweep", "latency": "off", "cluster": "minimal",
            "sweep": {"node": {"probe": {"flat": {"server_answers_per_cpu_s": 100_000.0}}, "steps": [{"crosscheck": {"verdict": "agree"}}],
                               "saturation_per_s": 80_000.0, "half": half,
                               "half_median": {"runs": 3, "p99_us": p99_us, "ok_p99_us": p99_us - 10}}}}


def _latency_on(cluster: str, ratio: float) -> dict[str, Any]:
    return {"scenario": "latency-on", "protocol": "binary", "mode": "rate", "latency": "on", "cluster": cluster,
            "model": {"ratio": ratio, "measured_mean_us": 35_000.0 * ratio, "expected_mean_us": 35_000.0,
                      "first_top": "top-beijing"}}


def _by_id(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rep.setdefault("clusters", [])
    return {t["id"]: t for t in targets.targets(rep)}


@pytest.mark.parametrize("cpu_rate,status", [(114_543.0, "PASS"), (40_000.0, "PASS"), (39_999.0, "FAIL"),
                                             (None, "MISSING")])
def test_t1_is_answers_per_cpu_second_against_40000(cpu_rate: float | None, status: str) -> None:
    t1 = _by_id({"results": [_cached_closed(cpu_rate)]})["T1"]
    assert t1["status"] == status and t1["value"] == cpu_rate
    assert "H1" in t1["issue"]  # one figure for both issues, reported once


def test_t1_with_the_latency_model_on_is_not_applicable_not_a_pass() -> None:
    t1 = _by_id({"results": [_cached_closed(200_000.0, latency="on")]})["T1"]
    assert t1["status"] == "N/A" and t1["met"] is None and "latency model on" in t1["how"]


def test_a_fixed_rate_run_does_not_measure_t1() -> None:
    run = {**_cached_closed(200_000.0), "mode": "rate"}
    assert _by_id({"results": [run]})["T1"]["status"] == "NOT RUN"


@pytest.mark.parametrize("p99,status", [(1_319, "PASS"), (2_000, "PASS"), (2_001, "FAIL")])
def test_t2_is_the_p99_of_every_request_at_half_saturation(p99: int, status: str) -> None:
    t2 = _by_id({"results": [_sweep(p99)]})["T2"]
    assert (t2["status"], t2["value"]) == (status, p99)
    assert f"successes only p99 {p99 - 10} us" in t2["how"]


@pytest.mark.parametrize("cluster,ratio,status", [("shandong", 1.043, "PASS"), ("shandong", 0.951, "PASS"),
                                                  ("shandong", 1.051, "FAIL"), ("shandong", 0.94, "FAIL"),
                                                  ("minimal", 1.0, "N/A")])
def test_t3_is_within_five_percent_on_shandong_only(cluster: str, ratio: float, status: str) -> None:
    t3 = _by_id({"results": [_latency_on(cluster, ratio)]})["T3"]
    assert t3["status"] == status
    if status == "N/A":
        assert "Shandong" in t3["note"]


def test_t3_without_an_expectation_is_missing() -> None:
    run = _latency_on("shandong", 1.0)
    run["model"] = {"note": "no model expectation for this cluster"}
    t3 = _by_id({"results": [run]})["T3"]
    assert t3["status"] == "MISSING" and "no model expectation" in t3["how"]


def _shandong(ready_s: float, ready: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {"own": True, "topology": "shandong", "ready_s": ready_s, "rss_ready": ready, "rss_after": after}


def test_h3_and_h4_from_the_clusters_the_bench_started() -> None:
    by_id = _by_id({"results": [], "clusters": [_shandong(6.5, _rss(300), _rss(320))]})
    assert (by_id["H3"]["status"], by_id["H3"]["value"]) == ("FAIL", 6.5)
    assert (by_id["H4"]["status"], by_id["H4"]["value"]) == ("PASS", 320.0)


@pytest.mark.parametrize("after", [_rss(200, unreadable=[4242]), _rss(200, nodes_missing=["sec-steel-jinan"]),
                                   _rss(200, nodes_doubled=["rec-jinan"]), {}])
def test_h4_fails_when_the_memory_sum_cannot_be_trusted(after: dict[str, Any]) -> None:
    """An unreadable worker used to count as 0 MB and pass; a node no worker hosts means a process is not
    counted; a missing reading is no reading."""
    h4 = _by_id({"results": [], "clusters": [_shandong(1.2, _rss(200), after)]})["H4"]
    assert h4["status"] == "FAIL" and "cannot be trusted" in h4["how"], h4


def test_h3_and_h4_on_an_existing_or_minimal_cluster_are_not_applicable() -> None:
    existing = {"own": False, "topology": "shandong", "ready_s": None, "rss_ready": _rss(200), "rss_after": _rss(200)}
    for cluster in (existing, {**_shandong(1.0, _rss(100), _rss(100)), "topology": "minimal"}):
        by_id = _by_id({"results": [], "clusters": [cluster]})
        assert by_id["H3"]["status"] == by_id["H4"]["status"] == "N/A"


def _problems(results: list[dict[str, Any]], clusters: list[dict[str, Any]] | None = None) -> list[str]:
    rep = {"results": results, "clusters": clusters or []}
    rep["targets"] = targets.targets(rep)
    return targets.problems(rep)


def test_check_passes_a_clean_run_and_fails_each_kind_of_problem() -> None:
    assert _problems([_cached_closed(100_000.0), _sweep(900)]) == []
    failing = _problems([_cached_closed(10_000.0)])
    assert len(failing) == 1 and failing[0].startswith("target T1 FAIL")
    missing = _problems([_cached_closed(None)])
    assert len(missing) == 1 and missing[0].startswith("target T1 MISSING")
    errored = _problems([{"scenario": "cold", "protocol": "binary", "mode": "closed", "error": "the cluster went away"}])
    assert "cold/binary/closed failed: the cluster went away" in errored
    assert any(p.startswith("target H2 MISSING") for p in errored)  # it was asked for, and is not there
    assert _problems([_cached_closed(100_000.0, verdict="consistent")]) == []  # timeouts the server answered


def test_check_fails_when_server_counters_disagree_anywhere_in_a_result() -> None:
    top = _problems([_cached_closed(100_000.0, verdict="DISAGREE")])
    assert top == ["server counters disagree with the client in cached/binary/closed.median.node"]
    sweep = _sweep(900)
    sweep["sweep"]["node"]["steps"][0]["crosscheck"] = {"verdict": "DISAGREE"}
    assert _problems([sweep]) == ["server counters disagree with the client in cached/binary/sweep.sweep.node.steps[0]"]
    sweep["sweep"]["node"]["steps"][0]["crosscheck"] = {"verdict": "unavailable"}
    assert _problems([sweep]) == ["server counters unavailable in cached/binary/sweep.sweep.node.steps[0]"]


def test_rest_and_batch_targets() -> None:
    ts = targets.rest_batch_targets({"ratio": 0.71, "node": {"runs": [1, 2, 3]}},
                                    {"core": {"median_ids_per_s": 137_380.0}, "rest": {"median_ids_per_s": 99_999.0}})
    assert [(t["id"], t["status"]) for t in ts] == [("R1", "PASS"), ("B1", "PASS"), ("B2", "FAIL")]
    assert ts[0]["how"] == "median of 3 runs"
    assert targets.problems({"targets": ts}) == [
        "target B2 FAIL: batch registration, POST /api/batch to a node: identifiers/s: 99,999 ids/s (target >= 100,000)"]
    assert targets.check_text([]).startswith("check: every target")
    assert targets.check_text(["x"]) == "check FAILED:\n  x"
