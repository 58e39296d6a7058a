"""Several runs side by side: study variants and replications, in parallel processes, and comparisons.

Each run is independent (its own cluster, seed and run number), so ``jobs`` processes run them at once
(fork: the parent has imported everything already; it collects its garbage first, so that the children do
not inherit what an earlier run left in cycles and each free its own copy of it). Every run writes its own
directory (``OUT/<label>/report.json`` ...); the comparison page ``OUT/index.html`` and ``OUT/study.json``
hold all of them, the first being the baseline. ``compare_text`` prints what changed between reports.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .html import SUMMARY, render
from .report import perf, write_run
from .run import RunSpec, simulate

Labelled = tuple[str, dict[str, Any]]


def _run_one(item: tuple[str, RunSpec, Path | None, bool]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    label, spec, out, show = item

    def say(msg: str) -> None:
        print(f"[{label}] {msg}", file=sys.stderr, flush=True)

    res = simulate(spec, progress=say if show else None)
    if out is not None:
        report = write_run(res, out / label, label)
    else:
        from .report import build_report

        report = build_report(res, label)
    return label, report, perf(res)


def run_many(items: Sequence[tuple[str, RunSpec]], out: Path | None, *, jobs: int = 2,
             progress: bool = True) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Run every ``(label, spec)``, ``jobs`` at a time; results in the order given."""
    work = [(label, spec, out, progress) for label, spec in items]
    if jobs <= 1 or len(work) == 1:
        return [_run_one(w) for w in work]
    # An earlier run in this process (a bench's, a study's) left its cluster in cycles: freed here once, not
    # copied into every child and freed there (0.83 s in each child after a 20-minute run).
    gc.collect()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(min(jobs, len(work))) as pool:
        return list(pool.imap(_run_one, work))


def write_comparison(results: Sequence[Labelled], out: Path, title: str = "",
                     perfs: Sequence[dict[str, Any]] = ()) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    page.write_text(render(list(results), title), encoding="utf-8")
    summary = [{"variant": label, **{name: get(r) for name, get, _, _ in SUMMARY}} for label, r in results]
    doc: dict[str, Any] = {"title": title, "variants": summary}
    if perfs:
        doc["perf"] = [{"variant": label, **p} for (label, _), p in zip(results, perfs, strict=True)]
    (out / "study.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return page


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.4g}"


def compare_text(results: Sequence[Labelled], show: Callable[[str], None] = print) -> None:
    """A table of the summary figures, one column per run, the change against the first in brackets."""
    labels = [label for label, _ in results]
    width = max(24, *(len(n) for n, _, _, _ in SUMMARY))
    cols = [max(14, len(x) + 2) for x in labels]
    show(" " * width + "".join(f"{x:>{w}}" for x, w in zip(labels, cols, strict=True)))
    base = results[0][1]
    for name, get, unit, _better in SUMMARY:
        b = get(base)
        cells = []
        for i, (_, r) in enumerate(results):
            v = get(r)
            text = _fmt(v)
            if i and isinstance(v, int | float) and isinstance(b, int | float) and b and v != b:
                text += f" ({'+' if v > b else ''}{(v - b) / b:.0%})"
            cells.append(text)
        show(f"{name + (' (' + unit + ')' if unit else ''):<{width}}" +
             "".join(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True)))
