"""The link latency model applied in the transport: a ``DelayFn`` for ``ClientPool``.

A node's outgoing requests to an endpoint are delayed by a one-way delay sampled from the latency model
between the node's location and the endpoint's, and the answer by another sample on the way back; a lost
sample drops the request (the caller's timeout fires). Unknown endpoints (clients, tools) get no delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..core.latency import LatencyModel
from ..core.topology import Location


@dataclass
class LinkStats:
    delays: int = 0
    delay_s_total: float = 0.0
    lost: int = 0
    by_peer: dict[str, float] = field(default_factory=dict)


class LinkModel:
    def __init__(self, model: LatencyModel, own: Location, where: dict[tuple[str, int], Location],
                 *, seed: int | None = None) -> None:
        self.model, self.own, self.where = model, own, where
        self.rng = random.Random(seed)
        self.stats = LinkStats()

    def __call__(self, host: str, port: int) -> tuple[float | None, float | None]:
        peer = self.where.get((host, port))
        if peer is None or self.model.is_off:
            return 0.0, 0.0
        out = self.model.sample_one_way_ms(self.own, peer, self.rng)
        back = self.model.sample_one_way_ms(peer, self.own, self.rng)
        if out is None or back is None:
            self.stats.lost += 1
            return None, None
        self.stats.delays += 2
        self.stats.delay_s_total += (out + back) / 1000.0
        return out / 1000.0, back / 1000.0
