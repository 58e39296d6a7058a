"""The synthetic identifier space and its store: sizes, membership, records, the overlay, listing."""

from __future__ import annotations

from collections import Counter

import pytest

from clusterutil import CONFIG, MINIMAL
from idresolve.core.handles import fold
from idresolve.core.records import Record
from idresolve.core.topology import load_topology
from idresolve.core.values import string_value
from idresolve.sim.draw import Zipf, streams
from idresolve.sim.space import SpaceError, SpaceSpec, build_space, template_records
from idresolve.sim.store import SyntheticStore


@pytest.fixture(scope="module")
def shandong_space():  # type: ignore[no-untyped-def]
    return build_space(load_topology(CONFIG / "shandong.toml"), SpaceSpec())


def test_the_report_s_33_billion_spread_over_every_prefix_by_weight(shandong_space) -> None:  # type: ignore[no-untyped-def]
    sp = shandong_space
    assert sp.total == 33_000_000_000
    topo = load_topology(CONFIG / "shandong.toml")
    prefixes = {n.prefix for n in topo.nodes if n.role in ("secondary", "enterprise")}
    assert {p.prefix for p in sp.prefixes} == prefixes
    by_role = {n.prefix: n.role for n in topo.nodes}
    ent = [p.size for p in sp.prefixes if by_role[p.prefix] == "enterprise"]
    sec = [p.size for p in sp.prefixes if by_role[p.prefix] == "secondary"]
    assert max(ent) - min(ent) <= 1 and max(sec) - min(sec) <= 1
    assert abs(ent[0] / sec[0] - 3.0) < 1e-6  # enterprise_weight 3, secondary_weight 1
    # hosted enterprises are held by their secondary node, the others by their own node
    assert sp.of("88.118.9") is None and sp.of("88.118.1").holder == "sec-tyre-qingdao"  # type: ignore[union-attr]
    assert sp.of("88.118.8").holder == "ent-tyre-qingdao-8"  # type: ignore[union-attr]


def test_weights_per_node_and_bad_specs() -> None:
    topo = load_topology(MINIMAL)
    sp = build_space(topo, SpaceSpec(identifiers=1000, weights={"ent-tyre-qingdao-8": 0.0}))
    assert sp.of("88.118.8") is None and sp.total == 1000
    with pytest.raises(SpaceError, match="unknown nodes: nope"):
        build_space(topo, SpaceSpec(identifiers=10, weights={"nope": 1.0}))
    with pytest.raises(SpaceError):
        SpaceSpec(identifiers=0)
    with pytest.raises(SpaceError):
        SpaceSpec(optional_share=1.5)


def test_ranks_map_to_identifiers_that_exist_and_records_are_functions_of_them(shandong_space) -> None:  # type: ignore[no-untyped-def]
    sp = shandong_space
    seen = set()
    for rank in range(2000):
        h = sp.handle_of_rank(rank)
        assert h not in seen
        seen.add(h)
        p = sp.of(fold(h.split("/")[0]))
        assert p is not None and p.member(fold(h.split("/", 1)[1])) is not None
    # popular ranks are spread over the prefixes, not piled on the first
    assert len(Counter(h.split("/")[0] for h in seen)) > 60
    p = sp.prefixes[7]
    a, b = p.record(12345), p.record(12345)
    assert a == b and a.handle == p.handle(12345)
    assert a.values[0].type == "URL" and p.suffix(12345).encode() in a.values[0].data
    assert [v.index for v in a.values] == sorted(v.index for v in a.values)
    assert any(v.type == "TEMPLATE" for v in a.values)  # names its template at 1001
    assert p.record(1) != p.record(2)


def test_unknown_identifiers_do_not_exist(shandong_space) -> None:  # type: ignore[no-untyped-def]
    sp = shandong_space
    for x in range(0, 10**10, 10**8):
        h = sp.unknown_handle(x)
        prefix, suffix = h.split("/", 1)
        p = sp.of(fold(prefix))
        assert p is not None and p.member(fold(suffix)) is None


def test_the_templates_each_secondary_must_publish(shandong_space) -> None:  # type: ignore[no-untyped-def]
    recs = template_records(shandong_space)
    assert recs["88.118"][0][0] == "88.118/TPL-tyre-batch"
    assert all(h.startswith(sec + "/TPL-") for sec, items in recs.items() for h, _ in items)


