"""Replication of the national prefix registry among the top-level nodes (the 5+2 "same registry").

Consistency model: multi-primary, asynchronous. A write taken by any top-level node is acknowledged once
it is durable there, then pushed to every peer. Each push carries the record (or a deletion) and a
version (milliseconds since the epoch at the write, at the taking node); a peer applies it when it is
newer than what it holds (last writer wins per record; equal versions keep the holder's). Peers converge
within one link delay plus processing once the push arrives (``idresolve bench`` measures the lag); a
peer that is down is retried with the latest pending version of each record until it answers, so writes
are not lost while the taking node stays up. Versions and deletions (tombstones) are kept durably in
each node's store, and a top-level node that starts offers every registry record and tombstone it holds
to every peer, so a change or deletion it acknowledged just before a crash still spreads once it is back,
and a peer's older copy never undoes it. (A crash between a write's commit and its version's commit, a
few microseconds, leaves that write with the version of its whole second.)

Mirrors of a secondary node: single primary, asynchronous. The secondary takes every write and pushes
every change of its records (all but its own prefix records) to each mirror with REGISTRY_SYNC, as the
top-level nodes do between them; a mirror applies what its primary sends, authenticated as the prefix's
admin, and refuses every other write with SERVER_BACKUP (code 7). Pushes of one record to one mirror go
one at a time, newest version last, so the mirror needs no version order of its own. The primary keeps
tombstones of deletions durably and, when it starts, offers every record and tombstone it holds, so a
mirror that was down or missed a push before a crash catches up; a mirror that was down is retried with
the newest version of each record until it answers.

This module is the pure part: the REGISTRY_SYNC handlers that peers and mirrors run, and the read-only
mirror node. The sender lives in ``net.replicator``.
"""

from __future__ import annotations

import msgpack

from ..core.admin import AdminPerm
from ..core.codes import OpCode, ResponseCode
from ..core.errors import AuthenticationNeeded, HandleError, NotAuthorized
from ..core.handles import fold, parse_handle, prefix_handle
from ..core.messages import Request, Response
from ..core.records import Record
from .auth import Identity, permitted
from .authoritative import AuthoritativeNode, BatchResult

#: The flag of a REGISTRY_SYNC that deletes its record.
FLAG_SYNC_DELETE = 16


def record_version(record: Record | None) -> int:
    """The version of a stored record: its newest value timestamp, in ms."""
    if record is None or not record.values:
        return 0
    return max(v.timestamp for v in record.values) * 1000


VERSION_META = "ver:"


class SyncState:
    """Registry versions: the version (ms) of every prefix record's last change, and tombstones for
    deletions, kept durably in the node's store (``meta`` entries ``ver:<key>`` -> ``[version, deleted]``),
    so a restarted node still knows which copy is newer and that a record was deleted."""

    def __init__(self) -> None:
        self.applying = False  # set while a peer's write is applied, so it is not pushed back out

    @staticmethod
    def stored(node: AuthoritativeNode, key: str) -> tuple[int, bool] | None:
        raw = node.store.get_meta(VERSION_META + key)
        if raw is None:
            return None
        try:
            version, deleted = msgpack.unpackb(raw)
            return int(version), bool(deleted)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None

    def version_of(self, node: AuthoritativeNode, key: str) -> int:
        known = self.stored(node, key)
        return known[0] if known is not None else record_version(node.store.get(key))

    @staticmethod
    def save(node: AuthoritativeNode, key: str, version: int, deleted: bool) -> None:
        node.store.put_meta(VERSION_META + key, msgpack.packb([version, deleted]))

    @staticmethod
    def all_versions(node: AuthoritativeNode) -> list[tuple[str, int, bool]]:
        out = []
        for meta_key, raw in node.store.list_meta(VERSION_META):
            try:
                version, deleted = msgpack.unpackb(raw)
            except (ValueError, TypeError, msgpack.UnpackException):
                continue
            out.append((meta_key[len(VERSION_META):], int(version), bool(deleted)))
        return out


