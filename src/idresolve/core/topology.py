"""A cluster topology: where the nodes of the hierarchy are, which prefixes they serve, and the latency
scenarios of the network between them (docs/domain.md §1, §2, §7).

Pure, apart from ``load_topology(path)``, which reads one TOML file with ``tomllib``. Everything else
works on plain mappings and frozen dataclasses, so tests and the virtual-time simulator can build a
topology in memory (``topology_from_dict``).

Validation is strict: every mistake raises ``TopologyError`` naming the file, the node (or location or
scenario) and the problem. Unknown keys are errors (typos must not be silently ignored), so are prefixes
written as bare TOML numbers. The "5+2" rule is *not* enforced: small topologies are fine, as long as
there is at least one top-level node and one recursive node.

The TOML shape (see ``config/minimal.toml`` for a complete file)::

    name = "minimal"
    country_prefix = "88"                 # optional, default "88"
    default_scenario = "direct-interconnect"

    [[location]]
    name = "jinan"
    province = "Shandong"
    lat = 36.6512
    lon = 117.1201

    [[top]]                               # national top-level node: holds 0.NA/88.<n> records
    name = "top-beijing"
    location = "beijing"
    disaster_recovery = false             # optional, default false

    [[secondary]]
    name = "sec-tyre-qingdao"
    location = "qingdao"
    prefix = "88.118"
    connected = true                      # required: registered with the top-level nodes or not
    industry = "tyres and rubber"         # optional
    templates = ["tyre-batch"]            # optional: metadata templates it publishes (<config dir>/templates/<name>.json)
    workers = 2                           # optional, default 1: processes serving this node (also enterprise, recursive)

    [[enterprise]]                        # an enterprise prefix allocated by a secondary node
    name = "ent-tyre-qingdao-8"
    secondary = "sec-tyre-qingdao"
    prefix = "88.118.8"                   # must derive from the secondary's prefix
    hosted = false                        # required; false: it runs its own enterprise node ...
    location = "qingdao"                  # ... so it needs a location; hosted ones must not have one

    [[recursive]]
    name = "rec-jinan"
    location = "jinan"

    # optional on a [[secondary]]: mirrors that replicate its records and answer resolutions
    # mirrors = [{ name = "mir-tyre-jinan", location = "jinan" }]

    [scenarios.direct-interconnect]       # fields of LatencySpec that differ from its defaults
    inter_province_rtt_ms = 30.0

Every table may carry ``description``. A hosted enterprise is served by its secondary node: it is an
entry of the hierarchy (``NodeSpec`` with ``hosted=True``, located where its secondary is) but no node
of its own runs for it; ``running_nodes()`` lists only what actually runs.

A mirror (``mirrors = [{ name, location, description }]`` on a ``[[secondary]]``) is a node of its own,
role ``mirror``, with its secondary's prefix and ``mirror_of`` naming the secondary: it holds a copy of the
secondary's records, answers resolutions and refuses writes. Mirrors come last in ``running_nodes()``, so
adding one moves no other node's index (nor its ports).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ROLES = ("top", "secondary", "enterprise", "recursive", "mirror")
DEFAULT_COUNTRY_PREFIX = "88"
MEMORY_SOURCE = "<memory>"

# Node and location names become process labels and container host names: one DNS label.
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SEGMENT_RE = re.compile(r"^[1-9][0-9]*$")  # a prefix segment: a positive decimal, no leading zero
_TEMPLATE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # core.templates.definition's template names


class TopologyError(ValueError):
    """A topology is malformed or inconsistent. The message names the file, the entry and the problem."""

    def __init__(self, problem: str, *, source: str | None = None, entry: str | None = None) -> None:
        self.problem = problem
        self.source = source
        self.entry = entry
        where = ": ".join(part for part in (source, entry) if part)
        super().__init__(f"{where}: {problem}" if where else problem)

    def located(self, source: str) -> TopologyError:
        """The same error, naming ``source`` (used to add the file name to errors raised deeper)."""
        return TopologyError(self.problem, source=source, entry=self.entry)


# --------------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, slots=True)
class Location:
    """A place nodes run at. ``province`` decides intra- or inter-provincial latency."""

    name: str
    province: str
    lat: float
    lon: float

    def __post_init__(self) -> None:
        entry = f"location {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise TopologyError(_name_problem(self.name), entry=entry)
        if not isinstance(self.province, str) or not self.province.strip():
            raise TopologyError("province must be a non-empty string", entry=entry)
        for key, limit in (("lat", 90.0), ("lon", 180.0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise TopologyError(f"{key} must be a number, not {value!r}", entry=entry)
            if not -limit <= value <= limit:
                raise TopologyError(f"{key} {value} is outside [-{limit:g}, {limit:g}]", entry=entry)
            object.__setattr__(self, key, float(value))


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """Link latency parameters (docs/domain.md §7); ``latency.LatencyModel`` turns them into delays.

    ``inter_province_rtt_ms`` is the round trip between provinces (30 ms since the Jinan and Qingdao
    direct interconnection points, 39 ms before). Inside a province: straight-line km x ``route_factor``
    x ``intra_km_ms`` (fibre, about 5 us per km). ``per_hop_ms`` is added to every one-way delay.
    ``jitter_ms`` is the sigma of a gaussian jitter, ``loss`` the probability that a message is lost.
    """

    inter_province_rtt_ms: float = 30.0
    intra_km_ms: float = 0.005
    route_factor: float = 1.5
    per_hop_ms: float = 0.1
    jitter_ms: float = 0.02
    loss: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise TopologyError(f"{f.name} must be a finite number, not {value!r}")
            if value < 0:
                raise TopologyError(f"{f.name} must not be negative, not {value!r}")
            object.__setattr__(self, f.name, float(value))
        if self.loss >= 1.0:
            raise TopologyError(f"loss must be below 1 (a probability), not {self.loss!r}")


LATENCY_FIELDS = tuple(f.name for f in fields(LatencySpec))


@dataclass(frozen=True, slots=True)
class LatencyScenario:
    """A named latency scenario: ``LatencySpec`` defaults overridden by the fields the file gives."""

    name: str
    latency: LatencySpec
    description: str = ""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One entry of the hierarchy.

    - ``prefix``: top-level nodes carry the country prefix (``88``: they all hold the same registry of
      ``0.NA/88.<n>`` records); secondary ``88.<n>``; enterprise ``88.<n>.<m>``; recursive ``None``.
    - ``parent``: an enterprise's secondary node name; ``None`` for every other role.
    - ``connected``: secondary only (registered with the top-level nodes, resolvable nationally).
    - ``hosted``: enterprise only (served by its secondary node, no node of its own).
    - ``disaster_recovery``: top-level only.
    - ``templates``: secondary only, the names of the metadata templates it publishes (``TPL-<name>``
      under its prefix, written by the bootstrap from ``<config dir>/templates/<name>.json``).
    - ``mirror_of``: a mirror's secondary node name (the mirror carries that secondary's prefix).
    - ``workers``: secondary, recursive and enterprise nodes with a node of their own: the processes that
      serve it, sharing its ports (and store: ``runtime/workers.py``; a recursive node's processes keep
      answer caches of their own, each bounded by the TTLs); 1 for every other entry.
    Flags that do not apply to a role are ``False``. A hosted enterprise's ``location`` is its secondary's.
    """

    name: str
    role: str
    location: Location
    prefix: str | None = None
    parent: str | None = None
    connected: bool = False
    hosted: bool = False
    disaster_recovery: bool = False
    industry: str | None = None
    description: str = ""
    templates: tuple[str, ...] = ()
    mirror_of: str | None = None
    workers: int = 1

    @property
    def runs(self) -> bool:
        """True when a node process (or in-loop node) runs for this entry: all but hosted enterprises."""
        return not (self.role == "enterprise" and self.hosted)


