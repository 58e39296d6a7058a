"""Seeding: register N identifiers spread evenly over every enterprise of a running cluster, through the
batch API (binary protocol) of the node that holds each prefix, with each enterprise admin's own
credentials. Suffixes are ``<tag><n>`` so reruns with another tag add more; a rerun with the same tag
skips identifiers that exist (the batch is retried without them).

Two ways in, one loop: ``idresolve seed`` reads the cluster from ``cluster.json`` and the admins' secrets
from ``credentials.json`` (``seed_cluster``); ``idresolve bootstrap --seed N`` (the containers' one-shot
step, which has neither file) takes them from the plan and the cluster secret (``seed_plan``). Both fill
the enterprises in topology order, enterprise i getting N // E plus one for the first N % E: the layout
``loadtests/keyspace.py`` draws from.

An enterprise whose secondary publishes a metadata template (``templates = [...]`` in the topology) gets
identifiers that fill it (``core.templates.generate_values``: every required field and most optional
ones, the same values for the same identifier in every run), so their records have the size of real
ones (about 15 template values, most answers over the 512 bytes of a UDP answer); the others get a URL
and a product name. ``plain`` gives every identifier only those two values (``idresolve seed --plain``):
filling a large cluster for resolution load is then about four times as fast, on less than half the disk.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from ..client.progress import Progress
from ..core.codes import ResponseCode
from ..core.templates import Template, TemplateRef, generate_values
from ..core.topology import Topology, TopologyError, load_topology
from ..core.values import HandleValue, string_value
from ..net.blocking import BlockingClient, ProtocolClientError
from .bootstrap import BootstrapError, enterprise_template, load_templates
from .credentials import read_credentials, secret_for
from .plan import ClusterPlan, identity_of

Item = tuple[str, tuple[HandleValue, ...]]  # an identifier and its values


@dataclass(frozen=True, slots=True)
class SeedTarget:
    prefix: str
    host: str  # the node that holds the prefix's identifiers
    port: int
    secret: str  # the prefix admin's
    template: tuple[TemplateRef, Template] | None = None  # the template its identifiers fill

    @property
    def identity(self) -> str:
        return identity_of(self.prefix)

    def values(self, handle: str, k: int, tag: str) -> tuple[HandleValue, ...]:
        url = string_value(1, "URL", f"https://example.com/{handle}")
        if self.template is None:
            return url, string_value(2000, "productName", f"product {k}")
        ref, template = self.template
        return (url, *generate_values(template, handle, seed=tag, ref=ref))


def _templates_by_prefix(topology: Topology) -> dict[str, tuple[TemplateRef, Template]]:
    """Enterprise prefix -> the template its identifiers fill, for the enterprises that have one."""
    templates = load_templates(topology)
    out = {}
    for e in topology.nodes_by_role("enterprise"):
        found = enterprise_template(topology, templates, e)
        if found is not None and e.prefix is not None:
            out[e.prefix] = found
    return out


def _endpoint(nodes: dict[str, dict[str, Any]], name: str) -> tuple[str, int]:
    host, _, port = str(nodes[name]["tcp"]).rpartition(":")
    return host, int(port)


def seed_cluster(cluster: dict[str, Any], data_dir: Path, count: int, *, batch_size: int = 1000, tag: str = "SEED",
                 show_progress: bool = True, in_flight: int = 1, plain: bool = False) -> dict[str, Any]:
    """Seed the cluster ``cluster.json`` describes, with the secrets of ``data_dir/credentials.json``;
    ``plain``: a URL and a product name for every identifier, templates or not."""
    creds = read_credentials(data_dir)
    nodes = {n["name"]: n for n in cluster["nodes"]}
    templates: dict[str, tuple[TemplateRef, Template]] = {}
    if not plain:
        try:
            templates = _templates_by_prefix(load_topology(cluster["config"]))
        except (TopologyError, BootstrapError, KeyError) as exc:  # the topology file moved since `up`
            print(f"warning: seeding without metadata templates: {exc}", file=sys.stderr)
    targets = [SeedTarget(e["prefix"], *_endpoint(nodes, e["holder"]), creds[identity_of(e["prefix"])],
                          templates.get(e["prefix"]))
               for e in cluster["enterprises"] if e.get("prefix")]
    out = seed_targets(targets, count, batch_size=batch_size, tag=tag, show_progress=show_progress,
                       in_flight=in_flight)
    out["templated"] = sum(1 for t in targets if t.template is not None)  # enterprises whose identifiers fill one
    return out


def seed_plan(plan: ClusterPlan, master: str, count: int, *, batch_size: int = 1000, tag: str = "SEED",
              show_progress: bool = False, client: type[BlockingClient] | None = None) -> dict[str, Any]:
    """Seed the cluster of ``plan`` (the nodes at their dial hosts), each admin's secret derived from ``master``;
    ``client`` reaches the nodes (``BlockingClient``, or the simulator's in-memory one)."""
    targets = []
    templates = _templates_by_prefix(plan.topology)
    for e in plan.enterprises():
        if e.prefix:
            holder = plan.holder_of(e.prefix)
            targets.append(SeedTarget(e.prefix, holder.dial_host, holder.tcp_port, secret_for(master, e.prefix),
                                      templates.get(e.prefix)))
    return seed_targets(targets, count, batch_size=batch_size, tag=tag, show_progress=show_progress, client=client)


def seed_targets(targets: Sequence[SeedTarget], count: int, *, batch_size: int = 1000, tag: str = "SEED",
                 show_progress: bool = True, client: type[BlockingClient] | None = None,
                 in_flight: int = 1) -> dict[str, Any]:
    """Register ``count`` identifiers over ``targets``. ``in_flight`` > 1 sends that many batches at once, each
    on a connection of its own (one per thread and node; a node with several workers spreads them), so the
    next batch is built while the node commits the last; 1 sends them one after another in this thread (the
    simulator's in-memory network wants that)."""
    if not targets:
        raise ValueError("the cluster has no enterprises to seed")
    share, extra = divmod(count, len(targets))
    per_target: list[list[tuple[SeedTarget, int, int]]] = []
    for i, ent in enumerate(targets):
        n = share + (1 if i < extra else 0)
        per_target.append([(ent, start, min(n, start + batch_size)) for start in range(0, n, batch_size)])
    # Round robin over the enterprises: the batches in flight go to different nodes (most nodes of a
    # cluster are one process each), not all to the node of the first enterprise.
    jobs = [job for batch in zip_longest(*per_target) for job in batch if job is not None]
    progress = Progress(count, show=show_progress)
    cls = client or BlockingClient
    opened: list[BlockingClient] = []
    local = threading.local()
    lock = threading.Lock()

    def connection(ent: SeedTarget) -> BlockingClient:
        conns: dict[tuple[str, int, str], BlockingClient] = local.__dict__.setdefault("conns", {})
        key = (ent.host, ent.port, ent.identity)
        c = conns.get(key)
        if c is None:
            c = conns[key] = cls(ent.host, ent.port, timeout_s=60.0, auth=(ent.identity, ent.secret.encode()))
            c.__enter__()
            with lock:
                opened.append(c)
        return c

    def send(job: tuple[SeedTarget, int, int], items: list[Item]) -> tuple[int, int, str]:
        ent, start, _ = job
        done, failed = _seed_batch(connection(ent), items)
        progress.add(done + failed)
        return done, failed, f"{ent.prefix}/{tag}{start:09d}" if done else ""

    def build(job: tuple[SeedTarget, int, int]) -> list[Item]:
        ent, start, stop = job
        return _seed_items(ent, range(start, stop), tag)

    t0 = time.monotonic()
    done = failed = 0
    example = ""
    try:
        if in_flight <= 1:
            for job in jobs:
                d, f, e = send(job, build(job))
                done, failed, example = done + d, failed + f, example or e
        else:
            # This thread builds every batch's values and the pool's threads send them: values are built in
            # one thread, because template checks call RE2, whose binding drops the GIL on each match, and
            # several threads building at once queue on the GIL (a match costs 4.7 us instead of 1).
            # At most two batches per connection wait, so memory stays bounded.
            pending: deque[Future[tuple[int, int, str]]] = deque()
            with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="seed") as pool:
                for job in jobs:
                    pending.append(pool.submit(send, job, build(job)))
                    while len(pending) >= 2 * in_flight or (pending and pending[0].done()):
                        d, f, e = pending.popleft().result()  # in job order: the first example is the first batch's
                        done, failed, example = done + d, failed + f, example or e
                while pending:
                    d, f, e = pending.popleft().result()
                    done, failed, example = done + d, failed + f, example or e
    finally:
        for c in opened:
            c.__exit__(None, None, None)
        progress.finish()
    seconds = time.monotonic() - t0
    return {"registered": done, "failed": failed, "enterprises": len(targets), "seconds": seconds,
            "perSecond": done / seconds if seconds > 0 else 0.0, "example": example}


