"""Identities, authentication against HS_SECKEY, and authority from HS_ADMIN (docs/domain.md §4).

- An identity is ``index:handle`` (``300:0.NA/88.100``). Its secret is the HS_SECKEY value at that index
  of that handle, which must be held by this node's store. Comparison is constant-time.
- Proofs (``core.proofs.ChallengeProof``): a challenge answered with the secret (HS_SECKEY, any signed
  response form the native protocol knows) or signed with a private key (HS_PUBKEY: the identity's value
  holds the public key, RSA or DSA). Checked here against the stored value, never by a surface. A proof
  that verified is remembered with the stored value it verified against (bounded), so a client session
  that presents it on every request costs one PBKDF2 or signature check, not one per request; a changed
  key makes it fail again.
- Authority for an operation comes from HS_ADMIN values: creating ``P/x`` needs ADD_HANDLE in
  ``0.NA/P``; creating a prefix record ``0.NA/P.x`` needs ADD_DERIVED_PREFIX in ``0.NA/P``; changing or
  deleting a record needs the matching bit in the record's own HS_ADMIN. An HS_ADMIN may name an HS_VLIST
  (a group); groups nest up to ``MAX_VLIST_DEPTH``. An admin index of 0 matches any index of that handle.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

from ..core.admin import AdminPerm, AdminRef
from ..core.errors import AuthenticationFailed, InvalidValue, StoreCorrupt
from ..core.handles import fold
from ..core.native.challenge import check_pubkey_response, check_secret_response
from ..core.native.keys import decode_public_key
from ..core.proofs import HS_PUBKEY_AUTH, HS_SECKEY_AUTH, ChallengeProof, Credential
from ..core.records import Record
from ..core.values import HS_ADMIN, HS_PUBKEY, HS_SECKEY, HS_VLIST, HandleValue, decode_vlist
from ..store.base import Store

MAX_VLIST_DEPTH = 4
VERIFIED_PROOFS = 4096
_KEY_TYPES = {HS_SECKEY_AUTH: HS_SECKEY, HS_PUBKEY_AUTH: HS_PUBKEY}


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


def authenticate(store: Store, identity: Identity, credential: Credential) -> Identity:
    """Check a secret or a proof against the identity's stored key. Any failure is the same
    ``AuthenticationFailed``."""
    if isinstance(credential, ChallengeProof):
        return _check_proof(store, identity, credential)
    key_value = _key_values(store, identity, HS_SECKEY)
    expected = key_value[0].data if key_value else None
    # Compare even when there is nothing to compare against, so timing does not tell which case it was.
    ok = hmac.compare_digest(expected if expected is not None else b"\0" * 32, credential)
    if expected is None or not ok:
        raise AuthenticationFailed("authentication failed")
    return identity


def _key_values(store: Store, identity: Identity, vtype: str) -> list[HandleValue]:
    """The identity's values of type ``vtype``: the one at its index, or (index 0, which the native
    protocol allows) every one."""
    try:
        record = store.get(fold(identity.handle))
    except StoreCorrupt:  # a corrupt identity record must not open the door nor crash the node
        record = None
    # Any other store error (a closed store: the node is stopping) is not a wrong secret: it goes to the
    # caller's error mapping (code 3 for a closed store), never "authentication failed".
    if record is None:
        return []
    if identity.index == 0:
        return [v for v in record.values if v.type == vtype]
    value = record.by_index(identity.index)
    return [value] if value is not None and value.type == vtype else []


class _Verified:
    """Proofs that verified, with the stored data they verified against (bounded, oldest dropped)."""

    def __init__(self, size: int = VERIFIED_PROOFS) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[tuple[int, str], ChallengeProof], bytes] = OrderedDict()

    def holds(self, key: tuple[tuple[int, str], ChallengeProof], data: bytes) -> bool:
        known = self._seen.get(key)
        return known is not None and hmac.compare_digest(known, data)

    def add(self, key: tuple[tuple[int, str], ChallengeProof], data: bytes) -> None:
        self._seen[key] = data
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


_VERIFIED = _Verified()


def _proof_holds(value: HandleValue, proof: ChallengeProof) -> bool:
    if proof.auth_type == HS_SECKEY_AUTH:
        return check_secret_response(value.data, proof.nonce, proof.digest, proof.signed_response,
                                     legacy=proof.legacy)
    try:
        key = decode_public_key(value.data)
    except InvalidValue:
        return False
    return check_pubkey_response(key, proof.nonce, proof.digest, proof.signed_response)


def _check_proof(store: Store, identity: Identity, proof: ChallengeProof) -> Identity:
    vtype = _KEY_TYPES.get(proof.auth_type)
    values = _key_values(store, identity, vtype) if vtype is not None else []
    for value in values:
        memo = (identity.key if identity.index else (value.index, fold(identity.handle)), proof)
        if _VERIFIED.holds(memo, value.data):
            return Identity(value.index, identity.handle) if identity.index == 0 else identity
        if _proof_holds(value, proof):
            _VERIFIED.add(memo, value.data)
            return Identity(value.index, identity.handle) if identity.index == 0 else identity
    raise AuthenticationFailed("authentication failed")


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
