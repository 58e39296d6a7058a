"""``idresolve simulate`` run as a user runs it: reports, determinism, compare, a study, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterutil import CONFIG, run_cli

REQUIRED = ("resolutions", "wall_seconds", "virtual_seconds", "latency_ms", "per_hour", "nodes", "cache_hit_ratio",
            "seed")
TINY = f"""
[workloads.tiny]
description = "two minutes of the minimal topology"
topology = "{CONFIG / 'minimal.toml'}"
resolutions = 8_640_000
profile = [1.0]
duration = "1m"
keys = "zipf"
zipf_exponent = 1.1
unknown_share = 0.05
write_share = 0.01

[workloads.tiny.space]
identifiers = 100_000

[studies.tiny-study]
description = "the tiny workload, and with the Beijing top-level node killed"
workload = "tiny"

[studies.tiny-study.variants.base]

[studies.tiny-study.variants.killed]
events = ["+10s kill top-beijing"]
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


def test_a_run_writes_its_reports_and_the_same_seed_writes_the_same_report(tiny: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    res = run_cli("simulate", "--file", str(tiny), "--workload", "tiny", "--seed", "5", "--out", str(a))
    assert res.returncode == 0, res.stderr
    assert "resolutions" in res.stdout and "virtual" in res.stderr  # progress on stderr
    report = json.loads((a / "report.json").read_text())
    for key in REQUIRED:
        assert key in report, key
    assert set(report["latency_ms"]) >= {"p50", "p90", "p99", "p999"}
    assert report["resolutions"] > 5_000 and report["seed"] == 5 and report["virtual_seconds"] == 60
    assert {"requests", "utilisation", "shed"} <= set(report["nodes"]["rec-jinan"])
    for name in ("per_hour.csv", "nodes.csv", "per_hop.csv", "report.html", "perf.json"):
        assert (a / name).stat().st_size > 0, name
    assert "<svg" in (a / "report.html").read_text()
    assert run_cli("simulate", "--file", str(tiny), "--workload", "tiny", "--seed", "5", "--out", str(b),
                   "--quiet").returncode == 0
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    assert ra.pop("wall_seconds") >= 0 and rb.pop("wall_seconds") >= 0
    assert ra == rb
    text_a = (a / "report.json").read_text().splitlines()
    text_b = (b / "report.json").read_text().splitlines()
    assert [x for x in text_a if "wall_seconds" not in x] == [x for x in text_b if "wall_seconds" not in x]
    c = tmp_path / "c"
    assert run_cli("simulate", "--file", str(tiny), "--workload", "tiny", "--seed", "6", "--quiet", "--out",
                   str(c)).returncode == 0
    cmp = run_cli("simulate", "compare", str(a), str(c), "--out", str(tmp_path / "cmp"))
    assert cmp.returncode == 0, cmp.stderr
    assert "cache hit ratio" in cmp.stdout and (tmp_path / "cmp" / "compare.html").exists()


def test_a_study_runs_its_variants_side_by_side(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    res = run_cli("simulate", "study", "tiny-study", "--file", str(tiny), "--duration", "40s", "--jobs", "2",
                  "--quiet", "--out", str(out), timeout_s=180)
    assert res.returncode == 0, res.stderr
    assert "base" in res.stdout and "killed" in res.stdout
    page = (out / "index.html").read_text()
    assert "killed" in page and "base" in page and page.count("<svg") >= 8
    killed = json.loads((out / "killed" / "report.json").read_text())
    base = json.loads((out / "base" / "report.json").read_text())
    assert killed["events"][0]["event"] == "kill top-beijing"
    assert killed["nodes"]["top-beijing"]["requests"] < base["nodes"]["top-beijing"]["requests"]
    assert killed["nodes"]["top-nanjing"]["requests"] > base["nodes"]["top-nanjing"]["requests"]


def test_mistakes_are_named_with_their_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[workloads.x]\nresolutions = 100\nprofile = "flat"\n', encoding="utf-8")
    res = run_cli("simulate", "--file", str(bad), "--workload", "x")
    assert res.returncode == 2 and f"{bad}:3: profile must be a list" in res.stderr, res.stderr
    res = run_cli("simulate", "--workload", "nope", "--duration", "1m")
    assert res.returncode == 2 and "no workload 'nope'" in res.stderr
    res = run_cli("simulate", "--duration", "1m", "--event", "10:00 kill top-nowhere")
    assert res.returncode == 2 and "no running node 'top-nowhere'" in res.stderr
    res = run_cli("simulate", "--duration", "forever")
    assert res.returncode == 2 and "not a duration" in res.stderr
    for argv in (("simulate", "--help"), ("simulate", "agree", "--help")):
        out = run_cli(*argv)
        assert out.returncode == 0 and "usage:" in out.stdout and "--duration" in out.stdout
    listed = run_cli("simulate", "list")
    assert "shandong-day" in listed.stdout and "peak-failure" in listed.stdout