def _seed_items(ent: SeedTarget, numbers: range, tag: str) -> list[Item]:
    """The identifiers ``numbers`` of ``ent`` with their values."""
    prefix = ent.prefix
    return [(f"{prefix}/{tag}{k:09d}", ent.values(f"{prefix}/{tag}{k:09d}", k, tag)) for k in numbers]


def _seed_batch(c: BlockingClient, items: list[Item]) -> tuple[int, int]:
    """One batch: (registered or already there, failed). Identifiers that exist (a rerun with the same tag)
    are left out and the rest sent again."""
    done = 0
    try:
        resp = c.batch_create(items)
    except ProtocolClientError:
        # The connection went away: most often the node closed it after its idle timeout (a connection
        # per node and thread waits while the other enterprises' batches go out), possibly after the
        # node committed the batch and before it answered. Once more on a new connection; what that
        # batch already registered comes back as "already exists" and is counted below.
        c.close()
        resp = c.batch_create(items)
    if resp.code != ResponseCode.SUCCESS and resp.results:
        fresh = [it for it, r in zip(items, resp.results, strict=False) if r[1] != ResponseCode.HANDLE_ALREADY_EXISTS]
        skipped = len(items) - len(fresh)
        resp = c.batch_create(fresh) if fresh else resp
        if not fresh or resp.code == ResponseCode.SUCCESS:
            done += skipped
            items = fresh
    if resp.code == ResponseCode.SUCCESS or not items:
        return done + len(items), 0
    return done, len(items)