# --------------------------------------------------------------------------------------------------
# The topology


@dataclass(frozen=True, slots=True)
class Topology:
    """A validated topology. Construction validates (``TopologyError``); lookups are by name."""

    name: str
    locations: tuple[Location, ...]
    nodes: tuple[NodeSpec, ...]  # every entry, hosted enterprises included, in file order per role
    scenarios: tuple[LatencyScenario, ...] = (LatencyScenario("default", LatencySpec()),)
    default_scenario: str = "default"
    country_prefix: str = DEFAULT_COUNTRY_PREFIX
    description: str = ""
    source: str = field(default=MEMORY_SOURCE, compare=False)
    _by_name: dict[str, NodeSpec] = field(init=False, repr=False, compare=False)
    _by_prefix: dict[str, NodeSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            _validate(self)
        except TopologyError as exc:
            raise exc.located(self.source) from None
        object.__setattr__(self, "_by_name", {n.name: n for n in self.nodes})
        object.__setattr__(self, "_by_prefix", {n.prefix: n for n in self.nodes
                                                if n.prefix is not None and n.role not in ("top", "mirror")})

    # lookups -------------------------------------------------------------------------------------

    def node(self, name: str) -> NodeSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise TopologyError(f"no node named {name!r}", source=self.source) from None

    def location(self, name: str) -> Location:
        for loc in self.locations:
            if loc.name == name:
                return loc
        raise TopologyError(f"no location named {name!r}", source=self.source)

    def nodes_by_role(self, role: str) -> tuple[NodeSpec, ...]:
        """Every entry of ``role`` in file order (for ``enterprise``: hosted ones included)."""
        if role not in ROLES:
            raise TopologyError(f"unknown role {role!r}; roles are {', '.join(ROLES)}", source=self.source)
        return tuple(n for n in self.nodes if n.role == role)

    def secondary_of(self, enterprise: str | NodeSpec) -> NodeSpec:
        spec = self._spec(enterprise)
        if spec.role != "enterprise" or spec.parent is None:
            raise TopologyError(f"{spec.name!r} is a {spec.role} node, not an enterprise", source=self.source)
        return self._by_name[spec.parent]

    def enterprises_of(self, secondary: str | NodeSpec) -> tuple[NodeSpec, ...]:
        """The enterprises whose prefixes ``secondary`` allocated, hosted or not, in file order."""
        spec = self._spec(secondary)
        if spec.role != "secondary":
            raise TopologyError(f"{spec.name!r} is a {spec.role} node, not a secondary", source=self.source)
        return tuple(n for n in self.nodes if n.role == "enterprise" and n.parent == spec.name)

    def mirrors_of(self, secondary: str | NodeSpec) -> tuple[NodeSpec, ...]:
        """The mirrors of ``secondary``, in file order."""
        spec = self._spec(secondary)
        return tuple(n for n in self.nodes if n.role == "mirror" and n.mirror_of == spec.name)

    def hosted_by(self, secondary: str | NodeSpec) -> tuple[NodeSpec, ...]:
        """The enterprises whose identifiers ``secondary`` stores and answers itself."""
        return tuple(n for n in self.enterprises_of(secondary) if n.hosted)

    def running_nodes(self) -> tuple[NodeSpec, ...]:
        """What actually runs: top, secondary, enterprise nodes with a node of their own, recursive."""
        return tuple(n for role in ROLES for n in self.nodes if n.role == role and n.runs)

    def running_node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.running_nodes())

    def server_for_prefix(self, prefix: str) -> NodeSpec:
        """The running node that answers for ``prefix``: a hosted enterprise's is its secondary."""
        spec = self._by_prefix.get(prefix)
        if spec is None:
            raise TopologyError(f"no secondary or enterprise has prefix {prefix!r}", source=self.source)
        return self._by_name[spec.parent] if spec.hosted and spec.parent else spec

    def resolvable_nationally(self, node: str | NodeSpec) -> bool:
        """Whether the top-level nodes can refer a recursive node to this entry's prefix."""
        spec = self._spec(node)
        if spec.role == "enterprise" and spec.parent is not None:
            spec = self._by_name[spec.parent]
        if spec.role == "mirror" and spec.mirror_of is not None:
            spec = self._by_name[spec.mirror_of]
        return spec.role == "secondary" and spec.connected

    def latency(self, scenario: str | None = None) -> LatencySpec:
        """The latency spec of ``scenario`` (the default scenario when ``None``)."""
        wanted = self.default_scenario if scenario is None else scenario
        for sc in self.scenarios:
            if sc.name == wanted:
                return sc.latency
        known = ", ".join(sc.name for sc in self.scenarios)
        raise TopologyError(f"no latency scenario {wanted!r}; known: {known}", source=self.source)

    def _spec(self, node: str | NodeSpec) -> NodeSpec:
        return self.node(node if isinstance(node, str) else node.name)


