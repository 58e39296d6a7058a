"""Templates through the hierarchy: an enterprise node validates against its industry's template, published
at its secondary node, fetched through the top level; and what happens when it cannot be reached.

Two settings:
- the in-memory network of ``test_hierarchy_memory`` (pure nodes, encoded bytes moved between them), with
  the real ``AuthoritativeService`` and ``net.templates.TemplateFetcher`` on a fake pool and a clock the
  test moves: the fetch path, caching, expiry, the unreachable-template choice, stale copies;
- the in-process cluster of ``clusterutil`` (real sockets), the minimal topology with its secondary
  publishing ``tyre-batch``: the bootstrap publishes it, the demo fills it, REST writes at the enterprise
  node are checked against it, and the recursive node answers the fields.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clusterutil import CONFIG, MINIMAL, start_local_cluster
from idresolve.client.rest import RestClient
from idresolve.cluster.bootstrap import DEMO_PREFIX, DEMO_SUFFIX, bootstrap
from idresolve.cluster.credentials import secret_for
from idresolve.cluster.plan import identity_of
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.handles import fold
from idresolve.core.messages import Request, Response
from idresolve.core.templates import (
    TemplateRef,
    generate_values,
    parse_definition_text,
    template_handle,
    version_value,
)
from idresolve.core.values import HandleValue, string_value
from idresolve.net.blocking import BlockingClient
from idresolve.net.services import AuthoritativeService
from idresolve.net.templates import TemplateFetcher
from idresolve.nodes.templates import MAX_FETCHES_PER_WRITE
from test_hierarchy_memory import ENT, MASTER, SEC, TOP, Clock, Hierarchy, MemoryPool, build_hierarchy

TYRE = parse_definition_text((CONFIG / "templates" / "tyre-batch.json").read_bytes())
TPL = template_handle("88.118", "tyre-batch")
REF = TemplateRef(TPL, 1)


class CountingPool(MemoryPool):
    """The in-memory pool, logging where each request went; addresses in ``down`` do not answer."""

    def __init__(self, h: Hierarchy) -> None:
        super().__init__(h.net)
        self.asked: list[str] = []
        self.down: set[str] = set()

    async def request(self, host: str, port: int, req: Request, timeout_s: float = 5.0) -> Response:
        address = f"{host}:{port}"
        self.asked.append(address)
        if address in self.down:
            raise TimeoutError(f"{address} does not answer")
        return await super().request(host, port, req, timeout_s)


def _auth(prefix: str) -> tuple[str, bytes]:
    return identity_of(prefix), secret_for(MASTER, prefix).encode()


def _create(rid: int, handle: str, values: tuple[HandleValue, ...]) -> Request:
    return Request(rid, OpCode.CREATE_HANDLE, handle, values=values, auth=_auth(handle.split("/", 1)[0]))


async def _answer(svc: AuthoritativeService, req: Request) -> tuple[Response, bool]:
    """The service's answer, and whether it had to wait (fetch a template) for it."""
    result = svc.handle(req)
    if inspect.isawaitable(result):
        return await result, True
    assert isinstance(result, Response)
    return result, False


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Any:
    h = build_hierarchy(monkeypatch)
    with h.client(SEC, "88.118") as c:
        assert c.create(TPL, (version_value(TYRE),)).code == ResponseCode.SUCCESS
    clock = Clock(1_700_000_100.0)
    pool = CountingPool(h)
    ent = h.nodes[ENT]
    fetcher = TemplateFetcher(ent, pool, roots=h.tops(), clock=clock)  # type: ignore[arg-type]
    svc = AuthoritativeService(ent, clock=clock, templates=fetcher)
    return h, pool, clock, fetcher, svc


def _filled(handle: str, ref: TemplateRef = REF) -> tuple[HandleValue, ...]:
    return (string_value(1, "URL", f"https://example.com/{handle}"), *generate_values(TYRE, handle, seed=7, ref=ref))


