"""The records a node writes for itself at start-up: ``0.NA/<prefix>`` with its admin identity."""

from __future__ import annotations

from ..core.admin import ALL_PERMS
from ..core.handles import prefix_handle
from ..core.records import Record
from ..core.site import SiteInfo
from ..core.values import admin_value, seckey_value, site_value

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
