"""Workload and study files: the shipped one parses, every mistake names its line and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterutil import CONFIG
from idresolve.sim.events import EventError, parse_event
from idresolve.sim.service import ServiceTimeError, service_times
from idresolve.sim.timetext import at_s, clock_s, duration_s
from idresolve.sim.workload import WorkloadError, load_file, locate

SHIPPED = CONFIG / "workloads.toml"


def test_the_shipped_workloads_and_studies_parse() -> None:
    wf = load_file(SHIPPED)
    day = wf.workload("shandong-day")
    assert day.resolutions == 15_000_000 and len(day.profile) == 24 and day.duration_s == 86_400
    assert day.space.identifiers == 33_000_000_000 and dict(day.clients) == {"rec-jinan": 0.55, "rec-qingdao": 0.45}
    # a day's arrivals add up to the daily volume, with a daytime peak about twice the mean
    total = sum(day.rate_at(h * 3600.0) * 3600.0 for h in range(24))
    assert total == pytest.approx(15_000_000)
    assert 1.8 < day.rate_at(10 * 3600.0) / (15_000_000 / 86_400) < 2.2
    assert len(day.bursts) == 3 and day.bursts[0].at_s == 9 * 3600.0
    study = wf.study("peak-failure")
    assert [v for v, _ in study.variants] == ["baseline", "beijing-killed-at-peak", "all-38-connected"]
    killed = day.with_overrides(dict(study.variants)["beijing-killed-at-peak"], "x")
    assert [e.label for e in killed.events] == ["kill top-beijing", "recover top-beijing"]
    assert killed.events[0].at_s == 10 * 3600.0
    assert day.with_overrides(dict(study.variants)["all-38-connected"], "x").connect_all
    for name in wf.studies:
        wf.study(name)


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "w.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("text, line, words", [
    ('[workloads.a]\nresolutions = 10\nduration = "soon"\n', 3, "not a duration"),
    ('[workloads.a]\nkeys = "zipf"\nzipf_exponent = -1\n', 3, "zipf_exponent must be a number between"),
    ('[workloads.a]\nprofile = [1, 2, 3, 4, 5]\n', 2, "profile must be a list of 24"),
    ('[workloads.a]\nspeling = 3\n', 2, "unknown key 'speling'"),
    ('[workloads.a]\n\n[workloads.a.nodes]\nttl_cap = "1x"\n', 4, "nodes.ttl_cap"),
    ('[workloads.a]\nevents = ["10:00 explode top-beijing"]\n', 2, "unknown action 'explode'"),
    ('[workloads.a]\nevents = ["25:00 kill top-beijing"]\n', 2, "not a time of day"),
    ('[workloads.a]\n[workloads.a.service_times]\nrec_hop_us = -4\n', 3, "rec_hop_us must be"),
    ('[workloads.a]\n[workloads.a.space]\nidentifiers = 0\n', 3, "space.identifiers"),
    ('[workloads.a]\nkeys = "cycle"\n', 2, "needs key_count"),
    ('[workloads.a]\n[[workloads.a.bursts]]\nat = "10:00"\nprefix = "88.118.8"\nsize = 5000\n', 2, "at most 2000"),
])
def test_a_bad_workload_names_the_line_and_the_problem(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(WorkloadError) as err:
        load_file(path).workload("a")
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value), str(err.value)


def test_bad_files_and_studies(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="not valid TOML"):
        load_file(_file(tmp_path, "[workloads.a\n"))
    with pytest.raises(WorkloadError, match="no such workload file"):
        load_file(tmp_path / "missing.toml")
    with pytest.raises(WorkloadError, match=":1: unknown top-level key 'workload'"):
        load_file(_file(tmp_path, 'workload = 1\n'))
    wf = load_file(_file(tmp_path, '[workloads.a]\n[studies.s]\nworkload = "b"\n'))
    with pytest.raises(WorkloadError, match=r"w.toml:3: study 's' names workload 'b'"):
        wf.study("s")
    with pytest.raises(WorkloadError, match="no workload 'zz'"):
        wf.workload("zz")
    wf = load_file(_file(tmp_path, '[workloads.a]\n[studies.s]\nworkload = "a"\n[studies.s.variants.v]\nresolutions = "lots"\n'))
    with pytest.raises(WorkloadError, match=r"w.toml:5: resolutions must be a number"):
        wf.study("s")


def test_locate_finds_keys_in_tables_and_inline() -> None:
    text = "[a]\nx = 1\n[a.b]\ny = 2\n[[a.c]]\nz = 3\n"
    assert locate(text, ("a",), "x") == 2 and locate(text, ("a", "b"), "y") == 4 and locate(text, ("a",), "b") == 3
    assert locate(text, ("a",), "missing") == 1


def test_times_durations_and_events() -> None:
    assert duration_s("1h30m") == 5400 and duration_s("90s") == 90 and duration_s(12) == 12 and duration_s("2d") == 172800
    with pytest.raises(ValueError):
        duration_s("1h30x")
    assert clock_s("08:30") == 30600 and at_s("08:30", 8 * 3600.0) == 1800 and at_s("+2h", 0.0) == 7200
    assert at_s("07:00", 8 * 3600.0) == 23 * 3600  # the next time the clock shows 07:00
    ev = parse_event("12:00 degrade rec-jinan * 3 loss=0.01 add=5", 0.0)
    assert ev.args == ("rec-jinan", "*", "3", "loss=0.01", "add=5") and ev.at_s == 43200
    for bad, words in (("kill", "write WHEN ACTION"), ("10:00 kill", "takes 1 argument"),
                       ("10:00 slow n x", "must be a number"), ("10:00 degrade a b 2 loss=2", "below 1"),
                       ("10:00 cache-size -3", "whole number"), ("10:00 ttl-cap soon", "not a duration")):
        with pytest.raises(EventError, match=words):
            parse_event(bad, 0.0)
    with pytest.raises(ServiceTimeError, match="unknown service time"):
        service_times({"rec_hops_us": 1.0})
    assert service_times({"rec_hop_us": 7}).rec_hop_us == 7.0
