"""Hostile template definitions through the API: huge, deep, recursive references, bad patterns.

Each one goes to a node on loopback as a write of a template record (``PUT /api/handles/...``) and must
come back at once with a clear answer (202 naming the problem, or 400 for a body too large), store
nothing, and leave the node serving. A pattern that would make a backtracking engine run for ever is
accepted (RE2 matches in linear time) and then checking a value against it answers at once. A template a
rogue holder serves (never checked by it) is refused by the enterprise that fetches it. Every exchange
runs under a generous hang guard; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import SECRET, start_live_node
from idresolve.client.rest import RestClient
from idresolve.core.codes import ResponseCode
from idresolve.core.handles import fold
from idresolve.core.records import Record
from idresolve.core.templates import MAX_TEMPLATE_VERSIONS, TemplateRef, parse_definition, version_value
from idresolve.core.values import HandleValue, string_value
from idresolve.net.services import AuthoritativeService
from idresolve.net.templates import TemplateFetcher
from test_hierarchy_memory import ENT, SEC, Clock, build_hierarchy
from test_templates_hierarchy import CountingPool, _answer, _create

PREFIX = "88.100"
IDENTITY = f"300:0.NA/{PREFIX}"
LABEL = {"zh": "字段", "en": "Field"}
HANG_GUARD_S = 30.0


def tdef(*fields: dict[str, Any], name: str = "hostile", version: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "label": {"zh": "模板", "en": "Template"}, "fields": list(fields),
            **extra}


def fdef(index: int, name: str, ftype: str = "string", **rules: Any) -> dict[str, Any]:
    return {"index": index, "name": name, "type": ftype, "label": LABEL, **rules}


def definition_value(text: str | bytes, version: int = 1) -> dict[str, Any]:
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return {"index": 1100 + version, "type": "TEMPLATE_DEFINITION", "data": {"format": "string", "value": data}}


def canonical(raw: dict[str, Any]) -> str:
    return parse_definition(raw).to_bytes().decode("utf-8")


HOSTILE: list[tuple[str, str, str]] = [  # (what, definition text, a phrase the refusal must hold)
    ("10,000 fields", json.dumps(tdef(*[fdef(2000 + i, f"f{i}") for i in range(10_000)])), "larger than"),
    ("over the 64 KiB source bound", json.dumps(tdef(fdef(2000, "a", description="x" * 70_000))), "longer than"),
    ("24 KiB canonical bound", json.dumps(tdef(*[fdef(2000 + i, f"f{i}", description="d" * 990) for i in range(30)])),
     "24576"),
    ("100,000 enumeration values", json.dumps(tdef(fdef(2000, "e", "enumeration", values=[str(i) for i in range(100_000)]))),
     "larger than"),
    ("201 enumeration values", json.dumps(tdef(fdef(2000, "e", "enumeration", values=[str(i) for i in range(201)]))),
     "200"),
    ("nested 30,000 deep", '{"name": ' + "[" * 30_000 + "]" * 30_000 + "}", "nested too deeply"),
    ("a backreference", json.dumps(tdef(fdef(2000, "p", pattern=r"(a)\1"))), "not valid RE2"),
    ("a look-ahead", json.dumps(tdef(fdef(2000, "p", pattern=r"(?=a)a"))), "not valid RE2"),
    ("an automaton too large", json.dumps(tdef(fdef(2000, "p", pattern=r"[\p{L}]{1,255}"))), "too large"),
    ("a pattern over 256 characters", json.dumps(tdef(fdef(2000, "p", pattern="a" * 300))), "longer than 256"),
    ("an unbalanced pattern", json.dumps(tdef(fdef(2000, "p", pattern="(abc"))), "not valid RE2"),
    ("NaN as a bound", '{"name":"hostile","version":1,"label":{"zh":"a","en":"b"},"fields":[{"index":2000,'
                       '"name":"n","type":"integer","label":{"zh":"a","en":"b"},"maximum":NaN}]}', "not a JSON number"),
    ("a key twice", '{"name":"a","name":"b","version":1}', "appears twice"),
    ("not JSON", '{"name": "hostile", ', "not valid JSON"),
    ("a version at another index", canonical(tdef(fdef(2000, "a"), version=2)), "belongs at index 1102"),
]


@pytest.fixture
async def node(tmp_path: Path) -> Any:
    async with start_live_node(tmp_path) as live:
        yield live


async def _rest(live: Any, fn: Any) -> Any:
    def go() -> Any:
        with RestClient(live.url, identity=IDENTITY, secret=SECRET) as c:
            return fn(c)

    return await asyncio.wait_for(asyncio.to_thread(go), HANG_GUARD_S)


@pytest.mark.parametrize("what,text,phrase", HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_a_hostile_definition_is_refused_at_once_and_stores_nothing(node: Any, what: str, text: str,
                                                                          phrase: str) -> None:
    handle = f"{PREFIX}/TPL-hostile"
    answer = await _rest(node, lambda c: c.put(handle, [definition_value(text)]))
    if len(text) > 200_000:  # larger than a PUT body may be: refused before it is parsed
        assert answer.status == 400 and answer.code == ResponseCode.PROTOCOL_ERROR, answer
    else:
        assert answer.status == 400 and answer.code == ResponseCode.INVALID_VALUE, (what, answer)
    assert phrase in answer.body.get("message", ""), (what, answer.body)
    assert node.running.node.store.get(fold(handle)) is None
    health = await _rest(node, lambda c: c.health())
    assert health.ok


async def test_a_catastrophic_pattern_is_accepted_and_checks_at_once(node: Any) -> None:
    """``(a+)+$`` backtracks exponentially in Python's ``re``; RE2 answers in linear time."""
    t = parse_definition(tdef(fdef(2000, "p", pattern="(a+)+$", maxLength=255)))
    handle = f"{PREFIX}/TPL-hostile"
    ref = TemplateRef(handle, 1)
    created = await _rest(node, lambda c: c.put(handle, [version_value(t).to_json()]))
    assert created.status == 201, created.body
    evil = "a" * 254 + "!"
    bad = await _rest(node, lambda c: c.put(f"{PREFIX}/evil", [ref.to_value().to_json(),
                                                               string_value(2000, "p", evil).to_json()]))
    assert bad.status == 400 and "p (2000): does not match the pattern" in bad.body["message"]
    good = await _rest(node, lambda c: c.put(f"{PREFIX}/fine", [ref.to_value().to_json(),
                                                                string_value(2000, "p", "a" * 255).to_json()]))
    assert good.status == 201


