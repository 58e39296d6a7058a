"""The benchmark scenarios: REST resolution against a bare aiohttp handler, batch registration against raw
SQLite inserts, and the suite that runs both and keeps every figure.

Each scenario returns a plain dict (the JSON report's shape) and takes a ``progress`` callable for stderr.
Servers run as subprocesses on 127.0.0.1 port 0 in temporary directories; they are stopped in ``finally``
blocks (``procs.ServerProcess`` is a context manager) whatever happens.

Noise: the machine is shared, so measured runs alternate between the two sides (node, baseline, then
baseline, node, ...) and the figures are medians over ``repeats`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from ..client.rest import BUSY_BACKOFF_S, RestClient
from ..core.codes import OpCode, ResponseCode
from ..core.errors import DecodeError, HandleError
from ..core.handles import fold
from ..core.messages import Request
from ..core.records import Record
from ..core.values import HandleValue
from ..core.wire_connection import ClientConnection
from ..net.blocking import BlockingClient
from ..nodes.auth import Identity
from ..nodes.authoritative import MAX_BATCH, AuthoritativeNode
from ..nodes.bootstrap import ADMIN_INDEX, admin_identity, prefix_record
from ..store.sqlite import SqliteStore
from . import httpload, report, wrkload
from .baselines import raw_sqlite_insert, read_rows
from .config import TARGET_IDS_PER_S, TARGET_REST_RATIO, TARGET_TEMPLATE_COST, BatchConfig, RestConfig
from .hist import histogram, summary
from .procs import ServerFailed, ServerProcess, baseline_process, node_process
from .workload import (
    PREFIX,
    TemplatedWorkload,
    batch_requests,
    chunks,
    core_values,
    handles,
    json_values,
    resolve_paths,
    resolve_requests,
)

HOST = "127.0.0.1"
MAX_RATE_PER_S = 1_000_000  # the count bound of a run: no loopback HTTP server here gets near it
MEDIAN_KEYS = ("rate_per_s", "mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us",
               "server_cpu_us_per_req", "client_cpu_us_per_req")


class BenchError(Exception):
    """A benchmark could not produce trustworthy figures (a server failed, answers were wrong)."""


# -- REST resolution --------------------------------------------------------------------------------------

@dataclass
class Registered:
    elapsed_s: float
    count: int
    shed: int = 0  # 503 answers (code 3, load shed) that were sent again after a pause
    paused_s: float = 0.0
    cpu_s: float | None = None  # CPU the server (all its processes) spent during the run


async def _register(port: int, requests: Sequence[bytes], clients: int = 1) -> Registered:
    """Send ``POST /api/batch`` requests over ``clients`` connections at once, one request in flight on each
    (each takes the next request not yet sent). A shed request (503, code 3: nothing was done) is sent again
    after the pauses the REST client uses; the pauses count in the elapsed time."""
    bodies: list[bytes] = []
    shed, paused = 0, 0.0
    todo = iter(requests)

    async def one(client: httpload.Client) -> None:
        nonlocal shed, paused
        for raw in todo:
            for pause in (*BUSY_BACKOFF_S, None):
                status, body = await client.request(raw)
                if status != 503 or pause is None:
                    break
                shed += 1
                paused += pause
                await asyncio.sleep(pause)
            if status != 201:
                raise BenchError(f"POST /api/batch answered {status}: {body[:300]!r}")
            bodies.append(body)

    conns = [httpload.Client(HOST, port) for _ in range(max(1, clients))]
    for c in conns:
        await c.__aenter__()
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in conns))
        elapsed = time.perf_counter() - t0
    finally:
        for c in conns:
            await c.__aexit__(None, None, None)
    count = sum(int(orjson.loads(body).get("count", 0)) for body in bodies)  # parsed after the clock stopped
    return Registered(elapsed, count, shed, paused)


async def _fetch(port: int, raw: bytes) -> tuple[int, bytes]:
    async with httpload.Client(HOST, port) as client:
        return await client.request(raw)


def _load(server: ServerProcess, requests: Sequence[bytes], connections: int,
          duration_s: float) -> tuple[httpload.LoadResult, dict[str, float]]:
    """One closed-loop run, and the CPU the server and this client spent on it (us per request): a figure
    that other work on a shared machine disturbs far less than requests/s."""
    server_cpu0, client0 = server.cpu_seconds(), os.times()
    res = httpload.run(httpload.closed_loop(HOST, server.port, requests, connections=connections,
                                            duration_s=duration_s,
                                            max_requests=max(1, math.ceil(duration_s * MAX_RATE_PER_S))))
    server_cpu1, client1 = server.cpu_seconds(), os.times()
    cpu: dict[str, float] = {}
    if res.requests:
        if server_cpu0 is not None and server_cpu1 is not None:
            cpu["server_cpu_us_per_req"] = round((server_cpu1 - server_cpu0) / res.requests * 1e6, 1)
        used = (client1.user - client0.user) + (client1.system - client0.system)
        cpu["client_cpu_us_per_req"] = round(used / res.requests * 1e6, 1)
    return res, cpu


def _run_figures(res: httpload.LoadResult, cpu: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": res.requests, "elapsed_s": round(res.elapsed_s, 4),
                           "rate_per_s": round(res.rate_per_s, 1), "errors": res.errors,
                           "shed_503": res.statuses.get(503, 0),
                           "statuses_unexpected": {str(k): v for k, v in res.statuses.items()},
                           "cut_off": res.cut_off, **cpu}
    out.update(summary(histogram(res.latency_us)))
    return out


def _medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    m: dict[str, Any] = {k: round(report.median_of(runs, k), 1) for k in MEDIAN_KEYS}
    m["errors"] = sum(int(r["errors"]) for r in runs)
    m["shed_503"] = sum(int(r.get("shed_503", 0)) for r in runs)
    m["runs"] = len(runs)
    return m


def _wrk_for(load: str) -> str | None:
    """The wrk executable ``load`` asks for (None: the Python client)."""
    if load == "python":
        return None
    found = wrkload.find()
    if found is None and load == "wrk":
        raise BenchError("--load wrk: wrk is not installed (Debian: apt-get install wrk), or use --load python")
    return found


def _wrk_figures(wrk: str, server: ServerProcess, paths: list[str], connections: int,
                 duration_s: float) -> dict[str, Any]:
    """One wrk run against ``server``, in the figures' shape of a Python client's run."""
    cpu0 = server.cpu_seconds()
    try:
        res = wrkload.run(wrk, HOST, server.port, paths, connections=connections, duration_s=duration_s)
    except wrkload.WrkError as exc:
        raise BenchError(str(exc)) from None
    cpu1 = server.cpu_seconds()
    if res.requests == 0:
        raise BenchError(f"{server.name}: wrk got no successful answer ({res.errors} errors, "
                         f"{res.socket_errors} socket errors)")
    out: dict[str, Any] = {"requests": res.requests, "elapsed_s": round(res.elapsed_s, 4),
                           "rate_per_s": round(res.rate_per_s, 1), "errors": res.errors + res.socket_errors,
                           "cut_off": 0, **res.latency,  # wrk counts answers not 2xx/3xx, not which they were
                           "client_cpu_us_per_req": round(res.cpu_s / res.requests * 1e6, 1)}
    if cpu0 is not None and cpu1 is not None:
        out["server_cpu_us_per_req"] = round((cpu1 - cpu0) / res.requests * 1e6, 1)
    return out


def run_rest(cfg: RestConfig, progress: report.ProgressFn) -> dict[str, Any]:
    secret = secrets.token_urlsafe(24)
    names = handles(cfg.handles, "r")
    wrk = _wrk_for(cfg.load)
    paths = resolve_paths(names)
    processes = cfg.workers or os.cpu_count() or 1  # the node's workers: the baseline runs as many
    runs: dict[str, list[dict[str, Any]]] = {"node": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="idresolve-bench-") as tmp_text:
        tmp = Path(tmp_text)
        progress(f"rest: starting node (sqlite store); load from {'wrk' if wrk else 'the Python client'}")
        with node_process(tmp / "node", PREFIX, secret, workers=cfg.workers) as node:
            progress(f"rest: node at {node.url}; registering {cfg.handles:,} identifiers")
            reg = httpload.run(_register(node.port, batch_requests(names, MAX_BATCH, HOST, node.port, secret)))
            if reg.count != len(names):
                raise BenchError(f"registered {reg.count} identifiers, expected {len(names)}")
            status, body = httpload.run(_fetch(node.port, resolve_requests(names[:1], HOST, node.port)[0]))
            if status != 200 or orjson.loads(body).get("responseCode") != 1:
                raise BenchError(f"resolving {names[0]} answered {status}: {body[:300]!r}")
            body_file = tmp / "answer.json"
            body_file.write_bytes(body)
            progress(f"rest: answers are {len(body)} bytes; starting the bare aiohttp baseline "
                     f"({processes} process{'es' if processes > 1 else ''})")
            with baseline_process(body_file, processes) as base:
                targets = {"node": (node, resolve_requests(names, HOST, node.port)),
                           "baseline": (base, resolve_requests(names, HOST, base.port))}
                b_status, b_body = httpload.run(_fetch(base.port, targets["baseline"][1][0]))
                if b_status != 200 or b_body != body:
                    raise BenchError("the baseline does not answer with the node's bytes")

                def one(who: str, seconds: float, what: str) -> tuple[dict[str, Any], str]:
                    server, reqs = targets[who]
                    if wrk is not None:
                        figures = _wrk_figures(wrk, server, paths, cfg.connections, seconds)
                        _check_alive(server)
                        return figures, f"{figures['errors']} errors" if figures["errors"] else ""
                    res, cpu = _load(server, reqs, cfg.connections, seconds)
                    _check_alive(server)
                    if set(res.statuses) - {503} or res.cut_off:
                        raise BenchError(f"{who} {what}: unexpected answers {res.statuses}, {res.cut_off} unanswered")
                    return _run_figures(res, cpu), ""

                for who in targets:
                    progress(f"rest: warm-up {who} {cfg.warmup_s:g} s")
                    if cfg.warmup_s > 0:
                        one(who, cfg.warmup_s, "warm-up")
                for rep in range(cfg.repeats):
                    order = ("node", "baseline") if rep % 2 == 0 else ("baseline", "node")
                    for who in order:
                        figures, extra = one(who, cfg.duration_s, f"run {rep + 1}")
                        runs[who].append(figures)
                        progress(f"rest: run {rep + 1}/{cfg.repeats} {who}: {figures['rate_per_s']:,.0f} req/s, "
                                 f"p50 {figures.get('p50_us')} us, p99 {figures.get('p99_us')} us, server CPU "
                                 f"{figures.get('server_cpu_us_per_req', '?')} us/request" + (f", {extra}" if extra else ""))
    node_m, base_m = _medians(runs["node"]), _medians(runs["baseline"])
    load = "wrk, one thread" if wrk is not None else "the Python client (bench.httpload)"
    return {
        "config": asdict(cfg), "body_bytes": len(body), "loop": httpload.loop_name(), "load": load,
        "baseline_processes": processes,
        "node": {"label": "node (sqlite store, answer cache)", "median": node_m, "runs": runs["node"]},
        "baseline": {"label": f"bare aiohttp, fixed body, {processes} process{'es' if processes > 1 else ''}",
                     "median": base_m, "runs": runs["baseline"]},
        "ratio": report.ratio(node_m["rate_per_s"], base_m["rate_per_s"]),
        "pair_ratios": [report.ratio(n["rate_per_s"], b["rate_per_s"])
                        for n, b in zip(runs["node"], runs["baseline"], strict=True)],
        "target_ratio": TARGET_REST_RATIO,
        "cpu_ratio": report.ratio(base_m["server_cpu_us_per_req"], node_m["server_cpu_us_per_req"]),
        "note": f"closed loop ({load}: each connection sends its next request when the answer arrives), so "
                "latencies omit the queueing an open-loop schedule would see; " + report.SHARED_MACHINE_NOTE.format(
                    cpus=os.cpu_count() or 0),
    }


def _check_alive(server: ServerProcess) -> None:
    if not server.alive():
        raise BenchError(f"{server.name} died during the run")


# -- batch registration -------------------------------------------------------------------------------------

def _core_batch(path: Path, items: Sequence[tuple[str, Any]], batch_size: int, secret: str,
                template: Record | None = None) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) registering ``items`` through ``AuthoritativeNode.batch_create``."""
    store = SqliteStore(path)
    try:
        node = AuthoritativeNode(store, [PREFIX], name="bench")
        node.bootstrap_record(prefix_record(PREFIX, secret, now=time.time()))
        if template is not None:
            node.bootstrap_record(template)
        caller = Identity(ADMIN_INDEX, f"0.NA/{PREFIX}")
        t0, cpu0 = time.perf_counter(), time.process_time()
        for part in chunks(items, batch_size):
            node.batch_create(part, caller=caller, now=time.time())
        return time.perf_counter() - t0, time.process_time() - cpu0
    except HandleError as exc:
        raise BenchError(f"batch_create refused the benchmark's batch: {exc.message}") from None
    finally:
        store.close()


