"""The HTML report of ``bench run``: one self-contained file, charts as inline SVG drawn here (no plotting
dependency): latency percentile distributions (HDR style: the x axis stretches the tail, 1/(1-p)), the
throughput-latency curve of a sweep, where the time goes per hop of a cold resolution, and the timeline of
a run where a node was killed."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .runreport import result_text
from .targets import targets_text

W, H = 640, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 150, 16, 42
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
Series = tuple[str, Sequence[tuple[float, float]]]


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1e6:g}M"
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    steps = (1, 2, 5) if hi / max(lo, 1e-9) >= 10 else (1, 1.5, 2, 3, 5, 7)  # less than a decade: more ticks
    out = []
    e = math.floor(math.log10(max(lo, 1e-9)))
    while 10 ** e <= hi * 1.0001:
        for m in steps:
            v = m * 10 ** e
            if lo <= v <= hi:
                out.append(float(v))
        e += 1
    return out


def _lin_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def line_chart(series: Sequence[Series], *, x_label: str, y_label: str, log_x: bool = False, log_y: bool = False,
               x_ticks: Sequence[tuple[float, str]] | None = None, vline: tuple[float, str] | None = None,
               title: str = "") -> str:
    pts = [(x, y) for _, s in series for x, y in s if (not log_x or x > 0) and (not log_y or y > 0)]
    if not pts:
        return "<p><em>no data to draw</em></p>"
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = (min(ys), max(ys)) if log_y else (0.0, max(ys))
    if x1 == x0:
        x1 = x0 * 1.1 + 1
    if y1 == y0:
        y1 = y0 * 1.1 + 1
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(v: float) -> float:
        return PAD_L + (tx(v) - tx(x0)) / ((tx(x1) - tx(x0)) or 1) * pw

    def sy(v: float) -> float:
        return PAD_T + ph - (ty(v) - ty(y0)) / ((ty(y1) - ty(y0)) or 1) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif" font-size="11"><title>{_esc(title)}</title>',
           f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for v in (_log_ticks(y0, y1) if log_y else _lin_ticks(y0, y1)):
        y = sy(v)
        out.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{PAD_L + pw}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    ticks = x_ticks if x_ticks is not None else [(v, _fmt(v)) for v in (_log_ticks(x0, x1) if log_x else _lin_ticks(x0, x1))]
    for v, label in ticks:
        if x0 <= v <= x1:
            x = sx(v)
            out.append(f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{PAD_T + ph}" stroke="#eee"/>'
                       f'<text x="{x:.1f}" y="{PAD_T + ph + 14}" text-anchor="middle">{_esc(label)}</text>')
    if vline is not None and x0 <= vline[0] <= x1:
        x = sx(vline[0])
        out.append(f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{PAD_T + ph}" stroke="#000" stroke-dasharray="4 3"/>'
                   f'<text x="{x + 3:.1f}" y="{PAD_T + 12}">{_esc(vline[1])}</text>')
    for i, (label, s) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        good = [(sx(x), sy(y)) for x, y in s if (not log_x or x > 0) and (not log_y or y > 0)]
        if good:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in good)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8"/>')
            if len(good) <= 30:
                out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in good)
        ly = PAD_T + 14 + 16 * i
        out.append(f'<rect x="{W - PAD_R + 10}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{W - PAD_R + 24}" y="{ly}">{_esc(label[:22])}</text>')
    out.append(f'<text x="{PAD_L + pw / 2:.0f}" y="{H - 6}" text-anchor="middle">{_esc(x_label)}</text>'
               f'<text x="12" y="{PAD_T + ph / 2:.0f}" transform="rotate(-90 12 {PAD_T + ph / 2:.0f})" '
               f'text-anchor="middle">{_esc(y_label)}</text></svg>')
    return "".join(out)


def bar_chart(groups: Sequence[tuple[str, Mapping[str, float]]], *, unit: str, title: str = "") -> str:
    """Horizontal bars: one group per row label, one bar per series in it."""
    names = sorted({k for _, g in groups for k in g}, key=lambda k: ["measured", "model"].index(k)
                   if k in ("measured", "model") else 9)
    vmax = max((v for _, g in groups for v in g.values()), default=0.0) or 1.0
    bar_h, gap = 12, 10
    height = PAD_T + len(groups) * (len(names) * bar_h + gap) + 30
    pw = W - 170 - 80
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" '
           f'font-family="sans-serif" font-size="11"><title>{_esc(title)}</title>']
    y = PAD_T
    for label, g in groups:
        out.append(f'<text x="164" y="{y + bar_h * len(names) / 2 + 4:.0f}" text-anchor="end">{_esc(label)}</text>')
        for i, n in enumerate(names):
            v = g.get(n)
            if v is None:
                continue
            w = v / vmax * pw
            out.append(f'<rect x="170" y="{y + i * bar_h}" width="{w:.1f}" height="{bar_h - 2}" fill="{COLORS[i]}"/>'
                       f'<text x="{174 + w:.1f}" y="{y + i * bar_h + 9}">{v:,.0f} {unit}</text>')
        y += len(names) * bar_h + gap
    for i, n in enumerate(names):
        out.append(f'<rect x="{170 + i * 110}" y="{y + 4}" width="10" height="10" fill="{COLORS[i]}"/>'
                   f'<text x="{184 + i * 110}" y="{y + 13}">{_esc(n)}</text>')
    out.append("</svg>")
    return "".join(out)


_P_TICKS = [(2.0, "50%"), (10.0, "90%"), (100.0, "99%"), (1000.0, "99.9%"), (10_000.0, "99.99%"),
            (100_000.0, "99.999%")]


def _dist_series(label: str, dist: Sequence[Sequence[float]]) -> Series:
    pts = []
    for p, us in dist:
        x = 1.0 / (1.0 - p / 100.0) if p < 100 else None
        if x is not None:
            pts.append((x, float(us)))
    if dist and pts:
        pts.append((pts[-1][0] * 2, float(dist[-1][1])))  # the maximum, one halving further out
    return label, pts


def percentile_chart(runs: Sequence[tuple[str, Mapping[str, Any]]], title: str) -> str:
    series = [_dist_series(label, r.get("distribution", [])) for label, r in runs if r.get("distribution")]
    return line_chart(series, x_label="percentile", y_label="latency (us, from the scheduled send)", log_x=True,
                      log_y=True, x_ticks=_P_TICKS, title=title)


def sweep_chart(sw: Mapping[str, Any], title: str) -> str:
    series: list[Series] = []
    for who in ("node", "baseline"):
        if who not in sw:
            continue
        steps = sw[who]["steps"]
        for key, name in (("p50_us", "p50"), ("p99_us", "p99")):
            pts = [(float(s.get("offered_per_s") or 0), float(s["flat"][key])) for s in steps if s["flat"].get(key)]
            series.append((f"{who} {name}", pts))
    return line_chart(series, x_label="offered rate, requests/s (open loop; the table has the rates achieved)",
                      y_label="latency (us)", log_y=True, title=title)


def timeline_chart(run: Mapping[str, Any], kill_s: float | None, title: str) -> str:
    tl = run.get("timeline", [])
    rate = ("answers/s", [(float(r["t_s"]), float(r["rate_per_s"])) for r in tl])
    errs = ("errors+timeouts /s", [(float(r["t_s"]), float(r["errors"] + r["timeouts"]) / max(1e-9, _step(tl)))
                                   for r in tl])
    p99 = ("p99 us", [(float(r["t_s"]), float(r["p99_us"])) for r in tl if r.get("p99_us")])
    v = (kill_s, "kill") if kill_s is not None else None
    return (line_chart([rate, errs], x_label="seconds into the run", y_label="per second", vline=v, title=title)
            + line_chart([p99], x_label="seconds into the run", y_label="p99 latency (us)", log_y=True, vline=v,
                         title=title + " (p99)"))


def _step(tl: Sequence[Mapping[str, Any]]) -> float:
    return float(tl[1]["t_s"]) - float(tl[0]["t_s"]) if len(tl) > 1 else 1.0


def trace_chart(tr: Mapping[str, Any], title: str) -> str:
    groups = []
    for role, f in tr.get("roles", {}).items():
        g = {"measured": float(f["mean_us"]) * float(f.get("per_resolution", 1.0))}
        if f.get("model_us") is not None:
            g["model"] = float(f["model_us"]) * float(f.get("per_resolution", 1.0))
        groups.append((role, g))
    return bar_chart(groups, unit="us", title=title)


def render(rep: Mapping[str, Any]) -> str:
    env = rep["environment"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>idresolve bench run</title><style>",
             "body{font-family:sans-serif;max-width:1000px;margin:1em auto;padding:0 1em;color:#222}"
             "pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
             ".pass{background:#d9f2d9}.fail{background:#f7d4d4}.na{background:#eee}h2{margin-top:1.6em}",
             "</style></head><body><h1>idresolve bench run</h1>"]
    py = env.get("python", {})
    rows = [("when", env.get("timestamp")), ("CPU", f"{env.get('cpu_model')} ({env.get('cpu_count')} CPUs)"),
            ("Python", f"{py.get('version')} {py.get('implementation')} {py.get('build', '')} {py.get('compiler', '')}"),
            ("event loop", env.get("event_loop")), ("platform", env.get("platform")),
            ("packages", ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())),
            ("topologies", ", ".join(env.get("topologies", []))), ("config hashes", ", ".join(env.get("config_hashes", []))),
            ("load average", f"{env.get('load_average')} -> {env.get('load_average_after')}")]
    parts.append("<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>")
    parts.append(f"<p>{_esc(env.get('note', ''))}</p><h2>Targets</h2><table><tr><th></th><th>target</th><th>value</th>"
                 "<th>limit</th><th>baseline ratio</th><th>how</th></tr>")
    for t in rep.get("targets", []):
        cls = {True: "pass", False: "fail", None: "na"}[t["met"]]
        mark = t.get("status", "")
        val = "not measured" if t["value"] is None else f"{t['value']:,} {t['unit']}"
        ratio = "" if t.get("baseline_ratio") is None else f"{t['baseline_ratio']} ({t['baseline_text']} {t['baseline']:,})"
        parts.append(f"<tr class='{cls}'><td>{mark} {t['id']}</td><td>{_esc(t['text'])}</td><td>{_esc(val)}</td>"
                     f"<td>{_esc(t['op'])} {t['limit']:,}</td><td>{_esc(ratio)}</td>"
                     f"<td>{_esc(t.get('how', ''))} {_esc(t.get('note', ''))}</td></tr>")
    parts.append("</table>")
    parts.append(f"<pre>{_esc(targets_text(rep.get('targets', [])))}</pre>")
    for r in rep.get("results", []):
        title = f"{r['scenario']} / {r['protocol']}"
        parts.append(f"<h2>{_esc(title)}</h2><pre>{_esc(result_text(r))}</pre>")
        if "error" in r:
            continue
        if r.get("runs"):
            short = {"node": "node", "baseline": "echo" if r["protocol"] == "binary" else "bare aiohttp"}
            runs = [(f"{short.get(who, who)} #{i + 1}", x) for who, xs in r["runs"].items() for i, x in enumerate(xs)]
            parts.append(percentile_chart(runs, f"{title}: latency percentiles"))
        sw = r.get("sweep")
        if sw:
            parts.append(sweep_chart(sw, f"{title}: throughput vs latency"))
            halves = [(f"{who} at half", sw[who]["half"]) for who in ("node", "baseline") if who in sw]
            parts.append(percentile_chart(halves, f"{title}: latency percentiles at half the saturation rate"))
        if r.get("trace", {}).get("roles"):
            parts.append(f"<p>Where the time goes per cold resolution ({_esc(r['trace']['samples'])} traced; mean per "
                         "resolution, model = the latency model's round trip):</p>")
            parts.append(trace_chart(r["trace"], f"{title}: per hop"))
        k = r.get("kill")
        if k:
            parts.append(timeline_chart(k["run"], k.get("fired_s"), f"{title}: timeline"))
            parts.append(percentile_chart([("whole run", k["run"])], f"{title}: latency percentiles"))
    parts.append("</body></html>")
    return "\n".join(parts)
