"""``idresolve node --workers N``: worker processes share the ports and the store, and no worker answers
from a cache older than a write acknowledged by another (runtime/workers.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from base64 import b64encode
from pathlib import Path
from urllib.parse import quote

import pytest

from idresolve.runtime.config import ConfigError, load_node_config
from idresolve.runtime.workers import SharedGenerations, Supervisor
from procs import NodeProcess, clean_env

WORKERS = re.compile(r"^  workers: (\d+) \(pids ([\d, ]+)\)$")


def _request(method: str, url: str, body: dict | None = None, secret: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Connection", "close")  # every request a new connection: the kernel picks a worker
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if secret is not None:
        user = quote("300:0.NA/88.100", safe="")
        req.add_header("Authorization", "Basic " + b64encode(f"{user}:{secret}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _url_value(n: int) -> dict:
    return {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": f"https://e.example/{n}"}}]}


def test_generations_count_under_lock(tmp_path: Path) -> None:
    a = SharedGenerations(tmp_path / "g")
    b = SharedGenerations(tmp_path / "g")  # a second mapping, as another worker has
    assert a.current() == (0, 0, 0)
    before, after = a.bump("88.100/x")
    assert (before, after) == ((0, 0, 0), (1, 0, 0))
    assert b.current() == (1, 0, 0)
    b.bump("0.na/88.100")
    b.bump("88.100/tpl-device")
    assert a.current() == (3, 1, 1)
    a.close()
    b.close()


def test_memory_store_refuses_workers() -> None:
    with pytest.raises(ConfigError, match="sqlite"):
        load_node_config(env={}, flags={"prefixes": ("88.100",), "store": "memory", "workers": 2})
    cfg = load_node_config(env={}, flags={"prefixes": ("88.100",), "store": "memory"})
    assert cfg.worker_count(8) == 1
    assert load_node_config(env={}, flags={"prefixes": ("88.100",)}).worker_count(8) == 8


def test_worker_that_keeps_dying_brings_the_node_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_node_config(env={}, flags={"prefixes": ("88.100",), "data_dir": tmp_path})

    def serve(_cfg: object, index: int, ready: object) -> int:
        if index == 0:
            ready()  # type: ignore[operator]
        return 3  # every worker exits at once

    monkeypatch.setattr("idresolve.runtime.workers.RESTART_WINDOW_S", 60.0)
    sup = Supervisor(cfg, 2, serve)
    assert not sup.start()  # worker 1 never reported ready: everything stopped
    assert sup.workers == {}
    sup = Supervisor(cfg, 1, serve)
    assert sup.start()
    assert sup.watch(poll_s=0.01) == 1  # restarted MAX_RESTARTS times, then down
    assert sup.workers == {}


def test_two_workers_share_ports_and_see_each_others_writes(tmp_path: Path) -> None:
    node = NodeProcess("--prefix", "88.100", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--data-dir",
                       str(tmp_path / "data"), "--workers", "2", log=tmp_path / "node.log")
    try:
        url = node.wait_ready()
        pids = [int(p) for p in node.wait_for(WORKERS).group(2).split(", ")]
        assert len(pids) == 2
        secret = (tmp_path / "data" / "admin-secret").read_text().strip()
        handle = f"{url}/api/handles/88.100/w1"
        seen_pids: set[int] = set()
        for n in range(30):  # every write is read back on fresh connections, served by either worker
            status, _ = _request("PUT", handle, _url_value(n), secret)
            assert status in (200, 201)
            for _ in range(4):
                status, body = _request("GET", handle)
                assert status == 200
                assert body["values"][0]["data"]["value"] == f"https://e.example/{n}"
        status, _ = _request("DELETE", handle, None, secret)
        assert status == 200
        for _ in range(8):
            assert _request("GET", handle)[0] == 404
        # both workers answered: their own /healthz says which process it is
        for _ in range(40):
            seen_pids.add(_request("GET", f"{url}/healthz")[1]["worker"]["pid"])
            if len(seen_pids) == 2:
                break
        assert seen_pids == set(pids)
        # /metrics, at whichever worker, counts the resolutions both answered
        for _ in range(4):
            req = urllib.request.Request(f"{url}/metrics", headers={"Connection": "close"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = resp.read().decode()
            ok = [line for line in text.splitlines() if line.startswith("idresolve_requests_total{")
                  and 'surface="rest"' in line and 'code="200"' in line and "GET /api/handles/" in line]
            assert len(ok) == 1, text
            assert float(ok[0].rsplit(" ", 1)[1]) == 30 * 4
        # a worker killed is replaced, and the node keeps answering
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        replaced: set[int] = set()
        while time.monotonic() < deadline and not (replaced - set(pids)):
            with contextlib.suppress(OSError):
                replaced.add(_request("GET", f"{url}/healthz")[1]["worker"]["pid"])
        assert replaced - set(pids), "no replacement worker answered"
        (new_pid,) = replaced - set(pids)
        for _ in range(10):  # and it stays: its readiness report to the parent did not kill it
            assert _request("GET", f"{url}/healthz")[0] == 200
        os.kill(new_pid, 0)
        assert node.stop() == 0  # SIGTERM stops every worker
        assert sum("serving 88.100" in line for line in node.lines) == 1  # a restarted worker 0 stays quiet
        for pid in pids[1:]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        node.close()


def test_worker_sockets_of_a_supervisor_killed_are_removed_by_the_next(tmp_path: Path) -> None:
    # the workers' Unix sockets live in <tmp>/idresolve-workers-<supervisor pid>-*: a supervisor killed
    # with SIGKILL leaves its directory, and the next one to start removes it (not a live process's)
    tmp = Path(tempfile.mkdtemp(prefix="idr-"))  # short: the sockets' paths must stay under ~108 bytes
    try:
        _sockets_swept(tmp, tmp_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _owned_dirs(tmp: Path, prefix: str) -> tuple[Path, Path]:
    """Two sockets directories in ``tmp``: one of a process that is gone (to be removed) and one of this
    process, which is alive (to be kept)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp / f"{prefix}{gone.pid}-x1"
    stale.mkdir()
    (stale / "connections").write_bytes(b"\0" * 16)
    live = tmp / f"{prefix}{os.getpid()}-x2"
    live.mkdir()
    return stale, live


