"""The public recursive node's algorithm: walk top-level -> secondary -> enterprise, and cache.

Pure and I/O-free: ``RecursiveResolver.begin(handle, now)`` returns a ``Resolution``, a small state
machine. Its ``step`` is either ``Ask`` (send a RESOLUTION request to an upstream node) or ``Done`` (the
final answer). Whoever moves the messages feeds back ``on_response`` or ``on_timeout`` with the elapsed
time and looks at the next step; ``nodes.pipeline`` does that for every transport and scheduler. A
resolution takes at most ``max_hops`` steps (the Handle clients' loop guard: 40).

Caching (the resolvers' defaults): answers and referrals are cached by their TTL, capped at ``ttl_cap_s``
(3,600 s); negative answers only when ``negative_ttl_s > 0``; both caches are bounded LRUs and expiry is
checked at lookup. Cached answers are ``nodes.answers.Answer`` objects, replaced on every fresh walk.
A top-level node that times out is skipped for ``root_down_s`` and the next one is asked. A referral names
every server of the prefix's sites (a secondary node and its mirrors: one HS_SITE each, or several servers
in one): the first that is not known to be down is asked, and when it times out, fails to connect or is
too busy, the next one (a server that timed out is tried last for ``root_down_s``). A resolution that
fails says why in ``Done.failure`` (a ``Failure``), not only in its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from ..core.answers import Answer
from ..core.cache import TtlCache
from ..core.codes import ResponseCode
from ..core.errors import HandleError
from ..core.handles import derived_prefixes, fold, parse_handle
from ..core.messages import Hop, Response, slot_setters
from ..core.site import SiteInfo
from ..core.values import HS_SITE, HandleValue

TIMEOUT_CODE = -1  # in traces: the hop timed out
# Enum members read on hot paths, as module constants: a member read off its class costs ~75 ns on 3.11.
_SUCCESS, _VALUES_NOT_FOUND = ResponseCode.SUCCESS, ResponseCode.VALUES_NOT_FOUND
_PREFIX_REFERRAL, _HANDLE_NOT_FOUND = ResponseCode.PREFIX_REFERRAL, ResponseCode.HANDLE_NOT_FOUND


@dataclass(frozen=True, slots=True)
class Upstream:
    """A node a recursive node asks: its binary TCP endpoint, and the name and location its HS_SITE gives."""

    name: str
    host: str
    port: int
    location: str = ""
    address: str = field(init=False, compare=False, repr=False)  # "host:port", made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", f"{self.host}:{self.port}")


def upstreams_from_site(values: tuple[HandleValue, ...]) -> list[Upstream]:
    """The TCP endpoints of every HS_SITE among ``values``, in order (sites that do not parse are skipped)."""
    out: list[Upstream] = []
    for v in values:
        if v.type == HS_SITE:
            out.extend(_site_upstreams(v.data))
    return out


@lru_cache(maxsize=4096)
def _site_upstreams(data: bytes) -> tuple[Upstream, ...]:
    """One HS_SITE's targets, parsed once per distinct value: every cold walk meets the same few sites.
    A server's msgpack port is its site attribute ``idr-msgpack.<serverId>`` (its TCP interface is the
    native protocol's); sites written before there was one name the msgpack port as TCP."""
    try:
        site = SiteInfo.from_bytes(data)
    except HandleError:
        return ()
    attrs = dict(site.attributes)
    out = []
    for server in site.servers:
        ep = server.endpoint("TCP")
        if ep is None:
            continue
        port_text = attrs.get(f"idr-msgpack.{server.server_id}", "")
        port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else ep[1]
        out.append(Upstream(attrs.get("name", f"{ep[0]}:{port}"), ep[0], port, attrs.get("location", "")))
    return tuple(out)