def _name_problem(name: object) -> str:
    return (f"name {name!r} must be lower-case letters, digits and inner hyphens, at most 63 characters "
            "(it becomes a host name)")


def _check_segment(prefix: str, segment: str, entry: str, expected: str) -> None:
    if not _SEGMENT_RE.match(segment):
        raise TopologyError(f"prefix {prefix!r} must look like {expected} with positive decimal numbers "
                            "and no leading zeros", entry=entry)


def _validate(topo: Topology) -> None:
    """The semantic rules: unique names and prefixes, derived prefixes, references that exist."""
    if not isinstance(topo.name, str) or not topo.name.strip():
        raise TopologyError("the topology needs a non-empty 'name'")
    if not _SEGMENT_RE.match(topo.country_prefix):
        raise TopologyError(f"country_prefix {topo.country_prefix!r} must be a positive decimal (e.g. '88')")
    seen_locations: dict[str, Location] = {}
    for loc in topo.locations:
        if loc.name in seen_locations:
            raise TopologyError("location name is used twice", entry=f"location {loc.name!r}")
        seen_locations[loc.name] = loc
    by_name: dict[str, NodeSpec] = {}
    for spec in topo.nodes:
        entry = f"{spec.role} {spec.name!r}"
        if spec.role not in ROLES:
            raise TopologyError(f"unknown role {spec.role!r}; roles are {', '.join(ROLES)}", entry=entry)
        if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
            raise TopologyError(_name_problem(spec.name), entry=entry)
        if spec.name in by_name:
            raise TopologyError(f"node name is already used by {by_name[spec.name].role} "
                                f"{spec.name!r}; names must be unique across all roles", entry=entry)
        by_name[spec.name] = spec
        if seen_locations.get(spec.location.name) != spec.location:
            raise TopologyError(f"location {spec.location.name!r} is not one of the topology's "
                                "[[location]] entries", entry=entry)
    cc = topo.country_prefix
    seen_prefixes: dict[str, str] = {}
    for spec in topo.nodes:
        entry = f"{spec.role} {spec.name!r}"
        if spec.role == "top" and spec.prefix != cc:
            raise TopologyError(f"a top-level node carries the country prefix {cc!r}, not {spec.prefix!r}",
                                entry=entry)
        if spec.role == "recursive" and spec.prefix is not None:
            raise TopologyError("a recursive node has no prefix", entry=entry)
        if spec.role == "secondary":
            _check_secondary_prefix(spec, cc, entry)
        if spec.role == "enterprise":
            _check_enterprise(spec, by_name, cc, entry)
        elif spec.parent is not None:
            raise TopologyError(f"only enterprises have a parent, not a {spec.role} node", entry=entry)
        if spec.role == "mirror":
            _check_mirror(spec, by_name, entry)
        elif spec.mirror_of is not None:
            raise TopologyError(f"only mirrors have 'mirror_of', not a {spec.role} node", entry=entry)
        if spec.role in ("secondary", "enterprise") and spec.prefix is not None:
            if spec.prefix in seen_prefixes:
                raise TopologyError(f"prefix {spec.prefix!r} is already used by {seen_prefixes[spec.prefix]}",
                                    entry=entry)
            seen_prefixes[spec.prefix] = entry
        for flag, role in (("connected", "secondary"), ("hosted", "enterprise"),
                           ("disaster_recovery", "top")):
            if getattr(spec, flag) and spec.role != role:
                raise TopologyError(f"{flag!r} applies to {role} nodes only", entry=entry)
        if spec.templates and spec.role != "secondary":
            raise TopologyError("'templates' applies to secondary nodes only", entry=entry)
    for role, what in (("top", "national top-level"), ("recursive", "recursive")):
        if not any(n.role == role for n in topo.nodes):
            raise TopologyError(f"a topology needs at least one {what} node ([[{role}]])")
    names = [sc.name for sc in topo.scenarios]
    if len(set(names)) != len(names):
        raise TopologyError("a latency scenario name is used twice", entry="scenarios")
    if topo.default_scenario not in names:
        raise TopologyError(f"default_scenario {topo.default_scenario!r} is not one of the scenarios "
                            f"({', '.join(names)})")


