"""``idresolve bench compare A.json B.json``: what got faster or slower, figure by figure.

Works on every report kind (``run``, ``suite``, ``rest``, ``batch``): a ``run`` or ``suite`` report carries a
flat ``figures`` table; older reports are flattened here. A change counts only beyond the noise: the larger
of the threshold for that kind of figure (``--threshold`` for rates and CPU, twice it for means and medians,
four times it for tail percentiles) and the spread over repeats either report measured for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .report import table
from .runreport import Figure, unit_of

SPEEDS = ("rate_per_s", "saturation_per_s", "server_answers_per_cpu_s", "median_ids_per_s", "_us", "us_per_answer",
          "us_per_req", "us_per_request")


class CompareError(Exception):
    pass


def figures_of(rep: Mapping[str, Any]) -> dict[str, Figure]:
    if not isinstance(rep, Mapping) or "kind" not in rep:
        raise CompareError("not an idresolve bench report (no 'kind')")
    out: dict[str, Figure] = dict(rep.get("figures", {}))
    rest = rep.get("rest")
    if isinstance(rest, Mapping):
        for who in ("node", "baseline"):
            m = rest.get(who, {}).get("median", {})
            spread = _spread(rest.get(who, {}).get("runs", []))
            for k, v in m.items():
                if k in ("runs",) or not isinstance(v, int | float):
                    continue
                unit, better = unit_of(k)
                out[f"rest.{who}.{k}"] = {"value": v, "unit": unit, "better": better, "spread": spread.get(k)}
        if "ratio" in rest:
            out["rest.ratio.rate_per_s"] = {"value": rest["ratio"], "unit": "x", "better": "higher"}
    batch = rep.get("batch")
    if isinstance(batch, Mapping):
        for path in ("core", "rest", "binary", "raw_sqlite"):
            b = batch.get(path, {})
            if "median_ids_per_s" in b:
                runs = b.get("runs_ids_per_s", [])
                sp = (max(runs) - min(runs)) / b["median_ids_per_s"] if len(runs) > 1 and b["median_ids_per_s"] else None
                out[f"batch.{path}.median_ids_per_s"] = {"value": b["median_ids_per_s"], "unit": "1/s",
                                                         "better": "higher", "spread": sp}
    run = rep.get("run")
    if isinstance(run, Mapping):
        out.update(run.get("figures", {}))
    return out


def _spread(runs: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if not isinstance(runs, list) or len(runs) < 2:
        return out
    keys = {k for r in runs for k, v in r.items() if isinstance(v, int | float)}
    for k in keys:
        vals = [float(r[k]) for r in runs if isinstance(r.get(k), int | float)]
        vals.sort()
        mid = vals[len(vals) // 2]
        if mid:
            out[k] = (vals[-1] - vals[0]) / mid
    return out


def noise_floor(name: str, threshold: float) -> float:
    metric = name.rsplit(".", 1)[-1]
    if metric.startswith(("p99", "max")):
        return 4 * threshold
    if metric in ("mean_us", "p50_us", "p90_us", "measured_mean_us"):
        return 2 * threshold
    if metric in ("errors", "timeouts"):
        return 0.5
    return threshold


def _is_speed(name: str) -> bool:
    metric = name.rsplit(".", 1)[-1]
    return any(metric.endswith(s) for s in SPEEDS)


def compare(a: Mapping[str, Any], b: Mapping[str, Any], threshold: float = 0.05) -> list[dict[str, Any]]:
    fa, fb = figures_of(a), figures_of(b)
    rows = []
    for name in sorted(set(fa) | set(fb)):
        x, y = fa.get(name), fb.get(name)
        if x is None or y is None:
            rows.append({"figure": name, "a": None if x is None else x["value"], "b": None if y is None else y["value"],
                         "ratio": None, "verdict": "only in B" if x is None else "only in A", "noise": None})
            continue
        va, vb = x["value"], y["value"]
        if not isinstance(va, int | float) or not isinstance(vb, int | float):
            continue
        better = y.get("better") or x.get("better") or "higher"
        noise = max(noise_floor(name, threshold), float(x.get("spread") or 0.0), float(y.get("spread") or 0.0))
        ratio = vb / va if va else (1.0 if vb == va else float("inf"))
        if better == "closer to 1":
            delta = abs(va - 1.0) - abs(vb - 1.0)
            verdict = "same" if abs(delta) <= threshold / 2 else ("better" if delta > 0 else "worse")
        elif abs(ratio - 1.0) <= noise:
            verdict = "same"
        else:
            up = ratio > 1.0
            good = up if better == "higher" else not up
            words = ("FASTER", "SLOWER") if _is_speed(name) else ("better", "WORSE")
            verdict = words[0] if good else words[1]
        rows.append({"figure": name, "a": va, "b": vb, "ratio": round(ratio, 3) if ratio != float("inf") else None,
                     "verdict": verdict, "noise": round(noise, 3), "unit": x.get("unit", "")})
    return rows


def _v(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and abs(x) < 10:
        return f"{x:.3f}"
    return f"{x:,.0f}" if isinstance(x, int | float) else str(x)


def compare_text(rows: list[dict[str, Any]], a_name: str, b_name: str, *, show_all: bool = False) -> str:
    changed = [r for r in rows if r["verdict"] not in ("same",)]
    shown = rows if show_all else changed
    lines = [f"A = {a_name}", f"B = {b_name}",
             f"{len(rows)} figures: {sum(r['verdict'] in ('FASTER', 'better') for r in rows)} faster or better, "
             f"{sum(r['verdict'] in ('SLOWER', 'WORSE') for r in rows)} slower or worse, "
             f"{sum(r['verdict'] == 'same' for r in rows)} within noise, "
             f"{sum(r['verdict'].startswith('only') for r in rows)} in one report only"]
    if shown:
        lines.append(table([[r["figure"], _v(r["a"]), _v(r["b"]), "-" if r["ratio"] is None else f"{r['ratio']:.3f}",
                             "-" if r["noise"] is None else f"{r['noise']:.0%}", r["verdict"]] for r in shown],
                           ["figure", "A", "B", "B/A", "noise", "verdict"]))
    if not show_all:
        lines.append("(figures within noise are not listed; --all lists them)")
    return "\n".join(lines)