def _rest_batch(tmp: Path, names: Sequence[str], batch_size: int, secret: str, *,
                values: Callable[[str], list[dict[str, Any]]] = json_values, template: Record | None = None,
                clients: int = 1) -> Registered:
    with node_process(tmp / "node", PREFIX, secret) as node:
        if template is not None:  # published at the node before the clock starts, as a secondary holds its own
            with RestClient(node.url, identity=admin_identity(PREFIX), secret=secret) as client:
                answer = client.put(template.handle, [v.to_json() for v in template.values])
            if answer.status != 201:
                raise BenchError(f"publishing {template.handle} answered {answer.status}: {answer.body}")
        requests = batch_requests(names, batch_size, HOST, node.port, secret, values=values)  # before the clock
        cpu0 = node.cpu_seconds()
        reg = httpload.run(_register(node.port, requests, clients))
        reg.cpu_s = _cpu_delta(cpu0, node.cpu_seconds())
        _check_alive(node)
    if reg.count != len(names):
        raise BenchError(f"the node registered {reg.count} identifiers, expected {len(names)}")
    return reg


def _binary_batch(tmp: Path, items: Sequence[tuple[str, Sequence[HandleValue]]], batch_size: int, secret: str,
                  clients: int, template: Record | None = None) -> tuple[float, float | None]:
    """The binary BATCH_CREATE opcode to a node subprocess over ``clients`` TCP connections, one batch in
    flight on each; the frames are encoded before the clock starts. Returns the seconds taken and the CPU
    seconds the node spent meanwhile."""
    auth = (admin_identity(PREFIX), secret.encode())
    with node_process(tmp / "node", PREFIX, secret, tcp=True) as node:
        if template is not None:
            with BlockingClient(HOST, node.port, auth=auth) as bc:
                resp = bc.create(template.handle, template.values)
            if resp.code != ResponseCode.SUCCESS:
                raise BenchError(f"publishing {template.handle} over the binary protocol answered code {resp.code}")
        parts = list(chunks(items, batch_size))
        n = max(1, min(clients, len(parts)))
        wires: list[ClientConnection[int]] = [ClientConnection() for _ in range(n)]
        frames: list[list[bytes]] = [[] for _ in range(n)]
        for i, part in enumerate(parts):  # round robin: connection i % n sends batch i
            req = Request(0, OpCode.BATCH_CREATE, "", 0, auth=auth, items=tuple((h, tuple(v)) for h, v in part))
            frames[i % n].append(wires[i % n].send(req, len(part))[1])
        registered = [0] * n
        errors: list[str] = []

        def run(k: int) -> None:
            try:
                send_all(k)
            except (OSError, DecodeError, threading.BrokenBarrierError) as exc:
                errors.append(f"connection {k}: {type(exc).__name__}: {exc}")
                start.abort()  # nobody waits for a connection that is gone

        def send_all(k: int) -> None:
            with socket.create_connection((HOST, node.port), timeout=120.0) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                start.wait(timeout=60.0)
                for frame in frames[k]:
                    sock.sendall(frame)
                    got: list[tuple[int, int]] = []
                    while not got:  # the answer's head only (the REST client does not parse bodies either)
                        data = sock.recv(1 << 20)
                        if not data:
                            errors.append("the node closed the connection")
                            return
                        got = wires[k].receive_heads(data)
                    size, code = got[0]
                    if code != ResponseCode.SUCCESS:
                        errors.append(f"BATCH_CREATE answered code {code}")
                        return
                    registered[k] += size

        start = threading.Barrier(n + 1)
        threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n)]
        for t in threads:
            t.start()
        with contextlib.suppress(threading.BrokenBarrierError):  # a connection failed: its error is in errors
            cpu0 = node.cpu_seconds()
            start.wait(timeout=60.0)
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        cpu = _cpu_delta(cpu0, node.cpu_seconds())
        _check_alive(node)
    if errors:
        raise BenchError(errors[0])
    if sum(registered) != len(items):
        raise BenchError(f"the node registered {sum(registered)} identifiers, expected {len(items)}")
    return elapsed, cpu


