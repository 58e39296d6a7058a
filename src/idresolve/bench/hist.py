"""Latency samples (answers per whole microsecond) -> an HdrHistogram -> the percentiles reports print.

``Buckets`` gives the same figures as ``histogram(...)`` from the sorted samples alone. The HdrHistogram
of ``hdrh`` walks its whole array of counts (tens of thousands) for every percentile asked; a report
that asks for a few dozen percentiles of a few hundred distinct latencies paid for that walk each time
(a 10-minute simulation's report took 0.28 s so, 0.02 s with ``Buckets``). ``Buckets`` uses ``hdrh``'s
public bucket maths (lowest and highest equivalent values); ``tests/test_pure_helpers.py`` holds the two
to the same figures."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

LOWEST_US = 1
HIGHEST_US = 60_000_000  # one minute: anything slower is clamped (and is a failed run anyway)
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def histogram(latency_us: Mapping[int, int]) -> HdrHistogram:
    h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
    for us, count in latency_us.items():
        h.record_value(min(max(us, LOWEST_US), HIGHEST_US), count)
    return h


_GEOMETRY = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)  # its bucket maths, never its counts


class Buckets:
    """The percentiles, mean and maximum that ``histogram(latency_us)`` gives, equal to the last digit,
    worked out from the distinct latencies only. Read-only; for merging or encoding use ``histogram``."""

    __slots__ = ("_values", "_cum", "_total", "_mean", "_max")

    def __init__(self, latency_us: Mapping[int, int]) -> None:
        g = _GEOMETRY
        by_bucket: dict[int, int] = {}  # the lowest value of each bucket -> its count
        top = 0
        for us, count in latency_us.items():
            v = min(max(us, LOWEST_US), HIGHEST_US)
            low = g.get_lowest_equivalent_value(v)
            by_bucket[low] = by_bucket.get(low, 0) + count
            if v > top:
                top = v
        self._values: list[int] = []  # the lowest value of each non-empty bucket, in order
        self._cum: list[int] = []  # the counts up to and including that bucket
        total = weighted = 0
        for low in sorted(by_bucket):
            count = by_bucket[low]
            total += count
            # hdrh's mean weighs each bucket by its middle: its lowest value plus half its width
            weighted += count * (low + ((g.get_highest_equivalent_value(low) - low + 1) >> 1))
            self._values.append(low)
            self._cum.append(total)
        self._total = total
        self._mean = float(weighted) / total if total else 0.0
        self._max = g.get_highest_equivalent_value(top) if top else 0

    def get_total_count(self) -> int:
        return self._total

    def get_mean_value(self) -> float:
        return self._mean

    def get_max_value(self) -> int:
        return self._max

    def get_value_at_percentile(self, percentile: float) -> int:
        if not self._total:
            return 0
        target = max(int(min(percentile, 100.0) * self._total / 100 + 0.5), 1)
        value = self._values[bisect_left(self._cum, target)]
        return _GEOMETRY.get_highest_equivalent_value(value) if percentile else _GEOMETRY.get_lowest_equivalent_value(value)


def summary(h: HdrHistogram) -> dict[str, Any]:
    """Count, mean, percentiles and max in microseconds; ``hdr`` is the encoded histogram, for merging."""
    if h.get_total_count() == 0:
        return {"count": 0}
    out: dict[str, Any] = {"count": h.get_total_count(), "mean_us": round(h.get_mean_value(), 1)}
    for p in PERCENTILES:
        out[f"p{p:g}_us".replace(".", "_")] = h.get_value_at_percentile(p)
    out["max_us"] = h.get_max_value()
    encoded = h.encode()
    out["hdr"] = encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)
    return out


def distribution(h: HdrHistogram | Buckets, ticks_per_half: int = 4) -> list[list[float]]:
    """The HDR percentile distribution: ``[percentile, microseconds]`` at percentiles that halve the
    distance to 100 ``ticks_per_half`` times per halving (0, 15.9, 29.3, ... 50, ... 99.9 ...), up to the
    resolution the count allows, then 100 (the maximum)."""
    total = h.get_total_count()
    if total == 0:
        return []
    out: list[list[float]] = []
    i = 0
    while True:
        p = 100.0 * (1.0 - 0.5 ** (i / ticks_per_half))
        if 1.0 / (1.0 - p / 100.0) > total or i > 40 * ticks_per_half:
            break
        out.append([round(p, 4), h.get_value_at_percentile(p)])
        i += 1
    out.append([100.0, h.get_max_value()])
    return out
