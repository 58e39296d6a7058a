"""``idresolve bench``: benchmarks that print every figure next to a baseline measured in the same run.

- ``bench rest``   GET /api/handles/<handle> against a node subprocess and against a bare aiohttp handler
- ``bench batch``  batch registration into SQLite: core, end to end over REST, and raw sqlite3 inserts
- ``bench suite``  both, a summary table, and a JSON report (default ./bench-results/<timestamp>.json)

Figures go to stdout, progress to stderr. Bad numbers are refused by argparse (exit 2, no traceback); a
benchmark that cannot produce trustworthy figures exits 1 with the reason.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bench.config import MAX_BATCH, BatchConfig, RestConfig
from .common import EXIT_HANDLE_ERROR, CliError

# The benchmark machinery (aiohttp, hdrhistogram, the node) is imported when a benchmark runs, not for
# every CLI command.

MAX_CONNECTIONS = 1_000
MAX_DURATION_S = 3_600.0
MAX_REPEATS = 100
MAX_IDENTIFIERS = 10_000_000


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:,} and {hi:,}, got {n:,}")
        return n
    return parse


def _seconds(lo: float, hi: float, *, allow_zero: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if x != x or not (x > lo or (allow_zero and x == lo)) or x > hi:
            bound = f">= {lo:g}" if allow_zero else f"> {lo:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} and <= {hi:g} seconds, got {text}")
        return x
    return parse


def _rest_args(p: argparse.ArgumentParser) -> None:
    d = RestConfig()
    p.add_argument("--connections", type=_int_in(1, MAX_CONNECTIONS), default=d.connections,
                   help=f"concurrent keep-alive connections (default {d.connections})")
    p.add_argument("--duration", type=_seconds(0, MAX_DURATION_S), default=d.duration_s,
                   help=f"seconds per measured run (default {d.duration_s:g})")
    p.add_argument("--repeats", type=_int_in(1, MAX_REPEATS), default=d.repeats,
                   help=f"measured runs per server, alternating; medians are reported (default {d.repeats})")
    p.add_argument("--handles", type=_int_in(1, 100_000), default=d.handles,
                   help=f"identifiers registered and cycled through (default {d.handles:,})")
    p.add_argument("--warmup", type=_seconds(0, 60, allow_zero=True), default=d.warmup_s,
                   help=f"unmeasured seconds per server before the runs (default {d.warmup_s:g})")


def _batch_args(p: argparse.ArgumentParser, *, prefix: str = "") -> None:
    d = BatchConfig()
    p.add_argument("--identifiers", type=_int_in(1, MAX_IDENTIFIERS), default=d.identifiers,
                   help=f"identifiers registered per path per run (default {d.identifiers:,})")
    p.add_argument("--batch-size", type=_int_in(1, MAX_BATCH), default=d.batch_size,
                   help=f"identifiers per batch, one transaction each (default {d.batch_size:,}, the maximum)")
    p.add_argument(f"--{prefix}repeats", dest="batch_repeats", metavar="N", type=_int_in(1, MAX_REPEATS), default=d.repeats,
                   help=f"runs per path; medians are reported (default {d.repeats})")


def _common(p: argparse.ArgumentParser, *, out_help: str) -> None:
    p.add_argument("--out", type=Path, help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks with same-run baselines (rest, batch, suite)",
                       description="Benchmarks. Every figure is printed with a baseline measured in the same "
                       "run; servers run as subprocesses on 127.0.0.1 and share the machine with the client.")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    p.set_defaults(func=lambda _args: _no_sub(p))

    r = bsub.add_parser("rest", help="REST resolution: node vs a bare aiohttp handler",
                        description="Closed-loop GET /api/handles/<handle> with N keep-alive connections against a "
                        "node subprocess (sqlite store) and a bare aiohttp server with a fixed body of the same size.")
    _rest_args(r)
    _common(r, out_help="also write the figures as JSON to this file")
    r.set_defaults(func=cmd_rest)

    b = bsub.add_parser("batch", help="batch registration: core, REST, raw sqlite3",
                        description="Batch registration into the durable store: AuthoritativeNode.batch_create on a "
                        "SqliteStore, POST /api/batch to a node subprocess, and raw sqlite3 executemany of the same rows.")
    _batch_args(b)
    _common(b, out_help="also write the figures as JSON to this file")
    b.set_defaults(func=cmd_batch)

    s = bsub.add_parser("suite", help="rest + batch, a summary table and a JSON report",
                        description="Run rest and batch (default settings unless given), print a summary table and "
                        "write a JSON report with the environment.")
    _rest_args(s)
    _batch_args(s, prefix="batch-")
    _common(s, out_help="JSON report path (default ./bench-results/<timestamp>.json)")
    s.set_defaults(func=cmd_suite)


def _no_sub(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _rest_cfg(args: argparse.Namespace) -> RestConfig:
    return RestConfig(connections=args.connections, duration_s=args.duration, repeats=args.repeats,
                      handles=args.handles, warmup_s=args.warmup)


def _batch_cfg(args: argparse.Namespace) -> BatchConfig:
    return BatchConfig(identifiers=args.identifiers, batch_size=args.batch_size, repeats=args.batch_repeats)


def _guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from ..bench.httpload import LoadError
    from ..bench.procs import ServerFailed
    from ..bench.suite import BenchError

    try:
        return fn()
    except (BenchError, ServerFailed, LoadError) as exc:
        raise CliError(f"benchmark failed: {exc}", EXIT_HANDLE_ERROR) from None


def _write(path: Path, data: dict[str, Any]) -> None:
    from ..bench import report

    try:
        written = report.write_json(path, data)
    except OSError as exc:
        raise CliError(f"cannot write the report to {path}: {exc.strerror}", EXIT_HANDLE_ERROR) from None
    print(f"report written to {written}")


def cmd_rest(args: argparse.Namespace) -> int:
    from ..bench import report
    from ..bench.httpload import loop_name
    from ..bench.suite import run_rest

    progress = report.Progress(not args.quiet)
    env = report.environment(loop_name())
    res = _guarded(lambda: run_rest(_rest_cfg(args), progress))
    print(report.rest_text(res))
    report.close_environment(env)
    if report.busy_note(env):
        print(report.busy_note(env))
    if args.out is not None:
        _write(args.out, {"kind": "rest", "environment": env, "rest": res})
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from ..bench import report
    from ..bench.httpload import loop_name
    from ..bench.suite import run_batch

    progress = report.Progress(not args.quiet)
    env = report.environment(loop_name())
    res = _guarded(lambda: run_batch(_batch_cfg(args), progress))
    print(report.batch_text(res))
    report.close_environment(env)
    if report.busy_note(env):
        print(report.busy_note(env))
    if args.out is not None:
        _write(args.out, {"kind": "batch", "environment": env, "batch": res})
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    from ..bench import report
    from ..bench.suite import run_suite

    progress = report.Progress(not args.quiet)
    res = _guarded(lambda: run_suite(_rest_cfg(args), _batch_cfg(args), progress))
    print(report.rest_text(res["rest"]), end="\n\n")
    print(report.batch_text(res["batch"]), end="\n\n")
    print(report.suite_text(res), end="\n\n")
    _write(args.out if args.out is not None else report.default_report_path(), res)
    return 0
