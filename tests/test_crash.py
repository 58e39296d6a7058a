"""Durability under kill -9: every write the node acknowledged survives a SIGKILL and a restart.

A real ``idresolve node`` subprocess (SQLite store) takes a stream of single PUTs, value additions and
``/api/batch`` registrations from a writer thread; it is SIGKILLed mid-stream, several times, and restarted
on the same data directory. After each restart every acknowledged write must resolve with its values, and
every batch, acknowledged or not, must be there entirely or not at all.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from procs import NodeProcess

SECRET = "crash-test-secret"
AUTH = "Basic " + base64.b64encode(f"300%3A0.NA%2F88.100:{SECRET}".encode()).decode()
ROUNDS = 4
BATCH = 25


@dataclass
class Ledger:
    """What the node acknowledged (handle -> {index: text}) and every batch that was sent."""

    acked: dict[str, dict[int, str]] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)
    ops: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Writer(threading.Thread):
    """Writes until the node goes away (or ``stop`` is set, or ``max_ops``), recording acknowledgements."""

    def __init__(self, port: int, ledger: Ledger, round_no: int, max_ops: int = 5_000) -> None:
        super().__init__(daemon=True)
        self.port, self.ledger, self.round_no, self.max_ops = port, ledger, round_no, max_ops
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.unexpected: list[tuple[int, bytes]] = []
        self.shed = 0

    def _send(self, conn: http.client.HTTPConnection, method: str, path: str, body: object) -> int:
        conn.request(method, path, body=json.dumps(body),
                     headers={"Content-Type": "application/json", "Authorization": AUTH})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status == 503 and raw.startswith(b'{"responseCode":3'):
            self.shed += 1  # load shedding: refused before any work, so simply not acknowledged
        elif not 200 <= resp.status < 300:
            self.unexpected.append((resp.status, raw[:200]))
        return resp.status

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        ledger, r = self.ledger, self.round_no
        try:
            for n in range(self.max_ops):
                if self.stop.is_set():
                    return
                kind = n % 3
                if kind == 0:  # a single PUT creating a record
                    handle, text = f"88.100/r{r}-s{n}", f"single {r}/{n}"
                    if 200 <= self._send(conn, "PUT", f"/api/handles/{handle}",
                                         {"values": [{"index": 1, "type": "URL", "data": text}]}) < 300:
                        with ledger.lock:
                            ledger.acked[handle] = {1: text}
                elif kind == 1:  # a batch, all or nothing
                    handles = [f"88.100/r{r}-b{n}-{i}" for i in range(BATCH)]
                    with ledger.lock:
                        ledger.batches.append(handles)
                    items = [{"handle": h, "values": [{"index": 1, "type": "URL", "data": f"batch {h}"}]}
                             for h in handles]
                    if 200 <= self._send(conn, "POST", "/api/batch", {"handles": items}) < 300:
                        with ledger.lock:
                            for h in handles:
                                ledger.acked[h] = {1: f"batch {h}"}
                else:  # add a value to a record acknowledged earlier
                    with ledger.lock:
                        target = next((h for h, v in ledger.acked.items() if 2 not in v), None)
                    if target is None:
                        continue
                    text = f"added {r}/{n}"
                    if 200 <= self._send(conn, "PUT", f"/api/handles/{target}?index=2",
                                         {"values": [{"index": 2, "type": "EMAIL", "data": text}]}) < 300:
                        with ledger.lock:
                            ledger.acked[target][2] = text
                with ledger.lock:
                    ledger.ops += 1
        except (OSError, http.client.HTTPException):
            return  # the node was killed under us: this write was not acknowledged
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            conn.close()


def resolve_all(port: int, handles: list[str]) -> dict[str, dict[int, str] | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out: dict[str, dict[int, str] | None] = {}
    try:
        for h in handles:
            conn.request("GET", f"/api/handles/{h}")  # one at a time, after the writers: never shed
            resp = conn.getresponse()
            body = json.loads(resp.read())
            if resp.status == 404:
                out[h] = None
                continue
            assert resp.status == 200, (h, resp.status, body)
            out[h] = {v["index"]: v["data"]["value"] for v in body["values"] if v["type"] != "HS_ADMIN"}
    finally:
        conn.close()
    return out


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for n in started:
        n.close()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    data_dir = tmp_path / "data"
    ledger = Ledger()

    def start(i: int) -> NodeProcess:
        node = NodeProcess("--name", "crash", "--prefix", "88.100", "--http", "127.0.0.1:0",
                           "--data-dir", str(data_dir), "--admin-secret", SECRET, log=tmp_path / f"node{i}.log")
        nodes.append(node)
        node.wait_ready()
        return node

    def verify(node: NodeProcess) -> None:
        with ledger.lock:
            expected = {h: dict(v) for h, v in ledger.acked.items()}
            batches = [list(b) for b in ledger.batches]
        got = resolve_all(node.port, sorted(set(expected) | {h for b in batches for h in b}))
        lost = {h: (want, got[h]) for h, want in expected.items() if got[h] is None or
                any(got[h].get(i) != text for i, text in want.items())}
        assert not lost, f"acknowledged writes lost after SIGKILL: {dict(list(lost.items())[:5])}"
        for b in batches:
            present = [got[h] is not None for h in b]
            assert all(present) or not any(present), f"batch half-applied: {b[0]}.. {present}"

    for round_no in range(ROUNDS):
        node = start(round_no)
        if round_no:
            verify(node)
        writer = Writer(node.port, ledger, round_no)
        with ledger.lock:
            target = ledger.ops + 30 + 7 * round_no  # kill at a different point of the stream each round
        writer.start()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and writer.is_alive():
            with ledger.lock:
                if ledger.ops >= target:
                    break
            writer.join(timeout=0.005)  # poll the writer's progress, bounded by the deadline
        node.kill()  # SIGKILL, mid-stream: the writer is still sending
        writer.stop.set()
        writer.join(timeout=10)
        assert not writer.is_alive()
        assert writer.error is None, writer.error
        assert not writer.unexpected, writer.unexpected[:3]
        assert ledger.ops >= target - 1, f"round {round_no}: only {ledger.ops} writes before the deadline"

    final = start(ROUNDS)
    verify(final)
    assert len(ledger.acked) >= ROUNDS * 20
    assert final.stop() == 0