def _sockets_swept(tmp: Path, tmp_path: Path) -> None:
    stale, live = _owned_dirs(tmp, "idresolve-workers-")
    env = clean_env(TMPDIR=str(tmp))
    args = ("--prefix", "88.100", "--http", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), "--workers", "2")
    first = NodeProcess(*args, log=tmp_path / "first.log", env=env)
    try:
        first.wait_ready()
        first.wait_for(WORKERS)
        assert not stale.exists() and live.exists()
        (own,) = (p for p in tmp.glob("idresolve-workers-*") if p != live)
        assert own.name.startswith(f"idresolve-workers-{first.proc.pid}-")
        first.proc.kill()  # SIGKILL: the directory stays; the workers notice their parent is gone and stop
        first.proc.wait(timeout=10)
        assert own.exists()
    finally:
        first.close()
    second = NodeProcess(*args, log=tmp_path / "second.log", env=env)
    try:
        second.wait_ready()
        second.wait_for(WORKERS)
        assert not own.exists() and live.exists()
        (mine,) = (p for p in tmp.glob("idresolve-workers-*") if p != live)
        assert second.stop() == 0
        assert not mine.exists()  # a supervisor that stops removes its own
    finally:
        second.close()


BINARY = re.compile(r"^  binary protocol: tcp ([\d.]+):(\d+)")


def test_binary_reads_in_every_worker_see_a_write_acknowledged_by_another(tmp_path: Path) -> None:
    """The binary protocol's fast path answers from the worker's own answer cache: it too must drop what
    another worker's write made stale before it answers (every read on a new connection, either worker)."""
    from idresolve.net.blocking import BlockingClient

    node = NodeProcess("--prefix", "88.100", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--data-dir",
                       str(tmp_path / "data"), "--workers", "2", log=tmp_path / "node.log")
    try:
        url = node.wait_ready()
        host, port = node.wait_for(BINARY).groups()
        node.wait_for(WORKERS)
        secret = (tmp_path / "data" / "admin-secret").read_text().strip()
        handle = "88.100/bin1"
        for n in range(20):
            status, _ = _request("PUT", f"{url}/api/handles/{handle}", _url_value(n), secret)
            assert status in (200, 201)
            for _ in range(6):  # warm both workers' caches with this version, then write the next
                with BlockingClient(host, int(port), timeout_s=10) as c:
                    resp = c.resolve(handle)
                assert resp.code == 1 and resp.values[0].data == f"https://e.example/{n}".encode(), (n, resp)
    finally:
        node.close()


