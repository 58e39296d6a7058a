"""``idresolve bench``: benchmarks that print every figure next to a baseline measured in the same run.

- ``bench rest``   GET /api/handles/<handle> against a node subprocess and against a bare aiohttp handler
- ``bench batch``  batch registration into SQLite: core, end to end over REST, and raw sqlite3 inserts
- ``bench run``    the load generator against a cluster's recursive node: open loop at a rate, a rate sweep,
                   or closed loop; scenarios cached, cold, latency-on/off, kill-top; baselines in the same run;
                   JSON, CSV and HTML reports; targets printed as pass/fail lines
- ``bench compare`` two JSON reports, figure by figure
- ``bench suite``  rest, batch and the run scenarios at a moderate size, a summary table, and the reports
                   (default ./bench-results/<timestamp>.json, .csv, .html)

Figures go to stdout, progress to stderr. Bad numbers are refused by argparse (exit 2, no traceback); a
benchmark that cannot produce trustworthy figures exits 1 with the reason (and whatever report it could
make). With ``--check`` (``rest``, ``batch``, ``run``, ``suite``) it also exits 1 when a target it measured
failed, when a target's figure is missing, or when the servers' counters disagree with the client's
(``bench.targets.problems``): the report is written first either way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bench.config import (
    BOTH,
    MAX_BATCH,
    PROTOCOLS,
    SCENARIOS,
    TARGET_TEMPLATE_COST,
    BatchConfig,
    RestConfig,
    RunConfig,
)
from .common import EXIT_HANDLE_ERROR, EXIT_USAGE, CliError

# The benchmark machinery (aiohttp, hdrhistogram, the node) is imported when a benchmark runs, not for
# every CLI command.

MAX_CONNECTIONS = 1_000
MAX_DURATION_S = 3_600.0
MAX_REPEATS = 100
MAX_IDENTIFIERS = 10_000_000
MAX_RATE = 2_000_000.0


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


def _positive(hi: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if x != x or not 0 < x <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be > 0 and <= {hi:,.0f}, got {text}")
        return x
    return parse


def _fractions(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not out or len(out) > 20 or any(not 0 < f <= 10 for f in out):
        raise argparse.ArgumentTypeError(f"must be 1 to 20 fractions, each > 0 and <= 10, got {text}")
    return tuple(sorted(out))


def _run_args(p: argparse.ArgumentParser, *, suite: bool = False) -> None:
    d = RunConfig()
    g = p.add_argument_group("the cluster")
    g.add_argument("--data-dir", type=Path, help="drive the cluster running there (its cluster.json); default: start "
                   "one (temporary data directory, ports 20000-26000) and stop it at the end")
    g.add_argument("--topology", default="shandong" if suite else d.topology,
                   help="own cluster: minimal, shandong or a topology TOML (default "
                   f"{'shandong' if suite else d.topology})")
    if not suite:
        g.add_argument("--latency", choices=["on", "off"], default=d.latency,
                       help="own cluster: latency model for cached, cold and kill-top (latency-on/off set their own; "
                       f"default {d.latency})")
        g.add_argument("--node", help="the recursive node to drive (default: the first)")
        g.add_argument("--workers", type=_int_in(1, 64), default=d.workers,
                       help="own cluster: the driven recursive node runs as this many processes sharing its ports "
                       f"(workers = N in a copy of the topology; default {d.workers})")
        g.add_argument("--kill-node", default=d.kill_node, help=f"kill-top: the node to kill (default {d.kill_node})")
        w = p.add_argument_group("what to measure")
        w.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"], metavar="NAME",
                       help=f"repeat for several: {', '.join(SCENARIOS)}, or all (default cached)")
        w.add_argument("--protocol", type=_protocols, default=("binary",), metavar="P[,P...]",
                       help=f"{', '.join(PROTOCOLS)} (the native Handle protocol), a comma-separated list, or both "
                       "(binary and rest); with binary and handle the report gives their ratios (default binary)")
        m = p.add_argument_group("mode (default --closed; several may be given)")
        m.add_argument("--rate", type=_positive(MAX_RATE, "--rate"), help="open loop at this many requests/s (also "
                       "the rate of latency-on/off and kill-top)")
        m.add_argument("--sweep", action="store_true", help="open loop at rising rates around a closed-loop probe: "
                       "the throughput-latency curve, the saturation point, then a run at half of it")
        m.add_argument("--closed", action="store_true", help="closed loop: the maximum rate")
    s = p.add_argument_group("size (every run is bounded in time and count)")
    prefix = "run-" if suite else ""
    s.add_argument(f"--{prefix}duration", dest="run_duration", type=_seconds(0, MAX_DURATION_S),
                   default=2.0 if suite else d.duration_s, metavar="S",
                   help=f"seconds per measured run (default {2.0 if suite else d.duration_s:g})")
    s.add_argument(f"--{prefix}repeats", dest="run_repeats", type=_int_in(1, MAX_REPEATS),
                   default=3 if suite else d.repeats, metavar="N",
                   help=f"measured runs per server, alternating; medians reported (default {3 if suite else d.repeats})")
    s.add_argument(f"--{prefix}identifiers", dest="run_identifiers", type=_int_in(1, 1_000_000),
                   default=5_000 if suite else d.identifiers, metavar="N",
                   help=f"identifiers seeded (those under connected secondary nodes are cycled through; default "
                   f"{5_000 if suite else d.identifiers:,})")
    if not suite:
        s.add_argument("--connections", dest="run_connections", type=_int_in(1, MAX_CONNECTIONS), default=d.connections,
                       metavar="N",
                       help=f"connections per target (default {d.connections})")
        s.add_argument("--depth", type=_int_in(1, 512), default=d.depth,
                       help=f"closed loop: requests in flight per connection (default {d.depth})")
        s.add_argument("--timeout", type=_seconds(0, 120), default=d.timeout_s,
                       help=f"a request unanswered this long is a timeout (default {d.timeout_s:g} s)")
        s.add_argument("--warmup", dest="run_warmup", type=_seconds(0, 60, allow_zero=True), default=d.warmup_s, metavar="S",
                       help=f"unmeasured closed-loop seconds per server first (default {d.warmup_s:g})")
        s.add_argument("--step", type=_seconds(0, 600), default=d.step_s,
                       help=f"sweep: seconds per rate step (default {d.step_s:g})")
        s.add_argument("--sweep-fractions", type=_fractions, default=d.sweep_fractions, metavar="LIST",
                       help="sweep: rates as fractions of the closed-loop probe, comma-separated (default "
                       f"{','.join(f'{f:g}' for f in d.sweep_fractions)}); it goes on by 20 %% steps while the node "
                       "keeps up")
        s.add_argument("--trace-sample", type=_int_in(0, 100_000), default=d.trace_sample,
                       help=f"cold runs: traced resolutions for the per-hop breakdown (default {d.trace_sample})")
        s.add_argument("--tick-ms", type=_seconds(0, 100, allow_zero=True), default=d.tick_s * 1000,
                       help="open loop: the shortest wait between two looks at the schedule (default 0.05; a wait ends "
                       "early when answers arrive; 0 never waits, a busy loop using a core)")
        s.add_argument("--no-baselines", action="store_true", help="skip the baseline servers")
        s.add_argument("--no-seed", action="store_true", help="existing cluster: identifiers BENCH* are in place already")


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
    p.add_argument("--workers", type=_int_in(0, 64), default=d.workers,
                   help="the node's worker processes (idresolve node --workers; default 0: one per core); the "
                   "bare aiohttp baseline runs as many processes")
    p.add_argument("--load", choices=("auto", "wrk", "python"), default=d.load,
                   help="the load generator: wrk (C, one thread: Debian's package wrk), or the project's Python "
                   "client, which spends a core's worth of CPU the servers need on a small machine (default "
                   "auto: wrk when it is on PATH)")


def _batch_args(p: argparse.ArgumentParser, *, prefix: str = "") -> None:
    d = BatchConfig()
    p.add_argument("--identifiers", type=_int_in(1, MAX_IDENTIFIERS), default=d.identifiers,
                   help=f"identifiers registered per path per run (default {d.identifiers:,})")
    p.add_argument("--batch-size", type=_int_in(1, MAX_BATCH), default=d.batch_size,
                   help=f"identifiers per batch, one transaction each (default {d.batch_size:,}, the maximum)")
    p.add_argument(f"--{prefix}repeats", dest="batch_repeats", metavar="N", type=_int_in(1, MAX_REPEATS), default=d.repeats,
                   help=f"runs per path; medians are reported (default {d.repeats})")
    p.add_argument(f"--{prefix}clients", dest="batch_clients", metavar="N", type=_int_in(1, 64), default=d.clients,
                   help=f"connections sending batches at once, REST and binary (default {d.clients})")
    p.add_argument(f"--{prefix}template", dest="batch_template", action="store_true",
                   help="records fill the tyre-batch template; core and REST also run naming it (every record "
                   "checked), beside the same batch not naming it: the cost of checking (target <= "
                   f"{TARGET_TEMPLATE_COST}x)")


def _common(p: argparse.ArgumentParser, *, out_help: str) -> None:
    p.add_argument("--out", type=Path, help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--check", action="store_true", help="exit 1 when a target measured fails, a target's figure "
                   "is missing, or the servers' counters disagree with the client's (the report is written first)")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks with same-run baselines (run, compare, rest, batch, suite)",
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

    run = bsub.add_parser("run", help="load a cluster's recursive node: open loop, sweep or closed loop",
                          description="Drive a cluster's recursive node over the binary protocol or REST: open loop at "
                          "a fixed rate (latency from the scheduled send time, microseconds, HDR histograms), a rate "
                          "sweep to the saturation point, or closed loop. Baselines (a bare asyncio msgpack echo "
                          "server, a bare aiohttp handler) are measured in the same run, the nodes' /metrics are "
                          "scraped around every run and compared with the client's counts. Writes JSON, CSV and HTML.")
    _run_args(run)
    _common(run, out_help="JSON report path; the .csv and .html go next to it (default "
            "./bench-results/<timestamp>.json)")
    run.set_defaults(func=cmd_run)

    z = bsub.add_parser("sizes", help="scaling curves: bench run reports of clusters of different sizes",
                        description="One row per cluster (nodes, processes, start-up time, memory, each scenario's "
                        "answers/s, p50 and p99 beside its baseline) from bench run reports, as a Markdown table; "
                        "--svg-dir also draws them against the number of nodes.")
    z.add_argument("reports", nargs="*", type=Path, help="bench run JSON reports (one own cluster each)")
    z.add_argument("--svg-dir", type=Path, help="write throughput.svg, p99.svg and startup.svg here")
    z.add_argument("--records", help="instead: one node against stores of these sizes, e.g. 10k,100k,1M,10M "
                   "(resolution p50/p99 cached and uncached, start-up, RSS, disk bytes/record, list pages)")
    z.add_argument("--store-dir", type=Path, help="with --records: keep the filled stores here and reuse them "
                   "(default: a temporary directory, filled every run)")
    z.add_argument("--repeats", type=int, default=3, help="with --records: repeats, sizes alternating (default 3)")
    z.add_argument("--duration", type=float, default=5.0, help="with --records: seconds per latency run (default 5)")
    z.add_argument("--out", type=Path, help="with --records: write the JSON report here")
    z.set_defaults(func=cmd_sizes)
    c = bsub.add_parser("compare", help="what got faster or slower between two JSON reports",
                        description="Compare two reports of any bench command, figure by figure, with ratios; a "
                        "change within the noise (threshold, or the spread over repeats) is not flagged.")
    c.add_argument("a", type=Path, help="the earlier report (JSON)")
    c.add_argument("b", type=Path, help="the later report (JSON)")
    c.add_argument("--threshold", type=_positive(10.0, "--threshold"), default=0.05,
                   help="relative change below which rates count as noise (latency means x2, tails x4; default 0.05)")
    c.add_argument("--all", action="store_true", help="list unchanged figures too")
    c.set_defaults(func=cmd_compare)

    s = bsub.add_parser("suite", help="rest + batch + run scenarios, a summary table and reports",
                        description="Run rest and batch (default settings unless given) and the run scenarios at a "
                        "moderate size (cached and cold over both protocols, a sweep, latency-on/off, kill-top on "
                        "the Shandong cluster), print a summary and the targets, and write JSON, CSV and HTML reports.")
    _rest_args(s)
    _batch_args(s, prefix="batch-")
    _run_args(s, suite=True)
    only = s.add_mutually_exclusive_group()
    only.add_argument("--skip-run", action="store_true", help="only rest and batch, as before")
    only.add_argument("--run-only", action="store_true", help="only the run scenarios (no rest, no batch)")
    _common(s, out_help="JSON report path; the .csv and .html go next to it (default ./bench-results/<timestamp>.json)")
    s.set_defaults(func=cmd_suite)


def _protocols(text: str) -> tuple[str, ...]:
    if text == "both":
        return BOTH
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [n for n in names if n not in PROTOCOLS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown protocol {', '.join(bad) or text!r}; choose from "
                                         f"{', '.join(PROTOCOLS)} or both")
    return names


def _no_sub(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _rest_cfg(args: argparse.Namespace) -> RestConfig:
    return RestConfig(connections=args.connections, duration_s=args.duration, repeats=args.repeats,
                      handles=args.handles, warmup_s=args.warmup, workers=args.workers, load=args.load)


def _batch_cfg(args: argparse.Namespace) -> BatchConfig:
    return BatchConfig(identifiers=args.identifiers, batch_size=args.batch_size, repeats=args.batch_repeats,
                       template=args.batch_template, clients=args.batch_clients)


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


def _checked(args: argparse.Namespace, rep: dict[str, Any]) -> int:
    """``--check``: print the verdict on ``rep``'s targets and counters; exit 1 when something fails."""
    from ..bench import targets

    if not getattr(args, "check", False):
        return 0
    found = targets.problems(rep)
    print(targets.check_text(found))
    if found:
        raise CliError(f"bench --check: {len(found)} problem(s), listed above", EXIT_HANDLE_ERROR)
    return 0


