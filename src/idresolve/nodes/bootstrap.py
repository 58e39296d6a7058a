"""The records a node writes for itself at start-up: ``0.NA/<prefix>`` with its admin identity.

``ensure_prefix_record`` is the one bootstrap every host runs (``idresolve node`` and cluster workers):
it creates the record on first start and keeps its admin key, and its HS_SITE when the host gives one,
current on every later start, leaving every other value alone.
"""

from __future__ import annotations

from ..core.admin import ALL_PERMS
from ..core.handles import fold, prefix_handle
from ..core.records import Record
from ..core.site import SiteInfo
from ..core.values import HandleValue, admin_value, seckey_value, site_value
from .authoritative import AuthoritativeNode

ADMIN_INDEX = 300
HS_ADMIN_INDEX = 100
HS_SITE_INDEX = 1


def admin_identity(prefix: str) -> str:
    """The admin identity of a prefix, ``300:0.NA/<prefix>``."""
    return f"{ADMIN_INDEX}:{prefix_handle(prefix)}"


def prefix_record(prefix: str, secret: str, *, site: SiteInfo | None = None, now: float = 0,
                  extra_admins: tuple[tuple[str, int], ...] = ()) -> Record:
    """``0.NA/<prefix>``: a public HS_ADMIN granting ``300:0.NA/<prefix>`` every right, its HS_SECKEY
    (not public), and the HS_SITE naming where the prefix is served, when given."""
    handle = prefix_handle(prefix)
    values = [admin_value(HS_ADMIN_INDEX, handle, ADMIN_INDEX, ALL_PERMS)]
    for i, (admin_handle, admin_index) in enumerate(extra_admins, start=1):
        values.append(admin_value(HS_ADMIN_INDEX + i, admin_handle, admin_index, ALL_PERMS))
    values.append(seckey_value(ADMIN_INDEX, secret))
    if site is not None:
        values.append(site_value(HS_SITE_INDEX, site))
    stamp = int(now)
    return Record(handle, tuple(v.stamped(stamp) for v in sorted(values, key=lambda v: v.index)))


def ensure_prefix_record(node: AuthoritativeNode, prefix: str, secret: str, now: float, *,
                         site: SiteInfo | None = None) -> bool:
    """Write ``0.NA/<prefix>`` if it is missing; else make its HS_SECKEY hold ``secret`` and, when ``site``
    is given, its HS_SITE name ``site``. True when something was written."""
    existing = node.store.get(fold(prefix_handle(prefix)))
    if existing is None:
        node.bootstrap_record(prefix_record(prefix, secret, site=site, now=now))
        return True
    wanted = [seckey_value(ADMIN_INDEX, secret)] + ([site_value(HS_SITE_INDEX, site)] if site is not None else [])
    if all(_holds(existing.by_index(w.index), w) for w in wanted):
        return False
    replaced = {w.index for w in wanted}
    values = [v for v in existing.values if v.index not in replaced] + [w.stamped(now) for w in wanted]
    node.bootstrap_record(Record(existing.handle, tuple(sorted(values, key=lambda v: v.index))))
    return True


def _holds(value: HandleValue | None, wanted: HandleValue) -> bool:
    return value is not None and value.type == wanted.type and value.data == wanted.data
