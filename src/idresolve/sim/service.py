"""The service-time model: what one request costs a node's CPU, per operation, in virtual time.

A simulated node is one server with a FIFO queue (``sim.nodes.Server``): a request waits until the node
is free, then occupies it for the cost of its operation below, times the node's slow-down factor (a
what-if). Which operation a request is follows from what the node code did with it: an authoritative
node's answer from its ``answers`` cache (``auth_cached``) or through ``dispatch.answer`` (``auth_query``),
a write, a batch per identifier, a cheap SERVER_TOO_BUSY (``busy``); a recursive node's fast-path hit
(``rec_cached``), the start and end of a walk (``rec_walk``) and each upstream answer it takes
(``rec_hop``). Two figures are latency rather than CPU: ``transport`` is added to every message between
nodes and ``client`` to every resolution (the emulator's loopback costs; 0 by default).

The defaults were measured on this project's 2-core machine by ``idresolve simulate calibrate``
(the real asyncio nodes on loopback, driven closed-loop by the project's load generator, CPU-seconds of
the node's process per request: ``docs/simulation.md``). A TOML table ``[service_times]`` (in the
workload file or the file ``calibrate --out`` writes) overrides any of them, in microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


class ServiceTimeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ServiceTimes:
    """Per-request CPU cost in microseconds (see the module docstring)."""

    auth_cached_us: float = 13.9
    auth_query_us: float = 94.2
    auth_write_us: float = 523.6
    auth_batch_item_us: float = 52.7
    busy_us: float = 4.6
    rec_cached_us: float = 14.4
    rec_walk_us: float = 100.2
    rec_hop_us: float = 70.1
    # Latency that is not the nodes' CPU: the emulator's loopback sockets, event-loop wake-ups and delay
    # timers. Zero for a model of the real network (the latency model's per_hop_ms stands for its costs);
    # calibrate measures them and the agreement workload uses them.
    transport_us: float = 0.0  # every message between nodes, each way
    client_us: float = 0.0  # a client's round trip to its recursive node
    source: str = "idresolve simulate calibrate, this project's 2-core machine, load average 0.6-1.2, median of 3"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "source":
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ServiceTimeError(f"{f.name} must be a number of microseconds >= 0, not {v!r}")
            object.__setattr__(self, f.name, float(v))

    def seconds(self) -> dict[str, float]:
        """Every cost in seconds, by name without the ``_us`` (what the engine reads)."""
        return {f.name[:-3]: getattr(self, f.name) / 1e6 for f in fields(self) if f.name.endswith("_us")}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS = tuple(f.name for f in fields(ServiceTimes) if f.name != "source")


def service_times(table: Mapping[str, Any] | None, base: ServiceTimes | None = None, *,
                  source: str = "") -> ServiceTimes:
    """``base`` (the defaults) with the keys of ``table`` replaced; unknown keys are errors."""
    base = base or ServiceTimes()
    if not table:
        return base
    unknown = sorted(set(table) - set(FIELDS) - {"source"})
    if unknown:
        raise ServiceTimeError(f"unknown service time(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    kept = {k: v for k, v in table.items() if k != "source"}
    return replace(base, **kept, source=str(table.get("source", source or base.source)))
