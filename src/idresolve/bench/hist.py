"""Latency samples (answers per whole microsecond) -> an HdrHistogram -> the percentiles reports print."""

from __future__ import annotations

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


def distribution(h: HdrHistogram, ticks_per_half: int = 4) -> list[list[float]]:
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
