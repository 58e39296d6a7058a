"""One self-contained HTML page for one run or several side by side (a study, ``simulate compare``).

The charts are the bench reports' inline SVG (``bench.htmlreport``: ``line_chart``, ``bar_chart``,
``percentile_chart``), one series per run: offered and answered rates per hour, latency percentiles per
hour and overall, cache hit ratio over time, errors and sheds, per-node utilisation and queue length, and
the per-hop breakdown. The first run is the baseline of the table of differences.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from ..bench.htmlreport import bar_chart, line_chart, percentile_chart

Run = tuple[str, dict[str, Any]]
STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:1em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
         "text-align:right}th:first-child,td:first-child{text-align:left}h2{margin-top:1.6em}"
         ".worse{background:#f7d4d4}.better{background:#d9f2d9}pre{background:#f6f6f6;padding:.6em}")

# (label, how to read it from a report, unit, True when more is better)
SUMMARY: tuple[tuple[str, Callable[[dict[str, Any]], Any], str, bool | None], ...] = (
    ("resolutions answered", lambda r: r["resolutions"], "", None),
    ("success ratio", lambda r: r["success_ratio"], "", True),
    ("cache hit ratio", lambda r: r["cache_hit_ratio"], "", True),
    ("latency p50", lambda r: r["latency_ms"]["p50"], "ms", False),
    ("latency p90", lambda r: r["latency_ms"]["p90"], "ms", False),
    ("latency p99", lambda r: r["latency_ms"]["p99"], "ms", False),
    ("latency p99.9", lambda r: r["latency_ms"]["p999"], "ms", False),
    ("not found", lambda r: r["not_found"], "", False),
    ("failed", lambda r: r["failed"], "", False),
    ("shed (code 3)", lambda r: r["shed"], "", False),
    ("timeouts", lambda r: r["timeouts"], "", False),
    ("upstream requests", lambda r: r["upstream_requests"], "", False),
    ("top-level requests", lambda r: sum(n["requests"] for n in r["nodes"].values() if n["role"] == "top"), "", False),
    ("busiest node utilisation", lambda r: max((n["utilisation"] for n in r["nodes"].values()), default=0), "", False),
)


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _hours(runs: Sequence[Run]) -> list[tuple[float, str]]:
    rows = max((r["per_hour"] for _, r in runs), key=len)
    step = max(1, len(rows) // 8)
    return [(float(i), row.get("clock", str(i))) for i, row in enumerate(rows) if i % step == 0]


def _series(runs: Sequence[Run], name: str, get: Callable[[dict[str, Any]], Any]) -> list[tuple[str, list[tuple[float, float]]]]:
    out = []
    for label, r in runs:
        pts = [(float(i), float(v)) for i, row in enumerate(r["per_hour"]) if (v := get(row)) is not None]
        out.append((f"{name} {label}".strip() if len(runs) > 1 else name, pts))
    return out


def summary_table(runs: Sequence[Run]) -> str:
    head = "".join(f"<th>{_esc(label)}</th>" for label, _ in runs)
    rows = [f"<table><tr><th></th>{head}</tr>"]
    base = runs[0][1]
    for label, get, unit, better in SUMMARY:
        cells = []
        b = get(base)
        for i, (_, r) in enumerate(runs):
            v = get(r)
            cls = ""
            text = "" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:,.4g}"
            if i and v is not None and b is not None and better is not None and v != b:
                cls = "better" if (v > b) == better else "worse"
                text += f" ({'+' if v > b else ''}{(v - b) / b:.1%})" if b else ""
            cells.append(f"<td class='{cls}'>{_esc(text)} {_esc(unit) if text else ''}</td>")
        rows.append(f"<tr><td>{_esc(label)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "".join(rows)


def _node_bars(runs: Sequence[Run], key: str, unit: str, title: str, top: int = 12) -> str:
    totals: dict[str, float] = {}
    for _, r in runs:
        for name, n in r["nodes"].items():
            totals[name] = max(totals.get(name, 0.0), float(n[key]))
    names = sorted(totals, key=lambda k: -totals[k])[:top]
    scale = 100.0 if key == "utilisation" else 1.0
    groups = [(name, {label: float(r["nodes"].get(name, {}).get(key, 0.0)) * scale for label, r in runs})
              for name in names]
    return bar_chart(groups, unit=unit, title=title)


def render(runs: Sequence[Run], title: str = "") -> str:
    first = runs[0][1]
    title = title or (f"idresolve simulate: {first['workload']}" if len(runs) == 1
                      else f"idresolve simulate: {', '.join(label for label, _ in runs)}")
    ticks = _hours(runs)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{STYLE}</style>"
             f"</head><body><h1>{_esc(title)}</h1>"]
    for label, r in runs:
        parts.append(f"<p><b>{_esc(label)}</b>: workload {_esc(r['workload'])} ({_esc(r['description'])}), seed "
                     f"{r['seed']} run {r['run']}, topology {_esc(r['topology']['name'])} "
                     f"({r['topology']['running_nodes']} nodes, scenario {_esc(r['topology']['scenario'])}), "
                     f"from {_esc(r['start'])} for {r['virtual_seconds']:g} s of virtual time "
                     f"({r['wall_seconds']:g} s wall), {r['space']['identifiers']:,} identifiers.</p>")
    parts.append("<h2>Summary</h2>" + summary_table(runs))
    lc = line_chart
    parts.append("<h2>Offered and answered per hour</h2>")
    parts.append(lc(_series(runs, "offered", lambda h: h["offered_per_s"]) +
                    _series(runs, "answered ok", lambda h: h["ok"] / h["length_s"]), x_label="hour (clock time)",
                    y_label="requests per second", x_ticks=ticks, title="rates per hour"))
    parts.append("<h2>Latency per hour</h2>")
    groups = [("p50", "p90", "p99", "p999")] if len(runs) == 1 else [("p50",), ("p99",), ("p999",)]
    for ps in groups:
        series = [s for p in ps for s in _series(runs, p, lambda h, p=p: h["latency_ms"][p])]
        parts.append(lc(series, x_label="hour (clock time)", y_label=f"latency {'/'.join(ps)} (ms)", log_y=True,
                        x_ticks=ticks, title=f"latency {', '.join(ps)} per hour"))
    parts.append("<h2>Latency over the whole run</h2>")
    parts.append(percentile_chart([(label, {"distribution": r["latency_distribution_us"]}) for label, r in runs],
                                  "latency percentiles (us from arrival)"))
    parts.append("<h2>Cache hit ratio over time</h2>")
    parts.append(lc(_series(runs, "hit ratio", lambda h: h["cache_hit_ratio"]), x_label="hour (clock time)",
                    y_label="answered from the recursive node's cache", x_ticks=ticks, title="cache hit ratio"))
    parts.append("<h2>Errors and sheds</h2>")
    parts.append(lc(_series(runs, "not found/s", lambda h: h["not_found"] / h["length_s"])
                    + _series(runs, "failed/s", lambda h: h["failed"] / h["length_s"])
                    + _series(runs, "shed/s", lambda h: h["shed"] / h["length_s"])
                    + _series(runs, "timeouts/s", lambda h: (h["timeouts"] + h["unreachable"]) / h["length_s"]),
                    x_label="hour (clock time)", y_label="per second", x_ticks=ticks, title="errors"))
    parts.append("<h2>Nodes</h2><p>The busiest nodes (utilisation: share of the time the node's CPU was busy; "
                 "queue: requests admitted and not finished, mean by Little's law, and the peak).</p>")
    parts.append(_node_bars(runs, "utilisation", "%", "utilisation"))
    parts.append(_node_bars(runs, "mean_queue", "", "mean queue length"))
    parts.append(_node_bars(runs, "peak_queue", "", "peak queue length"))
    busiest = max(first["nodes"], key=lambda k: first["nodes"][k]["utilisation"], default=None)
    if busiest is not None:
        parts.append(lc([(f"{busiest} {label}".strip(), [(float(i), v * 100.0) for i, v in
                          enumerate(r["nodes"].get(busiest, {}).get("per_hour", {}).get("utilisation", []))])
                         for label, r in runs], x_label="hour (clock time)", y_label=f"{busiest} utilisation (%)",
                        x_ticks=ticks, title="busiest node per hour"))
    parts.append("<h2>Per hop</h2><p>Each upstream hop of a walk, from the recursive node's request to the "
                 "answer it took (link delays both ways, queue and service at the upstream node).</p>")
    groups = []
    for role in ("top", "secondary", "enterprise"):
        g = {f"{p} {label}".strip(): float(r["per_hop"][role]["latency_ms"][p] or 0.0)
             for label, r in runs if role in r["per_hop"] for p in ("p50", "p99")}
        if g:
            groups.append((role, g))
    if groups:
        parts.append(bar_chart(groups, unit="ms", title="per hop"))
    hop_runs = [(f"{role} {label}".strip(), {"distribution": r["per_hop"][role]["distribution"]})
                for label, r in runs for role in ("top", "secondary", "enterprise") if role in r["per_hop"]]
    if hop_runs:
        parts.append(percentile_chart(hop_runs, "per-hop latency percentiles (us)"))
    for label, r in runs:
        if r["events"]:
            rows = "".join(f"<tr><td>{e['at_s']:g} s</td><td>{_esc(e['text'])}</td><td>{_esc(e.get('note', ''))}</td></tr>"
                           for e in r["events"])
            parts.append(f"<h2>Events: {_esc(label)}</h2><table><tr><th>at</th><th>event</th><th></th></tr>{rows}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