class Failure(Enum):
    """Why a resolution ended without an answer from the node that holds the identifier."""

    UPSTREAM_TIMEOUT = "upstream-timeout"  # a node did not answer in time (REST: 504)
    NO_UPSTREAM = "no-upstream"  # every top-level node was tried and none answered (REST: 504)
    REFERRAL_LOOP = "referral-loop"
    TOO_MANY_REFERRALS = "too-many-referrals"
    BAD_REFERRAL = "bad-referral"  # a referral to a site with no TCP interface
    INVALID_HANDLE = "invalid-handle"  # the client's handle does not parse
    UPSTREAM_REFUSED = "upstream-refused"  # an upstream node answered with an error code


@dataclass(frozen=True, slots=True, init=False)
class Ask:
    target: Upstream
    handle: str
    hops: int

    # Written out (as ``core.messages.Request``'s): one per hop of every walk.
    def __init__(self, target: Upstream, handle: str, hops: int) -> None:
        s = _ASK_SLOTS
        s[0](self, target)
        s[1](self, handle)
        s[2](self, hops)


@dataclass(frozen=True, slots=True, init=False)
class Done:
    code: int
    handle: str
    values: tuple[HandleValue, ...] = ()
    message: str = ""
    trace: tuple[Hop, ...] = ()
    cached: bool = False  # answered from the cache, without asking anyone
    failure: Failure | None = None
    answer: Answer | None = None  # the Answer this is, as the resolver holds it in its cache (else None)

    # Written out: one ends every walk.
    def __init__(self, code: int, handle: str, values: tuple[HandleValue, ...] = (), message: str = "",
                 trace: tuple[Hop, ...] = (), cached: bool = False, failure: Failure | None = None,
                 answer: Answer | None = None) -> None:
        s = _DONE_SLOTS
        s[0](self, code)
        s[1](self, handle)
        s[2](self, values)
        s[3](self, message)
        s[4](self, trace)
        s[5](self, cached)
        s[6](self, failure)
        s[7](self, answer)


_ASK_SLOTS = slot_setters(Ask)
_DONE_SLOTS = slot_setters(Done)


