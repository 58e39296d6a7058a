"""What a run writes: ``report.json`` (the keys scripts read), CSV tables, and the run's performance.

``report.json`` holds only what the virtual run determined, plus ``wall_seconds``: the same seed and run
number give the same file byte for byte apart from that one field (its keys, their order, every float
rounded the same way). How fast it ran and how much memory it took go to ``perf.json`` beside it.
Required keys: ``resolutions`` (answered), ``wall_seconds``, ``virtual_seconds``, ``latency_ms`` (``p50``,
``p90``, ``p99``, ``p999``), ``per_hour`` (a list), ``nodes`` (per node ``requests``, ``utilisation``,
``shed``), ``cache_hit_ratio``, ``seed``.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..bench.hist import Buckets, distribution
from ..core.topology import config_hash
from .run import RunResult
from .stats import HOUR_S, code_name, percentiles_ms

FORMAT = "idresolve-simulation/1"
CHINA = timezone(timedelta(hours=8))


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b else None


def node_table(res: RunResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hours = len(res.stats.hours)
    nodes = [*res.cluster.auth.values(), *res.cluster.rec.values()]
    for node in sorted(nodes, key=lambda n: res.cluster.plan.node(n.name).index):
        s = node.server
        prev = (0, 0, 0.0, 0.0, 0)
        util, queue, peak, shed = [], [], [], []
        for i, snap in enumerate(s.hourly[:hours]):
            length = min(HOUR_S, res.duration_s - i * HOUR_S)  # the last hour of a run may be shorter
            util.append(round((snap[2] - prev[2]) / length, 6))
            queue.append(round((snap[3] - prev[3]) / length, 6))
            shed.append(snap[1] - prev[1])
            peak.append(snap[4])
            prev = snap
        out[node.name] = {"role": node.role, "requests": s.requests, "utilisation": round(s.busy_s / res.duration_s, 6),
                          "shed": s.shed, "peak_queue": s.peak_queue,
                          "mean_queue": round(s.sojourn_s / res.duration_s, 6),
                          "per_hour": {"utilisation": util, "mean_queue": queue, "peak_queue": peak, "shed": shed}}
    return out


def build_report(res: RunResult, label: str = "") -> dict[str, Any]:
    st, spec, w = res.stats, res.spec, res.spec.workload
    totals = st.totals()
    lat = Buckets(st.total_latency())
    writes = Buckets(st.write_lat)
    start = datetime.fromtimestamp(res.t_start, tz=UTC).astimezone(CHINA)
    per_hour = [h.to_dict(i, i * HOUR_S, min(HOUR_S, res.duration_s - i * HOUR_S)) for i, h in enumerate(st.hours)]
    for row in per_hour:
        row["clock"] = (start + timedelta(seconds=row["start_s"])).strftime("%H:%M")
    engine = res.engine
    return {
        "format": FORMAT,
        "workload": w.name,
        "variant": label or spec.label,
        "description": w.description,
        "seed": spec.seed,
        "run": spec.run,
        "topology": {"name": res.topology.name, "config_hash": config_hash(res.topology),
                     "running_nodes": len(res.topology.running_nodes()), "scenario": engine.links.scenario},
        "start": start.isoformat(),
        "virtual_seconds": res.duration_s,
        "wall_seconds": round(engine.wall_s, 3),
        "resolutions": totals["answered"],
        "offered": totals["offered"],
        "ok": totals["ok"],
        "not_found": totals["not_found"],
        "failed": totals["failed"],
        "shed": totals["shed"],
        "timeouts": totals["timeouts"],
        "unreachable": totals["unreachable"],
        "success_ratio": _ratio(totals["ok"], totals["answered"]),
        "cache_hit_ratio": _ratio(totals["hits"], totals["answered"]),
        "upstream_requests": totals["upstream"],
        "latency_ms": percentiles_ms(lat),
        "latency_distribution_us": distribution(lat),
        "per_hour": per_hour,
        "per_hop": st.per_hop(),
        "hops_per_resolution": {str(k): v for k, v in sorted(st.hop_counts.items())},
        "nodes": node_table(res),
        "codes": {code_name(c): n for c, n in sorted(st.codes.items())},
        "failures": dict(sorted(st.failures.items())),
        "writes": {"count": totals["writes"], "failed": totals["writes_failed"], "latency_ms": percentiles_ms(writes)},
        "events": st.events,
        "space": {"identifiers": res.cluster.space.total, "prefixes": len(res.cluster.space.prefixes),
                  "seeded": res.keys_seeded},
        "service_times": w.service_times.to_dict(),
        "settings": {k: getattr(w.nodes, k) for k in w.nodes.__dataclass_fields__},
        "arrivals": engine.arrivals_done,
        "events_processed": engine.events_done,
        "event_fingerprint": f"{engine.fingerprint:016x}",
    }


def perf(res: RunResult) -> dict[str, Any]:
    wall = max(1e-9, res.engine.wall_s)
    answered = res.stats.totals()["answered"]
    return {"wall_seconds": round(res.engine.wall_s, 3), "build_seconds": round(res.build_s, 3),
            "resolutions_per_wall_second": round(answered / wall, 1),
            "arrivals_per_wall_second": round(res.engine.arrivals_done / wall, 1),
            "events_per_wall_second": round(res.engine.events_done / wall, 1),
            "virtual_seconds_per_wall_second": round(res.duration_s / wall, 2),
            "peak_rss_mb": round(res.peak_rss_mb, 1), "load_average": list(os.getloadavg()), "cpus": os.cpu_count()}


HOUR_COLUMNS = ("hour", "clock", "offered", "offered_per_s", "answered", "answered_per_s", "ok", "not_found",
                "failed", "shed", "timeouts", "unreachable", "cache_hits", "cache_hit_ratio", "upstream_requests",
                "writes", "writes_failed")


def write_csv(report: dict[str, Any], out: Path) -> list[Path]:
    hours = out / "per_hour.csv"
    with hours.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*HOUR_COLUMNS, "p50_ms", "p90_ms", "p99_ms", "p999_ms"])
        for row in report["per_hour"]:
            lat = row["latency_ms"]
            w.writerow([row[k] for k in HOUR_COLUMNS] + [lat["p50"], lat["p90"], lat["p99"], lat["p999"]])
    nodes = out / "nodes.csv"
    with nodes.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["node", "role", "requests", "utilisation", "mean_queue", "peak_queue", "shed"])
        for name, n in report["nodes"].items():
            w.writerow([name, n["role"], n["requests"], n["utilisation"], n["mean_queue"], n["peak_queue"], n["shed"]])
    hops = out / "per_hop.csv"
    with hops.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["role", "answered", "timeouts", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms"])
        for role, h in report["per_hop"].items():
            lat = h["latency_ms"]
            w.writerow([role, h["answered"], h["timeouts"], lat["p50"], lat["p90"], lat["p99"], lat["p999"], lat["mean"]])
    return [hours, nodes, hops]


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, ensure_ascii=False) + "\n"


def write_run(res: RunResult, out: Path, label: str = "") -> dict[str, Any]:
    """``report.json``, ``perf.json``, the CSV tables and ``report.html`` in ``out``."""
    from .html import render

    out.mkdir(parents=True, exist_ok=True)
    report = build_report(res, label)
    (out / "report.json").write_text(dumps(report), encoding="utf-8")
    (out / "perf.json").write_text(json.dumps(perf(res), indent=1) + "\n", encoding="utf-8")
    write_csv(report, out)
    (out / "report.html").write_text(render([(report["variant"] or report["workload"], report)]), encoding="utf-8")
    return report


def load_report(path: Path) -> dict[str, Any]:
    """A ``report.json`` (or the directory holding one)."""
    p = path / "report.json" if path.is_dir() else path
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: not a simulation report: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{p}: not a simulation report (format {FORMAT})")
    return data
