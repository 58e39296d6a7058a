"""One ``Workload`` per Locust process: settings, the cluster, the key samplers; it decides what a task
does next and whether an answer counts as a failure. Users share it (gevent: no locking needed).

Built lazily from ``environment.parsed_options`` on first use, because a worker receives the custom
arguments from its master only with the first spawn message; dropped at every test start so a new run
(or changed options in the web UI) rebuilds it.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster_info import ClusterInfo, Enterprise, Node, cluster_from_topology, read_cluster
from keyspace import KeySpace, Names, make_sampler, seeded_counts
from knobs import Settings
from locust import constant, constant_throughput
from locust.env import Environment

from idresolve.client.rest import RestClient, basic_header
from idresolve.core.values import HandleValue, string_value


@dataclass(frozen=True, slots=True)
class Lookup:
    handle: str
    holder: Node
    seeded: bool  # False: an identifier that does not exist


@dataclass(frozen=True, slots=True)
class Writer:
    """An enterprise whose admin credentials the test has."""

    enterprise: Enterprise
    identity: str
    secret: str
    authorization: str  # the Basic header for REST writes


class Workload:
    def __init__(self, settings: Settings, cluster: ClusterInfo, rng: random.Random | None = None) -> None:
        self.settings, self.cluster = settings, cluster
        self.rng = rng or random.Random()
        everyone = cluster.enterprises
        counts = seeded_counts(settings.identifiers, len(everyone))  # the split `idresolve seed` made
        recursive = settings.target == "recursive"
        usable = [(e, c) for e, c in zip(everyone, counts, strict=True) if c and (e.reachable or not recursive)]
        if not usable:
            raise ValueError("no seeded identifier is reachable: every enterprise's secondary node is unconnected"
                             if recursive else "no seeded identifiers to draw from")
        self.enterprises = [e for e, _ in usable]
        self.keys = KeySpace([e.prefix for e in self.enterprises], [c for _, c in usable], settings.seed_tag)
        self.sampler = make_sampler(settings.keys, self.keys.size, settings.zipf_s, self.rng)
        self.holders = {e.prefix: e.holder for e in self.enterprises}
        self.names = Names(self.rng)
        self.recursive = cluster.recursive_named(settings.recursive) if recursive else []
        self._next_user = itertools.count()
        self._wait: Callable[[Any], float] = (constant_throughput(settings.rate) if settings.rate > 0
                                              else constant(0))
        self.writers: list[Writer] = []
        for e in everyone:
            admin = cluster.admin_of(e.prefix)
            if admin is not None:
                self.writers.append(Writer(e, admin[0], admin[1], basic_header(*admin)))

    # -- what a task does ------------------------------------------------------------------------------
    def wait(self, user: Any) -> float:
        return self._wait(user)

    def assign_recursive(self) -> Node | None:
        """The recursive node a new user talks to (users are spread round-robin); None when authoritative."""
        if not self.recursive:
            return None
        return self.recursive[next(self._next_user) % len(self.recursive)]

    def next_lookup(self) -> Lookup:
        share = self.settings.unknown_share
        if share and self.rng.random() < share:
            ent = self.enterprises[self.rng.randrange(len(self.enterprises))]
            return Lookup(self.names.unknown(ent.prefix), ent.holder, False)
        prefix, number = self.keys.locate(self.sampler.sample())
        return Lookup(f"{prefix}/{self.keys.tag}{number:09d}", self.holders[prefix], True)

    def wants_write(self) -> bool:
        share = self.settings.write_share
        return bool(share) and self.rng.random() < share

    def next_writer(self) -> Writer:
        if not self.writers:
            raise RuntimeError(f"writes need admin secrets, but {self.cluster.secrets_hint}")
        return self.writers[self.rng.randrange(len(self.writers))]

    def fresh_handle(self, writer: Writer) -> str:
        return self.names.fresh(writer.enterprise.prefix)

    # -- judging answers -------------------------------------------------------------------------------
    def verdict(self, *, success: bool, as_expected: bool, got: str, expected: str) -> str | None:
        """None when the answer passes under --idr-fail-on, else the failure message (no handle in it, so
        Locust groups failures by kind)."""
        fail_on = self.settings.fail_on
        if fail_on == "unexpected":
            return None if as_expected else f"expected {expected}, got {got}"
        if fail_on == "non-success":
            return None if success else f"expected success, got {got}"
        return None  # transport: only connection errors fail, and they never reach here


def record_values(handle: str) -> tuple[HandleValue, ...]:
    """What a registration writes: the shape of a seeded record (a URL and a template field)."""
    return (string_value(1, "URL", f"https://example.com/{handle}"), string_value(2000, "productName", "load test"))


def record_json(handle: str) -> dict[str, Any]:
    """The same record as a REST PUT body."""
    return {"values": [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": f"https://example.com/{handle}"}},
        {"index": 2000, "type": "productName", "data": {"format": "string", "value": "load test"}},
    ]}


_workloads: weakref.WeakKeyDictionary[Environment, Workload] = weakref.WeakKeyDictionary()
log = logging.getLogger("idresolve.loadtest")


def settings_of(environment: Environment) -> Settings:
    return Settings.from_options(environment.parsed_options)


def cluster_of(settings: Settings) -> ClusterInfo:
    if settings.topology is not None:
        return cluster_from_topology(settings.topology, settings.base_port, settings.dial_hosts)
    return read_cluster(settings.data_dir)


def workload_of(environment: Environment) -> Workload:
    wl = _workloads.get(environment)
    if wl is None:
        settings = settings_of(environment)
        wl = _workloads[environment] = Workload(settings, cluster_of(settings))
    return wl


def forget(environment: Environment) -> None:
    _workloads.pop(environment, None)


def preflight(wl: Workload) -> str | None:
    """Ask each recursive node in use for its health, and each enterprise's holder for its last seeded
    identifier drawn from: a missing one means --idr-identifiers is larger than what was seeded (or
    another tag was used), or the seeding has not finished. Returns a problem, or None."""
    timeout_s = wl.settings.timeout_s
    for node in wl.recursive:
        try:
            with RestClient(node.http, timeout_s=timeout_s) as c:
                health = c.health()
        except Exception as exc:  # ClientError, or anything http.client raises: report, do not crash Locust
            return f"cannot reach the recursive node {node.name} at {node.http}: {exc}"
        if health.status != 200:
            return f"the recursive node {node.name} answered HTTP {health.status} to /healthz"
    for handle in wl.keys.last_of_each():
        holder = wl.holders[handle.split("/", 1)[0]]
        try:
            with RestClient(holder.http, timeout_s=timeout_s) as c:
                answer = c.resolve(handle)
        except Exception as exc:
            return f"cannot reach {holder.name} at {holder.http}: {exc}"
        if answer.status == 404:
            return (f"{handle} is not registered: seed at least {wl.settings.identifiers} identifiers "
                    f"({wl.cluster.seed_hint.replace('{n}', str(wl.settings.identifiers))}) or lower --idr-identifiers")
        if not answer.ok:
            return f"{holder.name} answered HTTP {answer.status} for {handle}"
    return None


def wait_for_cluster(wl: Workload, *, poll_s: float = 1.0) -> str | None:
    """``preflight`` until it passes or ``--idr-wait`` seconds have passed; the last problem, or None."""
    deadline = time.monotonic() + wl.settings.wait_s
    said = 0.0
    while True:
        problem = preflight(wl)
        left = deadline - time.monotonic()
        if problem is None or left <= 0:
            return problem
        if time.monotonic() - said >= 30:
            said = time.monotonic()
            log.info("idresolve: waiting up to %.0f s more for the cluster: %s", left, problem)
        time.sleep(min(poll_s, left))  # Locust's gevent makes this a cooperative sleep
