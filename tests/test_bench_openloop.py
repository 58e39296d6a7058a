"""``idresolve bench run`` and ``bench compare``: the open-loop generator, its arithmetic, and short bounded
runs against a minimal cluster (started by the bench, or by the test with ``idresolve up``) whose reports
must exist and agree with the servers' own counters.

Nothing here asserts on speed: only that figures exist, are consistent with each other and with what
the nodes counted, and that bad input ends with a clear message and no traceback.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from clusterutil import CONFIG, IDRESOLVE, MINIMAL, Proc, cli_env, spawn, stop_proc
from idresolve.bench import htmlreport, targets
from idresolve.bench.binload import BinaryWorkload, connect_binary
from idresolve.bench.cluster import free_base_port
from idresolve.bench.compare import compare
from idresolve.bench.echo import EchoProtocol
from idresolve.bench.expect import ExpectationError, PathExpectation
from idresolve.bench.loadgen import ClosedDriver, Recorder, open_loop
from idresolve.bench.procs import idresolve_argv
from idresolve.bench.scenarios import drifting, kill_analysis, latency_drift, saturation, sustained
from idresolve.bench.scrape import counts, crosscheck, delta, parse
from idresolve.cli.main import main
from idresolve.core.codes import OpCode
from idresolve.core.latency import LatencyModel
from idresolve.core.messages import FLAG_AUTHORITATIVE, Request, Response
from idresolve.core.topology import load_topology
from idresolve.core.values import string_value
from idresolve.core.wire import Codec, answer_head, decode_message

RUN_TIMEOUT_S = 240


def bench(*args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(idresolve_argv("bench", *args), capture_output=True, text=True, timeout=timeout,
                          env=cli_env())


# -- the wire side of the generator --------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [0, FLAG_AUTHORITATIVE])
def test_workload_frames_decode_to_the_request_with_the_spliced_id(flags: int) -> None:
    wl = BinaryWorkload(["88.118.8/A1", "88.118.9/Ä-ü"], flags)
    for i, rid in ((0, 1), (1, 0xFFFFFFFF), (2, 77)):
        frame = wl.frame(i, rid)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        msg = decode_message(frame[4:])
        assert msg == Request(rid, OpCode.RESOLUTION, wl.handles[i % 2], flags)


@pytest.mark.parametrize("rid", [0, 5, 127, 128, 255, 256, 65535, 65536, 2**32 - 1])
@pytest.mark.parametrize("code", [1, 3, 100, 303])
def test_answer_head_reads_id_and_code_without_decoding(rid: int, code: int) -> None:
    codec = Codec()
    resp = Response(rid, OpCode.RESOLUTION, code, "88.118.8/x", values=(string_value(1, "URL", "https://a"),))
    assert answer_head(codec.encode(resp)) == (rid, code)
    tail = codec.response_tail(Response(0, OpCode.RESOLUTION, code, "h"))
    assert answer_head(codec.payload_with_tail(rid, tail)) == (rid, code)


def test_answer_head_refuses_what_is_not_an_answer() -> None:
    with pytest.raises(ValueError):
        answer_head(Codec().encode(Request(1, OpCode.RESOLUTION, "88.1/x")))
    with pytest.raises((ValueError, IndexError)):
        answer_head(b"\x96\x01\xce\x00")


def test_recorder_counts_successes_errors_and_late_answers() -> None:
    rec = Recorder([1], timeout_s=0.5, slice_s=0.1)
    t0 = 1_000_000_000
    rec.start(t0)
    rec.record(1, t0, t0 + 2_000)  # 2 us
    rec.record(3, t0, t0 + 5_000)  # an error answer
    rec.record(1, t0, t0 + 900_000_000)  # later than the timeout: a timeout, not a success
    rec.timed_out(2, t0 + 150_000_000)
    res = rec.result(mode="open")
    assert res["ok"] == 1 and res["errors"] == 1 and res["timeouts"] == 3
    assert res["codes"] == {"1": 2, "3": 1}
    assert res["latency_ok"]["count"] == 1 and res["latency_ok"]["p50_us"] == 2  # the successes only
    # Every request: 2 us, 5 us (the error), 900 ms (late) and the two that timed out at 500 ms.
    assert res["latency"]["count"] == 5
    assert res["latency"]["mean_us"] == pytest.approx((2 + 5 + 900_000 + 2 * 500_000) / 5, rel=1e-3)
    assert res["latency"]["p50_us"] == pytest.approx(500_000, rel=1e-3)
    assert res["latency"]["max_us"] == pytest.approx(900_000, rel=1e-3)
    assert [r["ok"] for r in res["timeline"]][:1] == [1]
    assert sum(r["timeouts"] for r in res["timeline"]) == 3


async def _echo_server() -> tuple[asyncio.AbstractServer, int]:
    codec = Codec()
    tail = codec.response_tail(Response(0, OpCode.RESOLUTION, 1, "88.1/x"))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoProtocol(tail, codec), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _open_loop_against_echo(handles: list[str], connections: int, rate: float,
                                  duration_s: float) -> tuple[dict[str, Any], list[Any]]:
    """An open-loop run against the echo server: (the result, the closed connections)."""
    server, port = await _echo_server()
    try:
        rec = Recorder([1], timeout_s=2.0, slice_s=0.1)
        wl = BinaryWorkload(handles)
        conns = [await connect_binary("127.0.0.1", port, rec, wl) for _ in range(connections)]
        await open_loop(conns, rec, rate=rate, duration_s=duration_s, work_len=len(wl), timeout_s=2.0)
        for c in conns:
            c.close()
        await asyncio.gather(*(c.closed for c in conns))
    finally:
        server.close()
        await server.wait_closed()
    return rec.result(), conns


async def test_open_loop_sends_on_schedule_and_counts_every_answer() -> None:
    res, conns = await _open_loop_against_echo([f"88.1/x{i}" for i in range(10)], 3, rate=400, duration_s=0.5)
    assert res["sent"] == 200 and res["ok"] == 200  # the count bound: rate x duration, exactly
    assert res["errors"] == res["timeouts"] == res["lost"] == 0
    assert 0 < res["latency"]["p50_us"] <= res["latency"]["p99_us"] <= res["latency"]["max_us"]
    assert res["send_lag"]["p50_us"] >= 0
    assert sum(r["sent"] for r in res["timeline"]) == 200
    assert res["distribution"][-1][0] == 100.0
    assert all(c.after_read is None for c in conns)  # the driver's pump is detached after the run


async def test_the_pump_sends_only_what_is_due() -> None:
    """Answers call the driver's pump; a pump between two due times sends nothing, so the count and
    the schedule stay exact however often answers arrive."""
    res, _ = await _open_loop_against_echo(["88.1/x"], 1, rate=2000, duration_s=0.3)
    assert res["sent"] == res["ok"] == 600


async def test_closed_loop_keeps_depth_in_flight_and_stops_at_the_count() -> None:
    server, port = await _echo_server()
    try:
        rec = Recorder([1], timeout_s=2.0)
        wl = BinaryWorkload(["88.1/x"])
        driver = ClosedDriver(rec, depth=4, duration_s=5.0, max_requests=300, work_len=1)
        conns = [await connect_binary("127.0.0.1", port, rec, wl, on_answer=driver.on_answer) for _ in range(2)]
        await driver.run(conns)
        for c in conns:
            c.close()
        await asyncio.gather(*(c.closed for c in conns))
    finally:
        server.close()
        await server.wait_closed()
    res = rec.result()
    assert res["sent"] == res["ok"] == 300


async def test_a_server_that_goes_away_ends_the_run_with_a_reason() -> None:
    server, port = await _echo_server()
    rec = Recorder([1], timeout_s=1.0)
    wl = BinaryWorkload(["88.1/x"])
    conns = [await connect_binary("127.0.0.1", port, rec, wl)]
    loop = asyncio.get_running_loop()

    def drop() -> None:  # the server stops listening and the connection breaks
        server.close()
        conns[0].close()

    loop.call_later(0.2, drop)
    await open_loop(conns, rec, rate=200, duration_s=3.0, work_len=1, timeout_s=1.0)
    await server.wait_closed()
    res = rec.result()
    assert "aborted" in res and "stopped there" in res["aborted"]
    assert res["not_sent"] > 0 and res["sent"] + res["not_sent"] == 600


# -- the optimizations the benchmark drove: same answers, same bytes ----------------------------------------------

def _site(port: int) -> Any:
    from idresolve.core.site import Interface, Server, SiteInfo

    return SiteInfo((Server(1, "127.0.0.1", (Interface("TCP", port),)),), attributes=(("name", f"sec{port}"),))


def test_referrals_come_from_the_encoded_cache_and_follow_prefix_changes() -> None:
    from dataclasses import replace

    from idresolve.core.wire_connection import ServerConnection
    from idresolve.net.services import AuthoritativeService
    from idresolve.nodes.authoritative import AuthoritativeNode
    from idresolve.nodes.bootstrap import prefix_record
    from idresolve.store.memory import MemoryStore

    top = AuthoritativeNode(MemoryStore(), ["88"], name="top")
    top.bootstrap_record(prefix_record("88.118", "s", site=_site(1000), now=1.0))
    seen: list[int] = []
    svc = AuthoritativeService(top, observe=lambda _op, code, _s: seen.append(code))
    first = svc.handle(Request(1, OpCode.RESOLUTION, "88.118.8/X"))
    assert first.code == 303
    cached = svc.cached("88.118.8/X")  # the node keeps the referral it answered
    assert cached is not None and cached.code == 303
    conn = ServerConnection()
    again = conn.answer_cached(2, "88.118.8/X", cached)
    assert int.from_bytes(again[:4], "big") == len(again) - 4
    assert decode_message(again[4:]) == replace(first, request_id=2)  # the same answer, under its own id
    assert seen == [303] and svc.cached_counts == {303: 1}  # counted under its own code, cached or not
    top.bootstrap_record(prefix_record("88.118", "s", site=_site(2000), now=2.0))  # the secondary moved
    assert svc.cached("88.118.8/X") is None
    moved = svc.handle(Request(3, OpCode.RESOLUTION, "88.118.8/X"))
    assert moved.code == 303 and moved.values != first.values


def test_decoding_a_response_seen_before_gives_what_decoding_gives() -> None:
    codec = Codec()
    resp = Response(0, OpCode.RESOLUTION, 303, "0.NA/88.118", values=(string_value(1, "URL", "https://a"),))
    for rid in (1, 200, 70_000, 2**32 - 1, 1):
        payload = codec.encode(Response(rid, resp.opcode, resp.code, resp.handle, values=resp.values))
        assert decode_message(payload) == Response(rid, resp.opcode, resp.code, resp.handle, values=resp.values)
    assert decode_message(codec.encode(Request(9, OpCode.RESOLUTION, "88.1/x", 4))) == Request(
        9, OpCode.RESOLUTION, "88.1/x", 4)


async def test_pipelined_answers_leave_in_order_in_fewer_writes() -> None:
    from idresolve.net.server import start_tcp

    class Svc:
        name = "t"
        admission = None

        def handle(self, req: Request) -> Response:
            return Response(req.request_id, req.opcode, 1, req.handle)

    server = await start_tcp(Svc(), "127.0.0.1", 0)  # type: ignore[arg-type]
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        codec = Codec()
        writer.write(b"".join(codec.frame(Request(i, OpCode.RESOLUTION, f"88.1/{i}")) for i in range(1, 51)))
        await writer.drain()
        want = b"".join(codec.frame(Response(i, OpCode.RESOLUTION, 1, f"88.1/{i}")) for i in range(1, 51))
        got = await asyncio.wait_for(reader.readexactly(len(want)), 10)
        assert got == want
    finally:
        writer.close()
        await writer.wait_closed()
        await server.close(1.0)


# -- the arithmetic -------------------------------------------------------------------------------------------

def test_saturation_is_the_highest_rate_kept_up() -> None:
    steps = [{"offered_per_s": 100, "rate_per_s": 100, "sent": 100},
             {"offered_per_s": 200, "rate_per_s": 199, "sent": 200},
             {"offered_per_s": 300, "rate_per_s": 240, "sent": 300},
             {"offered_per_s": 400, "rate_per_s": 400, "sent": 400, "timeouts": 3}]
    assert [sustained(s) for s in steps] == [True, True, False, False]
    assert saturation(steps) == 200
    assert saturation([{"offered_per_s": 100, "rate_per_s": 50, "sent": 1}]) == 50


def test_a_step_whose_latency_keeps_rising_did_not_keep_up() -> None:
    def row(p50: int | None) -> dict[str, int | None]:
        return {"p50_us": p50}

    rising = latency_drift([row(200), row(900), row(3000), row(9000), row(20000), row(41000)])
    assert rising == {"first_p50_us": 900, "last_p50_us": 41000} and drifting(rising)
    steady = latency_drift([row(200), row(260), row(None), row(180), row(240), row(300)])
    assert steady is not None and not drifting(steady)
    settling = latency_drift([row(7000), row(900), row(600), row(500), row(550), row(580)])
    assert not drifting(settling)  # a start-up burst that drains is not a backlog
    assert not drifting(latency_drift([row(60), row(70), row(900)]))  # under 1 ms of rise: noise
    assert latency_drift([row(100), row(None)]) is None
    step = {"offered_per_s": 300, "rate_per_s": 297, "sent": 450}
    assert sustained(step) and not sustained({**step, "drift": rising})


def test_kill_analysis_splits_before_and_after() -> None:
    slices = [[10, 10, 0, 0, {100: 10}], [10, 10, 0, 0, {120: 10}], [10, 5, 2, 3, {900: 5}],
              [10, 10, 0, 0, {150: 10}], [10, 10, 0, 0, {160: 10}]]
    a = kill_analysis(slices, 0.5, 1.0)
    assert a["killed"] and a["errors_after"] == 2 and a["timeouts_after"] == 3
    assert a["before"]["ok"] == 10 and a["recovery_s"] == 0.5
    assert a["steady_after"]["p50_us"] == 160
    assert kill_analysis(slices, 0.5, None) == {"killed": False}


SHANDONG = CONFIG / "shandong.toml"


def test_the_path_expectation_sums_round_trips_over_the_identifiers_path() -> None:
    pm = PathExpectation.from_file(MINIMAL, "rec-jinan")
    assert pm.first_top == "top-beijing"  # the primary (not disaster-recovery) top-level node
    own = pm.hops("88.118.8/X")  # enterprise with its own node: three round trips
    hosted = pm.hops("88.118.9/X")  # hosted by its secondary node: two
    assert set(own) == {"top", "secondary", "enterprise"} and set(hosted) == {"top", "secondary"}
    assert own["top"] == pytest.approx(30.2)  # inter-provincial: 30 ms round trip + 2 x 0.1 ms per hop
    # Jinan -> Qingdao is 299.3 km in a straight line: x 1.5 route factor x 5 us/km + 0.1 ms, each way.
    assert own["secondary"] == own["enterprise"] == pytest.approx(2 * (299.26 * 1.5 * 0.005 + 0.1), abs=0.002)
    assert pm.expected_mean_ms(["88.118.8/X", "88.118.9/X"], 4) == pytest.approx((sum(own.values()) +
                                                                                 sum(hosted.values())) / 2)
    assert pm.expected_mean_ms(["88.118.8/X", "88.118.9/X"], 3, offset=1) == pytest.approx(
        (2 * sum(hosted.values()) + sum(own.values())) / 3)  # requests 1, 2, 3: hosted, own, hosted
    before = PathExpectation.from_file(MINIMAL, "rec-jinan", scenario="before-interconnect")
    assert before.hops("88.118.9/X")["top"] == pytest.approx(39.2)
    off = PathExpectation.from_file(MINIMAL, "rec-jinan", latency="off")
    assert off.expected_ms("88.118.8/X") == 0.0
    with pytest.raises(ExpectationError):
        PathExpectation.from_file(MINIMAL, "rec-jinan", scenario="no-such-scenario")


def test_the_benchmarks_expectation_and_the_injected_model_agree_on_every_shandong_path() -> None:
    """Two implementations of the documented model, one in the benchmark (from the file) and one in the
    code that injects the delays: they agree on every pair of nodes of the Shandong topology."""
    topo = load_topology(SHANDONG)
    model = LatencyModel.for_topology(topo)
    for rec in topo.nodes_by_role("recursive"):
        pm = PathExpectation.from_file(SHANDONG, rec.name)
        for node in topo.running_nodes():
            if node.role != "recursive":
                assert pm.rtt_ms(node.name) == pytest.approx(model.round_trip_ms(rec.location, node.location),
                                                             abs=1e-9), (rec.name, node.name)


METRICS_BEFORE = """# HELP idresolve_requests_total Requests answered
idresolve_requests_total{code="1",op="resolution",surface="binary"} 10.0
idresolve_requests_total{code="200",op="GET /api/handles/{handle}",surface="rest"} 4.0
idresolve_cache_hits_total 10.0
idresolve_shed_rate_total 0.0
"""
METRICS_AFTER = METRICS_BEFORE.replace("} 10.0", "} 110.0").replace("hits_total 10.0", "hits_total 110.0")


def test_metrics_deltas_and_the_cross_check() -> None:
    d = delta({"r": parse(METRICS_BEFORE)}, {"r": parse(METRICS_AFTER), "gone": None})
    c = counts(d["r"])
    assert c is not None and c["binary"] == {"1": 100} and c["cache_hits"] == 100 and c["rest"] == {}
    assert d["gone"] is None
    agree = crosscheck({"codes": {"1": 100}, "sent": 100, "ok": 100}, "binary", c, expect_cache_hits=True)
    assert agree["verdict"] == "agree"
    late = crosscheck({"codes": {"1": 90}, "sent": 100, "ok": 90}, "binary", c, expect_cache_hits=True)
    assert late["verdict"] == "consistent"
    wrong = crosscheck({"codes": {"1": 150}, "sent": 150, "ok": 150}, "binary", c, expect_cache_hits=None)
    assert wrong["verdict"] == "DISAGREE" and wrong["problems"]
    cold = crosscheck({"codes": {"1": 100}, "sent": 100, "ok": 100}, "binary", c, expect_cache_hits=False)
    assert cold["verdict"] == "DISAGREE"  # a "cold" run that the cache answered
    assert crosscheck({}, "binary", None, expect_cache_hits=None)["verdict"] == "unavailable"


# -- bench compare -----------------------------------------------------------------------------------------------

def _report(rate: float, p99: float, spread: float | None = None) -> dict[str, Any]:
    fig = {"value": rate, "unit": "1/s", "better": "higher"}
    if spread is not None:
        fig["spread"] = spread
    return {"kind": "run", "figures": {"cached.binary.node.closed.rate_per_s": fig,
                                       "cached.binary.node.closed.p99_us": {"value": p99, "unit": "us", "better": "lower"},
                                       "cached.binary.node.closed.p50_us": {"value": 100, "unit": "us", "better": "lower"}}}


def test_compare_flags_changes_beyond_noise_only() -> None:
    rows = {r["figure"].rsplit(".", 1)[1]: r for r in compare(_report(1000, 500), _report(1500, 2000))}
    assert rows["rate_per_s"]["verdict"] == "FASTER" and rows["rate_per_s"]["ratio"] == 1.5
    assert rows["p99_us"]["verdict"] == "SLOWER"
    assert rows["p50_us"]["verdict"] == "same"
    noisy = {r["figure"].rsplit(".", 1)[1]: r for r in compare(_report(1000, 500, 0.6), _report(1500, 500))}
    assert noisy["rate_per_s"]["verdict"] == "same"  # within the spread measured over repeats


def test_bench_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_report(1000, 500)))
    b.write_text(json.dumps(_report(800, 500)))
    assert main(["bench", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "SLOWER" in out and "cached.binary.node.closed.rate_per_s" in out and "0.800" in out
    old = {"kind": "rest", "rest": {"node": {"median": {"rate_per_s": 10.0}}, "baseline": {"median": {"rate_per_s": 20.0}},
                                    "ratio": 0.5}}
    a.write_text(json.dumps(old))
    b.write_text(json.dumps({**old, "rest": {**old["rest"], "node": {"median": {"rate_per_s": 20.0}}}}))
    assert main(["bench", "compare", str(a), str(b), "--all"]) == 0
    assert "rest.node.rate_per_s" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["not json", json.dumps({"no": "kind"})])
def test_bench_compare_refuses_what_is_not_a_report(tmp_path: Path, content: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.json"
    a.write_text(content)
    assert main(["bench", "compare", str(a), str(a)]) == 2
    assert "error:" in capsys.readouterr().err


# -- bad options ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["run", "--rate", "-5"],
    ["run", "--rate", "0"],
    ["run", "--rate", "many"],
    ["run", "--duration", "0"],
    ["run", "--duration", "-2"],
    ["run", "--repeats", "0"],
    ["run", "--connections", "0"],
    ["run", "--timeout", "0"],
    ["run", "--scenario", "warm"],
    ["run", "--protocol", "udp"],
    ["run", "--sweep-fractions", "0,1"],
    ["compare", "only-one.json"],
])
def test_impossible_run_options_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", *args])
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_options_from_the_command_line_give_no_traceback(tmp_path: Path) -> None:
    for args in (["run", "--rate", "-1"], ["run", "--duration", "0"], ["run", "--data-dir", str(tmp_path / "none")],
                 ["run", "--topology", str(tmp_path / "missing.toml"), "--quiet"],
                 ["run", "--node", "top-beijing", "--quiet"], ["compare", str(tmp_path / "a"), str(tmp_path / "b")]):
        res = bench(*args, timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        assert "error" in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)


def test_targets_say_what_was_not_measured() -> None:
    ts = targets.targets({"results": [], "clusters": []})
    assert [t["id"] for t in ts] == ["T1", "T2", "T3", "H2", "H3", "H4"]  # T1 is H1: reported once
    assert all(t["status"] == "NOT RUN" and t["met"] is None and t["value"] is None for t in ts)
    text = targets.targets_text(ts)
    assert text.count("[NOT RUN]") == 6 and "not measured" in text
    assert targets.problems({"targets": ts, "results": []}) == []  # nothing asked, nothing failed


def test_html_charts_are_well_formed_svg() -> None:
    dist = [[0.0, 10], [50.0, 20], [90.0, 40], [99.0, 80], [100.0, 200]]
    svg = htmlreport.percentile_chart([("a", {"distribution": dist}), ("b", {"distribution": dist[:2]})], "t")
    ET.fromstring(svg)
    sweep = {"node": {"steps": [{"rate_per_s": 10, "flat": {"p50_us": 5, "p99_us": 9}},
                                {"rate_per_s": 20, "flat": {"p50_us": 6, "p99_us": 30}}]}}
    ET.fromstring(htmlreport.sweep_chart(sweep, "s"))
    ET.fromstring(htmlreport.trace_chart({"roles": {"top": {"mean_us": 10, "model_us": 9, "per_resolution": 1}}}, "t"))
    assert "no data" in htmlreport.line_chart([("x", [])], x_label="a", y_label="b")


# -- short runs against a minimal cluster the bench starts ----------------------------------------------------------

def _svgs(html: str) -> int:
    n = 0
    for m in re.finditer(r"<svg.*?</svg>", html, re.S):
        ET.fromstring(m.group(0))
        n += 1
    return n


def _check_outputs(out: Path) -> dict[str, Any]:
    rep = json.loads(out.read_text())
    assert rep["kind"] == "run"
    env = rep["environment"]
    assert env["python"]["version"] and env["packages"]["msgpack"] and env["cpu_model"]
    assert env["topologies"] == ["minimal"] and len(env["config_hashes"][0]) == 64
    with out.with_suffix(".csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["figure", "value", "unit"]
    by_name = {r[0]: r[1] for r in rows[1:]}
    for name, fig in rep["figures"].items():
        assert float(by_name[name]) == pytest.approx(float(fig["value"]))
    html = out.with_suffix(".html").read_text()
    assert "<h2>Targets</h2>" in html and _svgs(html) >= 1
    return rep


def _node_runs(r: dict[str, Any]) -> list[dict[str, Any]]:
    runs = list(r.get("runs", {}).get("node", []))
    sw = r.get("sweep")
    if sw:
        runs.append(sw["node"]["half"])
    if r.get("kill"):
        runs.append(r["kill"]["run"])
    return runs


def _check_agreement(run: dict[str, Any], protocol: str) -> None:
    x = run["crosscheck"]
    assert x["verdict"] in ("agree", "consistent"), x
    assert x["client_answers"] == run["answered"]
    assert sum(x["server_codes"].values()) == x["server_answers"] >= run["ok"]
    code = "1" if protocol == "binary" else "200"
    assert x["server_codes"].get(code, 0) >= run["ok"] > 0


def test_run_binary_and_rest_at_a_fixed_rate(tmp_path: Path) -> None:
    out = tmp_path / "fixed.json"
    res = bench("run", "--scenario", "cached", "--protocol", "both", "--rate", "300", "--duration", "1",
                "--identifiers", "60", "--warmup", "0", "--check", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert "cached/binary/rate: run 1/1 node" in res.stderr  # progress on stderr
    assert "targets (PASS/FAIL" in res.stdout and "[NOT RUN] T1" in res.stdout and "[N/A] H3" in res.stdout
    assert "check: every target measured and met, every server counter agrees" in res.stdout
    rep = _check_outputs(out)
    assert [(r["scenario"], r["protocol"], r["mode"]) for r in rep["results"]] == [
        ("cached", "binary", "rate"), ("cached", "rest", "rate")]
    for r in rep["results"]:
        assert set(r["median"]) == {"node", "baseline"} and r["ratios"]["rate_per_s"] > 0
        node = r["runs"]["node"][0]
        assert node["offered_per_s"] == 300 and node["sent"] == 300 and node["ok"] == 300
        assert node["cpu"]["server_s"] >= 0
        _check_agreement(node, r["protocol"])
        assert node["crosscheck"]["server_cache_hits"] >= node["ok"]  # cached: every answer from the cache
        assert r["runs"]["baseline"][0]["ok"] == 300
    cluster = rep["clusters"][0]
    assert cluster["own"] and cluster["ready_s"] > 0 and cluster["rss_ready"]["total_bytes"] > 0
    assert cluster["latency"] == "off"


def test_run_tiny_sweep(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    res = bench("run", "--scenario", "cached", "--sweep", "--step", "0.3", "--sweep-fractions", "0.05,0.1",
                "--duration", "0.5", "--identifiers", "40", "--warmup", "0", "--no-baselines", "--quiet",
                "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr == ""
    rep = _check_outputs(out)
    sw = rep["results"][0]["sweep"]["node"]
    assert len(sw["steps"]) >= 2 and sw["saturation_per_s"] > 0
    assert [s["fraction"] for s in sw["steps"]][:2] == [0.05, 0.1]
    for s in sw["steps"]:
        assert s["crosscheck"]["verdict"] in ("agree", "consistent")
    assert sw["half"]["offered_per_s"] == pytest.approx(sw["saturation_per_s"] / 2, rel=0.01)
    _check_agreement(sw["half"], "binary")
    assert "cached.binary.node.sweep.saturation_per_s" in rep["figures"]
    assert any(t["id"] == "T2" and t["value"] is not None for t in rep["targets"])


def test_run_cold_with_traces_and_a_killed_top_level_node(tmp_path: Path) -> None:
    out = tmp_path / "cold.json"
    res = bench("run", "--scenario", "cold", "--scenario", "kill-top", "--rate", "150", "--duration", "2",
                "--identifiers", "40", "--warmup", "0", "--trace-sample", "20", "--no-baselines", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rep = _check_outputs(out)
    cold, kill = rep["results"]
    node = cold["runs"]["node"][0]
    _check_agreement(node, "binary")
    assert node["crosscheck"]["server_cache_hits"] == 0 and node["crosscheck"]["server_upstream"] >= 2 * node["ok"]
    roles = node["server_by_role"]
    assert roles["top"]["answered"] == node["ok"] and roles["secondary"]["answered"] == node["ok"]
    trace = cold["trace"]
    assert trace["samples"] == 20 and set(trace["roles"]) >= {"top", "secondary", "recursive + client"}
    assert trace["roles"]["top"]["per_resolution"] == 1.0
    k = kill["kill"]
    assert k["victim"] == "top-beijing" and k["fired_s"] is not None and not k["error"]
    assert k["analysis"]["killed"] and k["analysis"]["after"]["ok"] > 0
    assert k["trace_after"]["first_top"] == {"top-nanjing": 20}  # the recursive node moved on
    assert k["run"]["server_by_node"]["top-beijing"] is None  # dead: no metrics
    assert k["run"]["server_by_node"]["top-nanjing"] > 0
    assert "recovered" in res.stdout


def test_suite_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    res = bench("suite", "--run-only", "--topology", "minimal", "--run-duration", "0.3", "--run-repeats", "1",
                "--run-identifiers", "40", "--quiet", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["kind"] == "suite"
    assert rep["environment"]["topologies"] == ["minimal"] and "rest" not in rep
    rep = {**rep["run"], "targets": rep["targets"], "figures": rep["figures"]}
    done = {(r["scenario"], r["protocol"], r["mode"]) for r in rep["results"] if "error" not in r}
    assert done == {("cached", "binary", "closed"), ("cached", "binary", "sweep"), ("cached", "rest", "closed"),
                    ("cold", "binary", "closed"), ("cold", "rest", "closed"), ("latency-off", "binary", "rate"),
                    ("latency-on", "binary", "rate"), ("kill-top", "binary", "rate")}
    assert {c["latency"] for c in rep["clusters"]} == {"on", "off"}
    by_id = {t["id"]: t for t in rep["targets"]}
    assert set(by_id) == {"T1", "T2", "T3", "H2", "H3", "H4"}
    for tid in ("T1", "T2", "H2"):  # measured (whether this loaded machine met them or not)
        assert by_id[tid]["status"] in ("PASS", "FAIL") and by_id[tid]["value"] is not None, by_id[tid]
    # The minimal topology: T3 names Shandong's latency model, H3 and H4 the Shandong cluster.
    assert [by_id[t]["status"] for t in ("T3", "H3", "H4")] == ["N/A"] * 3
    assert rep["figures"] and out.with_suffix(".csv").exists() and out.with_suffix(".html").exists()
    for r in rep["results"]:
        for run in _node_runs(r):
            _check_agreement(run, r["protocol"])


# -- an existing cluster, and one that goes away ------------------------------------------------------------------

def _up(data_dir: Path) -> Proc:
    last = ""
    for _ in range(4):
        base = free_base_port(12, random.Random())
        proc = spawn([IDRESOLVE, "up", "--config", str(MINIMAL), "--data-dir", str(data_dir), "--base-port", str(base),
                      "--latency", "off", "--own-process", "rec-jinan"], env=cli_env())
        try:
            proc.wait_for_line("ready in", timeout_s=60)
            return proc
        except (RuntimeError, TimeoutError):
            stop_proc(proc)
            last = proc.stderr
            if "in use" not in last:
                raise
    raise AssertionError(f"`idresolve up` did not start: {last}")


def test_existing_cluster_then_it_goes_down_mid_run(tmp_path: Path) -> None:
    data = tmp_path / "cluster"
    up = _up(data)
    try:
        out = tmp_path / "existing.json"
        res = bench("run", "--data-dir", str(data), "--rate", "200", "--duration", "1", "--identifiers", "30",
                    "--warmup", "0", "--no-baselines", "--quiet", "--out", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        rep = json.loads(out.read_text())
        assert not rep["clusters"][0]["own"] and rep["results"][0]["node_own_process"]
        _check_agreement(rep["results"][0]["runs"]["node"][0], "binary")
        # now a long run, and the cluster stops under it
        out2 = tmp_path / "partial.json"
        run = spawn(idresolve_argv("bench", "run", "--data-dir", str(data), "--rate", "200", "--duration", "20",
                                   "--identifiers", "30", "--warmup", "0", "--no-baselines", "--timeout", "1",
                                   "--out", str(out2)), env=cli_env())
        try:
            run.wait_for_line("warming the cache", timeout_s=60, stream="stderr")
            stop_proc(up)
            assert run.popen.wait(60) == 1
        finally:
            stop_proc(run)
        assert "Traceback" not in run.stderr
        assert "FAILED" in run.stderr and "error:" in run.stderr
        partial = json.loads(out2.read_text())
        assert "error" in partial["results"][0]
    finally:
        stop_proc(up)
    # the same cluster description, nothing listening any more: a clear message, exit 1, no traceback
    res = bench("run", "--data-dir", str(data), "--rate", "100", "--duration", "1", "--no-seed", "--quiet",
                "--no-baselines", "--out", str(tmp_path / "gone.json"))
    assert res.returncode == 1
    assert "cannot connect" in res.stderr and "Traceback" not in res.stderr


def test_select_waits_only_on_descriptors_it_can_take() -> None:
    from idresolve.bench.loadgen import SELECT_FD_LIMIT, _fds

    class Conn:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def fileno(self) -> int:
            return self.fd

    assert _fds([Conn(5), Conn(7)]) == [5, 7]
    assert _fds([Conn(5), Conn(-1), Conn(7)]) == [5, 7]  # a closed one is left out
    assert _fds([Conn(5), Conn(SELECT_FD_LIMIT)]) == []  # beyond select(): the loop's timers instead
