"""Topology files: the shipped ones load and have the documented shape; every malformed one is refused
with a message naming the file, the entry and the problem."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from idresolve.core.topology import (
    ROLES,
    LatencySpec,
    Location,
    NodeSpec,
    Topology,
    TopologyError,
    config_hash,
    load_topology,
    parse_topology,
    topology_from_dict,
)

CONFIG = Path(__file__).resolve().parent.parent / "config"
SHANDONG = CONFIG / "shandong.toml"
MINIMAL = CONFIG / "minimal.toml"
SHANDONG_CITIES = {"jinan", "qingdao", "zibo", "zaozhuang", "dongying", "yantai", "weifang", "jining", "taian",
                   "weihai", "rizhao", "linyi", "dezhou", "liaocheng", "binzhou", "heze"}


@pytest.fixture(scope="module")
def shandong() -> Topology:
    return load_topology(SHANDONG)


@pytest.fixture(scope="module")
def minimal() -> Topology:
    return load_topology(MINIMAL)


def minimal_data() -> dict[str, Any]:
    return tomllib.loads(MINIMAL.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# The shipped topologies


def test_shandong_counts(shandong: Topology) -> None:
    tops = shandong.nodes_by_role("top")
    assert len(tops) == 7
    assert sorted(n.location.name for n in tops if n.disaster_recovery) == ["guiyang", "nanjing"]
    assert {n.location.name for n in tops if not n.disaster_recovery} == {
        "beijing", "shanghai", "guangzhou", "wuhan", "chongqing"}
    secondaries = shandong.nodes_by_role("secondary")
    assert len(secondaries) == 38
    assert sum(n.connected for n in secondaries) == 21
    assert {n.location.province for n in secondaries} == {"Shandong"}
    assert {n.location.name for n in secondaries} == SHANDONG_CITIES
    assert [n.location.name for n in shandong.nodes_by_role("recursive")] == ["jinan", "qingdao"]
    for sec in secondaries:
        assert 2 <= len(shandong.enterprises_of(sec)) <= 3, sec.name
    own_nodes = [n for n in shandong.nodes_by_role("enterprise") if not n.hosted]
    assert 12 <= len(own_nodes) <= 20
    mirrors = shandong.nodes_by_role("mirror")
    assert {m.mirror_of for m in mirrors} == {"sec-tyre-qingdao", "sec-appliance-qingdao"}
    assert len(shandong.running_nodes()) == 7 + 38 + len(own_nodes) + 2 + len(mirrors)
    assert shandong.running_nodes()[-len(mirrors):] == mirrors  # last: no other node's ports move


def test_shandong_example_identifier_path(shandong: Topology) -> None:
    sec = shandong.server_for_prefix("88.118")
    assert sec.role == "secondary" and sec.connected
    ent = shandong.server_for_prefix("88.118.8")
    assert ent.role == "enterprise" and not ent.hosted and ent.runs
    assert shandong.secondary_of(ent) == sec
    assert shandong.resolvable_nationally(ent)
    assert ent.name in shandong.running_node_names()


def test_shandong_file_says_names_are_illustrative() -> None:
    assert "ILLUSTRATIVE" in SHANDONG.read_text(encoding="utf-8")


def test_shandong_latency_scenarios(shandong: Topology) -> None:
    assert shandong.default_scenario == "direct-interconnect"
    assert shandong.latency().inter_province_rtt_ms == 30.0
    assert shandong.latency("before-interconnect").inter_province_rtt_ms == 39.0
    internet = shandong.latency("internet")
    assert internet.jitter_ms > shandong.latency().jitter_ms and internet.loss > 0


def test_minimal_shape(minimal: Topology) -> None:
    assert [n.disaster_recovery for n in minimal.nodes_by_role("top")] == [False, True]
    assert all(n.prefix == "88" for n in minimal.nodes_by_role("top"))
    assert [(n.prefix, n.connected) for n in minimal.nodes_by_role("secondary")] == [
        ("88.118", True), ("88.120", False)]
    assert [(n.prefix, n.hosted) for n in minimal.enterprises_of("sec-tyre-qingdao")] == [
        ("88.118.8", False), ("88.118.9", True)]
    assert minimal.enterprises_of("sec-steel-jinan") == ()
    assert len(minimal.nodes_by_role("recursive")) == 1
    assert minimal.running_node_names() == (
        "top-beijing", "top-nanjing", "sec-tyre-qingdao", "sec-steel-jinan", "ent-tyre-qingdao-8", "rec-jinan")


def test_hosted_enterprise_is_served_by_its_secondary(minimal: Topology) -> None:
    hosted = minimal.node("ent-tyre-qingdao-9")
    assert hosted.hosted and not hosted.runs and hosted.parent == "sec-tyre-qingdao"
    assert hosted.location == minimal.node("sec-tyre-qingdao").location
    assert minimal.server_for_prefix("88.118.9").name == "sec-tyre-qingdao"
    assert minimal.hosted_by("sec-tyre-qingdao") == (hosted,)
    assert hosted.name not in minimal.running_node_names()


def test_resolvable_nationally(minimal: Topology) -> None:
    assert minimal.resolvable_nationally("sec-tyre-qingdao")
    assert minimal.resolvable_nationally("ent-tyre-qingdao-9")
    assert not minimal.resolvable_nationally("sec-steel-jinan")
    assert not minimal.resolvable_nationally("top-beijing")


@pytest.mark.parametrize(("call", "message"), [
    (lambda t: t.nodes_by_role("leaf"), "unknown role 'leaf'"),
    (lambda t: t.node("nope"), "no node named 'nope'"),
    (lambda t: t.location("mars"), "no location named 'mars'"),
    (lambda t: t.secondary_of("sec-tyre-qingdao"), "not an enterprise"),
    (lambda t: t.enterprises_of("ent-tyre-qingdao-8"), "not a secondary"),
    (lambda t: t.server_for_prefix("88.999"), "no secondary or enterprise has prefix '88.999'"),
    (lambda t: t.latency("lan"), "no latency scenario 'lan'; known: direct-interconnect"),
])
def test_lookup_errors(minimal: Topology, call: Callable[[Topology], object], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        call(minimal)


def test_roles_constant() -> None:
    assert ROLES == ("top", "secondary", "enterprise", "recursive", "mirror")


# --------------------------------------------------------------------------------------------------
# config_hash


def test_config_hash_is_stable_and_path_independent(tmp_path: Path, minimal: Topology) -> None:
    copy_path = tmp_path / "elsewhere.toml"
    copy_path.write_text(MINIMAL.read_text(encoding="utf-8"), encoding="utf-8")
    h = config_hash(minimal)
    assert len(h) == 64 and int(h, 16) >= 0
    assert config_hash(load_topology(copy_path)) == h
    assert config_hash(load_topology(MINIMAL)) == h


def test_config_hash_ignores_entry_order_but_not_content(minimal: Topology) -> None:
    data = minimal_data()
    for key in ("location", "top", "secondary", "enterprise"):
        data[key].reverse()
    assert config_hash(topology_from_dict(data)) == config_hash(minimal)
    data["scenarios"]["internet"]["loss"] = 0.01
    assert config_hash(topology_from_dict(data)) != config_hash(minimal)


def test_config_hashes_of_shipped_files_differ(minimal: Topology, shandong: Topology) -> None:
    assert config_hash(minimal) != config_hash(shandong)


# --------------------------------------------------------------------------------------------------
# Invalid topologies: each mutation of minimal.toml must raise a helpful TopologyError


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return apply


def _append(table: str, entry: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.setdefault(table, []).append(entry)


SEC0 = ("secondary", 0)  # sec-tyre-qingdao, 88.118
ENT0 = ("enterprise", 0)  # ent-tyre-qingdao-8, own node
ENT1 = ("enterprise", 1)  # ent-tyre-qingdao-9, hosted

INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("duplicate node name across roles", _set((*ENT0, "name"), "sec-steel-jinan"),
     "enterprise 'sec-steel-jinan': node name is already used by secondary"),
    ("duplicate location", _append("location", {"name": "jinan", "province": "Shandong", "lat": 1, "lon": 1}),
     "location 'jinan': location name is used twice"),
    ("duplicate secondary prefix", _set(("secondary", 1, "prefix"), "88.118"),
     "secondary 'sec-steel-jinan': prefix '88.118' is already used by secondary 'sec-tyre-qingdao'"),
    ("duplicate enterprise prefix", _set((*ENT1, "prefix"), "88.118.8"),
     "enterprise 'ent-tyre-qingdao-9': prefix '88.118.8' is already used"),
    ("secondary prefix is the country prefix", _set((*SEC0, "prefix"), "88"), "must be '88.<n>'"),
    ("secondary prefix under another country", _set((*SEC0, "prefix"), "89.118"), "must be '88.<n>'"),
    ("secondary prefix too deep", _set((*SEC0, "prefix"), "88.118.1"), "must be '88.<n>'"),
    ("secondary prefix zero", _set((*SEC0, "prefix"), "88.0"), "no leading zeros"),
    ("secondary prefix leading zero", _set((*SEC0, "prefix"), "88.0118"), "no leading zeros"),
    ("secondary prefix not a number", _set((*SEC0, "prefix"), "88.abc"), "positive decimal"),
    ("prefix written as a TOML float", _set((*SEC0, "prefix"), 88.118), "quote it"),
    ("enterprise prefix not derived", _set((*ENT0, "prefix"), "88.120.8"),
     "prefix '88.120.8' does not derive from the prefix '88.118' of its secondary 'sec-tyre-qingdao'"),
    ("enterprise prefix too short", _set((*ENT0, "prefix"), "88.118"), "must be '88.<n>.<m>'"),
    ("enterprise prefix too deep", _set((*ENT0, "prefix"), "88.118.8.1"), "must be '88.<n>.<m>'"),
    ("enterprise prefix bad segment", _set((*ENT0, "prefix"), "88.118.x"), "positive decimal"),
    ("enterprise of a missing secondary", _set((*ENT0, "secondary"), "sec-nowhere"),
     "enterprise 'ent-tyre-qingdao-8': secondary 'sec-nowhere' does not exist"),
    ("enterprise of a top-level node", _set((*ENT0, "secondary"), "top-beijing"),
     "enterprise 'ent-tyre-qingdao-8': 'top-beijing' is a top node, not a secondary"),
    ("hosted enterprise with a location", _set((*ENT1, "location"), "qingdao"), "drop 'location'"),
    ("own-node enterprise without a location", _delete((*ENT0, "location")), "needs a 'location'"),
    ("missing location", _set(("recursive", 0, "location"), "mars"),
     "recursive 'rec-jinan': location 'mars' does not exist"),
    ("no top-level node", _set(("top",), []), "at least one national top-level node"),
    ("no recursive node", _delete(("recursive",)), "at least one recursive node"),
    ("unknown key in a node", _set((*SEC0, "conected"), True), "unknown key(s) 'conected'"),
    ("prefix on a top-level node", _set(("top", 0, "prefix"), "88"), "unknown key(s) 'prefix'"),
    ("prefix on a recursive node", _set(("recursive", 0, "prefix"), "88.1"), "unknown key(s) 'prefix'"),
    ("unknown top-level key", _set(("nodes",), []), "unknown top-level key(s) 'nodes'"),
    ("connected is required", _delete((*SEC0, "connected")), "secondary 'sec-tyre-qingdao': missing 'connected'"),
    ("hosted is required", _delete((*ENT1, "hosted")), "missing 'hosted'"),
    ("connected is a bool", _set((*SEC0, "connected"), "yes"), "'connected' must be true or false"),
    ("node name not a DNS label", _set(("top", 0, "name"), "Top_Beijing"), "must be lower-case letters"),
    ("node name not a string", _set(("top", 0, "name"), 7), "'name' must be a string"),
    ("latitude out of range", _set(("location", 0, "lat"), 91.0), "lat 91.0 is outside [-90, 90]"),
    ("longitude not a number", _set(("location", 0, "lon"), "east"), "lon must be a number"),
    ("empty province", _set(("location", 0, "province"), " "), "province must be a non-empty string"),
    ("table that is not an array", _set(("top",), {"name": "x"}), "'top' must be an array of tables"),
    ("scenario with an unknown key", _set(("scenarios", "internet", "rtt_ms"), 30),
     "scenario 'internet': unknown key(s) 'rtt_ms'"),
    ("scenario with a negative value", _set(("scenarios", "internet", "jitter_ms"), -1.0),
     "scenario 'internet': jitter_ms must not be negative"),
    ("scenario loss of 1", _set(("scenarios", "internet", "loss"), 1.0), "loss must be below 1"),
    ("scenario value a bool", _set(("scenarios", "internet", "loss"), True), "loss must be a finite number"),
    ("unknown default scenario", _set(("default_scenario",), "lan"), "default_scenario 'lan' is not one of"),
    ("several scenarios, no default", _delete(("default_scenario",)), "say which is the default"),
    ("empty scenarios table", _set(("scenarios",), {}), "at least one [scenarios.<name>] table"),
    ("bad country prefix", _set(("country_prefix",), "088"), "country_prefix '088' must be a positive decimal"),
]


@pytest.mark.parametrize(("mutate", "message"), [(m, msg) for _, m, msg in INVALID],
                         ids=[case for case, _, _ in INVALID])
def test_invalid_topology(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    data = copy.deepcopy(minimal_data())
    mutate(data)
    with pytest.raises(TopologyError) as info:
        topology_from_dict(data, source="bad.toml")
    text = str(info.value)
    assert text.startswith("bad.toml: "), text
    assert message in text, text
    assert info.value.source == "bad.toml"


def test_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(MINIMAL.read_text(encoding="utf-8").replace('prefix = "88.118.8"', 'prefix = "88.120.8"'),
                    encoding="utf-8")
    with pytest.raises(TopologyError, match=r"broken\.toml: enterprise 'ent-tyre-qingdao-8': prefix '88\.120\.8'"):
        load_topology(path)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"nope\.toml: file does not exist"):
        load_topology(tmp_path / "nope.toml")
    with pytest.raises(TopologyError, match="x.toml: not valid TOML"):
        parse_topology("name = ", source="x.toml")


def test_topology_error_is_a_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


def test_small_topology_without_5_plus_2_and_without_scenarios() -> None:
    topo = topology_from_dict({
        "name": "tiny",
        "location": [{"name": "here", "province": "Shandong", "lat": 36.0, "lon": 117.0}],
        "top": [{"name": "top", "location": "here"}],
        "recursive": [{"name": "rec", "location": "here"}],
    })
    assert topo.running_node_names() == ("top", "rec")
    assert topo.default_scenario == "default" and topo.latency() == LatencySpec()


def test_single_scenario_is_the_default() -> None:
    data = minimal_data()
    del data["default_scenario"]
    data["scenarios"] = {"only": {"inter_province_rtt_ms": 12}}
    topo = topology_from_dict(data)
    assert topo.default_scenario == "only" and topo.latency().inter_province_rtt_ms == 12.0


# --------------------------------------------------------------------------------------------------
# Built in code rather than from TOML: the same rules hold


HERE = Location("here", "Shandong", 36.0, 117.0)
THERE = Location("there", "Shandong", 37.0, 118.0)


def _topo(*extra: NodeSpec, locations: tuple[Location, ...] = (HERE,)) -> Topology:
    base = (NodeSpec("top", "top", HERE, prefix="88"), NodeSpec("rec", "recursive", HERE))
    return Topology(name="code", locations=locations, nodes=base + extra)


@pytest.mark.parametrize(("extra", "message"), [
    (NodeSpec("sec", "secondary", HERE, prefix="88.1", hosted=True), "'hosted' applies to enterprise nodes only"),
    (NodeSpec("rec2", "recursive", HERE, disaster_recovery=True), "'disaster_recovery' applies to top nodes"),
    (NodeSpec("x", "leaf", HERE), "unknown role 'leaf'"),
    (NodeSpec("top2", "top", HERE, prefix="86"), "carries the country prefix '88'"),
    (NodeSpec("rec2", "recursive", HERE, prefix="88.1"), "a recursive node has no prefix"),
    (NodeSpec("sec", "secondary", THERE, prefix="88.1"), "location 'there' is not one of"),
    (NodeSpec("sec", "secondary", HERE, prefix="88.1", parent="top"), "only enterprises have a parent"),
    (NodeSpec("ent", "enterprise", HERE, prefix="88.1.1", parent="top"), "'top' is a top node, not a secondary"),
])
def test_code_built_topology_is_validated(extra: NodeSpec, message: str) -> None:
    with pytest.raises(TopologyError, match=message) as info:
        _topo(extra)
    assert str(info.value).startswith("<memory>: ")


def test_code_built_hosted_enterprise_must_sit_with_its_secondary() -> None:
    sec = NodeSpec("sec", "secondary", HERE, prefix="88.1", connected=True)
    with pytest.raises(TopologyError, match="located where its secondary node is"):
        _topo(sec, NodeSpec("ent", "enterprise", THERE, prefix="88.1.1", parent="sec", hosted=True),
              locations=(HERE, THERE))
    ok = _topo(sec, NodeSpec("ent", "enterprise", HERE, prefix="88.1.1", parent="sec", hosted=True))
    assert ok.running_node_names() == ("top", "sec", "rec")


def test_values_are_frozen(minimal: Topology) -> None:
    with pytest.raises(AttributeError):
        minimal.node("top-beijing").name = "x"  # type: ignore[misc]
    assert hash(minimal) == hash(load_topology(MINIMAL))
