"""Medians over repeats, the printed tables, and the JSON report with the environment it was measured in."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("idresolve", "aiohttp", "msgpack", "orjson", "uvloop", "hdrhistogram", "prometheus-client")
SHARED_MACHINE_NOTE = ("client and server processes share this machine ({cpus} CPUs); nothing is pinned to "
                       "cores, so figures are for comparison within one run, not absolute capacity")


class Progress:
    """Progress lines on stderr (figures go to stdout), each stamped with seconds since the start."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[bench {time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)


ProgressFn = Callable[[str], None]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def median_of(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    return median([float(r[key]) for r in runs if key in r])


def ratio(ours: float, base: float) -> float:
    return round(ours / base, 3) if base > 0 else 0.0


# -- environment -------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(loop: str) -> dict[str, Any]:
    cpus = os.cpu_count() or 0
    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "build": " ".join(platform.python_build()), "compiler": platform.python_compiler(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": cpus,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "event_loop": loop,
        "packages": package_versions(),
        "note": SHARED_MACHINE_NOTE.format(cpus=cpus),
    }


def close_environment(env: dict[str, Any]) -> dict[str, Any]:
    """Add what the machine looked like at the end of the run (other work makes the figures noisy)."""
    env["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return env


def busy_note(env: Mapping[str, Any]) -> str:
    loads = [x[0] for x in (env.get("load_average"), env.get("load_average_after")) if x]
    cpus = env.get("cpu_count") or 1
    if loads and max(loads) > cpus:
        return (f"warning: the machine was busy with other work (1-minute load average up to {max(loads):.1f} on "
                f"{cpus} CPUs): expect noisy figures; the per-request CPU ratio is the steadier one")
    return ""


def default_report_path(now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path("bench-results") / f"{stamp}.json"


def write_json(path: Path, report: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# -- text ----------------------------------------------------------------------------------------------

def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def fmt_us(x: float | int | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def target_text(value: float, target: float) -> str:
    return f"{value:.2f}x (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"


def rest_text(res: Mapping[str, Any]) -> str:
    cfg = res["config"]
    rows = []
    for who in ("node", "baseline"):
        m = res[who]["median"]
        rows.append([res[who]["label"], fmt_rate(m["rate_per_s"]), fmt_us(m["p50_us"]), fmt_us(m["p90_us"]),
                     fmt_us(m["p99_us"]), fmt_us(m["max_us"]), f"{m['server_cpu_us_per_req']:.1f}",
                     f"{m['client_cpu_us_per_req']:.1f}", str(m["errors"])])
    head = (f"REST resolution, GET /api/handles/<handle>: closed loop from {res.get('load', 'the Python client')}, "
            f"{cfg['connections']} keep-alive connections, "
            f"{cfg['duration_s']:g} s per run, median of {cfg['repeats']} runs each (node and baseline "
            f"alternating), answers of {res['body_bytes']} bytes")
    body = table(rows, ["server", "requests/s", "p50 us", "p90 us", "p99 us", "max us", "server CPU us/req",
                        "client CPU us/req", "not 2xx (503: shed)"])
    return "\n".join([head, body, f"ratio node/baseline (requests/s): {target_text(res['ratio'], res['target_ratio'])}",
                      f"per-run ratios: {', '.join(f'{r:.2f}' for r in res['pair_ratios'])}",
                      f"ratio by server CPU per request (baseline/node): {res['cpu_ratio']:.2f}x "
                      "(less disturbed by other work on the machine)",
                      "note: " + res["note"]])


def _cpu(path: Mapping[str, Any]) -> str:
    """CPU microseconds per identifier: the bench process for core and raw, the node's processes for REST and
    binary (its workers included); steadier than the rate on a shared machine."""
    cpu = path.get("median_cpu_us_per_id")
    return "" if cpu is None else f"{cpu:.1f}"


def batch_text(res: Mapping[str, Any]) -> str:
    cfg = res["config"]
    rows = [[label, fmt_rate(res[key]["median_ids_per_s"]),
             f"{ratio(res[key]['median_ids_per_s'], res['raw_sqlite']['median_ids_per_s']):.2f}", _cpu(res[key])]
            for key, label in (("core", "core: AuthoritativeNode.batch_create + SqliteStore"),
                               ("rest", "end to end: POST /api/batch to a node subprocess"),
                               ("binary", "end to end: binary BATCH_CREATE to a node subprocess"),
                               ("raw_sqlite", "baseline: raw sqlite3 executemany, same rows")) if key in res]
    head = (f"Batch registration into the durable store: {cfg['identifiers']:,} identifiers, {cfg['batch_size']} "
            f"per batch (one transaction each), {cfg.get('clients', 1)} client connection(s) at once, median of "
            f"{cfg['repeats']} alternating runs, each beside raw sqlite3 in the same run")
    t = res["target_ids_per_s"]
    verdict = [f"{name} vs target {t:,}/s: {'met' if res[key]['median_ids_per_s'] >= t else 'NOT met'}"
               for key, name in (("core", "core"), ("rest", "end to end REST"), ("binary", "end to end binary"))
               if key in res]
    tpl = res.get("template")
    if tpl is not None:
        for key, label in (("core_template", "core, naming the template (every record checked)"),
                           ("rest_template", "end to end, naming the template")):
            rows.insert(len(rows) - 1, [label, fmt_rate(res[key]["median_ids_per_s"]),
                                        f"{ratio(res[key]['median_ids_per_s'], res['raw_sqlite']['median_ids_per_s']):.2f}",
                                        _cpu(res[key])])
        head += f"; records fill {tpl['template']} ({res['values_per_identifier']} values each)"
    lines = [head, table(rows, ["path", "identifiers/s", "x raw", "CPU us/id"]), "; ".join(verdict)]
    if tpl is not None:
        for kind, name in (("core", "core"), ("rest", "end to end")):
            cost = tpl[f"{kind}_cost"]
            lines.append(f"checking against the template, {name}: {cost:.3f}x the time of the same batch unchecked "
                         f"(runs {', '.join(f'{c:.3f}' for c in tpl[f'{kind}_cost_per_run'])}; target <= "
                         f"{tpl['target_cost']}x: {'met' if cost <= tpl['target_cost'] else 'NOT met'})")
            cpu_cost = tpl.get(f"{kind}_cpu_cost")
            if cpu_cost is not None:
                lines.append(f"  the same in CPU time ({'this process' if kind == 'core' else 'the node'}): "
                             f"{cpu_cost:.3f}x (runs {', '.join(f'{c:.3f}' for c in tpl[f'{kind}_cpu_cost_per_run'])})")
    for path in ("rest", "rest_template"):
        if path in res and any(res[path]["shed_503_per_run"]):
            lines.append(f"{path}: the node shed {sum(res[path]['shed_503_per_run'])} batches with 503 (code 3); "
                         f"they were sent again after {sum(res[path]['paused_s_per_run']):.1f} s of pauses in all, "
                         "which count in its rate")
    notes = [res["note"]] + ([tpl["note"]] if tpl is not None else [])
    return "\n".join([*lines, *("note: " + n for n in notes)])


def suite_text(report: Mapping[str, Any]) -> str:
    rest, batch = report["rest"], report["batch"]
    raw = batch["raw_sqlite"]["median_ids_per_s"]
    rows = [
        ["rest: node requests/s", fmt_rate(rest["node"]["median"]["rate_per_s"]), ""],
        ["rest: node p50 / p90 / p99 / max us", "/".join(fmt_us(rest["node"]["median"][k])
                                                         for k in ("p50_us", "p90_us", "p99_us", "max_us")), ""],
        ["rest: bare aiohttp requests/s", fmt_rate(rest["baseline"]["median"]["rate_per_s"]), ""],
        ["rest: bare aiohttp p50 / p90 / p99 / max us", "/".join(fmt_us(rest["baseline"]["median"][k])
                                                                 for k in ("p50_us", "p90_us", "p99_us", "max_us")), ""],
        ["rest: node / bare aiohttp server CPU us/request",
         f"{rest['node']['median']['server_cpu_us_per_req']:.1f} / {rest['baseline']['median']['server_cpu_us_per_req']:.1f}", ""],
        ["rest: ratio node/baseline (requests/s)", f"{rest['ratio']:.2f}", f">= {rest['target_ratio']:g}"],
        ["rest: ratio by server CPU (baseline/node)", f"{rest['cpu_ratio']:.2f}", ""],
        ["batch: core identifiers/s", fmt_rate(batch["core"]["median_ids_per_s"]), f">= {batch['target_ids_per_s']:,}"],
        ["batch: REST identifiers/s", fmt_rate(batch["rest"]["median_ids_per_s"]), f">= {batch['target_ids_per_s']:,}"],
        ["batch: raw sqlite identifiers/s", fmt_rate(raw), ""],
        ["batch: ratio core/raw", f"{ratio(batch['core']['median_ids_per_s'], raw):.2f}", ""],
        ["batch: ratio REST/raw", f"{ratio(batch['rest']['median_ids_per_s'], raw):.2f}", ""],
    ]
    env = report["environment"]
    head = (f"idresolve bench suite, {env['timestamp']}: Python {env['python']['version']} "
            f"({env['python']['implementation']}, {env['event_loop']}), {env['cpu_model']}, {env['cpu_count']} CPUs")
    lines = [head, table(rows, ["figure", "value", "target"]), "note: " + env["note"]]
    return "\n".join(lines + ([busy_note(env)] if busy_note(env) else []))
