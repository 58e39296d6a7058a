"""The Handle REST API (docs/rest-contract.md) over an ``AuthoritativeNode``, as an aiohttp application.

Errors are raised as ``HandleError`` and turned into the contract's answers by the edge middleware
(``http.edge``); no handler here builds an error answer. Anonymous resolutions without filters,
the hot path, are answered from the node's cached Answer; the app keeps only the bytes of whole bodies,
valid while the node keeps the Answer they were made from.

Plain HTTP writes: allowed when ``plain_http_writes`` is set (the default on loopback); otherwise a write
that did not arrive over TLS is refused with 403, as the reference server does.

Templates (docs/templates.md): a write needing a template held elsewhere (``TemplateNeeded``) awaits the
app's ``templates`` fetcher and runs once more. Two additions to the Handle API list templates and the
identifiers that use one (``GET /api/templates``, ``GET /api/templates/uses``; docs/rest-contract.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ..core.admin import parse_index
from ..core.answers import EncodedAnswers
from ..core.codes import ResponseCode
from ..core.errors import (
    AuthenticationFailed,
    AuthenticationNeeded,
    HandleError,
    InvalidHandle,
    NotAuthorized,
    PeerError,
)
from ..core.handles import bare_prefix
from ..core.values import values_from_json
from ..nodes.auth import Identity
from ..nodes.authoritative import MAX_BATCH, AuthoritativeNode, BatchRefused
from ..nodes.templates import FetchTemplates, TemplateNeeded
from .auth import SessionTable, handle_caller, parse_basic, session_id_from_header
from .edge import (
    FAST,
    HANDLES_PATH,
    JSON,
    WORKER,
    EdgeHooks,
    FastPath,
    answer_body,
    answer_response,
    edge,
    handle_from_path,
    install_edge,
    json_response,
)

MAX_BODY_BYTES = 256 * 1024
BODY_TIMEOUT_S = 30.0  # one handle's PUT (a whole message is at most 256 KiB)
MAX_BATCH_BODY_BYTES = 64 * 1024 * 1024

NODE: web.AppKey[AuthoritativeNode] = web.AppKey("node", AuthoritativeNode)
SESSIONS: web.AppKey[SessionTable] = web.AppKey("sessions", SessionTable)
PLAIN_WRITES: web.AppKey[bool] = web.AppKey("plain_http_writes", bool)


BODIES: web.AppKey[EncodedAnswers] = web.AppKey("bodies", EncodedAnswers)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout_s", float)
TEMPLATES: web.AppKey[FetchTemplates] = web.AppKey("templates")
T = TypeVar("T")


# -- request helpers -------------------------------------------------------------------------------------

def caller_of(request: web.Request) -> Identity | None:
    """The authenticated identity, None when no credentials came; raises on bad credentials."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme = header[:6].lower()
    if scheme == "basic ":
        identity, secret = parse_basic(header)
        return request.app[NODE].authenticate(identity, secret)
    if scheme == "handle":
        return handle_caller(header, request.app[SESSIONS], request.app[NODE].authenticate)
    raise AuthenticationFailed("unsupported authorization scheme")


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    return raw.lower() not in ("false", "0", "no")


def _indexes(request: web.Request) -> list[int]:
    return [parse_index(i, what="index") for i in request.query.getall("index", [])]


