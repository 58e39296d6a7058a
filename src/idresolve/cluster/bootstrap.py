"""Start-up allocation through the nodes' own APIs (never by writing records behind them).

1. The primary top-level node allocates ``88.<n>`` to each *connected* secondary node: it creates
   ``0.NA/88.<n>`` (HS_ADMIN for the registry admin and for the secondary's admin, the secondary admin's
   HS_SECKEY, and HS_SITE naming the secondary node, then one HS_SITE per mirror at indexes 2, 3, ...,
   not primary: recursive nodes fail over between them). Replication carries it to the other top-level nodes.
2. Each secondary node allocates ``88.<n>.<m>`` to its enterprises: ``0.NA/88.<n>.<m>`` with the
   enterprise admin's HS_ADMIN and HS_SECKEY, and, for an enterprise with its own node, an HS_SITE
   naming it (so the secondary answers with a referral). Hosted enterprises get no HS_SITE: their
   identifiers live at the secondary.
3. The demo identifier is registered at the node that holds its prefix.
Every step is idempotent: a record already holding the wanted values is left alone, so a restart
changes nothing and keeps every record.

Authority follows docs/domain.md: creating ``0.NA/P.x`` needs ADD_DERIVED_PREFIX in ``0.NA/P``. On the prefix
records it allocates, the parent's admin keeps only the right to revoke the allocation (DELETE_HANDLE):
it can neither read nor change the child admin's key, nor create identifiers under the child's prefix.
The child's own admin maintains the record (its HS_SITE, its key), so re-running the bootstrap reads and
updates each record as its owner and creates it as the parent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.admin import ALL_PERMS, AdminPerm
from ..core.codes import ResponseCode
from ..core.handles import prefix_handle
from ..core.values import HandleValue, admin_value, seckey_value, site_value, string_value
from ..net.blocking import BlockingClient
from .credentials import secret_for
from .plan import ClusterPlan, NodePlan, identity_of

PARENT_PERMS = AdminPerm.DELETE_HANDLE
OWNER_AT_PARENT_PERMS = (AdminPerm.ADD_VALUE | AdminPerm.MODIFY_VALUE | AdminPerm.REMOVE_VALUE | AdminPerm.READ_VALUE
                         | AdminPerm.ADD_HANDLE | AdminPerm.DELETE_HANDLE | AdminPerm.LIST_HANDLES)
DEMO_PREFIX, DEMO_SUFFIX = "88.118.8", "JXDY2106023"


class BootstrapError(RuntimeError):
    pass


@dataclass
class BootstrapReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    demo: str | None = None


def allocation_values(parent_prefix: str, child_prefix: str, master: str, site_of: NodePlan | None,
                      *, owner_perms: int, mirrors: tuple[NodePlan, ...] = ()) -> tuple[HandleValue, ...]:
    p_id, c_id = identity_of(parent_prefix), identity_of(child_prefix)
    values = [
        admin_value(100, p_id.split(":", 1)[1], 300, PARENT_PERMS),
        admin_value(101, c_id.split(":", 1)[1], 300, owner_perms),
        seckey_value(300, secret_for(master, child_prefix)),
    ]
    if site_of is not None:
        values[:0] = [site_value(i, n.site(_address(n))) for i, n in enumerate((site_of, *mirrors), start=1)]
    return tuple(values)


def _address(n: NodePlan) -> str:
    return n.dial_host if n.dial_host.replace(".", "").isdigit() else "127.0.0.1"


def _same(existing: tuple[HandleValue, ...], wanted: tuple[HandleValue, ...]) -> bool:
    return {(v.index, v.type, v.data, v.perms) for v in existing} == {(v.index, v.type, v.data, v.perms) for v in wanted}


def _ensure(parent: BlockingClient, owner: BlockingClient, handle: str, values: tuple[HandleValue, ...],
            report: BootstrapReport) -> None:
    """Make ``handle`` hold ``values``: read and update it as its owner, create it as the parent; a record
    the owner may not update (left by an older layout) is revoked by the parent and allocated again."""
    current = owner.resolve(handle)
    if current.code == ResponseCode.SUCCESS and _same(current.values, values):
        report.unchanged.append(handle)
        return
    resp = None
    if current.code == ResponseCode.SUCCESS:
        resp = owner.create(handle, values, overwrite=True)
        if resp.code != ResponseCode.SUCCESS:
            gone = parent.delete(handle)
            if gone.code not in (ResponseCode.SUCCESS, ResponseCode.HANDLE_NOT_FOUND):
                raise BootstrapError(f"re-allocating {handle} at {parent.host}:{parent.port} failed: "
                                     f"code {gone.code} {gone.message}")
            resp = None
    if resp is None:
        resp = parent.create(handle, values, overwrite=False)
    if resp.code != ResponseCode.SUCCESS:
        raise BootstrapError(f"allocating {handle} at {parent.host}:{parent.port} failed: code {resp.code} {resp.message}")
    report.created.append(handle)


def _client(n: NodePlan, prefix: str, master: str, timeout_s: float) -> BlockingClient:
    return BlockingClient(n.dial_host, n.tcp_port, timeout_s=timeout_s,
                          auth=(identity_of(prefix), secret_for(master, prefix).encode()))


def bootstrap(plan: ClusterPlan, master: str, *, progress: Callable[[str], None] | None = None,
              timeout_s: float = 10.0) -> BootstrapReport:
    report = BootstrapReport()
    say = progress or (lambda _msg: None)
    topo = plan.topology
    top = plan.primary_top()
    country = top.spec.prefix or "88"
    secondaries = {s.name: s for s in topo.nodes_by_role("secondary")}
    with _client(top, country, master, timeout_s) as c:
        for sec in secondaries.values():
            if not sec.connected or sec.prefix is None:
                continue
            values = allocation_values(country, sec.prefix, master, plan.node(sec.name), owner_perms=OWNER_AT_PARENT_PERMS,
                                       mirrors=plan.mirrors_of(sec.name))
            with _client(top, sec.prefix, master, timeout_s) as owner:
                _ensure(c, owner, prefix_handle(sec.prefix), values, report)
    say(f"top-level registry: {len(report.created)} allocated, {len(report.unchanged)} already in place")
    for sec in secondaries.values():
        enterprises = topo.enterprises_of(sec.name)
        if not enterprises or sec.prefix is None:
            continue
        node = plan.node(sec.name)
        with _client(node, sec.prefix, master, timeout_s) as c:
            for ent in enterprises:
                if ent.prefix is None:
                    continue
                site = None if ent.hosted else plan.node(ent.name)
                values = allocation_values(sec.prefix, ent.prefix, master, site, owner_perms=ALL_PERMS)
                with _client(node, ent.prefix, master, timeout_s) as owner:
                    _ensure(c, owner, prefix_handle(ent.prefix), values, report)
    say(f"enterprise prefixes: {len(topo.nodes_by_role('enterprise'))} in place")
    demo_prefix = DEMO_PREFIX if any(n.prefix == DEMO_PREFIX for n in topo.nodes) else next(
        (e.prefix for e in topo.nodes_by_role("enterprise") if e.prefix), None)
    if demo_prefix is not None:
        holder = plan.holder_of(demo_prefix)
        demo = f"{demo_prefix}/{DEMO_SUFFIX}"
        with _client(holder, demo_prefix, master, timeout_s) as c:
            values = (string_value(1, "URL", f"https://example.com/products/{DEMO_SUFFIX}"),
                      string_value(2, "DESC", "Demo product: a tyre batch registered at start-up by idresolve"),
                      string_value(2000, "productName", "Radial tyre 205/55R16"),
                      string_value(2001, "batchNumber", "2106023"))
            resp = c.create(demo, values, overwrite=False)
            if resp.code not in (ResponseCode.SUCCESS, ResponseCode.HANDLE_ALREADY_EXISTS):
                raise BootstrapError(f"registering the demo identifier failed: code {resp.code} {resp.message}")
        report.demo = demo
    return report
