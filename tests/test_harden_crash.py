"""Crash safety of cluster nodes: SIGKILL a node's worker process again and again under writes.

1. A secondary node (``sec-tyre-qingdao``, in a worker process of its own) takes binary CREATE and
   ADD_VALUE, REST PUT, and binary BATCH_CREATE of 100-500 identifiers, from concurrent writer threads,
   under its own prefix 88.118 and its hosted enterprise's 88.118.9. Its worker is SIGKILLed at random
   moments and restarted on the same data directory. Afterwards every acknowledged write is there with its
   values, every batch is there entirely or not at all, and the store passes ``PRAGMA integrity_check``.
2. The primary top-level node (``top-beijing``) is SIGKILLed while the registry admin allocates prefixes
   (``0.NA/88.<n>``) at it and it replicates them to the disaster-recovery node (``top-nanjing``). Every
   acknowledged allocation stays at the primary, and reaches the DR node, as the consistency model of
   ``nodes/replication.py`` promises (pushes retried while the taking node is up; a starting node offers
   every record it holds). Two more tests check the cases that used to lose acknowledged writes at a peer
   or undo them: a change made in the same second as the peer's copy and not pushed before a crash (on a
   wall clock of whole hours, so the same second is certain), and a deletion that a peer missed.

The CI versions run a few kills each; ``@pytest.mark.slow`` versions run hundreds (IDRESOLVE_LONG=1).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from clusterutil import cli_env
from hardenutil import (
    BinaryWriter,
    Ledger,
    RestWriter,
    SplitCluster,
    Writer,
    assert_sound,
    integrity_check,
    resolve_many,
    start_split_cluster,
    stop_writers,
    verify,
    verify_store,
    wait_for_acks,
)
from idresolve.cluster.credentials import secret_for
from idresolve.cluster.plan import identity_of
from idresolve.core.codes import ResponseCode
from idresolve.core.values import HandleValue, site_value, string_value
from idresolve.net.blocking import BlockingClient

SEC, TOP, DR = "sec-tyre-qingdao", "top-beijing", "top-nanjing"
LONG_KILLS = int(os.environ.get("IDRESOLVE_KILLS", "300"))
ROUND_TIMEOUT_S = 20.0
REPLICATION_DEADLINE_S = 10.0


@dataclass
class KillFigures:
    kills: int
    acked_ops: int
    acked_items: int
    lost: int
    batches: int
    batches_acked: int
    in_doubt_present: int
    seconds: float
    doubt: int = 0

    def line(self, what: str) -> str:
        return (f"HARDEN {what}: {self.kills} kills survived, {self.acked_ops} acknowledged writes "
                f"({self.acked_items} identifiers/values), {self.lost} lost; {self.doubt} in doubt (sent, no answer); "
                f"{self.batches} batches sent, "
                f"{self.batches_acked} acknowledged, none torn; {self.in_doubt_present} unacknowledged writes "
                f"found committed; {self.seconds:.1f} s")


def _auth(cluster: SplitCluster, prefix: str) -> tuple[str, bytes]:
    return identity_of(prefix), secret_for(cluster.master, prefix).encode()


def _kill_at_a_random_moment(cluster: SplitCluster, name: str, ledger: Ledger, rng: random.Random,
                             writers: list[Writer], *, ops: tuple[int, int]) -> None:
    """Let the writers get ``ops`` more acknowledgements, then SIGKILL ``name``'s worker, sometimes a few
    ms later still (so the kill lands inside a batch's transaction as well as between requests)."""
    with ledger.lock:
        target = ledger.acks + rng.randint(*ops)
    wait_for_acks(ledger, target, timeout_s=ROUND_TIMEOUT_S, writers=writers)
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.0, 0.02))  # a random moment, not a wait for anything
    cluster.proc_of(name).sigkill()


# --------------------------------------------------------------------------------------------------
# 1. A secondary node killed under single and batch registrations


