"""``idresolve simulate``: the topology's nodes in virtual time (``idresolve.sim``, ``docs/simulation.md``).

    idresolve simulate --workload shandong-day --duration 1h --seed 1 --out DIR
    idresolve simulate study peak-failure --out DIR        variants side by side, in parallel
    idresolve simulate compare DIR_A DIR_B [--out DIR]     what changed between two runs
    idresolve simulate agree [--duration 60s]              the same scenario emulated and simulated
    idresolve simulate calibrate [--out FILE]              service times of the real nodes on this machine
    idresolve simulate bench                               simulated resolutions/s next to the emulated rate
    idresolve simulate list                                the workloads and studies of the file

Progress goes to stderr, results to stdout; a bad workload or study file exits 2 naming its line.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .common import EXIT_HANDLE_ERROR, EXIT_USAGE, CliError


def _duration(text: str) -> float:
    from ..sim.timetext import duration_s

    try:
        v = duration_s(text, "duration")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 < v <= 30 * 86_400:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 30 days, got {text}")
    return v


def _count(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:,} and {hi:,}, got {n:,}")
        return n
    return parse


def _common(p: argparse.ArgumentParser) -> None:
    from ..sim.paths import DEFAULT_FILE

    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help=f"workload and study file (default {DEFAULT_FILE})")
    p.add_argument("--duration", type=_duration, help="virtual time to simulate: 90s, 15m, 1h, 24h (default: the workload's)")
    p.add_argument("--seed", type=_count(0, 2**63 - 1), default=1, help="seed of every random stream (default 1)")
    p.add_argument("--jobs", type=_count(1, 64), default=2, help="runs at once, in processes of their own (default 2)")
    p.add_argument("--out", type=Path, help="write report.json, perf.json, CSV and report.html here")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--event", action="append", default=[], metavar="'WHEN ACTION ARGS'",
                   help="a what-if event, e.g. '10:00 kill top-beijing' (repeat; docs/simulation.md lists them)")
    p.add_argument("--scenario", help="latency scenario of the topology (default: the workload's)")
    p.add_argument("--connect-all", action="store_true", help="every secondary node registered with the top level")
    p.add_argument("--ttl-cap", help="recursive nodes' TTL cap, e.g. 4h")
    p.add_argument("--cache-entries", type=_count(1, 100_000_000), help="recursive nodes' cached answers")
    p.add_argument("--service-times", type=Path, help="TOML with a [service_times] table (calibrate --out writes one)")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="run the topology in virtual time: a day of traffic in minutes, what-ifs, reports",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--workload", default="shandong-day", help="workload name in --file (default shandong-day)")
    p.add_argument("--run", type=_count(0, 1_000_000), default=0, help="run number: another independent run of the same seed")
    p.add_argument("--replications", type=_count(1, 1000), default=1,
                   help="independent runs (run numbers RUN, RUN+1, ...), --jobs at a time, compared in one report")
    p.add_argument("--start", help="time of day the run starts, e.g. 08:00 (default: the workload's)")
    p.add_argument("--json", action="store_true", help="print report.json on stdout instead of the summary")
    p.set_defaults(func=_simulate)
    s = p.add_subparsers(dest="sim_command", metavar="ACTION")
    st = s.add_parser("study", help="run the variants of a [studies.NAME] table side by side")
    st.add_argument("name", help="study name in --file")
    st.add_argument("--start", help="time of day the runs start, e.g. 08:00 (default: the workload's)")
    _common(st)
    st.set_defaults(func=_study)
    c = s.add_parser("compare", help="print and plot what changed between runs")
    c.add_argument("reports", nargs="+", type=Path, help="report.json files or the directories holding them (2 or more)")
    c.add_argument("--out", type=Path, help="write compare.html here")
    c.set_defaults(func=_compare)
    ls = s.add_parser("list", help="the workloads and studies of the file")
    ls.add_argument("--file", type=Path, default=_common_default())
    ls.set_defaults(func=_list)
    from ..sim import agree, calibrate, simbench

    agree.add_parser(s)
    calibrate.add_parser(s)
    simbench.add_parser(s)


def _common_default() -> Path:
    from ..sim.paths import DEFAULT_FILE

    return DEFAULT_FILE


def _load(args: argparse.Namespace) -> Any:
    from ..sim.workload import WorkloadError, load_file

    try:
        return load_file(args.file)
    except WorkloadError as exc:
        raise CliError(str(exc)) from None


def _overrides(args: argparse.Namespace, w: Any) -> Any:
    """The workload with the command line's changes."""
    from ..sim.events import EventError, parse_event
    from ..sim.service import ServiceTimeError, service_times
    from ..sim.timetext import clock_s, duration_s
    from ..sim.workload import WorkloadError

    try:
        if getattr(args, "start", None):
            w = replace(w, start_s=clock_s(args.start, "--start"))
        if args.scenario:
            w = replace(w, scenario=args.scenario)
        if args.connect_all:
            w = replace(w, connect_all=True, unconnected_demand=1.0)
        if args.ttl_cap:
            w = replace(w, nodes=replace(w.nodes, ttl_cap_s=duration_s(args.ttl_cap, "--ttl-cap")))
        if args.cache_entries:
            w = replace(w, nodes=replace(w.nodes, cache_entries=args.cache_entries))
        if args.service_times:
            table = _service_table(args.service_times)
            w = replace(w, service_times=service_times(table, w.service_times, source=str(args.service_times)))
        events = tuple(parse_event(e, w.start_s) for e in args.event)
    except (ValueError, EventError, ServiceTimeError, WorkloadError) as exc:
        raise CliError(str(exc)) from None
    return replace(w, events=(*w.events, *events))


