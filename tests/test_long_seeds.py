"""The long runs can be reproduced: a failing randomised long run names its seed and the command that
reruns it, the seed comes from IDRESOLVE_SEED when given, and the summary lists every long run's seed.
(Checked on a throwaway test run by pytest in a subprocess with this suite's conftest.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

THROWAWAY = '''
import random

import pytest


@pytest.mark.slow
def test_a_randomised_long_run(long_seed):
    assert random.Random(long_seed).random() < 0, "fails on purpose"


@pytest.mark.slow
def test_another_long_run(long_seed):
    assert long_seed == int(__import__("os").environ.get("IDRESOLVE_SEED", long_seed))
'''


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
                                         "filterwarnings = error\nmarkers = slow: long runs\n")
    (tmp_path / "test_throwaway.py").write_text(THROWAWAY)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IDRESOLVE_")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=environ)


def test_a_failing_long_run_names_its_seed_and_the_command_to_rerun_it(tmp_path: Path) -> None:
    res = _run(tmp_path, IDRESOLVE_LONG="1", IDRESOLVE_SEED="4242")
    assert res.returncode == 1, res.stdout[-2000:]
    rerun = "IDRESOLVE_LONG=1 IDRESOLVE_SEED=4242 .venv/bin/python -m pytest test_throwaway.py::test_a_randomised_long_run"
    assert f"seed 4242; rerun with: {rerun}" in res.stdout, res.stdout[-3000:]
    assert "seeds of the long runs" in res.stdout
    assert "test_throwaway.py::test_another_long_run: seed 4242" in res.stdout  # passing runs are listed too
    assert "1 failed, 1 passed" in res.stdout


def test_without_a_seed_the_long_runs_take_the_time_and_say_which(tmp_path: Path) -> None:
    res = _run(tmp_path, IDRESOLVE_LONG="1")
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("test_throwaway.py::test_another_long_run: seed"))
    seed = int(line.split("seed ")[1].split(";")[0])
    assert seed > 1_700_000_000  # seconds since the epoch


def test_a_bad_seed_is_a_usage_error(tmp_path: Path) -> None:
    res = _run(tmp_path, IDRESOLVE_LONG="1", IDRESOLVE_SEED="soon")
    assert res.returncode != 0 and "IDRESOLVE_SEED must be a whole number" in res.stdout + res.stderr
