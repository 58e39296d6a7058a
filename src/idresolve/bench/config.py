"""Benchmark settings and targets: light on imports, so the CLI can build its parser without loading the
server stack (aiohttp and the rest are imported when a benchmark actually runs)."""

from __future__ import annotations

from dataclasses import dataclass

# The node's MAX_BATCH (nodes.authoritative), not imported here to keep the CLI's start-up light;
# tests/test_bench.py checks that the two agree.
MAX_BATCH = 2_000
TARGET_REST_RATIO = 0.7  # node requests/s over a bare aiohttp handler's
TARGET_IDS_PER_S = 20_000  # batch registration into the durable store


@dataclass(frozen=True, slots=True)
class RestConfig:
    connections: int = 16
    duration_s: float = 5.0
    repeats: int = 3
    handles: int = 1_000  # identifiers registered, and cycled through by the load
    warmup_s: float = 1.0


@dataclass(frozen=True, slots=True)
class BatchConfig:
    identifiers: int = 100_000
    batch_size: int = MAX_BATCH
    repeats: int = 3