def _check_secondary_prefix(spec: NodeSpec, cc: str, entry: str) -> None:
    prefix = spec.prefix
    if not isinstance(prefix, str):
        raise TopologyError(f"a secondary node needs a prefix like '{cc}.118', not {prefix!r}", entry=entry)
    head, dot, tail = prefix.partition(".")
    if head != cc or not dot or "." in tail:
        raise TopologyError(f"prefix {prefix!r} must be '{cc}.<n>' (allocated under the country prefix)",
                            entry=entry)
    _check_segment(prefix, tail, entry, f"'{cc}.<n>'")


def _check_mirror(spec: NodeSpec, by_name: Mapping[str, NodeSpec], entry: str) -> None:
    primary = by_name.get(spec.mirror_of) if spec.mirror_of is not None else None
    if primary is None or primary.role != "secondary":
        raise TopologyError(f"a mirror belongs to a secondary node, not {spec.mirror_of!r}", entry=entry)
    if spec.prefix != primary.prefix:
        raise TopologyError(f"a mirror carries the prefix {primary.prefix!r} of {primary.name!r}, not "
                            f"{spec.prefix!r}", entry=entry)


def _check_enterprise(spec: NodeSpec, by_name: Mapping[str, NodeSpec], cc: str, entry: str) -> None:
    parent = by_name.get(spec.parent) if spec.parent is not None else None
    if parent is None:
        raise TopologyError(f"secondary {spec.parent!r} does not exist", entry=entry)
    if parent.role != "secondary":
        raise TopologyError(f"{spec.parent!r} is a {parent.role} node, not a secondary", entry=entry)
    prefix = spec.prefix
    if not isinstance(prefix, str):
        raise TopologyError(f"an enterprise needs a prefix like '{cc}.118.8', not {prefix!r}", entry=entry)
    head, dot, tail = prefix.rpartition(".")
    if not dot or head.count(".") != 1 or not head.startswith(cc + "."):
        raise TopologyError(f"prefix {prefix!r} must be '{cc}.<n>.<m>'", entry=entry)
    if head != parent.prefix:
        raise TopologyError(f"prefix {prefix!r} does not derive from the prefix {parent.prefix!r} of its "
                            f"secondary {parent.name!r}", entry=entry)
    _check_segment(prefix, tail, entry, f"'{cc}.<n>.<m>'")
    if spec.hosted and spec.location != parent.location:
        raise TopologyError("a hosted enterprise is located where its secondary node is", entry=entry)


