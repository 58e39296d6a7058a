"""One simulation run: a workload, a seed and a run number in; the report's data out.

The virtual day is Monday 2024-03-04 in China (UTC+8): the run starts at the workload's ``start`` time of
that day (after ``warmup``, whose arrivals warm the caches and are not reported) and lasts ``duration``.
Random streams come from ``draw.streams(seed, run)``; everything else is deterministic, so a seed and a
run number give the same run, event for event (``Engine.fingerprint``).
"""

from __future__ import annotations

import itertools
import math
import resource
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..bench.cluster import SEED_TAG, Cluster
from ..cluster.plan import ClusterPlan
from ..cluster.seeding import seed_plan
from ..cluster.supervisor import UpOptions, cluster_description
from ..core.latency import LatencyModel
from ..core.topology import Topology, TopologyError, load_topology
from .build import NodeSettings, SimCluster, VirtualClock, build_cluster, connect_all
from .draw import ArrivalBlocks, Zipf, streams
from .engine import Engine
from .events import SimEvent
from .links import Links
from .space import IdentifierSpace, build_space
from .stats import HOUR_S, Stats
from .whatif import WhatIfError, WhatIfs, check_events
from .workload import Workload, WorkloadError
from .writes import Replication, Writes

DAY0 = 1_709_481_600.0  # 2024-03-04 00:00 in China (UTC+8)
MEMO_RANKS = 1 << 17  # identifiers of the most popular ranks are made once
MASTER = "idresolve-simulation"  # the cluster secret: every prefix admin's secret derives from it


@dataclass(frozen=True, slots=True)
class RunSpec:
    workload: Workload
    seed: int = 1
    run: int = 0
    duration_s: float | None = None  # None: the workload's
    events: tuple[SimEvent, ...] = ()  # added to the workload's
    keys: tuple[str, ...] = ()  # keys = "cycle": the identifiers, in order (else: the seeded layout)
    label: str = ""
    # The emulator's delay timers, by how late they fired ((seconds, firings), measured by the agreement
    # run): each message between nodes draws its timer error from it instead of the workload's grid.
    timer_late: tuple[tuple[float, int], ...] = ()


@dataclass
class RunResult:
    spec: RunSpec
    cluster: SimCluster
    engine: Engine
    stats: Stats
    topology: Topology
    t_start: float
    duration_s: float
    build_s: float
    peak_rss_mb: float
    keys_seeded: int


def topology_for(w: Workload) -> Topology:
    base = Path(w.source).parent if w.source else Path("config")
    path = w.topology if w.topology.is_absolute() else base / w.topology
    try:
        return load_topology(path)
    except TopologyError as exc:
        raise WorkloadError(f"workload {w.name!r}: {exc}") from None


def seeded_keys(plan: ClusterPlan, topology: Topology, count: int) -> list[str]:
    """The identifiers ``idresolve seed --identifiers COUNT --prefix-suffix BENCH`` registers that resolve
    through the top level, in the interleaved order the benchmark's load generator cycles through."""
    opts = UpOptions(Path(topology.source), Path("."), plan.base_port, 1, "on", None)
    return Cluster(Path("."), cluster_description(plan, opts), topology).identifiers(count)


def _key_source(w: Workload, space: IdentifierSpace, rng: Any, keys: list[str],
                low_demand: dict[str, float]) -> Callable[[], str]:
    """Readable identifiers in the workload's order; one under a prefix of ``low_demand`` (folded prefix ->
    relative demand) is kept with that probability, else drawn again."""
    if w.keys == "cycle":
        return itertools.cycle(keys).__next__
    total, of_rank, place = space.total, space.handle_of_rank, space.place_of_rank
    draw = Zipf(total, w.zipf_exponent, rng).draw if w.keys == "zipf" else lambda: rng.randrange(total)
    # The most popular ranks' identifiers, each with its prefix's demand (None: always kept), made once.
    memo: list[tuple[str, float | None] | None] = [None] * min(MEMO_RANKS, total)
    limit, rnd, demand = len(memo), rng.random, low_demand.get

    def key() -> str:
        for _ in range(1000):  # bounded: a demand of 0 everywhere cannot loop forever
            r = draw()
            if r < limit:
                known = memo[r]
                if known is None:
                    h = of_rank(r)
                    known = memo[r] = (h, demand(h[:h.index("/")]) if low_demand else None)
                h, d = known
                if d is None or rnd() < d:
                    return h
            else:
                p, k = place(r)
                if not low_demand or (d := demand(p.prefix)) is None or rnd() < d:
                    return p.handle(k)  # else drawn again: its name is never written
        return of_rank(r)

    return key


