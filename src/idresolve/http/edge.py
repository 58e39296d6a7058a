"""What every HTTP app of a node shares: the edge middleware (the one error mapping, load shedding and
request metrics), request path decoding, JSON answers, and ``GET /metrics``.

``edge`` turns every ``HandleError`` (and every aiohttp HTTP error) into the REST contract's JSON body
and status; no handler builds an error answer itself. ``EdgeHooks`` are what the host gives an app when it
makes it: an ``Admission`` (load shedding, per client address or not) and an observer for metrics.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from aiohttp import web

from ..core.answers import Answer, EncodedAnswers
from ..core.codes import ResponseCode
from ..core.errors import AuthenticationFailed, HandleError, InvalidHandle
from ..core.values import HandleValue

log = logging.getLogger("idresolve.http")
#: set when the node runs in several worker processes: which one answers (``/healthz`` says so)
WORKER: web.AppKey[dict[str, int]] = web.AppKey("worker", dict)

JSON = "application/json"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HANDLES_PATH = "/api/handles/"


def json_response(body: dict[str, Any], status: int = 200, *, pretty: bool = False) -> web.Response:
    opt = orjson.OPT_INDENT_2 if pretty else 0
    return web.Response(body=orjson.dumps(body, option=opt), status=status, content_type=JSON)


def error_body(exc: HandleError) -> dict[str, Any]:
    body: dict[str, Any] = {"responseCode": int(exc.code)}
    if exc.show_message and exc.message:
        body["message"] = exc.message
    if exc.handle is not None:
        body["handle"] = exc.handle
    return body


def handle_from_path(request: web.BaseRequest) -> str:
    """The handle in ``/api/handles/<handle>``, percent-decoded strictly as UTF-8; never empty."""
    raw = request.raw_path.split("?", 1)[0][len(HANDLES_PATH):]
    try:
        text = unquote_to_bytes(raw).decode("utf-8") if "%" in raw else raw
    except UnicodeDecodeError:
        raise InvalidHandle("Handle is not valid UTF-8") from None
    if not text:
        raise InvalidHandle("Empty handle invalid")
    return text


def answer_response(bodies: EncodedAnswers, raw_path: str, text: str, answer: Answer) -> web.Response:
    """The response to a plain resolution of ``text`` (requested at ``raw_path``, as the client spelled it)
    whose node-level Answer is ``answer``: the body kept in ``bodies`` for that path and Answer, or made
    and kept now."""
    body = bodies.get(raw_path, answer)
    if body is None:
        body = answer_body(text, answer.values)
        bodies.put(raw_path, answer, body)
    return web.Response(body=body, content_type=JSON)


def answer_body(text: str, values: tuple[HandleValue, ...]) -> bytes:
    """The body of a successful resolution of ``text`` (as the client spelled it)."""
    return (b'{"responseCode":1,"handle":' + orjson.dumps(text) + b',"values":'
            + orjson.dumps([v.to_json() for v in values]) + b"}")


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


def _error_response(request: web.BaseRequest, exc: BaseException) -> web.Response:
    if isinstance(exc, AuthenticationFailed):
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="handle"'})
    if isinstance(exc, HandleError):
        resp = json_response(error_body(exc), exc.http_status)
        if exc.code == ResponseCode.AUTHENTICATION_NEEDED:
            resp.headers["WWW-Authenticate"] = 'Basic realm="handle"'
        return resp
    if isinstance(exc, web.HTTPException):
        if exc.status == 404:
            return json_response({"responseCode": 4, "message": "Not found"}, 404)
        if exc.status == 405:
            return json_response({"responseCode": 4, "message": f"Method {request.method} not allowed here"}, 405)
        if exc.status == 413:
            return json_response({"responseCode": 4, "message": "Request body too large"}, 413)
        return json_response({"responseCode": 4, "message": exc.reason}, exc.status)
    if isinstance(exc, ConnectionResetError):  # the client left mid-request: nothing to answer, nothing wrong
        return web.Response(status=400)
    log.error("internal error on %s %s", request.method, request.path, exc_info=exc)
    return json_response({"responseCode": 2, "message": "Internal server error"}, 500)


#: an async request handler
Respond = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


async def _mapped(request: web.BaseRequest, answer: Respond) -> web.StreamResponse:
    try:
        return await answer(request)
    except Exception as exc:
        return _error_response(request, exc)


async def _admitted(request: web.BaseRequest, answer: Respond, hooks: EdgeHooks) -> web.StreamResponse:
    """``answer(request)`` if the node's admission lets it in (else code 3, HTTP 503), errors mapped."""
    adm = hooks.admission
    if not adm.admit(request.remote if hooks.per_client else None, adm.inflight > 0):
        return web.Response(body=_BUSY, status=503, content_type=JSON, headers={"Retry-After": "1"})
    adm.inflight += 1
    try:
        return await _mapped(request, answer)
    finally:
        adm.inflight -= 1


