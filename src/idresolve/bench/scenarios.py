"""What ``idresolve bench run`` can measure, and the arithmetic on its results (no I/O here).

Scenarios (``--scenario``):

- ``cached``: identifiers already in the recursive node's cache (resolved once before the clock starts);
  nothing leaves the recursive node.
- ``cold``: the whole chain every time: ``FLAG_AUTHORITATIVE`` on the binary protocol, ``?auth=true`` over
  REST, so the recursive node bypasses its caches and asks top -> secondary -> enterprise.
- ``latency-on`` / ``latency-off``: cold resolutions at one moderate fixed rate on a cluster started with
  the latency model on / off: the pair shows what the model adds, and ``latency-on`` compares the mean
  with the model's expected sum of round trips over the identifier's path.
- ``kill-top``: cold resolutions at a fixed rate while the recursive node's first top-level node (in a
  process of its own) is killed with SIGKILL halfway: errors, timeouts, and how latency and throughput
  behave after, when the recursive node has moved to the next top-level node.

Modes: ``closed`` (the maximum rate), ``rate`` (open loop at a fixed rate), ``sweep`` (open loop at rising
rates around a closed-loop probe: the throughput-latency curve, the saturation point, then a run at half
of it). ``latency-*`` and ``kill-top`` always run open loop at a fixed rate.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..core.topology import Topology, TopologyError
from .config import DEFAULT_FIXED_RATE, MODES, PROTOCOLS, SCENARIOS, SWEEP_FRACTIONS, BenchScenario, RunConfig
from .expect import PathExpectation
from .hist import histogram, summary

__all__ = ["DEFAULT_FIXED_RATE", "MODES", "PROTOCOLS", "SCENARIOS", "SWEEP_FRACTIONS", "SWEEP_SLICE_S", "BenchScenario",
           "RunConfig", "aggregate_trace", "cluster_groups", "drifting", "kill_analysis", "latency_drift", "model_check",
           "saturation", "sustained"]


# -- groups of scenarios per cluster ----------------------------------------------------------------------

def cluster_groups(cfg: RunConfig) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(latency model, items) per cluster to start, in order; kill-top last in its cluster (it kills)."""
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for item in cfg.items():
        lat = SCENARIOS[item[0]].latency or cfg.latency
        groups.setdefault(lat, []).append(item)
    return [(lat, sorted(items, key=lambda it: SCENARIOS[it[0]].kill)) for lat, items in groups.items()]


# -- the latency model's expectation (computed in ``bench.expect``) -------------------------------------

def model_check(measured_mean_us: float, expected_ms: float, tolerance: float = 0.05) -> dict[str, Any]:
    expected_us = expected_ms * 1000.0
    ratio = measured_mean_us / expected_us if expected_us > 0 else 0.0
    return {"measured_mean_us": round(measured_mean_us, 1), "expected_mean_us": round(expected_us, 1),
            "ratio": round(ratio, 4), "tolerance": tolerance,
            "within": expected_us > 0 and abs(ratio - 1.0) <= tolerance}


# -- traces -------------------------------------------------------------------------------------------------

def aggregate_trace(samples: Iterable[tuple[str, Sequence[Any], float]], role_of: Mapping[str, str],
                    path_model: PathExpectation | None = None) -> dict[str, Any]:
    """Per role: how long the hops took at the recursive node (``elapsed_us`` of each traced hop), the
    recursive node's own share plus the client's loopback leg (client time minus the hops), and, when a
    model is given, what it expects per role. ``samples``: (handle, hops, client seconds)."""
    per_role: dict[str, list[int]] = {}
    expected: dict[str, list[float]] = {}
    first_tops: dict[str, int] = {}
    own: list[int] = []
    n = 0
    for handle, hops, seconds in samples:
        n += 1
        spent = 0
        for hop in hops:
            role = "cache" if hop.cached else role_of.get(hop.node, "?")
            if hop.code == -1:
                role = f"{role} (timed out)"
            per_role.setdefault(role, []).append(hop.elapsed_us)
            spent += hop.elapsed_us
        own.append(max(0, int(seconds * 1e6) - spent))
        tops = [h.node for h in hops if role_of.get(h.node) == "top" and h.code != -1]
        if tops:
            first_tops[tops[0]] = first_tops.get(tops[0], 0) + 1
        if path_model is not None:
            for role, ms in path_model.hops(handle, tops[0] if tops else None).items():
                expected.setdefault(role, []).append(ms * 1000.0)
    roles: dict[str, Any] = {}
    order = ["top", "secondary", "enterprise"]
    for role in sorted(per_role, key=lambda r: (order.index(r) if r in order else 9, r)):
        vals = per_role[role]
        s = summary(histogram(_counts(vals)))
        roles[role] = {"hops": len(vals), "per_resolution": round(len(vals) / max(1, n), 3),
                       "mean_us": round(statistics.fmean(vals), 1), "p50_us": s.get("p50_us"),
                       "p99_us": s.get("p99_us"), "max_us": max(vals)}
        if role in expected:
            roles[role]["model_us"] = round(statistics.fmean(expected[role]), 1)
    if own:
        s = summary(histogram(_counts(own)))
        roles["recursive + client"] = {"hops": len(own), "per_resolution": 1.0, "mean_us": round(statistics.fmean(own), 1),
                                       "p50_us": s.get("p50_us"), "p99_us": s.get("p99_us"), "max_us": max(own)}
    return {"samples": n, "roles": roles, "first_top": first_tops}


