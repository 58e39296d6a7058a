"""The figures of a ``bench run`` report: a flat table (for the CSV and ``bench compare``), the printed
summary (the targets themselves: ``bench.targets``).

Figure names are ``scenario.protocol.server.mode.metric`` (``cached.binary.node.closed.rate_per_s``); each
figure carries its unit, which direction is better, and its spread over repeats (``(max - min) / median``)
when there were several: ``compare`` uses the spread to tell a change from noise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

from .report import fmt_rate, fmt_us, table
from .targets import targets_text

Figure = dict[str, Any]

UNITS = {"rate_per_s": ("1/s", "higher"), "server_answers_per_cpu_s": ("1/cpu-s", "higher"),
         "saturation_per_s": ("1/s", "higher"), "server_us_per_answer": ("us", "lower"),
         "cluster_us_per_answer": ("us", "lower"), "client_us_per_request": ("us", "lower"),
         "errors": ("count", "lower"), "timeouts": ("count", "lower"), "recovery_s": ("s", "lower"),
         "ready_s": ("s", "lower"), "rss_mb": ("MB", "lower"), "model_ratio": ("x", "closer to 1")}
MB = 1024 * 1024


def unit_of(metric: str) -> tuple[str, str]:
    if metric in UNITS:
        return UNITS[metric]
    if metric.endswith("_us"):
        return "us", "lower"
    return "", "higher"


def _add(out: dict[str, Figure], name: str, value: Any, spread: float | None = None, runs: int | None = None) -> None:
    if value is None:
        return
    metric = name.rsplit(".", 1)[-1]
    unit, better = unit_of(metric)
    fig: Figure = {"value": value, "unit": unit, "better": better}
    if spread is not None:
        fig["spread"] = spread
    if runs is not None:
        fig["runs"] = runs
    out[name] = fig


def figures(rep: Mapping[str, Any]) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    for i, c in enumerate(rep.get("clusters", [])):
        tag = f"cluster.{c['topology']}.latency-{c['latency']}" + (f".{i}" if i else "")
        if c.get("own"):
            _add(out, f"{tag}.ready_s", c.get("ready_s"))
            rss = max((x or {}).get("total_bytes", 0) for x in (c.get("rss_ready"), c.get("rss_after")))
            _add(out, f"{tag}.rss_mb", round(rss / MB, 1) if rss else None)
    for r in rep.get("results", []):
        if "error" in r:
            continue
        base = f"{r['scenario']}.{r['protocol']}"
        mode = r.get("mode", "closed")
        for who, m in r.get("median", {}).items():
            for k, v in m.items():
                if k in ("runs", "spread", "crosscheck", "late", "lost") or v is None:
                    continue
                if k in ("errors", "timeouts") and not v:
                    continue
                _add(out, f"{base}.{who}.{mode}.{k}", v, (m.get("spread") or {}).get(k), m.get("runs"))
        for k, v in r.get("ratios", {}).items():
            out[f"{base}.ratio.{mode}.{k}"] = {"value": v, "unit": "x", "better": unit_of(k)[1]}
        sw = r.get("sweep")
        if sw:
            for who in ("node", "baseline"):
                if who not in sw:
                    continue
                _add(out, f"{base}.{who}.sweep.saturation_per_s", sw[who]["saturation_per_s"])
                hm = sw[who].get("half_median") or sw[who].get("half", {}).get("flat", {})
                for k, v in hm.items():
                    if k not in ("runs", "spread", "crosscheck", "late", "lost", "errors", "timeouts"):
                        _add(out, f"{base}.{who}.half-saturation.{k}", v, (hm.get("spread") or {}).get(k), hm.get("runs"))
            if "ratios" in sw:
                out[f"{base}.ratio.sweep.saturation"] = {"value": sw["ratios"]["saturation"], "unit": "x", "better": "higher"}
        tr = r.get("trace", {})
        for role, f in tr.get("roles", {}).items():
            _add(out, f"{base}.trace.{role.replace(' ', '_')}.mean_us", f.get("mean_us"))
        md = r.get("model")
        if md and "ratio" in md:
            out[f"{base}.model.model_ratio"] = {"value": md["ratio"], "unit": "x", "better": "closer to 1"}
            _add(out, f"{base}.model.measured_mean_us", md["measured_mean_us"])
            _add(out, f"{base}.model.expected_mean_us", md["expected_mean_us"])
        rp = r.get("replication")
        if rp:
            for key in ("lag_p50_ms", "lag_p99_ms"):
                _add(out, f"{base}.replication.mirror.{key}", rp["steady"]["mirror"].get(key))
                _add(out, f"{base}.replication.registry.{key}", rp["steady"]["registry"].get(key))
            _add(out, f"{base}.replication.down.lag_max_ms", rp["mirror_down"].get("lag_max_ms"))
            _add(out, f"{base}.replication.caught_up_s", rp["back"].get("caught_up_s"))
        k = r.get("kill", {}).get("analysis")
        if k and k.get("killed"):
            for side in ("before", "after", "steady_after"):
                for key in ("rate_per_s", "p50_us", "p99_us"):
                    _add(out, f"{base}.kill.{side}.{key}", (k.get(side) or {}).get(key))
            _add(out, f"{base}.kill.errors", k.get("errors_after"))
            _add(out, f"{base}.kill.timeouts", k.get("timeouts_after"))
            _add(out, f"{base}.kill.recovery_s", k.get("recovery_s"))
    return out


def csv_text(rep: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["figure", "value", "unit", "better", "runs", "spread"])
    for name, f in rep.get("figures", {}).items():
        w.writerow([name, f["value"], f["unit"], f["better"], f.get("runs", ""), f.get("spread", "")])
    for r in rep.get("results", []):  # the sweep curves, point by point
        for who, sw in (r.get("sweep") or {}).items():
            if who == "ratios":
                continue
            for s in sw.get("steps", []):
                name = f"{r['scenario']}.{r['protocol']}.{who}.sweep@{s['fraction']:g}"
                w.writerow([f"{name}.offered_per_s", s.get("offered_per_s"), "1/s", "", "", ""])
                for k in ("rate_per_s", "p50_us", "p99_us", "p99_9_us"):
                    v = s.get("flat", {}).get(k)
                    if v is not None:
                        w.writerow([f"{name}.{k}", v, *unit_of(k), "", ""])
    for t in rep.get("targets", []):
        w.writerow([f"target.{t['id']}", t.get("value"), t.get("unit"), t.get("op"), "", t.get("status", "")])
    return buf.getvalue()


# -- the printed summary -----------------------------------------------------------------------------------

def _row(label: str, f: Mapping[str, Any], r: Mapping[str, Any] | None = None, check: str = "") -> list[str]:
    r = r or {}
    return [label, fmt_rate(f.get("rate_per_s", 0)), fmt_us(f.get("p50_us")), fmt_us(f.get("p90_us")),
            fmt_us(f.get("p99_us")), fmt_us(f.get("p99_9_us")), fmt_us(f.get("max_us")), fmt_us(f.get("ok_p99_us")),
            "-" if f.get("server_us_per_answer") is None else f"{f['server_us_per_answer']:.1f}",
            "-" if f.get("server_answers_per_cpu_s") is None else fmt_rate(f["server_answers_per_cpu_s"]),
            str(r.get("errors", 0)), str(r.get("timeouts", 0)), check]


#: Latency columns count every request (errors, and timeouts at the timeout); "ok p99" the successes only.
HEAD = ["server", "answers/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "ok p99 us", "CPU us/answer",
        "answers/CPU-s", "errors", "timeouts", "server counters"]


def result_text(r: Mapping[str, Any]) -> str:
    title = f"{r['scenario']} / {r['protocol']}"
    if "error" in r:
        return f"{title}: FAILED: {r['error']}"
    head = (f"{title}: {r.get('description', '')}; {r['cluster']} cluster, latency {r['latency']}, {r['node']}"
            f"{' in its own process' if r.get('node_own_process') else ''}, {r['identifiers']:,} identifiers, "
            f"mode {r['mode']}")
    lines = [head]
    if "median" in r:
        rows = [_row(r["labels"].get(who, who), m, m, m.get("crosscheck", "")) for who, m in r["median"].items()]
        lines.append(table(rows, HEAD))
        if r.get("ratios"):
            q = r["ratios"]
            lines.append("ratio node/baseline: " + ", ".join(f"{k} {v:.2f}x" for k, v in q.items()))
    sw = r.get("sweep")
    if sw:
        for who in ("node", "baseline"):
            if who not in sw:
                continue
            rows = [[f"{s['fraction']:.0%}", fmt_rate(s.get("offered_per_s") or 0), fmt_rate(s.get("rate_per_s", 0)),
                     fmt_us(s["flat"].get("p50_us")), fmt_us(s["flat"].get("p99_us")), fmt_us(s["flat"].get("p99_9_us")),
                     str(s.get("errors", 0)), str(s.get("timeouts", 0)), "yes" if _sus(s) else "no"]
                    for s in sw[who]["steps"]]
            lines.append(f"sweep {who}: probe {sw[who]['probe']['rate_per_s']:,.0f}/s closed loop; saturation "
                         f"{sw[who]['saturation_per_s']:,.0f}/s")
            lines.append(table(rows, ["step", "offered/s", "answers/s", "p50 us", "p99 us", "p99.9 us", "errors",
                                      "timeouts", "kept up"]))
        rows = [_row(f"{who} at half the node's saturation", sw[who].get("half_median") or sw[who]["half"]["flat"],
                     sw[who].get("half_median") or sw[who]["half"],
                     (sw[who].get("half_median") or {}).get("crosscheck")
                     or sw[who]["half"].get("crosscheck", {}).get("verdict", "")) for who in ("node", "baseline") if who in sw]
        lines.append(table(rows, HEAD))
        if "ratios" in sw:
            lines.append(f"ratio node/baseline: saturation {sw['ratios']['saturation']:.2f}x; at the same rate: "
                         + ", ".join(f"{k} {v:.2f}x" for k, v in sw["ratios"]["half"].items()))
    tr = r.get("trace")
    if tr and tr.get("roles"):
        rows = [[role, f"{f['per_resolution']:.2f}", f"{f['mean_us']:,.0f}", fmt_us(f.get("p50_us")),
                 fmt_us(f.get("p99_us")), "-" if f.get("model_us") is None else f"{f['model_us']:,.0f}"]
                for role, f in tr["roles"].items()]
        lines.append(f"where the time goes ({tr['samples']} traced cold resolutions; hop times as the recursive node "
                     "measured them)")
        lines.append(table(rows, ["hop", "per resolution", "mean us", "p50 us", "p99 us", "model us"]))
    md = r.get("model")
    if md and "ratio" in md:
        lines.append(f"latency model: measured mean {md['measured_mean_us']:,.0f} us (from the actual send; "
                     f"{md.get('scheduled_mean_us', 0):,.0f} us from the scheduled one), expected "
                     f"{md['expected_mean_us']:,.0f} us (ratio {md['ratio']:.3f}; within 5 %: "
                     f"{'yes' if md['within'] else 'no'})")
    rp = r.get("replication")
    if rp:
        rows = [[phase, str(f.get("samples")), str(f.get("lag_p50_ms")), str(f.get("lag_p99_ms")), str(f.get("lag_max_ms"))]
                for phase, f in (("steady: mirror", rp["steady"]["mirror"]), ("steady: registry", rp["steady"]["registry"]),
                                 ("mirror down", rp["mirror_down"]), ("mirror back", rp["back"]),
                                 ("after: mirror", rp["after"]["mirror"]), ("after: registry", rp["after"]["registry"]))]
        lines.append(f"{rp['primary']} -> {rp['mirror']} and {rp['registry_from']} -> {rp['registry_peer']}, "
                     f"{rp['rate_per_s']:g} writes/s ({rp['writes']['mirror']} identifiers, {rp['writes']['registry']} "
                     f"registry records); mirror down {rp['mirror_down']['down_s']} s with up to "
                     f"{rp['mirror_down']['pending_max']:.0f} records waiting, caught up "
                     f"{rp['back']['caught_up_s']} s after its restart")
        lines.append(table(rows, ["lag (sampled every 50 ms)", "samples", "p50 ms", "p99 ms", "max ms"]))
    k = r.get("kill")
    if k:
        a = k["analysis"]
        lines.append(f"{k['event']} at {k['fired_s']} s of {k['duration_s']:g} s at {k['rate_per_s']:,.0f}/s"
                     + (f" (failed: {k['error']})" if k.get("error") else ""))
        if a.get("killed"):
            rows = [[side, fmt_rate(a[side]["rate_per_s"]), fmt_us(a[side]["p50_us"]), fmt_us(a[side]["p99_us"]),
                     fmt_us(a[side]["max_us"]), str(a[side]["errors"]), str(a[side]["timeouts"])]
                    for side in ("before", "after", "steady_after") if side in a]
            lines.append(table(rows, ["window", "answers/s", "p50 us", "p99 us", "max us", "errors", "timeouts"]))
            lines.append(f"recovered (no more errors or timeouts) {a.get('recovery_s', 'never')} s after the kill; "
                         f"first top-level node asked after it: {k.get('trace_after', {}).get('first_top')}")
        x = k["run"].get("crosscheck", {})
        if x:
            lines.append(f"server counters: {x.get('verdict')}; top-level nodes answered {k['run'].get('server_by_node')}")
    return "\n".join(lines)


def _sus(step: Mapping[str, Any]) -> bool:
    from .scenarios import sustained

    return sustained(step)


def run_text(rep: Mapping[str, Any]) -> str:
    parts = []
    env = rep["environment"]
    parts.append(f"idresolve bench run, {env['timestamp']}: Python {env['python']['version']} "
                 f"({env['python']['implementation']}, {env['event_loop']}), {env['cpu_model']}, {env['cpu_count']} CPUs")
    for c in rep.get("clusters", []):
        rss = max((x or {}).get("total_bytes", 0) for x in (c.get("rss_ready"), c.get("rss_after"))) / MB
        parts.append(f"cluster {c['topology']} (config {c['config_hash'][:12]}), latency {c['latency']}: "
                     + (f"ready in {c['ready_s']:.2f} s, " if c.get("ready_s") is not None else "")
                     + f"{c['processes']} processes, {rss:,.0f} MB RSS at most")
    for r in rep.get("results", []):
        parts.append("")
        parts.append(result_text(r))
    parts.append("")
    parts.append(targets_text(rep.get("targets", [])))
    parts.append("note: " + env["note"])
    return "\n".join(parts)


def iter_figures(rep: Mapping[str, Any]) -> Iterator[tuple[str, Figure]]:
    yield from rep.get("figures", {}).items()
