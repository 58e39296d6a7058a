"""Scaling curves against cluster size, from ``bench run`` reports of clusters of different sizes.

``idresolve bench sizes A.json B.json ...`` reads reports (one own cluster each, e.g. ``bench run
--topology <generated.toml>``), and gives one row per cluster: running nodes, processes, start-up time,
memory at ready (total and per node), and for every scenario the node's median answers/s, p50 and p99
beside the baseline's of the same run; with ``--svg-dir`` it also draws throughput and p99 against the
number of nodes (``htmlreport.line_chart``: the charts of ``bench run``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .htmlreport import line_chart

Row = dict[str, Any]


def rows(reports: Sequence[Mapping[str, Any]]) -> list[Row]:
    out: list[Row] = []
    for rep in reports:
        for cluster in rep.get("clusters", []):
            rss = cluster.get("rss_ready") or {}
            nodes = int(cluster.get("nodes") or 0)
            row: Row = {"topology": cluster.get("topology"), "nodes": nodes, "processes": cluster.get("processes"),
                        "ready_s": cluster.get("ready_s"), "rss_mb": round(rss.get("total_bytes", 0) / 2**20, 1),
                        "rss_per_node_mb": round(rss.get("total_bytes", 0) / 2**20 / nodes, 2) if nodes else None,
                        "scenarios": {}}
            for res in rep.get("results", []):
                if res.get("cluster") not in (None, cluster.get("topology")):
                    continue
                med = res.get("median", {})
                key = f"{res.get('scenario')}/{res.get('protocol')}"
                row["scenarios"][key] = {who: {k: med[who].get(k) for k in ("rate_per_s", "p50_us", "p99_us",
                                                                             "crosscheck")}
                                         for who in ("node", "baseline") if who in med}
            out.append(row)
    return sorted(out, key=lambda r: r["nodes"])


def text(table: Sequence[Row]) -> str:
    keys = sorted({k for r in table for k in r["scenarios"]})
    head = ["topology", "nodes", "processes", "ready s", "RSS MB", "MB/node"]
    for k in keys:
        head += [f"{k} answers/s", f"{k} p50 us", f"{k} p99 us", f"{k} baseline answers/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [str(r["topology"]), str(r["nodes"]), str(r["processes"]), f"{r['ready_s']:.2f}",
                 f"{r['rss_mb']:,.0f}", f"{r['rss_per_node_mb']:.2f}"]
        for k in keys:
            s = r["scenarios"].get(k, {})
            node, base = s.get("node", {}), s.get("baseline", {})
            cells += [_n(node.get("rate_per_s")), _n(node.get("p50_us")), _n(node.get("p99_us")),
                      _n(base.get("rate_per_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _n(v: object) -> str:
    return f"{v:,.0f}" if isinstance(v, int | float) else "-"


def charts(table: Sequence[Row]) -> dict[str, str]:
    keys = sorted({k for r in table for k in r["scenarios"]})

    def series(field: str, who: str = "node") -> list[tuple[str, list[tuple[float, float]]]]:
        out = []
        for k in keys:
            pts = [(float(r["nodes"]), float(v)) for r in table
                   if (v := r["scenarios"].get(k, {}).get(who, {}).get(field)) is not None]
            label = field.removesuffix("_us") if field.endswith("_us") else ""
            out.append((f"{k} {label}{'' if who == 'node' else ' baseline'}".replace("  ", " "), pts))
        return out

    return {
        "throughput": line_chart(series("rate_per_s") + series("rate_per_s", "baseline"), x_label="running nodes",
                                 y_label="answers/s", log_x=True, title="throughput against cluster size"),
        "p99": line_chart(series("p99_us") + series("p50_us"), x_label="running nodes", y_label="us (p99, p50)",
                          log_x=True, title="latency against cluster size"),
        "startup": line_chart([("ready s", [(float(r["nodes"]), float(r["ready_s"])) for r in table]),
                               ("RSS MB / 10", [(float(r["nodes"]), r["rss_mb"] / 10) for r in table])],
                              x_label="running nodes", y_label="s; MB/10", log_x=True,
                              title="start-up time and memory against cluster size"),
    }


def load(paths: Sequence[Path]) -> list[Row]:
    return rows([json.loads(p.read_text(encoding="utf-8")) for p in paths])
