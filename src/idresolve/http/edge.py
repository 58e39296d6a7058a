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
_HANDLES = "/api/handles/"


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


def handle_from_path(request: web.Request) -> str:
    """The handle in ``/api/handles/<handle>``, percent-decoded strictly as UTF-8; never empty."""
    raw = request.raw_path.split("?", 1)[0][len(_HANDLES):]
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


def _error_response(request: web.Request, exc: BaseException) -> web.Response:
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
