"""The link latency model: base delays by distance and province, bounded jitter, seeded loss, path sums."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idresolve.core.latency import JITTER_CLIP_SIGMAS, LatencyModel, haversine_km
from idresolve.core.topology import LatencySpec, Location, TopologyError, load_topology

CONFIG = Path(__file__).resolve().parent.parent / "config"

BEIJING = Location("beijing", "Beijing", 39.9042, 116.4074)
SHANGHAI = Location("shanghai", "Shanghai", 31.2304, 121.4737)
JINAN = Location("jinan", "Shandong", 36.6512, 117.1201)
QINGDAO = Location("qingdao", "Shandong", 36.0671, 120.3826)
# One degree of latitude due north of Jinan: 111.195 km on the mean-radius sphere.
NORTH = Location("north", "Shandong", 37.6512, 117.1201)
DEGREE_KM = 2 * math.pi * 6371.0088 / 360


def model(**overrides: float) -> LatencyModel:
    return LatencyModel(LatencySpec(**overrides), (BEIJING, SHANGHAI, JINAN, QINGDAO, NORTH))


# --------------------------------------------------------------------------------------------------
# Base delays


def test_haversine() -> None:
    assert haversine_km(JINAN, NORTH) == pytest.approx(DEGREE_KM, rel=1e-9)
    assert haversine_km(BEIJING, SHANGHAI) == pytest.approx(1067, abs=5)  # published great-circle figure
    assert haversine_km(JINAN, QINGDAO) == pytest.approx(haversine_km(QINGDAO, JINAN))
    assert haversine_km(JINAN, JINAN) == 0.0


@pytest.mark.parametrize(("scenario", "rtt_ms"), [("direct-interconnect", 30.0), ("before-interconnect", 39.0)])
def test_inter_province_one_way_from_the_shipped_scenarios(scenario: str, rtt_ms: float) -> None:
    topo = load_topology(CONFIG / "shandong.toml")
    m = LatencyModel.for_topology(topo, scenario)
    jinan, beijing = topo.location("jinan"), topo.location("beijing")
    per_hop = m.spec.per_hop_ms
    assert m.base_one_way_ms(jinan, beijing) == pytest.approx(rtt_ms / 2 + per_hop)
    # The network part alone: 15 ms after the direct interconnection points, 19.5 ms before.
    bare = LatencyModel(LatencySpec(inter_province_rtt_ms=rtt_ms, per_hop_ms=0.0))
    assert bare.base_one_way_ms(jinan, beijing) == {30.0: 15.0, 39.0: 19.5}[rtt_ms]


def test_default_spec_inter_province() -> None:
    m = model()
    assert m.base_one_way_ms(JINAN, BEIJING) == pytest.approx(15.1)
    assert m.base_one_way_ms(BEIJING, SHANGHAI) == pytest.approx(15.1)  # distance does not matter
    assert model(inter_province_rtt_ms=39.0).base_one_way_ms(JINAN, SHANGHAI) == pytest.approx(19.6)


def test_intra_province_is_distance_based() -> None:
    m = model()
    assert m.base_one_way_ms(JINAN, NORTH) == pytest.approx(DEGREE_KM * 1.5 * 0.005 + 0.1)  # ~0.934 ms
    km = haversine_km(JINAN, QINGDAO)
    assert 290 < km < 310
    assert m.base_one_way_ms(JINAN, QINGDAO) == pytest.approx(km * 1.5 * 0.005 + 0.1)  # ~2.35 ms
    slow = model(route_factor=2.0, intra_km_ms=0.01, per_hop_ms=0.0)
    assert slow.base_one_way_ms(JINAN, QINGDAO) == pytest.approx(km * 0.02)


def test_same_location_is_one_hop() -> None:
    assert model().base_one_way_ms(JINAN, JINAN) == pytest.approx(0.1)
    assert model(per_hop_ms=0.3).base_one_way_ms(QINGDAO, QINGDAO) == pytest.approx(0.3)


def test_province_comparison_ignores_case_and_spaces() -> None:
    other_spelling = Location("zibo", " shandong", 36.8131, 118.0548)
    assert model().base_one_way_ms(JINAN, other_spelling) < 2.0


def test_unknown_locations_are_computed_like_precomputed_ones() -> None:
    precomputed = model()
    bare = LatencyModel(LatencySpec())
    for a in (BEIJING, JINAN, QINGDAO):
        for b in (SHANGHAI, JINAN, NORTH):
            assert precomputed.base_one_way_ms(a, b) == bare.base_one_way_ms(a, b)


@given(st.floats(-89, 89), st.floats(-179, 179), st.floats(-89, 89), st.floats(-179, 179), st.booleans())
def test_base_is_symmetric_and_non_negative(lat1: float, lon1: float, lat2: float, lon2: float,
                                           same_province: bool) -> None:
    a = Location("a", "Shandong", lat1, lon1)
    b = Location("b", "Shandong" if same_province else "Hebei", lat2, lon2)
    m = LatencyModel(LatencySpec())
    assert m.base_one_way_ms(a, b) == pytest.approx(m.base_one_way_ms(b, a))
    assert m.base_one_way_ms(a, b) >= 0.1


# --------------------------------------------------------------------------------------------------
# Sampling


def test_jitter_is_bounded_and_centred() -> None:
    m = model(jitter_ms=0.5)
    rng = random.Random(7)
    base = m.base_one_way_ms(JINAN, BEIJING)
    samples = [m.sample_one_way_ms(JINAN, BEIJING, rng) for _ in range(20_000)]
    values = [s for s in samples if s is not None]
    assert len(values) == len(samples)  # loss 0: nothing lost
    bound = JITTER_CLIP_SIGMAS * 0.5
    assert all(base - bound <= v <= base + bound for v in values)
    assert statistics.fmean(values) == pytest.approx(base, abs=0.02)
    assert statistics.stdev(values) == pytest.approx(0.5, rel=0.05)  # clipping at 3 sigma trims ~1.4 %
    assert min(values) < base - 0.5 < base + 0.5 < max(values)  # the noise is really there


def test_backbone_jitter_stays_within_the_reported_0_02_ms() -> None:
    m = model()  # jitter_ms = 0.02
    rng = random.Random(1)
    base = m.base_one_way_ms(JINAN, QINGDAO)
    values = [m.sample_one_way_ms(JINAN, QINGDAO, rng) for _ in range(5_000)]
    assert all(v is not None and abs(v - base) <= 0.06 + 1e-12 for v in values)


def test_delay_never_goes_below_zero() -> None:
    m = model(per_hop_ms=0.05, jitter_ms=2.0)
    rng = random.Random(3)
    values = [m.sample_one_way_ms(JINAN, JINAN, rng) for _ in range(5_000)]
    assert all(v is not None and 0.0 <= v <= 0.05 + 6.0 for v in values)
    assert values.count(0.0) > 1_000  # about half the draws fall below 0 and are floored


@pytest.mark.parametrize("loss", [0.002, 0.05, 0.3])
def test_loss_rate_is_statistically_close(loss: float) -> None:
    m = model(loss=loss)
    rng = random.Random(12345)
    n = 50_000
    lost = sum(m.sample_one_way_ms(JINAN, BEIJING, rng) is None for _ in range(n))
    sigma = math.sqrt(loss * (1 - loss) / n)
    assert abs(lost / n - loss) < 5 * sigma


def test_no_loss_means_none_is_never_returned() -> None:
    m = model(jitter_ms=1.0)
    rng = random.Random(0)
    assert all(m.sample_one_way_ms(JINAN, SHANGHAI, rng) is not None for _ in range(10_000))


def test_same_seed_same_delays() -> None:
    m = model(jitter_ms=1.0, loss=0.1)
    a, b = random.Random(42), random.Random(42)
    assert ([m.sample_one_way_ms(JINAN, QINGDAO, a) for _ in range(200)]
            == [m.sample_one_way_ms(JINAN, QINGDAO, b) for _ in range(200)])


def test_no_jitter_no_loss_draws_nothing() -> None:
    m = model(jitter_ms=0.0, loss=0.0)
    rng = random.Random(9)
    state = rng.getstate()
    assert m.sample_one_way_ms(JINAN, BEIJING, rng) == m.base_one_way_ms(JINAN, BEIJING)
    assert rng.getstate() == state


# --------------------------------------------------------------------------------------------------
# Paths, the off model, specs


def test_expected_path_sums_round_trips() -> None:
    m = model()
    path = [QINGDAO, JINAN, BEIJING]
    expected = 2 * m.base_one_way_ms(QINGDAO, JINAN) + 2 * m.base_one_way_ms(JINAN, BEIJING)
    assert m.expected_path_ms(path) == pytest.approx(expected)
    assert m.expected_path_ms(path) == pytest.approx(2 * (haversine_km(QINGDAO, JINAN) * 0.0075 + 0.1) + 30.2)
    assert m.round_trip_ms(JINAN, BEIJING) == pytest.approx(30.2)
    assert m.expected_path_ms([JINAN]) == 0.0
    assert m.expected_path_ms([]) == 0.0


def test_measured_mean_matches_expected_path() -> None:
    m = model(jitter_ms=0.3)
    rng = random.Random(2024)
    path = [QINGDAO, JINAN, SHANGHAI]
    totals = []
    for _ in range(5_000):
        total = 0.0
        for a, b in zip(path, path[1:], strict=False):
            there, back = m.sample_one_way_ms(a, b, rng), m.sample_one_way_ms(b, a, rng)
            assert there is not None and back is not None
            total += there + back
        totals.append(total)
    # 4 one-way hops of sigma 0.3: the mean of 5,000 totals has sigma ~0.0085 ms.
    assert statistics.fmean(totals) == pytest.approx(m.expected_path_ms(path), abs=0.05)


def test_off_model_is_all_zero() -> None:
    off = LatencyModel.off()
    assert off.is_off and not model().is_off
    rng = random.Random(0)
    assert off.base_one_way_ms(JINAN, BEIJING) == 0.0
    assert off.base_one_way_ms(JINAN, QINGDAO) == 0.0
    assert off.sample_one_way_ms(BEIJING, SHANGHAI, rng) == 0.0
    assert off.expected_path_ms([JINAN, QINGDAO, BEIJING]) == 0.0


def test_model_from_topology_uses_the_default_scenario_and_its_locations() -> None:
    topo = load_topology(CONFIG / "minimal.toml")
    m = LatencyModel.for_topology(topo)
    assert m.spec == topo.latency("direct-interconnect")
    internet = LatencyModel.for_topology(topo, "internet")
    assert internet.spec.loss == 0.002 and internet.spec.jitter_ms == 2.0
    with pytest.raises(TopologyError, match="no latency scenario 'lan'"):
        LatencyModel.for_topology(topo, "lan")
    assert "locations=4" in repr(m)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"per_hop_ms": -0.1}, "per_hop_ms must not be negative"),
    ({"loss": 1.0}, "loss must be below 1"),
    ({"jitter_ms": math.inf}, "jitter_ms must be a finite number"),
    ({"jitter_ms": math.nan}, "jitter_ms must be a finite number"),
    ({"route_factor": True}, "route_factor must be a finite number"),
])
def test_latency_spec_validation(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        LatencySpec(**overrides)


def test_latency_spec_defaults_and_int_coercion() -> None:
    spec = LatencySpec(inter_province_rtt_ms=39)
    assert spec.inter_province_rtt_ms == 39.0 and isinstance(spec.inter_province_rtt_ms, float)
    assert LatencySpec() == LatencySpec(30.0, 0.005, 1.5, 0.1, 0.02, 0.0)


@pytest.mark.parametrize("jitter_ms, loss", [(0.0, 0.0), (2.0, 0.0), (0.0, 0.2), (3.0, 0.1)])
def test_a_sampler_draws_what_sample_from_base_draws(jitter_ms: float, loss: float) -> None:
    """The simulator samples every message through ``sampler``: the same delays and losses, from the
    same random streams, as ``sample_from_base_ms``."""
    model = LatencyModel(LatencySpec(jitter_ms=jitter_ms, loss=loss))
    a, b = random.Random(5), random.Random(5)
    sample = model.sampler(b)
    bases = [0.5, 1.0, 7.5, 15.1] * 500
    assert [model.sample_from_base_ms(x, a) for x in bases] == [sample(x) for x in bases]
    assert a.random() == b.random()  # as many draws taken