def run_secondary_kill_loop(tmp_path: Path, kills: int, seed: int) -> KillFigures:
    t0 = time.monotonic()
    rng = random.Random(seed)
    cluster = start_split_cluster(tmp_path / "cluster", [SEC])
    writers: list[Writer] = []
    try:
        sec = cluster.node(SEC)
        ledger = Ledger()
        budget = 120.0 + 10.0 * kills  # writers outlive the kill loop (it stops them)
        for i, prefix in enumerate(("88.118", "88.118.9")):
            ident, secret = _auth(cluster, prefix)
            writers += [
                BinaryWriter(ledger, sec.dial_host, sec.tcp_port, (ident, secret), prefix, f"bin{i}",
                             seed=seed + 10 + i, max_seconds=budget),
                BinaryWriter(ledger, sec.dial_host, sec.tcp_port, (ident, secret), prefix, f"batch{i}",
                             seed=seed + 20 + i, batch=(100, 500), singles=False, max_seconds=budget),
                RestWriter(ledger, sec.dial_host, sec.http_port, ident, secret.decode(), prefix, f"rest{i}",
                           seed=seed + 30 + i, max_seconds=budget),
            ]
        for w in writers:
            w.start()
        for _ in range(kills):
            _kill_at_a_random_moment(cluster, SEC, ledger, rng, writers, ops=(3, 40))
            cluster.start_group(SEC)
        with ledger.lock:
            target = ledger.acks + 5
        wait_for_acks(ledger, target, timeout_s=ROUND_TIMEOUT_S, writers=writers)  # writing again
        stop_writers(writers)
        assert not ledger.corrupt, ledger.corrupt[:5]
        assert not ledger.unexpected, ledger.unexpected[:5]
        assert_sound(verify(ledger, sec.dial_host, sec.tcp_port))  # through the restarted node's API
        codes = cluster.stop()
        assert codes == {k: 0 for k in codes}, codes
        store = tmp_path / "cluster" / "nodes" / SEC / "records.sqlite3"
        result, rows = integrity_check(store)
        assert result == "ok", result
        verdict = verify_store(ledger, store)  # every identifier of every batch, with its values
        assert_sound(verdict)
        with ledger.lock:
            figures = KillFigures(kills, ledger.acks, ledger.acked_items, len(verdict.lost), len(ledger.batches),
                                  sum(1 for b in ledger.batches if b.acked), verdict.doubt_present,
                                  time.monotonic() - t0, ledger.doubt_ops)
            assert ledger.acks >= kills * 3 and sum(1 for b in ledger.batches if b.acked) >= 1
        assert rows >= len(ledger.acked)
        return figures
    finally:
        for w in writers:
            w.stop.set()
        cluster.ensure_gone()


def test_secondary_node_sigkilled_under_writes_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    figures = run_secondary_kill_loop(tmp_path, kills=5, seed=1)
    print("\n" + figures.line("secondary kill -9 (CI)"))
    assert figures.kills == 5 and figures.lost == 0


@pytest.mark.slow
def test_secondary_node_sigkilled_hundreds_of_times(tmp_path: Path, long_seed: int) -> None:
    figures = run_secondary_kill_loop(tmp_path, kills=LONG_KILLS, seed=long_seed)
    print("\n" + figures.line("secondary kill -9 (long)"))
    assert figures.kills == LONG_KILLS and figures.lost == 0


# --------------------------------------------------------------------------------------------------
# 2. The primary top-level node killed during prefix allocation, while the registry replicates


def _allocation_values(cluster: SplitCluster):  # type: ignore[no-untyped-def]
    site = cluster.node(SEC).site()

    def make(handle: str) -> tuple[HandleValue, ...]:
        return (site_value(1, site), string_value(2, "DESC", f"allocated as {handle}"))

    return make


def _allocation_writer(cluster: SplitCluster, ledger: Ledger, tag: str, *, seed: int, first: int,
                       max_seconds: float) -> BinaryWriter:
    top = cluster.node(TOP)
    return BinaryWriter(ledger, top.dial_host, top.tcp_port, _auth(cluster, "88"), "0.NA/88", tag, seed=seed,
                        make_values=_allocation_values(cluster), add_index=3, max_seconds=max_seconds,
                        naming=lambda n: f"0.NA/88.{first + n}")


