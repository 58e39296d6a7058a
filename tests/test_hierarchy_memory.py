"""The whole hierarchy on an in-memory network: pure nodes, encoded bytes moved between them, no sockets.

The minimal topology (config/minimal.toml) is planned as the cluster plans it; each authoritative node is
a pure ``AuthoritativeNode`` on a ``MemoryStore`` at the address its HS_SITE names. Every exchange is the
binary protocol's: the request is encoded with ``Codec`` and decoded on the "server", answered by
``nodes.dispatch.answer``, and the answer encoded and decoded on the "client". Allocation runs the real
``cluster.bootstrap.bootstrap`` with a blocking client whose socket is this network. A
``RecursiveResolver``'s steps are driven by routing each ``Ask`` to the node its ``Upstream`` names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from clusterutil import MINIMAL
from idresolve.cluster import bootstrap as bootstrap_mod
from idresolve.cluster.bootstrap import DEMO_PREFIX, DEMO_SUFFIX, BootstrapReport
from idresolve.cluster.credentials import secret_for
from idresolve.cluster.plan import ClusterPlan, identity_of, make_plan
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.events import plain_request
from idresolve.core.handles import fold, prefix_handle
from idresolve.core.messages import FLAG_TRACE, Request, Response
from idresolve.core.records import Record
from idresolve.core.site import Interface, Server, SiteInfo
from idresolve.core.topology import load_topology
from idresolve.core.values import HandleValue, site_value, string_value
from idresolve.core.wire import Codec, decode_message
from idresolve.core.wire_connection import ServerConnection
from idresolve.net.blocking import BlockingClient
from idresolve.net.replicator import Replicator
from idresolve.net.services import AuthoritativeService, RecursiveService
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import ensure_prefix_record, prefix_record
from idresolve.nodes.dispatch import Handler, answer
from idresolve.nodes.pipeline import RecursiveNode
from idresolve.nodes.recursive import TIMEOUT_CODE, Ask, Done, RecursiveResolver, Upstream
from idresolve.nodes.replication import FLAG_SYNC_DELETE, SyncState, make_sync_handler
from idresolve.store.memory import MemoryStore

MASTER = "memory-network-master-secret"
T0 = 1_700_000_000.0  # wall clock of the authoritative nodes (stamps)
DEMO = f"{DEMO_PREFIX}/{DEMO_SUFFIX}"
BASE_PORT = 30000  # never bound: addresses only name nodes on the in-memory network


# --------------------------------------------------------------------------------------------------
# The in-memory network


@dataclass
class MemoryNet:
    nodes: dict[str, tuple[AuthoritativeNode, dict[int, Handler] | None]] = field(default_factory=dict)
    now: float = T0
    client_codec: Codec = field(default_factory=Codec)
    server_codec: Codec = field(default_factory=Codec)
    exchanges: int = 0

    def add(self, address: str, node: AuthoritativeNode, extra: dict[int, Handler] | None = None) -> None:
        self.nodes[address] = (node, extra)

    def exchange(self, address: str, req: Request) -> Response:
        """One request/answer over the wire format: encode, decode, answer, encode, decode."""
        self.exchanges += 1
        on_server = decode_message(self.client_codec.encode(req))
        assert isinstance(on_server, Request) and on_server == req
        node, extra = self.nodes[address]
        resp = answer(node, on_server, self.now, extra)
        on_client = decode_message(self.server_codec.encode(resp))
        assert isinstance(on_client, Response) and on_client.request_id == req.request_id
        return on_client

    def client_class(self) -> Callable[..., BlockingClient]:
        net = self

        class MemoryClient(BlockingClient):
            """``BlockingClient`` whose connection is the in-memory network (a fake, not a mock)."""

            def connect(self) -> None:
                if f"{self.host}:{self.port}" not in net.nodes:
                    raise AssertionError(f"nothing listens at {self.host}:{self.port}")

            def close(self) -> None:
                pass

            def call(self, req: Request) -> Response:
                self.connect()
                if req.auth is None and self.auth is not None:
                    req = replace(req, auth=self.auth)
                rid = self._wire.next_id(None)
                try:
                    return net.exchange(f"{self.host}:{self.port}", replace(req, request_id=rid))
                finally:
                    self._wire.forget(rid)

        return MemoryClient


@dataclass
class Hierarchy:
    plan: ClusterPlan
    net: MemoryNet
    nodes: dict[str, AuthoritativeNode]
    sync_states: dict[str, SyncState]
    report: BootstrapReport

    def addr(self, name: str) -> str:
        n = self.plan.node(name)
        return f"{n.dial_host}:{n.tcp_port}"

    def target(self, name: str) -> Upstream:
        return self.plan.node(name).upstream()

    def tops(self) -> list[Upstream]:
        return [self.target("top-beijing"), self.target("top-nanjing")]

    def client(self, name: str, prefix: str) -> BlockingClient:
        n = self.plan.node(name)
        cls = self.net.client_class()
        return cls(n.dial_host, n.tcp_port, auth=(identity_of(prefix), secret_for(MASTER, prefix).encode()))


def _auth(prefix: str) -> tuple[str, bytes]:
    return (identity_of(prefix), secret_for(MASTER, prefix).encode())


def site_of(node: AuthoritativeNode, prefix: str) -> HandleValue | None:
    """The HS_SITE value held for ``0.NA/<prefix>`` at ``node`` (a delegated prefix), if any."""
    record = node.store.get(fold(prefix_handle(prefix)))
    sites = record.of_type("HS_SITE") if record is not None else []
    return sites[0] if sites else None


async def _replicate(h: Hierarchy, source: str, dest: str, pool: Any = None) -> Replicator:
    """``net.replicator.Replicator`` of ``source`` started (it offers every registry record it holds), run
    until the peer has answered every push (bounded), then stopped."""
    rep = Replicator(h.nodes[source], h.sync_states[source], [h.target(dest)], pool or MemoryPool(h.net),
                     _auth("88"), timeout_s=1.0)
    rep.start()
    try:
        for _ in range(1_000):  # bounded: each pass lets the push task take its next batch
            if not any(rep.pending.values()):
                break
            await asyncio.sleep(0.001)  # (a retry waits its backoff on the loop's timers)
        assert not any(rep.pending.values()), rep.pending
    finally:
        await rep.stop()
    return rep


def replicate_registry(h: Hierarchy, source: str, dest: str) -> list[str]:
    """Replicate ``source``'s registry to ``dest`` with the project's replicator; the handles pushed."""
    rep = asyncio.run(_replicate(h, source, dest))
    registry = [r for r in (h.nodes[source].store.get(fold(x)) for x in h.nodes[source].store.list_handles("0.na"))
                if r is not None and fold(r.handle) != rep.own_key]
    assert rep.pushed == len(registry)  # every registry record but the node's own 0.NA/88, once each
    return [r.handle for r in registry]


def build_hierarchy(monkeypatch: pytest.MonkeyPatch) -> Hierarchy:
    topology = load_topology(MINIMAL)
    plan = make_plan(topology, base_port=BASE_PORT, workers=1)
    net = MemoryNet()
    nodes: dict[str, AuthoritativeNode] = {}
    states: dict[str, SyncState] = {}
    for n in plan.nodes:
        if n.role == "recursive":
            continue
        assert n.spec.prefix is not None
        node = AuthoritativeNode(MemoryStore(), n.prefixes, name=n.name)
        ensure_prefix_record(node, n.spec.prefix, secret_for(MASTER, n.spec.prefix), T0, site=n.site())
        extra = None
        if n.role == "top":
            states[n.name] = SyncState()
            extra = make_sync_handler(states[n.name], n.spec.prefix)
        nodes[n.name] = node
        net.add(f"{n.dial_host}:{n.tcp_port}", node, extra)
    monkeypatch.setattr(bootstrap_mod, "BlockingClient", net.client_class())
    report = bootstrap_mod.bootstrap(plan, MASTER)
    h = Hierarchy(plan, net, nodes, states, report)
    pushed = replicate_registry(h, "top-beijing", "top-nanjing")
    assert pushed == ["0.NA/88.118"], pushed  # the one secondary prefix the top level allocated
    return h


@pytest.fixture
def hier(monkeypatch: pytest.MonkeyPatch) -> Hierarchy:
    return build_hierarchy(monkeypatch)


# --------------------------------------------------------------------------------------------------
# Driving a resolution

Responder = Callable[[Ask], Response | None]  # None: the request timed out


def route(where: Hierarchy | MemoryNet, down: frozenset[str] | set[str] = frozenset()) -> Responder:
    net = where.net if isinstance(where, Hierarchy) else where

    def respond(ask: Ask) -> Response | None:
        if ask.target.address in down or ask.target.address not in net.nodes:
            return None
        req = Request(0, OpCode.RESOLUTION, ask.handle, FLAG_TRACE, hops=ask.hops)
        return net.exchange(ask.target.address, req)

    return respond


def drive(resolver: RecursiveResolver, handle: str, respond: Responder, now: float, *,
          bypass_cache: bool = False, max_steps: int = 500) -> tuple[Done, list[Ask]]:
    """Run one resolution to its end; every step bounded so a looping resolver fails instead of hanging."""
    res = resolver.begin(handle, now, bypass_cache=bypass_cache)
    asks: list[Ask] = []
    for _ in range(max_steps):
        step = res.step
        if isinstance(step, Done):
            return step, asks
        assert isinstance(step, Ask)
        asks.append(step)
        resp = respond(step)
        if resp is None:
            res.on_timeout(now, 2_000_000)
        else:
            res.on_response(resp, now, 1500)
    raise AssertionError(f"resolution of {handle} did not finish within {max_steps} steps")


def names(asks: list[Ask]) -> list[str]:
    return [a.target.name for a in asks]


def register(h: Hierarchy, holder: str, prefix: str, handle: str, values: tuple[HandleValue, ...]) -> None:
    with h.client(holder, prefix) as c:
        resp = c.create(handle, values, overwrite=True)
    assert resp.code == ResponseCode.SUCCESS, resp


ENT, SEC, TOP, DR = "ent-tyre-qingdao-8", "sec-tyre-qingdao", "top-beijing", "top-nanjing"


# --------------------------------------------------------------------------------------------------
# Bootstrap through the nodes' own APIs


def test_bootstrap_allocates_through_the_apis_and_is_idempotent(hier: Hierarchy) -> None:
    assert sorted(hier.report.created) == ["0.NA/88.118", "0.NA/88.118.8", "0.NA/88.118.9"]
    assert hier.report.demo == DEMO
    top, sec, ent = hier.nodes[TOP], hier.nodes[SEC], hier.nodes[ENT]
    assert site_of(top, "88.118") is not None and site_of(top, "88.120") is None  # 88.120 is not connected
    assert site_of(sec, "88.118.8") is not None  # delegated to the enterprise node
    assert "88.118.9" in sec.hosted and site_of(sec, "88.118.9") is None  # hosted: no HS_SITE
    assert ent.store.get(fold(DEMO)) is not None
    # The DR top-level node holds the same registry after replication.
    assert site_of(hier.nodes[DR], "88.118") == site_of(top, "88.118")
    again = bootstrap_mod.bootstrap(hier.plan, MASTER)
    assert again.created == []
    assert sorted(again.unchanged) == ["0.NA/88.118", "0.NA/88.118.8", "0.NA/88.118.9"]


def test_secondary_admin_cannot_create_identifiers_under_an_enterprise_prefix(hier: Hierarchy) -> None:
    """The parent keeps every right on an allocated prefix record except ADD_HANDLE (bootstrap docstring)."""
    with hier.client(SEC, "88.118") as c:
        resp = c.create("88.118.9/ByParent", (string_value(1, "URL", "https://x.example"),))
    assert resp.code == ResponseCode.INVALID_ADMIN


# --------------------------------------------------------------------------------------------------
# Resolution


def test_cold_resolution_walks_top_secondary_enterprise(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, DEMO, route(hier), 100.0)
    assert done.code == ResponseCode.SUCCESS and not done.cached
    assert names(asks) == [TOP, SEC, ENT]
    assert [hop.code for hop in done.trace] == [ResponseCode.PREFIX_REFERRAL, ResponseCode.PREFIX_REFERRAL,
                                                 ResponseCode.SUCCESS]
    assert [hop.node for hop in done.trace] == [TOP, SEC, ENT]
    assert [hop.address for hop in done.trace] == [hier.addr(TOP), hier.addr(SEC), hier.addr(ENT)]
    urls = [v.data for v in done.values if v.type == "URL"]
    assert urls == [f"https://example.com/products/{DEMO_SUFFIX}".encode()]


def test_case_insensitive_match_echoes_the_clients_spelling(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, _ = drive(resolver, DEMO.lower(), route(hier), 100.0)
    assert done.code == ResponseCode.SUCCESS and done.handle == DEMO.lower()


def test_second_resolution_is_answered_from_cache(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    first, _ = drive(resolver, DEMO, route(hier), 100.0)
    before = hier.net.exchanges
    done, asks = drive(resolver, DEMO, route(hier), 101.0)
    assert asks == [] and hier.net.exchanges == before
    assert done.cached and done.code == ResponseCode.SUCCESS and done.values == first.values
    assert [(h.node, h.cached) for h in done.trace] == [("cache", True)]


def test_cached_referral_skips_the_top(hier: Hierarchy) -> None:
    register(hier, ENT, "88.118.8", "88.118.8/Other", (string_value(1, "URL", "https://other.example"),))
    register(hier, SEC, "88.118.9", "88.118.9/Hosted1", (string_value(1, "URL", "https://h.example"),))
    resolver = RecursiveResolver(hier.tops())
    drive(resolver, DEMO, route(hier), 100.0)
    done, asks = drive(resolver, "88.118.8/Other", route(hier), 101.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [ENT]  # referral for 88.118.8 cached
    assert done.trace[0].cached and done.trace[0].code == ResponseCode.PREFIX_REFERRAL
    done, asks = drive(resolver, "88.118.9/Hosted1", route(hier), 102.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [SEC]  # referral for 88.118 cached


def test_ttl_expiry_rewalks_and_the_cap_is_3600(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())  # default cap 3,600 s; values carry 86,400 s
    t = 1000.0
    drive(resolver, DEMO, route(hier), t)
    done, asks = drive(resolver, DEMO, route(hier), t + 3599)
    assert done.cached and asks == []
    done, asks = drive(resolver, DEMO, route(hier), t + 3601)
    assert not done.cached and names(asks) == [TOP, SEC, ENT]  # referrals expired too: from the top


def test_ttl_of_caps_and_takes_the_shortest(hier: Hierarchy) -> None:
    long_v, short_v = string_value(1, "URL", "u", ttl_s=86_400), string_value(2, "DESC", "d", ttl_s=60)
    assert RecursiveResolver(hier.tops()).ttl_of((long_v,)) == 3600
    assert RecursiveResolver(hier.tops()).ttl_of((long_v, short_v)) == 60
    assert RecursiveResolver(hier.tops(), ttl_cap_s=10).ttl_of((long_v, short_v)) == 10
    assert RecursiveResolver(hier.tops()).ttl_of(()) == 0


def test_short_value_ttl_expires_before_the_referral(hier: Hierarchy) -> None:
    register(hier, ENT, "88.118.8", "88.118.8/Short",
             (string_value(1, "URL", "https://s.example", ttl_s=60),))
    resolver = RecursiveResolver(hier.tops())
    t = 5000.0
    _, asks = drive(resolver, "88.118.8/Short", route(hier), t)
    assert names(asks) == [TOP, SEC, ENT]
    done, asks = drive(resolver, "88.118.8/Short", route(hier), t + 59)
    assert done.cached and asks == []
    done, asks = drive(resolver, "88.118.8/Short", route(hier), t + 61)
    assert not done.cached and names(asks) == [ENT]  # the answer expired, the referral (3,600 s) did not


def test_negative_answers_are_not_cached_by_default(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, "88.118.8/Missing", route(hier), 10.0)
    assert done.code == ResponseCode.HANDLE_NOT_FOUND and names(asks) == [TOP, SEC, ENT]
    done, asks = drive(resolver, "88.118.8/Missing", route(hier), 11.0)
    assert done.code == ResponseCode.HANDLE_NOT_FOUND and not done.cached and names(asks) == [ENT]


def test_negative_answers_are_cached_when_negative_ttl_is_set(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops(), negative_ttl_s=30)
    drive(resolver, "88.118.8/Missing", route(hier), 10.0)
    done, asks = drive(resolver, "88.118.8/Missing", route(hier), 39.0)
    assert done.code == ResponseCode.HANDLE_NOT_FOUND and done.cached and asks == []
    # A record registered meanwhile stays invisible until the negative entry expires.
    register(hier, ENT, "88.118.8", "88.118.8/Missing", (string_value(1, "URL", "https://late.example"),))
    done, asks = drive(resolver, "88.118.8/Missing", route(hier), 39.5)
    assert done.code == ResponseCode.HANDLE_NOT_FOUND and done.cached
    done, asks = drive(resolver, "88.118.8/Missing", route(hier), 41.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [ENT]


def test_answer_cache_is_a_bounded_lru(hier: Hierarchy) -> None:
    handles = [f"88.118.8/Lru{i}" for i in range(5)]
    for hd in handles:
        register(hier, ENT, "88.118.8", hd, (string_value(1, "URL", f"https://{hd[-4:]}.example"),))
    resolver = RecursiveResolver(hier.tops(), cache_entries=3)
    for hd in handles:
        assert drive(resolver, hd, route(hier), 50.0)[0].code == ResponseCode.SUCCESS
    assert len(resolver.answers) == 3
    assert resolver.answers.stats.evicted == 2
    done, asks = drive(resolver, handles[-1], route(hier), 51.0)
    assert done.cached and asks == []
    done, asks = drive(resolver, handles[0], route(hier), 52.0)  # least recently used: evicted
    assert not done.cached and names(asks) == [ENT]
    assert len(resolver.answers) == 3


def test_hosted_enterprise_is_answered_by_the_secondary(hier: Hierarchy) -> None:
    register(hier, SEC, "88.118.9", "88.118.9/Hosted1", (string_value(1, "URL", "https://h.example"),))
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, "88.118.9/Hosted1", route(hier), 1.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [TOP, SEC]
    assert [(h.node, h.code) for h in done.trace] == [(TOP, 303), (SEC, 1)]


@pytest.mark.parametrize("handle,path", [
    ("88.118.77/X", [TOP, SEC]),  # enterprise prefix never allocated by the secondary
    ("88.999/X", [TOP]),  # secondary prefix never allocated by the top-level node
    ("88.120/X", [TOP]),  # a secondary that is not connected is not resolvable nationally
])
def test_unallocated_prefix_gives_100(hier: Hierarchy, handle: str, path: list[str]) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, handle, route(hier), 1.0)
    assert done.code == ResponseCode.HANDLE_NOT_FOUND and names(asks) == path


def test_invalid_handle_is_answered_without_asking(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, "no-slash-here", route(hier), 1.0)
    assert done.code == ResponseCode.INVALID_HANDLE and asks == []


# --------------------------------------------------------------------------------------------------
# Referral loops and the hop limit


def _site_at(target: Upstream) -> SiteInfo:
    return SiteInfo((Server(1, target.host, (Interface("TCP", target.port),)),),
                    attributes=(("name", target.name),))


def test_node_referring_to_itself_ends_with_recursion_count_too_high() -> None:
    net = MemoryNet()
    me = Upstream("loopy-top", "127.0.0.1", 40001)
    node = AuthoritativeNode(MemoryStore(), ["88"], name=me.name)
    node.bootstrap_record(prefix_record("88", "s", now=T0))
    node.bootstrap_record(prefix_record("88.118", "s2", site=_site_at(me), now=T0))
    net.add(me.address, node)
    resolver = RecursiveResolver([me])
    done, asks = drive(resolver, DEMO, route(net), 1.0)
    assert done.code == ResponseCode.RECURSION_COUNT_TOO_HIGH
    assert 1 <= len(asks) <= resolver.max_hops


def test_two_nodes_referring_to_each_other_end_with_recursion_count_too_high() -> None:
    net = MemoryNet()
    top_t, sec_t = Upstream("top-x", "127.0.0.1", 40001), Upstream("sec-x", "127.0.0.1", 40003)
    top = AuthoritativeNode(MemoryStore(), ["88"], name=top_t.name)
    top.bootstrap_record(prefix_record("88.118", "s", site=_site_at(sec_t), now=T0))
    sec = AuthoritativeNode(MemoryStore(), ["88.118"], name=sec_t.name)
    sec.bootstrap_record(prefix_record("88.118.8", "s", site=_site_at(top_t), now=T0))  # points back up
    net.add(top_t.address, top)
    net.add(sec_t.address, sec)
    resolver = RecursiveResolver([top_t])
    done, asks = drive(resolver, DEMO, route(net), 1.0)
    assert done.code == ResponseCode.RECURSION_COUNT_TOO_HIGH
    assert names(asks)[:3] == ["top-x", "sec-x", "top-x"] and len(asks) <= resolver.max_hops


@pytest.mark.parametrize("max_hops", [5, 40])
def test_endless_distinct_referrals_stop_at_max_hops(max_hops: int) -> None:
    """A chain of referrals that never repeats (new node, new prefix each time) is cut at ``max_hops``."""
    counter = iter(range(1, 10_000))

    def respond(ask: Ask) -> Response:
        i = next(counter)
        nxt = Upstream(f"n{i}", "127.0.0.1", 41000 + i)
        return Response(0, OpCode.RESOLUTION, ResponseCode.PREFIX_REFERRAL, f"0.NA/88.{i}",
                        values=(site_value(1, _site_at(nxt)),), node=ask.target.name)

    resolver = RecursiveResolver([Upstream("root", "127.0.0.1", 41000)], max_hops=max_hops)
    done, asks = drive(resolver, "88.1.2/x", respond, 1.0)
    assert done.code == ResponseCode.RECURSION_COUNT_TOO_HIGH
    assert len(asks) == max_hops


def test_referral_without_a_tcp_interface_is_an_error(hier: Hierarchy) -> None:
    def respond(ask: Ask) -> Response:
        site = SiteInfo((Server(1, "127.0.0.1", (Interface("HTTP", 8000),)),))
        return Response(0, OpCode.RESOLUTION, ResponseCode.PREFIX_REFERRAL, "0.NA/88.118",
                        values=(site_value(1, site),))

    done, asks = drive(RecursiveResolver(hier.tops()), DEMO, respond, 1.0)
    assert done.code == ResponseCode.ERROR and len(asks) == 1


# --------------------------------------------------------------------------------------------------
# Timeouts and root failover


def test_timeout_of_the_first_root_moves_to_the_next(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops(), root_down_s=30)
    done, asks = drive(resolver, DEMO, route(hier, down={hier.addr(TOP)}), 100.0)
    assert done.code == ResponseCode.SUCCESS
    assert names(asks) == [TOP, DR, SEC, ENT]
    assert [h.code for h in done.trace] == [TIMEOUT_CODE, 303, 303, 1]
    # The failed root is skipped while it is marked down (bypass the cache to walk from the top again)...
    _, asks = drive(resolver, DEMO, route(hier), 110.0, bypass_cache=True)
    assert names(asks) == [DR, SEC, ENT]
    # ...and preferred again after root_down_s.
    _, asks = drive(resolver, DEMO, route(hier), 131.0, bypass_cache=True)
    assert names(asks) == [TOP, SEC, ENT]


def test_all_roots_timing_out_ends_with_an_error(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, DEMO, route(hier, down={hier.addr(TOP), hier.addr(DR)}), 100.0)
    assert done.code == ResponseCode.ERROR and "no top-level node" in done.message
    assert names(asks) == [TOP, DR]
    assert [h.code for h in done.trace] == [TIMEOUT_CODE, TIMEOUT_CODE]


def test_unreachable_enterprise_is_an_error_and_forgets_the_cached_referral(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    drive(resolver, DEMO, route(hier), 1.0)
    done, asks = drive(resolver, "88.118.8/Else", route(hier, down={hier.addr(ENT)}), 2.0)
    assert done.code == ResponseCode.ERROR and "did not answer" in done.message and names(asks) == [ENT]
    _, asks = drive(resolver, "88.118.8/Else", route(hier), 3.0)
    assert names(asks) == [SEC, ENT]  # the 88.118.8 referral was dropped; the 88.118 one still holds


def test_busy_root_moves_to_the_next(hier: Hierarchy) -> None:
    base = route(hier)

    def respond(ask: Ask) -> Response | None:
        if ask.target.name == TOP:
            return Response(0, OpCode.RESOLUTION, ResponseCode.SERVER_TOO_BUSY, ask.handle)
        return base(ask)

    done, asks = drive(RecursiveResolver(hier.tops()), DEMO, respond, 1.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [TOP, DR, SEC, ENT]


# --------------------------------------------------------------------------------------------------
# Registry replication (the REGISTRY_SYNC handler of the top-level nodes)


def _sync(h: Hierarchy, handle: str, values: tuple[HandleValue, ...], version: int, *,
          auth: tuple[str, bytes] | None, flags: int = 0) -> Response:
    return h.net.exchange(h.addr(DR), Request(1, OpCode.REGISTRY_SYNC, handle, flags, values=values, auth=auth,
                                              version=version))


def _registry_values(h: Hierarchy, name: str) -> tuple[HandleValue, ...]:
    n = h.plan.node(name)
    return (site_value(1, n.site()),)


def test_sync_applies_newer_versions(hier: Hierarchy) -> None:
    dr = hier.nodes[DR]
    values = _registry_values(hier, SEC)
    resp = _sync(hier, "0.NA/88.200", values, 10_000, auth=_auth("88"))
    assert resp.code == ResponseCode.SUCCESS and resp.message == "applied"
    assert dr.store.get("0.na/88.200") is not None
    # The DR node now refers 88.200 like the primary would.
    ref = hier.net.exchange(hier.addr(DR), Request(2, OpCode.RESOLUTION, "88.200/x"))
    assert ref.code == ResponseCode.PREFIX_REFERRAL and ref.handle == "0.NA/88.200"
    newer = (site_value(1, hier.plan.node(ENT).site()),)
    assert _sync(hier, "0.NA/88.200", newer, 10_001, auth=_auth("88")).message == "applied"
    stored = dr.store.get("0.na/88.200")
    assert stored is not None and stored.values == newer
    assert hier.sync_states[DR].stored(dr, "0.na/88.200") == (10_001, False)


def test_sync_ignores_stale_versions(hier: Hierarchy) -> None:
    dr = hier.nodes[DR]
    first = _registry_values(hier, SEC)
    assert _sync(hier, "0.NA/88.201", first, 50_000, auth=_auth("88")).message == "applied"
    for version in (50_000, 49_999, 1):
        resp = _sync(hier, "0.NA/88.201", _registry_values(hier, ENT), version, auth=_auth("88"))
        assert resp.code == ResponseCode.SUCCESS and resp.message == "stale"
    stored = dr.store.get("0.na/88.201")
    assert stored is not None and stored.values == first
    # A stale deletion is ignored too; a newer one applies.
    assert _sync(hier, "0.NA/88.201", (), 49_000, auth=_auth("88"), flags=FLAG_SYNC_DELETE).message == "stale"
    assert dr.store.get("0.na/88.201") is not None
    assert _sync(hier, "0.NA/88.201", (), 60_000, auth=_auth("88"), flags=FLAG_SYNC_DELETE).message == "applied"
    assert dr.store.get("0.na/88.201") is None


def test_sync_ignores_a_version_older_than_the_stored_record(hier: Hierarchy) -> None:
    """Without a sync history, the stored record's timestamps (ms) are its version."""
    dr = hier.nodes[DR]
    before = dr.store.get("0.na/88.118")
    assert before is not None
    resp = _sync(hier, "0.NA/88.118", _registry_values(hier, ENT), 1000, auth=_auth("88"))
    assert resp.message == "stale" and dr.store.get("0.na/88.118") == before


