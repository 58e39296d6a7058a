"""Statistics that stream: counts per hour and latency histograms whose size is bounded by their range.

Latencies are kept in whole microseconds, bucketed like an HDR histogram with three significant figures
(``bucket``: below 2,048 us exactly, above that with 11 significant bits, the bucket's midpoint), in
dicts of bucket -> count: one per hour, one per hop role, one for writes. Memory depends on the range of
latencies (a few thousand buckets at most), not on how long the day is. The report reads percentiles off
them with ``bench.hist.Buckets`` (the figures of an ``hdrh`` histogram of the same counts; ``sim.report``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..bench.hist import Buckets, distribution
from ..core.codes import ResponseCode

HOUR_S = 3600.0


def bucket(us: int) -> int:
    """``us`` to its bucket (3 significant figures, like ``hdrh`` at 3)."""
    if us < 2048:
        return us if us > 0 else 0
    s = us.bit_length() - 11
    return ((us >> s) << s) + (1 << (s - 1))


def add(hist: dict[int, int], us: int) -> None:
    """Count ``us`` in its bucket (``bucket`` written out: a walk counts two)."""
    if us >= 2048:
        s = us.bit_length() - 11
        us = ((us >> s) << s) + (1 << (s - 1))
    elif us < 0:
        us = 0
    hist[us] = hist.get(us, 0) + 1


def merge(into: dict[int, int], other: Mapping[int, int]) -> dict[int, int]:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v
    return into


class Hour:
    """What happened to the requests that arrived in one hour of the run."""

    __slots__ = ("offered", "answered", "ok", "not_found", "failed", "shed", "timeouts", "hits", "lat",
                 "writes", "writes_failed", "unreachable", "upstream")

    def __init__(self) -> None:
        self.offered = self.answered = self.ok = self.not_found = self.failed = self.shed = 0
        self.timeouts = self.hits = self.writes = self.writes_failed = self.unreachable = self.upstream = 0
        self.lat: dict[int, int] = {}

    def to_dict(self, index: int, start_s: float, length_s: float = HOUR_S) -> dict[str, Any]:
        h = Buckets(self.lat)
        out: dict[str, Any] = {"hour": index, "start_s": start_s, "length_s": length_s, "offered": self.offered,
                               "offered_per_s": round(self.offered / length_s, 3), "answered": self.answered,
                               "answered_per_s": round(self.answered / length_s, 3), "ok": self.ok,
                               "not_found": self.not_found, "failed": self.failed, "shed": self.shed,
                               "timeouts": self.timeouts, "unreachable": self.unreachable,
                               "cache_hits": self.hits,
                               "cache_hit_ratio": round(self.hits / self.answered, 6) if self.answered else None,
                               "upstream_requests": self.upstream, "writes": self.writes,
                               "writes_failed": self.writes_failed}
        out["latency_ms"] = percentiles_ms(h)
        return out


def percentiles_ms(h: Any) -> dict[str, float | None]:
    if h.get_total_count() == 0:
        return {"p50": None, "p90": None, "p99": None, "p999": None, "mean": None, "max": None}
    ms = lambda us: round(us / 1000.0, 3)  # noqa: E731
    return {"p50": ms(h.get_value_at_percentile(50.0)), "p90": ms(h.get_value_at_percentile(90.0)),
            "p99": ms(h.get_value_at_percentile(99.0)), "p999": ms(h.get_value_at_percentile(99.9)),
            "mean": ms(h.get_mean_value()), "max": ms(h.get_max_value())}


class Stats:
    """Everything a run measures; the engine calls ``hour(t)`` and writes into what it returns."""

    def __init__(self, t_start: float, hours: int) -> None:
        self.t_start = t_start
        self.hours = [Hour() for _ in range(max(1, hours))]
        self.warm = Hour()  # what arrived during the warm-up, before t_start: not reported
        self.hops: dict[str, dict[int, int]] = {}  # role -> latency buckets of the hops that got an answer
        self.hop_timeouts: dict[str, int] = {}
        self.hop_counts: dict[int, int] = {}  # upstream hops taken -> resolutions
        self.write_lat: dict[int, int] = {}
        self.codes: dict[int, int] = {}
        self.failures: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []

    def hour(self, t: float) -> Hour:
        i = int((t - self.t_start) / HOUR_S)
        hours = self.hours
        if i >= len(hours):  # answers that come after the last hour belong to it
            i = len(hours) - 1
        return hours[i] if t >= self.t_start else self.warm

    # -- totals --------------------------------------------------------------------------------------
    def total_latency(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for h in self.hours:
            merge(out, h.lat)
        return out

    def totals(self) -> dict[str, int]:
        keys = ("offered", "answered", "ok", "not_found", "failed", "shed", "timeouts", "hits", "writes",
                "writes_failed", "unreachable", "upstream")
        return {k: sum(getattr(h, k) for h in self.hours) for k in keys}

    def per_hop(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role in sorted(set(self.hops) | set(self.hop_timeouts)):
            h = Buckets(self.hops.get(role, {}))
            out[role] = {"answered": h.get_total_count(), "timeouts": self.hop_timeouts.get(role, 0),
                         "latency_ms": percentiles_ms(h), "distribution": distribution(h)}
        return out


def code_name(code: int) -> str:
    try:
        return ResponseCode(code).name.lower()
    except ValueError:
        return str(code)