# --------------------------------------------------------------------------------------------------
# From TOML-shaped data

_TOP_KEYS = {"name", "description", "country_prefix", "default_scenario", "location", "top", "secondary",
             "enterprise", "recursive", "scenarios"}
MAX_NODE_WORKERS = 64
_KEYS: dict[str, tuple[set[str], set[str]]] = {  # table -> (required keys, optional keys)
    "location": ({"name", "province", "lat", "lon"}, {"description"}),
    "top": ({"name", "location"}, {"disaster_recovery", "description"}),
    "secondary": ({"name", "location", "prefix", "connected"},
                  {"industry", "description", "templates", "mirrors", "workers"}),
    "mirror": ({"name", "location"}, {"description"}),
    "enterprise": ({"name", "secondary", "prefix", "hosted"}, {"location", "industry", "description", "workers"}),
    "recursive": ({"name", "location"}, {"description", "workers"}),
}


class _Table:
    """One [[table]] entry of the file, with typed getters that name the entry in their errors."""

    def __init__(self, kind: str, index: int, data: object) -> None:
        if not isinstance(data, Mapping):
            raise TopologyError(f"each [[{kind}]] entry must be a table, entry {index + 1} is {data!r}")
        name = data.get("name")
        self.entry = f"{kind} {name!r}" if isinstance(name, str) else f"{kind} #{index + 1}"
        if "name" in data and not isinstance(name, str):
            raise TopologyError(f"'name' must be a string, not {name!r}", entry=self.entry)
        self.data = data
        required, optional = _KEYS[kind]
        missing = sorted(required - set(data))
        if missing:
            raise TopologyError(f"missing {', '.join(repr(k) for k in missing)}", entry=self.entry)
        unknown = sorted(set(data) - required - optional)
        if unknown:
            raise TopologyError(f"unknown key(s) {', '.join(repr(k) for k in unknown)}; allowed: "
                                f"{', '.join(sorted(required | optional))}", entry=self.entry)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is None or isinstance(value, str):
            return value
        hint = f" (quote it: a bare {value!r} is a TOML number)" if key == "prefix" else ""
        raise TopologyError(f"{key!r} must be a string, not {value!r}{hint}", entry=self.entry)

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise TopologyError(f"{key!r} must be true or false, not {value!r}", entry=self.entry)
        return value

    def names(self, key: str) -> tuple[str, ...]:
        """A list of distinct template names (``tyre-batch``: lowercase letters, digits and ``-``)."""
        raw = self.data.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(n, str) and _TEMPLATE_NAME_RE.match(n) for n in raw):
            raise TopologyError(f"{key!r} must be a list of template names (lowercase letters, digits and '-', "
                                f"at most 64), not {raw!r}", entry=self.entry)
        if len(set(raw)) != len(raw):
            raise TopologyError(f"{key!r} names a template twice", entry=self.entry)
        return tuple(raw)

    def count(self, key: str, high: int) -> int:
        value = self.data.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise TopologyError(f"{key!r} must be a whole number from 1 to {high}, not {value!r}", entry=self.entry)
        return value

    def located(self, locations: Mapping[str, Location]) -> Location:
        name = self.text("location")
        if name is None or name not in locations:
            known = ", ".join(sorted(locations)) or "none defined"
            raise TopologyError(f"location {name!r} does not exist (known: {known})", entry=self.entry)
        return locations[name]