def _counts(values: Iterable[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


# -- sweeps -------------------------------------------------------------------------------------------------

SWEEP_SLICE_S = 0.25  # a sweep step's timeline resolution: enough slices to see a backlog build up
DRIFT_FACTOR = 2.0  # a step whose median latency at the end is over twice ...
DRIFT_SLACK_US = 1000  # ... and 1 ms above what it was at the start did not keep up


def latency_drift(timeline: Sequence[Mapping[str, Any]]) -> dict[str, int] | None:
    """Median latency over the first and the last third of a run's timeline (the slowest slice p50 in
    each third), or None when the run has fewer than three slices with answers."""
    rows = [r for r in timeline if r.get("p50_us") is not None]
    if len(rows) < 3:
        return None
    k = max(1, len(rows) // 3)
    return {"first_p50_us": max(int(r["p50_us"]) for r in rows[:k]),
            "last_p50_us": max(int(r["p50_us"]) for r in rows[-k:])}


def drifting(drift: Mapping[str, int] | None) -> bool:
    """Latency rose through the run: requests were queueing faster than they were answered."""
    if not drift:
        return False
    first, last = drift["first_p50_us"], drift["last_p50_us"]
    return last > DRIFT_FACTOR * first and last > first + DRIFT_SLACK_US


def sustained(step: Mapping[str, Any]) -> bool:
    """An open-loop step kept up with its offered rate: >= 95 % answered successfully at that rate, no
    timeouts or lost requests, at most 1 % errors (load shedding means saturation too), and no backlog
    building up (``drifting``): above its capacity a pipelined server still answers nearly everything
    within a short step, only later and later, which is not keeping up."""
    offered = float(step.get("offered_per_s") or 0.0)
    sent = max(1, int(step.get("sent", 0)))
    return (offered > 0 and float(step.get("rate_per_s", 0.0)) >= 0.95 * offered
            and int(step.get("timeouts", 0)) + int(step.get("lost", 0)) == 0
            and int(step.get("errors", 0)) <= 0.01 * sent and not step.get("aborted")
            and not drifting(step.get("drift")))


def saturation(steps: Sequence[Mapping[str, Any]]) -> float:
    """The highest offered rate a sweep sustained; when none did, the best rate achieved."""
    ok = [float(s["offered_per_s"]) for s in steps if sustained(s)]
    if ok:
        return max(ok)
    return max((float(s.get("rate_per_s", 0.0)) for s in steps), default=0.0)


# -- the kill -----------------------------------------------------------------------------------------------

def kill_analysis(slices: Sequence[Sequence[Any]], slice_s: float, kill_s: float | None) -> dict[str, Any]:
    """Before/after figures of a run where a node was killed at ``kill_s`` (``Recorder.slices``)."""
    if kill_s is None:
        return {"killed": False}

    def window(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        lat: dict[int, int] = {}
        ok = err = tmo = 0
        for _sent, o, e, t, d in rows:
            ok, err, tmo = ok + o, err + e, tmo + t
            for k, v in d.items():
                lat[k] = lat.get(k, 0) + v
        span = max(slice_s, len(rows) * slice_s)
        s = summary(histogram(lat))
        return {"seconds": round(len(rows) * slice_s, 3), "ok": ok, "errors": err, "timeouts": tmo,
                "rate_per_s": round(ok / span, 1), "mean_us": s.get("mean_us"), "p50_us": s.get("p50_us"),
                "p99_us": s.get("p99_us"), "max_us": s.get("max_us")}

    k = int(kill_s / slice_s)
    before = [s for s in slices[:k]]
    after = list(slices[k:])
    recovered_at = None
    for i in range(len(after)):
        if all(r[2] == 0 and r[3] == 0 for r in after[i:]):
            recovered_at = i
            break
    out: dict[str, Any] = {"killed": True, "kill_s": kill_s, "before": window(before[1:] or before),
                           "after": window(after), "errors_after": sum(r[2] for r in after),
                           "timeouts_after": sum(r[3] for r in after)}
    if recovered_at is not None:
        out["recovery_s"] = round(max(0.0, (k + recovered_at) * slice_s - kill_s), 3)
        out["steady_after"] = window(after[recovered_at + 1:] or after[recovered_at:])
    return out


def check_topology_node(topology: Topology, name: str, role: str) -> str | None:
    try:
        node = topology.node(name)
    except TopologyError:
        return f"the topology has no node {name!r}"
    if node.role != role:
        return f"{name!r} is a {node.role} node, not a {role} node"
    return None