async def test_references_that_loop_are_one_level_each(node: Any) -> None:
    """A template record naming itself, and two naming each other: each write is checked against one
    version, with no resolution of anything, so nothing can recurse."""
    a, b = f"{PREFIX}/TPL-a", f"{PREFIX}/TPL-b"
    ta = parse_definition(tdef(fdef(2000, "note"), name="a"))
    tb = parse_definition(tdef(fdef(2000, "note"), name="b"))
    # Itself: the record must fit its own version 1, whose fields it does not hold: refused, clearly.
    itself = await _rest(node, lambda c: c.put(a, [version_value(ta).to_json(), TemplateRef(a, 1).to_value().to_json()]))
    assert itself.status == 400 and "does not exist" in itself.body["message"]
    ok_a = await _rest(node, lambda c: c.put(a, [version_value(ta).to_json()]))
    assert ok_a.status == 201
    loop = await _rest(node, lambda c: c.put(a, [version_value(ta).to_json(), TemplateRef(a, 1).to_value().to_json(),
                                                string_value(2000, "note", "a names itself").to_json()]))
    assert loop.status == 200, loop.body  # it fits: one level, nothing resolved
    ok_b = await _rest(node, lambda c: c.put(b, [version_value(tb).to_json(), TemplateRef(a, 1).to_value().to_json(),
                                                string_value(2000, "note", "b names a").to_json()]))
    assert ok_b.status == 201, ok_b.body
    a_to_b = await _rest(node, lambda c: c.put(a, [version_value(ta).to_json(), TemplateRef(b, 1).to_value().to_json(),
                                                  string_value(2000, "note", "a names b").to_json()]))
    assert a_to_b.status == 200, a_to_b.body
    # A reference field names an identifier; its template is never looked at.
    tr = parse_definition(tdef(fdef(2000, "next", "reference"), name="r"))
    r = f"{PREFIX}/TPL-r"
    assert (await _rest(node, lambda c: c.put(r, [version_value(tr).to_json()]))).status == 201
    chained = await _rest(node, lambda c: c.put(f"{PREFIX}/chain", [TemplateRef(r, 1).to_value().to_json(),
                                                                   string_value(2000, "next", f"{PREFIX}/chain").to_json()]))
    assert chained.status == 201


async def test_thirty_two_versions_and_not_one_more(node: Any) -> None:
    handle = f"{PREFIX}/TPL-many"

    def versions(c: RestClient) -> list[Any]:
        out = [c.put(handle, [version_value(parse_definition(tdef(fdef(2000, "x"), name="many"))).to_json()])]
        for v in range(2, MAX_TEMPLATE_VERSIONS + 2):
            value = definition_value(canonical(tdef(fdef(2000, "x"), fdef(2000 + v, f"x{v}"), name="many", version=v))
                                     if v <= MAX_TEMPLATE_VERSIONS else "{}", v)
            out.append(c.put(handle, [value], overwrite=False, indexes=[1100 + v]))
        return out

    answers = await _rest(node, versions)
    assert [a.status for a in answers[:MAX_TEMPLATE_VERSIONS]] == [201] + [201] * (MAX_TEMPLATE_VERSIONS - 1)
    assert answers[-1].status == 400 and answers[-1].code == ResponseCode.INVALID_VALUE


@pytest.fixture
def hier(monkeypatch: pytest.MonkeyPatch) -> Any:
    return build_hierarchy(monkeypatch)  # (it runs a replication of its own: outside the test's loop)


async def test_a_rogue_holders_bad_template_is_refused_by_the_enterprise(hier: Any) -> None:
    """The secondary node checks definitions written to it; a holder that does not (written behind its
    API here) cannot make an enterprise accept records against a definition that does not parse."""
    h = hier
    rogue = "88.118/TPL-rogue"
    bad_defs = (HandleValue(1101, "TEMPLATE_DEFINITION", b'{"name": "rogue", "version": 1, "fields": ' + b"[" * 5000),)
    h.nodes[SEC].bootstrap_record(Record(rogue, bad_defs))
    clock = Clock(1_700_000_100.0)
    pool = CountingPool(h)
    ent = h.nodes[ENT]
    svc = AuthoritativeService(ent, clock=clock, templates=TemplateFetcher(ent, pool, roots=h.tops(), clock=clock))
    resp, waited = await asyncio.wait_for(_answer(svc, _create(1, "88.118.8/R1", (TemplateRef(rogue, 1).to_value(),))),
                                          HANG_GUARD_S)
    assert waited and resp.code == ResponseCode.INVALID_VALUE and "template definition" in resp.message
    assert ent.store.get(fold("88.118.8/R1")) is None
