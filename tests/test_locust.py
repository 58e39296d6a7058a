"""The Locust load test (loadtests/) as an operator runs it: a minimal cluster from ``idresolve up``
(subprocess), seeded with ``idresolve seed``, then short bounded headless ``locust`` runs with CSV output,
once with REST users and once with binary users. Locust's counts are checked against the servers: the
recursive node's /healthz (cacheHits + cacheMisses: every resolution it serves counts exactly once) and
the record counts of the nodes that hold the prefixes written to.

The pure key-space helpers of loadtests/ are checked in-process; Locust itself (which monkey-patches the
standard library with gevent) only ever runs in a subprocess.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from clusterutil import free_base_port
from idresolve.client.rest import RestClient

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
MINIMAL = ROOT / "config" / "minimal.toml"
BIN = Path(sys.executable).parent
IDRESOLVE = [str(BIN / "idresolve")] if (BIN / "idresolve").exists() else [
    sys.executable, "-c", "from idresolve.cli.main import entry; entry()"]
LOCUST = BIN / "locust"
SEEDED = 400
PORTS_PER_CLUSTER = 18  # minimal.toml: 6 nodes, tcp/udp on base+2i, http on base+2i+1, native on base+12+i
RUN_S = 4
USERS = 4

needs_locust = pytest.mark.skipif(not LOCUST.exists(), reason="locust is not installed (pip install -e '.[load]')")


def _clean_env(**extra: str) -> dict[str, str]:
    """No IDRESOLVE_* or LOCUST_* settings from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDRESOLVE_", "LOCUST_"))}
    env.update(extra)
    return env


# -- the pure helpers ------------------------------------------------------------------------------------

