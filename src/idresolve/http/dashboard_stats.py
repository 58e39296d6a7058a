"""The dashboard's figures: from two scrapes of a node's ``/metrics`` to what the page shows. Pure.

A sample is what ``bench.scrape.parse`` makes of a ``/metrics`` text: ``{(name, ((label, value), ...)):
number}``. ``figures(now, older, dt)`` compares the newest sample with an older one ``dt`` seconds before:
- ``rps``: requests answered per second, and ``ops``: the same by ``"surface op"`` (``/metrics`` and
  ``/healthz`` left out: they are the dashboard's own scrapes and probes);
- ``p50_ms``/``p99_ms``: from the latency histograms' buckets (upper bound of the bucket holding the
  quantile; answers of the fast paths count in the lowest bucket, as the nodes export them);
- ``errors``: answers per second that are failures (binary codes other than success, not found, values
  not found, referral and too busy; REST statuses 500 and above but 503); ``shed``: requests per second
  refused with code 3 / HTTP 503 (by admission or by the service);
- ``hit``: the recursive cache's hit ratio over the interval (None without resolutions);
- ``records``, ``cache_entries``: gauges; ``lag_s``: the largest replication lag towards any peer or
  mirror, and ``lag``: per peer; ``links``: requests per second sent to each other node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Sample = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]

OK_BINARY = {"1", "100", "200", "303"}
SHED_BINARY = "3"
UNCOUNTED_REST = {"GET /metrics", "GET /healthz"}  # the dashboard's own scrapes and health probes
SHED_TOTALS = ("idresolve_shed_overload_total", "idresolve_shed_rate_total", "idresolve_shed_inflight_total")


def _delta(now: Sample, older: Sample, key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
    return max(0.0, now.get(key, 0.0) - older.get(key, 0.0))


def quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of cumulative ``(le, count)`` pairs."""
    if not buckets:
        return None
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    for le, count in buckets:
        if count >= rank:
            return None if math.isinf(le) else le * 1000.0
    return None


def figures(now: Sample, older: Sample | None, dt: float) -> dict[str, Any]:
    """The node's figures over the last ``dt`` seconds (rates are None when there is no older sample)."""
    out: dict[str, Any] = {"records": None, "cache_entries": None, "rps": None, "ops": {}, "errors": None,
                           "shed": None, "hit": None, "p50_ms": None, "p99_ms": None, "lag_s": None, "lag": {},
                           "links": {}}
    lag: dict[str, float] = {}
    for (name, labels), value in now.items():
        if name == "idresolve_records":
            out["records"] = int(value)
        elif name == "idresolve_cache_entries":
            out["cache_entries"] = int(value)
        elif name == "idresolve_replication_lag_seconds" and labels:
            lag[dict(labels).get("peer", "?")] = round(value, 3)
    if lag:
        out["lag"], out["lag_s"] = lag, max(lag.values())
    if older is None or dt <= 0:
        return out
    ops: dict[str, float] = {}
    errors = shed = 0.0
    buckets: dict[float, float] = {}
    links: dict[str, float] = {}
    for key in now:
        name, labels = key
        if name == "idresolve_requests_total":
            n = _delta(now, older, key)
            if not n:
                continue
            lab = dict(labels)
            surface, code = lab.get("surface", "?"), lab.get("code", "?")
            if surface == "rest" and lab.get("op") in UNCOUNTED_REST:
                continue
            op = f"{surface} {lab.get('op', '?')}"
            ops[op] = ops.get(op, 0.0) + n
            if surface == "binary":
                if code == SHED_BINARY:
                    shed += n
                elif code not in OK_BINARY:
                    errors += n
            elif code == "503":
                shed += n
            elif code.isdigit() and int(code) >= 500:
                errors += n
        elif name == "idresolve_request_seconds_bucket":
            lab = dict(labels)
            if lab.get("surface") == "rest" and lab.get("op") in UNCOUNTED_REST:
                continue
            le = lab.get("le", "+Inf")
            bound = math.inf if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + _delta(now, older, key)
        elif name in SHED_TOTALS:
            shed += _delta(now, older, key)
        elif name == "idresolve_link_requests_total" and labels:
            n = _delta(now, older, key)
            if n:
                links[dict(labels).get("peer", "?")] = round(n / dt, 2)
    hits = _delta(now, older, ("idresolve_cache_hits_total", ()))
    misses = _delta(now, older, ("idresolve_cache_misses_total", ()))
    pairs = sorted(buckets.items())
    out.update(rps=round(sum(ops.values()) / dt, 2), ops={k: round(v / dt, 2) for k, v in sorted(ops.items())},
               errors=round(errors / dt, 2), shed=round(shed / dt, 2),
               hit=round(hits / (hits + misses), 4) if hits + misses else None,
               p50_ms=quantile_ms(pairs, 0.5), p99_ms=quantile_ms(pairs, 0.99), links=links)
    return out
