"""Micro-benchmark of template validation: per-record cost beside ``check_values`` on the same values.

``python -m idresolve.bench.templates`` generates records for each shipped template (the values
``idresolve seed`` would register: the 1001 reference, every required field, about three quarters of
the optional ones), then times, per record and in the same run:

- ``check_values``: what every write already costs (the baseline);
- ``validate``: finding the reference (``template_ref_of``) and checking the values (``check_record``)
  against the compiled template;
and once per template the cost of compiling it (``parse_definition_text`` of its canonical form),
which a node pays once per template version it caches. Each figure is the fastest of ``--repeat`` runs
per chunk of 20 records, the kinds taking turns (the least disturbed by other work on a shared
machine), summed over the chunks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import HandleError
from ..core.templates import (
    Template,
    TemplateRef,
    check_record,
    generate_values,
    parse_definition_text,
    template_ref_of,
)
from ..core.templates import template_handle as handle_of
from ..core.values import HandleValue, check_values

DEFAULT_DIR = Path(__file__).resolve().parents[3] / "config" / "templates"


CHUNK = 20


def _baseline(chunk: Sequence[tuple[HandleValue, ...]], _template: Template) -> None:
    for values in chunk:
        check_values(values)


def _templated(chunk: Sequence[tuple[HandleValue, ...]], template: Template) -> None:
    for values in chunk:
        if template_ref_of(values) is not None:
            check_record(template, values)


def _both(chunk: Sequence[tuple[HandleValue, ...]], template: Template) -> None:
    for values in chunk:
        check_values(values)
        if template_ref_of(values) is not None:
            check_record(template, values)


KINDS: tuple[Callable[[Sequence[tuple[HandleValue, ...]], Template], None], ...] = (_baseline, _templated, _both)


def _timed(batch: Sequence[tuple[HandleValue, ...]], template: Template, repeat: int) -> list[int]:
    """Nanoseconds per kind over the whole batch: for each chunk of CHUNK records the kinds run in turn,
    ``repeat`` times, and each keeps its fastest run; the sum over chunks is what a pass would cost with
    no interruption from other work on the machine."""
    totals = [0] * len(KINDS)
    for start in range(0, len(batch), CHUNK):
        chunk = batch[start : start + CHUNK]
        best = [0] * len(KINDS)
        for _ in range(repeat):
            for k, fn in enumerate(KINDS):
                t0 = time.perf_counter_ns()
                fn(chunk, template)
                spent = time.perf_counter_ns() - t0
                best[k] = spent if not best[k] else min(best[k], spent)
        totals = [t + b for t, b in zip(totals, best, strict=True)]
    return totals


def measure(path: Path, *, records: int, repeat: int) -> dict[str, Any]:
    source = path.read_bytes()
    template = parse_definition_text(source)
    ref = TemplateRef(handle_of("88.100", template.name), template.version)
    batch: list[tuple[HandleValue, ...]] = [generate_values(template, f"88.100.1/BENCH{k:09d}", seed=1, ref=ref)
                                            for k in range(records)]
    canonical = template.to_bytes()
    base_ns, tpl_ns, both_ns = _timed(batch, template, repeat)
    compile_ns = min(_once(lambda: parse_definition_text(canonical)) for _ in range(repeat))
    return {
        "template": template.name, "fields": len(template.fields), "records": records,
        "valuesPerRecord": sum(len(v) for v in batch) / records,
        "checkValuesUs": base_ns / records / 1e3, "validateUs": tpl_ns / records / 1e3,
        "bothUs": both_ns / records / 1e3, "ratio": both_ns / base_ns if base_ns else 0.0,
        "compileMs": compile_ns / 1e6,
    }


def _once(fn: Callable[[], object]) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def run(directory: Path, *, records: int, repeat: int) -> list[dict[str, Any]]:
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no template definitions (*.json) in {directory}")
    return [measure(p, records=records, repeat=repeat) for p in paths]


def _table(rows: Sequence[dict[str, Any]]) -> str:
    head = (f"{'template':<20} {'fields':>6} {'values':>6} {'check_values':>13} {'validate':>9} {'both':>8} "
            f"{'both/check':>10} {'compile':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['template']:<20} {r['fields']:>6} {r['valuesPerRecord']:>6.1f} {r['checkValuesUs']:>10.2f} us "
                     f"{r['validateUs']:>6.2f} us {r['bothUs']:>5.2f} us {r['ratio']:>9.2f}x {r['compileMs']:>6.2f} ms")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m idresolve.bench.templates", description=__doc__.split("\n\n")[0])
    p.add_argument("--templates", type=Path, default=DEFAULT_DIR, help="directory of definitions (*.json)")
    p.add_argument("--records", type=int, default=2000, help="records per template (default 2000)")
    p.add_argument("--repeat", type=int, default=7, help="runs per chunk of records; the fastest counts (default 7)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    if args.records < 1 or args.repeat < 1:
        p.error("--records and --repeat must be at least 1")
    try:
        rows = run(args.templates, records=args.records, repeat=args.repeat)
    except (OSError, HandleError) as exc:  # a missing directory, a definition that does not parse
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
