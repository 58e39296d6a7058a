"""``bench rest`` with wrk as the load (``bench.wrkload``), and the bare aiohttp baseline as several processes
sharing one port (``python -m idresolve.bench.baselines --processes N``), as a user would start them.

Nothing here asserts on speed: only that the figures exist and are sane, that the baseline's processes all
stop, and that a missing wrk is a clear error. The wrk runs skip where wrk is not installed (CI installs
Debian's package, see .ci/run).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from idresolve.bench import wrkload
from idresolve.bench.procs import children, cmdline, idresolve_argv

WRK = wrkload.find()
needs_wrk = pytest.mark.skipif(WRK is None, reason="wrk is not installed (Debian: apt-get install wrk)")


def test_the_script_and_the_figures_line() -> None:
    lua = wrkload.script(["/api/handles/88.100/r0", "/api/handles/88.100/r%C3%84"])
    assert '"/api/handles/88.100/r%C3%84"' in lua and "done = function" in lua
    with pytest.raises(ValueError, match="escaping"):
        wrkload.script(['/api/handles/88.100/"x'])
    with pytest.raises(ValueError, match="at least one"):
        wrkload.script([])
    line = ('{"requests":1000,"duration_us":2000000,"connect":0,"read":1,"write":0,"status":10,"timeout":0,'
            '"mean_us":512.5,"max_us":9000,"p50_us":400,"p90_us":800,"p99_us":2000,"p99_9_us":5000}')
    res = wrkload.parse(line, cpu_s=0.5)
    assert (res.requests, res.errors, res.socket_errors, res.elapsed_s) == (990, 10, 1, 2.0)
    assert res.rate_per_s == 495.0 and res.latency["p99_us"] == 2000.0 and res.cpu_s == 0.5
    with pytest.raises(wrkload.WrkError, match="do not parse"):
        wrkload.parse('{"requests": 3}')


def _start_baseline(body: Path, processes: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "idresolve.bench.baselines", "--body-file", str(body),
                             "--processes", str(processes)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"serving at http://127\.0\.0\.1:(\d+)", line)
    assert m, line
    return proc, int(m.group(1))


def _close(proc: subprocess.Popen[str]) -> None:
    if proc.stdout is not None:
        proc.stdout.close()


def test_the_baseline_as_two_processes_answers_and_stops_whole(tmp_path: Path) -> None:
    body = tmp_path / "answer.json"
    body.write_bytes(b'{"responseCode":1,"handle":"88.100/x","values":[]}')
    proc, port = _start_baseline(body, 2)
    try:
        deadline = time.monotonic() + 10
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = children(proc.pid)
        assert len(kids) == 2, kids
        for i in range(20):  # new connections each time: the kernel spreads them over both processes
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/handles/88.100/x{i}", timeout=5) as r:
                assert r.status == 200 and r.read() == body.read_bytes()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for pid in kids:  # every copy is gone, not left serving the port
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _close(proc)


def test_a_stop_while_the_copies_start_leaves_none_behind(tmp_path: Path) -> None:
    """SIGTERM soon after start: every copy stops too. (The window in which the signal would arrive while
    the parent forks is too short to hit on purpose; this holds the outcome, not the race.)"""
    body = tmp_path / "early-stop.json"
    body.write_bytes(b"{}")
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "idresolve.bench.baselines", "--body-file", str(body),
                                 "--processes", "4"], stdout=subprocess.DEVNULL)
        time.sleep(0.05)  # the interpreter has started; the forks may or may not have happened yet
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if str(body) in cmdline(pid)]
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"baseline copies left running: {left}"


def test_a_copy_that_cannot_listen_stops_the_baseline(tmp_path: Path) -> None:
    body = tmp_path / "answer.json"
    body.write_bytes(b"{}")
    first, port = _start_baseline(body, 1)  # holds the port without SO_REUSEPORT: the copies cannot bind it
    try:
        res = subprocess.run([sys.executable, "-m", "idresolve.bench.baselines", "--body-file", str(body),
                              "--http", f"127.0.0.1:{port}", "--processes", "2"], capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 2 and "cannot listen" in res.stderr, res.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=15)
        _close(first)
    bad = subprocess.run([sys.executable, "-m", "idresolve.bench.baselines", "--body-file", str(body),
                          "--processes", "0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--processes" in bad.stderr


@needs_wrk
def test_bench_rest_with_wrk(tmp_path: Path) -> None:
    out = tmp_path / "rest.json"
    res = subprocess.run(idresolve_argv("bench", "rest", "--load", "wrk", "--duration", "1", "--repeats", "1",
                                        "--connections", "4", "--warmup", "0", "--handles", "50", "--workers", "2",
                                        "--out", str(out)), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "closed loop from wrk" in res.stdout and "bare aiohttp, fixed body, 2 processes" in res.stdout
    rest = json.loads(out.read_text())["rest"]
    assert rest["load"].startswith("wrk") and rest["baseline_processes"] == 2
    for who in ("node", "baseline"):
        (run,) = rest[who]["runs"]
        assert run["requests"] > 0 and run["rate_per_s"] > 0 and run["errors"] == 0
        assert 0 < run["p50_us"] <= run["p99_us"] <= run["max_us"]
        assert run["server_cpu_us_per_req"] > 0 and run["client_cpu_us_per_req"] > 0
    assert rest["ratio"] > 0


def test_bench_rest_load_wrk_without_wrk_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # the venv's bin: no wrk there
    res = subprocess.run(idresolve_argv("bench", "rest", "--load", "wrk", "--duration", "1", "--repeats", "1"),
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode != 0
    assert "wrk is not installed" in res.stderr and "Traceback" not in res.stderr