async def test_enterprise_fetches_its_industrys_template_through_the_top_level(net: Any) -> None:
    h, pool, clock, fetcher, svc = net
    ent = h.nodes[ENT]
    resp, waited = await _answer(svc, _create(1, "88.118.8/T1", _filled("88.118.8/T1")))
    assert resp.code == ResponseCode.SUCCESS, resp
    assert waited and fetcher.fetches == 1
    assert pool.asked == [h.addr(TOP), h.addr(SEC)]  # a walk: the top refers to the secondary, which holds it
    assert ent.store.get(fold("88.118.8/T1")) is not None
    # Cached now: the next write is checked at once, without asking anyone.
    resp, waited = await _answer(svc, _create(2, "88.118.8/T2", _filled("88.118.8/T2")))
    assert resp.code == ResponseCode.SUCCESS and not waited and len(pool.asked) == 2
    # A bad record is refused with every failing field named, and not stored.
    bad = (REF.to_value(), string_value(2001, "batchNumber", "21-06"), string_value(2005, "speedSymbol", "X"))
    resp, _ = await _answer(svc, _create(3, "88.118.8/T3", bad))
    assert resp.code == ResponseCode.INVALID_VALUE
    for named in ("productName (2000)", "batchNumber (2001)", "speedSymbol (2005)"):
        assert named in resp.message
    assert ent.store.get(fold("88.118.8/T3")) is None
    # The record resolves with its fields through the hierarchy like any other.
    with h.client(ENT, "88.118.8") as c:
        got = c.resolve("88.118.8/T1")
    assert got.code == ResponseCode.SUCCESS and got.values[0].type == "URL" and len(got.values) >= 10


async def test_expiry_fetches_again_and_a_failed_refresh_keeps_the_expired_copy(net: Any) -> None:
    h, pool, clock, fetcher, svc = net
    assert (await _answer(svc, _create(1, "88.118.8/E1", _filled("88.118.8/E1"))))[0].code == ResponseCode.SUCCESS
    clock.now += 3601  # past the cap of the cached copy's TTL
    resp, waited = await _answer(svc, _create(2, "88.118.8/E2", _filled("88.118.8/E2")))
    assert resp.code == ResponseCode.SUCCESS and waited and fetcher.fetches == 2
    clock.now += 3601
    pool.down.add(h.addr(SEC))  # the secondary node stops answering
    resp, waited = await _answer(svc, _create(3, "88.118.8/E3", _filled("88.118.8/E3")))
    # A published version never changes: the expired copy is still that version, and is used.
    assert resp.code == ResponseCode.SUCCESS and waited and fetcher.fetches == 3
    asked = len(pool.asked)
    resp, waited = await _answer(svc, _create(4, "88.118.8/E4", _filled("88.118.8/E4")))
    assert resp.code == ResponseCode.SUCCESS and not waited and len(pool.asked) == asked  # kept for the grace


async def test_an_unreachable_template_refuses_the_write_and_stores_nothing(net: Any) -> None:
    """The documented choice: fail closed. Code 2, nothing stored, a message saying why; a later write
    after the holder is back succeeds."""
    h, pool, clock, fetcher, svc = net
    pool.down.add(h.addr(SEC))
    resp, waited = await _answer(svc, _create(1, "88.118.8/U1", _filled("88.118.8/U1")))
    assert waited and resp.code == ResponseCode.ERROR
    assert "could not be reached" in resp.message and "nothing was stored" in resp.message and TPL in resp.message
    assert h.nodes[ENT].store.get(fold("88.118.8/U1")) is None
    # A batch needing it stores nothing either.
    items = tuple((f"88.118.8/UB{i}", _filled(f"88.118.8/UB{i}")) for i in range(3))
    req = Request(2, OpCode.BATCH_CREATE, "", items=items, auth=_auth("88.118.8"))
    resp, _ = await _answer(svc, req)
    assert resp.code == ResponseCode.ERROR and all(h.nodes[ENT].store.get(fold(hh)) is None for hh, _ in items)
    pool.down.clear()
    resp, _ = await _answer(svc, _create(3, "88.118.8/U1", _filled("88.118.8/U1")))
    assert resp.code == ResponseCode.SUCCESS


async def test_without_a_fetcher_a_write_naming_a_template_held_elsewhere_is_refused(net: Any) -> None:
    h, pool, clock, fetcher, svc = net
    bare = AuthoritativeService(h.nodes[ENT], clock=clock)
    resp, waited = await _answer(bare, _create(1, "88.118.8/N1", _filled("88.118.8/N1")))
    assert not waited and resp.code == ResponseCode.ERROR and "--template-resolver" in resp.message
    assert h.nodes[ENT].store.get(fold("88.118.8/N1")) is None and pool.asked == []