def _one(args: argparse.Namespace, kind: str) -> int:
    """``bench rest`` and ``bench batch``: run one scenario, print it, write its report if asked."""
    from ..bench import report, targets
    from ..bench.httpload import loop_name
    from ..bench.suite import run_batch, run_rest

    progress = report.Progress(not args.quiet)
    env = report.environment(loop_name())
    if kind == "rest":
        res = _guarded(lambda: run_rest(_rest_cfg(args), progress))
        print(report.rest_text(res))
        ts = targets.rest_batch_targets(rest=res)
    else:
        res = _guarded(lambda: run_batch(_batch_cfg(args), progress))
        print(report.batch_text(res))
        ts = targets.rest_batch_targets(batch=res)
    report.close_environment(env)
    if report.busy_note(env):
        print(report.busy_note(env))
    rep = {"kind": kind, "environment": env, kind: res, "targets": ts}
    if args.out is not None:
        _write(args.out, rep)
    return _checked(args, rep)


def cmd_sizes(args: argparse.Namespace) -> int:
    from ..bench import sizes

    if args.records:
        return _store_sizes(args)
    if not args.reports:
        raise CliError("give bench run reports, or --records SIZES", EXIT_USAGE)
    try:
        table = sizes.load(args.reports)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the reports: {exc}", EXIT_USAGE) from None
    print(sizes.text(table), end="")
    if args.svg_dir is not None:
        args.svg_dir.mkdir(parents=True, exist_ok=True)
        for name, svg in sizes.charts(table).items():
            (args.svg_dir / f"{name}.svg").write_text(svg + "\n", encoding="utf-8")
    return 0