class RecursiveResolver:
    def __init__(self, roots: list[Upstream], *, cache_entries: int = 100_000, ttl_cap_s: float = 3600.0,
                 negative_ttl_s: float = 0.0, max_hops: int = 40, root_down_s: float = 30.0) -> None:
        if not roots:
            raise ValueError("a recursive resolver needs at least one top-level node")
        self.roots = list(roots)
        self.answers: TtlCache[Answer] = TtlCache(cache_entries)
        self.referrals: TtlCache[tuple[Upstream, ...]] = TtlCache(max(1000, cache_entries // 10))
        self.ttl_cap_s, self.negative_ttl_s = ttl_cap_s, negative_ttl_s
        self.max_hops, self.root_down_s = max_hops, root_down_s
        self.root_down_until: dict[str, float] = {}
        self.server_down_until: dict[str, float] = {}  # servers below the top level that timed out
        self._referral_hops: dict[str, Hop] = {}  # prefix -> its cached referral's trace step (immutable)

    def usable(self, targets: tuple[Upstream, ...], now: float) -> tuple[Upstream, ...]:
        """``targets`` with the servers known to be down moved to the end (in order otherwise)."""
        down = self.server_down_until
        if not down:
            return targets
        for address in [a for a, until in down.items() if until <= now]:
            del down[address]
        up = tuple(t for t in targets if t.address not in down)
        return up + tuple(t for t in targets if t.address in down)

    def ttl_of(self, values: tuple[HandleValue, ...]) -> float:
        """The shortest TTL of ``values``, capped at ``ttl_cap_s``; 0 for none (not cached)."""
        if not values:
            return 0.0
        ttl = self.ttl_cap_s
        for v in values:  # a loop, not min() of a list comprehension: every answer a walk brings comes here
            if v.ttl_s < ttl:
                ttl = v.ttl_s
        return float(ttl)

    def cached_referral_hop(self, prefix: str) -> Hop:
        """The trace's step for a referral to ``prefix`` found in the cache: made once per prefix (most walks
        start with one), bounded as the referral cache is."""
        hop = self._referral_hops.get(prefix)
        if hop is None:
            if len(self._referral_hops) >= self.referrals.max_entries:
                self._referral_hops.clear()
            hop = self._referral_hops[prefix] = Hop("cache", f"referral for {prefix}", ResponseCode.PREFIX_REFERRAL,
                                                    0, True)
        return hop

    def begin(self, handle: str, now: float, *, bypass_cache: bool = False) -> Resolution:
        return Resolution(self, handle, now, bypass_cache)

    def healthy_roots(self, now: float, tried: set[str]) -> list[Upstream]:
        if not tried and not self.root_down_until:
            return self.roots  # the usual case: every root fresh and up
        down = self.root_down_until
        for address in [a for a, until in down.items() if until <= now]:
            del down[address]  # back up: forget it, so the usual case applies again
        fresh = [r for r in self.roots if r.address not in tried]
        up = [r for r in fresh if self.root_down_until.get(r.address, 0.0) <= now]
        return up or fresh  # when every root looks down, try them anyway


class Resolution:
    """One handle's walk: what to ask next (``step``: an ``Ask``) until it is ``Done``."""

    __slots__ = ("resolver", "handle", "now", "bypass_cache", "step", "hops", "trace", "tried_roots", "asked",
                 "from_cached_referral", "current_is_root", "alternates", "key", "prefix")

    def __init__(self, resolver: RecursiveResolver, handle: str, now: float, bypass_cache: bool = False) -> None:
        # Written out rather than a dataclass's generated __init__ with default factories: one is made for
        # every resolution that misses a recursive node's fast path (the simulator's hottest allocation).
        self.resolver, self.handle, self.now, self.bypass_cache = resolver, handle, now, bypass_cache
        self.step: Ask | Done | None = None
        self.hops = 0
        self.trace: list[Hop] = []
        self.tried_roots: set[str] = set()
        self.asked: set[tuple[str, str]] = set()
        self.from_cached_referral: str | None = None
        self.current_is_root = False
        self.alternates: tuple[Upstream, ...] = ()  # the other servers of the site being asked, in order
        self.key = ""
        self.prefix = ""
        self._start()

    def __repr__(self) -> str:
        return f"Resolution({self.handle!r}, step={self.step!r}, hops={self.hops})"

    def _start(self) -> None:
        try:
            h = parse_handle(self.handle)
        except HandleError as exc:
            self.step = Done(exc.code, self.handle, message=exc.message, failure=Failure.INVALID_HANDLE)
            return
        self.key = h.key
        self.prefix = h.prefix
        r = self.resolver
        if not self.bypass_cache:
            hit = r.answers.get(h.key, self.now)
            if hit is not None:
                self.trace.append(Hop("cache", "", hit.code, 0, True))
                self.step = Done(hit.code, self.handle, hit.values, trace=tuple(self.trace), cached=True,
                                 answer=hit)
                return
            for p in reversed(derived_prefixes(h.prefix)):
                targets = r.referrals.get(fold(p), self.now)
                if targets:
                    self.from_cached_referral = fold(p)
                    self.trace.append(r.cached_referral_hop(p))
                    ordered = r.usable(targets, self.now)
                    self._ask(ordered[0], root=False, alternates=ordered[1:])
                    return
        self._ask_root()

    # -- moves ----------------------------------------------------------------------------------------
    def _ask(self, target: Upstream, *, root: bool, alternates: tuple[Upstream, ...] = ()) -> None:
        self.current_is_root = root
        self.alternates = alternates
        if root:
            self.tried_roots.add(target.address)
        self.step = Ask(target, self.handle, self.hops)

    def _ask_root(self) -> None:
        roots = self.resolver.healthy_roots(self.now, self.tried_roots)
        if not roots:
            self._done(ResponseCode.ERROR, message="no top-level node answered", failure=Failure.NO_UPSTREAM)
            return
        self._ask(roots[0], root=True)

    def _done(self, code: int, values: tuple[HandleValue, ...] = (), message: str = "", *,
              failure: Failure | None = None, answer: Answer | None = None) -> None:
        self.step = Done(code, self.handle, values, message, tuple(self.trace), False, failure, answer)

    def _cache(self, code: int, values: tuple[HandleValue, ...], ttl_s: float, now: float) -> Answer | None:
        if ttl_s <= 0:
            return None
        answer = Answer(code, values, expires_at=now + ttl_s)
        self.resolver.answers.put(self.key, answer, ttl_s, now)
        return answer

    # -- feedback from the I/O layer ---------------------------------------------------------------------
    def on_response(self, resp: Response, now: float, elapsed_us: int) -> None:
        self.now = now
        ask = self.step
        if not isinstance(ask, Ask):
            raise RuntimeError("on_response without an outstanding Ask")
        target = ask.target
        r = self.resolver
        self.hops += 1
        self.trace.append(Hop(resp.node or target.name, target.address, resp.code, elapsed_us))
        code = resp.code
        if code in (_SUCCESS, _VALUES_NOT_FOUND):
            answer = self._cache(code, resp.values, r.ttl_of(resp.values), now)
            self._done(code, resp.values, answer=answer)
        elif code == _PREFIX_REFERRAL:
            targets = upstreams_from_site(resp.values)
            if not targets:
                self._done(ResponseCode.ERROR, message=f"{target.name} referred to a site with no TCP interface",
                           failure=Failure.BAD_REFERRAL)
                return
            if self.hops >= r.max_hops:
                self._done(ResponseCode.RECURSION_COUNT_TOO_HIGH, message=f"more than {r.max_hops} referrals",
                           failure=Failure.TOO_MANY_REFERRALS)
                return
            ordered = r.usable(tuple(targets), now)
            nxt = ordered[0]
            if (nxt.address, fold(resp.handle)) in self.asked or nxt.address == target.address:
                self._done(ResponseCode.RECURSION_COUNT_TOO_HIGH, message=f"referral loop at {resp.handle}",
                           failure=Failure.REFERRAL_LOOP)
                return
            self.asked.add((nxt.address, fold(resp.handle)))
            referred = resp.handle.split("/", 1)[1] if "/" in resp.handle else resp.handle
            r.referrals.put(fold(referred), tuple(targets), r.ttl_of(resp.values), now)
            self._ask(nxt, root=False, alternates=ordered[1:])
        elif code == _HANDLE_NOT_FOUND:
            answer = self._cache(code, (), min(r.negative_ttl_s, r.ttl_cap_s), now)
            self._done(code, message=resp.message, answer=answer)
        elif code == ResponseCode.SERVER_NOT_RESP and self.from_cached_referral is not None:
            r.referrals.remove(self.from_cached_referral)  # stale referral: start again from the top
            self.from_cached_referral = None
            self._ask_root()
        elif code == ResponseCode.SERVER_TOO_BUSY and self.current_is_root:
            self._ask_root()
        elif code == ResponseCode.SERVER_TOO_BUSY and self.alternates:
            self._next_alternate()
        else:
            self._done(code, message=resp.message, failure=Failure.UPSTREAM_REFUSED)

    def on_timeout(self, now: float, elapsed_us: int) -> None:
        self.now = now
        ask = self.step
        if not isinstance(ask, Ask):
            raise RuntimeError("on_timeout without an outstanding Ask")
        self.trace.append(Hop(ask.target.name, ask.target.address, TIMEOUT_CODE, elapsed_us))
        if self.current_is_root:
            self.resolver.root_down_until[ask.target.address] = now + self.resolver.root_down_s
            self._ask_root()
        elif self.alternates:
            self.resolver.server_down_until[ask.target.address] = now + self.resolver.root_down_s
            self._next_alternate()
        else:
            if self.from_cached_referral is not None:
                self.resolver.referrals.remove(self.from_cached_referral)
            self._done(ResponseCode.ERROR, message=f"{ask.target.name} ({ask.target.address}) did not answer",
                       failure=Failure.UPSTREAM_TIMEOUT)

    def _next_alternate(self) -> None:
        """Ask the next server of the same site(s): a mirror when the primary failed, or the reverse."""
        nxt, rest = self.alternates[0], self.alternates[1:]
        self.asked.add((nxt.address, fold(self.handle)))
        self._ask(nxt, root=False, alternates=rest)
