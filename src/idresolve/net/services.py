"""Services that the binary servers host: the authoritative node and the recursive node.

``AuthoritativeService`` answers through ``nodes.dispatch.answer`` and keeps encoded answers of anonymous,
unfiltered resolutions (the hot path), invalidated by node writes. ``RecursiveService`` drives
``nodes.recursive`` resolutions over a ``ClientPool``: the only place where the recursive node waits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.codes import OpCode, ResponseCode
from ..core.handles import fold
from ..core.wire import FLAG_AUTHORITATIVE, FLAG_TRACE, Codec, Request, Response, error_response
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.dispatch import Handler, answer
from ..nodes.recursive import Ask, Done, RecursiveResolver
from .admission import Admission
from .client import ClientPool

ENCODED_ANSWERS = 100_000
CACHED_CODES = frozenset({ResponseCode.SUCCESS, ResponseCode.PREFIX_REFERRAL})
WRITE_OPCODES = frozenset({OpCode.CREATE_HANDLE, OpCode.DELETE_HANDLE, OpCode.ADD_VALUE, OpCode.REMOVE_VALUE,
                           OpCode.MODIFY_VALUE, OpCode.BATCH_CREATE, OpCode.REGISTRY_SYNC})
#: Requests per second a recursive node accepts from one client address (token bucket; burst 20 %).
DEFAULT_CLIENT_RATE = 100_000.0
Observer = Callable[[int, int, float], None]  # (opcode, response code, seconds spent)


class AuthoritativeService:
    def __init__(self, node: AuthoritativeNode, *, extra: dict[int, Handler] | None = None,
                 observe: Observer | None = None) -> None:
        self.node = node
        self.name = node.name
        self.codec = Codec()
        self.extra = extra or {}
        self.observe = observe
        self.admission: Admission | None = Admission()
        #: False on a listener beyond loopback without TLS: credentials would cross the network in clear.
        self.allow_writes = True
        # fold(handle) -> (handle as spelled, encoded answer after its request id, response code)
        self._encoded: OrderedDict[str, tuple[str, bytes, int]] = OrderedDict()
        node.on_change(self._invalidate)

    def _invalidate(self, key: str) -> None:
        if key.startswith("0.na/"):
            self._encoded.clear()  # a prefix record changed: which handles this node serves may have too
        else:
            self._encoded.pop(key, None)

    def answer_plain(self, request_id: int, handle: str) -> bytes | None:
        """The encoded answer to a plain resolution of ``handle`` when it is cached, else None (the server
        asks this before decoding such a request; ``handle`` does the rest)."""
        t0 = time.perf_counter()
        hit = self._encoded.get(fold(handle))
        if hit is None or hit[0] != handle:
            return None
        if self.observe is not None:
            self.observe(OpCode.RESOLUTION, hit[2], time.perf_counter() - t0)
        return self.codec.payload_with_tail(request_id, hit[1])

    def handle(self, req: Request) -> Response | bytes:
        t0 = time.perf_counter()
        if req.opcode == OpCode.RESOLUTION and not (req.flags or req.auth or req.indexes or req.types):
            cached = self.answer_plain(req.request_id, req.handle)
            if cached is not None:
                return cached
            key = fold(req.handle)
            resp = answer(self.node, req, time.time(), self.extra)
            # Answers and referrals (303, what top-level and secondary nodes give recursive nodes) are kept
            # encoded: a referral depends only on prefix records, and any change to one clears the cache.
            if resp.code in CACHED_CODES:
                tail = self.codec.response_tail(resp.opcode, resp.code, resp.handle, resp.body())
                self._encoded[key] = (req.handle, tail, resp.code)
                if len(self._encoded) > ENCODED_ANSWERS:
                    self._encoded.popitem(last=False)
        elif not self.allow_writes and (req.opcode in WRITE_OPCODES or req.auth is not None):
            resp = error_response(req.request_id, req.opcode, ResponseCode.INVALID_ADMIN,
                                  "credentials and writes are refused on this listener: it is beyond loopback "
                                  "and the binary protocol has no TLS (use the node's HTTPS interface)", req.handle)
        else:
            resp = answer(self.node, req, time.time(), self.extra)
        if self.observe is not None:
            self.observe(req.opcode, resp.code, time.perf_counter() - t0)
        return resp


class RecursiveService:
    """The recursive node: resolution over the binary protocol (and, through ``resolve``, over REST)."""

    def __init__(self, name: str, resolver: RecursiveResolver, pool: ClientPool, *, hop_timeout_s: float = 2.0,
                 observe: Observer | None = None, client_rate: float | None = DEFAULT_CLIENT_RATE) -> None:
        self.name = name
        self.admission: Admission | None = Admission(rate_per_client=client_rate)
        self.resolver = resolver
        self.pool = pool
        self.hop_timeout_s = hop_timeout_s
        self.codec = Codec()
        self.observe = observe
        self.upstream_requests = 0
        self._encoded: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def handle(self, req: Request) -> Response | bytes | Awaitable[Response | bytes]:
        if req.opcode != OpCode.RESOLUTION:
            if req.opcode == OpCode.GET_SITEINFO:
                return Response(req.request_id, req.opcode, ResponseCode.SUCCESS, node=self.name)
            return error_response(req.request_id, req.opcode, ResponseCode.OPERATION_NOT_SUPPORTED,
                                  "a recursive node only resolves; write to the node that holds the prefix")
        plain = not (req.flags or req.indexes or req.types or req.auth)
        if plain:
            cached = self.answer_plain(req.request_id, req.handle)
            if cached is not None:
                return cached
        now = time.monotonic()
        bypass = bool(req.flags & FLAG_AUTHORITATIVE)
        if bypass:
            self._encoded.pop(req.handle, None)
        resolution = self.resolver.begin(req.handle, now, bypass_cache=bypass)
        if isinstance(resolution.step, Done):
            if self.observe is not None:
                self.observe(req.opcode, resolution.step.code, time.monotonic() - now)
            return self._finish(req, resolution.step, now, plain)
        return self._walk(req, resolution, plain)

    def answer_plain(self, request_id: int, handle: str) -> bytes | None:
        """The encoded answer to a plain resolution of ``handle`` while it is cached and fresh, else None
        (the server asks this before decoding such a request; ``handle`` does the rest)."""
        hit = self._encoded.get(handle)
        if hit is None or hit[0] <= time.monotonic():
            return None
        self.resolver.answers.stats.hits += 1
        if self.observe is not None:
            self.observe(OpCode.RESOLUTION, ResponseCode.SUCCESS, 0.0)
        return self.codec.payload_with_tail(request_id, hit[1])

    async def resolve(self, handle: str, *, bypass_cache: bool = False) -> Done:
        """Resolve ``handle`` (for the REST surface and the CLI's trace)."""
        resolution = self.resolver.begin(handle, time.monotonic(), bypass_cache=bypass_cache)
        while isinstance(resolution.step, Ask):
            await self._one_hop(resolution, resolution.step)
        step = resolution.step
        if not isinstance(step, Done):
            raise RuntimeError("resolution ended without an answer")
        return step

    async def _one_hop(self, resolution: Any, ask: Ask) -> None:
        t0 = time.monotonic()
        # No TRACE flag upstream: hops are named from the HS_SITE, and the authoritative node's cache of
        # encoded answers (which serves only plain requests) applies.
        up = Request(0, OpCode.RESOLUTION, ask.handle, hops=ask.hops)
        self.upstream_requests += 1
        try:
            resp = await self.pool.request(ask.target.host, ask.target.port, up, self.hop_timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            now = time.monotonic()
            resolution.on_timeout(now, int((now - t0) * 1e6))
            return
        now = time.monotonic()
        resolution.on_response(resp, now, int((now - t0) * 1e6))

    async def _walk(self, req: Request, resolution: Any, plain: bool) -> Response | bytes:
        t0 = time.perf_counter()
        while isinstance(resolution.step, Ask):
            await self._one_hop(resolution, resolution.step)
        done = resolution.step
        if self.observe is not None:
            self.observe(req.opcode, done.code, time.perf_counter() - t0)
        return self._finish(req, done, time.monotonic(), plain)

    def _finish(self, req: Request, done: Done, now: float, plain: bool) -> Response | bytes:
        trace = done.trace if req.flags & FLAG_TRACE else ()
        resp = Response(req.request_id, req.opcode, done.code, req.handle, values=done.values,
                        message=done.message, node=self.name if req.flags & FLAG_TRACE else "", trace=trace)
        if req.indexes or req.types:
            wanted = {fold(t) for t in req.types}
            vals = tuple(v for v in done.values if v.index in req.indexes or fold(v.type) in wanted
                         or any(fold(v.type).startswith(w + ".") for w in wanted))
            code = done.code if vals or done.code != ResponseCode.SUCCESS else ResponseCode.VALUES_NOT_FOUND
            resp = Response(req.request_id, req.opcode, code, req.handle, values=vals, message=done.message,
                            trace=trace)
        if plain and done.code == ResponseCode.SUCCESS and done.expires_at > now:
            tail = self.codec.response_tail(resp.opcode, resp.code, resp.handle, resp.body())
            self._encoded[req.handle] = (done.expires_at, tail)
            if len(self._encoded) > ENCODED_ANSWERS:
                self._encoded.popitem(last=False)
        return resp
