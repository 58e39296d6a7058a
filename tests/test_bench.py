"""``idresolve bench``: short bounded runs as a user would start them, the load client's framing, and the
resolution fast path the benchmark drove into ``http/app.py``.

Nothing here asserts on speed (the machine is shared): only that every figure exists, is sane, and that
bad input is refused cleanly.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from idresolve.bench import targets
from idresolve.bench.httpload import HttpConnection, LoadError
from idresolve.bench.procs import idresolve_argv
from idresolve.cli.main import main
from idresolve.client.rest import RestClient

RUN_TIMEOUT_S = 180


def test_the_largest_batch_the_bench_sends_is_one_a_node_takes() -> None:
    """``bench batch --batch-size`` stops at bench.config.MAX_BATCH: a node registers a batch of exactly
    that many identifiers (the bench's own workload) and refuses one more."""
    from idresolve.bench.config import MAX_BATCH as BENCH_MAX
    from idresolve.bench.workload import core_values, handles
    from idresolve.core.errors import PeerError
    from idresolve.nodes.auth import parse_identity
    from idresolve.nodes.authoritative import AuthoritativeNode
    from idresolve.nodes.bootstrap import prefix_record
    from idresolve.store.memory import MemoryStore

    node = AuthoritativeNode(MemoryStore(), ["88.100"], name="batch-limit")
    node.bootstrap_record(prefix_record("88.100", "s"))
    caller = node.authenticate(parse_identity("300:0.NA/88.100"), b"s")
    names = handles(BENCH_MAX + 1, "L")
    with pytest.raises(PeerError, match=f"at most {BENCH_MAX}"):
        node.batch_create([(h, core_values(h)) for h in names], caller=caller, now=0)
    node.batch_create([(h, core_values(h)) for h in names[:BENCH_MAX]], caller=caller, now=0)
    assert node.store.count() == BENCH_MAX + 1  # the batch, and the prefix record
    with pytest.raises(SystemExit):
        main(["bench", "batch", "--batch-size", str(BENCH_MAX + 1)])


def bench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(idresolve_argv("bench", *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          cwd=cwd)


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and x > 0


@pytest.mark.parametrize("args", [
    ["rest", "--connections", "0"],
    ["rest", "--connections", "-3"],
    ["rest", "--duration", "0"],
    ["rest", "--duration", "-1"],
    ["rest", "--duration", "nan"],
    ["rest", "--repeats", "0"],
    ["batch", "--identifiers", "0"],
    ["batch", "--batch-size", "2001"],
    ["suite", "--duration", "abc"],
])
def test_bad_numbers_are_refused_with_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --" in err
    assert "must be" in err or "is not" in err


def test_bad_numbers_from_the_command_line_give_no_traceback() -> None:
    res = bench("rest", "--connections", "0", "--duration", "5")
    assert res.returncode == 2
    assert "error: argument --connections: must be between 1" in res.stderr
    assert "Traceback" not in res.stderr


def _check_rest(rest: dict[str, Any]) -> None:
    for who in ("node", "baseline"):
        m = rest[who]["median"]
        assert _positive(m["rate_per_s"]), m
        assert 0 < m["p50_us"] <= m["p90_us"] <= m["p99_us"] <= m["max_us"], m
        assert m["errors"] == m["shed_503"]  # anything but load shedding fails the run
        assert m["runs"] == len(rest[who]["runs"]) >= 1
        assert _positive(m["client_cpu_us_per_req"])
    assert _positive(rest["ratio"])
    (target,) = targets.rest_batch_targets(rest=rest)  # the verdict follows the figure
    assert (target["value"], target["limit"]) == (rest["ratio"], rest["target_ratio"])
    assert target["status"] == ("PASS" if rest["ratio"] >= rest["target_ratio"] else "FAIL")
    assert len(rest["pair_ratios"]) == rest["config"]["repeats"]
    assert rest["body_bytes"] > 0


def test_bench_rest_short_run(tmp_path: Path) -> None:
    out = tmp_path / "rest.json"
    res = bench("rest", "--load", "python", "--duration", "1", "--repeats", "1", "--connections", "4", "--warmup", "0.2",
                "--handles", "50", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "ratio node/baseline (requests/s):" in res.stdout
    assert "bare aiohttp" in res.stdout and "share this machine" in res.stdout
    assert "rest: run 1/1 node" in res.stderr  # progress goes to stderr
    report = json.loads(out.read_text())
    assert report["kind"] == "rest"
    _check_rest(report["rest"])
    env = report["environment"]
    assert env["python"]["version"] and env["cpu_model"] and env["packages"]["aiohttp"]


def _check_batch(batch: dict[str, Any], identifiers: int) -> None:
    for path in ("core", "rest", "binary", "raw_sqlite"):
        assert _positive(batch[path]["median_ids_per_s"]), batch[path]
        assert all(_positive(r) for r in batch[path]["runs_ids_per_s"])
    assert _positive(batch["ratio_core_raw"]) and _positive(batch["ratio_rest_raw"])
    assert _positive(batch["ratio_binary_raw"]) and batch["config"]["clients"] >= 1
    assert batch["config"]["identifiers"] == identifiers
    for t, path in zip(targets.rest_batch_targets(batch=batch), ("core", "rest"), strict=True):
        rate = batch[path]["median_ids_per_s"]
        assert t["value"] == rate and t["status"] == ("PASS" if rate >= batch["target_ids_per_s"] else "FAIL")
    assert len(batch["rest"]["shed_503_per_run"]) == batch["config"]["repeats"]


def test_bench_batch_short_run(tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    res = bench("batch", "--identifiers", "300", "--batch-size", "100", "--repeats", "1", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "identifiers/s" in res.stdout and "raw sqlite3" in res.stdout
    assert res.stderr == ""  # --quiet
    report = json.loads(out.read_text())
    _check_batch(report["batch"], 300)


def test_bench_suite_writes_report_to_default_place(tmp_path: Path) -> None:
    res = bench("suite", "--duration", "0.5", "--repeats", "1", "--connections", "2", "--warmup", "0",
                "--handles", "20", "--identifiers", "200", "--batch-size", "100", "--batch-repeats", "1",
                "--skip-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    reports = list((tmp_path / "bench-results").glob("*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["kind"] == "suite"
    _check_rest(report["rest"])
    _check_batch(report["batch"], 200)
    assert report["environment"]["timestamp"] and report["environment"]["python"]["implementation"]
    assert "ratio node/baseline" in res.stdout and "batch: ratio core/raw" in res.stdout
    assert f"report written to {Path('bench-results') / reports[0].name}" in res.stdout


# -- the load client's framing ----------------------------------------------------------------------------

class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


RESP_A = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
RESP_B = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nServer: x\r\n\r\n{}"
RESP_C = b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
async def test_client_frames_pipelined_answers_in_any_pieces(step: int) -> None:
    got: list[tuple[int, bytes | None, int]] = []
    conn = HttpConnection(lambda s, b, t: got.append((s, b, t)), keep_bodies=True)
    conn.connection_made(FakeTransport())
    for i in range(3):
        conn.send(b"GET / HTTP/1.1\r\n\r\n", i)
    stream = RESP_A + RESP_B + RESP_C
    for i in range(0, len(stream), step):
        conn.data_received(stream[i:i + step])
    assert got == [(200, b'{"a":1}', 0), (404, b"{}", 1), (204, b"", 2)]
    assert conn.error is None and not conn.in_flight


@pytest.mark.parametrize(("garbage", "asked"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    (b"SMTP ready\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),  # an answer nobody asked for
])
async def test_client_fails_loudly_on_what_it_cannot_frame(garbage: bytes, asked: bool) -> None:
    conn = HttpConnection(lambda s, b, t: None)
    transport = FakeTransport()
    conn.connection_made(transport)
    if asked:
        conn.send(b"GET / HTTP/1.1\r\n\r\n", 0)
    conn.data_received(garbage)
    assert isinstance(conn.error, LoadError)
    assert transport.closing


# -- the resolution fast path: same bytes, and writes are seen at once ----------------------------------------

def _raw_get(url: str, path: str) -> tuple[int, bytes, list[tuple[str, str]]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, [(k, v) for k, v in resp.getheaders() if k.lower() != "date"]
    finally:
        conn.close()


async def test_repeated_resolutions_give_the_same_bytes_and_see_writes(live_node) -> None:
    def flow() -> None:
        with RestClient(live_node.url, identity="300:0.NA/88.100", secret=live_node.secret) as c:
            assert c.put("88.100/Fast1", [{"index": 1, "type": "URL", "data": "https://a.example"}]).status == 201
            first = _raw_get(live_node.url, "/api/handles/88.100/Fast1")
            again = _raw_get(live_node.url, "/api/handles/88.100/Fast1")
            assert first[0] == 200 and first == again
            other = _raw_get(live_node.url, "/api/handles/88.100/fast1")
            assert b'"handle":"88.100/fast1"' in other[1]  # each spelling is echoed
            encoded = _raw_get(live_node.url, "/api/handles/88.100/%46ast1")
            assert encoded[1] == first[1]
            assert c.put("88.100/Fast1", [{"index": 1, "type": "URL", "data": "https://b.example"},
                                          {"index": 2, "type": "DESC", "data": "changed"}],
                         indexes=[1, 2]).status == 201
            for path in ("/api/handles/88.100/Fast1", "/api/handles/88.100/fast1", "/api/handles/88.100/%46ast1"):
                status, body, _ = _raw_get(live_node.url, path)
                assert status == 200 and b"b.example" in body and b"a.example" not in body
            assert _raw_get(live_node.url, "/api/handles/88.100/Fast1?type=DESC")[1].count(b'"index"') == 1
            assert c.delete("88.100/FAST1").status == 200
            for path in ("/api/handles/88.100/Fast1", "/api/handles/88.100/fast1"):
                assert _raw_get(live_node.url, path)[0] == 404

    await asyncio.to_thread(flow)
