"""Every write checked against its template, over REST and the msgpack protocol, at a node on loopback.

The validation table (each type and each rule, a value that fits and one that does not) runs through
both surfaces of one in-process node: a fitting record is stored, a failing one answers code 202 (HTTP 400
over REST) with a message naming the field, and is not stored. Then each kind of write (create, replace,
add, modify and remove values, batch with one bad item) and the rules for writes to template records.
Blocking clients run in ``asyncio.to_thread`` while the node serves in the test's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import SECRET, start_live_node
from idresolve.client.rest import RestClient
from idresolve.core.codes import ResponseCode
from idresolve.core.handles import fold
from idresolve.core.templates import TemplateRef, parse_definition, version_value
from idresolve.core.values import HandleValue, string_value
from idresolve.net.blocking import BlockingClient

PREFIX = "88.100"
TPL = f"{PREFIX}/TPL-all-types"
REF = TemplateRef(TPL, 1)
IDENTITY = f"300:0.NA/{PREFIX}"
LABEL = {"zh": "字段", "en": "Field"}


def fdef(index: int, name: str, ftype: str, **rules: Any) -> dict[str, Any]:
    return {"index": index, "name": name, "type": ftype, "label": LABEL, **rules}


DEFINITION = {"name": "all-types", "version": 1, "label": {"zh": "全部类型", "en": "All types"}, "fields": [
    fdef(2000, "req", "string", required=True),
    fdef(2001, "s", "string", maxLength=5),
    fdef(2002, "p", "string", pattern="[A-Z]{2}[0-9]{3}"),
    fdef(2003, "i", "integer", minimum=-10, maximum=100),
    fdef(2004, "d", "decimal", minimum=0.5, maximum=99.5, unit="kg"),
    fdef(2005, "b", "boolean"),
    fdef(2006, "dt", "date"),
    fdef(2007, "ts", "datetime"),
    fdef(2008, "e", "enumeration", values=["A", {"value": "B", "label": {"zh": "乙", "en": "Bee"}}]),
    fdef(2009, "u", "url", maxLength=40),
    fdef(2010, "r", "reference"),
]}
TEMPLATE = parse_definition(DEFINITION)

# (index, type, data, fits): one row per rule, a value that fits it and values that break it.
TABLE: list[tuple[int, str, str, bool]] = [
    (2001, "s", "abcde", True), (2001, "s", "abcdef", False), (2001, "s", "全钢子午", True), (2001, "s", "a\tb", False),
    (2002, "p", "AB123", True), (2002, "p", "ab123", False), (2002, "p", "AB1234", False),
    (2003, "i", "42", True), (2003, "i", "-10", True), (2003, "i", "101", False), (2003, "i", "4.2", False),
    (2003, "i", "007", False), (2003, "i", "+5", False),
    (2004, "d", "12.5", True), (2004, "d", "40", True), (2004, "d", "0.4", False), (2004, "d", "1e3", False),
    (2005, "b", "true", True), (2005, "b", "false", True), (2005, "b", "yes", False),
    (2006, "dt", "2021-06-02", True), (2006, "dt", "2021-02-30", False), (2006, "dt", "2021/06/02", False),
    (2007, "ts", "2021-06-02T08:30:00+08:00", True), (2007, "ts", "2021-06-02T08:30:00Z", True),
    (2007, "ts", "2021-06-02T08:30:00", False),
    (2008, "e", "A", True), (2008, "e", "B", True), (2008, "e", "C", False), (2008, "e", "a", False),
    (2009, "u", "https://example.com/p/1", True), (2009, "u", "ftp://example.com/p", False),
    (2009, "u", "https://example.com/" + "x" * 30, False),
    (2010, "r", "88.118.8/RC2106011", True), (2010, "r", "no-slash-here", False),
    (2030, "colour", "red", False),  # an index in the template range that is not a field
    (2001, "notS", "abc", False),  # a field's value must carry the field's name as its type
]


def required() -> HandleValue:
    return string_value(2000, "req", "present")


@dataclass
class Outcome:
    code: int
    message: str
    http: int | None = None  # REST only


class Surface:
    """The writes of one protocol, each answering an ``Outcome``."""

    name = ""

    def create(self, handle: str, values: list[HandleValue], *, overwrite: bool = False) -> Outcome: ...

    def add(self, handle: str, values: list[HandleValue]) -> Outcome: ...

    def modify(self, handle: str, values: list[HandleValue]) -> Outcome: ...

    def remove(self, handle: str, indexes: list[int]) -> Outcome: ...

    def batch(self, items: list[tuple[str, list[HandleValue]]]) -> Outcome: ...

    def delete(self, handle: str) -> Outcome: ...

    def close(self) -> None: ...


class Binary(Surface):
    name = "binary"

    def __init__(self, port: int) -> None:
        self.c = BlockingClient("127.0.0.1", port, timeout_s=10.0, auth=(IDENTITY, SECRET.encode()))

    @staticmethod
    def _out(resp: Any) -> Outcome:
        return Outcome(resp.code, resp.message)

    def create(self, handle: str, values: list[HandleValue], *, overwrite: bool = False) -> Outcome:
        return self._out(self.c.create(handle, tuple(values), overwrite=overwrite))

    def add(self, handle: str, values: list[HandleValue]) -> Outcome:
        return self._out(self.c.add_values(handle, tuple(values)))

    def modify(self, handle: str, values: list[HandleValue]) -> Outcome:
        return self._out(self.c.modify_values(handle, tuple(values)))

    def remove(self, handle: str, indexes: list[int]) -> Outcome:
        return self._out(self.c.remove_values(handle, tuple(indexes)))

    def batch(self, items: list[tuple[str, list[HandleValue]]]) -> Outcome:
        return self._out(self.c.batch_create([(h, tuple(v)) for h, v in items]))

    def delete(self, handle: str) -> Outcome:
        return self._out(self.c.delete(handle))

    def close(self) -> None:
        self.c.close()


class Rest(Surface):
    name = "rest"

    def __init__(self, url: str) -> None:
        self.c = RestClient(url, identity=IDENTITY, secret=SECRET)

    @staticmethod
    def _out(answer: Any) -> Outcome:
        return Outcome(answer.code if answer.body else 0, str(answer.body.get("message", "")), answer.status)

    @staticmethod
    def _json(values: list[HandleValue]) -> list[dict[str, Any]]:
        return [v.to_json() for v in values]

    def create(self, handle: str, values: list[HandleValue], *, overwrite: bool = False) -> Outcome:
        return self._out(self.c.put(handle, self._json(values), overwrite=overwrite))

    def add(self, handle: str, values: list[HandleValue]) -> Outcome:
        return self._out(self.c.put(handle, self._json(values), overwrite=False, indexes=[v.index for v in values]))

    def modify(self, handle: str, values: list[HandleValue]) -> Outcome:
        return self._out(self.c.put(handle, self._json(values), indexes=[v.index for v in values]))

    def remove(self, handle: str, indexes: list[int]) -> Outcome:
        return self._out(self.c.delete(handle, indexes=indexes))

    def batch(self, items: list[tuple[str, list[HandleValue]]]) -> Outcome:
        return self._out(self.c.batch([{"handle": h, "values": self._json(v)} for h, v in items]))

    def delete(self, handle: str) -> Outcome:
        return self._out(self.c.delete(handle))

    def close(self) -> None:
        self.c.close()


def ok(out: Outcome, what: str) -> None:
    assert out.code == ResponseCode.SUCCESS, f"{what}: {out}"


def refused(out: Outcome, what: str, *names: str) -> None:
    """Code 202 (HTTP 400 over REST) with a message naming each of ``names``."""
    assert out.code == ResponseCode.INVALID_VALUE, f"{what}: {out}"
    assert out.http in (None, 400), f"{what}: {out}"
    for name in names:
        assert name in out.message, f"{what}: {name!r} not named in {out.message!r}"


@pytest.fixture
async def node(tmp_path: Path) -> Any:
    async with start_live_node(tmp_path, tcp="127.0.0.1:0") as live:
        live.running.node.bootstrap_record(_template_record())
        yield live


def _template_record() -> Any:
    from idresolve.core.records import Record

    return Record(TPL, (version_value(TEMPLATE),))


def _surface(live: Any, protocol: str) -> Surface:
    if protocol == "rest":
        return Rest(live.url)
    assert live.running.addresses is not None and live.running.addresses.tcp is not None
    return Binary(live.running.addresses.tcp[1])


async def _run(live: Any, protocol: str, flow: Callable[[Surface, Callable[[str], Any]], None]) -> None:
    store = live.running.node.store

    def stored(handle: str) -> Any:
        return store.get(fold(handle))

    def go() -> None:
        s = _surface(live, protocol)
        try:
            flow(s, stored)
        finally:
            s.close()

    await asyncio.to_thread(go)


@pytest.mark.parametrize("protocol", ["rest", "binary"])
async def test_the_validation_table(node: Any, protocol: str) -> None:
    def flow(s: Surface, stored: Callable[[str], Any]) -> None:
        for n, (index, vtype, data, fits) in enumerate(TABLE):
            handle = f"{PREFIX}/{protocol}-case-{n}"
            what = f"{protocol} case {n} ({index} {vtype}={data!r})"
            out = s.create(handle, [REF.to_value(), required(), string_value(index, vtype, data)])
            if fits:
                ok(out, what)
                assert stored(handle).by_index(index).data == data.encode(), what
            else:
                refused(out, what, f"({index})")
                assert stored(handle) is None, f"{what}: stored although refused"
        # every failing field named at once; the required one too
        out = s.create(f"{PREFIX}/{protocol}-many", [REF.to_value(), string_value(2003, "i", "x"),
                                                      string_value(2008, "e", "Z")])
        refused(out, "several problems", "i (2003)", "e (2008)", "req (2000): required field missing", "3 problems")
        # a reference that is not <handle>@<version>, or names a version that does not exist
        refused(s.create(f"{PREFIX}/{protocol}-badref", [string_value(1001, "TEMPLATE", "no version"), required()]),
                "malformed reference", "<template handle>@<version>")
        refused(s.create(f"{PREFIX}/{protocol}-v9", [TemplateRef(TPL, 9).to_value(), required()]),
                "missing version", "has no version 9")
        refused(s.create(f"{PREFIX}/{protocol}-none", [TemplateRef(f"{PREFIX}/TPL-none", 1).to_value(), required()]),
                "missing template", "does not exist")

    await _run(node, protocol, flow)


@pytest.mark.parametrize("protocol", ["rest", "binary"])
async def test_every_kind_of_write_is_checked(node: Any, protocol: str) -> None:
    def flow(s: Surface, stored: Callable[[str], Any]) -> None:
        h = f"{PREFIX}/{protocol}-kinds"
        ok(s.create(h, [string_value(1, "URL", "https://example.com/x"), REF.to_value(), required()]), "create")
        before = stored(h).values
        refused(s.create(h, [REF.to_value(), string_value(2003, "i", "1000")], overwrite=True), "replace", "i (2003)",
                "req (2000)")
        refused(s.add(h, [string_value(2004, "d", "0.1")]), "add value", "d (2004)")
        refused(s.add(h, [string_value(2031, "extra", "x")]), "add an unknown field", "2031")
        refused(s.modify(h, [string_value(2000, "req", "")]), "modify value", "req (2000)")
        refused(s.remove(h, [2000]), "remove a required field", "req (2000): required field missing")
        assert stored(h).values == before, "a refused write changed the record"
        ok(s.add(h, [string_value(2004, "d", "12.5")]), "add a fitting value")
        ok(s.modify(h, [string_value(2000, "req", "changed")]), "modify to a fitting value")
        ok(s.remove(h, [2004]), "remove an optional field")
        ok(s.remove(h, [1001]), "stop naming the template")  # then the fields are the record's own business
        ok(s.add(h, [string_value(2040, "free", "anything")]), "a record naming no template is not checked")
        refused(s.add(h, [REF.to_value()]), "naming the template again: the record must fit", "free (2040)")

    await _run(node, protocol, flow)


@pytest.mark.parametrize("protocol", ["rest", "binary"])
async def test_a_batch_with_one_bad_item_stores_nothing(node: Any, protocol: str) -> None:
    def flow(s: Surface, stored: Callable[[str], Any]) -> None:
        items = [(f"{PREFIX}/{protocol}-b{i}", [REF.to_value(), required(), string_value(2003, "i", str(i))])
                 for i in range(50)]
        items[37] = (items[37][0], [REF.to_value(), string_value(2003, "i", "x")])  # bad: not an integer, no req
        out = s.batch(items)
        assert out.code == ResponseCode.INVALID_VALUE and out.http in (None, 400), out
        assert all(stored(h) is None for h, _ in items), "a refused batch stored something"
        items[37] = (items[37][0], [REF.to_value(), required()])
        ok(s.batch(items), "the same batch, fixed")
        assert all(stored(h) is not None for h, _ in items)

    await _run(node, protocol, flow)


async def test_batch_results_name_the_bad_item_and_its_fields(node: Any) -> None:
    def flow(s: Surface, stored: Callable[[str], Any]) -> None:
        assert isinstance(s, Rest)
        good = [REF.to_value(), required()]
        answer = s.c.batch([{"handle": f"{PREFIX}/r-ok", "values": Rest._json(good)},
                            {"handle": f"{PREFIX}/r-bad", "values": Rest._json([REF.to_value()])}])
        assert answer.status == 400 and answer.code == ResponseCode.INVALID_VALUE
        by_handle = {r["handle"]: r for r in answer.body["results"]}
        assert by_handle[f"{PREFIX}/r-ok"]["responseCode"] == 1
        assert by_handle[f"{PREFIX}/r-bad"]["responseCode"] == 202
        assert "req (2000): required field missing" in by_handle[f"{PREFIX}/r-bad"]["message"]
        assert stored(f"{PREFIX}/r-ok") is None

    await _run(node, "rest", flow)


@pytest.mark.parametrize("protocol", ["rest", "binary"])
async def test_writes_to_a_template_record(node: Any, protocol: str) -> None:
    v2 = parse_definition({**DEFINITION, "version": 2, "fields": [*DEFINITION["fields"], fdef(2011, "n", "integer")]})

    def flow(s: Surface, stored: Callable[[str], Any]) -> None:
        h = f"{PREFIX}/TPL-{protocol}"
        v1 = parse_definition({**DEFINITION, "name": protocol})
        v2n = parse_definition({**DEFINITION, "name": protocol, "version": 2})
        ok(s.create(h, [version_value(v1)]), "publish version 1")
        ok(s.add(h, [string_value(1, "URL", "https://example.com/docs")]), "a documentation URL beside it")
        refused(s.modify(h, [HandleValue(1101, "TEMPLATE_DEFINITION", version_value(v2n).data)]),
                "changing a published version", "version 1")
        refused(s.remove(h, [1101]), "removing a published version", "cannot be removed")
        refused(s.add(h, [version_value(parse_definition({**DEFINITION, "name": protocol, "version": 3}))]),
                "a gap", "without gaps")
        refused(s.add(h, [version_value(v2)]), "another template's name", "one template")
        pretty = json.dumps(v2n.to_json(), indent=2).encode()
        refused(s.add(h, [HandleValue(1102, "TEMPLATE_DEFINITION", pretty)]), "not canonical", "canonical form")
        refused(s.add(h, [HandleValue(1102, "TEMPLATE_DEFINITION", b'{"name": "x"')]), "not JSON", "template")
        ok(s.add(h, [version_value(v2n)]), "version 2")
        assert sorted(v.index for v in stored(h).values if v.type == "TEMPLATE_DEFINITION") == [1101, 1102]
        # records name either version, and are checked against the one they name
        ok(s.create(f"{PREFIX}/{protocol}-on-v1", [TemplateRef(h, 1).to_value(), required()]), "a record of version 1")
        refused(s.create(f"{PREFIX}/{protocol}-on-v2", [TemplateRef(h, 2).to_value()]), "a record of version 2",
                "version 2", "req (2000)")

    await _run(node, protocol, flow)


@pytest.mark.parametrize("protocol", ["rest", "binary"])
async def test_a_withdrawn_template_leaves_its_records_but_refuses_writes_to_them(node: Any, protocol: str) -> None:
    def flow(s: Surface, stored: Callable[[str], Any]) -> None:
        h, rec = f"{PREFIX}/TPL-gone-{protocol}", f"{PREFIX}/{protocol}-on-gone"
        ok(s.create(h, [version_value(parse_definition({**DEFINITION, "name": f"gone-{protocol}"}))]), "publish")
        ok(s.create(rec, [TemplateRef(h, 1).to_value(), required()]), "a record naming it")
        ok(s.delete(h), "the publisher withdraws the template")
        assert stored(h) is None and stored(rec) is not None  # the record stays as it was
        refused(s.add(rec, [string_value(2001, "s", "abc")]), "a write naming a withdrawn template", "does not exist")
        assert 2001 not in {v.index for v in stored(rec).values}  # nothing of the refused write
        ok(s.remove(rec, [1001]), "the write that removes the template reference")
        ok(s.add(rec, [string_value(2001, "s", "free text")]), "no template, no check")

    await _run(node, protocol, flow)
