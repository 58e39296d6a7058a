"""Known answers for pure parts otherwise reached only through subprocesses: the benchmark's percentile
maths (``bench.hist``), its workload (``bench.workload``) and report helpers (``bench.report``), the load
test's knobs and pass/fail verdict (``loadtests/knobs.py``), ``store.base.open_store``, and the spread and
retry of ``cluster.seeding`` (against a fake client: no cluster)."""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idresolve.bench import hist, report, workload
from idresolve.cluster import seeding
from idresolve.core.codes import ResponseCode
from idresolve.core.wire import Response
from idresolve.net.blocking import ProtocolClientError
from idresolve.store.base import open_store
from idresolve.store.memory import MemoryStore
from idresolve.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent


# -- bench.hist -----------------------------------------------------------------------------------------

def test_percentiles_of_one_to_a_hundred_microseconds() -> None:
    s = hist.summary(hist.histogram({us: 1 for us in range(1, 101)}))
    assert (s["count"], s["mean_us"], s["max_us"]) == (100, 50.5, 100)
    assert (s["p50_us"], s["p90_us"], s["p99_us"], s["p99_9_us"]) == (50, 90, 99, 100)
    assert s["hdr"]  # the encoded histogram, for merging


def test_counts_weigh_and_out_of_range_values_are_clamped() -> None:
    s = hist.summary(hist.histogram({10: 99, 1000: 1}))
    assert (s["p50_us"], s["p99_us"], s["max_us"]) == (10, 10, 1000)  # the 100th answer is the slow one
    assert s["mean_us"] == pytest.approx((99 * 10 + 1000) / 100, rel=1e-3)
    clamped = hist.summary(hist.histogram({0: 1, 10**12: 1}))
    assert clamped["p50_us"] == hist.LOWEST_US and clamped["max_us"] == pytest.approx(hist.HIGHEST_US, rel=1e-3)
    assert hist.summary(hist.histogram({})) == {"count": 0}


def test_the_percentile_distribution_halves_the_distance_to_100() -> None:
    assert hist.distribution(hist.histogram({})) == []
    dist = hist.distribution(hist.histogram({us: 1 for us in range(1, 101)}), ticks_per_half=1)
    assert [p for p, _ in dist] == [0.0, 50.0, 75.0, 87.5, 93.75, 96.875, 98.4375, 100.0]  # 1/(1-p) <= 100
    assert [us for _, us in dist] == [1, 50, 75, 88, 94, 97, 98, 100]
    assert dist == sorted(dist)


_LATENCIES = st.dictionaries(
    st.one_of(st.integers(-5, 5000), st.integers(0, 2 * hist.HIGHEST_US),
              st.sampled_from([0, 1, 2047, 2048, 2049, 4095, 4096, 8191, 8192, hist.HIGHEST_US])),
    st.integers(0, 10**6), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_LATENCIES, st.lists(st.floats(0.0, 100.0), max_size=8))
def test_buckets_give_every_figure_the_hdr_histogram_gives(latency: dict[int, int], extra: list[float]) -> None:
    h, b = hist.histogram(latency), hist.Buckets(latency)
    assert b.get_total_count() == h.get_total_count()
    assert b.get_mean_value() == h.get_mean_value()
    assert b.get_max_value() == h.get_max_value()
    for p in (0.0, 50.0, 90.0, 99.0, 99.9, 100.0, *extra):
        assert b.get_value_at_percentile(p) == h.get_value_at_percentile(p), p
    assert hist.distribution(b) == hist.distribution(h)


# -- bench.workload and bench.report -----------------------------------------------------------------------

