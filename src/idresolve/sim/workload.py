"""Workloads and studies in TOML (``config/workloads.toml``), parsed strictly: every mistake names the file,
the line and what is wrong.

    [workloads.NAME]                 what arrives, how the space and the nodes look (``Workload`` fields)
    [workloads.NAME.clients]         share of resolutions per recursive node
    [workloads.NAME.space]           the synthetic identifier space (``space.SpaceSpec``)
    [workloads.NAME.nodes]           node settings (``build.NodeSettings``; durations as text)
    [workloads.NAME.service_times]   per-operation CPU costs in microseconds (``service.ServiceTimes``)
    [[workloads.NAME.bursts]]        registration bursts: at, prefix, batches, size, every
    [studies.NAME]                   workload = "...", and [studies.NAME.variants.V] tables of overrides

A variant's table holds workload keys that replace the workload's, ``events`` that are added to its
events, and ``connect_all = true`` (every secondary node registered with the top level).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .build import NodeSettings
from .events import EventError, SimEvent, parse_event
from .paths import DEFAULT_FILE
from .service import ServiceTimeError, ServiceTimes, service_times
from .space import SpaceError, SpaceSpec
from .timetext import at_s, clock_s, duration_s

__all__ = ["DEFAULT_FILE", "Workload", "WorkloadError", "load_file"]
KEYS = ("zipf", "uniform", "cycle")
ARRIVALS = ("poisson", "uniform")


class WorkloadError(ValueError):
    """A workload or study file that cannot be used: the message names the file, line and problem."""


@dataclass(frozen=True, slots=True)
class Burst:
    at_s: float  # after the start of the run
    prefix: str
    batches: int
    size: int
    every_s: float


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    description: str = ""
    topology: Path = Path("shandong.toml")
    scenario: str | None = None
    resolutions: float = 1_000_000.0  # per 24 hours of the profile
    profile: tuple[float, ...] = (1.0,) * 24
    duration_s: float = 86_400.0
    start_s: float = 0.0  # time of day the run starts at, seconds after midnight
    warmup_s: float = 0.0
    arrivals: str = "poisson"
    keys: str = "zipf"
    zipf_exponent: float = 1.0
    key_count: int = 0  # keys = "cycle": how many identifiers (the seeded ones, as `idresolve seed` lays them out)
    unknown_share: float = 0.0
    unconnected_demand: float = 1.0  # how often identifiers of unconnected secondaries are asked for, relative
    write_share: float = 0.0
    register_share: float = 0.0
    client_timeout_s: float = 5.0
    timer_grid_ms: float = 0.0  # link delays fire on a timer grid of this step, mean kept (the emulator's)
    trace: bool = False  # resolutions ask for the trace (no fast path at the recursive node, as for real)
    authoritative: bool = False  # resolutions carry the authoritative flag: every one walks from the top
    clients: Mapping[str, float] = field(default_factory=dict)
    space: SpaceSpec = field(default_factory=SpaceSpec)
    nodes: NodeSettings = field(default_factory=NodeSettings)
    service_times: ServiceTimes = field(default_factory=ServiceTimes)
    bursts: tuple[Burst, ...] = ()
    events: tuple[SimEvent, ...] = ()
    connect_all: bool = False
    source: str = ""

    def rate_at(self, day_s: float) -> float:
        """Arrivals per second at ``day_s`` seconds after midnight (the profile is hourly, piecewise constant)."""
        weights = self.profile
        hour = int(day_s // 3600) % 24
        return self.resolutions * weights[hour * len(weights) // 24] / (sum(weights) / len(weights)) / 86_400.0

    def with_overrides(self, table: Mapping[str, Any], source: str) -> Workload:
        return _apply(self, table, source, self.source)


@dataclass(frozen=True, slots=True)
class Study:
    name: str
    workload: str
    variants: tuple[tuple[str, Mapping[str, Any]], ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class WorkloadFile:
    path: Path
    text: str
    workloads: Mapping[str, Mapping[str, Any]]
    studies: Mapping[str, Mapping[str, Any]]

    def workload(self, name: str) -> Workload:
        raw = self.workloads.get(name)
        if raw is None:
            raise WorkloadError(f"{self.path}: no workload {name!r} (workloads: {', '.join(sorted(self.workloads)) or 'none'})")
        base = Workload(name, source=str(self.path))
        return _apply(base, raw, self._where(("workloads", name)), str(self.path))

    def study(self, name: str) -> Study:
        raw = self.studies.get(name)
        if raw is None:
            raise WorkloadError(f"{self.path}: no study {name!r} (studies: {', '.join(sorted(self.studies)) or 'none'})")
        where = self._where(("studies", name))
        unknown = sorted(set(raw) - {"workload", "variants", "description"})
        if unknown:
            raise WorkloadError(f"{where(unknown[0])}: unknown key {unknown[0]!r} in study {name!r}; allowed: "
                                "workload, variants, description")
        wl = raw.get("workload")
        if not isinstance(wl, str) or wl not in self.workloads:
            raise WorkloadError(f"{where('workload')}: study {name!r} names workload {wl!r}, which this file "
                                f"does not define")
        variants = raw.get("variants")
        if not isinstance(variants, Mapping) or not variants:
            raise WorkloadError(f"{where('variants')}: study {name!r} needs [studies.{name}.variants.NAME] tables")
        base = self.workload(wl)
        out = []
        for vname, vtable in variants.items():
            if not isinstance(vtable, Mapping):
                raise WorkloadError(f"{where('variants')}: variant {vname!r} must be a table")
            _apply(base, vtable, self._where(("studies", name, "variants", vname)), str(self.path))  # checks it
            out.append((vname, vtable))
        return Study(name, wl, tuple(out), str(raw.get("description", "")))

    def _where(self, table: tuple[str, ...]) -> Any:
        def where(key: str, sub: str | None = None) -> str:
            line = (locate(self.text, (*table, key), sub) if sub else None) or locate(self.text, table, key)
            return f"{self.path}:{line}" if line else str(self.path)
        return where


def locate(text: str, table: tuple[str, ...], key: str) -> int | None:
    """The line (1-based) where ``key`` is set in ``[table]`` (or its header, or the table's own line)."""
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    current: tuple[str, ...] = ()
    table_line = None
    for i, line in enumerate(text.splitlines(), start=1):
        m = header.match(line)
        if m:
            current = tuple(p.strip().strip('"') for p in m.group(1).split("."))
            if current == table or current == (*table, key):
                table_line = table_line or i
                if current == (*table, key):
                    return i
            continue
        stripped = line.strip()
        if current == table and re.match(rf'^"?{re.escape(key)}"?\s*=', stripped):
            return i
    return table_line


def load_file(path: Path) -> WorkloadFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkloadError(f"{path}: no such workload file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{path}: cannot read it: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"workloads", "studies", "description"})
    if unknown:
        line = locate(text, (), unknown[0]) or locate(text, (unknown[0],), "")
        raise WorkloadError(f"{path}:{line or 1}: unknown top-level key {unknown[0]!r}; allowed: workloads, studies, "
                            "description")
    for key in ("workloads", "studies"):
        if not isinstance(data.get(key, {}), Mapping):
            raise WorkloadError(f"{path}: {key!r} must be tables ([{key}.NAME])")
    return WorkloadFile(path, text, data.get("workloads", {}), data.get("studies", {}))


# -- applying a table to a workload ------------------------------------------------------------------

_SCALARS = {"description": str, "scenario": str, "arrivals": str, "keys": str}
_NUMBERS = {"resolutions": (0.0, math.inf), "zipf_exponent": (0.0, 10.0), "unknown_share": (0.0, 1.0),
            "unconnected_demand": (0.0, 1.0), "timer_grid_ms": (0.0, 100.0),
            "write_share": (0.0, 1.0), "register_share": (0.0, 1.0)}
_DURATIONS = {"duration": "duration_s", "warmup": "warmup_s", "client_timeout": "client_timeout_s"}
_NODE_DURATIONS = {"ttl_cap": "ttl_cap_s", "negative_ttl": "negative_ttl_s", "root_down": "root_down_s",
                   "hop_timeout": "hop_timeout_s"}
_NODE_INTS = ("cache_entries", "answer_entries", "max_queue")
_TABLES = ("clients", "space", "nodes", "service_times", "bursts")
_OTHER = ("topology", "profile", "start", "key_count", "trace", "authoritative", "events", "connect_all")
ALLOWED = tuple(sorted({*_SCALARS, *_NUMBERS, *_DURATIONS, *_TABLES, *_OTHER}))


def _apply(w: Workload, raw: Mapping[str, Any], where: Any, path: str) -> Workload:
    """``w`` with the keys of ``raw`` applied; ``where(key)`` names the file and line for errors."""
    if not callable(where):
        where = (lambda src: lambda key, sub=None: src)(where)
    changes: dict[str, Any] = {}
    extra_events: list[str] = []
    for key, value in raw.items():
        try:
            if key in _SCALARS:
                if not isinstance(value, str):
                    raise ValueError(f"{key} must be a string, not {value!r}")
                changes[key] = value
            elif key in _NUMBERS:
                lo, hi = _NUMBERS[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                    raise ValueError(f"{key} must be a number between {lo:g} and {hi:g}, not {value!r}")
                changes[key] = float(value)
            elif key in _DURATIONS:
                changes[_DURATIONS[key]] = duration_s(value, key)
            elif key == "topology":
                changes["topology"] = Path(_text(value, key))
            elif key == "profile":
                changes["profile"] = _profile(value)
            elif key == "start":
                changes["start_s"] = clock_s(_text(value, key), key)
            elif key == "key_count":
                changes["key_count"] = _count(value, key)
            elif key in ("trace", "connect_all", "authoritative"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, not {value!r}")
                changes[key] = value
            elif key == "events":
                if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
                    raise ValueError("events must be a list of strings like \"08:30 kill top-beijing\"")
                extra_events.extend(value)
            elif key == "clients":
                changes["clients"] = _shares(value)
            elif key == "space":
                changes["space"] = _space(value, w.space)
            elif key == "nodes":
                changes["nodes"] = _nodes(value, w.nodes)
            elif key == "service_times":
                changes["service_times"] = service_times(value, w.service_times, source=path)
            elif key == "bursts":
                changes["bursts"] = tuple(_burst(b, changes.get("start_s", w.start_s)) for b in _list(value, key))
            else:
                raise ValueError(f"unknown key {key!r}; allowed: {', '.join(ALLOWED)}")
        except (ValueError, EventError, SpaceError, ServiceTimeError) as exc:
            sub = _subkey(value, str(exc)) if key in _TABLES else None
            raise WorkloadError(f"{where(key, sub)}: {exc}") from None
    out = replace(w, **changes)
    if out.arrivals not in ARRIVALS or out.keys not in KEYS:
        bad = "arrivals" if out.arrivals not in ARRIVALS else "keys"
        raise WorkloadError(f"{where(bad)}: {bad} must be one of {', '.join(ARRIVALS if bad == 'arrivals' else KEYS)}")
    if out.keys == "cycle" and out.key_count < 1:
        raise WorkloadError(f"{where('keys')}: keys = \"cycle\" needs key_count >= 1")
    if out.write_share + out.register_share + out.unknown_share > 1.0:
        raise WorkloadError(f"{where('write_share')}: unknown_share + write_share + register_share exceed 1")
    try:
        events = [parse_event(e, out.start_s) for e in extra_events]
    except EventError as exc:
        raise WorkloadError(f"{where('events')}: {exc}") from None
    return replace(out, events=(*w.events, *events))


def _subkey(table: Any, message: str) -> str | None:
    """The key of a sub-table that an error message names (its line is then the one reported)."""
    if not isinstance(table, Mapping):
        return None
    named = [k for k in table if re.search(rf"(^|[\s.'\"]){re.escape(str(k))}($|[\s'\"=:])", message)]
    return str(max(named, key=len)) if named else None


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def _count(value: Any, key: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key} must be a whole number >= {low}, not {value!r}")
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{key} must be an array of tables ([[...{key}]])")
    return value


def _profile(value: Any) -> tuple[float, ...]:
    if (not isinstance(value, list) or len(value) not in (1, 2, 3, 4, 6, 8, 12, 24, 48, 96)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise ValueError("profile must be a list of 24 (or 1, 2, 3, 4, 6, 8, 12, 48, 96) weights >= 0, one per "
                         "equal part of the day")
    if sum(value) <= 0:
        raise ValueError("profile must have at least one weight above 0")
    return tuple(float(v) for v in value)


def _shares(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError("clients must be a table of recursive node = share")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ValueError(f"the share of {k!r} must be a number >= 0, not {v!r}")
    if sum(value.values()) <= 0:
        raise ValueError("clients: at least one share must be above 0")
    return {k: float(v) for k, v in value.items()}


def _space(value: Any, base: SpaceSpec) -> SpaceSpec:
    if not isinstance(value, Mapping):
        raise ValueError("space must be a table")
    known = {f.name for f in fields(SpaceSpec)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown space key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    kept = dict(value)
    if "weights" in kept and not isinstance(kept["weights"], Mapping):
        raise ValueError("space.weights must be a table of node name = weight")
    for k in ("identifiers", "variants"):
        if k in kept:
            _count(kept[k], f"space.{k}")
    return replace(base, **kept)


def _nodes(value: Any, base: NodeSettings) -> NodeSettings:
    if not isinstance(value, Mapping):
        raise ValueError("nodes must be a table")
    changes: dict[str, Any] = {}
    for k, v in value.items():
        if k in _NODE_DURATIONS:
            changes[_NODE_DURATIONS[k]] = duration_s(v, f"nodes.{k}")
        elif k in _NODE_INTS:
            changes[k] = _count(v, f"nodes.{k}")
        elif k == "shed_lag_ms":
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"nodes.shed_lag_ms must be a number >= 0 (0: never shed), not {v!r}")
            changes[k] = float(v)
        else:
            allowed = sorted([*_NODE_DURATIONS, *_NODE_INTS, "shed_lag_ms"])
            raise ValueError(f"unknown nodes key {k!r}; allowed: {', '.join(allowed)}")
    if changes.get("hop_timeout_s", base.hop_timeout_s) <= 0:
        raise ValueError("nodes.hop_timeout must be above 0")
    return replace(base, **changes)


def _burst(raw: Any, start_s: float) -> Burst:
    if not isinstance(raw, Mapping):
        raise ValueError("each [[bursts]] entry must be a table")
    unknown = sorted(set(raw) - {"at", "prefix", "batches", "size", "every"})
    missing = sorted({"at", "prefix"} - set(raw))
    if unknown or missing:
        raise ValueError(f"a burst has at, prefix, batches, size, every; {'unknown ' + unknown[0] if unknown else 'missing ' + missing[0]}")
    size = _count(raw.get("size", 1000), "burst size")
    if size > 2000:
        raise ValueError("burst size must be at most 2000 (a batch holds at most 2,000 identifiers)")
    return Burst(at_s(_text(raw["at"], "at"), start_s, "burst time"), _text(raw["prefix"], "prefix"),
                 _count(raw.get("batches", 1), "burst batches"), size, duration_s(raw.get("every", 1.0), "every"))
