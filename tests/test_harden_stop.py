"""Graceful stop under heavy writes: SIGTERM to ``idresolve node``, SIGINT to ``idresolve up``.

While concurrent writers keep sending binary CREATE / ADD_VALUE / BATCH_CREATE and REST PUT / batch
requests, the process is told to stop. It must exit 0 within a bound; every write acknowledged before or
during the stop must be there after a restart (batches entirely or not at all); and every request that was
not acknowledged must have been refused cleanly (connection refused or closed, or code 3 / HTTP 503),
never answered with something that is not a well-formed answer.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterutil import MINIMAL
from hardenutil import (
    BinaryWriter,
    Ledger,
    RestWriter,
    Writer,
    assert_sound,
    integrity_check,
    start_up,
    stop_writers,
    verify,
    verify_store,
    wait_for_acks,
)
from procs import NodeProcess, clean_env

SECRET = "stop-test-secret"
IDENTITY = "300:0.NA/88.100"
NODE_STOP_BOUND_S = 12.0  # the drain timeout (runtime.listeners.SHUTDOWN_TIMEOUT_S, 10 s) and a margin
UP_STOP_BOUND_S = 15.0  # below the supervisor's 20 s, after which it would SIGKILL workers
CYCLES = 3
LOAD_ACKS = 60  # acknowledged operations before each stop


@dataclass
class StopFigures:
    stops: list[float]
    acked_ops: int
    acked_during_stop: int
    refusals: dict[str, int]

    def line(self, what: str) -> str:
        times = ", ".join(f"{t * 1000:.0f} ms" for t in self.stops)
        return (f"HARDEN {what}: stop times {times}; {self.acked_ops} acknowledged writes, "
                f"{self.acked_during_stop} of them after the signal, none lost; clean refusals {self.refusals}")


def _writers(ledger: Ledger, host: str, tcp: int, http: int, identity: str, secret: str, prefix: str, tag: str,
             seed: int) -> list[Writer]:
    auth = (identity, secret.encode())
    return [
        BinaryWriter(ledger, host, tcp, auth, prefix, f"{tag}bin", seed=seed, max_seconds=120),
        BinaryWriter(ledger, host, tcp, auth, prefix, f"{tag}bat", seed=seed + 1, batch=(100, 300), singles=False,
                     max_seconds=120),
        RestWriter(ledger, host, http, identity, secret, prefix, f"{tag}put", seed=seed + 2, max_seconds=120),
        RestWriter(ledger, host, http, identity, secret, prefix, f"{tag}pbat", seed=seed + 3, batch=(20, 80),
                   max_seconds=120),
    ]


# --------------------------------------------------------------------------------------------------
# One node


def _load(ledger: Ledger, writers: list[Any]) -> int:
    """Start the writers and wait for LOAD_ACKS more acknowledged operations: the count to stop at."""
    for w in writers:
        w.start()
    with ledger.lock:
        target = ledger.acks + LOAD_ACKS
    wait_for_acks(ledger, target, timeout_s=30, writers=writers)
    with ledger.lock:
        return ledger.acks


def _start_node(data_dir: Path, log: Path) -> tuple[NodeProcess, int, int]:
    node = NodeProcess("--name", "stop", "--prefix", "88.100", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0",
                       "--data-dir", str(data_dir), "--admin-secret", SECRET, log=log, env=clean_env())
    node.wait_ready()
    tcp = int(node.wait_for(r"binary protocol: tcp [\d.]+:(\d+)").group(1))
    return node, node.port, tcp


def test_sigterm_during_heavy_writes_stops_cleanly_and_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ledger = Ledger()
    stops: list[float] = []
    during = 0  # acknowledgements that came after the signal
    started: list[NodeProcess] = []
    writers: list[Writer] = []
    try:
        for cycle in range(CYCLES):
            node, http, tcp = _start_node(data_dir, tmp_path / f"node{cycle}.log")
            started.append(node)
            if cycle:
                assert_sound(verify(ledger, "127.0.0.1", tcp))  # everything from before the last stop
            writers = _writers(ledger, "127.0.0.1", tcp, http, IDENTITY, SECRET, "88.100", f"c{cycle}", 100 * cycle)
            acks_at_signal = _load(ledger, writers)
            t0 = time.monotonic()
            node.proc.send_signal(signal.SIGTERM)
            code = node.proc.wait(timeout=NODE_STOP_BOUND_S + 10)
            stops.append(time.monotonic() - t0)
            with ledger.lock:
                during += ledger.acks - acks_at_signal
            stop_writers(writers)  # they kept writing through the stop; now refused at the connection
            assert code == 0, node.stderr_text()[-2000:]
            assert stops[-1] < NODE_STOP_BOUND_S, f"stop took {stops[-1]:.1f} s"
            node._reader.join(timeout=10)
            assert node.lines[-1] == "stopped", node.lines[-3:]
            assert "Traceback" not in node.stderr_text(), node.stderr_text()[-2000:]
        assert not ledger.corrupt, f"answers that were neither answers nor clean refusals: {ledger.corrupt[:5]}"
        assert not ledger.unexpected, f"unexpected answers: {ledger.unexpected[:5]}"
        node, http, tcp = _start_node(data_dir, tmp_path / "final.log")
        started.append(node)
        assert_sound(verify(ledger, "127.0.0.1", tcp))
        assert node.stop() == 0
        store = data_dir / "stop.sqlite3"
        assert integrity_check(store)[0] == "ok"
        assert_sound(verify_store(ledger, store))
        figures = StopFigures(stops, ledger.acks, during, dict(ledger.refusals))
        print("\n" + figures.line("node SIGTERM under load"))
        assert ledger.acks >= CYCLES * LOAD_ACKS
    finally:
        for w in writers:
            w.stop.set()
        for n in started:
            n.close()


# --------------------------------------------------------------------------------------------------
# A cluster (`idresolve up`)

SEC, ENT = "sec-tyre-qingdao", "ent-tyre-qingdao-8"


def test_sigint_to_up_under_load_stops_cleanly_and_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    from idresolve.cluster.credentials import read_credentials
    from idresolve.cluster.plan import identity_of, make_plan
    from idresolve.core.topology import load_topology

    data_dir = tmp_path / "cluster"
    ledger = Ledger()
    stops: list[float] = []
    up = start_up(data_dir, None, "--workers", "2")
    ups = [up]
    writers: list[Writer] = []
    try:
        plan = make_plan(load_topology(MINIMAL), base_port=up.port, workers=2)
        creds = read_credentials(data_dir)
        sec, ent = plan.node(SEC), plan.node(ENT)
        hosted, own = identity_of("88.118.9"), identity_of("88.118.8")
        writers = [
            *_writers(ledger, "127.0.0.1", sec.tcp_port, sec.http_port, hosted, creds[hosted], "88.118.9", "s", 1),
            BinaryWriter(ledger, "127.0.0.1", ent.tcp_port, (own, creds[own].encode()), "88.118.8", "ebat", seed=9,
                         batch=(100, 300), max_seconds=120),
        ]
        acks_at_signal = _load(ledger, writers)
        code, took = up.interrupt()
        stops.append(took)
        with ledger.lock:
            during = ledger.acks - acks_at_signal
        stop_writers(writers)
        assert code == 0, up.proc.stderr[-2000:]
        assert up.proc.out[-1].strip() == "stopped", up.proc.out[-3:]
        assert took < UP_STOP_BOUND_S, f"`up` took {took:.1f} s to stop"
        assert "Traceback" not in up.proc.stderr, up.proc.stderr[-2000:]
        assert not ledger.corrupt, f"answers that were neither answers nor clean refusals: {ledger.corrupt[:5]}"
        assert not ledger.unexpected, f"unexpected answers: {ledger.unexpected[:5]}"

        up = start_up(data_dir, up.port, "--workers", "2")  # the same base port: the HS_SITE records stay valid
        ups.append(up)
        by_prefix = {p: Ledger() for p in ("88.118.9", "88.118.8")}
        for h, v in ledger.acked.items():
            by_prefix[h.split("/", 1)[0]].acked[h] = v
        for h, v in ledger.doubt.items():
            by_prefix[h.split("/", 1)[0]].doubt[h] = v
        for b in ledger.batches:
            by_prefix[b.handles[0].split("/", 1)[0]].batches.append(b)
        for prefix, node in (("88.118.9", sec), ("88.118.8", ent)):
            assert_sound(verify(by_prefix[prefix], "127.0.0.1", node.tcp_port))
        code, took = up.interrupt()
        stops.append(took)
        assert code == 0 and took < UP_STOP_BOUND_S, (code, took, up.proc.stderr[-2000:])
        for prefix, node in (("88.118.9", sec), ("88.118.8", ent)):
            store = data_dir / "nodes" / node.name / "records.sqlite3"
            assert integrity_check(store)[0] == "ok"
            assert_sound(verify_store(by_prefix[prefix], store))
        figures = StopFigures(stops, ledger.acks, during, dict(ledger.refusals))
        print("\n" + figures.line("`idresolve up` SIGINT under load"))
        assert len(ledger.acked) > 0 and any(b.acked for b in ledger.batches)
    finally:
        for w in writers:
            w.stop.set()
        for u in ups:
            u.ensure_gone()
