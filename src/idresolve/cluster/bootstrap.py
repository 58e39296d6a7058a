"""Start-up allocation through the nodes' own APIs (never by writing records behind them).

1. The primary top-level node allocates ``88.<n>`` to each *connected* secondary node: it creates
   ``0.NA/88.<n>`` (HS_ADMIN for the registry admin and for the secondary's admin, the secondary admin's
   HS_SECKEY, and HS_SITE naming the secondary node). Replication carries it to the other top-level nodes.
2. Each secondary node allocates ``88.<n>.<m>`` to its enterprises: ``0.NA/88.<n>.<m>`` with the
   enterprise admin's HS_ADMIN and HS_SECKEY, and, for an enterprise with its own node, an HS_SITE
   naming it (so the secondary answers with a referral). Hosted enterprises get no HS_SITE: their
   identifiers live at the secondary.
3. Each secondary node publishes the metadata templates the topology names for it (``templates = [...]``,
   definitions from ``<config dir>/templates/<name>.json``) as ``<prefix>/TPL-<name>``, through its own
   API as its admin: a record that does not exist is created; a file whose version is not published yet
   is added as the next version; a published version is never changed (a file edited without a new
   version number is reported, not written).
4. The demo identifier is registered at the node that holds its prefix: a tyre batch filling the
   template its secondary publishes, when it publishes one.
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
from pathlib import Path

from ..core.admin import ALL_PERMS, AdminPerm
from ..core.codes import ResponseCode
from ..core.errors import InvalidValue
from ..core.handles import prefix_handle
from ..core.site import SiteInfo
from ..core.templates import (
    Template,
    TemplateRef,
    generate_values,
    new_version_value,
    parse_definition_text,
    stored_versions,
    template_handle,
    version_value,
)
from ..core.topology import MEMORY_SOURCE, NodeSpec, Topology
from ..core.values import HS_SITE, HandleValue, admin_value, seckey_value, site_value, string_value
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
    templates: list[str] = field(default_factory=list)  # template versions published by this run (handle@v)
    warnings: list[str] = field(default_factory=list)


# -- templates ---------------------------------------------------------------------------------------------

def templates_dir(topology: Topology) -> Path:
    """Where the topology's template files are: ``templates/`` beside its file (``config/templates``)."""
    if topology.source == MEMORY_SOURCE:
        return Path("config") / "templates"
    return Path(topology.source).parent / "templates"


def load_templates(topology: Topology, directory: Path | None = None) -> dict[str, Template]:
    """Every template some secondary of ``topology`` publishes, by name, parsed from its file."""
    where = directory or templates_dir(topology)
    out: dict[str, Template] = {}
    for sec in topology.nodes_by_role("secondary"):
        for name in sec.templates:
            if name in out:
                continue
            path = where / f"{name}.json"
            try:
                template = parse_definition_text(path.read_bytes())
            except OSError as exc:
                raise BootstrapError(f"template {name!r} of {sec.name}: cannot read {path}: {exc.strerror}") from None
            except InvalidValue as exc:
                raise BootstrapError(f"template file {path}: {exc.message}") from None
            if template.name != name:
                raise BootstrapError(f"template file {path} defines {template.name!r}, not {name!r}")
            out[name] = template
    return out


def enterprise_template(topology: Topology, templates: dict[str, Template],
                        enterprise: NodeSpec) -> tuple[TemplateRef, Template] | None:
    """The template an enterprise's identifiers fill: the first its secondary publishes (None: none)."""
    sec = topology.secondary_of(enterprise)
    if not sec.templates or sec.prefix is None or sec.templates[0] not in templates:
        return None
    t = templates[sec.templates[0]]
    return TemplateRef(template_handle(sec.prefix, t.name), t.version), t


def _publish(c: BlockingClient, handle: str, template: Template, source: Path, report: BootstrapReport) -> None:
    """Make ``handle`` hold ``template`` as its version ``template.version`` (see the module docstring)."""
    current = c.resolve(handle)
    label = f"{handle}@{template.version}"
    if current.code == ResponseCode.HANDLE_NOT_FOUND:
        resp = c.create(handle, (version_value(template),), overwrite=False)
    elif current.code == ResponseCode.SUCCESS:
        published = stored_versions(current.values).get(template.version)
        if published is not None:
            if published.data != template.to_bytes():
                report.warnings.append(f"{source} differs from the published {label}: published versions never "
                                       f"change; give the file version {template.version + 1} to publish it")
            return
        try:
            value = new_version_value(current.values, template)
        except InvalidValue as exc:
            report.warnings.append(f"{source} not published at {handle}: {exc.message}")
            return
        resp = c.add_values(handle, (value,))
    else:
        raise BootstrapError(f"reading template {handle} failed: code {current.code} {current.message}")
    if resp.code != ResponseCode.SUCCESS:
        raise BootstrapError(f"publishing {label} failed: code {resp.code} {resp.message}")
    report.templates.append(label)