def _load_keyspace() -> ModuleType:
    spec = importlib.util.spec_from_file_location("idr_loadtest_keyspace", ROOT / "loadtests" / "keyspace.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and annotations look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.mark.parametrize("total,enterprises", [(2000, 2), (7, 3), (10, 4), (1, 3), (5, 5)])
def test_keyspace_names_exactly_what_seeding_registered(total: int, enterprises: int) -> None:
    ks = _load_keyspace()
    prefixes = [f"88.118.{i}" for i in range(enterprises)]
    counts = ks.seeded_counts(total, enterprises)
    # seeding.py: enterprise i gets suffixes <tag>000000000 .. <tag>{n_i - 1:09d}
    seeded = {f"{p}/SEED{k:09d}" for p, n in zip(prefixes, counts, strict=True) for k in range(n)}
    usable = [(p, n) for p, n in zip(prefixes, counts, strict=True) if n]
    space = ks.KeySpace([p for p, _ in usable], [n for _, n in usable])
    drawn = [space.handle(r) for r in range(space.size)]
    assert space.size == total and len(set(drawn)) == total and set(drawn) == seeded
    with pytest.raises(IndexError):
        space.handle(total)


def test_keyspace_leaves_out_unreachable_enterprises() -> None:
    ks = _load_keyspace()
    counts = ks.seeded_counts(10, 3)  # [4, 3, 3]
    space = ks.KeySpace(["88.118.8", "88.119.1"], [counts[0], counts[2]])  # the middle one unreachable
    assert sorted(space.handle(r) for r in range(space.size)) == sorted(
        [f"88.118.8/SEED{k:09d}" for k in range(4)] + [f"88.119.1/SEED{k:09d}" for k in range(3)])
    with pytest.raises(ValueError):
        ks.KeySpace(["a", "b"], [5, 3])  # not a seeding split


def test_zipf_sampler_follows_its_law() -> None:
    ks = _load_keyspace()
    rng = random.Random(7)
    z = ks.ZipfSampler(1000, 1.1, rng)
    draws = [z.sample() for _ in range(50_000)]
    assert min(draws) >= 0 and max(draws) < 1000
    top = draws.count(0) / len(draws)
    assert abs(top - z.probability(0)) < 0.01  # ~0.16 for s = 1.1 over 1,000 ranks
    assert draws.count(0) > draws.count(1) > draws.count(9)
    u = ks.UniformSampler(10, rng)
    assert {u.sample() for _ in range(1000)} == set(range(10))
    with pytest.raises(ValueError):
        ks.ZipfSampler(10, 0.0, rng)


def test_unknown_and_fresh_names_never_collide_with_seeded_ones() -> None:
    ks = _load_keyspace()
    names = ks.Names(random.Random(1))
    unknown = names.unknown("88.118.8")
    fresh = [names.fresh("88.118.8") for _ in range(3)]
    assert unknown.startswith("88.118.8/NX-") and len(set(fresh)) == 3
    assert not any(n.split("/", 1)[1].startswith("SEED") for n in [unknown, *fresh])


# -- a real cluster -------------------------------------------------------------------------------------

@dataclass
class Cluster:
    data_dir: Path
    recursive_http: str
    holders_http: list[str]
    log: Path


class _Up:
    """``idresolve up`` in a subprocess, its stdout read by a thread so every wait has a deadline."""

    def __init__(self, data_dir: Path, base_port: int, log: Path) -> None:
        self.log_fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*IDRESOLVE, "up", "--config", str(MINIMAL), "--data-dir", str(data_dir), "--base-port", str(base_port),
             "--latency", "off",
             # The exact count checks below need every request to reach the resolver: no load shedding on a
             # busy CI machine (shedding has its own suite, test_harden_overload.py).
             "--shed-lag-ms", "0", "--client-rate", "0"],
            stdout=subprocess.PIPE, stderr=self.log_fh, text=True, env=_clean_env())
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """True on the "ready in" line; False if ``up`` exited first (e.g. a port taken meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                return False
            if line.startswith("ready in"):
                return True
        raise AssertionError(f"`idresolve up` not ready within {timeout_s} s")

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=25)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self.reader.join(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.log_fh.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not LOCUST.exists():
        pytest.skip("locust is not installed (pip install -e '.[load]')")
    rng = random.Random()
    up: _Up | None = None
    try:
        for _attempt in range(4):  # another test may take the range between our check and `up`'s bind
            data_dir = tmp_path_factory.mktemp("cluster")
            log = data_dir.parent / (data_dir.name + "-up.log")
            up = _Up(data_dir, free_base_port(PORTS_PER_CLUSTER, lo=28000, rng=rng), log)
            if up.wait_ready():
                break
            up.stop()
            up = None
        else:
            raise AssertionError(f"`idresolve up` did not start: {log.read_text(errors='replace')[-2000:]}")
        seed = subprocess.run([*IDRESOLVE, "seed", "--identifiers", str(SEEDED), "--data-dir", str(data_dir),
                               "--json"], capture_output=True, text=True, timeout=60, env=_clean_env())
        assert seed.returncode == 0, seed.stdout + seed.stderr
        desc = json.loads((data_dir / "cluster.json").read_text())
        nodes = {n["name"]: n for n in desc["nodes"]}
        recursive = next(n["http"] for n in desc["nodes"] if n["role"] == "recursive")
        holders = sorted({nodes[e["holder"]]["http"] for e in desc["enterprises"]})
        yield Cluster(data_dir, recursive, holders, log)
    finally:
        if up is not None:
            up.stop()


def _health(url: str) -> dict[str, Any]:
    with RestClient(url, timeout_s=5.0) as c:
        answer = c.health()
    assert answer.status == 200, answer
    return answer.body


def _resolutions(c: Cluster) -> int:
    h = _health(c.recursive_http)
    return int(h["cacheHits"]) + int(h["cacheMisses"])


def _records(c: Cluster) -> int:
    return sum(int(_health(url)["records"]) for url in c.holders_http)


def _run_locust(c: Cluster, out: Path, classes: list[str], *knobs: str) -> tuple[subprocess.CompletedProcess[str],
                                                                                     dict[str, dict[str, str]]]:
    out.mkdir()
    argv = [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_S}s",
            "--only-summary", "--csv", str(out / "run"), "--idr-data-dir", str(c.data_dir),
            "--idr-identifiers", str(SEEDED), "--idr-unknown-share", "0.1", "--idr-write-share", "0.05",
            "--idr-max-fail-ratio", "0.01", "--idr-max-p99-ms", "2000", *knobs, *classes]
    # Warnings are errors in Locust's process too; nothing from Locust, gevent or loadtests/ emits one today.
    # (Should a third-party one appear, ignore exactly that category and module here, nowhere else.)
    env = _clean_env(PYTHONWARNINGS="error")
    proc = subprocess.run(argv, cwd=out, capture_output=True, text=True, timeout=RUN_S + 30, env=env)
    stats = out / "run_stats.csv"
    assert stats.exists(), proc.stderr[-3000:]
    with stats.open(newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    return proc, rows


def _count(rows: dict[str, dict[str, str]], name: str, column: str = "Request Count") -> int:
    return int(rows[name][column]) if name in rows else 0


def _check(c: Cluster, proc: subprocess.CompletedProcess[str], rows: dict[str, dict[str, str]],
           lookups: tuple[str, str], resolved_before: int) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]  # the pass/fail verdict of the quitting hook
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "idresolve load test passed" in proc.stderr, proc.stderr[-3000:]
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0, rows
    assert int(total["Failure Count"]) <= 0.01 * int(total["Request Count"]), proc.stderr[-3000:]
    seeded, unknown = (_count(rows, n) for n in lookups)
    assert seeded > 0 and unknown > 0, rows  # --idr-unknown-share 0.1
    # Every resolution Locust counted reached the recursive node and counted there exactly once (a hit or
    # a miss of its answer cache). A few more reach it uncounted by Locust: the request each user is in when
    # the run time ends (killed, not recorded), and on a loaded machine once in a while one more than the
    # users (5 with 4 users, seen in CI; in local runs the node's request counter agrees with its cache counters
    # while Locust records fewer, so it is Locust's side). Twice the users, then: a double count would be hundreds.
    served = _resolutions(c) - resolved_before
    assert seeded + unknown <= served <= seeded + unknown + 2 * USERS, (seeded, unknown, served)


@needs_locust
def test_rest_users_against_a_cluster(cluster: Cluster, tmp_path: Path) -> None:
    resolved, records = _resolutions(cluster), _records(cluster)
    proc, rows = _run_locust(cluster, tmp_path / "rest", ["RestResolver"], "--idr-keys", "zipf")
    _check(cluster, proc, rows, ("/api/handles/[seeded]", "/api/handles/[unknown]"), resolved)
    created = _count(rows, "/api/handles/[new]") - _count(rows, "/api/handles/[new]", "Failure Count")
    assert created > 0, rows  # --idr-write-share 0.05
    stored = _records(cluster) - records
    assert created <= stored <= created + USERS, (created, stored, rows)


@needs_locust
def test_binary_users_against_a_cluster(cluster: Cluster, tmp_path: Path) -> None:
    resolved, records = _resolutions(cluster), _records(cluster)
    batch = 20
    proc, rows = _run_locust(cluster, tmp_path / "binary", ["BinaryResolver", "Registrar"], "--idr-keys", "uniform",
                             "--idr-batch-size", str(batch))
    _check(cluster, proc, rows, ("resolve", "resolve-unknown"), resolved)
    assert all(row["Type"] == "BIN" for name, row in rows.items() if name != "Aggregated")
    batches = _count(rows, "batch-create") - _count(rows, "batch-create", "Failure Count")
    creates = _count(rows, "create") - _count(rows, "create", "Failure Count")
    assert batches > 0 and creates > 0, rows
    created = batches * batch + creates
    stored = _records(cluster) - records
    # Writes the nodes committed and Locust did not count: as for resolutions (``_check``), the one each user
    # is in when the run ends, and on a loaded machine a few more (81 = 4 batches and a create beyond the
    # count, with 2 registrars, seen once in a full-suite run): twice the users' worth of batches.
    assert created <= stored <= created + 2 * USERS * batch, (created, stored, rows)
