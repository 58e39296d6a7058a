"""Applying what-if events (``sim.events``) to a running simulation, each at its virtual time.

Connecting a secondary node is what start-up allocation does for a connected one: the primary top-level
node's admin creates ``0.NA/88.<n>`` with the secondary's HS_SITE through the node's API
(``cluster.bootstrap.allocation_values``), and registry replication carries it to the other top-level
nodes over the simulated network; disconnecting deletes it the same way. The other actions change the
links (``sim.links``), a node's ``Server`` or a recursive resolver's settings.
"""

from __future__ import annotations

from typing import Any

from ..cluster.bootstrap import OWNER_AT_PARENT_PERMS, allocation_values
from ..core.codes import ResponseCode
from ..core.handles import prefix_handle
from ..core.topology import Topology, TopologyError
from .events import SimEvent, degrade_option, node_args
from .timetext import duration_s


class WhatIfError(ValueError):
    pass


def check_events(events: tuple[SimEvent, ...], topology: Topology, running: set[str]) -> None:
    """Every node an event names exists and runs; scenarios exist; connect names a secondary."""
    for ev in events:
        for name in node_args(ev):
            if name not in running:
                raise WhatIfError(f"event {ev.text!r}: no running node {name!r}")
        if ev.action == "scenario":
            try:
                topology.latency(ev.args[0])
            except TopologyError as exc:
                raise WhatIfError(f"event {ev.text!r}: {exc.problem}") from None
        if (ev.action in ("connect", "disconnect") and ev.args[0] != "all"
                and topology.node(ev.args[0]).role != "secondary"):
            raise WhatIfError(f"event {ev.text!r}: {ev.args[0]} is not a secondary node")


class WhatIfs:
    def __init__(self, engine: Any) -> None:
        self.e, self.c = engine, engine.c

    def schedule(self, events: tuple[SimEvent, ...]) -> None:
        for ev in events:
            self.e.at(self.e.t_start + ev.at_s, self.apply, ev)

    def apply(self, t: float, ev: SimEvent) -> None:
        a = ev.args
        e, c, links = self.e, self.c, self.e.links
        note = ""
        if ev.action == "kill":
            e.kill(a[0], t)
        elif ev.action == "recover":
            e.recover(a[0], t)
        elif ev.action == "partition":
            links.partition(a[0].split(","))
        elif ev.action == "heal":
            links.heal()
        elif ev.action == "slow":
            c.node(a[0]).server.speed = float(a[1])
        elif ev.action == "degrade":
            opts = dict(degrade_option(x) for x in a[3:])
            links.degrade(a[0], a[1], float(a[2]), opts.get("add", 0.0), opts.get("loss", 0.0))
        elif ev.action == "scenario":
            links.set_scenario(a[0])
        elif ev.action in ("connect", "disconnect"):
            note = self._registry(ev.action, a[0])
        else:
            self._resolvers(ev.action, a)
        e.stats.events.append({"at_s": round(t - e.t_start, 3), "event": ev.label, "text": ev.text,
                               **({"note": note} if note else {})})

    def _resolvers(self, action: str, a: tuple[str, ...]) -> None:
        recs = [self.c.rec[a[1]]] if len(a) == 2 else list(self.c.rec.values())
        for rec in recs:
            r = rec.node.resolver
            if action == "ttl-cap":
                r.ttl_cap_s = duration_s(a[0])
            elif action == "negative-ttl":
                r.negative_ttl_s = duration_s(a[0])
            elif action == "cache-size":
                r.answers.max_entries = int(a[0])

    def _registry(self, action: str, which: str) -> str:
        c = self.c
        topo = c.topology
        names = [n.name for n in topo.nodes_by_role("secondary")] if which == "all" else [which]
        top = c.plan.primary_top()
        country = topo.country_prefix
        done = []
        with c.setup_client()(top.dial_host, top.tcp_port, auth=c.auth_of(country)) as admin:
            for name in names:
                sec = topo.node(name)
                assert sec.prefix is not None
                handle = prefix_handle(sec.prefix)
                held = admin.resolve(handle).code == ResponseCode.SUCCESS
                if action == "connect" and not held:
                    values = allocation_values(country, sec.prefix, c.master, c.plan.node(name),
                                               owner_perms=OWNER_AT_PARENT_PERMS)
                    resp = admin.create(handle, values)
                elif action == "disconnect" and held:
                    resp = admin.delete(handle)
                else:
                    continue
                if resp.code != ResponseCode.SUCCESS:
                    return f"{action} {name} refused: code {resp.code} {resp.message}"
                done.append(name)
        return f"{action}ed {len(done)} secondary node(s)"