async def test_a_template_that_does_not_exist_is_a_202_and_is_remembered(net: Any) -> None:
    h, pool, clock, fetcher, svc = net
    missing = TemplateRef("88.118/TPL-nothing", 1)
    resp, waited = await _answer(svc, _create(1, "88.118.8/M1", (missing.to_value(),)))
    assert waited and resp.code == ResponseCode.INVALID_VALUE and "does not exist" in resp.message
    asked = len(pool.asked)
    resp, waited = await _answer(svc, _create(2, "88.118.8/M2", (missing.to_value(),)))
    assert not waited and resp.code == ResponseCode.INVALID_VALUE and len(pool.asked) == asked  # cached 30 s
    clock.now += 31
    resp, waited = await _answer(svc, _create(3, "88.118.8/M3", (missing.to_value(),)))
    assert waited and resp.code == ResponseCode.INVALID_VALUE
    # A version the template does not have, likewise.
    resp, _ = await _answer(svc, _create(4, "88.118.8/M4", (TemplateRef(TPL, 5).to_value(),)))
    assert resp.code == ResponseCode.INVALID_VALUE and "has no version 5" in resp.message


async def test_concurrent_writes_share_one_fetch_and_a_batch_fetches_each_template_once(net: Any) -> None:
    h, pool, clock, fetcher, svc = net
    reqs = [_create(i, f"88.118.8/C{i}", _filled(f"88.118.8/C{i}")) for i in range(5)]
    results = [svc.handle(r) for r in reqs]
    answers = await asyncio.gather(*(r for r in results if inspect.isawaitable(r)))
    assert len(answers) == 5 and all(a.code == ResponseCode.SUCCESS for a in answers)
    assert fetcher.fetches == 1
    # A batch naming more templates held elsewhere than a write may fetch is refused without fetching them.
    items = tuple((f"88.118.8/X{i}", (TemplateRef(f"88.118/TPL-made-up-{i}", 1).to_value(),))
                  for i in range(MAX_FETCHES_PER_WRITE + 3))
    resp, waited = await _answer(svc, Request(9, OpCode.BATCH_CREATE, "", items=items, auth=_auth("88.118.8")))
    assert not waited and resp.code == ResponseCode.INVALID_VALUE and f"at most {MAX_FETCHES_PER_WRITE}" in resp.message
    assert fetcher.fetches == 1
    # As many as a write may name: fetched once each (concurrently), then every item answered.
    req = Request(10, OpCode.BATCH_CREATE, "", items=items[:MAX_FETCHES_PER_WRITE], auth=_auth("88.118.8"))
    resp, waited = await _answer(svc, req)
    assert waited and resp.code == ResponseCode.INVALID_VALUE
    assert fetcher.fetches == 1 + MAX_FETCHES_PER_WRITE
    assert all(r[1] == ResponseCode.INVALID_VALUE and "does not exist" in r[2] for r in resp.results)


async def test_an_anonymous_or_unauthorised_write_never_makes_the_node_fetch(net: Any) -> None:
    h, pool, clock, fetcher, svc = net
    values = _filled("88.118.8/A1")
    anonymous = Request(1, OpCode.CREATE_HANDLE, "88.118.8/A1", values=values)
    wrong = replace(anonymous, request_id=2, auth=_auth("88.118"))  # the secondary's admin: no ADD_HANDLE here
    for req in (anonymous, wrong):
        resp, waited = await _answer(svc, req)
        assert not waited and resp.code in (ResponseCode.AUTHENTICATION_NEEDED, ResponseCode.INVALID_ADMIN,
                                            ResponseCode.AUTHENTICATION_FAILED), resp
    assert pool.asked == [] and fetcher.fetches == 0


# --------------------------------------------------------------------------------------------------
# The in-process cluster


