"""Link latency between node locations (docs/domain.md §7), as numbers: no sleeping, no clock.

The network layer (or the virtual-time simulator) asks for a one-way delay per message and applies it.

Base one-way delay from ``a`` to ``b``:
- same location: ``per_hop_ms``;
- same province (compared case-insensitively): straight-line (haversine) km x ``route_factor`` x
  ``intra_km_ms`` + ``per_hop_ms``;
- different provinces: ``inter_province_rtt_ms / 2 + per_hop_ms`` (15.1 ms with the defaults: 30 ms
  round trip after the Jinan and Qingdao direct interconnection points; 19.6 ms with the 39 ms before).

Sampling (``sample_one_way_ms``), with a caller's ``random.Random`` (never the global one):
1. lost with probability ``loss`` -> ``None``;
2. otherwise ``base + noise``, ``noise`` gaussian with sigma ``jitter_ms``, clipped to +-3 sigma (the
   clip is symmetric, so the mean stays ``base``), and the result floored at 0.
The floor at 0 only matters when ``base < 3 * jitter_ms`` (short links on a jittery "internet"
scenario); there the mean sits slightly above ``base``. ``expected_path_ms`` ignores that effect.
No random number is drawn for a step whose parameter is 0, so ``jitter_ms = 0, loss = 0`` consumes
nothing from the rng.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise

from .topology import LatencySpec, Location, Topology

__all__ = ["EARTH_RADIUS_KM", "JITTER_CLIP_SIGMAS", "LatencyModel", "LatencySpec", "haversine_km"]

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)
JITTER_CLIP_SIGMAS = 3.0

_OFF_SPEC = LatencySpec(inter_province_rtt_ms=0.0, intra_km_ms=0.0, route_factor=0.0, per_hop_ms=0.0,
                        jitter_ms=0.0, loss=0.0)


def haversine_km(a: Location, b: Location) -> float:
    """Great-circle distance between two locations, in km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


class LatencyModel:
    """One-way delays between locations under one ``LatencySpec``.

    ``locations`` (optional) are precomputed pairwise, so the per-message cost of a known pair is one
    dict lookup; any other location is computed on demand.
    """

    __slots__ = ("_base", "spec")

    def __init__(self, spec: LatencySpec, locations: Iterable[Location] = ()) -> None:
        self.spec = spec
        locs = list(dict.fromkeys(locations))
        self._base: dict[tuple[Location, Location], float] = {
            (a, b): self._compute_base(a, b) for a in locs for b in locs}

    @classmethod
    def off(cls) -> LatencyModel:
        """No latency, no jitter, no loss: every delay is 0 (unit tests, raw throughput runs)."""
        return cls(_OFF_SPEC)

    @classmethod
    def for_topology(cls, topology: Topology, scenario: str | None = None) -> LatencyModel:
        """The model of ``scenario`` (default: the topology's default scenario) over its locations."""
        return cls(topology.latency(scenario), topology.locations)

    @property
    def is_off(self) -> bool:
        return self.spec == _OFF_SPEC

    def _compute_base(self, a: Location, b: Location) -> float:
        s = self.spec
        if a == b:
            return s.per_hop_ms
        if a.province.strip().casefold() == b.province.strip().casefold():
            return haversine_km(a, b) * s.route_factor * s.intra_km_ms + s.per_hop_ms
        return s.inter_province_rtt_ms / 2 + s.per_hop_ms

    def base_one_way_ms(self, a: Location, b: Location) -> float:
        """The one-way delay from ``a`` to ``b`` without jitter or loss."""
        base = self._base.get((a, b))
        return self._compute_base(a, b) if base is None else base

    def sample_one_way_ms(self, a: Location, b: Location, rng: random.Random) -> float | None:
        """One message's delay from ``a`` to ``b``: ``None`` when it is lost (see the module docstring)."""
        return self.sample_from_base_ms(self.base_one_way_ms(a, b), rng)

    def sample_from_base_ms(self, base: float, rng: random.Random) -> float | None:
        """``sample_one_way_ms`` for a pair whose base delay the caller already has (the same draws)."""
        s = self.spec
        if s.loss > 0.0 and rng.random() < s.loss:
            return None
        if s.jitter_ms <= 0.0:
            return base
        bound = JITTER_CLIP_SIGMAS * s.jitter_ms
        noise = min(bound, max(-bound, rng.gauss(0.0, s.jitter_ms)))
        return max(0.0, base + noise)

    def sampler(self, rng: random.Random) -> Callable[[float], float | None]:
        """``sample(base)``: ``sample_from_base_ms(base, rng)`` as a closure over the spec's figures, the same
        operations in the same order, so the same draws (the simulator samples every message this way)."""
        loss, jitter, rnd, gauss = self.spec.loss, self.spec.jitter_ms, rng.random, rng.gauss
        bound = JITTER_CLIP_SIGMAS * jitter

        def sample(base: float) -> float | None:
            if loss > 0.0 and rnd() < loss:
                return None
            if jitter <= 0.0:
                return base
            return max(0.0, base + min(bound, max(-bound, gauss(0.0, jitter))))

        return sample

    def round_trip_ms(self, a: Location, b: Location) -> float:
        """Base delay there and back (without jitter or loss)."""
        return self.base_one_way_ms(a, b) + self.base_one_way_ms(b, a)

    def expected_path_ms(self, path: Sequence[Location]) -> float:
        """Sum of the base round trips between consecutive locations of ``path``.

        ``[client, recursive, top]`` is client<->recursive plus recursive<->top. For a recursive node's
        iterative walk (one round trip from the recursive node to each of top, secondary, enterprise)
        pass the star as separate pairs, e.g. ``sum(expected_path_ms([rec, x]) for x in servers)``.
        This is the mean a measurement should approach when ``base >= 3 * jitter_ms`` on every hop.
        Fewer than two locations: 0.
        """
        return sum((self.round_trip_ms(a, b) for a, b in pairwise(path)), 0.0)

    def __repr__(self) -> str:
        return f"LatencyModel({self.spec!r}, locations={len({a for a, _ in self._base})})"
