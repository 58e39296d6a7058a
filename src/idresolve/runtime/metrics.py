"""Prometheus metrics for one node (prometheus-client); the HTTP apps serve ``render()`` at ``GET /metrics``.

Each node has its own ``CollectorRegistry`` (many nodes share a process). Per-request work is two cheap
calls on pre-bound children; everything else (records stored, cache hits and misses, link delays,
replication) is read from the node's own counters when scraped, so it costs nothing per request.

Names:
- ``idresolve_requests_total{surface, op, code}``: requests answered (surface ``binary`` or ``rest``;
  ``code`` is the Handle response code for binary, the HTTP status for REST).
- ``idresolve_request_seconds{surface, op}``: time spent answering, histogram.
- ``idresolve_records``: records in the node's store.
- ``idresolve_cache_hits_total``, ``idresolve_cache_misses_total``, ``idresolve_cache_entries``: recursive.
- ``idresolve_upstream_requests_total``: recursive node's requests to other nodes.
- ``idresolve_link_delays_total``, ``idresolve_link_delay_seconds_total``, ``idresolve_link_lost_total``:
  delays the latency model applied to this node's outgoing traffic; ``idresolve_link_timer_late_seconds``
  (gauge): how late their timers fired on average, against the intended instant (``net/delays.py``).
- ``idresolve_replication_pushed_total``: registry records pushed to peers (top-level nodes).
- ``idresolve_link_requests_total{peer}``: requests this node sent to each node of the cluster.
- ``idresolve_connections_handed_total``, ``idresolve_connections_adopted_total``,
  ``idresolve_connections_handoff_failed_total``: a node with several workers, connections passed to a less
  loaded worker, taken from another, and not passed because the other could not take them
  (``runtime/balance.py``).
- ``idresolve_replication_lag_seconds{peer}``, ``idresolve_replication_pending{peer}``: per replica (top-level
  peers, mirrors), the age of the oldest change it has not applied yet (0 when caught up) and how many
  records wait for it (``net/replicator.py``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..core.codes import OpCode

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _op_name(opcode: int) -> str:
    try:
        return OpCode(opcode).name.lower()
    except ValueError:
        return f"op{opcode}"


class _Sampled(Collector):
    """Reads counters owned by the node when scraped."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Any]:
        values = self.read()
        for name, (kind, help_text, value) in values.items():
            # A value is a number, or {((label, value), ...): number} for a labelled family.
            labelled = value if isinstance(value, dict) else {(): value}
            labels = [k for k, _ in next(iter(labelled), ())]
            family = (CounterMetricFamily(name, help_text, labels=labels) if kind == "counter" else
                      GaugeMetricFamily(name, help_text, labels=labels))
            for key, v in labelled.items():
                family.add_metric([lv for _, lv in key], v)
            yield family