def _topology_with_templates(tmp_path: Path) -> Path:
    text = MINIMAL.read_text(encoding="utf-8").replace('industry = "tyres and rubber"\n',
                                                       'industry = "tyres and rubber"\ntemplates = ["tyre-batch"]\n')
    assert "templates" in text
    path = tmp_path / "minimal-templates.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_cluster_publishes_templates_the_demo_fills_one_and_writes_are_checked(tmp_path: Path) -> None:
    cluster = await start_local_cluster(tmp_path / "data", latency_on=False, config=_topology_with_templates(tmp_path))
    try:
        plan, master = cluster.plan, cluster.master
        report = await asyncio.to_thread(bootstrap, plan, master, templates=CONFIG / "templates")
        assert report.templates == [f"{TPL}@1"] and report.warnings == []
        again = await asyncio.to_thread(bootstrap, plan, master, templates=CONFIG / "templates")
        assert again.templates == [] and again.warnings == []  # idempotent
        ent, rec = plan.node(ENT), plan.by_role("recursive")[0]
        demo = f"{DEMO_PREFIX}/{DEMO_SUFFIX}"

        def flow() -> tuple[Any, Any, Any, Any]:
            with BlockingClient(rec.dial_host, rec.tcp_port) as c:
                resolved = c.resolve(demo)
            with RestClient(ent.http_url, identity=identity_of("88.118.8"),
                            secret=secret_for(master, "88.118.8")) as r:
                bad = r.put("88.118.8/REST-BAD", [REF.to_value().to_json(),
                                                  string_value(2004, "loadIndex", "9.5").to_json()])
                good = r.put("88.118.8/REST-OK", [v.to_json() for v in _filled("88.118.8/REST-OK")])
            with RestClient(rec.http_url) as r:
                fields = r.resolve("88.118.8/REST-OK")
            return resolved, bad, good, fields

        resolved, bad, good, fields = await asyncio.to_thread(flow)
        assert resolved.code == ResponseCode.SUCCESS
        by_index = {v.index: v for v in resolved.values}
        assert by_index[1001].data == f"{TPL}@1".encode() and by_index[2001].data == b"2106023"
        assert len([v for v in resolved.values if v.index >= 2000]) >= 8  # a filled tyre batch
        assert bad.status == 400 and bad.code == ResponseCode.INVALID_VALUE
        assert "productName (2000)" in bad.body["message"] and "loadIndex (2004)" in bad.body["message"]
        assert good.status == 201
        assert fields.ok and {v["type"] for v in fields.body["values"]} >= {"productName", "batchNumber", "TEMPLATE"}
    finally:
        await cluster.worker.stop()


async def test_cluster_refuses_a_write_when_the_secondary_is_down(tmp_path: Path) -> None:
    cluster = await start_local_cluster(tmp_path / "data", latency_on=False, config=_topology_with_templates(tmp_path),
                                        hop_timeout_s=0.5)
    try:
        plan, master = cluster.plan, cluster.master
        await asyncio.to_thread(bootstrap, plan, master, templates=CONFIG / "templates")
        other = parse_definition_text((CONFIG / "templates" / "tyre-batch.json").read_bytes().replace(
            b'"tyre-batch"', b'"tyre-other"'))
        sec, ent = plan.node(SEC), plan.node(ENT)

        def publish() -> int:
            with BlockingClient(sec.dial_host, sec.tcp_port, auth=_cluster_auth(master, "88.118")) as c:
                return c.create(template_handle("88.118", "tyre-other"), (version_value(other),)).code

        assert await asyncio.to_thread(publish) == ResponseCode.SUCCESS
        hosted = next(x for x in cluster.worker.hosted.values() if x.node.name == SEC)
        await hosted.listeners.stop()  # the secondary node is gone from the network

        def write() -> Any:
            ref = TemplateRef(template_handle("88.118", "tyre-other"), 1)
            values = (ref.to_value(), string_value(2000, "productName", "p"), string_value(2001, "batchNumber", "2106023"))
            with RestClient(ent.http_url, identity=identity_of("88.118.8"), secret=secret_for(master, "88.118.8")) as r:
                return r.put("88.118.8/WHILE-DOWN", [v.to_json() for v in values])

        answer = await asyncio.to_thread(write)
        assert answer.status == 503 and answer.code == ResponseCode.ERROR, answer
        assert "could not be reached" in answer.body["message"]
        ent_node = next(x for x in cluster.worker.hosted.values() if x.node.name == ENT).node
        assert ent_node.store.get(fold("88.118.8/WHILE-DOWN")) is None
    finally:
        await cluster.worker.stop()


def _cluster_auth(master: str, prefix: str) -> tuple[str, bytes]:
    return identity_of(prefix), secret_for(master, prefix).encode()
