"""What the latency model should cost a cold resolution, worked out by the benchmark on its own.

Target T3 compares the measured mean latency of cold resolutions with the model's delays along each
identifier's path. The expectation is computed here from the topology file itself (read with
``tomllib``) and the latency parameters the project documents (DOMAIN section 7, ``docs/benchmarks``),
not by ``core.latency`` or ``core.topology``: those are the code that injects the delays, and a check
that asks the injector what it injected cannot see it inject the wrong thing.

The model, as specified:
- one-way delay between two nodes: ``per_hop_ms`` at the same location; inside one province the
  great-circle distance x ``route_factor`` x ``intra_km_ms`` + ``per_hop_ms``; between provinces
  ``inter_province_rtt_ms / 2 + per_hop_ms``. Jitter is symmetric (its mean is 0) and loss is left out.
- a cold resolution at a recursive node costs one round trip to a top-level node (the nearest primary
  one: not disaster-recovery, smallest one-way delay, file order on a tie), one to the identifier's
  secondary node, and one to its enterprise node when the enterprise runs a node of its own.
A scenario table (``[scenarios.NAME]``) gives the parameters that differ from the defaults below.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The documented defaults of the latency parameters (30 ms inter-provincial round trip since the
#: Jinan and Qingdao interconnection points, fibre at 5 us/km, routes 1.5 x the straight line, 0.1 ms
#: per hop).
DEFAULTS = {"inter_province_rtt_ms": 30.0, "intra_km_ms": 0.005, "route_factor": 1.5, "per_hop_ms": 0.1}
EARTH_KM = 6371.0088


class ExpectationError(ValueError):
    """The topology file cannot be followed (missing locations, nodes or scenario)."""


@dataclass(frozen=True, slots=True)
class Place:
    province: str
    lat: float
    lon: float


def _km(a: Place, b: Place) -> float:
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def _entries(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    raw = data.get(key, [])
    return [dict(e) for e in raw] if isinstance(raw, list) else []


@dataclass
class PathExpectation:
    """Round trips (ms) from one recursive node along each identifier's path, from a topology file."""

    places: dict[str, Place]
    node_place: dict[str, str]  # node name -> location name
    tops: list[tuple[str, bool]]  # (name, disaster recovery), in file order
    enterprises: dict[str, tuple[str, str | None]]  # prefix -> (secondary name, own node name or None)
    params: dict[str, float]
    recursive: str
    off: bool = False
    first_top: str = ""
    _cache: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path, recursive: str, *, latency: str = "on",
                  scenario: str | None = None) -> PathExpectation:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ExpectationError(f"cannot read {path}: {exc}") from None
        return cls.from_data(data, recursive, latency=latency, scenario=scenario)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], recursive: str, *, latency: str = "on",
                  scenario: str | None = None) -> PathExpectation:
        try:
            places = {str(e["name"]): Place(str(e["province"]), float(e["lat"]), float(e["lon"]))
                      for e in _entries(data, "location")}
            node_place: dict[str, str] = {}
            for role in ("top", "secondary", "recursive"):
                for e in _entries(data, role):
                    node_place[str(e["name"])] = str(e["location"])
                    for m in e.get("mirrors", []) if role == "secondary" else ():  # a secondary's mirrors
                        node_place[str(m["name"])] = str(m["location"])
            tops = [(str(e["name"]), bool(e.get("disaster_recovery", False))) for e in _entries(data, "top")]
            enterprises: dict[str, tuple[str, str | None]] = {}
            for e in _entries(data, "enterprise"):
                own = None
                if not e.get("hosted", True):
                    own = str(e["name"])
                    node_place[own] = str(e["location"])
                enterprises[str(e["prefix"])] = (str(e["secondary"]), own)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExpectationError(f"the topology cannot be followed: {exc!r}") from None
        params = dict(DEFAULTS)
        if latency != "off":
            tables = data.get("scenarios", {})
            wanted = scenario or data.get("default_scenario") or (next(iter(tables), None) if tables else None)
            if tables and wanted not in tables:
                raise ExpectationError(f"no latency scenario {wanted!r} in the topology")
            for k, v in (tables.get(wanted, {}) if tables else {}).items():
                if k in params:
                    params[k] = float(v)
        exp = cls(places, node_place, tops, enterprises, params, recursive, off=latency == "off")
        for name in [recursive, *(t for t, _ in tops)]:
            exp._place(name)  # every node it will need has a location
        primaries = [t for t, dr in tops if not dr] or [t for t, _ in tops]
        exp.first_top = min(primaries, key=lambda t: (exp.one_way_ms(recursive, t), primaries.index(t)), default="")
        return exp

    def _place(self, node: str) -> Place:
        try:
            return self.places[self.node_place[node]]
        except KeyError:
            raise ExpectationError(f"node {node!r} or its location is not in the topology") from None

    def one_way_ms(self, a: str, b: str) -> float:
        if self.off:
            return 0.0
        p = self.params
        la, lb = self.node_place.get(a), self.node_place.get(b)
        if la is not None and la == lb:
            return p["per_hop_ms"]
        pa, pb = self._place(a), self._place(b)
        if pa.province.strip().casefold() == pb.province.strip().casefold():
            return _km(pa, pb) * p["route_factor"] * p["intra_km_ms"] + p["per_hop_ms"]
        return p["inter_province_rtt_ms"] / 2 + p["per_hop_ms"]

    def rtt_ms(self, node: str) -> float:
        return self.one_way_ms(self.recursive, node) + self.one_way_ms(node, self.recursive)

    def hops(self, handle: str, top: str | None = None) -> dict[str, float]:
        """Expected round trip per role for a cold resolution of ``handle`` (``top``: the top-level node
        asked, default the first one)."""
        prefix = handle.split("/", 1)[0]
        key = f"{prefix}|{top or ''}"
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        out = {"top": self.rtt_ms(top or self.first_top)}
        ent = self.enterprises.get(prefix)
        if ent is not None:
            secondary, own = ent
            out["secondary"] = self.rtt_ms(secondary)
            if own is not None:
                out["enterprise"] = self.rtt_ms(own)
        self._cache[key] = out
        return out

    def expected_ms(self, handle: str) -> float:
        return sum(self.hops(handle).values())

    def expected_mean_ms(self, handles: Sequence[str], sent: int, offset: int = 0) -> float:
        """Mean over the ``sent`` requests of a run that cycled through ``handles`` from ``offset``
        (request ``k`` resolves ``handles[(offset + k) % len(handles)]``)."""
        n = len(handles)
        if not n or sent <= 0:
            return 0.0
        full, rest = divmod(sent, n)
        total = 0.0
        for i, h in enumerate(handles):
            k = full + (1 if (i - offset) % n < rest else 0)
            if k:
                total += k * self.expected_ms(h)
        return total / sent