def demo_values(handle: str, found: tuple[TemplateRef, Template] | None) -> tuple[HandleValue, ...]:
    """The demo tyre batch: a URL and a description, and the fields of its template when there is one
    (generated like seeded ones, with the documented product name and batch number)."""
    base = (string_value(1, "URL", f"https://example.com/products/{DEMO_SUFFIX}"),
            string_value(2, "DESC", "Demo product: a tyre batch registered at start-up by idresolve"))
    fixed = (string_value(2000, "productName", "Radial tyre 205/55R16"), string_value(2001, "batchNumber", "2106023"))
    if found is None:
        return base + fixed
    ref, template = found
    filled = {v.index: v for v in generate_values(template, handle, seed="demo", ref=ref)}
    for v in fixed:
        f = template.by_index.get(v.index)
        if f is not None and f.name == v.type:
            filled[v.index] = v
    return base + tuple(filled[i] for i in sorted(filled))


def allocation_values(parent_prefix: str, child_prefix: str, master: str, site_of: NodePlan | None,
                      *, owner_perms: int, site: SiteInfo | None = None) -> tuple[HandleValue, ...]:
    p_id, c_id = identity_of(parent_prefix), identity_of(child_prefix)
    values = [
        admin_value(100, p_id.split(":", 1)[1], 300, PARENT_PERMS),
        admin_value(101, c_id.split(":", 1)[1], 300, owner_perms),
        seckey_value(300, secret_for(master, child_prefix)),
    ]
    if site_of is not None:
        values.insert(0, site_value(1, site or site_of.site(site_of.site_address)))
    return tuple(values)


def published_site(n: NodePlan, master: str, timeout_s: float) -> SiteInfo:
    """The HS_SITE node ``n`` publishes for itself (its own prefix record's, with its key) as it answers
    get-site-info; the plan's site when it publishes none."""
    assert n.spec.prefix is not None
    with _client(n, n.spec.prefix, master, timeout_s) as c:
        resp = c.site_info()
    for v in resp.values:
        if v.type == HS_SITE:
            try:
                return SiteInfo.from_bytes(v.data)
            except InvalidValue:
                break
    return n.site(n.site_address)


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
              timeout_s: float = 10.0, templates: Path | None = None) -> BootstrapReport:
    """Allocate, publish templates, register the demo (module docstring). ``templates``: the directory of
    the template files (default: ``templates/`` beside the topology file)."""
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
            node = plan.node(sec.name)
            values = allocation_values(country, sec.prefix, master, node, owner_perms=OWNER_AT_PARENT_PERMS,
                                       site=published_site(node, master, timeout_s))
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
                site_of = None if ent.hosted else plan.node(ent.name)
                site = published_site(site_of, master, timeout_s) if site_of is not None else None
                values = allocation_values(sec.prefix, ent.prefix, master, site_of, owner_perms=ALL_PERMS, site=site)
                with _client(node, ent.prefix, master, timeout_s) as owner:
                    _ensure(c, owner, prefix_handle(ent.prefix), values, report)
    say(f"enterprise prefixes: {len(topo.nodes_by_role('enterprise'))} in place")
    published = load_templates(topo, templates)
    where = templates or templates_dir(topo)
    publishers = [s for s in secondaries.values() if s.templates and s.prefix is not None]
    for sec in publishers:
        assert sec.prefix is not None
        with _client(plan.node(sec.name), sec.prefix, master, timeout_s) as c:
            for name in sec.templates:
                _publish(c, template_handle(sec.prefix, name), published[name], where / f"{name}.json", report)
    if publishers:
        say(f"metadata templates: {len(report.templates)} published at {len(publishers)} secondary nodes"
            + "".join(f"\n  warning: {w}" for w in report.warnings))
    demo_ent = next((e for e in topo.nodes_by_role("enterprise") if e.prefix == DEMO_PREFIX), None) or next(
        (e for e in topo.nodes_by_role("enterprise") if e.prefix), None)
    if demo_ent is not None and demo_ent.prefix is not None:
        demo_prefix = demo_ent.prefix
        holder = plan.holder_of(demo_prefix)
        demo = f"{demo_prefix}/{DEMO_SUFFIX}"
        with _client(holder, demo_prefix, master, timeout_s) as c:
            values = demo_values(demo, enterprise_template(topo, published, demo_ent))
            resp = c.create(demo, values, overwrite=False)
            if resp.code not in (ResponseCode.SUCCESS, ResponseCode.HANDLE_ALREADY_EXISTS):
                raise BootstrapError(f"registering the demo identifier failed: code {resp.code} {resp.message}")
        report.demo = demo
    return report
