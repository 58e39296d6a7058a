"""What the binary listeners host: a node's logic bound to a clock, its metrics and its listener's rules.

Every server shell (``net.server``) calls a ``Service`` through two methods, whatever the wire format:
- ``cached(handle) -> Answer | None``: the fast path, asked before a plain resolution (anonymous, no
  filter, no flag) is even decoded; the shell encodes the Answer once and keeps the bytes in its
  ``EncodedAnswers`` (valid while the node holds that very Answer);
- ``handle(request) -> Response | Awaitable[Response]`` for everything else (the recursive node awaits
  its upstream nodes).
``admission`` (``net.admission.Admission`` or None) tells the shells when to shed load. A write that needs
a template held elsewhere (``nodes.templates.TemplateNeeded``) is answered asynchronously: the service
awaits its ``templates`` fetcher (``net.templates``) and answers the write once more. Answers given by
``cached`` are counted in ``cached_counts`` (by response code; the metrics read them when scraped), not
observed one by one: on the hot path a dict update is all they cost.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..core.answers import Answer
from ..core.codes import OpCode, ResponseCode
from ..core.handles import fold
from ..core.messages import Request, Response, error_response
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.dispatch import Handler, answer
from ..nodes.pipeline import RecursiveNode, Walk
from ..nodes.recursive import Done
from ..nodes.templates import FetchTemplates, TemplateNeeded, TemplateUnavailable
from .admission import Admission
from .client import ClientPool
from .upstream import drive

WRITE_OPCODES = frozenset({OpCode.CREATE_HANDLE, OpCode.DELETE_HANDLE, OpCode.ADD_VALUE, OpCode.REMOVE_VALUE,
                           OpCode.MODIFY_VALUE, OpCode.BATCH_CREATE, OpCode.REGISTRY_SYNC})
#: Requests per second a recursive node accepts from one client address (token bucket; burst 20 %).
DEFAULT_CLIENT_RATE = 100_000.0
Observer = Callable[[int, int, float], None]  # (opcode, response code, seconds spent)


class Service(Protocol):
    name: str
    admission: Admission | None

    def cached(self, handle: str) -> Answer | None: ...

    def handle(self, request: Request) -> Response | Awaitable[Response]: ...


_DEFER = (TemplateNeeded,)


class AuthoritativeService:
    """An authoritative node behind a listener. ``allow_writes`` is False on a listener beyond loopback
    without TLS (credentials would cross the network in clear). ``templates`` fetches templates held
    elsewhere (None: a write naming one is refused, nothing stored)."""

    def __init__(self, node: AuthoritativeNode, *, extra: dict[int, Handler] | None = None,
                 observe: Observer | None = None, admission: Admission | None = None, allow_writes: bool = True,
                 clock: Callable[[], float] = time.time, templates: FetchTemplates | None = None) -> None:
        self.node = node
        self.templates = templates
        self.name = node.name
        self.extra = extra or {}
        self.observe = observe
        self.admission = admission
        self.allow_writes = allow_writes
        self.clock = clock
        self.cached_counts: dict[int, int] = {}
        self._answers = node.answers  # the node's own cache (it clears it in place): read on the hot path

    def cached(self, handle: str) -> Answer | None:
        # = self.node.cached(handle), two calls less per request (its check and fold inlined). The check
        # first: with several worker processes, another's acknowledged write must not be answered stale.
        node = self.node
        if node._counters[0] != node._seen_total:  # as in node.cached: another process wrote since
            node._resync()
        hit = self._answers.get(handle.lower() if handle.isascii() else fold(handle))
        if hit is not None:
            counts = self.cached_counts
            counts[hit.code] = counts.get(hit.code, 0) + 1
        return hit

    def handle(self, req: Request) -> Response | Awaitable[Response]:
        t0 = time.perf_counter() if self.observe is not None else 0.0  # timed only when observed
        if not self.allow_writes and (req.opcode in WRITE_OPCODES or req.auth is not None):
            resp = error_response(req.request_id, req.opcode, ResponseCode.INVALID_ADMIN,
                                  "credentials and writes are refused on this listener: it is beyond loopback "
                                  "and the binary protocol has no TLS (use the node's HTTPS interface)", req.handle)
        else:
            try:
                resp = answer(self.node, req, self.clock(), self.extra, defer=_DEFER)
            except TemplateNeeded as need:
                if self.templates is not None:
                    return self._with_templates(req, need, self.templates, t0)
                resp = _refused(req, need.without_resolver())
        return resp if self.observe is None else self._observed(req, resp, t0)

    async def _with_templates(self, req: Request, need: TemplateNeeded, fetch: FetchTemplates, t0: float) -> Response:
        """Fetch the templates a write needs, then answer it once more (a second need answers as it is)."""
        try:
            await fetch(need.refs)
        except TemplateUnavailable as exc:
            return self._observed(req, _refused(req, exc), t0)
        return self._observed(req, answer(self.node, req, self.clock(), self.extra), t0)

    def _observed(self, req: Request, resp: Response, t0: float) -> Response:
        if self.observe is not None:
            self.observe(req.opcode, resp.code, time.perf_counter() - t0)
        return resp


def _refused(req: Request, exc: TemplateUnavailable) -> Response:
    return error_response(req.request_id, req.opcode, exc.code, exc.message, req.handle)


class RecursiveService:
    """A recursive node behind its listeners: resolutions walk the hierarchy over ``pool``."""

    def __init__(self, node: RecursiveNode, pool: ClientPool, *, hop_timeout_s: float = 2.0,
                 observe: Observer | None = None, admission: Admission | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.name = node.name
        self.pool = pool
        self.hop_timeout_s = hop_timeout_s
        self.observe = observe
        self.admission = admission
        self.clock = clock
        self.cached_counts: dict[int, int] = {}
        #: The fast path without counting, for a surface that counts its requests itself (REST).
        self.lookup = node.fast_path(clock)

    def cached(self, handle: str) -> Answer | None:
        hit = self.lookup(handle)
        if hit is not None:
            counts = self.cached_counts
            counts[hit.code] = counts.get(hit.code, 0) + 1
        return hit

    def handle(self, req: Request) -> Response | Awaitable[Response]:
        if req.opcode != OpCode.RESOLUTION:
            return self.node.answer_other(req)
        t0 = time.perf_counter()
        walk = self.node.begin(req, self.clock())
        if walk.finished:  # answered from the cache, or refused at once
            return self._respond(req, walk.done, t0)
        return self._walk(req, walk, t0)

    async def _walk(self, req: Request, walk: Walk, t0: float) -> Response:
        return self._respond(req, await self._drive(walk), t0)

    def _respond(self, req: Request, done: Done, t0: float) -> Response:
        if self.observe is not None:
            self.observe(req.opcode, done.code, time.perf_counter() - t0)
        return self.node.respond(req, done)

    def _drive(self, walk: Walk) -> Awaitable[Done]:
        return drive(walk, self.pool, timeout_s=self.hop_timeout_s, clock=self.clock)

    async def resolve(self, req: Request) -> Done:
        """Resolve ``req`` and return how it ended (the REST surface shapes its own answer from it)."""
        return await self._drive(self.node.begin(req, self.clock()))