def _tables(data: Mapping[str, Any], kind: str) -> list[_Table]:
    raw = data.get(kind, [])
    if not isinstance(raw, list):
        raise TopologyError(f"'{kind}' must be an array of tables ([[{kind}]]), not {type(raw).__name__}")
    return [_Table(kind, i, item) for i, item in enumerate(raw)]


def _scenarios(data: Mapping[str, Any]) -> tuple[tuple[LatencyScenario, ...], str]:
    raw = data.get("scenarios")
    if raw is None:
        return (LatencyScenario("default", LatencySpec()),), data.get("default_scenario", "default")
    if not isinstance(raw, Mapping) or not raw:
        raise TopologyError("[scenarios] must hold at least one [scenarios.<name>] table")
    out = []
    for name, body in raw.items():
        entry = f"scenario {name!r}"
        if not isinstance(body, Mapping):
            raise TopologyError("must be a table of LatencySpec fields", entry=entry)
        unknown = sorted(set(body) - set(LATENCY_FIELDS) - {"description"})
        if unknown:
            raise TopologyError(f"unknown key(s) {', '.join(repr(k) for k in unknown)}; allowed: "
                                f"{', '.join(LATENCY_FIELDS)}, description", entry=entry)
        description = body.get("description", "")
        if not isinstance(description, str):
            raise TopologyError("'description' must be a string", entry=entry)
        try:
            spec = LatencySpec(**{k: v for k, v in body.items() if k != "description"})
        except TopologyError as exc:
            raise TopologyError(exc.problem, entry=entry) from None
        out.append(LatencyScenario(name, spec, description))
    if "default_scenario" in data:
        default = data["default_scenario"]
    elif len(out) == 1:
        default = out[0].name
    else:
        raise TopologyError("several latency scenarios: say which is the default (default_scenario = ...)")
    if not isinstance(default, str):
        raise TopologyError(f"default_scenario must be a string, not {default!r}")
    return tuple(out), default