@pytest.mark.parametrize("who", ["anonymous", "secondary-admin", "wrong-secret", "unknown-identity"])
def test_sync_refuses_callers_who_are_not_registry_admins(hier: Hierarchy, who: str) -> None:
    auth: Any = {
        "anonymous": None,
        # The secondary's admin authenticates at the top-level node (its HS_SECKEY is in 0.NA/88.118),
        # but it is not an admin of the registry 0.NA/88.
        "secondary-admin": _auth("88.118"),
        "wrong-secret": (identity_of("88"), b"not-the-secret"),
        "unknown-identity": ("300:0.NA/88.555", b"whatever"),
    }[who]
    expected = {"anonymous": ResponseCode.AUTHENTICATION_NEEDED, "secondary-admin": ResponseCode.INVALID_ADMIN,
                "wrong-secret": ResponseCode.AUTHENTICATION_FAILED,
                "unknown-identity": ResponseCode.AUTHENTICATION_FAILED}[who]
    resp = _sync(hier, "0.NA/88.202", _registry_values(hier, SEC), 99_999_999, auth=auth)
    assert resp.code == expected
    assert hier.nodes[DR].store.get("0.na/88.202") is None
    resp = _sync(hier, "0.NA/88.118", (), 99_999_999, auth=auth, flags=FLAG_SYNC_DELETE)
    assert resp.code == expected
    assert hier.nodes[DR].store.get("0.na/88.118") is not None


