"""``bench run --scenario replication``: replication lag under a write load, and after a killed mirror comes back.

The lag is what the nodes export (``idresolve_replication_lag_seconds{peer}``, the age of the oldest
change a peer or mirror has not applied yet), read from the primary's ``/metrics`` every ``SAMPLE_S``
while writes go on; p50 and p99 are over those samples. Three phases, writes at ``rate`` per second all
along (identifiers ``<prefix>/BENCH-REPL-<run>-<n>`` at the first secondary node that has a mirror, and
one registry record in ten, ``0.NA/<country>.9<run><n>``, at the primary top-level node, deleted at the end):
1. ``steady``: everything up, ``duration`` seconds;
2. ``mirror down``: the mirror is killed through the control channel (``cluster.faults``), ``duration / 2``;
3. ``back``: it is started again; how long until its lag is 0 again (``caught_up_s``), and the lag after.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from ..cluster.credentials import CLUSTER_SECRET_FILE, CREDENTIALS_FILE
from ..cluster.faults import Controller, new_fault
from ..cluster.plan import identity_of
from ..core.values import string_value
from ..net.blocking import BlockingClient
from .scrape import scrape_one

SAMPLE_S = 0.05
CATCH_UP_LIMIT_S = 60.0


class NoMirror(RuntimeError):
    pass


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(samples: list[float]) -> dict[str, Any]:
    ms = [s * 1000.0 for s in samples]
    return {"samples": len(ms), "lag_p50_ms": _round(_quantile(ms, 0.5)), "lag_p99_ms": _round(_quantile(ms, 0.99)),
            "lag_max_ms": _round(max(ms) if ms else None), "lag_mean_ms": _round(statistics.fmean(ms) if ms else None)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


class _Sampler:
    """Reads the lag gauges of two nodes every ``SAMPLE_S`` into the current phase's lists."""

    def __init__(self, urls: dict[str, tuple[str, str]]) -> None:
        self.urls = urls  # what -> (node http url, peer name)
        self.phase = "steady"
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.pending: dict[str, list[float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            for what, (url, peer) in self.urls.items():
                sample = scrape_one(url, timeout_s=2.0)
                if sample is None:
                    continue
                label = (("peer", peer),)
                lag = sample.get(("idresolve_replication_lag_seconds", label))
                if lag is not None:
                    self.samples.setdefault(self.phase, {}).setdefault(what, []).append(lag)
                pend = sample.get(("idresolve_replication_peer_pending", label))
                if pend is not None and what == "mirror":
                    self.pending.setdefault(self.phase, []).append(pend)
            self.stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - t0)))

    def lag(self, what: str) -> float | None:
        url, peer = self.urls[what]
        sample = scrape_one(url, timeout_s=2.0)
        return None if sample is None else sample.get(("idresolve_replication_lag_seconds", (("peer", peer),)))


