"""The one resolve pipeline of a recursive node: from a client's ``Request`` to its ``Response``, for every
surface (REST, the binary protocol, any later protocol) and every way of moving messages (asyncio on real
sockets, the virtual-time simulator).

    walk = node.begin(request, now)            # a Walk: one Resolution and the request it answers
    while (hop := walk.next_hop(now)) is not None:
        upstream, upstream_request = hop       # send it; then, with the time it came back:
        walk.answered(response, now)           # ... or walk.timed_out(now)
    response = node.respond(request, walk.done)

The mover is a loop of a few lines (``net.upstream.drive`` on asyncio); everything else, the caching,
referrals, loop guard, failover, filters and the shape of the answer, is here and in ``nodes.recursive``.
``RecursiveNode.cached`` is the fast path the binary surfaces ask before decoding a plain resolution.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.answers import Answer, select
from ..core.codes import OpCode, ResponseCode
from ..core.handles import fold
from ..core.messages import FLAG_AUTHORITATIVE, FLAG_TRACE, Request, Response, error_response
from .recursive import Ask, Done, RecursiveResolver, Resolution, Upstream

# Enum members read on hot paths, as module constants: a member read off its class costs ~75 ns on 3.11.
_SUCCESS, _RESOLUTION = ResponseCode.SUCCESS, OpCode.RESOLUTION


class Walk:
    """Drives one ``Resolution`` for one client request: hands out each hop, takes back its outcome."""

    __slots__ = ("node", "request", "resolution", "_sent_at")

    def __init__(self, node: RecursiveNode, request: Request, resolution: Resolution) -> None:
        self.node, self.request, self.resolution = node, request, resolution
        self._sent_at = 0.0

    def next_hop(self, now: float) -> tuple[Upstream, Request] | None:
        """The upstream node to ask and the request to send it, or None when the resolution is done."""
        step = self.resolution.step
        if not isinstance(step, Ask):
            return None
        self._sent_at = now
        self.node.upstream_requests += 1
        # No TRACE flag upstream: hops are named from the HS_SITE, and the upstream's answer cache (which
        # serves plain requests only) applies.
        return step.target, Request(0, _RESOLUTION, step.handle, hops=step.hops)

    def answered(self, response: Response, now: float) -> None:
        self.resolution.on_response(response, now, int((now - self._sent_at) * 1e6))

    def timed_out(self, now: float) -> None:
        """The hop's request or its answer was lost, the connection failed, or no answer came in time."""
        self.resolution.on_timeout(now, int((now - self._sent_at) * 1e6))

    @property
    def finished(self) -> bool:
        """True once the resolution has its answer (at once, when it came from the cache)."""
        return isinstance(self.resolution.step, Done)

    @property
    def done(self) -> Done:
        step = self.resolution.step
        if not isinstance(step, Done):
            raise RuntimeError("the resolution has not finished")
        return step


class RecursiveNode:
    """A public recursive node: resolves any identifier by walking the hierarchy, through ``resolver``."""

    def __init__(self, name: str, resolver: RecursiveResolver) -> None:
        self.name = name
        self.resolver = resolver
        self.upstream_requests = 0

    def fast_path(self, clock: Callable[[], float]) -> Callable[[str], Answer | None]:
        """``cached(handle)``: the fresh cached Answer to a plain resolution of ``handle`` at ``clock()``
        (counted as a cache hit), else None (not counted: the resolution that follows counts the miss).
        One call per request on the hottest path, hence a closure."""
        answers, success = self.resolver.answers, ResponseCode.SUCCESS
        fresh, stats = answers.fresh, answers.stats

        def cached(handle: str) -> Answer | None:
            hit = fresh(handle.lower() if handle.isascii() else fold(handle), clock())  # fold(), inlined
            if hit is None or hit.code != success:
                return None  # a cached failure is answered (and counted) by the resolution that follows
            stats.hits += 1
            return hit

        return cached

    def cached(self, handle: str, now: float) -> Answer | None:
        """``fast_path`` at ``now``."""
        return self.fast_path(lambda: now)(handle)

    def begin(self, request: Request, now: float) -> Walk:
        """Start resolving ``request`` (a RESOLUTION); ``FLAG_AUTHORITATIVE`` walks past every cache."""
        bypass = bool(request.flags & FLAG_AUTHORITATIVE)
        return Walk(self, request, self.resolver.begin(request.handle, now, bypass_cache=bypass))

    def respond(self, request: Request, done: Done) -> Response:
        """The client's answer: filters applied, the trace and node name when asked for."""
        code, values = done.code, done.values
        if code == _SUCCESS and (request.indexes or request.types):
            code, values = select(values, request.indexes, request.types)
        if request.flags & FLAG_TRACE:
            return Response(request.request_id, request.opcode, code, request.handle, values, done.message,
                            self.name, done.trace)
        return Response(request.request_id, request.opcode, code, request.handle, values, done.message)

    def answer_other(self, request: Request) -> Response:
        """What a recursive node says to anything but a resolution."""
        if request.opcode == OpCode.GET_SITEINFO:
            return Response(request.request_id, request.opcode, ResponseCode.SUCCESS, node=self.name)
        return error_response(request.request_id, request.opcode, ResponseCode.OPERATION_NOT_SUPPORTED,
                              "a recursive node only resolves; write to the node that holds the prefix")