def _store_sizes(args: argparse.Namespace) -> int:
    from ..bench import storesize

    try:
        sizes_n = storesize.parse_sizes(args.records)
    except ValueError as exc:
        raise CliError(f"--records: {exc}", EXIT_USAGE) from None
    if not 1 <= args.repeats <= 20 or not 0.5 <= args.duration <= 600:
        raise CliError("--repeats must be 1-20 and --duration 0.5-600 s", EXIT_USAGE)
    rep = storesize.run_store_sizes(sizes_n, args.store_dir, repeats=args.repeats, duration_s=args.duration,
                                    progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(storesize.text(rep), end="")
    if args.out is not None:
        _write(args.out, rep)
    return 0


def cmd_rest(args: argparse.Namespace) -> int:
    return _one(args, "rest")


def cmd_batch(args: argparse.Namespace) -> int:
    return _one(args, "batch")


def _run_cfg(args: argparse.Namespace) -> RunConfig:
    scenarios = tuple(dict.fromkeys(args.scenario or ["cached"]))
    if "all" in scenarios:
        scenarios = tuple(SCENARIOS)
    modes = tuple(m for m, on in (("closed", args.closed), ("rate", args.rate is not None), ("sweep", args.sweep)) if on)
    protocols = args.protocol
    if args.data_dir is not None and not (args.data_dir / "cluster.json").exists():
        raise CliError(f"no cluster in {args.data_dir} ({args.data_dir / 'cluster.json'} is missing): start one with "
                       f"`idresolve up --data-dir {args.data_dir}`, or leave out --data-dir", EXIT_USAGE)
    return RunConfig(scenarios=scenarios, protocols=protocols, modes=modes or ("closed",), rate=args.rate,
                     duration_s=args.run_duration, repeats=args.run_repeats, connections=args.run_connections,
                     depth=args.depth, timeout_s=args.timeout, warmup_s=args.run_warmup,
                     identifiers=args.run_identifiers, topology=args.topology, data_dir=args.data_dir,
                     latency=args.latency, node=args.node, workers=args.workers, kill_node=args.kill_node,
                     baselines=not args.no_baselines,
                     step_s=args.step, sweep_fractions=args.sweep_fractions, trace_sample=args.trace_sample,
                     tick_s=args.tick_ms / 1000.0,
                     seed=not args.no_seed)


def suite_run_cfg(args: argparse.Namespace) -> RunConfig:
    """The run part of ``bench suite``: every scenario once, at a moderate size."""
    plan = (("cached", "binary", "closed"), ("cached", "binary", "sweep"), ("cached", "rest", "closed"),
            ("cold", "binary", "closed"), ("cold", "rest", "closed"), ("latency-off", "binary", "rate"),
            ("latency-on", "binary", "rate"), ("kill-top", "binary", "rate"))
    return RunConfig(plan=plan, duration_s=args.run_duration, repeats=args.run_repeats,
                     identifiers=args.run_identifiers, topology=args.topology, data_dir=args.data_dir,
                     step_s=min(1.5, args.run_duration), warmup_s=min(0.5, args.run_duration), trace_sample=200)


def _write_run(path: Path, rep: dict[str, Any], view: dict[str, Any] | None = None) -> None:
    from ..bench import htmlreport, runreport

    _write(path, rep)
    view = rep if view is None else view
    for suffix, text in ((".csv", runreport.csv_text(view)), (".html", htmlreport.render(view))):
        other = path.with_suffix(suffix)
        try:
            other.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {other}: {exc.strerror}", EXIT_HANDLE_ERROR) from None
        print(f"report written to {other}")


def _finish_run(rep: dict[str, Any]) -> None:
    from ..bench import runreport, targets

    if rep.get("environment"):
        rep["targets"] = targets.targets(rep)
        rep["figures"] = runreport.figures(rep)


def _run_guarded(cfg: RunConfig, progress: Any, rep: dict[str, Any]) -> tuple[str, int]:
    """Run; returns (failure message, exit code) and leaves whatever was measured in ``rep``."""
    from ..bench.cluster import ClusterUnavailable
    from ..bench.httpload import LoadError
    from ..bench.procs import ServerFailed
    from ..bench.runner import UsageProblem, run_bench

    try:
        run_bench(cfg, progress, rep)
    except UsageProblem as exc:
        return str(exc), EXIT_USAGE
    except (ClusterUnavailable, ServerFailed, LoadError, OSError) as exc:
        return f"benchmark failed: {exc}", EXIT_HANDLE_ERROR
    except KeyboardInterrupt:
        return "interrupted", EXIT_HANDLE_ERROR
    failed = [f"{r['scenario']}/{r['protocol']}/{r.get('mode')}: {r['error']}" for r in rep.get("results", [])
              if "error" in r]
    if failed:
        return "some scenarios failed (the report has the rest):\n  " + "\n  ".join(failed), EXIT_HANDLE_ERROR
    return "", 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..bench import report, runreport

    cfg = _run_cfg(args)
    progress = report.Progress(not args.quiet)
    rep: dict[str, Any] = {}
    failure, code = _run_guarded(cfg, progress, rep)
    if rep.get("results") or rep.get("clusters"):
        _finish_run(rep)
        print(runreport.run_text(rep))
        _write_run(args.out if args.out is not None else report.default_report_path(), rep)
    if failure:
        raise CliError(failure + ("" if rep.get("results") else " (no report: nothing was measured)"), code)
    return _checked(args, rep)


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from ..bench.compare import CompareError, compare, compare_text

    reports = []
    for path in (args.a, args.b):
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise CliError(f"{path} is not JSON: {exc}") from None
    try:
        rows = compare(reports[0], reports[1], args.threshold)
    except CompareError as exc:
        raise CliError(str(exc)) from None
    print(compare_text(rows, str(args.a), str(args.b), show_all=args.all))
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    from ..bench import report, runreport, targets
    from ..bench.httpload import loop_name
    from ..bench.suite import run_suite

    progress = report.Progress(not args.quiet)
    if args.run_only:
        res: dict[str, Any] = {"kind": "suite", "environment": report.environment(loop_name())}
    else:
        res = _guarded(lambda: run_suite(_rest_cfg(args), _batch_cfg(args), progress))
        print(report.rest_text(res["rest"]), end="\n\n")
        print(report.batch_text(res["batch"]), end="\n\n")
        print(report.suite_text(res), end="\n\n")
    failure, code = "", 0
    view: dict[str, Any] = res
    if not args.skip_run:
        progress("suite: load runs against the cluster")
        run: dict[str, Any] = {}
        failure, code = _run_guarded(suite_run_cfg(args), progress, run)
        _finish_run(run)
        run_env = run.pop("environment", {})
        for key in ("topologies", "config_hashes"):
            res["environment"][key] = run_env.get(key, [])
        report.close_environment(res["environment"])
        res["run"] = run
        res["figures"] = run.get("figures", {})
        res["targets"] = run.get("targets", [])
        if not args.run_only:
            res["targets"] = res["targets"] + targets.rest_batch_targets(res["rest"], res["batch"])
            run["targets"] = res["targets"]
        view = {**run, "environment": res["environment"]}  # what the text, CSV and HTML show
        print(runreport.run_text(view), end="\n\n")
    elif not args.run_only:
        res["targets"] = targets.rest_batch_targets(res["rest"], res["batch"])
        print(targets.targets_text(res["targets"]), end="\n\n")
    path = args.out if args.out is not None else report.default_report_path()
    if args.skip_run:
        _write(path, res)
    else:
        _write_run(path, res, view)
    if failure:
        raise CliError(failure, code)
    return _checked(args, {"targets": res.get("targets", []), "results": res.get("run", {}).get("results", [])})
