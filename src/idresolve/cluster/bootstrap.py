"""Start-up allocation through the nodes' own APIs (never by writing records behind them).

1. The primary top-level node allocates ``88.<n>`` to each *connected* secondary node: it creates
   ``0.NA/88.<n>`` (HS_ADMIN for the registry admin and for the secondary's admin, the secondary admin's
   HS_SECKEY, and HS_SITE naming the secondary node). Replication carries it to the other top-level nodes.
2. Each secondary node allocates ``88.<n>.<m>`` to its enterprises: ``0.NA/88.<n>.<m>`` with the
   enterprise admin's HS_ADMIN and HS_SECKEY, and, for an enterprise with its own node, an HS_SITE
   naming it (so the secondary answers with a referral). Hosted enterprises get no HS_SITE: their
   identifiers live at the secondary.
3. The demo identifier is registered at the node that holds its prefix.
Every step is idempotent: a record already holding the wanted values is left alone, so a restart
changes nothing and keeps every record.

Authority follows DOMAIN.md: creating ``0.NA/P.x`` needs ADD_DERIVED_PREFIX in ``0.NA/P``. The parent's
admin keeps every right on the prefix records it allocates except ADD_HANDLE: a secondary node's admin
cannot create identifiers under an enterprise's prefix; only that enterprise's admin can.
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

PARENT_PERMS = ALL_PERMS & ~AdminPerm.ADD_HANDLE
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
                      *, owner_perms: int) -> tuple[HandleValue, ...]:
    p_id, c_id = identity_of(parent_prefix), identity_of(child_prefix)
    values = [
        admin_value(100, p_id.split(":", 1)[1], 300, PARENT_PERMS),
        admin_value(101, c_id.split(":", 1)[1], 300, owner_perms),
        seckey_value(300, secret_for(master, child_prefix)),
    ]
    if site_of is not None:
        values.insert(0, site_value(1, site_of.site(_address(site_of))))
    return tuple(values)


def _address(n: NodePlan) -> str:
    return n.dial_host if n.dial_host.replace(".", "").isdigit() else "127.0.0.1"


def _same(existing: tuple[HandleValue, ...], wanted: tuple[HandleValue, ...]) -> bool:
    return {(v.index, v.type, v.data, v.perms) for v in existing} == {(v.index, v.type, v.data, v.perms) for v in wanted}


def _ensure(client: BlockingClient, handle: str, values: tuple[HandleValue, ...], report: BootstrapReport) -> None:
    current = client.resolve(handle)
    if current.code == ResponseCode.SUCCESS and _same(current.values, values):
        report.unchanged.append(handle)
        return
    resp = client.create(handle, values, overwrite=True)
    if resp.code != ResponseCode.SUCCESS:
        raise BootstrapError(f"allocating {handle} at {client.host}:{client.port} failed: code {resp.code} {resp.message}")
    report.created.append(handle)


def bootstrap(plan: ClusterPlan, master: str, *, progress: Callable[[str], None] | None = None,
              timeout_s: float = 10.0) -> BootstrapReport:
    report = BootstrapReport()
    say = progress or (lambda _msg: None)
    topo = plan.topology
    top = plan.primary_top()
    country = top.spec.prefix or "88"
    secondaries = {s.name: s for s in topo.nodes_by_role("secondary")}
    with BlockingClient(top.dial_host, top.tcp_port, timeout_s=timeout_s,
                        auth=(identity_of(country), secret_for(master, country).encode())) as c:
        for sec in secondaries.values():
            if not sec.connected or sec.prefix is None:
                continue
            values = allocation_values(country, sec.prefix, master, plan.node(sec.name), owner_perms=OWNER_AT_PARENT_PERMS)
            _ensure(c, prefix_handle(sec.prefix), values, report)
    say(f"top-level registry: {len(report.created)} allocated, {len(report.unchanged)} already in place")
    for sec in secondaries.values():
        enterprises = topo.enterprises_of(sec.name)
        if not enterprises or sec.prefix is None:
            continue
        node = plan.node(sec.name)
        with BlockingClient(node.dial_host, node.tcp_port, timeout_s=timeout_s,
                            auth=(identity_of(sec.prefix), secret_for(master, sec.prefix).encode())) as c:
            for ent in enterprises:
                assert ent.prefix is not None
                site = None if ent.hosted else plan.node(ent.name)
                values = allocation_values(sec.prefix, ent.prefix, master, site, owner_perms=ALL_PERMS)
                _ensure(c, prefix_handle(ent.prefix), values, report)
    say(f"enterprise prefixes: {len(topo.nodes_by_role('enterprise'))} in place")
    demo_prefix = DEMO_PREFIX if any(n.prefix == DEMO_PREFIX for n in topo.nodes) else next(
        (e.prefix for e in topo.nodes_by_role("enterprise") if e.prefix), None)
    if demo_prefix is not None:
        holder = plan.holder_of(demo_prefix)
        demo = f"{demo_prefix}/{DEMO_SUFFIX}"
        with BlockingClient(holder.dial_host, holder.tcp_port, timeout_s=timeout_s,
                            auth=(identity_of(demo_prefix), secret_for(master, demo_prefix).encode())) as c:
            values = (string_value(1, "URL", f"https://example.com/products/{DEMO_SUFFIX}"),
                      string_value(2, "DESC", "Demo product: a tyre batch registered at start-up by idresolve"),
                      string_value(2000, "productName", "Radial tyre 205/55R16"),
                      string_value(2001, "batchNumber", "2106023"))
            resp = c.create(demo, values, overwrite=False)
            if resp.code not in (ResponseCode.SUCCESS, ResponseCode.HANDLE_ALREADY_EXISTS):
                raise BootstrapError(f"registering the demo identifier failed: code {resp.code} {resp.message}")
        report.demo = demo
    return report