def _require_admin(node: AuthoritativeNode, req: Request, caller: Identity | None, prefix: str, perms: AdminPerm,
                   needs: str, refused: str) -> None:
    """A sync is taken only from an admin holding ``perms`` in this node's ``0.NA/<prefix>``."""
    if caller is None:
        raise AuthenticationNeeded(needs, handle=req.handle)
    if not permitted(node.store, node.store.get(fold(prefix_handle(prefix))), caller, perms):
        raise NotAuthorized(refused, handle=req.handle)


def make_sync_handler(state: SyncState, country_prefix: str):  # type: ignore[no-untyped-def]
    def handle_sync(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
        _require_admin(node, req, caller, country_prefix, AdminPerm.ADD_DERIVED_PREFIX | AdminPerm.DELETE_DERIVED_PREFIX,
                       "registry sync needs the registry admin's identity", "not a registry admin")
        h = parse_handle(req.handle)
        if not h.is_prefix_record or not node.responsible(h):
            raise NotAuthorized("only prefix records replicate", handle=req.handle)
        if fold(h.suffix) in node.configured:
            raise NotAuthorized("a node's own prefix record does not replicate", handle=req.handle)
        if req.version <= state.version_of(node, h.key):
            return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, message="stale")
        state.applying = True
        try:
            deleted = bool(req.flags & FLAG_SYNC_DELETE)
            if deleted:
                node.bootstrap_delete(h.key)
            else:
                node.bootstrap_record(Record(req.handle, req.values))
            state.save(node, h.key, req.version, deleted)
        finally:
            state.applying = False
        return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, message="applied")

    return {OpCode.REGISTRY_SYNC: handle_sync}


class ServerBackup(HandleError):
    """A write sent to a mirror: it only answers queries; its primary takes writes (code 7)."""

    code = ResponseCode.SERVER_BACKUP


class MirrorNode(AuthoritativeNode):
    """A mirror of a secondary node: the same prefixes and, through replication, the same records; every
    write from a client is refused (``bootstrap_record``/``bootstrap_delete`` apply the primary's pushes)."""

    primary: str = ""  # the secondary node's name, for the refusal's message

    def _refuse(self, text: str) -> ServerBackup:
        return ServerBackup(f"{self.name} is a mirror of {self.primary or 'its secondary node'}: it answers "
                            "queries only, send writes to the primary", handle=text)

    def put_record(self, text: str, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise self._refuse(text)

    def put_values(self, text: str, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise self._refuse(text)

    def delete_values(self, text: str, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise self._refuse(text)

    def delete_record(self, text: str, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise self._refuse(text)

    def batch_create(self, items: object, *args: object, **kwargs: object) -> BatchResult:  # type: ignore[override]
        raise self._refuse("")


def make_mirror_handler(prefix: str):  # type: ignore[no-untyped-def]
    """The REGISTRY_SYNC handler of a mirror of the secondary with ``prefix``: its primary's pushes, from the
    prefix's admin (who holds ADD_HANDLE in the mirror's own copy of ``0.NA/<prefix>``)."""

    def handle_sync(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
        _require_admin(node, req, caller, prefix, AdminPerm.ADD_HANDLE | AdminPerm.DELETE_HANDLE,
                       "mirror sync needs the prefix admin's identity", "not the admin of the mirrored prefix")
        h = parse_handle(req.handle)
        if not node.covers(h.suffix if h.is_prefix_record else h.prefix):
            raise NotAuthorized("not a record of the mirrored prefix", handle=req.handle)
        if h.is_prefix_record and fold(h.suffix) in node.configured:
            raise NotAuthorized("a node's own prefix record does not replicate", handle=req.handle)
        if req.flags & FLAG_SYNC_DELETE:
            if node.store.get(h.key) is not None:
                node.bootstrap_delete(h.key)
        else:
            node.bootstrap_record(Record(req.handle, req.values))
        return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, message="applied")

    return {OpCode.REGISTRY_SYNC: handle_sync}
