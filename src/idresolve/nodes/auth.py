"""Identities, authentication against HS_SECKEY, and authority from HS_ADMIN (docs/domain.md §4).

- An identity is ``index:handle`` (``300:0.NA/88.100``). Its secret is the HS_SECKEY value at that index
  of that handle, which must be held by this node's store. Comparison is constant-time.
- Authority for an operation comes from HS_ADMIN values: creating ``P/x`` needs ADD_HANDLE in
  ``0.NA/P``; creating a prefix record ``0.NA/P.x`` needs ADD_DERIVED_PREFIX in ``0.NA/P``; changing or
  deleting a record needs the matching bit in the record's own HS_ADMIN. An HS_ADMIN may name an HS_VLIST
  (a group); groups nest up to ``MAX_VLIST_DEPTH``. An admin index of 0 matches any index of that handle.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import unquote

from ..core.admin import AdminPerm, AdminRef
from ..core.errors import AuthenticationFailed, InvalidValue
from ..core.handles import fold
from ..core.records import Record
from ..core.values import HS_ADMIN, HS_SECKEY, HS_VLIST, decode_vlist
from ..store.base import Store

MAX_VLIST_DEPTH = 4


@dataclass(frozen=True, slots=True)
class Identity:
    index: int
    handle: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.index, fold(self.handle))

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"


def parse_identity(username: str) -> Identity:
    """``300%3A88.100%2FADMIN`` or ``300:88.100/ADMIN`` -> Identity. Raises ``AuthenticationFailed``."""
    try:
        text = unquote(username, errors="strict") if "%" in username else username
    except UnicodeDecodeError:
        raise AuthenticationFailed("malformed identity") from None
    index_text, sep, handle = text.partition(":")
    if (not sep or not index_text.isascii() or not index_text.isdigit() or not handle or "/" not in handle
            or len(index_text) > 10):
        raise AuthenticationFailed("malformed identity")
    index = int(index_text)
    if index <= 0 or index > 2**31 - 1:
        raise AuthenticationFailed("malformed identity")
    return Identity(index, handle)


def authenticate(store: Store, identity: Identity, secret: bytes) -> Identity:
    """Check ``secret`` against the identity's HS_SECKEY. Any failure is the same ``AuthenticationFailed``."""
    try:
        record = store.get(fold(identity.handle))
    except Exception:  # a corrupt identity record must not open the door nor crash the node
        record = None
    key_value = record.by_index(identity.index) if record is not None else None
    expected = key_value.data if key_value is not None and key_value.type == HS_SECKEY else None
    # Compare even when there is nothing to compare against, so timing does not tell which case it was.
    ok = hmac.compare_digest(expected if expected is not None else b"\0" * 32, secret)
    if expected is None or not ok:
        raise AuthenticationFailed("authentication failed")
    return identity


def admin_refs(record: Record | None) -> list[AdminRef]:
    if record is None:
        return []
    refs = []
    for v in record.values:
        if v.type == HS_ADMIN:
            try:
                refs.append(AdminRef.from_bytes(v.data))
            except InvalidValue:
                continue
    return refs


def _matches(store: Store, ref: AdminRef, caller: Identity, depth: int) -> bool:
    if fold(ref.handle) == fold(caller.handle) and (ref.index in (0, caller.index)):
        return True
    if depth >= MAX_VLIST_DEPTH:
        return False
    group = store.get(fold(ref.handle))
    if group is None:
        return False
    for v in group.values:
        if v.type != HS_VLIST or (ref.index and v.index != ref.index):
            continue
        try:
            members = decode_vlist(v.data)
        except InvalidValue:
            continue
        for handle, index in members:
            if _matches(store, AdminRef(handle, index, ref.perms), caller, depth + 1):
                return True
    return False


def permitted(store: Store, admin_record: Record | None, caller: Identity | None, perm: AdminPerm) -> bool:
    """True when ``caller`` holds ``perm`` through an HS_ADMIN value of ``admin_record``."""
    if caller is None:
        return False
    return any((ref.perms & perm) == perm and _matches(store, ref, caller, 0) for ref in admin_refs(admin_record))
