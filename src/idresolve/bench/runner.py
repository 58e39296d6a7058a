"""``idresolve bench run``: drive a cluster's recursive node with the open-loop (or closed-loop) generator,
next to baselines measured in the same run, with the servers' own counters scraped around every run.

For each cluster (an existing one, or one started per latency setting the scenarios need) and each
scenario and protocol: check that the identifiers resolve, warm the cache (``cached``), capture one answer
so the baseline server answers the same bytes, start the baseline (the bare asyncio msgpack echo server for
the binary protocol, the bare aiohttp handler for REST) in its own process, then measure node and baseline
alternately (``repeats``; medians are reported). Every measured run records the recursive node's (or the
baseline's) CPU from /proc, so rates can also be given per CPU-second: the client shares the machine.

A failure in one scenario (the cluster went away, an answer was wrong) is recorded in its result and the
others still run; the report is written whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..core.codes import ResponseCode
from ..core.messages import FLAG_AUTHORITATIVE, FLAG_TRACE, Response
from ..core.wire import Codec
from . import httpload, report, scrape
from .binload import BinaryWorkload, connect_binary, resolve_many
from .cluster import Cluster, ClusterUnavailable, OwnCluster, config_path, load_existing, seed, with_workers
from .expect import ExpectationError, PathExpectation
from .loadgen import ClosedDriver, Event, Recorder, RestLoadConnection, open_loop
from .nativeload import NativeWorkload, connect_native
from .procs import ServerFailed, ServerProcess, baseline_process, cpu_seconds, echo_process
from .scenarios import (
    SCENARIOS,
    SWEEP_SLICE_S,
    RunConfig,
    aggregate_trace,
    check_topology_node,
    cluster_groups,
    drifting,
    kill_analysis,
    latency_drift,
    model_check,
    saturation,
    sustained,
)

MAX_RATE_PER_S = 1_000_000  # the count bound of a closed-loop run
MAX_REST_CONNECTIONS = 256
MAX_SWEEP_STEPS = 14
#: Own clusters: no per-client-address rate limit (default 100,000/s), or one load client on one address
#: would measure the limit, not the node.
OWN_CLUSTER_FLAGS = ("--client-rate", "0")
#: Latency figures (``mean_us`` ... ``max_us``) count every request, errors and timeouts included; the
#: ``ok_`` ones the successful answers only.
FLAT_KEYS = ("rate_per_s", "mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us",
             "ok_mean_us", "ok_p50_us", "ok_p99_us",
             "server_us_per_answer", "server_answers_per_cpu_s", "client_us_per_request")
ProgressFn = Callable[[str], None]


class UsageProblem(Exception):
    """The options cannot work with this cluster (exit code 2)."""


@dataclass
class LoadTarget:
    who: str  # "node" or "baseline"
    label: str
    host: str
    port: int
    pid: int | None
    work: Any  # BinaryWorkload or a list of encoded HTTP requests


# -- one measured run ---------------------------------------------------------------------------------------

async def _connect(t: LoadTarget, protocol: str, rec: Recorder, n: int, on_answer: Any) -> list[Any]:
    conns: list[Any] = []
    try:
        for _ in range(n):
            if protocol == "binary":
                conns.append(await connect_binary(t.host, t.port, rec, t.work, on_answer=on_answer))
            elif protocol == "handle":
                conns.append(await connect_native(t.host, t.port, rec, t.work, on_answer=on_answer))
            else:
                conns.append(await RestLoadConnection(rec, t.work, on_answer).open(t.host, t.port))
    except BaseException:
        for c in conns:
            c.close()
        raise
    return conns


async def _drive(t: LoadTarget, protocol: str, cfg: RunConfig, *, mode: str, rate: float, duration_s: float,
                 offset: int, events: Sequence[Event], slice_s: float,
                 progress: Callable[[str], None] | None = None) -> Recorder:
    rec = Recorder((ResponseCode.SUCCESS,) if protocol != "rest" else (200,), timeout_s=cfg.timeout_s,
                   slice_s=slice_s)
    rec.progress = progress
    conns: list[Any] = []
    work_len = len(t.work)
    try:
        if mode == "closed":
            driver = ClosedDriver(rec, depth=cfg.depth, duration_s=duration_s,
                                  max_requests=max(1, int(duration_s * MAX_RATE_PER_S)), work_len=work_len,
                                  offset=offset, timeout_s=cfg.timeout_s)
            conns = await _connect(t, protocol, rec, cfg.connections, driver.on_answer)
            rec.connections = cfg.connections
            await driver.run(conns)
        else:
            n = cfg.connections
            if protocol == "rest":  # no pipelining in practice: enough connections for ~100 ms answers
                n = max(n, min(MAX_REST_CONNECTIONS, int(rate * 0.1) + 1))
            conns = await _connect(t, protocol, rec, n, None)
            rec.connections = n
            await open_loop(conns, rec, rate=rate, duration_s=duration_s, work_len=work_len, offset=offset,
                            timeout_s=cfg.timeout_s, events=events, tick_s=cfg.tick_s,
                            least_loaded=protocol == "rest")
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0)
    return rec


class ScenarioRun:
    """One scenario over one protocol against one cluster: its targets, runs and figures."""

    def __init__(self, cfg: RunConfig, cluster: Cluster, name: str, protocol: str, mode: str, handles: list[str],
                 progress: ProgressFn) -> None:
        self.cfg, self.cluster, self.name, self.protocol, self.mode = cfg, cluster, name, protocol, mode
        self.spec = SCENARIOS[name]
        self.handles = handles
        self.progress = progress
        self.rec_node = cluster.recursive(cfg.node)
        self.rec_pid, self.rec_alone = cluster.pid_of(self.rec_node["name"])
        self.tcp = cluster.tcp(self.rec_node)
        self.http = cluster.http(self.rec_node)
        self.native = _native_address(self.rec_node) if protocol == "handle" else None
        self.flags = FLAG_AUTHORITATIVE if self.spec.cold else 0
        self.offset = 0
        self.roles = {n["name"]: n["role"] for n in cluster.nodes()}

    def say(self, msg: str) -> None:
        self.progress(f"{self.name}/{self.protocol}/{self.mode}: {msg}")

    # -- preparing ----------------------------------------------------------------------------------------
    def requests_for(self, host: str, port: int) -> Any:
        if self.protocol == "binary":
            return BinaryWorkload(self.handles, self.flags)
        if self.protocol == "handle":
            return NativeWorkload(self.handles, self.flags)
        query = "?auth=true" if self.spec.cold else ""
        return [httpload.encode_request("GET", "/api/handles/" + quote(h, safe="/:.") + query, host, port)
                for h in self.handles]

    def check_and_warm(self) -> None:
        host, port = self.tcp
        sample = self.handles if not self.spec.cold else self.handles[:20]
        what = "warming the cache with" if not self.spec.cold else "checking"
        self.say(f"{what} {len(sample):,} identifiers at {self.rec_node['name']} ({host}:{port})")
        codes = httpload.run(resolve_many(host, port, sample, flags=0 if not self.spec.cold else self.flags,
                                          window=256, timeout_s=max(5.0, self.cfg.timeout_s)))
        if codes.get(ResponseCode.SUCCESS, 0) != len(sample):
            raise ClusterUnavailable(f"resolving the seeded identifiers at {self.rec_node['name']} answered codes "
                                     f"{codes} (code -1: no answer), expected {len(sample)} x code 1; is the cluster "
                                     "seeded and healthy?")

    def capture_answer(self, tmp: Path) -> Path:
        """The node's answer to the first identifier, for the baseline server to repeat."""
        if self.protocol == "binary":
            got: list[Response] = []
            host, port = self.tcp
            httpload.run(resolve_many(host, port, self.handles[:1], flags=self.flags,
                                      on_answer=lambda _h, r, _s: got.append(r)))
            if not got or got[0].code != ResponseCode.SUCCESS:
                raise ClusterUnavailable(f"no answer for {self.handles[0]} to give the echo baseline")
            r = got[0]
            path = tmp / "answer.bin"
            path.write_bytes(Codec().response_tail(r))
            return path
        host, port = self.http
        raw = self.requests_for(host, port)[0]

        async def fetch() -> tuple[int, bytes]:
            async with httpload.Client(host, port) as c:
                return await c.request(raw)

        status, body = httpload.run(fetch())
        if status != 200:
            raise ClusterUnavailable(f"GET {self.handles[0]} at {self.rec_node['http']} answered {status}")
        path = tmp / "answer.json"
        path.write_bytes(body)
        return path

    @contextlib.contextmanager
    def targets(self) -> Iterator[dict[str, LoadTarget]]:
        host, port = self.native or (self.tcp if self.protocol == "binary" else self.http)
        node = LoadTarget("node", f"{self.rec_node['name']} ({self.cluster.name}, latency {self.cluster.latency})",
                      host, port, self.rec_pid, self.requests_for(host, port))
        if not self.cfg.baselines or self.protocol == "handle":  # its yardstick is the msgpack run (protocol_ratios)
            yield {"node": node}
            return
        with tempfile.TemporaryDirectory(prefix="idresolve-bench-") as tmp:
            answer = self.capture_answer(Path(tmp))
            proc: ServerProcess = echo_process(answer) if self.protocol == "binary" else baseline_process(answer)
            with proc:
                label = "bare asyncio msgpack echo" if self.protocol == "binary" else "bare aiohttp handler"
                self.say(f"baseline {label} at {proc.url} (answers of {answer.stat().st_size} bytes)")
                base = LoadTarget("baseline", label, "127.0.0.1", proc.port, proc.pid,
                              self.requests_for("127.0.0.1", proc.port))
                yield {"node": node, "baseline": base}

    # -- measuring -----------------------------------------------------------------------------------------
    def run_once(self, t: LoadTarget, mode: str, *, rate: float = 0.0, duration_s: float | None = None,
                 events: Sequence[Event] = (), slice_s: float = 1.0, scrape_all: bool = False,
                 keep: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        duration = duration_s or cfg.duration_s
        nodes = []
        if t.who == "node":
            nodes = self.cluster.nodes() if scrape_all else [self.rec_node]
        before = scrape.scrape(nodes) if nodes else {}
        cpu0, cl0, me0 = _cpu(t.pid), self.cluster.cpu() if t.who == "node" else 0.0, os.times()
        offset = self.offset
        self.offset += 7919
        gc.collect()
        gc.disable()  # no collector pauses in the generator while it keeps time (re-enabled right after)
        try:
            rec = httpload.run(_drive(t, self.protocol, cfg, mode=mode, rate=rate, duration_s=duration,
                                      offset=offset, events=events, slice_s=slice_s,
                                      progress=self.say if duration >= 8 else None))
        finally:
            gc.enable()
        cpu1, cl1, me1 = _cpu(t.pid), self.cluster.cpu() if t.who == "node" else 0.0, os.times()
        after = scrape.scrape(nodes) if nodes else {}
        res = rec.result(mode="open" if mode != "closed" else "closed", offered_per_s=round(rate, 1) if rate else None,
                         duration_s=duration, connections=rec.connections,
                         depth=cfg.depth if mode == "closed" else None)
        ok = max(1, res["ok"])
        cpu: dict[str, Any] = {"client_s": round((me1.user - me0.user) + (me1.system - me0.system), 3)}
        cpu["client_us_per_request"] = round(cpu["client_s"] / max(1, res["sent"]) * 1e6, 2)
        if cpu0 is not None and cpu1 is not None:
            used = cpu1 - cpu0
            cpu.update({"server_s": round(used, 3), "server_busy": round(used / max(1e-9, res["elapsed_s"]), 3),
                        "server_us_per_answer": round(used / ok * 1e6, 2),
                        "server_answers_per_cpu_s": round(res["ok"] / used, 1) if used > 0 else None})
        if t.who == "node":
            cpu["cluster_s"] = round(cl1 - cl0, 3)
            cpu["cluster_us_per_answer"] = round((cl1 - cl0) / ok * 1e6, 2)
        res["cpu"] = cpu
        res["flat"] = _flat(res)
        if t.who == "node":
            deltas = scrape.delta(before, after)
            mine = scrape.counts(deltas.get(self.rec_node["name"]))
            res["server"] = mine
            # Native answers are counted with the msgpack ones: one service behind both binary listeners.
            res["crosscheck"] = scrape.crosscheck(res, "binary" if self.protocol == "handle" else self.protocol, mine,
                                                  expect_cache_hits=not self.spec.cold)
            if scrape_all:
                res["server_by_role"] = scrape.by_role(deltas, self.roles)
                res["server_by_node"] = {n: sum(c["binary"].values()) if c else None
                                         for n, c in ((n, scrape.counts(d)) for n, d in deltas.items())
                                         if self.roles.get(n) == "top"}
        res["_rec"] = rec
        res["_offset"] = offset
        if not keep:
            for k in ("distribution", "timeline"):
                res.pop(k, None)
            res["latency"].pop("hdr", None)
            res.get("latency_ok", {}).pop("hdr", None)
        return res

    def line(self, who: str, res: dict[str, Any]) -> str:
        f = res["flat"]
        x = res.get("crosscheck", {}).get("verdict")
        offered = f"{res['offered_per_s']:,.0f}/s offered, " if res.get("offered_per_s") else ""
        cpu = f", server {f['server_us_per_answer']} us CPU/answer" if f.get("server_us_per_answer") else ""
        bad = "".join(f", {res[k]} {k}" for k in ("errors", "timeouts", "lost") if res.get(k))
        return (f"{who}: {offered}{f['rate_per_s']:,.0f}/s, p50 {f.get('p50_us')} us, p99 {f.get('p99_us')} us"
                f"{cpu}{bad}" + (f"; server counters {x}" if x else ""))

    def warm_up(self, targets: dict[str, LoadTarget]) -> None:
        if self.cfg.warmup_s <= 0:
            return
        for t in targets.values():
            self.run_once(t, "closed", duration_s=self.cfg.warmup_s, keep=False)

    def trace(self, *, path_model: PathExpectation | None = None, count: int | None = None) -> dict[str, Any]:
        n = min(len(self.handles), count or self.cfg.trace_sample)
        if n <= 0:
            return {}
        step = max(1, len(self.handles) // n)
        sample = self.handles[::step][:n]
        samples: list[tuple[str, Any, float]] = []
        host, port = self.tcp
        self.say(f"tracing {len(sample)} cold resolutions (TRACE flag)")
        codes = httpload.run(resolve_many(host, port, sample, flags=FLAG_AUTHORITATIVE | FLAG_TRACE, window=4,
                                          timeout_s=self.cfg.timeout_s,
                                          on_answer=lambda h, r, s: samples.append((h, r.trace, s))))
        out = aggregate_trace(samples, self.roles, path_model)
        out["codes"] = {str(k): v for k, v in codes.items()}
        return out


def _native_address(node: dict[str, Any]) -> tuple[str, int]:
    address = node.get("handle")
    if not address:
        raise ClusterUnavailable(f"{node['name']} has no native Handle protocol address in cluster.json (a cluster "
                                 "started before the native listener existed: restart it)")
    host, _, port = str(address).rpartition(":")
    return host, int(port)


def protocol_ratios(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The native protocol against msgpack, measured in the same run: handle / binary for each scenario and
    mode both ran (server CPU per answer: the issue's target is at most 1.2)."""
    out = []
    by_key = {(r.get("cluster"), r.get("scenario"), r.get("mode"), r.get("protocol")): r for r in results}
    for (cluster, scenario, mode, protocol), r in by_key.items():
        other = by_key.get((cluster, scenario, mode, "binary"))
        if protocol != "handle" or other is None:
            continue
        mine, base = r.get("median", {}).get("node", {}), other.get("median", {}).get("node", {})
        item = {"cluster": cluster, "scenario": scenario, "mode": mode,
                "ratios": {k: report.ratio(float(mine[k]), float(base[k])) for k in FLAT_KEYS
                           if mine.get(k) is not None and base.get(k)},
                "handle": {k: mine.get(k) for k in ("rate_per_s", "p50_us", "p99_us", "server_us_per_answer")},
                "binary": {k: base.get(k) for k in ("rate_per_s", "p50_us", "p99_us", "server_us_per_answer")}}
        out.append(item)
    return out


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)


def _flat(res: dict[str, Any]) -> dict[str, Any]:
    lat = res.get("latency", {})
    cpu = res.get("cpu", {})
    out = {"rate_per_s": res.get("rate_per_s", 0.0)}
    for k in ("mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"):
        if k in lat:
            out[k] = lat[k]
    ok = res.get("latency_ok", {})
    for k in ("mean_us", "p50_us", "p99_us"):
        if k in ok:
            out[f"ok_{k}"] = ok[k]
    for k in ("server_us_per_answer", "server_answers_per_cpu_s", "client_us_per_request", "cluster_us_per_answer"):
        if cpu.get(k) is not None:
            out[k] = cpu[k]
    return out


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for k in (*FLAT_KEYS, "cluster_us_per_answer"):
        vals = [float(r["flat"][k]) for r in runs if r["flat"].get(k) is not None]
        if vals:
            m = report.median(vals)
            out[k] = round(m, 2)
            if len(vals) > 1 and m:
                out.setdefault("spread", {})[k] = round((max(vals) - min(vals)) / m, 3)
    for k in ("errors", "timeouts", "lost", "late"):
        out[k] = sum(int(r.get(k, 0)) for r in runs)
    verdicts = [r.get("crosscheck", {}).get("verdict") for r in runs if r.get("crosscheck")]
    if verdicts:
        out["crosscheck"] = "DISAGREE" if "DISAGREE" in verdicts else ("agree" if set(verdicts) == {"agree"} else
                                                                        ",".join(sorted(set(verdicts))))
    return out


def _strip(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def _not_kept_up(step: dict[str, Any]) -> str:
    if sustained(step):
        return ""
    d = step.get("drift")
    if d is not None and drifting(d):
        return f"; not kept up: median latency rose from {d['first_p50_us']:,} to {d['last_p50_us']:,} us"
    return "; not kept up"


def _compact(res: dict[str, Any]) -> dict[str, Any]:
    keep = ("offered_per_s", "rate_per_s", "sent", "ok", "errors", "timeouts", "lost", "elapsed_s", "flat",
            "crosscheck", "send_lag", "aborted")
    out = {k: res[k] for k in keep if k in res}
    if "crosscheck" in out:
        out["crosscheck"] = {"verdict": out["crosscheck"]["verdict"]}
    return out


# -- the scenario flows ---------------------------------------------------------------------------------------

def run_scenario(sc: ScenarioRun) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": sc.name, "protocol": sc.protocol, "description": sc.spec.description,
                           "cluster": sc.cluster.name, "latency": sc.cluster.latency, "node": sc.rec_node["name"],
                           "node_own_process": sc.rec_alone, "identifiers": len(sc.handles), "mode": sc.mode,
                           "rate_per_s": sc.cfg.fixed_rate(sc.name) if sc.mode == "rate" else None}
    if sc.name == "replication":  # writes, not resolutions: its own flow
        from .replication import NoMirror, replication_run

        try:
            out["replication"] = replication_run(sc.cluster, rate=sc.cfg.fixed_rate(sc.name),
                                                 duration_s=max(sc.cfg.duration_s, 2.0), say=sc.say)
        except NoMirror as exc:
            raise UsageProblem(str(exc)) from None
        return out
    if not sc.rec_alone:
        out["note"] = ("the recursive node shares its process with other nodes: CPU figures cover that whole "
                       "process" if sc.rec_pid else "the recursive node's process was not found: no CPU figures")
    sc.check_and_warm()
    with sc.targets() as targets:
        sc.warm_up(targets)
        if sc.spec.kill:
            out["kill"] = _kill_run(sc, targets["node"])
        elif sc.mode == "sweep":
            out["sweep"] = _sweep_runs(sc, targets)
        else:
            out.update(_repeated_runs(sc, targets, sc.mode))
    if sc.spec.cold and sc.protocol == "binary" and not sc.spec.kill:
        pm = _path_model(sc)
        out["trace"] = sc.trace(path_model=pm)
    if sc.spec.model:
        out["model"] = _model(sc, out)
    return out


def _repeated_runs(sc: ScenarioRun, targets: dict[str, LoadTarget], mode: str) -> dict[str, Any]:
    cfg = sc.cfg
    rate = cfg.fixed_rate(sc.name) if mode == "rate" else 0.0
    runs: dict[str, list[dict[str, Any]]] = {who: [] for who in targets}
    for rep in range(cfg.repeats):
        order = list(targets) if rep % 2 == 0 else list(reversed(list(targets)))
        for who in order:
            res = sc.run_once(targets[who], mode, rate=rate, scrape_all=sc.spec.cold and who == "node")
            runs[who].append(res)
            sc.say(f"run {rep + 1}/{cfg.repeats} " + sc.line(who, res))
            if res.get("aborted"):
                raise ClusterUnavailable(f"{who} run aborted: {res['aborted']}")
    out: dict[str, Any] = {"runs": {who: [_strip(r) for r in rs] for who, rs in runs.items()},
                           "median": {who: medians(rs) for who, rs in runs.items()},
                           "labels": {who: t.label for who, t in targets.items()}}
    if "baseline" in runs:
        out["ratios"] = ratios(out["median"]["node"], out["median"]["baseline"])
    out["_raw"] = runs
    return out


def ratios(node: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """node / baseline for every figure both have (rates: <1 is slower; latencies and CPU: >1 is slower)."""
    return {k: report.ratio(float(node[k]), float(base[k])) for k in FLAT_KEYS
            if node.get(k) is not None and base.get(k) and k != "client_us_per_request"}


def _sweep_runs(sc: ScenarioRun, targets: dict[str, LoadTarget]) -> dict[str, Any]:
    cfg = sc.cfg
    out: dict[str, Any] = {}
    for who, t in targets.items():
        probe = sc.run_once(t, "closed", duration_s=min(cfg.step_s, 2.0), keep=False)
        x = probe["rate_per_s"]
        sc.say(f"sweep {who}: closed-loop probe {x:,.0f}/s")
        steps = []
        fractions = list(cfg.sweep_fractions)
        while fractions:
            f = fractions.pop(0)
            r = max(1.0, f * x)
            res = sc.run_once(t, "rate", rate=r, duration_s=cfg.step_s, keep=False, slice_s=SWEEP_SLICE_S)
            res["fraction"] = f
            step = _compact(res)
            step["fraction"] = f
            step["drift"] = latency_drift(res["_rec"].timeline())
            steps.append(step)
            sc.say(f"sweep {who} {f:.0%}: " + sc.line(who, res) + _not_kept_up(step))
            if f >= 1.0 and not sustained(step):
                break
            if not fractions and sustained(step) and len(steps) < MAX_SWEEP_STEPS:
                fractions.append(round(f * 1.2, 3))  # still keeping up: go on until it does not
        sat = saturation(steps)
        out[who] = {"probe": _compact(probe), "steps": steps, "saturation_per_s": round(sat, 1)}
    half = out["node"]["saturation_per_s"] / 2
    halves: dict[str, list[dict[str, Any]]] = {who: [] for who in targets}
    for rep in range(cfg.repeats):  # every target at the node's half-saturation rate: same load, compare latency
        for who in (list(targets) if rep % 2 == 0 else list(reversed(list(targets)))):
            res = sc.run_once(targets[who], "rate", rate=half, scrape_all=sc.spec.cold and who == "node")
            sc.say(f"half of the node's saturation ({half:,.0f}/s) {rep + 1}/{cfg.repeats} {who}: " + sc.line(who, res))
            halves[who].append(res)
    for who, runs in halves.items():
        by_p99 = sorted(runs, key=lambda r: r["flat"].get("p99_us") or 0)
        out[who]["half"] = _strip(by_p99[len(by_p99) // 2])  # the run with the median p99, whole
        out[who]["half_median"] = medians(runs)
        out[who]["half_runs"] = [_compact(r) for r in runs]
    if "baseline" in out:
        out["ratios"] = {"saturation": report.ratio(out["node"]["saturation_per_s"], out["baseline"]["saturation_per_s"]),
                         "half": ratios(out["node"]["half_median"], out["baseline"]["half_median"])}
    return out


def _kill_run(sc: ScenarioRun, node: LoadTarget) -> dict[str, Any]:
    cfg = sc.cfg
    victim = cfg.kill_node
    pid, alone = sc.cluster.pid_of(victim)
    if pid is None or not alone:
        raise UsageProblem(f"kill-top needs {victim} in a process of its own: start the cluster with "
                           f"`idresolve up --own-process {victim}` (or let the bench start its own)")
    duration = max(cfg.duration_s, 4.0)
    rate = cfg.fixed_rate(sc.name)
    event = Event(duration / 2, lambda: os.kill(pid, signal.SIGKILL), name=f"SIGKILL {victim} (pid {pid})")
    sc.say(f"open loop {rate:,.0f}/s for {duration:g} s; {event.name} at {duration / 2:g} s")
    slice_s = 0.25
    res = sc.run_once(node, "rate", rate=rate, duration_s=duration, events=[event], slice_s=slice_s, scrape_all=True)
    rec: Recorder = res["_rec"]
    out: dict[str, Any] = {"victim": victim, "pid": pid, "event": event.name, "fired_s": event.fired_s, "error": event.error,
           "rate_per_s": rate, "duration_s": duration, "slice_s": slice_s,
           "analysis": kill_analysis(rec.slices, slice_s, event.fired_s), "run": _strip(res)}
    a: dict[str, Any] = out["analysis"]
    sc.say(f"killed {victim} at {event.fired_s} s: before {a.get('before', {}).get('rate_per_s')}/s p99 "
           f"{a.get('before', {}).get('p99_us')} us; after {a.get('after', {}).get('rate_per_s')}/s p99 "
           f"{a.get('after', {}).get('p99_us')} us, {a.get('errors_after')} errors, {a.get('timeouts_after')} timeouts, "
           f"recovered after {a.get('recovery_s', 'never')} s")
    out["trace_after"] = sc.trace(count=min(50, cfg.trace_sample))
    return out


def _path_model(sc: ScenarioRun) -> PathExpectation | None:
    """The model's expected path delays, from the cluster's topology file (``bench.expect``)."""
    try:
        return PathExpectation.from_file(Path(str(sc.cluster.desc.get("config"))), sc.rec_node["name"],
                                         latency=sc.cluster.latency, scenario=sc.cluster.scenario)
    except ExpectationError:  # a topology this cannot follow: no expectation, the measurement stands
        return None


def _model(sc: ScenarioRun, out: dict[str, Any]) -> dict[str, Any]:
    pm = _path_model(sc)
    raw = out.get("_raw", {}).get("node", [])
    if pm is None or not raw:
        return {"note": "no model expectation for this cluster (its topology file cannot be followed)"}
    checks = []
    for res in raw:
        exp = pm.expected_mean_ms(sc.handles, res["sent"], res["_offset"])
        lag = float(res.get("send_lag", {}).get("mean_us", 0.0))
        c = model_check(float(res["latency"].get("mean_us", 0.0)) - lag, exp)
        c["scheduled_mean_us"] = res["latency"].get("mean_us")
        c["generator_lag_mean_us"] = lag
        checks.append(c)
    ratios_ = sorted(c["ratio"] for c in checks)
    mid = checks[[c["ratio"] for c in checks].index(ratios_[len(ratios_) // 2])]
    return {"latency": sc.cluster.latency, "scenario": sc.cluster.scenario, "first_top": pm.first_top,
            "params": pm.params, "per_run": checks, **mid,
            "note": "measured = mean latency of every request (errors and timeouts included) from the scheduled "
                    "send, minus the generator's mean lateness; expected = mean over the identifiers sent of the "
                    "round trips recursive->top, recursive->secondary and recursive->enterprise (own node only), "
                    "summed by bench.expect from the topology file and the latency parameters"}


# -- the whole run --------------------------------------------------------------------------------------------

def validate(cfg: RunConfig) -> None:
    """Problems visible before anything starts (exit 2)."""
    if cfg.data_dir is not None:
        cluster = load_existing(cfg.data_dir)
        topo = cluster.topology
        for name in {it[0] for it in cfg.items()}:
            need = SCENARIOS[name].latency
            if need and need != cluster.latency:
                raise UsageProblem(f"scenario {name} needs a cluster with the latency model {need}; the cluster in "
                                   f"{cfg.data_dir} runs with it {cluster.latency}")
    else:
        from ..core.topology import load_topology

        try:
            topo = load_topology(config_path(cfg.topology))
        except Exception as exc:
            raise UsageProblem(str(exc)) from None
    if cfg.node:
        problem = check_topology_node(topo, cfg.node, "recursive")
        if problem:
            raise UsageProblem(f"--node: {problem}")
    if any(it[0] == "replication" for it in cfg.items()) and not topo.nodes_by_role("mirror"):
        raise UsageProblem(f"scenario replication: the topology {topo.name!r} has no secondary node with a mirror: "
                           "use --topology shandong (or a topology with `mirrors = [...]` on a secondary)")
    if any(it[0] == "kill-top" for it in cfg.items()):
        problem = check_topology_node(topo, cfg.kill_node, "top")
        if problem:
            raise UsageProblem(f"--kill-node: {problem}")


def _cluster_info(cluster: Cluster, rss_ready: dict[str, Any] | None) -> dict[str, Any]:
    return {"topology": cluster.name, "config": str(cluster.desc.get("config")), "config_hash": cluster.config_hash,
            "latency": cluster.latency, "scenario": cluster.scenario, "own": cluster.own,
            "nodes": len(cluster.nodes()), "processes": len(cluster.worker_pids()) + (1 if cluster.up_pid else 0),
            "ready_s": cluster.ready_s, "reported_ready_s": cluster.reported_ready_s,
            "start_attempts": cluster.start_attempts, "rss_ready": rss_ready, "seeded": cluster.seeded,
            "up_flags": list(OWN_CLUSTER_FLAGS) if cluster.own else None}


def _run_group(cfg: RunConfig, cluster: Cluster, items: list[tuple[str, str, str]], progress: ProgressFn,
               results: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """Seed, then every item in order; the memory "after the runs" is read before a kill (after it, the
    killed node is rightly in no process)."""
    if cfg.seed:
        progress(f"cluster: seeding {cfg.identifiers:,} identifiers (idresolve seed)")
        seed(cluster, cfg.identifiers)
    handles = cluster.identifiers(cfg.identifiers)
    if not handles:
        raise ClusterUnavailable("no seeded identifier resolves through the top level (no enterprise under a "
                                 "connected secondary node)")
    for name, protocol, mode in items:
        if SCENARIOS[name].kill and "rss_after" not in info:
            info["rss_after"] = cluster.rss()
        sc = ScenarioRun(cfg, cluster, name, protocol, mode, handles, progress)
        try:
            res = run_scenario(sc)
        except (ClusterUnavailable, ServerFailed, httpload.LoadError, OSError) as exc:
            progress(f"{name}/{protocol}/{mode}: FAILED: {exc}")
            res = {"scenario": name, "protocol": protocol, "mode": mode, "error": str(exc)}
        res.pop("_raw", None)
        results.append(res)
    info.setdefault("rss_after", cluster.rss())


def run_bench(cfg: RunConfig, progress: ProgressFn, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every scenario; returns the report (also filled into ``partial`` as it goes, so a caller can
    write what there is when something breaks)."""
    out = partial if partial is not None else {}
    env = report.environment(httpload.loop_name())
    out.update({"kind": "run", "environment": env, "config": _config_dict(cfg), "clusters": [], "results": []})
    validate(cfg)
    for latency, items in cluster_groups(cfg):
        if cfg.data_dir is not None:
            cluster = load_existing(cfg.data_dir)
            info = _cluster_info(cluster, cluster.rss())
            out["clusters"].append(info)
            _run_group(cfg, cluster, items, progress, out["results"], info)
            continue
        path = config_path(cfg.topology)
        rec_name = cfg.node or _first_recursive(path)
        if cfg.workers > 1:
            path = with_workers(path, rec_name, cfg.workers)
        own = (rec_name, cfg.kill_node) if any(SCENARIOS[it[0]].kill for it in items) else (rec_name,)
        progress(f"cluster: starting {path.stem} (latency {latency}; own processes: {', '.join(own)})")
        with OwnCluster(path, latency=latency, own_process=own, progress=progress, extra_flags=OWN_CLUSTER_FLAGS) as cluster:
            info = _cluster_info(cluster, cluster.rss())
            out["clusters"].append(info)
            progress(f"cluster: ready in {cluster.ready_s:.2f} s ({info['nodes']} nodes, {info['processes']} processes, "
                     f"{info['rss_ready']['total_bytes'] / 2**20:,.0f} MB RSS)")
            _run_group(cfg, cluster, items, progress, out["results"], info)
    ratios_ = protocol_ratios(out["results"])
    if ratios_:
        out["protocol_ratios"] = ratios_
        for item in ratios_:
            cpu = item["ratios"].get("server_us_per_answer")
            progress(f"handle vs binary, {item['scenario']}/{item['mode']}: server CPU per answer x{cpu} "
                     f"({item['handle'].get('server_us_per_answer')} vs {item['binary'].get('server_us_per_answer')} us), "
                     f"rate x{item['ratios'].get('rate_per_s')}")
    env["topologies"] = sorted({c["topology"] for c in out["clusters"]})
    env["config_hashes"] = sorted({c["config_hash"] for c in out["clusters"]})
    report.close_environment(env)
    return out


def _first_recursive(path: Path) -> str:
    from ..core.topology import load_topology

    recs = load_topology(path).nodes_by_role("recursive")
    if not recs:
        raise UsageProblem(f"{path} has no recursive node")
    return recs[0].name


def _config_dict(cfg: RunConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["data_dir"] = str(cfg.data_dir) if cfg.data_dir else None
    return d