async def _json_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> Any:
    if request.content_type != JSON:
        raise PeerError("Content-Type must be application/json")
    if request.content_length is not None and request.content_length > limit:
        raise PeerError(f"Request body larger than {limit} bytes")
    # StreamReader.read(n) returns what has arrived so far, not n bytes: read until EOF, bounded.
    chunks: list[bytes] = []
    size = 0
    try:
        timeout_s = request.app.get(BODY_TIMEOUT, BODY_TIMEOUT_S)
        async with asyncio.timeout(timeout_s):  # a body dribbled byte by byte must not hold a handler
            while chunk := await request.content.read(limit + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise PeerError(f"Request body larger than {limit} bytes")
    except TimeoutError:
        if request.transport is not None:
            request.transport.close()  # the rest of the body is not wanted, nor the connection
        raise PeerError(f"Request body not received within {timeout_s:g} s") from None
    except (web.HTTPException, RequestPayloadError) as exc:  # e.g. a body that does not match its encoding
        raise PeerError(f"Request body could not be read: {type(exc).__name__}") from None
    body = b"".join(chunks)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PeerError("Malformed JSON in request body") from None


def _writer(request: web.Request, handle: str | None) -> Identity:
    """The caller of a write: authenticated (else AuthenticationNeeded), over HTTPS unless plain-HTTP
    writes are allowed on this node (else NotAuthorized)."""
    caller = caller_of(request)
    if caller is None:
        raise AuthenticationNeeded("Authentication needed", handle=handle)
    if not request.app[PLAIN_WRITES] and not request.secure:
        raise NotAuthorized("Writes need HTTPS on this node")
    return caller


async def _with_templates(request: web.Request, write: Callable[[], T]) -> T:
    """Run ``write``; when it needs templates held elsewhere, fetch them and run it once more (a second
    need, or a template that cannot be reached, is the fail-closed answer: code 2, HTTP 503)."""
    try:
        return write()
    except TemplateNeeded as need:
        fetch = request.app.get(TEMPLATES)
        if fetch is None:
            raise need.without_resolver() from None
        await fetch(need.refs)
    return write()


def _int_query(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise PeerError(f"{name} must be an integer") from None


# -- handlers --------------------------------------------------------------------------------------------

async def resolve(request: web.Request) -> web.Response:
    text = handle_from_path(request)
    node = request.app[NODE]
    query = request.query
    anonymous = "Authorization" not in request.headers
    if anonymous and (not query or (len(query) == 1 and "auth" in query)):
        # The hot path: anonymous, unfiltered, answered from the node's cached Answer; the body for an exact
        # request path is kept while the node keeps that Answer.
        answer = node.query(text, refer=False)
        raw_path = request.raw_path
        if "?" in raw_path:
            return web.Response(body=answer_body(text, answer.values), content_type=JSON)
        return answer_response(request.app[BODIES], raw_path, text, answer)
    caller = None if anonymous else caller_of(request)
    result = node.query(text, indexes=_indexes(request), types=query.getall("type", []), caller=caller, refer=False)
    pretty = "pretty" in query
    if result.code == ResponseCode.VALUES_NOT_FOUND:
        return json_response({"responseCode": 200, "values": [], "handle": text}, pretty=pretty)
    return json_response({"responseCode": 1, "handle": text, "values": [v.to_json() for v in result.values]},
                 pretty=pretty)


def _hot_path(node: AuthoritativeNode, bodies: EncodedAnswers) -> FastPath:
    """``resolve``'s hot path (an anonymous GET of one handle with no query string) as the hosting's fast
    path: the same answer, without routing and the middleware chain (``http.edge.FastPath``)."""
    def takes(request: web.BaseRequest) -> bool:
        raw = request.raw_path
        headers = request.headers
        return (request.method == "GET" and raw.startswith(HANDLES_PATH) and "?" not in raw
                and "Authorization" not in headers and "Expect" not in headers)

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        text = handle_from_path(request)
        return answer_response(bodies, request.raw_path, text, node.query(text, refer=False))

    return FastPath(f"GET {HANDLES_PATH}{{handle}}", takes, answer)


async def put_handle(request: web.Request) -> web.Response:
    text = handle_from_path(request)
    node = request.app[NODE]
    caller = _writer(request, text)
    body = await _json_body(request)
    if isinstance(body, list):
        raw_values = body
    elif isinstance(body, dict) and "values" in body:
        raw_values = body["values"]
    else:
        raise PeerError("Request body must be {\"values\": [...]}")
    try:
        values = values_from_json(raw_values)
    except HandleError as exc:
        exc.handle = text
        raise
    now = time.time()
    if _flag(request, "mintNewSuffix", False):
        if not text.endswith("/") or text.count("/") != 1:
            raise InvalidHandle("mintNewSuffix needs a path of the form {prefix}/", handle=text)
        minted = f"{text[:-1]}/{uuid.uuid4()}"
        await _with_templates(request, lambda: node.put_record(minted, values, caller=caller, now=now,
                                                               overwrite=False))
        return json_response({"responseCode": 1, "handle": minted}, 201)
    overwrite = _flag(request, "overwrite", True)
    indexes = _indexes(request)
    if indexes:
        created = await _with_templates(request, lambda: node.put_values(text, values, indexes=indexes, caller=caller,
                                                                         now=now, overwrite=overwrite))
    else:
        created = await _with_templates(request, lambda: node.put_record(text, values, caller=caller, now=now,
                                                                         overwrite=overwrite))
    return json_response({"responseCode": 1, "handle": text}, 201 if created else 200)


async def delete_handle(request: web.Request) -> web.Response:
    text = handle_from_path(request)
    node = request.app[NODE]
    caller = _writer(request, text)
    indexes = _indexes(request)
    if indexes:
        await _with_templates(request, lambda: node.delete_values(text, indexes, caller=caller, now=time.time()))
    else:
        node.delete_record(text, caller=caller)
    return json_response({"responseCode": 1, "handle": text})


async def list_handles(request: web.Request) -> web.Response:
    prefix = request.query.get("prefix")
    if not prefix:
        raise PeerError("Listing handles needs ?prefix=")
    node = request.app[NODE]
    caller = caller_of(request)
    page = request.query.get("page")
    page_size = request.query.get("pageSize")
    try:
        page_n = int(page) if page is not None else None
        size_n = int(page_size) if page_size is not None else None
    except ValueError:
        raise PeerError("page and pageSize must be integers") from None
    if any(n is not None and not 0 <= n <= 2**31 - 1 for n in (page_n, size_n)):
        raise PeerError("page and pageSize must be between 0 and 2147483647")
    total, handles = node.list_handles(prefix, caller=caller, page=page_n, page_size=size_n)
    shown = bare_prefix(prefix)
    body: dict[str, Any] = {"responseCode": 1, "prefix": shown, "totalCount": str(total)}
    if page is not None:
        body["page"] = page_n
    if page_size is not None:
        body["pageSize"] = size_n
    body["handles"] = handles
    return json_response(body, pretty="pretty" in request.query)


async def list_prefixes(request: web.Request) -> web.Response:
    prefixes = request.app[NODE].list_prefixes(caller=caller_of(request))
    return json_response({"responseCode": 1, "prefixes": prefixes, "totalCount": str(len(prefixes))})


async def open_session(request: web.Request) -> web.Response:
    caller = caller_of(request)
    session = request.app[SESSIONS].open(caller)
    body: dict[str, Any] = {"sessionId": session.session_id, "nonce": session.nonce,
                            "authenticated": caller is not None}
    if caller is not None:
        body["id"] = str(caller)
    return json_response(body, 201)


async def this_session(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    sid = session_id_from_header(header) if header[:6].lower() == "handle" else None
    table = request.app[SESSIONS]
    session = table.get(sid) if sid else None
    if session is None:
        raise AuthenticationFailed("unknown or expired session")
    if request.method == "PUT":
        caller_of(request)  # authenticates the session when the header carries a proof
    if request.method == "DELETE":
        table.close(session.session_id)
        return web.Response(status=204)
    body: dict[str, Any] = {"sessionId": session.session_id, "nonce": session.nonce,
                            "authenticated": session.identity is not None}
    if session.identity is not None:
        body["id"] = str(session.identity)
    return json_response(body)


async def batch(request: web.Request) -> web.Response:
    """``POST /api/batch``: ``{"handles": [{"handle": h, "values": [...]}, ...], "overwrite": false}``."""
    node = request.app[NODE]
    caller = _writer(request, None)
    body = await _json_body(request, MAX_BATCH_BODY_BYTES)
    items_raw = body.get("handles") if isinstance(body, dict) else None
    if not isinstance(items_raw, list):
        raise PeerError('Batch body must be {"handles": [{"handle": ..., "values": [...]}, ...]}')
    if len(items_raw) > MAX_BATCH:
        raise PeerError(f"A batch holds at most {MAX_BATCH} identifiers; this one has {len(items_raw)}")
    now = time.time()
    stamp = int(now)  # values parsed with the stamp the node gives them: no second copy of each
    items, early = [], []
    for raw in items_raw:
        handle = raw.get("handle") if isinstance(raw, dict) else None
        if not isinstance(handle, str):
            raise PeerError("Every batch item needs a handle string")
        try:
            items.append((handle, values_from_json(raw.get("values"), stamp)))
        except HandleError as exc:
            early.append({"handle": handle, "responseCode": int(exc.code), "message": exc.message})
            items.append((handle, ()))
    if early:
        return json_response({"responseCode": early[0]["responseCode"],
                      "message": f"Batch refused: {len(early)} of {len(items)} items have invalid values; "
                                 "nothing was registered", "results": early}, 400)
    overwrite = bool(body.get("overwrite", False))
    try:
        result = await _with_templates(request, lambda: node.batch_create(items, caller=caller, now=now,
                                                                          overwrite=overwrite))
    except BatchRefused as exc:
        results = [{"handle": r.handle, "responseCode": int(r.code), **({"message": r.message} if r.message else {})}
                   for r in exc.results]
        return json_response({"responseCode": int(exc.code), "message": exc.message, "results": results}, exc.http_status)
    return json_response({"responseCode": 1, "count": len(result.results),
                  "results": [{"handle": r.handle, "responseCode": int(r.code)} for r in result.results]}, 201)


async def list_templates(request: web.Request) -> web.Response:
    """``GET /api/templates?prefix=P``: the templates this node publishes under P (anonymous)."""
    prefix = request.query.get("prefix")
    if not prefix:
        raise PeerError("Listing templates needs ?prefix=")
    found = request.app[NODE].templates_under(prefix, now=time.time())
    return json_response({"responseCode": 1, "prefix": bare_prefix(prefix), "templates": [
        {"handle": handle, "name": t.name, "versions": list(versions), "latest": t.version,
         "label": t.label.to_json(), "fields": len(t.fields)} for handle, versions, t in found]},
        pretty="pretty" in request.query)


async def template_uses(request: web.Request) -> web.Response:
    """``GET /api/templates/uses?prefix=P&template=T[&version=V][&from=N][&scan=M]``: the identifiers of P
    naming template T, among ``scan`` of them from position ``from`` (``next``: where to go on)."""
    prefix, template = request.query.get("prefix"), request.query.get("template")
    if not prefix or not template:
        raise PeerError("Template uses need ?prefix= and ?template=")
    start, scan, version = _int_query(request, "from"), _int_query(request, "scan"), _int_query(request, "version")
    total, hits, nxt = request.app[NODE].template_uses(prefix, template, caller=caller_of(request), version=version,
                                                       start=start or 0, scan=1_000 if scan is None else scan)
    return json_response({"responseCode": 1, "prefix": bare_prefix(prefix), "template": template,
                          "totalCount": str(total), "from": start or 0, "next": nxt,
                          "handles": [{"handle": h, "version": v} for h, v in hits]},
                         pretty="pretty" in request.query)


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = {"status": "ok", "node": node.name, "prefixes": node.prefixes, "records": node.store.count()}
    if (worker := request.app.get(WORKER)) is not None:
        body["worker"] = worker
    return json_response(body)


def make_app(node: AuthoritativeNode, *, plain_http_writes: bool = True, hooks: EdgeHooks | None = None,
             metrics: Callable[[], bytes | Awaitable[bytes]] | None = None, body_timeout_s: float = BODY_TIMEOUT_S,
             templates: FetchTemplates | None = None) -> web.Application:
    """The Handle REST API of ``node``. ``body_timeout_s``: a request body must arrive within it.
    ``templates`` fetches templates held elsewhere (None: writes naming one are refused)."""
    app = web.Application(middlewares=[edge], client_max_size=MAX_BATCH_BODY_BYTES)
    if templates is not None:
        app[TEMPLATES] = templates
    app[NODE] = node
    app[SESSIONS] = SessionTable()
    app[PLAIN_WRITES] = plain_http_writes
    app[BODIES] = EncodedAnswers()
    app[BODY_TIMEOUT] = body_timeout_s
    app[FAST] = _hot_path(node, app[BODIES])
    install_edge(app, hooks, metrics)
    app.router.add_get("/api/handles/{handle:.*}", resolve)
    app.router.add_put("/api/handles/{handle:.*}", put_handle)
    app.router.add_delete("/api/handles/{handle:.*}", delete_handle)
    app.router.add_get("/api/handles", list_handles)
    app.router.add_get("/api/prefixes", list_prefixes)
    app.router.add_post("/api/sessions", open_session)
    app.router.add_route("GET", "/api/sessions/this", this_session)
    app.router.add_route("DELETE", "/api/sessions/this", this_session)
    app.router.add_route("PUT", "/api/sessions/this", this_session)
    app.router.add_post("/api/batch", batch)
    app.router.add_get("/api/templates", list_templates)
    app.router.add_get("/api/templates/uses", template_uses)
    app.router.add_get("/healthz", health)
    return app