def _mirrors(t: _Table, secondary: NodeSpec, locations: Mapping[str, Location]) -> list[NodeSpec]:
    raw = t.data.get("mirrors", [])
    if not isinstance(raw, list):
        raise TopologyError("'mirrors' must be a list of tables like { name = ..., location = ... }", entry=t.entry)
    out = []
    for i, item in enumerate(raw):
        m = _Table("mirror", i, item)
        out.append(NodeSpec(m.data["name"], "mirror", m.located(locations), prefix=secondary.prefix,
                            mirror_of=secondary.name, description=m.text("description", "") or ""))
    return out


def _topology_from_dict(data: Mapping[str, Any], source: str) -> Topology:
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise TopologyError(f"unknown top-level key(s) {', '.join(repr(k) for k in unknown)}; allowed: "
                            f"{', '.join(sorted(_TOP_KEYS))}")
    locations: dict[str, Location] = {}
    for t in _tables(data, "location"):
        if t.data["name"] in locations:
            raise TopologyError("location name is used twice", entry=t.entry)
        try:
            loc = Location(t.data["name"], t.data["province"], t.data["lat"], t.data["lon"])
        except TopologyError as exc:
            raise TopologyError(exc.problem, entry=t.entry) from None
        locations[loc.name] = loc
    country = data.get("country_prefix", DEFAULT_COUNTRY_PREFIX)
    if not isinstance(country, str):
        raise TopologyError(f"country_prefix must be a string like '88', not {country!r}")
    nodes: list[NodeSpec] = []
    for t in _tables(data, "top"):
        nodes.append(NodeSpec(t.data["name"], "top", t.located(locations), prefix=country,
                              disaster_recovery=t.flag("disaster_recovery"), description=t.text("description", "") or ""))
    secondaries: dict[str, NodeSpec] = {}
    mirrors: list[NodeSpec] = []
    for t in _tables(data, "secondary"):
        spec = NodeSpec(t.data["name"], "secondary", t.located(locations), prefix=t.text("prefix"),
                        connected=t.flag("connected"), industry=t.text("industry"),
                        description=t.text("description", "") or "", templates=t.names("templates"),
                        workers=t.count("workers", MAX_NODE_WORKERS))
        secondaries.setdefault(spec.name, spec)
        nodes.append(spec)
        mirrors.extend(_mirrors(t, spec, locations))
    for t in _tables(data, "enterprise"):
        hosted = t.flag("hosted")
        parent_name = t.text("secondary")
        parent = secondaries.get(parent_name or "")
        if parent is None:
            other = next((n for n in nodes if n.name == parent_name), None)
            problem = (f"{parent_name!r} is a {other.role} node, not a secondary" if other else
                       f"secondary {parent_name!r} does not exist (it must be a [[secondary]] entry)")
            raise TopologyError(problem, entry=t.entry)
        if hosted and "location" in t.data:
            raise TopologyError("a hosted enterprise has no node of its own: drop 'location' (it is served "
                                f"by {parent.name!r})", entry=t.entry)
        if hosted and "workers" in t.data:
            raise TopologyError(f"a hosted enterprise has no node of its own: drop 'workers' (it is served by "
                                f"{parent.name!r})", entry=t.entry)
        if not hosted and "location" not in t.data:
            raise TopologyError("an enterprise with its own node (hosted = false) needs a 'location'",
                                entry=t.entry)
        where = parent.location if hosted else t.located(locations)
        nodes.append(NodeSpec(t.data["name"], "enterprise", where, prefix=t.text("prefix"), parent=parent.name,
                              hosted=hosted, industry=t.text("industry"),
                              description=t.text("description", "") or "",
                              workers=t.count("workers", MAX_NODE_WORKERS)))
    for t in _tables(data, "recursive"):
        nodes.append(NodeSpec(t.data["name"], "recursive", t.located(locations),
                              description=t.text("description", "") or "", workers=t.count("workers", MAX_NODE_WORKERS)))
    nodes.extend(mirrors)
    scenarios, default = _scenarios(data)
    name = data.get("name", "")
    description = data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise TopologyError("'name' and 'description' must be strings")
    return Topology(name=name, locations=tuple(locations.values()), nodes=tuple(nodes), scenarios=scenarios,
                    default_scenario=default, country_prefix=country, description=description, source=source)