def test_cluster_node_with_two_workers(tmp_path: Path) -> None:
    """``workers = 2`` on an enterprise node of the minimal topology: two processes answer at its ports, the
    hierarchy resolves through it, and a rewrite acknowledged there is what every later read sees. Their
    Unix sockets live in ``up``'s own directory, which it removes when it stops (and the next ``up``
    removes one that a supervisor killed with SIGKILL left)."""
    tmp = Path(tempfile.mkdtemp(prefix="idr-"))  # short: the sockets' paths must stay under ~108 bytes
    try:
        _cluster_node_with_two_workers(tmp_path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cluster_node_with_two_workers(tmp_path: Path, tmp: Path) -> None:
    from clusterutil import IDRESOLVE, MINIMAL, cli_env, free_base_port, run_cli, spawn, stop_proc

    stale, live = _owned_dirs(tmp, "idresolve-cluster-")

    config = tmp_path / "config"
    shutil.copytree(MINIMAL.parent / "templates", config / "templates")
    text = MINIMAL.read_text(encoding="utf-8").replace('name = "ent-tyre-qingdao-8"\n',
                                                       'name = "ent-tyre-qingdao-8"\nworkers = 2\n', 1)
    (config / "minimal.toml").write_text(text, encoding="utf-8")
    data = tmp_path / "cluster"
    for _ in range(4):  # another process may take a port first
        proc = spawn([IDRESOLVE, "up", "--config", str(config / "minimal.toml"), "--data-dir", str(data),
                      "--base-port", str(free_base_port(12)), "--latency", "off"], env={**cli_env(), "TMPDIR": str(tmp)})
        try:
            proc.wait_for_line("ready in", timeout_s=60)
            break
        except RuntimeError:
            stop_proc(proc)
            if "in use" not in proc.stderr:
                raise
    try:
        assert not stale.exists() and live.exists()
        (own,) = (p for p in tmp.glob("idresolve-*") if p != live)
        assert own.name.startswith(f"idresolve-cluster-{proc.popen.pid}-")
        assert sorted(p.name for p in own.glob("*/*.sock")) == ["0.sock", "1.sock"]  # the node's two processes
        cluster = json.loads((data / "cluster.json").read_text())
        url = next(n["http"] for n in cluster["nodes"] if n["name"] == "ent-tyre-qingdao-8")
        pids = set()
        for _ in range(40):
            pids.add(_request("GET", f"{url}/healthz")[1]["worker"]["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2
        for n in range(5):
            reg = run_cli("register", "88.118.8/W1", "--url", f"https://e.example/{n}", "--data-dir", str(data))
            assert reg.returncode == 0, reg.stderr
            for _ in range(4):
                status, body = _request("GET", f"{url}/api/handles/88.118.8/W1")
                assert status == 200 and body["values"][0]["data"]["value"] == f"https://e.example/{n}"
        res = run_cli("resolve", "88.118.8/W1", "--data-dir", str(data))
        assert res.returncode == 0 and "https://e.example/4" in res.stdout, res.stderr
        for _ in range(4):  # either process sums both: the 20 reads above, and the resolution's hop
            with urllib.request.urlopen(urllib.request.Request(f"{url}/metrics", headers={"Connection": "close"}),
                                        timeout=10) as resp:
                text = resp.read().decode()
            ok = [line for line in text.splitlines() if line.startswith("idresolve_requests_total{")
                  and 'surface="rest"' in line and 'code="200"' in line and "GET /api/handles/" in line]
            assert len(ok) == 1 and float(ok[0].rsplit(" ", 1)[1]) == 20, ok
    finally:
        stop_proc(proc)
    assert proc.popen.returncode == 0, proc.stderr
    assert [p.name for p in tmp.glob("idresolve-*")] == [live.name]  # its own directory went with it