def low_demand(w: Workload, topology: Topology, space: IdentifierSpace) -> dict[str, float]:
    """Prefixes under secondary nodes not registered with the top level (in the topology file, before any
    what-if connects them) -> the workload's ``unconnected_demand``, when below 1."""
    if w.unconnected_demand >= 1.0:
        return {}
    unconnected = {n.prefix for n in topology.nodes_by_role("secondary") if not n.connected}
    return {p.folded: w.unconnected_demand for p in space.prefixes if p.secondary_prefix in unconnected}


def _shares(w: Workload, cluster: SimCluster) -> list[float]:
    names = list(cluster.rec)
    unknown = sorted(set(w.clients) - set(names))
    if unknown:
        raise WorkloadError(f"workload {w.name!r}: clients name {', '.join(unknown)}, which are not recursive "
                            f"nodes of the topology ({', '.join(names)})")
    if not w.clients:
        return [1.0] * len(names)
    return [w.clients.get(n, 0.0) for n in names]


def simulate(spec: RunSpec, *, progress: Callable[[str], None] | None = None, paths: bool = False) -> RunResult:
    """Run ``spec``. ``paths``: also keep end-to-end latency per path and hop latency per node (agreement)."""
    import time

    t_build = time.perf_counter()
    w = spec.workload
    duration = spec.duration_s if spec.duration_s is not None else w.duration_s
    if duration <= 0:
        raise WorkloadError("the duration must be above 0")
    as_written = topology_for(replace(w, connect_all=False))
    topology = connect_all(as_written) if w.connect_all else as_written
    rng = streams(spec.seed, spec.run)
    space = build_space(topology, w.space)
    demand = low_demand(w, as_written, space)
    t_start = DAY0 + w.start_s
    clock = VirtualClock(t_start - w.warmup_s)
    scenario = w.scenario or topology.default_scenario
    try:
        latency = LatencyModel.for_topology(topology, scenario)
    except TopologyError as exc:
        raise WorkloadError(f"workload {w.name!r}: {exc.problem}") from None
    cluster = build_cluster(topology, space, latency=latency, settings=w.nodes, clock=clock, master=MASTER)
    events = (*w.events, *spec.events)
    try:
        check_events(events, topology, set(cluster.auth) | set(cluster.rec))
    except WhatIfError as exc:
        raise WorkloadError(str(exc)) from None
    keys = list(spec.keys)
    seeded = 0
    if w.keys == "cycle":
        seeded = seed_plan(cluster.plan, MASTER, w.key_count, tag=SEED_TAG, client=cluster.setup_client())["registered"]
        keys = keys or seeded_keys(cluster.plan, topology, w.key_count)
        if not keys:
            raise WorkloadError(f"workload {w.name!r}: no seeded identifier resolves through the top level")
    links = Links(topology, scenario, cluster.location, rng["links"])
    links.grid_s = w.timer_grid_ms / 1000.0
    if spec.timer_late:
        links.set_late(list(spec.timer_late))
    stats = Stats(t_start, math.ceil(duration / HOUR_S))
    t_end = t_start + duration
    engine = Engine(cluster, links, w.service_times.seconds(), stats, t_start=t_start, t_end=t_end,
                    client_timeout_s=w.client_timeout_s, trace=w.trace, authoritative=w.authoritative,
                    progress=progress)
    if paths:
        engine.paths, engine.hop_nodes = {}, {}
    engine.writes = Writes(engine, space, rng["writes"])
    Replication(engine)
    WhatIfs(engine).schedule(events)
    for b in w.bursts:
        for i in range(b.batches):
            engine.at(t_start + b.at_s + i * b.every_s, engine.writes.burst, (b.prefix, b.size))
    segment = 86_400.0 / len(w.profile)
    edges = [DAY0 + k * segment for k in range(int((t_start - w.warmup_s - DAY0) // segment),
                                               int((t_end - DAY0) // segment) + 2)]
    blocks = ArrivalBlocks(t0=t_start - w.warmup_s, t_end=t_end, rate_at=lambda t: w.rate_at((t - DAY0) % 86_400.0),
                           edges=edges, poisson=w.arrivals == "poisson", shares=_shares(w, cluster),
                           unknown_share=w.unknown_share, write_share=w.write_share,
                           register_share=w.register_share, key=_key_source(w, space, rng["keys"], keys, demand),
                           unknown=lambda: space.unknown_handle(rng["keys"].randrange(space.total)),
                           rng=rng["arrivals"])
    build_s = time.perf_counter() - t_build
    engine.run(blocks)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return RunResult(spec, cluster, engine, stats, topology, t_start, duration, build_s, peak, seeded)


def with_settings(w: Workload, **changes: Any) -> Workload:
    """``w`` with node settings replaced (studies and tests)."""
    return replace(w, nodes=replace(w.nodes, **changes))


__all__ = ["DAY0", "NodeSettings", "RunResult", "RunSpec", "simulate"]
