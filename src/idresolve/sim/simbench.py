"""``idresolve simulate bench``: simulated resolutions per wall-clock second, next to the emulated cluster's
rate, measured in the same run on the same machine.

Simulated: the workload (default ``shandong-day`` from 10:00, the peak, for ``--duration``) in one process,
then ``--jobs`` independent replications at once (different run numbers, in processes of their own): the
resolutions answered divided by the wall-clock time of the whole batch, process start-up included (what the
measurement before left in cycles is collected before its clock starts).
Emulated: ``idresolve up`` on the workload's topology with the latency model on (``bench.cluster``),
seeded, and the benchmark's load generator closed-loop at the first recursive node for ``--emulated-seconds``
over the seeded identifiers (the first pass walks the hierarchy, later ones are cache hits), and the same
with the authoritative flag (every resolution walks top, secondary, enterprise). Every figure is the median
of ``--repeats``; the load average before and after says how busy the shared machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .paths import DEFAULT_FILE

    p = sub.add_parser("bench", help="simulated resolutions per wall second next to the emulated cluster's rate",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", type=Path, default=DEFAULT_FILE)
    p.add_argument("--workload", default="shandong-day")
    p.add_argument("--duration", default="1h", help="virtual time per simulated run (default 1h)")
    p.add_argument("--start", default="10:00", help="time of day the simulated runs start (default 10:00, the peak)")
    p.add_argument("--jobs", type=int, default=2, help="replications at once (default 2, the machine's cores)")
    p.add_argument("--repeats", type=int, default=3, help="figures are medians of this many (default 3)")
    p.add_argument("--emulated-seconds", type=float, default=10.0, help="seconds of each emulated measurement")
    p.add_argument("--identifiers", type=int, default=20_000, help="identifiers seeded in the emulated cluster")
    p.add_argument("--no-emulated", action="store_true", help="measure the simulation only")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.set_defaults(func=main)


def simulated(w: Any, duration_s: float, jobs: int, repeats: int, say: Any) -> dict[str, Any]:
    from .run import RunSpec
    from .study import run_many

    single, parallel, hit = [], [], []
    for r in range(repeats):
        gc.collect()  # what the last measurement's runs left is freed before this one's clock starts
        t0 = time.perf_counter()
        (_, rep, perf), = run_many([("single", RunSpec(w, seed=1, run=100 + r, duration_s=duration_s))], None,
                                  jobs=1, progress=False)
        single.append(rep["resolutions"] / (time.perf_counter() - t0))
        hit.append(rep["cache_hit_ratio"])
        say(f"simulated, 1 process: {single[-1]:,.0f} resolutions/s (run {r + 1}/{repeats})")
        items = [(f"r{j}", RunSpec(w, seed=1, run=200 + r * jobs + j, duration_s=duration_s)) for j in range(jobs)]
        gc.collect()
        t0 = time.perf_counter()
        results = run_many(items, None, jobs=jobs, progress=False)
        parallel.append(sum(rep["resolutions"] for _, rep, _ in results) / (time.perf_counter() - t0))
        say(f"simulated, {jobs} processes: {parallel[-1]:,.0f} resolutions/s (run {r + 1}/{repeats})")
    return {"one_process_per_s": round(statistics.median(single)), "processes": jobs,
            "all_processes_per_s": round(statistics.median(parallel)), "cache_hit_ratio": statistics.median(hit),
            "samples_one": [round(x) for x in single], "samples_all": [round(x) for x in parallel],
            "resolutions_per_run": rep["resolutions"], "peak_rss_mb": perf["peak_rss_mb"]}


async def _closed(host: str, port: int, handles: list[str], flags: int, seconds: float) -> float:
    from ..bench.binload import BinaryWorkload, connect_binary
    from ..bench.loadgen import ClosedDriver, Recorder
    from ..core.codes import ResponseCode

    rec = Recorder((ResponseCode.SUCCESS,), timeout_s=5.0)
    work = BinaryWorkload(handles, flags)
    driver = ClosedDriver(rec, depth=32, duration_s=seconds, max_requests=10**9, work_len=len(work))
    conns = [await connect_binary(host, port, rec, work, on_answer=driver.on_answer) for _ in range(4)]
    t0 = time.perf_counter()
    try:
        await driver.run(conns, grace_s=2.0)
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0)
    return rec.codes.get(ResponseCode.SUCCESS, 0) / (time.perf_counter() - t0)


def emulated(w: Any, seconds: float, identifiers: int, repeats: int, say: Any) -> dict[str, Any]:
    from ..bench.cluster import OwnCluster, seed
    from ..core.messages import FLAG_AUTHORITATIVE
    from .agree import _topology_path

    path = _topology_path(w)
    mixed, cold = [], []
    say(f"emulated: starting `idresolve up --config {path}` (latency model on)")
    with OwnCluster(path, latency="on", progress=say) as cluster:
        seed(cluster, identifiers)
        handles = cluster.identifiers(identifiers)
        host, port = cluster.tcp(cluster.recursive())
        for r in range(repeats):
            batch = handles[r::repeats]  # a fresh slice each time: the first pass walks, then hits
            mixed.append(asyncio.run(_closed(host, port, batch, 0, seconds)))
            cold.append(asyncio.run(_closed(host, port, batch, FLAG_AUTHORITATIVE, seconds)))
            say(f"emulated: {mixed[-1]:,.0f} resolutions/s over {len(batch)} identifiers, "
                f"{cold[-1]:,.0f}/s walking every time (run {r + 1}/{repeats})")
    return {"mixed_per_s": round(statistics.median(mixed)), "cold_per_s": round(statistics.median(cold)),
            "samples_mixed": [round(x) for x in mixed], "samples_cold": [round(x) for x in cold],
            "nodes": len(cluster.nodes())}


def main(args: argparse.Namespace) -> int:
    from ..cli.common import CliError
    from .timetext import clock_s, duration_s
    from .workload import WorkloadError, load_file

    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        w = load_file(args.file).workload(args.workload)
        w = replace(w, start_s=clock_s(args.start, "--start"))
        duration = duration_s(args.duration, "--duration")
    except (WorkloadError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.jobs < 1 or args.repeats < 1 or duration <= 0:
        raise CliError("bench needs --jobs >= 1, --repeats >= 1 and a duration above 0")
    load0 = os.getloadavg()
    sim = simulated(w, duration, args.jobs, args.repeats, say)
    emu = None if args.no_emulated else emulated(w, args.emulated_seconds, args.identifiers, args.repeats, say)
    load1 = os.getloadavg()
    doc = {"workload": w.name, "start": args.start, "duration_s": duration, "repeats": args.repeats,
           "simulated": sim, "emulated": emu, "load_average": [list(load0), list(load1)],
           "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M")}
    print(f"{w.name} from {args.start} for {args.duration} of virtual time, medians of {args.repeats} "
          f"(load average {load0[0]:.2f} before, {load1[0]:.2f} after, {os.cpu_count()} CPUs):")
    print(f"  simulated, 1 process:      {sim['one_process_per_s']:>10,} resolutions/s  "
          f"(cache hit ratio {sim['cache_hit_ratio']:.3f})")
    print(f"  simulated, {sim['processes']} processes:    {sim['all_processes_per_s']:>10,} resolutions/s")
    if emu is not None:
        print(f"  emulated, closed loop:     {emu['mixed_per_s']:>10,} resolutions/s  (seeded identifiers: a first "
              "pass, then cache hits)")
        print(f"  emulated, every walk cold: {emu['cold_per_s']:>10,} resolutions/s")
        for name in ("mixed_per_s", "cold_per_s"):
            if emu[name]:
                print(f"  simulation / emulation ({name[:-6]}): {sim['all_processes_per_s'] / emu[name]:.1f}x")
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    return 0