class _Requests(Collector):
    """Request counts and latency histograms kept in plain dicts and lists (no locks, no label lookups
    per request) and turned into Prometheus families only when scraped."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.hists: dict[tuple[str, str], list[float]] = {}  # bucket counts..., then the sum
        # Answers counted elsewhere, with no time (a fast path's own counters): (surface, op) -> code -> count.
        self.untimed: list[tuple[str, str, Callable[[], dict[int, int]]]] = []

    def collect(self) -> Iterable[Any]:
        counts, hists = dict(self.counts), {k: list(v) for k, v in self.hists.items()}
        for surface, op, read in self.untimed:
            for code, n in read().items():
                counts[(surface, op, code)] = counts.get((surface, op, code), 0) + n
                h = hists.setdefault((surface, op), [0.0] * (len(BUCKETS) + 2))
                h[0] += n  # no time: the lowest bucket
        c = CounterMetricFamily("idresolve_requests", "Requests answered", labels=["surface", "op", "code"])
        for (surface, op, code), n in sorted(counts.items()):
            c.add_metric([surface, op, str(code)], n)
        yield c
        h = HistogramMetricFamily("idresolve_request_seconds", "Time spent answering a request",
                                  labels=["surface", "op"])
        for (surface, op), in_buckets in sorted(hists.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip((*BUCKETS, float("inf")), in_buckets[:-1], strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            h.add_metric([surface, op], buckets, in_buckets[-1])
        yield h


class NodeMetrics:
    def __init__(self, node_name: str, role: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = _Requests()
        self.registry.register(self._requests)
        self.node_name, self.role = node_name, role
        #: set in a worker process of a node (``runtime/workers.py``): turns this worker's text into the
        #: node's, gathering the other workers' texts
        self.peers: Callable[[bytes], Awaitable[bytes]] | None = None

    def sample(self, read: Callable[[], dict[str, Any]]) -> None:
        """Register values read at scrape time: ``{name: ("counter"|"gauge", help, value)}``."""
        self.registry.register(_Sampled(read))

    def observe(self, surface: str, op: str, code: int, seconds: float) -> None:
        counts = self._requests.counts
        key = (surface, op, code)
        counts[key] = counts.get(key, 0) + 1
        hists = self._requests.hists
        hkey = (surface, op)
        h = hists.get(hkey)
        if h is None:
            h = hists[hkey] = [0.0] * (len(BUCKETS) + 2)
        h[bisect_left(BUCKETS, seconds)] += 1
        h[-1] += seconds

    def binary_observer(self) -> Callable[[int, int, float], None]:
        names: dict[int, str] = {}

        def observe(opcode: int, code: int, seconds: float) -> None:
            op = names.get(opcode)
            if op is None:
                op = names[opcode] = _op_name(opcode)
            self.observe("binary", op, code, seconds)

        return observe

    def render(self) -> bytes | Awaitable[bytes]:
        own = generate_latest(self.registry)
        return own if self.peers is None else self.peers(own)

    def render_own(self) -> bytes:
        """This process's metrics only (what a worker gives the others)."""
        return generate_latest(self.registry)

    def count_untimed(self, surface: str, op: str, read: Callable[[], dict[int, int]]) -> None:
        """Answers a fast path counts itself (by response code, read when scraped), as requests of ``op``
        answered in no time: the hot path pays one dict update instead of an observation."""
        self._requests.untimed.append((surface, op, read))

    def rest_observer(self) -> Callable[[str, int, float], None]:
        return lambda op, status, seconds: self.observe("rest", op, status, seconds)


def admission_metrics(admission: object) -> dict[str, tuple[str, str, float]]:
    stats = getattr(admission, "stats", None)
    if stats is None:
        return {}
    return {
        "idresolve_admitted": ("counter", "Requests admitted", stats.admitted),
        "idresolve_shed_overload": ("counter", "Requests refused with code 3: event loop saturated", stats.shed_overload),
        "idresolve_shed_rate": ("counter", "Requests refused with code 3: client over its rate", stats.shed_rate),
        "idresolve_shed_inflight": ("counter", "Requests refused with code 3: too many in flight", stats.shed_inflight),
    }


_SUMMED = ("counter", "histogram", "summary")


def merge_texts(own: bytes, others: Iterable[bytes]) -> bytes:
    """One node's metrics from the texts of its worker processes (``own`` first): counters and histograms
    are summed sample by sample (a series only a peer has is added); gauges are this worker's (the records
    in the shared store are the same for all; a lag or cache size is one process's)."""
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families = {f.name: f for f in text_string_to_metric_families(own.decode())}
    for text in others:
        for fam in text_string_to_metric_families(text.decode()):
            mine = families.get(fam.name)
            if mine is None:
                families[fam.name] = fam
                continue
            if mine.type not in _SUMMED:
                continue
            index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(mine.samples)}
            for s in fam.samples:
                i = index.get((s.name, tuple(sorted(s.labels.items()))))
                if i is None:
                    mine.samples.append(s)
                else:
                    old = mine.samples[i]
                    mine.samples[i] = Sample(old.name, old.labels, old.value + s.value)

    class _Merged(Collector):
        def collect(self) -> Iterable[Any]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)
