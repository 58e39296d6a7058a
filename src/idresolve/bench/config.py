"""Benchmark settings and targets: light on imports, so the CLI can build its parser without loading the
server stack (aiohttp and the rest are imported when a benchmark actually runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The node's MAX_BATCH (nodes.authoritative), not imported here to keep the CLI's start-up light;
# tests/test_bench.py checks that the two agree.
MAX_BATCH = 2_000
TARGET_REST_RATIO = 0.7  # node requests/s over a bare aiohttp handler's
TARGET_IDS_PER_S = 100_000  # batch registration into the durable store (issue 13)
TARGET_TEMPLATE_COST = 1.25  # a batch checked against its template over the same batch unchecked (time)


@dataclass(frozen=True, slots=True)
class RestConfig:
    connections: int = 16
    duration_s: float = 5.0
    repeats: int = 3
    handles: int = 1_000  # identifiers registered, and cycled through by the load
    warmup_s: float = 1.0
    workers: int = 0  # the node's worker processes (idresolve node --workers); 0: the node's default
    load: str = "auto"  # the load generator: "wrk" (bench.wrkload), "python" (bench.httpload), "auto": wrk if found


@dataclass(frozen=True, slots=True)
class BatchConfig:
    identifiers: int = 100_000
    batch_size: int = MAX_BATCH
    repeats: int = 3
    template: bool = False  # records fill a template; core and REST also run naming it (bench batch --template)
    clients: int = 4  # connections sending batches at once (REST and binary), one batch in flight on each


# -- bench run (documented in bench.scenarios) ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BenchScenario:
    name: str
    cold: bool
    latency: str | None  # the latency model the cluster must run with; None: any (own clusters: --latency)
    fixed_rate: bool = False  # runs open loop at one rate whatever the mode
    kill: bool = False
    model: bool = False
    description: str = ""


SCENARIOS: dict[str, BenchScenario] = {s.name: s for s in (
    BenchScenario("cached", False, None, description="identifiers already in the recursive node's cache"),
    BenchScenario("cold", True, None, description="the whole chain every time (authoritative flag / ?auth=true)"),
    BenchScenario("latency-on", True, "on", fixed_rate=True, model=True,
             description="cold resolutions at a fixed rate, latency model on: measured vs the model"),
    BenchScenario("latency-off", True, "off", fixed_rate=True, model=True,
             description="cold resolutions at the same fixed rate, latency model off"),
    BenchScenario("kill-top", True, None, fixed_rate=True, kill=True,
             description="cold resolutions at a fixed rate; the first top-level node is SIGKILLed halfway"),
    BenchScenario("replication", False, None, fixed_rate=True,
             description="replication lag to a mirror and between top-level nodes under writes; the mirror killed "
                         "and started again (bench.replication)"),
)}
MODES = ("closed", "rate", "sweep")
PROTOCOLS = ("binary", "rest", "handle")  # handle: the native Handle protocol (bench.nativeload)
BOTH = ("binary", "rest")  # --protocol both
SWEEP_FRACTIONS = (0.1, 0.25, 0.5, 0.7, 0.85, 1.0, 1.15)
DEFAULT_FIXED_RATE = {"latency-on": 200.0, "latency-off": 200.0, "kill-top": 500.0, "replication": 200.0}


@dataclass(frozen=True, slots=True)
class RunConfig:
    scenarios: tuple[str, ...] = ("cached",)
    protocols: tuple[str, ...] = ("binary",)
    modes: tuple[str, ...] = ("closed",)
    rate: float | None = None  # mode "rate"; also the fixed rate of latency-*/kill-top when given
    plan: tuple[tuple[str, str, str], ...] = ()  # explicit (scenario, protocol, mode) items (the suite)
    duration_s: float = 5.0
    repeats: int = 1
    connections: int = 8
    depth: int = 16  # closed loop: requests in flight per connection
    timeout_s: float = 5.0
    warmup_s: float = 1.0
    identifiers: int = 2_000
    topology: str = "minimal"  # own cluster: minimal, shandong or a TOML path
    data_dir: Path | None = None  # an existing cluster instead
    latency: str = "off"  # own cluster, for scenarios without a requirement
    node: str | None = None  # the recursive node to drive (default: the first)
    workers: int = 1  # own cluster: processes of the recursive node driven (workers = N in the topology)
    kill_node: str = "top-beijing"
    baselines: bool = True
    sweep_fractions: tuple[float, ...] = SWEEP_FRACTIONS
    step_s: float = 2.0
    trace_sample: int = 200
    tick_s: float = 50e-6  # loadgen.DEFAULT_TICK_S
    seed: bool = True

    def fixed_rate(self, scenario: str) -> float:
        return self.rate if self.rate else DEFAULT_FIXED_RATE.get(scenario, 1000.0)

    def items(self) -> list[tuple[str, str, str]]:
        """(scenario, protocol, mode) in order. Fixed-rate scenarios run once per protocol (kill-top once)."""
        if self.plan:
            return list(self.plan)
        out = []
        for name in self.scenarios:
            spec = SCENARIOS[name]
            protocols = self.protocols[:1] if spec.kill or name == "replication" else self.protocols
            modes = ("rate",) if spec.fixed_rate else self.modes
            out.extend((name, p, m) for p in protocols for m in modes)
        return out