def _missing_at(cluster: SplitCluster, name: str, expected: dict[str, dict[int, bytes]], *,
                timeout_s: float) -> dict[str, dict[int, bytes] | None]:
    """Poll node ``name`` (bounded) until it holds every expected record with its values; what is still
    missing or different at the deadline."""
    node = cluster.node(name)
    deadline = time.monotonic() + timeout_s
    todo = dict(expected)
    while True:
        got = resolve_many(node.dial_host, node.tcp_port, sorted(todo))
        todo = {h: want for h, want in todo.items()
                if got[h] is None or any(got[h].get(i) != d for i, d in want.items())}  # type: ignore[union-attr]
        if not todo or time.monotonic() >= deadline:
            return {h: got[h] for h in todo}
        time.sleep(0.05)  # bounded poll of a condition with no event to wait on (a push arriving)


def _pushes_answered(cluster: SplitCluster, name: str, timeout_s: float = REPLICATION_DEADLINE_S) -> bool:
    """Poll ``name``'s /metrics (bounded) until its replicator has no push waiting for a peer's answer."""
    from idresolve.bench.scrape import scrape_one

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sample = scrape_one(cluster.node(name).http_url)
        if sample is not None and sample.get(("idresolve_replication_pending", ()), 1.0) == 0:
            return True
        time.sleep(0.05)  # bounded poll of the node's own state
    return False


@dataclass
class PeerFigures:
    acked: int  # acknowledged allocations
    missing: int  # not at the peer at all after the bounded wait
    stale: int  # at the peer, but without an acknowledged value


def run_top_level_kill_loop(tmp_path: Path, kills: int, seed: int) -> tuple[KillFigures, PeerFigures]:
    t0 = time.monotonic()
    rng = random.Random(seed)
    cluster = start_split_cluster(tmp_path / "cluster", [TOP, DR])
    writers: list[Writer] = []
    try:
        ledger = Ledger()
        budget = 120.0 + 10.0 * kills  # writers outlive the kill loop (it stops them)
        writers = [_allocation_writer(cluster, ledger, f"alloc{i}", seed=seed + i, first=1000 + 1_000_000 * i,
                                      max_seconds=budget) for i in range(2)]
        for w in writers:
            w.start()
        for _ in range(kills):
            _kill_at_a_random_moment(cluster, TOP, ledger, rng, writers, ops=(5, 60))
            cluster.start_group(TOP)
        # A quiet end: the primary stays up while more allocations are taken.
        with ledger.lock:
            before_quiet = set(ledger.acked)
            target = ledger.acks + 50
        wait_for_acks(ledger, target, timeout_s=ROUND_TIMEOUT_S, writers=writers)
        stop_writers(writers)
        assert not ledger.corrupt, ledger.corrupt[:5]
        assert not ledger.unexpected, ledger.unexpected[:5]
        top = cluster.node(TOP)
        verdict = verify(ledger, top.dial_host, top.tcp_port)
        assert_sound(verdict)  # the primary keeps every acknowledged allocation, with its values
        acked, _, _ = ledger.snapshot()
        _create(cluster, TOP, "0.NA/88.999")  # a last write while everything is up
        # The primary's own state: no push waits for DR's answer any more (pushes go in windows of 64, so a
        # later write may arrive before earlier ones; the replicator's pending count says when all did).
        assert _pushes_answered(cluster, TOP), f"{TOP} still has pushes waiting for {DR}"
        behind = _missing_at(cluster, DR, {**acked, "0.NA/88.999": {}}, timeout_s=0.0)
        missing = [h for h, got in behind.items() if got is None]
        # What the model promises: writes taken while the taking node stays up reach every peer, and a
        # starting node offers every record it holds, so no acknowledged allocation is missing at a peer.
        quiet = [h for h in behind if h not in before_quiet]
        assert not quiet, f"allocations taken while the primary stayed up are not (all) at {DR}: {quiet[:5]}"
        assert not missing, f"{len(missing)} acknowledged allocations never reached {DR}: {missing[:5]}"
        codes = cluster.stop()
        assert codes == {k: 0 for k in codes}, codes
        for name in (TOP, DR):
            result, _ = integrity_check(tmp_path / "cluster" / "nodes" / name / "records.sqlite3")
            assert result == "ok", (name, result)
        figures = KillFigures(kills, ledger.acks, ledger.acked_items, len(verdict.lost), 0, 0,
                              verdict.doubt_present, time.monotonic() - t0, ledger.doubt_ops)
        return figures, PeerFigures(len(acked), len(missing), len(behind) - len(missing))
    finally:
        for w in writers:
            w.stop.set()
        cluster.ensure_gone()