def test_workload_names_values_and_chunks() -> None:
    assert workload.handles(3, "r") == ["88.100/bench-r000000", "88.100/bench-r000001", "88.100/bench-r000002"]
    assert workload.handles(1, "x", "88.7") == ["88.7/bench-x000000"]
    assert len({len(h) for h in workload.handles(1000, "r")}) == 1  # zero-padded: every answer the same size
    assert workload.json_values("88.100/bench-r000007") == [
        {"index": 1, "type": "URL", "data": "https://example.com/products/bench-r000007"},
        {"index": 2, "type": "DESC", "data": "Radial tyre, batch bench-r000007"}]
    url, desc = workload.core_values("88.100/bench-r000007")
    assert (url.index, url.type, url.data) == (1, "URL", b"https://example.com/products/bench-r000007")
    assert (desc.index, desc.type) == (2, "DESC")
    assert [list(c) for c in workload.chunks([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]


def _parse_http(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *fields = head.decode().split("\r\n")
    return line, {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}, body


def test_batch_and_resolve_requests_are_whole_http_requests() -> None:
    names = workload.handles(5, "b")
    reqs = workload.batch_requests(names, 2, "127.0.0.1", 8000, "s3cret")
    assert len(reqs) == 3  # 2 + 2 + 1
    line, headers, body = _parse_http(reqs[2])
    assert line == "POST /api/batch HTTP/1.1" and int(headers["content-length"]) == len(body)
    user, _, secret = base64.b64decode(headers["authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (user, secret) == ("300%3A0.NA%2F88.100", "s3cret")
    doc = json.loads(body)
    assert doc["overwrite"] is False and [h["handle"] for h in doc["handles"]] == [names[4]]
    (get,) = workload.resolve_requests(["88.100/a b"], "127.0.0.1", 8000)
    assert _parse_http(get)[0] == "GET /api/handles/88.100/a%20b HTTP/1.1"


def test_report_medians_ratios_and_tables() -> None:
    assert report.median([3.0, 1.0, 2.0]) == 2.0 and report.median([1.0, 2.0]) == 1.5 and report.median([]) == 0.0
    assert report.median_of([{"x": 4}, {"y": 1}, {"x": 2}], "x") == 3.0
    assert report.ratio(1.0, 3.0) == 0.333 and report.ratio(5.0, 0.0) == 0.0
    assert (report.fmt_rate(12345.6), report.fmt_us(None), report.fmt_us(1500.4)) == ("12,346", "-", "1,500")
    assert report.table([["a", "1"], ["bbb", "22"]], ["k", "v"]).splitlines() == ["k     v", "---  --", "a     1",
                                                                                 "bbb  22"]
    assert report.target_text(0.69, 0.7) == "0.69x (target >= 0.7x: NOT met)"


# -- loadtests/knobs.py ------------------------------------------------------------------------------------

def _knobs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("idr_loadtest_knobs", ROOT / "loadtests" / "knobs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _settings(knobs: ModuleType, **idr: Any) -> Any:
    return knobs.Settings.from_options(argparse.Namespace(**{f"idr_{k}": v for k, v in idr.items()}))


def test_knob_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    knobs = _knobs()
    monkeypatch.delenv("IDRESOLVE_DATA_DIR", raising=False)
    s = knobs.Settings.from_options(None)
    assert (s.data_dir, s.target, s.keys, s.zipf_s, s.identifiers, s.batch_size) == (
        Path("data"), "recursive", "zipf", 1.1, 1000, 100)
    assert (s.fail_on, s.max_fail_ratio, s.max_p99_ms) == ("unexpected", 0.01, 1000.0)
    monkeypatch.setenv("IDRESOLVE_DATA_DIR", "/tmp/lc")
    assert knobs.Settings.from_options(None).data_dir == Path("/tmp/lc")
    assert _settings(knobs, data_dir="/x", batch_size=2000).data_dir == Path("/x")


@pytest.mark.parametrize("knob,value,message", [
    ("target", "everywhere", "--idr-target must be one of recursive, authoritative"),
    ("keys", "gauss", "--idr-keys must be one of uniform, zipf"),
    ("fail_on", "never", "--idr-fail-on must be one of"),
    ("registrar_mode", "fax", "--idr-registrar-mode must be one of batch, rest"),
    ("zipf_s", 0.0, "--idr-zipf-s must be positive"),
    ("identifiers", 0, "--idr-identifiers must be at least 1"),
    ("unknown_share", 1.5, "--idr-unknown-share must be between 0 and 1"),
    ("write_share", -0.1, "--idr-write-share must be between 0 and 1"),
    ("batch_size", 2001, "--idr-batch-size must be between 1 and 2000"),
    ("batch_size", 0, "--idr-batch-size must be between 1 and 2000"),
    ("timeout", 0.0, "--idr-timeout must be positive"),
    ("rate", -1.0, "--idr-rate and --idr-max-p99-ms must be >= 0"),
    ("max_fail_ratio", 1.01, "--idr-max-fail-ratio between 0 and 1"),
])
def test_each_bad_knob_is_named(knob: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("-", r"\-")):
        _settings(_knobs(), **{knob: value})


def test_several_bad_knobs_are_all_named() -> None:
    with pytest.raises(ValueError) as exc:
        _settings(_knobs(), keys="gauss", identifiers=-5)
    assert str(exc.value).count("--idr-") == 2


@pytest.mark.parametrize("requests,fail_ratio,p99_ms,problems", [
    (1000, 0.0, 20.0, []),
    (1000, 0.01, 1000.0, []),  # at the limits: passes
    (0, 0.0, 0.0, ["no requests were made"]),
    (1000, 0.0101, 20.0, ["failure ratio 0.0101 > 0.01"]),
    (1000, 0.0, 1001.0, ["p99 1001 ms > 1000 ms"]),
    (1000, 0.5, 5000.0, ["failure ratio 0.5000 > 0.01", "p99 5000 ms > 1000 ms"]),
])
def test_the_locust_verdict(requests: int, fail_ratio: float, p99_ms: float, problems: list[str]) -> None:
    knobs = _knobs()
    s = _settings(knobs)
    assert knobs.verdict(s, requests=requests, fail_ratio=fail_ratio, p99_ms=p99_ms) == problems
    no_p99 = _settings(knobs, max_p99_ms=0.0)  # 0 turns the p99 check off
    assert knobs.verdict(no_p99, requests=10, fail_ratio=0.0, p99_ms=1e9) == []


# -- store.base.open_store ------------------------------------------------------------------------------

def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store("memory", None), MemoryStore)
    store = open_store("sqlite", tmp_path / "new" / "dir", "nodeA")
    try:
        assert isinstance(store, SqliteStore) and (tmp_path / "new" / "dir" / "nodeA.sqlite3").exists()
    finally:
        store.close()
    with pytest.raises(ValueError, match="needs a data directory"):
        open_store("sqlite", None)
    with pytest.raises(ValueError, match="unknown store kind 'redis'"):
        open_store("redis", tmp_path)


# -- cluster.seeding, against a fake client ----------------------------------------------------------------

class FakeClient:
    """Records every batch; refuses identifiers listed in ``exists`` as HANDLE_ALREADY_EXISTS (all or nothing)."""

    batches: list[tuple[str, int, list[str]]] = []
    exists: set[str] = set()
    types: list[list[str]] = []  # the value types of every identifier sent, in order

    def __init__(self, host: str, port: int, *, timeout_s: float, auth: tuple[str, bytes]) -> None:
        self.port, self.auth = port, auth

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    #: connection drops to play, oldest first: "before" (nothing registered) or "after" (registered,
    #: the answer lost), as when a node closes an idle connection or dies after its commit
    drops: list[str] = []

    def close(self) -> None:
        pass

    def batch_create(self, items: list[tuple[str, Any]]) -> Response:
        names = [h for h, _ in items]
        if FakeClient.drops:
            if FakeClient.drops.pop(0) == "after":
                FakeClient.exists.update(names)
            raise ProtocolClientError("127.0.0.1:2641 closed the connection")
        FakeClient.batches.append((self.auth[0], self.port, names))
        FakeClient.types += [[v.type for v in values] for _, values in items]
        if any(h in FakeClient.exists for h in names):
            results = tuple((h, int(ResponseCode.HANDLE_ALREADY_EXISTS if h in FakeClient.exists else 1), "")
                            for h in names)
            return Response(0, 0, ResponseCode.HANDLE_ALREADY_EXISTS, results=results)
        return Response(0, 0, ResponseCode.SUCCESS)


def _cluster() -> dict[str, Any]:
    return {"nodes": [{"name": "sec", "tcp": "127.0.0.1:2641"}, {"name": "ent", "tcp": "127.0.0.1:2643"}],
            "enterprises": [{"prefix": "88.1.1", "holder": "sec"}, {"prefix": "88.1.2", "holder": "ent"},
                            {"prefix": "88.1.3", "holder": "sec"}, {"name": "no-prefix"}]}


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.batches, FakeClient.exists, FakeClient.drops, FakeClient.types = [], set(), [], []
    monkeypatch.setattr(seeding, "BlockingClient", FakeClient)
    monkeypatch.setattr(seeding, "read_credentials", lambda _d: {f"300:0.NA/88.1.{i}": f"s{i}" for i in (1, 2, 3)})
    return FakeClient


def test_seeding_spreads_evenly_over_the_enterprises_in_batches(fake_client: type[FakeClient], tmp_path: Path) -> None:
    out = seeding.seed_cluster(_cluster(), tmp_path, 7, batch_size=2, tag="T", show_progress=False)
    assert (out["registered"], out["failed"], out["enterprises"]) == (7, 0, 3)
    assert out["example"] == "88.1.1/T000000000"
    # 7 over 3 enterprises: 3, 2, 2; each at the node holding its prefix, with its own admin's identity,
    # the batches round robin over the enterprises (batches in flight reach different nodes)
    assert [(ident, port, len(names)) for ident, port, names in fake_client.batches] == [
        ("300:0.NA/88.1.1", 2641, 2), ("300:0.NA/88.1.2", 2643, 2), ("300:0.NA/88.1.3", 2641, 2),
        ("300:0.NA/88.1.1", 2641, 1)]
    assert fake_client.batches[3][2] == ["88.1.1/T000000002"]


def test_seeding_fills_the_template_of_a_secondary_that_publishes_one_unless_plain(
        fake_client: type[FakeClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = {"config": str(Path(__file__).parents[1] / "config" / "shandong.toml"),
               "nodes": [{"name": "sec-tyre-qingdao", "tcp": "127.0.0.1:2641"}],
               "enterprises": [{"prefix": "88.118.8", "holder": "sec-tyre-qingdao"}]}
    monkeypatch.setattr(seeding, "read_credentials", lambda _d: {"300:0.NA/88.118.8": "s"})
    out = seeding.seed_cluster(cluster, tmp_path, 3, tag="T", show_progress=False)
    assert (out["registered"], out["templated"]) == (3, 1)
    assert all(len(t) > 10 and t[:2] == ["URL", "TEMPLATE"] for t in fake_client.types)
    fake_client.types.clear()
    out = seeding.seed_cluster(cluster, tmp_path, 3, tag="P", show_progress=False, plain=True)
    assert (out["registered"], out["templated"]) == (3, 0)
    assert fake_client.types == [["URL", "productName"]] * 3


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_dropped_connection_is_retried_once_and_nothing_is_counted_twice(fake_client: type[FakeClient],
                                                                           tmp_path: Path, when: str) -> None:
    fake_client.drops = [when]
    out = seeding.seed_cluster(_cluster(), tmp_path, 6, batch_size=2, tag="T", show_progress=False)
    assert (out["registered"], out["failed"]) == (6, 0)
    fake_client.drops = [when, when]  # dropped twice in a row: the error reaches the caller
    with pytest.raises(ProtocolClientError):
        seeding.seed_cluster(_cluster(), tmp_path, 6, batch_size=2, tag="U", show_progress=False)


def test_a_rerun_skips_what_exists_and_counts_it(fake_client: type[FakeClient], tmp_path: Path) -> None:
    fake_client.exists = {"88.1.1/T000000000"}
    out = seeding.seed_cluster(_cluster(), tmp_path, 6, batch_size=2, tag="T", show_progress=False)
    assert (out["registered"], out["failed"]) == (6, 0)
    first, retry = fake_client.batches[:2]
    assert first[2] == ["88.1.1/T000000000", "88.1.1/T000000001"] and retry[2] == ["88.1.1/T000000001"]
    with pytest.raises(ValueError, match="no enterprises"):
        seeding.seed_cluster({"nodes": [], "enterprises": []}, tmp_path, 5, show_progress=False)
