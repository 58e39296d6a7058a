"""The CLI as a user runs it: ``idresolve up`` as a subprocess, then status, seed, register, resolve, Ctrl-C,
and a restart on the same data directory. Readiness is the "ready in" line; nothing sleeps to wait."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterutil import (
    IDRESOLVE,
    MINIMAL,
    Proc,
    cli_env,
    free_base_port,
    listening_socket,
    run_cli,
    spawn,
    stop_proc,
)

READY_TIMEOUT_S = 60.0
NODES = 6  # running nodes of the minimal topology
SEEDED = 500


def start_up(data_dir: Path, base_port: int) -> Proc:
    return spawn([IDRESOLVE, "up", "--config", str(MINIMAL), "--data-dir", str(data_dir), "--base-port",
                  str(base_port), "--latency", "off"], env=cli_env())


def up_until_ready(data_dir: Path, *, attempts: int = 4) -> tuple[Proc, int]:
    """Start ``up`` on a free base port; another process may grab a port first, so retry on that."""
    last = ""
    for _ in range(attempts):
        port = free_base_port(3 * NODES)
        proc = start_up(data_dir, port)
        try:
            proc.wait_for_line("ready in", timeout_s=READY_TIMEOUT_S)
            return proc, port
        except RuntimeError:
            stop_proc(proc)
            last = proc.stderr
            if "in use" not in last:
                raise
    raise AssertionError(f"`idresolve up` did not start in {attempts} attempts: {last}")


def interrupt(proc: Proc) -> int:
    """Ctrl-C, as a user stops ``up``; its exit code."""
    stop_proc(proc)
    return proc.popen.returncode


@pytest.fixture
def cluster_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield tmp_path / "cluster"


def test_up_use_stop_and_restart(cluster_dir: Path) -> None:
    d = str(cluster_dir)
    proc, port = up_until_ready(cluster_dir)
    try:
        proc.wait_for_line("demo identifier: 88.118.8/JXDY2106023", timeout_s=10)
        proc.wait_for_line("top-level registry: 1 allocated, 0 already in place", timeout_s=10, stream="stderr")

        st = run_cli("status", "--data-dir", d, "--json")
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["up"] == status["total"] == NODES
        assert all(n["up"] for n in status["nodes"])
        assert {n["role"] for n in status["nodes"]} == {"top", "secondary", "enterprise", "recursive"}

        seed = run_cli("seed", "--identifiers", str(SEEDED), "--data-dir", d)
        assert seed.returncode == 0, seed.stderr
        assert f"registered {SEEDED} identifiers over 2 enterprises" in seed.stdout

        again = run_cli("seed", "--identifiers", str(SEEDED), "--data-dir", d, "--json")  # same tag: skips
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["registered"] == SEEDED and json.loads(again.stdout)["failed"] == 0

        reg = run_cli("register", "88.118.8/T1", "--url", "https://e.example", "--data-dir", d)
        assert reg.returncode == 0, reg.stderr
        assert "created 88.118.8/T1" in reg.stdout
        dup = run_cli("register", "88.118.8/T1", "--url", "https://x.example", "--no-overwrite", "--data-dir", d)
        assert dup.returncode == 1 and "409" in dup.stderr and "Traceback" not in dup.stderr

        tr = run_cli("resolve", "88.118.8/T1", "--trace", "--data-dir", d)
        assert tr.returncode == 0, tr.stderr
        for node, answer in (("top-beijing", "303 referral"), ("sec-tyre-qingdao", "303 referral"),
                             ("ent-tyre-qingdao-8", "1 success")):
            assert any(node in line and answer in line for line in tr.stdout.splitlines()), tr.stdout
        assert "3 hop(s)" in tr.stdout
        assert "https://e.example" in tr.stdout

        tr_json = run_cli("resolve", "88.118.8/T1", "--trace", "--json", "--data-dir", d)
        assert tr_json.returncode == 0, tr_json.stderr
        body = json.loads(tr_json.stdout)
        assert body["responseCode"] == 1 and [h["cached"] for h in body["trace"]] == [True]

        nf = run_cli("resolve", "88.118.8/NoSuchThing", "--trace", "--data-dir", d)
        assert nf.returncode == 1 and "100" in nf.stderr and "not found" in nf.stderr
    except BaseException:
        stop_proc(proc)
        raise
    assert interrupt(proc) == 0, proc.stderr
    assert "stopped" in proc.stdout.splitlines()[-1]

    # Stopped: the CLI says so clearly, with no traceback.
    down = run_cli("resolve", "88.118.8/T1", "--trace", "--data-dir", d)
    assert down.returncode != 0 and "error:" in down.stderr and "Traceback" not in down.stderr
    st = run_cli("status", "--data-dir", d, "--json")
    assert st.returncode != 0 and json.loads(st.stdout)["up"] == 0

    # Restart on the same data dir (same base port, so the HS_SITE records stay valid).
    proc2 = start_up(cluster_dir, port)
    try:
        proc2.wait_for_line("ready in", timeout_s=READY_TIMEOUT_S)
        proc2.wait_for_line("top-level registry: 0 allocated, 1 already in place", timeout_s=10, stream="stderr")
        for handle, needle in (("88.118.8/T1", "https://e.example"),
                               ("88.118.8/SEED000000000", "https://example.com/88.118.8/SEED000000000"),
                               ("88.118.9/SEED000000249", "https://example.com/88.118.9/SEED000000249"),
                               ("88.118.8/JXDY2106023", "https://example.com/products/JXDY2106023")):
            res = run_cli("resolve", handle, "--data-dir", d)
            assert res.returncode == 0, (handle, res.stderr)
            assert needle in res.stdout
        missing = run_cli("resolve", "88.118.8/SEED000000250", "--data-dir", d)  # 500 over 2: 0..249 each
        assert missing.returncode == 1 and "404" in missing.stderr
    finally:
        code = interrupt(proc2)
    assert code == 0, proc2.stderr


def test_up_on_a_busy_port_fails_clearly(tmp_path: Path) -> None:
    port = free_base_port(3 * NODES)
    with listening_socket(port):
        res = run_cli("up", "--config", str(MINIMAL), "--data-dir", str(tmp_path / "busy"), "--base-port",
                      str(port), "--latency", "off")
    assert res.returncode != 0
    assert "error:" in res.stderr and "in use" in res.stderr and str(port) in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_resolve_trace_without_a_cluster_fails_clearly(tmp_path: Path) -> None:
    res = run_cli("resolve", "88.118.8/JXDY2106023", "--trace", "--data-dir", str(tmp_path / "nothing"))
    assert res.returncode != 0
    assert "error:" in res.stderr and "running cluster" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