def _peer_line(p: PeerFigures) -> str:
    return (f"; at {DR}: {p.missing} of {p.acked} acknowledged allocations missing, {p.stale} without an "
            f"acknowledged value for good")


def test_top_level_node_sigkilled_during_allocation_keeps_every_acknowledged_allocation(tmp_path: Path) -> None:
    figures, peer = run_top_level_kill_loop(tmp_path, kills=4, seed=2)
    print("\n" + figures.line("primary top-level kill -9 (CI)") + _peer_line(peer))
    assert figures.kills == 4 and figures.lost == 0 and peer.missing == 0


@pytest.mark.slow
def test_top_level_node_sigkilled_a_hundred_times(tmp_path: Path, long_seed: int) -> None:
    kills = max(1, LONG_KILLS // 3)
    figures, peer = run_top_level_kill_loop(tmp_path, kills=kills, seed=long_seed)
    print("\n" + figures.line("primary top-level kill -9 (long)") + _peer_line(peer))
    assert figures.kills == kills and figures.lost == 0 and peer.missing == 0


def _create(cluster: SplitCluster, at: str, handle: str) -> None:
    node = cluster.node(at)
    with BlockingClient(node.dial_host, node.tcp_port, timeout_s=10, auth=_auth(cluster, "88")) as c:
        resp = c.create(handle, _allocation_values(cluster)(handle))
    assert resp.code == ResponseCode.SUCCESS, (handle, resp.code, resp.message)


def _arrived(cluster: SplitCluster, at: str, handle: str) -> None:
    want = {handle: {2: f"allocated as {handle}".encode()}}
    assert not _missing_at(cluster, at, want, timeout_s=REPLICATION_DEADLINE_S), f"{handle} never reached {at}"


def test_allocations_acknowledged_while_the_peer_is_down_spread_after_the_primary_is_killed(tmp_path: Path) -> None:
    """The DR node is down while the primary acknowledges allocations (so they wait in the primary's
    memory); the primary is SIGKILLed; both come back: the primary's start-up offer brings them to DR."""
    cluster = start_split_cluster(tmp_path / "cluster", [TOP, DR])
    try:
        cluster.proc_of(DR).sigkill()
        acked = [f"0.NA/88.{n}" for n in range(500, 520)]
        for h in acked:
            _create(cluster, TOP, h)
        cluster.proc_of(TOP).sigkill()
        cluster.start_group(DR)
        cluster.start_group(TOP)
        missing = _missing_at(cluster, DR, {h: {2: f"allocated as {h}".encode()} for h in acked},
                              timeout_s=REPLICATION_DEADLINE_S)
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged allocations never reached {DR}"
    finally:
        cluster.ensure_gone()


def _same_second_change(cluster: SplitCluster, handle: str) -> bool:
    """Create ``handle`` at the primary, let it reach DR, kill DR, add a value at the primary: True when the
    creation and the addition carry the same (whole-second) timestamp."""
    _create(cluster, TOP, handle)
    _arrived(cluster, DR, handle)
    cluster.proc_of(DR).sigkill()
    top = cluster.node(TOP)
    with BlockingClient(top.dial_host, top.tcp_port, timeout_s=10, auth=_auth(cluster, "88")) as c:
        assert c.add_values(handle, (string_value(3, "EMAIL", "registry@example.com"),)).code == ResponseCode.SUCCESS
        record = c.resolve(handle)
    return len({v.timestamp for v in record.values}) == 1


COARSE_CLOCK = Path(__file__).resolve().parent / "coarse_clock"


def coarse_clock_env() -> dict[str, str]:
    """Workers whose wall clock reads the start of the hour (``tests/coarse_clock/sitecustomize.py``)."""
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(COARSE_CLOCK), env.get("PYTHONPATH", "")) if p)
    return env


