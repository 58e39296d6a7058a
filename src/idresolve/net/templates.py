"""Fetching template records through the hierarchy for an authoritative node (the asyncio side of
``nodes.templates``).

A write at an enterprise node names its industry's template, published at a secondary node. The node's
write raises ``TemplateNeeded``; the surface (``net.services``, ``http.app``) awaits this fetcher, which
resolves each named template record like any identifier and hands what came back to the node's
``TemplateCache``, then the surface tries the write once more.

Where a template is asked for:
- ``holders``: prefix -> the node that holds it, asked directly (an enterprise node's own secondary, from
  the cluster plan: a secondary that is not registered with the top level is reachable only so);
- otherwise a walk from ``roots`` (the top-level nodes in a cluster; for ``idresolve node``, the
  ``--template-resolver`` addresses: a top-level node, a recursive node or the holder itself), following
  referrals with the recursive node's own pipeline (``nodes.pipeline``, ``net.upstream.drive``).

Outcomes per template: found -> learned (the node parses the version; a bad definition is a cached 202);
"not found" -> learned as absent (202); no answer, an error, or more than ``timeout_s`` -> the node keeps
an expired copy if it has one (a published version never changes), else ``TemplateUnavailable``: the
write is refused and nothing is stored (docs/templates.md, "When a template cannot be reached").
Concurrent writes needing the same template share one fetch. Every fetch walks past the walkers' caches
(the authoritative flag): the node's ``TemplateCache`` is the one cache, so a version published a moment
ago is found at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from ..core.codes import OpCode, ResponseCode
from ..core.errors import InvalidValue
from ..core.handles import fold
from ..core.messages import FLAG_AUTHORITATIVE, Request
from ..core.templates import TemplateRef
from ..nodes.authoritative import AuthoritativeNode
from ..nodes.pipeline import RecursiveNode
from ..nodes.recursive import Done, RecursiveResolver, Upstream
from ..nodes.templates import TemplateUnavailable
from .client import ClientPool
from .upstream import drive

log = logging.getLogger("idresolve.templates")

FETCH_TIMEOUT_S = 5.0
_WALK_CACHE_ENTRIES = 16  # the walkers' caches are never read (FLAG_AUTHORITATIVE): kept small


class TemplateFetcher:
    """Fetches the template records a write at ``node`` needs (see the module docstring)."""

    def __init__(self, node: AuthoritativeNode, pool: ClientPool, *, roots: Sequence[Upstream] = (),
                 holders: Mapping[str, Upstream] | None = None, hop_timeout_s: float = 2.0,
                 timeout_s: float = FETCH_TIMEOUT_S, clock: Callable[[], float] = time.time) -> None:
        if not roots and not holders:
            raise ValueError("a template fetcher needs top-level nodes to start from or holders to ask")
        self.node, self.pool = node, pool
        self.hop_timeout_s, self.timeout_s, self.clock = hop_timeout_s, timeout_s, clock
        self._walkers: dict[str, RecursiveNode] = {}
        self._roots = self._walker("", list(roots)) if roots else None
        for prefix, holder in (holders or {}).items():
            self._walkers[fold(prefix)] = self._walker(prefix, [holder])
        self._inflight: dict[tuple[str, int], asyncio.Future[None]] = {}
        self.fetches = 0  # records asked for (metrics, tests)

    def _walker(self, prefix: str, roots: list[Upstream]) -> RecursiveNode:
        resolver = RecursiveResolver(roots, cache_entries=_WALK_CACHE_ENTRIES)
        return RecursiveNode(f"{self.node.name} templates {prefix}".rstrip(), resolver)

    async def __call__(self, refs: Sequence[TemplateRef]) -> None:
        """Fetch every ``ref``; raises ``TemplateUnavailable`` naming those that could not be reached."""
        results = await asyncio.gather(*(self._shared(ref) for ref in refs), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for exc in failed:
            if not isinstance(exc, TemplateUnavailable):
                raise exc
        if failed:
            raise TemplateUnavailable("; ".join(str(e) for e in failed))

    async def _shared(self, ref: TemplateRef) -> None:
        try:
            if self.node.templates.get(ref, self.clock()) is not None:
                return  # another write fetched it meanwhile
        except InvalidValue:
            return  # ... and found there is none: the retry answers that
        key = ref.key
        running = self._inflight.get(key)
        if running is not None:
            await asyncio.shield(running)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            await self._fetch(ref)
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # marked retrieved: the waiters, if any, raise it themselves
            raise
        else:
            fut.set_result(None)
        finally:
            del self._inflight[key]
            if not fut.done():  # cancelled: the waiters try again themselves
                fut.cancel()

    async def _fetch(self, ref: TemplateRef) -> None:
        prefix = fold(ref.handle.split("/", 1)[0])
        walker = self._walkers.get(prefix, self._roots)
        if walker is None:
            raise TemplateUnavailable(f"template {ref} could not be fetched: this node knows no node to ask for "
                                      f"prefix {prefix}")
        self.fetches += 1
        why = ""
        done: Done | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                walk = walker.begin(Request(0, OpCode.RESOLUTION, ref.handle, FLAG_AUTHORITATIVE), self.clock())
                done = await drive(walk, self.pool, timeout_s=self.hop_timeout_s, clock=self.clock)
        except TimeoutError:
            why = f"no answer within {self.timeout_s:g} s"
        now = self.clock()
        if done is not None and done.code in (ResponseCode.SUCCESS, ResponseCode.HANDLE_NOT_FOUND):
            # The answer (a template, or why there is none) is cached; the write's retry reads it from there.
            with contextlib.suppress(InvalidValue):
                self.node.templates.learn(ref, done.values if done.code == ResponseCode.SUCCESS else None, now)
            return
        if done is not None:
            why = done.message or f"response code {done.code}"
        if self.node.templates.keep_stale(ref, now):
            log.warning("template %s could not be refreshed (%s): using the copy fetched before", ref, why)
            return
        raise TemplateUnavailable(f"template {ref} could not be reached ({why}); nothing was stored, try again "
                                  "later")
