"""The recursive node's REST surface: ``GET /api/handles/{handle}`` resolves anything, walking the
hierarchy; answers have the authoritative API's shapes. Writes are refused (they belong to the node that
holds the prefix)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..core.admin import parse_index
from ..core.codes import ResponseCode, http_status
from ..core.errors import InvalidHandle, PeerError
from ..core.handles import fold
from ..core.values import HandleValue
from ..net.services import RecursiveService
from .app import JSON, edge, handle_from_path

SERVICE: web.AppKey[RecursiveService] = web.AppKey("recursive", RecursiveService)
BODY_CACHE_ENTRIES = 50_000


class BodyCache:
    """Whole response bodies of plain resolutions (no query string), by the exact request path.

    A body is served again only while the resolver answers with the very same cached value tuple it was
    made from (checked by identity, and the entry holds that tuple), so it can never outlive the
    recursive node's own cache entry: expiry, eviction or a fresh walk all make new tuples. Bounded: the
    oldest entry goes first.
    """

    def __init__(self, max_entries: int = BODY_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._bodies: dict[str, tuple[tuple[HandleValue, ...], bytes]] = {}

    def get(self, raw_path: str, values: tuple[HandleValue, ...]) -> bytes | None:
        hit = self._bodies.get(raw_path)
        return hit[1] if hit is not None and hit[0] is values else None

    def put(self, raw_path: str, values: tuple[HandleValue, ...], body: bytes) -> None:
        bodies = self._bodies
        if raw_path not in bodies and len(bodies) >= self.max_entries:
            del bodies[next(iter(bodies))]
        bodies[raw_path] = (values, body)


BODIES: web.AppKey[BodyCache] = web.AppKey("recursive_bodies", BodyCache)


def _json(body: dict[str, Any], status: int = 200, pretty: bool = False) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0), status=status,
                        content_type=JSON)


async def resolve(request: web.Request) -> web.Response:
    text = handle_from_path(request)
    if not text:
        raise InvalidHandle("Empty handle invalid")
    query = request.query
    service = request.app[SERVICE]
    bypass = query.get("auth", "").lower() in ("true", "1", "yes")
    done = await service.resolve(text, bypass_cache=bypass)
    plain = "?" not in request.raw_path
    if plain and done.cached and done.code == ResponseCode.SUCCESS:
        cached = request.app[BODIES].get(request.raw_path, done.values)
        if cached is not None:  # the same answer as last time: the same bytes
            return web.Response(body=cached, content_type=JSON)
    pretty = "pretty" in query
    body: dict[str, Any] = {"responseCode": int(done.code), "handle": text}
    if done.code == ResponseCode.SUCCESS:
        values = done.values
        indexes = [parse_index(i) for i in query.getall("index", [])]
        types = [fold(t) for t in query.getall("type", [])]
        if indexes or types:
            values = tuple(v for v in values if v.index in indexes
                           or any(fold(v.type) == t or fold(v.type).startswith(t + ".") for t in types))
            if not values:
                return _json({"responseCode": 200, "values": [], "handle": text}, pretty=pretty)
        body["values"] = [v.to_json() for v in values]
        if "trace" in query:
            body["trace"] = [{"node": h.node, "address": h.address, "responseCode": h.code,
                              "elapsedUs": h.elapsed_us, "cached": h.cached} for h in done.trace]
        resp = _json(body, pretty=pretty)
        if plain and done.expires_at > 0:  # an answer the resolver cached: keep its bytes with it
            request.app[BODIES].put(request.raw_path, done.values, resp.body)  # type: ignore[arg-type]
        return resp
    if done.message and done.code not in (ResponseCode.HANDLE_NOT_FOUND,):
        body["message"] = done.message
    status = 504 if done.code == ResponseCode.ERROR and "did not answer" in done.message else http_status(done.code)
    return _json(body, status, pretty=pretty)


async def refuse_write(request: web.Request) -> web.Response:
    raise PeerError("This is a recursive node: it resolves only. Write to the node that holds the prefix.")


async def health(request: web.Request) -> web.Response:
    s = request.app[SERVICE]
    stats = s.resolver.answers.stats
    return _json({"status": "ok", "node": s.name, "role": "recursive", "cacheEntries": len(s.resolver.answers),
                  "cacheHits": stats.hits, "cacheMisses": stats.misses})


def make_recursive_app(service: RecursiveService) -> web.Application:
    app = web.Application(middlewares=[edge], client_max_size=256 * 1024)
    app[SERVICE] = service
    app[BODIES] = BodyCache()
    app.router.add_get("/api/handles/{handle:.*}", resolve)
    app.router.add_put("/api/handles/{handle:.*}", refuse_write)
    app.router.add_delete("/api/handles/{handle:.*}", refuse_write)
    app.router.add_get("/healthz", health)
    return app