def _service_table(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path}: cannot read service times: {exc}") from None
    table = data.get("service_times")
    if not isinstance(table, dict):
        raise CliError(f"{path}: no [service_times] table")
    return table


def _say(quiet: bool) -> Any:
    return None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def _print_summary(report: dict[str, Any], perf: dict[str, Any] | None, out: Path | None) -> None:
    lat = report["latency_ms"]
    print(f"{report['workload']}{' / ' + report['variant'] if report['variant'] else ''}: seed {report['seed']} "
          f"run {report['run']}, {report['virtual_seconds']:g} s of virtual time from {report['start']}")
    print(f"  resolutions {report['resolutions']:,}  ok {report['ok']:,}  not found {report['not_found']:,}  "
          f"failed {report['failed']:,}  shed {report['shed']:,}  timeouts {report['timeouts']:,}")
    print(f"  latency ms  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  p99.9 {lat['p999']}  "
          f"cache hit ratio {report['cache_hit_ratio']}")
    if perf is not None:
        print(f"  wall {perf['wall_seconds']:g} s: {perf['resolutions_per_wall_second']:,.0f} resolutions/s, "
              f"{perf['events_per_wall_second']:,.0f} events/s, peak memory {perf['peak_rss_mb']:,.0f} MB")
    if out is not None:
        print(f"  report: {out / 'report.html'}")


def _simulate(args: argparse.Namespace) -> int:
    from ..sim.run import RunSpec
    from ..sim.study import compare_text, run_many, write_comparison
    from ..sim.workload import WorkloadError

    wf = _load(args)
    try:
        w = _overrides(args, wf.workload(args.workload))
        specs = [(f"run-{args.run + i}" if args.replications > 1 else "",
                  RunSpec(w, seed=args.seed, run=args.run + i, duration_s=args.duration))
                 for i in range(args.replications)]
        if args.replications == 1:
            return _single(specs[0][1], args)
        results = run_many(specs, args.out, jobs=args.jobs, progress=not args.quiet)
    except WorkloadError as exc:
        raise CliError(str(exc)) from None
    labelled = [(label, report) for label, report, _ in results]
    compare_text(labelled)
    total = sum(r["resolutions"] for _, r in labelled)
    print(f"{len(results)} replications, {total:,} resolutions")
    if args.out is not None:
        print(f"report: {write_comparison(labelled, args.out, f'{w.name}: replications', [p for _, _, p in results])}")
    return 0


def _single(spec: Any, args: argparse.Namespace) -> int:
    from ..sim.report import build_report, perf, write_run
    from ..sim.run import simulate

    res = simulate(spec, progress=_say(args.quiet))
    report = write_run(res, args.out) if args.out is not None else build_report(res)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        _print_summary(report, perf(res), args.out)
    return 0


def _study(args: argparse.Namespace) -> int:
    from ..sim.run import RunSpec
    from ..sim.study import compare_text, run_many, write_comparison
    from ..sim.workload import WorkloadError

    wf = _load(args)
    try:
        study = wf.study(args.name)
        base = wf.workload(study.workload)
        items = []
        for label, table in study.variants:
            w = _overrides(args, base.with_overrides(table, f"{args.file}: study {args.name} variant {label}"))
            items.append((label, RunSpec(w, seed=args.seed, duration_s=args.duration, label=label)))
        results = run_many(items, args.out, jobs=args.jobs, progress=not args.quiet)
    except WorkloadError as exc:
        raise CliError(str(exc)) from None
    labelled = [(label, report) for label, report, _ in results]
    print(f"study {study.name}: {study.description}")
    compare_text(labelled)
    for label, _, p in results:
        print(f"  {label}: {p['wall_seconds']:g} s wall, {p['resolutions_per_wall_second']:,.0f} resolutions/s")
    if args.out is not None:
        print(f"report: {write_comparison(labelled, args.out, f'study {study.name}', [p for _, _, p in results])}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ..sim.report import load_report
    from ..sim.study import compare_text, write_comparison

    if len(args.reports) < 2:
        raise CliError("compare needs at least two reports")
    try:
        reports = [load_report(p) for p in args.reports]
    except ValueError as exc:
        raise CliError(str(exc), EXIT_HANDLE_ERROR) from None
    labelled = [(r["variant"] or p.name or str(p), r) for p, r in zip(args.reports, reports, strict=True)]
    compare_text(labelled)
    if args.out is not None:
        page = write_comparison(labelled, args.out, "compare")
        target = args.out / "compare.html"
        page.replace(target)
        print(f"report: {target}")
    return 0


def _list(args: argparse.Namespace) -> int:
    wf = _load(args)
    print("workloads:")
    for name in wf.workloads:
        print(f"  {name}: {wf.workloads[name].get('description', '')}")
    print("studies:")
    for name in wf.studies:
        variants = ", ".join(wf.studies[name].get("variants", {}))
        print(f"  {name} ({variants}): {wf.studies[name].get('description', '')}")
    return 0


__all__ = ["EXIT_USAGE", "add_parser"]