def test_store_layers_synthetic_records_under_what_is_written() -> None:
    topo = load_topology(MINIMAL)
    sp = build_space(topo, SpaceSpec(identifiers=1000))
    st = SyntheticStore(sp, "ent-tyre-qingdao-8")
    p = sp.of("88.118.8")
    assert p is not None and p.size > 0
    key = fold(p.handle(3))
    assert st.get(key) == p.record(3)
    assert st.get(fold(p.handle(p.size))) is None  # beyond the prefix's size
    assert st.get("88.118.9/" + p.ftag + "00000000003") is None  # not a prefix this node holds
    changed = Record(p.handle(3), (string_value(1, "URL", "https://changed.example"),))
    st.put(changed)
    assert st.get(key) == changed
    assert st.delete(key) and st.get(key) is None  # the overlay copy and the synthetic one are gone
    assert not st.delete(fold(p.handle(p.size + 5)))
    st.put(Record(p.handle(3), ()))
    assert st.get(key) is not None  # created again: the tombstone is lifted
    assert st.count("88.118.8") == p.size  # 3 counted once
    st.put(Record("88.118.8/ZZZ-extra", ()))
    assert st.count("88.118.8") == p.size + 1
    assert st.existing([key, fold(p.handle(4)), "88.118.8/nope"]) == {key, fold(p.handle(4))}


def test_listing_merges_both_layers_in_key_order_for_any_page() -> None:
    topo = load_topology(MINIMAL)
    sp = build_space(topo, SpaceSpec(identifiers=120))
    st = SyntheticStore(sp, "ent-tyre-qingdao-8")
    p = sp.of("88.118.8")
    assert p is not None
    st.delete(fold(p.handle(5)))
    st.delete(fold(p.handle(17)))
    st.put(Record(p.handle(9), (string_value(1, "URL", "x"),)))  # a synthetic one changed: listed once
    for extra in ("88.118.8/A-first", "88.118.8/ZZZ-last", f"88.118.8/{p.tag}00000000011X"):
        st.put(Record(extra, ()))
    expected = sorted({fold(p.handle(k)) for k in range(p.size) if k not in (5, 17)}
                      | {"88.118.8/a-first", "88.118.8/zzz-last", fold(f"88.118.8/{p.tag}00000000011X")})
    assert [fold(h) for h in st.list_handles("88.118.8")] == expected
    for offset, limit in ((0, 7), (3, 10), (len(expected) - 2, 5), (len(expected), 3), (40, 1)):
        assert [fold(h) for h in st.list_handles("88.118.8", offset, limit)] == expected[offset:offset + limit]
    assert st.count("88.118.8") == len(expected)


def test_zipf_draws_follow_the_law_and_the_streams_are_independent() -> None:
    rng = streams(7, 0)
    z = Zipf(10**12, 1.2, rng["keys"])
    draws = [z.draw() for _ in range(20000)]
    assert all(0 <= d < 10**12 for d in draws)
    c = Counter(draws)
    # P(0) / P(1) = 2 ** 1.2 = 2.30 for Zipf with exponent 1.2
    assert 1.9 < c[0] / c[1] < 2.8, (c[0], c[1])
    assert streams(7, 0)["keys"].random() == streams(7, 0)["keys"].random()
    assert streams(7, 0)["keys"].random() != streams(7, 1)["keys"].random()
    assert streams(7, 0)["keys"].random() != streams(7, 0)["links"].random()


def test_identifiers_of_low_demand_prefixes_are_kept_in_proportion_and_drawn_as_named(shandong_space) -> None:  # type: ignore[no-untyped-def]
    from idresolve.sim.run import MEMO_RANKS, _key_source
    from idresolve.sim.workload import Workload

    w = Workload("t", topology=CONFIG / "shandong.toml", resolutions=1.0, profile=(1.0,), keys="zipf",
                 zipf_exponent=1.0)
    prefixes = [p.prefix for p in shandong_space.prefixes]
    low = {p: 0.1 for p in prefixes[::3]}  # a third of the prefixes, kept one time in ten
    key = _key_source(w, shandong_space, streams(5, 0)["keys"], [], low)
    # The same stream by the definition: draw a rank, name it, keep it with its prefix's demand, else again.
    rng = streams(5, 0)["keys"]
    z = Zipf(shandong_space.total, 1.0, rng)

    def by_definition() -> str:
        while True:
            h = shandong_space.handle_of_rank(z.draw())
            d = low.get(h.split("/")[0])
            if d is None or rng.random() < d:
                return h

    drawn = [key() for _ in range(20_000)]
    assert drawn == [by_definition() for _ in range(20_000)]
    memoized = {shandong_space.handle_of_rank(r) for r in range(MEMO_RANKS)}
    assert 1000 < len(set(drawn) - memoized) < len(set(drawn))  # named both ways: memoized and on demand
    share_low = sum(1 for h in drawn if h.split("/")[0] in low) / len(drawn)
    size = {p.prefix: p.size for p in shandong_space.prefixes}
    weight_low = sum(size[p] for p in low) / shandong_space.total
    expected = 0.1 * weight_low / (0.1 * weight_low + (1 - weight_low))
    assert 0.6 * expected < share_low < 1.5 * expected, (share_low, expected)
