"""Binary-protocol requests to an authoritative node: one table from opcode to handler, and referrals.

``answer(node, request, now)`` turns a decoded ``Request`` into a ``Response``; every ``HandleError`` is
turned into an error response here, the binary surface's one error-mapping place. It never raises for
anything a peer can send.

Resolution is ``AuthoritativeNode.query``: a handle the node does not serve gets a PREFIX_REFERRAL (303)
to the holder of its prefix when the node knows it (how top-level nodes point at secondary nodes and
secondary nodes at enterprise nodes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from ..core.answers import answer_response
from ..core.codes import OpCode, ResponseCode
from ..core.errors import HandleError
from ..core.messages import FLAG_OVERWRITE, FLAG_TRACE, Request, Response, error_response
from .auth import Identity, parse_identity
from .authoritative import AuthoritativeNode, BatchRefused

log = logging.getLogger("idresolve.dispatch")

Handler = Callable[[AuthoritativeNode, Request, Identity | None, float], Response]


def _caller(node: AuthoritativeNode, req: Request) -> Identity | None:
    if req.auth is None:
        return None
    identity_text, secret = req.auth
    return node.authenticate(parse_identity(identity_text), secret)


def _resolve(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    a = node.query(req.handle, indexes=req.indexes, types=req.types, caller=caller)
    return answer_response(req.request_id, req.handle, a)


def _site_info(node: AuthoritativeNode, req: Request, caller: Identity | None, now: float) -> Response:
    """GET_SITEINFO: the HS_SITE values of this node's own prefix records."""
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, values=node.own_sites(),
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
    # an ItemResult is a (handle, code, message) tuple already, and its IntEnum code packs as the int
    return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, total=len(result.results),
                    results=result.results)


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


def answer(node: AuthoritativeNode, req: Request, now: float, extra: dict[int, Handler] | None = None, *,
           defer: tuple[type[HandleError], ...] = ()) -> Response:
    """``defer``: errors the caller handles itself (raised, not answered), e.g. ``TemplateNeeded`` by a
    service that fetches templates and asks again."""
    handler = HANDLERS.get(req.opcode) or (extra or {}).get(req.opcode)
    if handler is None:
        return error_response(req.request_id, req.opcode, ResponseCode.OPERATION_NOT_SUPPORTED,
                              f"unknown opcode {req.opcode}", req.handle)
    try:
        caller = None if req.auth is None else _caller(node, req)  # most requests are anonymous
        resp = handler(node, req, caller, now)
    except defer:
        raise
    except HandleError as exc:
        resp = error_response(req.request_id, req.opcode, exc.code,
                              exc.message if exc.show_message else "", req.handle)
    except Exception:  # a bug must cost one answer, not the connection or the node
        log.exception("internal error answering opcode %s for %r", req.opcode, req.handle)
        resp = error_response(req.request_id, req.opcode, ResponseCode.ERROR, "internal error", req.handle)
    if req.flags & FLAG_TRACE:
        resp = replace(resp, node=node.name)
    return resp
