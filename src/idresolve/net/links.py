"""The emulated network between a cluster's nodes: a ``DelayFn`` for ``ClientPool``, one per sending node.

A node's outgoing requests to an endpoint are delayed by a one-way delay sampled from the latency model
between the node's location and the endpoint's, and the answer by another sample on the way back; a lost
sample drops the request (the caller's timeout fires). Unknown endpoints (clients, tools) get no delay and
no fault: only links between the cluster's own nodes are emulated.

Faults injected at run time (``cluster.faults``) act here too, through a ``LinkFaults`` the worker shares
between all its nodes' links: a partition drops every message between its two sides, a slowed node's
links take ``factor`` times as long, a faulty link adds a fixed delay and a loss probability. The latency
model itself can be swapped at run time (``model``), for the dashboard's and the CLI's scenario control.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..core.latency import LatencyModel
from ..core.topology import Location

#: A slowed link shorter than this (or with the latency model off) is slowed as if it took this long.
SLOW_FLOOR_MS = 1.0


@dataclass(frozen=True, slots=True)
class LinkEffect:
    """What the faults in force do to messages from one node to another."""

    dropped: bool = False  # a partition: nothing gets through
    factor: float = 1.0  # the latency model's one-way delay times this (slowed nodes)
    extra_ms: float = 0.0  # added to every one-way delay
    loss: float = 0.0  # probability that a message (request or answer) is lost


class LinkFaults(Protocol):
    """The fault table a worker holds (``cluster.faults.FaultSet``); ``effect`` is None for a healthy link."""

    def effect(self, src: str, dst: str) -> LinkEffect | None: ...


@dataclass
class LinkStats:
    delays: int = 0
    delay_s_total: float = 0.0
    lost: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)  # requests sent, by peer node name
    dropped_by_fault: int = 0


@dataclass(frozen=True, slots=True)
class Peer:
    """A node of the cluster as seen from a link: its name and where it is."""

    name: str
    location: Location


class LinkModel:
    """The links from the node ``own_name`` at ``own`` to every endpoint in ``where``."""

    def __init__(self, model: LatencyModel, own: Location, where: Mapping[tuple[str, int], Peer], *,
                 own_name: str = "", faults: LinkFaults | None = None, seed: int | None = None) -> None:
        self.model, self.own, self.where = model, own, where
        self.own_name = own_name
        self.faults = faults
        self.rng = random.Random(seed)
        self.stats = LinkStats()

    def __call__(self, host: str, port: int) -> tuple[float | None, float | None]:
        peer = self.where.get((host, port))
        if peer is None:
            return 0.0, 0.0
        by_peer = self.stats.by_peer
        by_peer[peer.name] = by_peer.get(peer.name, 0) + 1
        effect = self.faults.effect(self.own_name, peer.name) if self.faults is not None else None
        if effect is None:
            if self.model.is_off:
                return 0.0, 0.0
            out = self.model.sample_one_way_ms(self.own, peer.location, self.rng)
            back = self.model.sample_one_way_ms(peer.location, self.own, self.rng)
        else:
            if effect.dropped:
                self.stats.dropped_by_fault += 1
                self.stats.lost += 1
                return None, None
            out = self._faulty(self.own, peer.location, effect)
            back = self._faulty(peer.location, self.own, effect)
        if out is None or back is None:
            self.stats.lost += 1
            return None, None
        self.stats.delays += 2
        self.stats.delay_s_total += (out + back) / 1000.0
        return out / 1000.0, back / 1000.0

    def _faulty(self, a: Location, b: Location, effect: LinkEffect) -> float | None:
        if effect.loss and self.rng.random() < effect.loss:
            return None
        base = 0.0 if self.model.is_off else self.model.sample_one_way_ms(a, b, self.rng)
        if base is None:
            return None
        if effect.factor != 1.0:
            base = max(base, SLOW_FLOOR_MS) * effect.factor
        return base + effect.extra_ms

    def metrics(self) -> dict[str, tuple[str, str, object]]:
        """Requests to each peer node (the dashboard draws links by them) and messages dropped by faults."""
        peers = {(("peer", name),): float(n) for name, n in self.stats.by_peer.items()}
        return {
            "idresolve_link_requests": ("counter", "Requests sent to each node of the cluster", peers),
            "idresolve_link_fault_dropped": ("counter", "Requests dropped by a partition", self.stats.dropped_by_fault),
        }