def replication_run(cluster: Any, *, rate: float, duration_s: float, say: Callable[[str], None]) -> dict[str, Any]:
    topo = cluster.topology
    secondary = next((s for s in topo.nodes_by_role("secondary") if topo.mirrors_of(s)), None)
    if secondary is None or secondary.prefix is None:
        raise NoMirror(f"the topology {topo.name!r} has no secondary node with a mirror: use --topology shandong "
                       "(or a topology with `mirrors = [...]` on a secondary)")
    mirror = topo.mirrors_of(secondary)[0]
    nodes = {str(n["name"]): n for n in cluster.nodes()}
    tops = [t for t in topo.nodes_by_role("top") if not t.disaster_recovery] or list(topo.nodes_by_role("top"))
    top, peer_top = tops[0], next(t for t in topo.nodes_by_role("top") if t.name != tops[0].name)
    creds = json.loads((cluster.data_dir / CREDENTIALS_FILE).read_text(encoding="utf-8"))["identities"]
    master = (cluster.data_dir / CLUSTER_SECRET_FILE).read_text(encoding="utf-8").strip()
    control = Controller.for_data_dir(cluster.data_dir, master)
    country = top.prefix or "88"

    def client(name: str, prefix: str) -> BlockingClient:
        host, port = str(nodes[name]["tcp"]).rsplit(":", 1)
        ident = identity_of(prefix)
        return BlockingClient(host, int(port), timeout_s=10.0, auth=(ident, str(creds[ident]).encode()))

    sampler = _Sampler({"mirror": (str(nodes[secondary.name]["http"]), mirror.name),
                        "registry": (str(nodes[top.name]["http"]), peer_top.name)})
    run_id = str(int(time.time()) % 100000)
    written = {"mirror": 0, "registry": 0}
    registry_keys: list[str] = []
    with client(secondary.name, secondary.prefix) as sec_c, client(top.name, country) as top_c:

        def write_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            interval = 1.0 / rate
            due = time.monotonic()
            while due < end:
                n = written["mirror"]
                sec_c.create(f"{secondary.prefix}/BENCH-REPL-{run_id}-{n}", (string_value(1, "URL", f"https://example.com/{n}"),),
                             overwrite=True)
                written["mirror"] += 1
                if n % 10 == 0:
                    handle = f"0.NA/{country}.9{run_id}{written['registry']}"
                    resp = top_c.create(handle, (string_value(1, "DESC", "bench replication"),), overwrite=True)
                    if resp.code == 1:
                        registry_keys.append(handle)
                    written["registry"] += 1
                due += interval
                time.sleep(max(0.0, due - time.monotonic()))

        sampler.thread.start()
        try:
            say(f"replication: {secondary.name} -> mirror {mirror.name}, {top.name} -> {peer_top.name}; "
                f"{rate:g} writes/s for {duration_s:g} s")
            write_for(duration_s)
            sampler.phase = "down"
            control.add(new_fault("kill", [mirror.name], now=time.time()))
            t_kill = time.monotonic()
            write_for(duration_s / 2)
            down_s = time.monotonic() - t_kill
            sampler.phase = "back"
            control.remove(kind="kill", node=mirror.name)
            t_back = time.monotonic()
            caught_up = None
            while time.monotonic() - t_back < CATCH_UP_LIMIT_S:
                write_for(0.1)
                lag = sampler.lag("mirror")
                if lag == 0.0:
                    caught_up = time.monotonic() - t_back
                    break
            sampler.phase = "after"
            write_for(min(duration_s, 3.0))
        finally:
            sampler.stop.set()
            sampler.thread.join(5)
            control.remove(kind="kill", node=mirror.name)
            for handle in registry_keys:
                top_c.delete(handle)
    s = sampler.samples
    out = {"primary": secondary.name, "mirror": mirror.name, "registry_from": top.name, "registry_peer": peer_top.name,
           "rate_per_s": rate, "duration_s": duration_s, "writes": dict(written),
           "steady": {"mirror": _summary(s.get("steady", {}).get("mirror", [])),
                      "registry": _summary(s.get("steady", {}).get("registry", []))},
           "mirror_down": {"down_s": round(down_s, 2), **_summary(s.get("down", {}).get("mirror", [])),
                           "pending_max": max(sampler.pending.get("down", [0.0]))},
           "back": {"caught_up_s": None if caught_up is None else round(caught_up, 2),
                    **_summary(s.get("back", {}).get("mirror", []))},
           "after": {"mirror": _summary(s.get("after", {}).get("mirror", [])),
                     "registry": _summary(s.get("after", {}).get("registry", []))}}
    st, dn, bk = out["steady"]["mirror"], out["mirror_down"], out["back"]
    say(f"replication lag to the mirror under {rate:g} writes/s: p50 {st['lag_p50_ms']} ms, p99 {st['lag_p99_ms']} ms; "
        f"registry p99 {out['steady']['registry']['lag_p99_ms']} ms; mirror down {dn['down_s']} s: lag up to "
        f"{dn['lag_max_ms']} ms, {dn['pending_max']:.0f} records waiting; caught up {bk['caught_up_s']} s after its "
        f"restart; afterwards p99 {out['after']['mirror']['lag_p99_ms']} ms")
    return out