@web.middleware
async def edge(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    hooks = request.app.get(EDGE)
    t0 = time.perf_counter()
    resp: web.StreamResponse
    if hooks is not None and hooks.admission is not None and request.path.startswith("/api/"):
        resp = await _admitted(request, handler, hooks)  # health and metrics stay reachable
    else:
        resp = await _mapped(request, handler)
    if hooks is not None and hooks.observe is not None:
        resource = request.match_info.route.resource
        key = (request.method, resource)
        op = hooks.ops.get(key)
        if op is None:
            op = hooks.ops[key] = f"{request.method} {resource.canonical if resource is not None else 'unknown'}"
        hooks.observe(op, resp.status, time.perf_counter() - t0)
    return resp


@dataclass(frozen=True, slots=True)
class FastPath:
    """The commonest request of an app, answered before aiohttp's routing and middleware chain, with what
    the edge middleware adds (admission, the error mapping, metrics under ``op``, the name the middleware
    gives the route that would serve it). ``takes`` says whether a request is one (cheap checks of the
    method, path and headers); ``answer`` answers it without ``request.app`` or ``request.match_info``,
    which are not set this way. What ``takes`` refuses goes through the app as usual."""

    op: str
    takes: Callable[[web.BaseRequest], bool]
    answer: Respond


FAST: web.AppKey[FastPath] = web.AppKey("fast", FastPath)


def with_fast_path(app: web.Application, routed: Respond) -> Respond:
    """The request handler for aiohttp's server of ``app``: ``app[FAST]`` for what it takes, ``routed``
    (the app's own handler: routing, middlewares) for the rest; ``routed`` itself when there is no fast
    path. Call it once the app is frozen (its hooks are read now)."""
    fast = app.get(FAST)
    if fast is None:
        return routed
    hooks = app.get(EDGE)
    admission = hooks is not None and hooks.admission is not None
    observe = hooks.observe if hooks is not None else None
    takes, answer, op = fast.takes, fast.answer, fast.op

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if not takes(request):
            return await routed(request)
        t0 = time.perf_counter()
        resp = await (_admitted(request, answer, hooks) if admission else _mapped(request, answer))  # type: ignore[arg-type]
        if observe is not None:
            observe(op, resp.status, time.perf_counter() - t0)
        return resp

    return handle


def install_edge(app: web.Application, hooks: EdgeHooks | None,
                 metrics: Callable[[], bytes | Awaitable[bytes]] | None) -> None:
    """Give ``app`` its hooks and, when ``metrics`` renders something, ``GET /metrics`` (before it starts)."""
    if hooks is not None:
        app[EDGE] = hooks
    if metrics is not None:
        async def serve_metrics(_request: web.Request) -> web.Response:
            body = metrics()
            if inspect.isawaitable(body):  # a node of several workers gathers theirs (runtime/workers.py)
                body = await body
            return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

        app.router.add_get("/metrics", serve_metrics)
