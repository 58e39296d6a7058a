"""``idresolve bench batch --template``: the templated runs beside the plain ones, their cost figures and
targets (a short run: the figures are checked for shape and consistency, never against time)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from idresolve.bench import targets
from idresolve.bench.procs import idresolve_argv
from idresolve.bench.workload import TemplatedWorkload, handles
from idresolve.core.templates import check_record, template_ref_of


def test_the_workload_twins_differ_only_in_the_reference() -> None:
    tw = TemplatedWorkload.load()
    names = handles(30, "t")
    checked, plain = tw.items(names, checked=True), tw.items(names, checked=False)
    for (h, with_ref), (h2, without) in zip(checked, plain, strict=True):
        assert h == h2 and template_ref_of(with_ref) == tw.ref and template_ref_of(without) is None
        assert len(with_ref) == len(without) >= 10
        assert sum(len(v.data) for v in with_ref) == sum(len(v.data) for v in without)
        check_record(tw.template, with_ref)  # every checked record fits: the cost measured is of passing ones


def test_bench_batch_template_short_run(tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    res = subprocess.run(idresolve_argv("bench", "batch", "--template", "--identifiers", "200", "--batch-size", "100",
                                        "--repeats", "2", "--out", str(out), "--quiet"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "naming the template (every record checked)" in res.stdout
    assert "checking against the template, core:" in res.stdout and "end to end:" in res.stdout
    batch = json.loads(out.read_text())["batch"]
    for path in ("core", "core_template", "rest", "rest_template", "raw_sqlite"):
        assert len(batch[path]["runs_ids_per_s"]) == 2 and batch[path]["median_ids_per_s"] > 0
    tpl = batch["template"]
    assert tpl["template"] == "88.100/TPL-tyre-batch@1" and tpl["target_cost"] == 1.25
    for kind in ("core", "rest"):
        pairs = tpl[f"{kind}_cost_per_run"]
        assert len(pairs) == 2 and all(p > 0 for p in pairs)
        expect = [p / c for p, c in zip(batch[kind]["runs_ids_per_s"], batch[f"{kind}_template"]["runs_ids_per_s"],
                                        strict=True)]
        assert pairs == pytest.approx(expect, rel=0.01)  # (the rates in the report are rounded)
    by_id = {t["id"]: t for t in targets.rest_batch_targets(batch=batch)}
    for tid, kind in (("B3", "core"), ("B4", "rest")):
        cost = tpl[f"{kind}_cost"]
        assert by_id[tid]["value"] == cost and by_id[tid]["status"] == ("PASS" if cost <= 1.25 else "FAIL")