def _cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


BATCH_PATHS = ("core", "raw_sqlite", "rest", "binary")
TEMPLATE_PATHS = ("core", "core_template", "raw_sqlite", "rest", "rest_template")  # each kind beside its twin


def run_batch(cfg: BatchConfig, progress: report.ProgressFn) -> dict[str, Any]:
    """Batch registration: core, REST and raw SQLite; with ``cfg.template`` the records fill the tyre-batch
    template, and core and REST run twice, once naming the template (checked) and once not (the same
    values but the reference: not checked), next to each other in every repeat."""
    secret = secrets.token_urlsafe(24)
    names = handles(cfg.identifiers, "b")
    tw = TemplatedWorkload.load() if cfg.template else None
    template = tw.record if tw is not None else None
    if tw is None:
        items: dict[str, list[tuple[str, Any]]] = {"core": [(h, core_values(h)) for h in names]}
        json_of: dict[str, Callable[[str], list[dict[str, Any]]]] = {"rest": json_values}
    else:
        items = {"core": tw.items(names, checked=False), "core_template": tw.items(names, checked=True)}
        json_of = {f"rest{tail}": _json_by_handle(items[f"core{tail}"]) for tail in ("", "_template")}
    paths = TEMPLATE_PATHS if tw is not None else BATCH_PATHS
    rows: list[Any] = []
    per: dict[str, list[float]] = {p: [] for p in paths}
    cpu_per: dict[str, list[float]] = {p: [] for p in paths}  # CPU us per identifier (core, raw: this process)
    shed: dict[str, list[int]] = {p: [] for p in paths if p.startswith("rest")}
    paused: dict[str, list[float]] = {p: [] for p in shed}
    n = len(names)
    for rep in range(cfg.repeats):
        with tempfile.TemporaryDirectory(prefix="idresolve-bench-") as tmp_text:
            tmp = Path(tmp_text)
            # Alternating: the first repeat runs core first (its rows feed the raw baseline), the next ones in
            # reverse, so that no path always runs while the machine is busier.
            for path in paths if rep % 2 == 0 else tuple(reversed(paths)):
                cpu: float | None = None
                if path.startswith("core"):
                    elapsed, cpu = _core_batch(tmp / f"{path}.sqlite3", items[path], cfg.batch_size, secret, template)
                    if path == "core" and not rows:  # the encoded rows the store wrote, replayed by the raw baseline
                        rows = [r for r in read_rows(tmp / "core.sqlite3", PREFIX)
                                if template is None or r[0] != fold(template.handle)]
                        if len(rows) != n:
                            raise BenchError(f"the store holds {len(rows)} rows, expected {n}")
                elif path == "raw_sqlite":  # the first repeat runs core first, so rows exist by now
                    cpu0 = time.process_time()
                    elapsed = raw_sqlite_insert(tmp / "raw.sqlite3", list(chunks(rows, cfg.batch_size)))
                    cpu = time.process_time() - cpu0
                elif path == "binary":
                    elapsed, cpu = _binary_batch(tmp / path, items["core"], cfg.batch_size, secret, cfg.clients)
                else:
                    reg = _rest_batch(tmp / path, names, cfg.batch_size, secret, values=json_of[path], template=template,
                                      clients=cfg.clients)
                    elapsed, cpu = reg.elapsed_s, reg.cpu_s
                    shed[path].append(reg.shed)
                    paused[path].append(reg.paused_s)
                rate = n / elapsed if elapsed > 0 else 0.0
                per[path].append(rate)
                if cpu is not None and n:
                    cpu_per[path].append(cpu / n * 1e6)
                progress(f"batch: run {rep + 1}/{cfg.repeats} {path}: {rate:,.0f} identifiers/s "
                         f"({elapsed:.2f} s for {n:,})" + (f"; {shed[path][-1]} batches shed with 503 and sent again "
                                                           f"after {paused[path][-1]:.1f} s of pauses"
                                                           if path in shed and shed[path][-1] else ""))
    out: dict[str, Any] = {"config": asdict(cfg), "target_ids_per_s": TARGET_IDS_PER_S,
                           "values_per_identifier": len(items["core"][0][1]) if names else 0}
    for path, rates in per.items():
        out[path] = {"median_ids_per_s": round(report.median(rates), 1), "runs_ids_per_s": [round(r, 1) for r in rates]}
        if cpu_per[path]:
            out[path]["median_cpu_us_per_id"] = round(report.median(cpu_per[path]), 2)
            out[path]["runs_cpu_us_per_id"] = [round(c, 2) for c in cpu_per[path]]
    for path in shed:
        out[path]["shed_503_per_run"] = shed[path]
        out[path]["paused_s_per_run"] = [round(p, 2) for p in paused[path]]
    raw = out["raw_sqlite"]["median_ids_per_s"]
    out["ratio_core_raw"] = report.ratio(out["core"]["median_ids_per_s"], raw)
    out["ratio_rest_raw"] = report.ratio(out["rest"]["median_ids_per_s"], raw)
    if "binary" in out:
        out["ratio_binary_raw"] = report.ratio(out["binary"]["median_ids_per_s"], raw)
    out["note"] = ("core = validation, authority, existence checks, encoding and one SQLite transaction per batch "
                   "(SqliteStore, WAL, synchronous=NORMAL), in this process; end to end (REST: JSON over HTTP, "
                   "binary: the BATCH_CREATE opcode over TCP) to a node subprocess with its default worker "
                   f"processes, {cfg.clients} client connection(s) at once, one batch in flight on each, requests "
                   "encoded before the clock starts; raw = executemany of the rows the store wrote, same schema "
                   "and pragmas")
    if tw is not None:
        out["template"] = _template_costs(per, tw, cpu_per)
    return out


