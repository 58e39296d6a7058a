"""The recursive node's REST surface: ``GET /api/handles/{handle}`` resolves anything, walking the
hierarchy; answers have the authoritative API's shapes (``?trace`` adds the hops). Writes are refused
(they belong to the node that holds the prefix).

The app is given a ``Resolver``: the recursive node behind it (``nodes.pipeline.RecursiveNode``), its
fast path and an awaitable resolution. It keeps only the bytes of whole bodies of plain requests, by the
exact request path, valid while the node keeps the Answer they were made from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ..core.admin import parse_index
from ..core.answers import Answer, EncodedAnswers
from ..core.codes import OpCode, ResponseCode, http_status
from ..core.errors import PeerError
from ..core.messages import FLAG_AUTHORITATIVE, FLAG_TRACE, Request
from ..nodes.pipeline import RecursiveNode
from ..nodes.recursive import Done, Failure
from .edge import (
    FAST,
    HANDLES_PATH,
    WORKER,
    EdgeHooks,
    FastPath,
    answer_response,
    edge,
    handle_from_path,
    install_edge,
    json_response,
)

#: Failures that mean an upstream node did not answer: the gateway timed out.
GATEWAY_TIMEOUTS = frozenset({Failure.UPSTREAM_TIMEOUT, Failure.NO_UPSTREAM})


class Resolver(Protocol):
    node: RecursiveNode

    def lookup(self, handle: str) -> Answer | None:
        """The fast path (uncounted: the edge middleware counts REST requests)."""


    async def resolve(self, request: Request) -> Done: ...


RESOLVER: web.AppKey[Resolver] = web.AppKey("resolver")
BODIES: web.AppKey[EncodedAnswers] = web.AppKey("recursive_bodies", EncodedAnswers)


async def resolve(request: web.Request) -> web.Response:
    return await _resolve(request.app[RESOLVER], request.app[BODIES], request)


def _fast_path(resolver: Resolver, bodies: EncodedAnswers) -> FastPath:
    """Every resolution, answered without routing and the middleware chain (``http.edge.FastPath``)."""
    def takes(request: web.BaseRequest) -> bool:
        return (request.method == "GET" and request.raw_path.startswith(HANDLES_PATH)
                and "Expect" not in request.headers)

    async def answer(request: web.BaseRequest) -> web.Response:
        return await _resolve(resolver, bodies, request)

    return FastPath(f"GET {HANDLES_PATH}{{handle}}", takes, answer)


async def _resolve(resolver: Resolver, bodies: EncodedAnswers, request: web.BaseRequest) -> web.Response:
    text = handle_from_path(request)
    raw_path = request.raw_path
    if "?" not in raw_path and (hit := resolver.lookup(text)) is not None:
        return answer_response(bodies, raw_path, text, hit)
    query = request.query
    flags = (FLAG_AUTHORITATIVE if query.get("auth", "").lower() in ("true", "1", "yes") else 0) | (
        FLAG_TRACE if "trace" in query else 0)
    req = Request(0, OpCode.RESOLUTION, text, flags, tuple(parse_index(i) for i in query.getall("index", [])),
                  tuple(query.getall("type", [])))
    done = await resolver.resolve(req)
    resp = resolver.node.respond(req, done)
    pretty = "pretty" in query
    if resp.code == ResponseCode.VALUES_NOT_FOUND:
        return json_response({"responseCode": 200, "values": [], "handle": text}, pretty=pretty)
    body: dict[str, Any] = {"responseCode": int(resp.code), "handle": text}
    if resp.code == ResponseCode.SUCCESS:
        body["values"] = [v.to_json() for v in resp.values]
        if resp.trace:
            body["trace"] = [{"node": h.node, "address": h.address, "responseCode": h.code,
                              "elapsedUs": h.elapsed_us, "cached": h.cached} for h in resp.trace]
        return json_response(body, pretty=pretty)
    if resp.message and resp.code != ResponseCode.HANDLE_NOT_FOUND:
        body["message"] = resp.message
    status = 504 if done.failure in GATEWAY_TIMEOUTS else http_status(resp.code)
    return json_response(body, status, pretty=pretty)


async def refuse_write(request: web.Request) -> web.Response:
    raise PeerError("This is a recursive node: it resolves only. Write to the node that holds the prefix.")


async def health(request: web.Request) -> web.Response:
    node = request.app[RESOLVER].node
    cache = node.resolver.answers
    body = {"status": "ok", "node": node.name, "role": "recursive", "cacheEntries": len(cache),
            "cacheHits": cache.stats.hits, "cacheMisses": cache.stats.misses}
    if (worker := request.app.get(WORKER)) is not None:
        body["worker"] = worker
    return json_response(body)


def make_recursive_app(resolver: Resolver, *, hooks: EdgeHooks | None = None,
                       metrics: Callable[[], bytes | Awaitable[bytes]] | None = None) -> web.Application:
    app = web.Application(middlewares=[edge], client_max_size=256 * 1024)
    app[RESOLVER] = resolver
    app[BODIES] = EncodedAnswers()
    app[FAST] = _fast_path(resolver, app[BODIES])
    install_edge(app, hooks, metrics)
    app.router.add_get("/api/handles/{handle:.*}", resolve)
    app.router.add_put("/api/handles/{handle:.*}", refuse_write)
    app.router.add_delete("/api/handles/{handle:.*}", refuse_write)
    app.router.add_get("/healthz", health)
    return app
