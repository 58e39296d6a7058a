"""The network between simulated nodes: one-way delays from ``core.latency``, and what events change.

``one_way(a, b)`` is the seconds a message from node ``a`` to node ``b`` takes, or None when it is lost:
the latency model's sample (base delay by location, gaussian jitter clipped at 3 sigma, loss) with the
links' own seeded ``random.Random``, then a degraded link's factor, added delay and loss, and a partition
(a message between the two sides is lost). Clients of a node sit at the node's location.

The emulator fires its link delays on event-loop timers, which fire early or late; the agreement run gives
the lateness it measured (``set_late``) and each message draws its own from it; without one, a uniform
error of the timer grid (``grid_s``) stands for it.
"""

from __future__ import annotations

import bisect
import random

from ..core.latency import LatencyModel
from ..core.topology import Location, Topology


class Links:
    def __init__(self, topology: Topology, scenario: str | None, where: dict[str, Location],
                 rng: random.Random) -> None:
        self.topology = topology
        self.where = where
        self.rng = rng
        self.model = LatencyModel.for_topology(topology, scenario)
        self._sample = self.model.sampler(rng)  # ``model.sample_from_base_ms(base, rng)``, the same draws
        self.scenario = scenario or topology.default_scenario
        self.degraded: dict[tuple[str, str], tuple[float, float, float]] = {}  # (a, b) -> factor, add s, loss
        self.side: dict[str, int] = {}  # partition: node -> side (absent: side 0)
        self._plain = True  # nothing degraded or partitioned: the hot path skips the look-ups
        self.lost = 0
        # Base delays by node names: the model keys them by Location, whose generated hash takes every
        # field each time, and every message of a simulation asks for one.
        self._base_ms: dict[tuple[str, str], float] = {}
        self.transport_s = 0.0  # added to every message: what the hosts' own stacks take (service times)
        # The emulator's link delays fire on the event loop's millisecond timers, trimmed so that their mean is
        # what the model asked: each delay lands up to half a grid step early or late. 0: exact delays.
        self.grid_s = 0.0
        # Or, measured: how late the emulator's delay timers fired (``set_late``), drawn for every message
        # instead of the grid's uniform error. Cumulative counts and the lateness of each bin, in ms.
        self._late_cum: list[int] = []
        self._late_ms: list[float] = []

    def set_late(self, bins: list[tuple[float, int]]) -> None:
        """Draw each message's timer error from ``bins`` ((lateness in seconds, firings), as the emulator's
        ``idresolve_link_timer_late_total`` counted them) instead of the timer grid; empty: back to the grid."""
        kept = sorted((late, n) for late, n in bins if n > 0)
        total, self._late_cum, self._late_ms = 0, [], []
        for late, n in kept:
            total += n
            self._late_cum.append(total)
            self._late_ms.append(late * 1000.0)

    def set_scenario(self, scenario: str) -> None:
        self.model = LatencyModel.for_topology(self.topology, scenario)
        self._sample = self.model.sampler(self.rng)
        self.scenario = scenario
        self._base_ms = {}

    def one_way(self, a: str, b: str) -> float | None:
        base = self._base_ms.get((a, b))
        if base is None:
            where = self.where
            base = self._base_ms[(a, b)] = self.model.base_one_way_ms(where[a], where[b])
        ms = self._sample(base)
        if ms is None:
            self.lost += 1
            return None
        if self._late_cum:
            cum = self._late_cum
            ms = max(0.0, ms + self._late_ms[bisect.bisect_right(cum, self.rng.random() * cum[-1])])
        elif self.grid_s:
            ms = max(0.0, ms + (self.rng.random() - 0.5) * self.grid_s * 1000.0)
        if self._plain:
            return ms / 1000.0 + self.transport_s
        side = self.side
        if side.get(a, 0) != side.get(b, 0):
            self.lost += 1
            return None
        d = self.degraded.get((a, b)) or self.degraded.get((a, "*")) or self.degraded.get((b, "*"))
        if d is not None:
            factor, add_s, loss = d
            if loss > 0 and self.rng.random() < loss:
                self.lost += 1
                return None
            return ms / 1000.0 * factor + add_s + self.transport_s
        return ms / 1000.0 + self.transport_s

    def degrade(self, a: str, b: str, factor: float, add_ms: float, loss: float) -> None:
        if factor == 1.0 and add_ms == 0.0 and loss == 0.0:
            self.degraded.pop((a, b), None)
            self.degraded.pop((b, a), None)
        else:
            self.degraded[(a, b)] = self.degraded[(b, a)] = (factor, add_ms / 1000.0, loss)
        self._refresh()

    def partition(self, nodes: list[str]) -> None:
        self.side = {n: 1 for n in nodes}
        self._refresh()

    def heal(self) -> None:
        self.side = {}
        self._refresh()

    def _refresh(self) -> None:
        self._plain = not self.degraded and not self.side