def topology_from_dict(data: Mapping[str, Any], source: str = MEMORY_SOURCE) -> Topology:
    """Build and validate a topology from TOML-shaped data; errors name ``source``."""
    try:
        return _topology_from_dict(data, source)
    except TopologyError as exc:
        raise exc.located(source) from None


def parse_topology(text: str, source: str = MEMORY_SOURCE) -> Topology:
    """Parse TOML text into a validated topology."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"not valid TOML: {exc}", source=source) from None
    return topology_from_dict(data, source)


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file (the only function here that touches the file system)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError("file does not exist", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"cannot read the file: {exc}", source=source) from None
    return parse_topology(text, source)


# --------------------------------------------------------------------------------------------------
# Hash for reports


def canonical_form(topology: Topology) -> dict[str, Any]:
    """A JSON-ready form, independent of the order of entries in the file and of the file's path."""

    def node(n: NodeSpec) -> dict[str, Any]:
        return {"name": n.name, "role": n.role, "location": n.location.name, "prefix": n.prefix,
                "parent": n.parent, "connected": n.connected, "hosted": n.hosted,
                "disaster_recovery": n.disaster_recovery, "industry": n.industry,
                "description": n.description, **({"templates": list(n.templates)} if n.templates else {}),
                **({"mirror_of": n.mirror_of} if n.mirror_of else {}),
                **({"workers": n.workers} if n.workers != 1 else {})}

    return {
        "name": topology.name,
        "description": topology.description,
        "country_prefix": topology.country_prefix,
        "default_scenario": topology.default_scenario,
        "locations": sorted([loc.name, loc.province, loc.lat, loc.lon] for loc in topology.locations),
        "nodes": sorted((node(n) for n in topology.nodes), key=lambda d: d["name"]),
        "scenarios": sorted(({"name": sc.name, "description": sc.description,
                              **{k: getattr(sc.latency, k) for k in LATENCY_FIELDS}}
                             for sc in topology.scenarios), key=lambda d: d["name"]),
    }


def config_hash(topology: Topology) -> str:
    """sha256 (hex) of the canonical form: equal topologies hash equal wherever their file lives."""
    blob = json.dumps(canonical_form(topology), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