def test_sync_only_replicates_prefix_records(hier: Hierarchy) -> None:
    resp = _sync(hier, "88/not-a-prefix-record", (string_value(1, "URL", "u"),), 99_999_999, auth=_auth("88"))
    assert resp.code == ResponseCode.INVALID_ADMIN
    assert hier.nodes[DR].store.get("88/not-a-prefix-record") is None


def test_sync_is_unknown_to_nodes_without_the_handler(hier: Hierarchy) -> None:
    req = Request(1, OpCode.REGISTRY_SYNC, "0.NA/88.203", values=_registry_values(hier, SEC), auth=_auth("88"),
                  version=99_999_999)
    resp = hier.net.exchange(hier.addr(SEC), req)
    assert resp.code == ResponseCode.OPERATION_NOT_SUPPORTED


def test_a_push_the_peer_sheds_is_sent_again(hier: Hierarchy) -> None:
    """A peer that sheds a REGISTRY_SYNC (code 3: refused before doing anything) has not taken it: the
    replicator sends it again rather than counting it delivered (under load, acknowledged allocations were
    lost at the DR node that way)."""
    register(hier, TOP, "88", "0.NA/88.140", (string_value(2, "DESC", "allocated while DR was busy"),))

    class SheddingOnce(MemoryPool):
        shed: list[str] = []

        async def request(self, host: str, port: int, req: Request, timeout_s: float = 5.0) -> Response:
            if req.opcode == OpCode.REGISTRY_SYNC and req.handle not in self.shed:
                self.shed.append(req.handle)
                return Response(req.request_id, req.opcode, ResponseCode.SERVER_TOO_BUSY, req.handle)
            return await super().request(host, port, req, timeout_s)

    pool = SheddingOnce(hier.net)
    rep = asyncio.run(_replicate(hier, TOP, DR, pool))
    assert "0.NA/88.140" in pool.shed and rep.pushed == len(pool.shed)  # each shed once, then delivered
    with hier.client(DR, "88") as c:
        got = c.resolve("0.NA/88.140")
    assert got.code == ResponseCode.SUCCESS and [v.data for v in got.values if v.type == "DESC"] == [
        b"allocated while DR was busy"]