def _json_by_handle(items: Sequence[tuple[str, Sequence[HandleValue]]]) -> Callable[[str], list[dict[str, Any]]]:
    by_handle = {h: values for h, values in items}
    return lambda h: [v.to_json() for v in by_handle[h]]


def _template_costs(per: dict[str, list[float]], tw: TemplatedWorkload,
                    cpu_per: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """What checking costs: the time of a templated batch over the same batch without the reference (rate
    without / rate with), per repeat (the twin runs are next to each other) and its median."""
    out: dict[str, Any] = {"template": str(tw.ref), "fields": len(tw.template.fields),
                           "target_cost": TARGET_TEMPLATE_COST}
    for kind in ("core", "rest"):
        pairs = [round(plain / checked, 3) for plain, checked in zip(per[kind], per[f"{kind}_template"], strict=True)
                 if checked > 0]
        out[f"{kind}_cost_per_run"] = pairs
        out[f"{kind}_cost"] = round(report.median(pairs), 3) if pairs else None
        cpu = cpu_per or {}
        cpu_pairs = [round(checked / plain, 3) for plain, checked in
                     zip(cpu.get(kind, []), cpu.get(f"{kind}_template", []), strict=False) if plain > 0]
        if cpu_pairs:  # the CPU the work took (core: this process; REST: the node's processes), steadier
            out[f"{kind}_cpu_cost_per_run"] = cpu_pairs
            out[f"{kind}_cpu_cost"] = round(report.median(cpu_pairs), 3)
    out["note"] = ("cost = time of the batch naming the template (index 1001: every record checked) over the same "
                   "batch without that value (not checked), the two runs next to each other; median of the repeats")
    return out


# -- the suite ----------------------------------------------------------------------------------------------

def run_suite(rest_cfg: RestConfig, batch_cfg: BatchConfig, progress: report.ProgressFn) -> dict[str, Any]:
    env = report.environment(httpload.loop_name())
    progress("suite: REST resolution")
    rest = run_rest(rest_cfg, progress)
    progress("suite: batch registration")
    batch = run_batch(batch_cfg, progress)
    return {"kind": "suite", "environment": report.close_environment(env), "rest": rest, "batch": batch}


__all__ = ["BatchConfig", "BenchError", "RestConfig", "ServerFailed", "run_batch", "run_rest", "run_suite"]