def test_a_same_second_change_acknowledged_before_a_crash_reaches_the_dr_node(tmp_path: Path) -> None:
    """The nodes' wall clock moves in whole hours (a wrapper, from outside the product), so the change and
    the copy DR holds share their second by construction, not by racing the clock."""
    cluster = start_split_cluster(tmp_path / "cluster", [TOP, DR], env=coarse_clock_env())
    try:
        for attempt in range(2):  # the second only if an hour began between the creation and the change
            handle = f"0.NA/88.{600 + attempt}"
            if _same_second_change(cluster, handle):
                break
            cluster.start_group(DR)
        else:
            pytest.fail("the creation and the change did not share their second on a clock of whole hours")
        cluster.proc_of(TOP).sigkill()  # before it could push the change: DR is down
        cluster.start_group(DR)
        cluster.start_group(TOP)
        _create(cluster, TOP, "0.NA/88.699")  # a later write arrives: the link works, the offer went out first
        _arrived(cluster, DR, "0.NA/88.699")
        top = cluster.node(TOP)
        assert resolve_many(top.dial_host, top.tcp_port, [handle])[handle].get(3) == b"registry@example.com"
        with BlockingClient(top.dial_host, top.tcp_port, timeout_s=10) as c:
            stamps = {v.timestamp for v in c.resolve(handle).values}
        assert len(stamps) == 1 and stamps.pop() % 3600 == 0  # the wrapper's clock of whole hours was in use
        behind = _missing_at(cluster, DR, {handle: {3: b"registry@example.com"}}, timeout_s=2.0)
        print(f"\nHARDEN replication: same-second change of {handle} at {DR}: "
              f"{'lost' if behind else 'arrived'}")
        assert not behind, f"the acknowledged change of {handle} never reached {DR}: it holds {behind[handle]}"
    finally:
        cluster.ensure_gone()


def test_an_acknowledged_deletion_is_not_undone_by_a_peer_that_missed_it(tmp_path: Path) -> None:
    cluster = start_split_cluster(tmp_path / "cluster", [TOP, DR])
    try:
        top = cluster.node(TOP)
        handle = "0.NA/88.700"
        _create(cluster, TOP, handle)
        _arrived(cluster, DR, handle)
        cluster.proc_of(DR).sigkill()
        with BlockingClient(top.dial_host, top.tcp_port, timeout_s=10, auth=_auth(cluster, "88")) as c:
            assert c.delete(handle).code == ResponseCode.SUCCESS  # acknowledged
        cluster.proc_of(TOP).sigkill()
        cluster.start_group(TOP)
        with BlockingClient(top.dial_host, top.tcp_port, timeout_s=10) as c:
            assert c.resolve(handle).code == ResponseCode.HANDLE_NOT_FOUND  # the deletion is durable
        cluster.start_group(DR)
        _create(cluster, DR, "0.NA/88.701")  # DR's start-up offers went out before this write
        _arrived(cluster, TOP, "0.NA/88.701")
        with BlockingClient(top.dial_host, top.tcp_port, timeout_s=10) as c:
            code = c.resolve(handle).code
        print(f"\nHARDEN replication: acknowledged deletion of {handle} at {TOP} after {DR} came back: code {code}")
        assert code == ResponseCode.HANDLE_NOT_FOUND, f"{handle}, deleted with an acknowledgement, is back at {TOP}"
    finally:
        cluster.ensure_gone()
