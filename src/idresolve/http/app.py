"""The Handle REST API (REST-CONTRACT.md) over an ``AuthoritativeNode``, as an aiohttp application.

One middleware turns every ``HandleError`` (and every aiohttp HTTP error) into the contract's JSON body
and status; nothing else in this module builds an error answer. Anonymous resolutions without filters,
the hot path, are answered from a cache of encoded value lists that node writes invalidate.

Plain HTTP writes: allowed when ``plain_http_writes`` is set (the default on loopback); otherwise a write
that did not arrive over TLS is refused with 403, as the reference server does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ..core.admin import parse_index
from ..core.codes import ResponseCode
from ..core.errors import (
    AuthenticationFailed,
    AuthenticationNeeded,
    HandleError,
    InvalidHandle,
    NotAuthorized,
    PeerError,
)
from ..core.values import values_from_json
from ..nodes.auth import Identity
from ..nodes.authoritative import MAX_BATCH, AuthoritativeNode, BatchRefused
from .auth import SessionTable, parse_basic, session_id_from_header

log = logging.getLogger("idresolve.http")

MAX_BODY_BYTES = 256 * 1024
BODY_TIMEOUT_S = 30.0  # one handle's PUT (DOMAIN.md: whole message <= 256 KiB)
MAX_BATCH_BODY_BYTES = 64 * 1024 * 1024
ANSWER_CACHE_ENTRIES = 100_000
JSON = "application/json"
_HANDLES = "/api/handles/"

NODE: web.AppKey[AuthoritativeNode] = web.AppKey("node", AuthoritativeNode)
SESSIONS: web.AppKey[SessionTable] = web.AppKey("sessions", SessionTable)
PLAIN_WRITES: web.AppKey[bool] = web.AppKey("plain_http_writes", bool)


def _json(body: dict[str, Any], status: int = 200, *, pretty: bool = False) -> web.Response:
    opt = orjson.OPT_INDENT_2 if pretty else 0
    return web.Response(body=orjson.dumps(body, option=opt), status=status, content_type=JSON)


def error_body(exc: HandleError) -> dict[str, Any]:
    body: dict[str, Any] = {"responseCode": int(exc.code)}
    if exc.show_message and exc.message:
        body["message"] = exc.message
    if exc.handle is not None:
        body["handle"] = exc.handle
    return body


class AnswerCache:
    """Encoded answers of anonymous, unfiltered resolutions, bounded (LRU), invalidated by node writes.

    Two levels: the encoded public value list by record key, and the whole response body by the exact
    request path a client sent (its spelling and percent-encoding), so a repeated request is answered
    without decoding, parsing or encoding anything. A write to a record drops both for its key; a write to
    a prefix record (``0.NA/...``) drops every body, since it can change which handles this node serves.
    A body is only kept while its key's value list is, so both levels share one bound.
    """

    MAX_SPELLINGS = 2  # bodies kept per key (one per spelling a client used)

    def __init__(self, node: AuthoritativeNode, max_entries: int = ANSWER_CACHE_ENTRIES) -> None:
        self.node, self.max_entries = node, max_entries
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bodies: dict[str, tuple[str, bytes]] = {}  # raw request path -> (key, whole body)
        self._paths: dict[str, list[str]] = {}  # key -> its raw paths in _bodies
        node.on_change(self.invalidate)

    def invalidate(self, key: str) -> None:
        self._entries.pop(key, None)
        if key.startswith("0.na/"):
            self._bodies.clear()
            self._paths.clear()
        else:
            self._forget(key)

    def _forget(self, key: str) -> None:
        for path in self._paths.pop(key, ()):
            self._bodies.pop(path, None)

    def body_for(self, raw_path: str) -> bytes | None:
        """The whole body last sent for this exact request path, if still valid."""
        hit = self._bodies.get(raw_path)
        if hit is None:
            return None
        try:
            self._entries.move_to_end(hit[0])
        except KeyError:  # cannot happen while _bodies only holds keys of _entries; never serve it then
            self._forget(hit[0])
            return None
        return hit[1]

    def remember(self, raw_path: str, key: str, body: bytes) -> None:
        if key not in self._entries or raw_path in self._bodies:
            return
        paths = self._paths.setdefault(key, [])
        if len(paths) < self.MAX_SPELLINGS:
            paths.append(raw_path)
            self._bodies[raw_path] = (key, body)

    def values_json(self, text: str, key: str) -> bytes:
        entries = self._entries
        blob = entries.get(key)
        if blob is not None:
            entries.move_to_end(key)
            return blob
        record = self.node.get_record(text)
        values = self.node.visible_values(record, None)
        blob = orjson.dumps([v.to_json() for v in values])
        entries[key] = blob
        if len(entries) > self.max_entries:
            self._forget(entries.popitem(last=False)[0])
        return blob


ANSWERS: web.AppKey[AnswerCache] = web.AppKey("answers", AnswerCache)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout_s", float)


# -- request helpers -------------------------------------------------------------------------------------

def handle_from_path(request: web.Request) -> str:
    """The handle in ``/api/handles/<handle>``, percent-decoded strictly as UTF-8."""
    raw = request.raw_path.split("?", 1)[0][len(_HANDLES):]
    try:
        return unquote_to_bytes(raw).decode("utf-8") if "%" in raw else raw
    except UnicodeDecodeError:
        raise InvalidHandle("Handle is not valid UTF-8") from None


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
        sid = session_id_from_header(header)
        session = request.app[SESSIONS].get(sid) if sid else None
        if session is None:
            raise AuthenticationFailed("unknown or expired session")
        return session.identity
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


# -- handlers --------------------------------------------------------------------------------------------

async def resolve(request: web.Request) -> web.Response:
    raw_path = request.raw_path
    if "?" not in raw_path and "Authorization" not in request.headers:
        # The hottest path: the same anonymous request as before, answered with the same bytes.
        cached = request.app[ANSWERS].body_for(raw_path)
        if cached is not None:
            return web.Response(body=cached, content_type=JSON)
    text = handle_from_path(request)
    if not text:
        raise InvalidHandle("Empty handle invalid")
    node = request.app[NODE]
    query = request.query
    caller = caller_of(request) if "Authorization" in request.headers else None
    pretty = "pretty" in query
    if caller is None and (not query or (len(query) == 1 and "auth" in query)):
        # The hot path: anonymous, unfiltered. Answer from the cache of encoded value lists.
        key = node.parse(text).key
        answers = request.app[ANSWERS]
        values = answers.values_json(text, key)
        body = b'{"responseCode":1,"handle":' + orjson.dumps(text) + b',"values":' + values + b"}"
        if "?" not in raw_path and "Authorization" not in request.headers:
            answers.remember(raw_path, key, body)
        return web.Response(body=body, content_type=JSON)
    types = query.getall("type", [])
    result = node.resolve(text, indexes=_indexes(request), types=types, caller=caller)
    if result.code == ResponseCode.VALUES_NOT_FOUND:
        return _json({"responseCode": 200, "values": [], "handle": text}, pretty=pretty)
    return _json({"responseCode": 1, "handle": text, "values": [v.to_json() for v in result.values]},
                 pretty=pretty)


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
        text = f"{text[:-1]}/{uuid.uuid4()}"
        node.put_record(text, values, caller=caller, now=now, overwrite=False)
        return _json({"responseCode": 1, "handle": text}, 201)
    overwrite = _flag(request, "overwrite", True)
    indexes = _indexes(request)
    if indexes:
        created = node.put_values(text, values, indexes=indexes, caller=caller, now=now, overwrite=overwrite)
    else:
        created = node.put_record(text, values, caller=caller, now=now, overwrite=overwrite)
    return _json({"responseCode": 1, "handle": text}, 201 if created else 200)


async def delete_handle(request: web.Request) -> web.Response:
    text = handle_from_path(request)
    node = request.app[NODE]
    caller = _writer(request, text)
    indexes = _indexes(request)
    if indexes:
        node.delete_values(text, indexes, caller=caller, now=time.time())
    else:
        node.delete_record(text, caller=caller)
    return _json({"responseCode": 1, "handle": text})


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
    shown = prefix[5:] if prefix[:5].lower() == "0.na/" else prefix
    body: dict[str, Any] = {"responseCode": 1, "prefix": shown, "totalCount": str(total)}
    if page is not None:
        body["page"] = page_n
    if page_size is not None:
        body["pageSize"] = size_n
    body["handles"] = handles
    return _json(body, pretty="pretty" in request.query)


async def list_prefixes(request: web.Request) -> web.Response:
    prefixes = request.app[NODE].list_prefixes(caller=caller_of(request))
    return _json({"responseCode": 1, "prefixes": prefixes, "totalCount": str(len(prefixes))})


async def open_session(request: web.Request) -> web.Response:
    caller = caller_of(request)
    session = request.app[SESSIONS].open(caller)
    body: dict[str, Any] = {"sessionId": session.session_id, "nonce": session.nonce,
                            "authenticated": caller is not None}
    if caller is not None:
        body["id"] = str(caller)
    return _json(body, 201)


async def this_session(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    sid = session_id_from_header(header) if header[:6].lower() == "handle" else None
    table = request.app[SESSIONS]
    session = table.get(sid) if sid else None
    if session is None:
        raise AuthenticationFailed("unknown or expired session")
    if request.method == "DELETE":
        table.close(session.session_id)
        return web.Response(status=204)
    body: dict[str, Any] = {"sessionId": session.session_id, "nonce": session.nonce,
                            "authenticated": session.identity is not None}
    if session.identity is not None:
        body["id"] = str(session.identity)
    return _json(body)


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
    items, early = [], []
    for raw in items_raw:
        handle = raw.get("handle") if isinstance(raw, dict) else None
        if not isinstance(handle, str):
            raise PeerError("Every batch item needs a handle string")
        try:
            items.append((handle, values_from_json(raw.get("values"))))
        except HandleError as exc:
            early.append({"handle": handle, "responseCode": int(exc.code), "message": exc.message})
            items.append((handle, ()))
    if early:
        return _json({"responseCode": early[0]["responseCode"],
                      "message": f"Batch refused: {len(early)} of {len(items)} items have invalid values; "
                                 "nothing was registered", "results": early}, 400)
    try:
        result = node.batch_create(items, caller=caller, now=time.time(),
                                   overwrite=bool(body.get("overwrite", False)))
    except BatchRefused as exc:
        results = [{"handle": r.handle, "responseCode": int(r.code), **({"message": r.message} if r.message else {})}
                   for r in exc.results]
        return _json({"responseCode": int(exc.code), "message": exc.message, "results": results}, exc.http_status)
    return _json({"responseCode": 1, "count": len(result.results),
                  "results": [{"handle": r.handle, "responseCode": int(r.code)} for r in result.results]}, 201)


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return _json({"status": "ok", "node": node.name, "prefixes": node.prefixes, "records": node.store.count()})


# -- the edge: the one error mapping, plus load shedding and request metrics when the host installs them --

@dataclass(slots=True)
class EdgeHooks:
    """What the host adds around every request: ``admit(client, backlog) -> bool`` and ``inflight`` (an
    ``Admission``), whether to rate-limit per client address, and ``observe(op, status, seconds)``."""

    admission: Any = None
    per_client: bool = False
    observe: Callable[[str, int, float], None] | None = None
    ops: dict[tuple[str, object], str] = field(default_factory=dict)


EDGE: web.AppKey[EdgeHooks] = web.AppKey("edge", EdgeHooks)
_BUSY = orjson.dumps({"responseCode": 3, "message": "Server too busy"})


def _error_response(request: web.Request, exc: BaseException) -> web.Response:
    if isinstance(exc, AuthenticationFailed):
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="handle"'})
    if isinstance(exc, HandleError):
        resp = _json(error_body(exc), exc.http_status)
        if exc.code == ResponseCode.AUTHENTICATION_NEEDED:
            resp.headers["WWW-Authenticate"] = 'Basic realm="handle"'
        return resp
    if isinstance(exc, web.HTTPException):
        if exc.status == 404:
            return _json({"responseCode": 4, "message": "Not found"}, 404)
        if exc.status == 405:
            return _json({"responseCode": 4, "message": f"Method {request.method} not allowed here"}, 405)
        if exc.status == 413:
            return _json({"responseCode": 4, "message": "Request body too large"}, 413)
        return _json({"responseCode": 4, "message": exc.reason}, exc.status)
    if isinstance(exc, ConnectionResetError):  # the client left mid-request: nothing to answer, nothing wrong
        return web.Response(status=400)
    log.error("internal error on %s %s", request.method, request.path, exc_info=exc)
    return _json({"responseCode": 2, "message": "Internal server error"}, 500)


@web.middleware
async def edge(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    hooks = request.app.get(EDGE)
    adm = hooks.admission if hooks is not None else None
    t0 = time.perf_counter()
    resp: web.StreamResponse
    if adm is not None and request.path.startswith("/api/"):  # health and metrics stay reachable
        if not adm.admit(request.remote if hooks.per_client else None, adm.inflight > 0):
            resp = web.Response(body=_BUSY, status=503, content_type=JSON, headers={"Retry-After": "1"})
        else:
            adm.inflight += 1
            try:
                resp = await handler(request)
            except Exception as exc:
                resp = _error_response(request, exc)
            finally:
                adm.inflight -= 1
    else:
        try:
            resp = await handler(request)
        except Exception as exc:
            resp = _error_response(request, exc)
    if hooks is not None and hooks.observe is not None:
        resource = request.match_info.route.resource
        key = (request.method, resource)
        op = hooks.ops.get(key)
        if op is None:
            op = hooks.ops[key] = f"{request.method} {resource.canonical if resource is not None else 'unknown'}"
        hooks.observe(op, resp.status, time.perf_counter() - t0)
    return resp


def make_app(node: AuthoritativeNode, *, plain_http_writes: bool = True,
             extra_routes: Callable[[web.Application], None] | None = None) -> web.Application:
    app = web.Application(middlewares=[edge], client_max_size=MAX_BATCH_BODY_BYTES)
    app[NODE] = node
    app[SESSIONS] = SessionTable()
    app[PLAIN_WRITES] = plain_http_writes
    app[ANSWERS] = AnswerCache(node)
    app.router.add_get("/api/handles/{handle:.*}", resolve)
    app.router.add_put("/api/handles/{handle:.*}", put_handle)
    app.router.add_delete("/api/handles/{handle:.*}", delete_handle)
    app.router.add_get("/api/handles", list_handles)
    app.router.add_get("/api/prefixes", list_prefixes)
    app.router.add_post("/api/sessions", open_session)
    app.router.add_route("GET", "/api/sessions/this", this_session)
    app.router.add_route("DELETE", "/api/sessions/this", this_session)
    app.router.add_post("/api/batch", batch)
    app.router.add_get("/healthz", health)
    if extra_routes is not None:
        extra_routes(app)
    return app
