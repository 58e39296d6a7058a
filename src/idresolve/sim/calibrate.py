"""``idresolve simulate calibrate``: the service-time model measured on the real nodes of this machine.

It starts ``idresolve up --config config/minimal.toml --latency off`` (``bench.cluster.OwnCluster``) with
the recursive node and the enterprise node each in a process of its own, seeds it, and drives each
operation closed-loop with the benchmark's load generator (or, for writes, the blocking client), reading
the CPU-seconds of the node's own process from ``/proc`` before and after: the cost of one request is the
CPU it took divided by the answers. What is measured, at which node:

- ``auth_cached``: plain resolutions the enterprise node answers from its ``answers`` cache;
- ``auth_query``: first resolutions of distinct identifiers there (read from SQLite, cached after);
- ``auth_write``: single ``CREATE_HANDLE`` requests there; ``auth_batch_item``: per identifier of
  ``BATCH_CREATE`` requests of 1,000;
- ``rec_cached``: fast-path hits at the recursive node;
- ``rec_walk`` and ``rec_hop``: the recursive node's CPU per walk of distinct identifiers with the
  enterprise's referral cached (one hop) and per walk with the authoritative flag (three hops: top,
  secondary, enterprise); two equations give the cost of a walk and of a hop.
- ``transport`` and ``client`` (latency, not CPU): half of what a hop to the enterprise node takes beyond
  the CPU of both ends, and what a cached traced resolution takes end to end beyond the recursive node's
  CPU, both open loop at 100 requests/s: loopback sockets, event-loop wake-ups, the load generator.
``busy_us`` is not measured (an overload is needed to provoke it): it is set to a third of ``auth_cached``,
the share of a cached answer that a code-3 answer's work (no lookup, no encoding of values) leaves.

Each figure is the median over ``--repeats``; the machine is shared, so the load average before and after
is printed with them. ``--out FILE`` writes a ``[service_times]`` table that ``simulate --service-times``
reads; the defaults in ``sim/service.py`` came from this command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("calibrate", help="measure the service-time model on the real nodes of this machine",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0, help="closed-loop seconds per operation and repeat (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="repeats; figures are medians (default 3)")
    p.add_argument("--identifiers", type=int, default=60_000, help="seeded identifiers (default 60,000)")
    p.add_argument("--out", type=Path, help="write a [service_times] TOML table here")
    p.set_defaults(func=main)


async def _closed(host: str, port: int, handles: list[str], flags: int, seconds: float, max_requests: int) -> int:
    from ..bench.binload import BinaryWorkload, connect_binary
    from ..bench.loadgen import ClosedDriver, Recorder
    from ..core.codes import ResponseCode

    rec = Recorder((ResponseCode.SUCCESS,), timeout_s=5.0)
    work = BinaryWorkload(handles, flags)
    driver = ClosedDriver(rec, depth=16, duration_s=seconds, max_requests=max_requests, work_len=len(work))
    conns = [await connect_binary(host, port, rec, work, on_answer=driver.on_answer) for _ in range(2)]
    try:
        await driver.run(conns)
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0)
    return sum(n for code, n in rec.codes.items() if code == ResponseCode.SUCCESS)


def _cpu_per(pid: int, run: Any) -> float:
    """CPU microseconds of ``pid`` per successful request of ``run()`` (which returns the count)."""
    from ..bench.procs import cpu_seconds

    before = cpu_seconds(pid) or 0.0
    n = run()
    after = cpu_seconds(pid) or 0.0
    if n <= 0:
        raise RuntimeError("no request succeeded: the node could not be measured")
    return (after - before) * 1e6 / n


def _overheads(host: str, port: int, hot: list[str], ent: str) -> tuple[float, float]:
    """Median latency (us) of traced cached resolutions end to end, and of a hop to ``ent`` in traced
    authoritative walks, open loop at a light rate (latency model off): what is not CPU is transport."""
    from ..core.messages import FLAG_AUTHORITATIVE
    from .agree import _drive, _Sink

    cached, walks = _Sink(), _Sink()
    asyncio.run(_drive(host, port, hot, 100.0, 2.0, 2, cached))
    asyncio.run(_drive(host, port, hot, 100.0, 2.0, 2, walks, FLAG_AUTHORITATIVE))
    return _median(cached.paths.get("cache", {})), _median(walks.hops.get(ent, {}))


def _median(buckets: dict[int, int]) -> float:
    total, seen = sum(buckets.values()), 0
    for us in sorted(buckets):
        seen += buckets[us]
        if 2 * seen >= total:
            return float(us)
    raise RuntimeError("nothing was measured")


def measure(seconds: float, repeats: int, identifiers: int, say: Any) -> dict[str, Any]:
    from ..bench.cluster import OwnCluster, config_path, seed
    from ..cluster.credentials import read_credentials
    from ..cluster.plan import identity_of
    from ..core.messages import FLAG_AUTHORITATIVE
    from ..core.values import string_value
    from ..net.blocking import BlockingClient

    rec_name, ent_name, ent_prefix = "rec-jinan", "ent-tyre-qingdao-8", "88.118.8"
    samples: dict[str, list[float]] = {k: [] for k in ("auth_cached", "auth_query", "auth_write", "auth_batch_item",
                                                         "rec_cached", "rec_walk", "rec_hop", "transport", "client")}
    load_before = os.getloadavg()
    with OwnCluster(config_path("minimal"), latency="off", own_process=(rec_name, ent_name), progress=say) as cluster:
        seed(cluster, identifiers)
        handles = [h for h in cluster.identifiers(identifiers) if h.startswith(ent_prefix + "/")]
        rec_pid, _ = cluster.pid_of(rec_name)
        ent_pid, _ = cluster.pid_of(ent_name)
        if rec_pid is None or ent_pid is None:
            raise RuntimeError("the nodes to measure are not in processes of their own")
        ent_host, ent_port = cluster.tcp(cluster.node(ent_name))
        rec_host, rec_port = cluster.tcp(cluster.recursive(rec_name))
        secret = read_credentials(cluster.data_dir)[identity_of(ent_prefix)]
        hot = handles[-50:]
        handles = handles[:-50]
        per_repeat = max(1, len(handles) // (2 * repeats))
        closed = lambda host, port, hs, flags=0, n=10**9: (  # noqa: E731
            lambda: asyncio.run(_closed(host, port, hs, flags, seconds, n)))
        for r in range(repeats):
            say(f"calibrate: repeat {r + 1}/{repeats}")
            fresh = handles[2 * r * per_repeat:(2 * r + 1) * per_repeat]
            cold = handles[(2 * r + 1) * per_repeat:(2 * r + 2) * per_repeat]
            samples["auth_query"].append(_cpu_per(ent_pid, closed(ent_host, ent_port, fresh, n=len(fresh))))
            asyncio.run(_closed(ent_host, ent_port, hot, 0, 1.0, len(hot)))  # in the node's answer cache
            samples["auth_cached"].append(_cpu_per(ent_pid, closed(ent_host, ent_port, hot)))
            asyncio.run(_closed(rec_host, rec_port, hot, 0, 1.0, len(hot)))  # cached, and the referral too
            samples["rec_cached"].append(_cpu_per(rec_pid, closed(rec_host, rec_port, hot)))
            # A walk of distinct identifiers costs walk + hops x hop: one hop (the referral cached) and three
            # (the authoritative flag: top, secondary, enterprise) give both.
            one_hop = _cpu_per(rec_pid, closed(rec_host, rec_port, cold, n=len(cold)))
            three_hops = _cpu_per(rec_pid, closed(rec_host, rec_port, fresh, FLAG_AUTHORITATIVE, len(fresh)))
            hop = max(0.0, (three_hops - one_hop) / 2)
            samples["rec_hop"].append(hop)
            samples["rec_walk"].append(max(0.0, one_hop - hop))
            client, transport = _overheads(rec_host, rec_port, hot, ent_name)
            samples["client"].append(max(0.0, client - samples["rec_walk"][-1]))
            samples["transport"].append(max(0.0, (transport - samples["auth_cached"][-1] - hop) / 2))
            with BlockingClient(ent_host, ent_port, auth=(identity_of(ent_prefix), secret.encode())) as c:
                def singles(c: BlockingClient = c, r: int = r) -> int:
                    deadline, n = time.monotonic() + seconds, 0
                    while time.monotonic() < deadline:
                        resp = c.create(f"{ent_prefix}/CAL{r}-{n}", (string_value(1, "URL", f"https://example.com/{n}"),))
                        n += 1 if resp.code == 1 else 0
                    return n

                def batches(c: BlockingClient = c, r: int = r) -> int:
                    deadline, n, b = time.monotonic() + seconds, 0, 0
                    while time.monotonic() < deadline:
                        items = [(f"{ent_prefix}/CALB{r}-{b}-{i}", (string_value(1, "URL", f"https://example.com/{i}"),))
                                 for i in range(1000)]
                        resp = c.batch_create(items)
                        n += 1000 if resp.code == 1 else 0
                        b += 1
                    return n

                write = _cpu_per(ent_pid, singles)
                samples["auth_write"].append(write)
                samples["auth_batch_item"].append(_cpu_per(ent_pid, batches))
    out: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in samples.items()}
    out["busy_us"] = round(out["auth_cached"] / 3, 1)
    out = {(k if k.endswith("_us") else k + "_us"): v for k, v in out.items()}
    return {"service_times": out, "samples": samples, "load_average": [list(load_before), list(os.getloadavg())]}


def main(args: argparse.Namespace) -> int:
    from ..cli.common import CliError

    if args.seconds <= 0 or args.repeats < 1 or args.identifiers < 100:
        raise CliError("calibrate needs --seconds > 0, --repeats >= 1 and --identifiers >= 100")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res = measure(args.seconds, args.repeats, args.identifiers, say)
    st = res["service_times"]
    host = os.uname().nodename
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"service times on {host} ({os.cpu_count()} CPUs), {when}, medians of {args.repeats} "
          f"(load average {res['load_average'][0][0]:.2f} before, {res['load_average'][1][0]:.2f} after):")
    for k, v in st.items():
        print(f"  {k:<20} {v:>8.1f} us")
    if args.out is not None:
        lines = ["# written by `idresolve simulate calibrate`", "[service_times]",
                 f'source = "calibrate on {host}, {when}, median of {args.repeats}"']
        lines += [f"{k} = {v}" for k, v in st.items()]
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    return 0