def test_replicated_registry_serves_resolution_from_the_dr_node_alone(hier: Hierarchy) -> None:
    resolver = RecursiveResolver([hier.target(DR)])
    done, asks = drive(resolver, DEMO, route(hier), 1.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [DR, SEC, ENT]
    assert site_of(hier.nodes[DR], "88.118") == site_of(hier.nodes[TOP], "88.118")
    assert prefix_handle("88.118") == "0.NA/88.118"


def test_stale_cached_referral_restarts_from_the_top(hier: Hierarchy) -> None:
    register(hier, ENT, "88.118.8", "88.118.8/Other", (string_value(1, "URL", "https://other.example"),))
    resolver = RecursiveResolver(hier.tops())
    drive(resolver, DEMO, route(hier), 1.0)
    base, stale = route(hier), [1]

    def respond(ask: Ask) -> Response | None:
        if ask.target.name == ENT and stale[0]:
            stale[0] -= 1
            return Response(0, OpCode.RESOLUTION, ResponseCode.SERVER_NOT_RESP, ask.handle)
        return base(ask)

    done, asks = drive(resolver, "88.118.8/Other", respond, 2.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [ENT, TOP, SEC, ENT]


def test_enterprise_prefix_record_resolves_through_the_hierarchy(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, "0.NA/88.118.8", route(hier), 1.0)
    assert done.code == ResponseCode.SUCCESS, (done, names(asks))
    assert [v for v in done.values if v.type == "HS_SITE"] == [
        v for v in hier.nodes[SEC].store.get("0.na/88.118.8").values if v.type == "HS_SITE"]  # type: ignore[union-attr]


def test_secondary_prefix_record_resolves_at_the_top(hier: Hierarchy) -> None:
    resolver = RecursiveResolver(hier.tops())
    done, asks = drive(resolver, "0.NA/88.118", route(hier), 1.0)
    assert done.code == ResponseCode.SUCCESS and names(asks) == [TOP]
    assert {v.type for v in done.values} == {"HS_SITE", "HS_ADMIN"}  # the HS_SECKEY is not public


# --------------------------------------------------------------------------------------------------
# The recursive service (asyncio glue) on the same in-memory network, with a fake clock


class MemoryPool:
    """``net.client.ClientPool``'s interface over the in-memory network (a fake)."""

    def __init__(self, net: MemoryNet) -> None:
        self.net = net

    async def request(self, host: str, port: int, req: Request, timeout_s: float = 5.0) -> Response:
        address = f"{host}:{port}"
        if address not in self.net.nodes:
            raise ConnectionError(f"nothing at {address}")
        return self.net.exchange(address, replace(req, request_id=1))

    def close(self) -> None:
        pass


class Clock:
    """A clock the test sets (services take theirs as a parameter)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _serve_one(svc: Any, conn: ServerConnection, payload: bytes) -> Any:
    """What a server shell does with one request: the fast path, else the service. Returns the answer's
    bytes, or an awaitable of them."""
    import inspect

    conn.receive_data(len(payload).to_bytes(4, "big") + payload)
    event = conn.next_event()
    if type(event) is tuple:  # a PlainResolution
        rid, handle = event
        hit = svc.cached(handle)
        if hit is not None:
            return conn.answer_cached(rid, handle, hit)
        event = plain_request(event)
    assert isinstance(event, Request)
    result = svc.handle(event)
    if inspect.isawaitable(result):
        async def later() -> bytes:
            return conn.send(await result)
        return later()
    return conn.send(result)


async def _ask_service(svc: Any, handle: str, flags: int = 0, *, conn: ServerConnection | None = None) -> Response:
    import inspect

    out = _serve_one(svc, conn or ServerConnection(), Codec().encode(Request(5, OpCode.RESOLUTION, handle, flags)))
    if inspect.isawaitable(out):
        out = await out
    resp = decode_message(out[4:])
    assert isinstance(resp, Response) and resp.request_id == 5
    return resp


def _url(resp: Response) -> bytes:
    (url,) = [v.data for v in resp.values if v.type == "URL"]
    return url


@pytest.fixture
def service_clock(hier: Hierarchy) -> tuple[RecursiveService, Clock]:
    clock = Clock(1000.0)
    register(hier, ENT, "88.118.8", "88.118.8/Short", (string_value(1, "URL", "https://old.example", ttl_s=60),))
    node = RecursiveNode("rec-mem", RecursiveResolver(hier.tops()))
    return RecursiveService(node, MemoryPool(hier.net), clock=clock), clock  # type: ignore[arg-type]


async def test_recursive_service_walks_and_honours_the_ttl(hier: Hierarchy,
                                                           service_clock: tuple[RecursiveService, Clock]) -> None:
    svc, clock = service_clock
    first = await _ask_service(svc, "88.118.8/Short", FLAG_TRACE)
    assert first.code == ResponseCode.SUCCESS and [h.node for h in first.trace] == [TOP, SEC, ENT]
    assert _url(await _ask_service(svc, "88.118.8/Short")) == b"https://old.example"
    register(hier, ENT, "88.118.8", "88.118.8/Short", (string_value(1, "URL", "https://new.example", ttl_s=60),))
    clock.now = 1059.0
    assert _url(await _ask_service(svc, "88.118.8/Short")) == b"https://old.example"  # still within its TTL
    clock.now = 1061.0
    assert _url(await _ask_service(svc, "88.118.8/Short")) == b"https://new.example"


async def test_encoded_answers_do_not_outlive_the_answer_ttl(hier: Hierarchy,
                                                             service_clock: tuple[RecursiveService, Clock]) -> None:
    svc, clock = service_clock
    conn = ServerConnection()  # one connection: its encoded answers are kept between the requests
    await _ask_service(svc, "88.118.8/Short", FLAG_TRACE, conn=conn)  # walks at 1000: good until 1060
    clock.now = 1050.0
    assert _url(await _ask_service(svc, "88.118.8/Short", conn=conn)) == b"https://old.example"  # encoded now
    assert _url(await _ask_service(svc, "88.118.8/Short", conn=conn)) == b"https://old.example"  # the bytes again
    register(hier, ENT, "88.118.8", "88.118.8/Short", (string_value(1, "URL", "https://new.example", ttl_s=60),))
    clock.now = 1070.0  # past the 60 s TTL of what was fetched at 1000
    assert svc.cached("88.118.8/Short") is None
    assert _url(await _ask_service(svc, "88.118.8/Short", conn=conn)) == b"https://new.example"


# --------------------------------------------------------------------------------------------------
# Encoded answers at the surfaces answer what dispatch.answer answers, whatever changed in between


def _service_code(svc: Any, handle: str, rid: int, conn: ServerConnection) -> tuple[int, int, tuple[HandleValue, ...]]:
    out = _serve_one(svc, conn, Codec().encode(Request(rid, OpCode.RESOLUTION, handle)))
    resp = decode_message(out[4:])
    assert isinstance(resp, Response)
    return resp.request_id, resp.code, resp.values


def test_authoritative_encoded_answers_follow_record_changes(hier: Hierarchy) -> None:
    node = hier.nodes[ENT]
    svc, conn = AuthoritativeService(node), ServerConnection()
    first = _service_code(svc, DEMO, 1, conn)
    again = _service_code(svc, DEMO, 2, conn)  # from the node's cached Answer, encoded under its own id
    third = _service_code(svc, DEMO, 3, conn)  # the same bytes again
    assert (first[0], again[0], third[0]) == (1, 2, 3) and first[1:] == again[1:] == third[1:]
    register(hier, ENT, "88.118.8", DEMO, (string_value(1, "URL", "https://changed.example"),))
    for rid in (4, 5):  # once through the service, once from the new cached Answer
        r, code, values = _service_code(svc, DEMO, rid, conn)
        assert (r, code) == (rid, ResponseCode.SUCCESS)
        assert [v.data for v in values if v.type == "URL"] == [b"https://changed.example"]
    with hier.client(ENT, "88.118.8") as c:
        assert c.delete(DEMO).code == ResponseCode.SUCCESS
    assert _service_code(svc, DEMO, 6, conn)[1] == ResponseCode.HANDLE_NOT_FOUND


def test_authoritative_encoded_answers_follow_prefix_deallocation(hier: Hierarchy) -> None:
    register(hier, SEC, "88.118.9", "88.118.9/Hosted1", (string_value(1, "URL", "https://h.example"),))
    svc, conn = AuthoritativeService(hier.nodes[SEC]), ServerConnection()
    assert _service_code(svc, "88.118.9/Hosted1", 1, conn)[1] == ResponseCode.SUCCESS
    assert _service_code(svc, "88.118.9/Hosted1", 2, conn)[1] == ResponseCode.SUCCESS  # now cached
    assert svc.cached("88.118.9/Hosted1") is not None
    with hier.client(SEC, "88.118") as c:  # the secondary may not take the prefix back while it is in use
        assert c.delete("0.NA/88.118.9").code == ResponseCode.INVALID_ADMIN
    # A change of any prefix record drops the node's cached Answers (which handles it serves may change).
    hier.nodes[SEC].bootstrap_record(hier.nodes[SEC].store.get("0.na/88.118.9"))
    assert svc.cached("88.118.9/Hosted1") is None
    direct = answer(hier.nodes[SEC], Request(3, OpCode.RESOLUTION, "88.118.9/Hosted1"), T0)
    assert direct.code == ResponseCode.SUCCESS
    assert _service_code(svc, "88.118.9/Hosted1", 4, conn)[1] == direct.code


def test_encoded_answers_serve_only_the_same_answer_object() -> None:
    from idresolve.core.answers import Answer, EncodedAnswers

    cache = EncodedAnswers(max_entries=2)
    v1 = Answer(ResponseCode.SUCCESS, (string_value(1, "URL", "https://a.example"),))
    v2 = Answer(ResponseCode.SUCCESS, (string_value(1, "URL", "https://a.example"),))  # equal, but a new version
    cache.put("/api/handles/88.1/a", v1, b"body-1")
    assert cache.get("/api/handles/88.1/a", v1) == b"body-1"
    assert cache.get("/api/handles/88.1/a", v2) is None
    cache.put("/api/handles/88.1/b", v1, b"b")
    cache.put("/api/handles/88.1/c", v1, b"c")  # over the bound: the oldest goes
    assert cache.get("/api/handles/88.1/a", v1) is None and cache.get("/api/handles/88.1/c", v1) == b"c"


def test_full_answer_caches_drop_their_oldest_entry_for_each_new_one() -> None:
    """The node's Answers and a client's decoded responses stay bounded, oldest first, however long they run
    full (they drop in O(1): a plain dict's ``next(iter(...))`` walks the holes its deletions leave)."""
    from idresolve.core.wire import ResponseMemo

    store = MemoryStore()
    for i in range(40):
        store.put(Record(f"88.1/r{i}", (string_value(1, "URL", f"https://a.example/{i}"),)))
    node = AuthoritativeNode(store, ["88.1"], name="n", answer_entries=8)
    for i in range(40):
        assert node.query(f"88.1/R{i}").code == ResponseCode.SUCCESS
    assert list(node.answers) == [f"88.1/r{i}" for i in range(32, 40)]
    node.query("88.1/r35")  # a hit is answered from the cache and keeps its place
    assert list(node.answers)[0] == "88.1/r32" and len(node.answers) == 8

    memo = ResponseMemo()
    for i in range(ResponseMemo.MAX_ENTRIES + 10):
        memo.put(b"%d" % i, (i,))
    assert len(memo.entries) == ResponseMemo.MAX_ENTRIES
    assert memo.get(b"9") is None and memo.get(b"10") == (10,)


# --------------------------------------------------------------------------------------------------
# The resolve pipeline (nodes/pipeline.py): the Walk moved by a plain loop, as every mover moves it


def walk_over(hier: Hierarchy, node: RecursiveNode, req: Request, now: float) -> Response:
    walk = node.begin(req, now)
    while (hop := walk.next_hop(now)) is not None:
        upstream, up = hop
        assert up.opcode == OpCode.RESOLUTION and not up.flags  # plain upstream requests: caches apply
        walk.answered(hier.net.exchange(upstream.address, up), now + 0.001)
    return node.respond(req, walk.done)


def test_the_pipeline_walks_filters_and_traces_like_the_resolver(hier: Hierarchy) -> None:
    node = RecursiveNode("rec", RecursiveResolver(hier.tops()))
    traced = walk_over(hier, node, Request(1, OpCode.RESOLUTION, DEMO, FLAG_TRACE), 10.0)
    assert traced.code == ResponseCode.SUCCESS and traced.node == "rec"
    assert [h.node for h in traced.trace] == [TOP, SEC, ENT] and all(abs(h.elapsed_us - 1000) <= 1 for h in traced.trace)
    assert node.upstream_requests == 3
    only_url = walk_over(hier, node, Request(2, OpCode.RESOLUTION, DEMO, types=("URL",)), 11.0)
    assert [v.type for v in only_url.values] == ["URL"] and not only_url.trace and not only_url.node
    none = walk_over(hier, node, Request(3, OpCode.RESOLUTION, DEMO, indexes=(77,)), 11.0)
    assert (none.code, none.values) == (ResponseCode.VALUES_NOT_FOUND, ())
    assert node.upstream_requests == 3  # both answered from the cache


def test_the_fast_path_counts_each_lookup_once(hier: Hierarchy) -> None:
    node = RecursiveNode("rec", RecursiveResolver(hier.tops()))
    stats = node.resolver.answers.stats
    assert node.cached(DEMO, 1.0) is None and (stats.hits, stats.misses) == (0, 0)  # a miss the walk will count
    walk_over(hier, node, Request(1, OpCode.RESOLUTION, DEMO), 1.0)
    assert (stats.hits, stats.misses) == (0, 1)
    hit = node.cached(DEMO, 2.0)
    assert hit is not None and hit.code == ResponseCode.SUCCESS and (stats.hits, stats.misses) == (1, 1)
    assert node.cached(DEMO, 2.0 + 3600.0) is None  # expired: the TTL cap is an hour


def test_a_cached_failure_is_counted_once_by_the_walk_not_by_the_fast_path(hier: Hierarchy) -> None:
    # The fast path serves only successes; a cached negative answer is left to the walk, which counts it.
    # (Counting it in both once made the node report more resolutions than its clients sent.)
    node = RecursiveNode("rec", RecursiveResolver(hier.tops(), negative_ttl_s=30))
    stats = node.resolver.answers.stats
    missing = Request(1, OpCode.RESOLUTION, "88.118.8/Missing")
    walk_over(hier, node, missing, 1.0)
    assert (stats.hits, stats.misses) == (0, 1)
    assert node.cached(missing.handle, 2.0) is None and (stats.hits, stats.misses) == (0, 1)
    answer = walk_over(hier, node, missing, 2.0)
    assert answer.code == ResponseCode.HANDLE_NOT_FOUND and (stats.hits, stats.misses) == (1, 1)


def test_a_walk_whose_upstream_never_answers_fails_with_a_typed_reason(hier: Hierarchy) -> None:
    from idresolve.nodes.recursive import Failure

    node = RecursiveNode("rec", RecursiveResolver(hier.tops()))
    walk = node.begin(Request(1, OpCode.RESOLUTION, DEMO), 1.0)
    while walk.next_hop(1.0) is not None:
        walk.timed_out(3.0)
    assert walk.done.failure == Failure.NO_UPSTREAM and walk.done.code == ResponseCode.ERROR
    walk = node.begin(Request(2, OpCode.RESOLUTION, DEMO), 100.0)
    upstream, up = walk.next_hop(100.0)  # type: ignore[misc]
    walk.answered(hier.net.exchange(upstream.address, up), 100.0)  # the top level refers
    assert walk.next_hop(100.0) is not None
    walk.timed_out(102.0)  # the secondary does not answer
    assert walk.done.failure == Failure.UPSTREAM_TIMEOUT


def test_a_node_covers_its_configured_prefixes_and_every_prefix_derived_from_them() -> None:
    """``covers`` looks up a prefix's ancestors among the configured prefixes: the same answers as comparing
    each configured prefix with ``is_under`` (case folded; ``88.10`` is not under ``88.1``)."""
    from idresolve.core.handles import is_under

    node = AuthoritativeNode(MemoryStore(), ["88", "86.100", "20.500.12"], name="t")
    for p in ["88", "88.118", "88.118.8.12", "86", "86.100", "86.1000", "86.100.1", "20.500", "20.500.12",
              "20.500.123", "20.500.12.x.y", "89", "8", "0.NA", "X", "88.", "88..1"]:
        expected = any(is_under(p, c) for c in node.configured)
        assert node.covers(p) is expected and node.covers(p.upper()) is expected, p


def test_answers_are_cached_for_their_shortest_ttl_under_the_cap() -> None:
    r = RecursiveResolver([Upstream("top", "127.0.0.1", 40001)], ttl_cap_s=600.0)
    vals = (HandleValue(1, "URL", b"a", 900), HandleValue(2, "EMAIL", b"b", 300), HandleValue(3, "DESC", b"c", 86400))
    assert r.ttl_of(vals) == 300.0 and r.ttl_of(vals[:1]) == 600.0 and r.ttl_of(vals[2:]) == 600.0
    assert r.ttl_of(()) == 0.0 and r.ttl_of((HandleValue(1, "URL", b"a", 0),)) == 0.0
    assert isinstance(r.ttl_of(vals), float)


def test_a_cached_referral_s_trace_step_is_made_once_per_prefix_and_bounded() -> None:
    r = RecursiveResolver([Upstream("top", "127.0.0.1", 40001)], cache_entries=10)
    hop = r.cached_referral_hop("88.118")
    assert (hop.node, hop.address, hop.code, hop.elapsed_us, hop.cached) == (
        "cache", "referral for 88.118", ResponseCode.PREFIX_REFERRAL, 0, True)
    assert r.cached_referral_hop("88.118") is hop
    for i in range(5000):  # prefixes without end: the memo stays as small as the referral cache
        r.cached_referral_hop(f"88.{i}")
    assert len(r._referral_hops) <= r.referrals.max_entries
