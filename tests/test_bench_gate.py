"""``idresolve bench run --check`` fails on a deliberately broken build: a minimal cluster whose recursive
node spends 5 ms of CPU per request (``tests/slowed/sitecustomize.py``, loaded from outside through
``PYTHONPATH``; the product has no such switch). T1 (answers per CPU-second) and T2 (p99 at half the
saturation) must both fail, and the exit code must say so. (The passing side, ``--check`` on a healthy
cluster, is in test_bench_openloop.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from clusterutil import cli_env
from hardenutil import start_up
from idresolve.bench.procs import idresolve_argv

SLOWED = Path(__file__).resolve().parent / "slowed"


def test_bench_check_fails_on_a_node_slowed_by_5_ms_per_request(tmp_path: Path) -> None:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SLOWED), env.get("PYTHONPATH", "")) if p)
    # No load shedding: a node this slow sheds the bench's warm-up burst (code 3), and the run would stop
    # there; the point is to measure its figures, so that the targets fail on them.
    up = start_up(tmp_path / "cluster", None, "--own-process", "rec-jinan", "--shed-lag-ms", "0", env=env)
    try:
        res = subprocess.run(idresolve_argv(
            "bench", "run", "--data-dir", str(tmp_path / "cluster"), "--scenario", "cached", "--closed", "--sweep",
            "--duration", "0.5", "--step", "0.3", "--identifiers", "40", "--warmup", "0", "--no-baselines", "--quiet",
            "--check", "--out", str(tmp_path / "slow.json")), capture_output=True, text=True, timeout=180,
            env=cli_env())
    finally:
        up.ensure_gone()
    print(res.stdout[-3000:])
    assert res.returncode == 1, (res.returncode, res.stdout[-3000:], res.stderr[-3000:])
    assert "check FAILED:" in res.stdout
    assert "target T1 FAIL" in res.stdout and "target T2 FAIL" in res.stdout, res.stdout[-3000:]
    assert "bench --check:" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "slow.json").exists()  # the report is written before the verdict
