"""Binary-protocol requests to an authoritative node: one table from opcode to handler, and referrals.

``answer(node, request, now)`` turns a decoded ``Request`` into a ``Response``; every ``HandleError`` is
turned into an error response here, the binary surface's one error-mapping place. It never raises for
anything a peer can send.

Resolution of a handle the node does not serve: if the node holds a prefix record ``0.NA/<p>`` with an
HS_SITE for the longest derived prefix ``p`` of the handle's prefix, it answers PREFIX_REFERRAL (303)
carrying that record's HS_SITE values; this is how top-level nodes point at secondary nodes and how
secondary nodes point at enterprise nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..core.codes import OpCode, ResponseCode
from ..core.errors import HandleError, HandleNotFound, NotResponsible
from ..core.handles import derived_prefixes, fold, prefix_handle
from ..core.values import HS_SITE
from ..core.wire import FLAG_OVERWRITE, FLAG_TRACE, Request, Response, error_response
from .auth import Identity, parse_identity
from .authoritative import AuthoritativeNode, BatchRefused

log = logging.getLogger("idresolve.dispatch")

Handler = Callable[[AuthoritativeNode, Request, Identity | None, float], Response]


def _caller(node: AuthoritativeNode, req: Request) -> Identity | None:
    if req.auth is None:
        return None
    identity_text, secret = req.auth
    return node.authenticate(parse_identity(identity_text), secret)


def referral(node: AuthoritativeNode, req: Request) -> Response | None:
    """A PREFIX_REFERRAL for ``req.handle`` if this node knows where its prefix lives."""
    text = req.handle
    prefix = text.split("/", 1)[0] if "/" in text else text
    if fold(prefix) == "0.na" and "/" in text:  # resolving a prefix record: refer for the prefix itself
        prefix = text.split("/", 1)[1]
    for p in reversed(derived_prefixes(prefix)):
        if node.serves_prefix(p):
            return None  # the nearest holder is this node itself
        record = node.store.get(fold(prefix_handle(p)))
        if record is None:
            continue
        sites = tuple(v for v in record.values if v.type == HS_SITE)
        if sites:
            return Response(req.request_id, req.opcode, ResponseCode.PREFIX_REFERRAL, record.handle, values=sites)
    return None


def _resolve(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    try:
        result = node.resolve(req.handle, indexes=req.indexes, types=req.types, caller=caller)
    except HandleNotFound:
        # A prefix record we cover but do not hold (``0.NA/88.118.8`` at a top-level node) lives with
        # the holder of its parent prefix: refer there.
        if req.handle[:5].lower() == "0.na/":
            ref = referral(node, req)
            if ref is not None:
                return ref
        raise
    except NotResponsible:
        # Not ours: refer to whoever holds the prefix, if we know. (A handle we serve but do not hold is
        # an authoritative "not found", never a referral.)
        ref = referral(node, req)
        if ref is not None:
            return ref
        prefix = req.handle.split("/", 1)[0]
        if "/" in req.handle and node.covers(prefix):
            raise HandleNotFound("Prefix not allocated", handle=req.handle) from None
        raise
    return Response(req.request_id, req.opcode, result.code, req.handle, values=result.values)


def _site_info(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    """GET_SITEINFO: the HS_SITE values of this node's own prefix records."""
    sites = []
    for p in sorted(node.configured):
        record = node.store.get(fold(prefix_handle(p)))
        if record is not None:
            sites.extend(v for v in record.values if v.type == HS_SITE)
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, values=tuple(sites),
                    handles=tuple(node.prefixes))


def _create(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    created = node.put_record(req.handle, req.values, caller=caller, now=now,
                              overwrite=bool(req.flags & FLAG_OVERWRITE))
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle,
                    message="created" if created else "replaced")


def _delete(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    node.delete_record(req.handle, caller=caller)
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle)


def _add_values(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    node.put_values(req.handle, req.values, indexes=[v.index for v in req.values], caller=caller, now=now,
                    overwrite=bool(req.flags & FLAG_OVERWRITE))
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle)


def _modify_values(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    record = node.get_record(req.handle)
    missing = [v.index for v in req.values if record.by_index(v.index) is None]
    if missing:
        return error_response(req.request_id, req.opcode, ResponseCode.VALUES_NOT_FOUND,
                              f"no values at {missing}", req.handle)
    node.put_values(req.handle, req.values, indexes=[v.index for v in req.values], caller=caller, now=now)
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle)


def _remove_values(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    node.delete_values(req.handle, req.indexes, caller=caller, now=now)
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle)


def _list_handles(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    page, size = req.page if req.page is not None else (None, None)
    total, handles = node.list_handles(req.handle, caller=caller, page=page, page_size=size)
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, handles=tuple(handles), total=total)


def _list_prefixes(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    prefixes = node.list_prefixes(caller=caller)
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, handles=tuple(prefixes),
                    total=len(prefixes))


def _batch(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    try:
        result = node.batch_create(req.items, caller=caller, now=now, overwrite=bool(req.flags & FLAG_OVERWRITE))
    except BatchRefused as exc:
        return Response(req.request_id, req.opcode, exc.code, req.handle, message=exc.message,
                        results=tuple((r.handle, int(r.code), r.message) for r in exc.results))
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, total=len(result.results),
                    results=tuple((r.handle, int(r.code), r.message) for r in result.results))


HANDLERS: dict[int, Handler] = {
    OpCode.RESOLUTION: _resolve,
    OpCode.GET_SITEINFO: _site_info,
    OpCode.CREATE_HANDLE: _create,
    OpCode.DELETE_HANDLE: _delete,
    OpCode.ADD_VALUE: _add_values,
    OpCode.MODIFY_VALUE: _modify_values,
    OpCode.REMOVE_VALUE: _remove_values,
    OpCode.LIST_HANDLES: _list_handles,
    OpCode.LIST_PREFIXES: _list_prefixes,
    OpCode.BATCH_CREATE: _batch,
}


def answer(node: AuthoritativeNode, req: Request, now: float, extra: dict[int, Handler] | None = None) -> Response:
    handler = HANDLERS.get(req.opcode) or (extra or {}).get(req.opcode)
    if handler is None:
        return error_response(req.request_id, req.opcode, ResponseCode.OPERATION_NOT_SUPPORTED,
                              f"unknown opcode {req.opcode}", req.handle)
    try:
        caller = _caller(node, req)
        resp = handler(node, req, caller, now)
    except HandleError as exc:
        resp = error_response(req.request_id, req.opcode, exc.code,
                              exc.message if exc.show_message else "", req.handle)
    except Exception:  # a bug must cost one answer, not the connection or the node
        log.exception("internal error answering opcode %s for %r", req.opcode, req.handle)
        resp = error_response(req.request_id, req.opcode, ResponseCode.ERROR, "internal error", req.handle)
    if req.flags & FLAG_TRACE:
        from dataclasses import replace

        resp = replace(resp, node=node.name)
    return resp
