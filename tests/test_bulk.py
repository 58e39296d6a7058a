"""The bulk registration fast paths (issue 13): they must accept and refuse exactly what the general paths
do, and the batch machinery around them (one shared generation move per batch, several batches in flight
when seeding, the progress bar)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from idresolve.client.progress import Progress, bar_text, eta_text
from idresolve.cluster import seeding
from idresolve.core.codes import ResponseCode
from idresolve.core.errors import InvalidHandle, InvalidValue
from idresolve.core.handles import check_prefix
from idresolve.core.messages import Request, Response
from idresolve.core.templates import fields
from idresolve.core.templates.fields import FieldType, make_checker
from idresolve.core.values import (
    DEFAULT_PERMS,
    DEFAULT_TTL_S,
    SECRET_PERMS,
    CheckedValues,
    HandleValue,
    check_values,
    checked_decoded,
    value_from_json,
    values_from_json,
)
from idresolve.nodes.auth import Identity
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import ADMIN_INDEX, prefix_record
from idresolve.store.memory import MemoryStore

# -- values ------------------------------------------------------------------------------------------------


def test_handle_value_keeps_dataclass_behaviour() -> None:
    v = HandleValue(1, "URL", b"x")
    assert (v.ttl_s, v.timestamp, v.perms, v.refs) == (DEFAULT_TTL_S, 0, DEFAULT_PERMS, ())
    assert v == HandleValue(1, "URL", b"x") and hash(v) == hash(HandleValue(1, "URL", b"x"))
    assert dataclasses.replace(v, timestamp=5) == HandleValue(1, "URL", b"x", DEFAULT_TTL_S, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.index = 2  # type: ignore[misc]
    assert "index=1" in repr(v)


@pytest.mark.parametrize("cls, required", [(Request, (7, 1)), (Response, (7, 1, 0))])
def test_messages_written_out_init_sets_every_field(cls: type, required: tuple[int, ...]) -> None:
    """Request and Response set their slots in a written-out __init__: a field added to the class must be
    added there too, with the same name and default, or the message would lack it."""
    import inspect

    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in dataclasses.fields(cls)]
    for p, f in zip(params, dataclasses.fields(cls), strict=True):
        assert p.default == (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default), f.name
    m = cls(*required)
    assert all(hasattr(m, f.name) for f in dataclasses.fields(cls))
    assert m == cls(*required) and dataclasses.replace(m, handle="88.1/x").handle == "88.1/x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.handle = "x"


@pytest.mark.parametrize("raw, expected", [
    ({"index": 1, "type": "URL", "data": "https://e.com"}, HandleValue(1, "URL", b"https://e.com", timestamp=7)),
    ({"index": "2", "type": "DESC", "data": {"format": "string", "value": "a"}, "ttl": "60"},
     HandleValue(2, "DESC", b"a", 60, 7)),
    ({"index": 3, "type": "X", "data": {"format": "hex", "value": "00ff"}, "permissions": "1100"},
     HandleValue(3, "X", b"\x00\xff", DEFAULT_TTL_S, 7, 12)),
    ({"index": 4, "type": "HS_SECKEY", "data": "s"}, HandleValue(4, "HS_SECKEY", b"s", DEFAULT_TTL_S, 7, SECRET_PERMS)),
    ({"index": 5, "type": "T", "data": "d", "references": [{"handle": "88.1/a", "index": 1}]},
     HandleValue(5, "T", b"d", DEFAULT_TTL_S, 7, DEFAULT_PERMS, (("88.1/a", 1),))),
])
def test_value_from_json_fast_and_general_forms(raw: dict[str, Any], expected: HandleValue) -> None:
    assert value_from_json(raw, 7) == expected


@pytest.mark.parametrize("raw", [
    {"index": 0, "type": "URL", "data": "x"},  # index out of range, on the fast path
    {"index": True, "type": "URL", "data": "x"},
    {"type": "URL", "data": "x"},
    {"index": 1, "type": "", "data": "x"},
    {"index": 1, "type": "A\x01", "data": "x"},
    {"index": 1, "type": "URL"},
    {"index": 1, "type": "URL", "data": "x", "ttl": True},
    {"index": 1, "type": "URL", "data": {"format": "string", "value": 3}},
    {"index": 1, "type": "HS_ADMIN", "data": "not admin data"},  # structured types never take the fast path
    {"index": 2001, "type": "f", "data": "x" * 256},
])
def test_value_from_json_refuses_what_it_always_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidValue):
        value_from_json(raw)


def test_values_from_json_names_a_duplicate_index() -> None:
    with pytest.raises(InvalidValue, match="duplicate value index 1"):
        values_from_json([{"index": 1, "type": "A", "data": "x"}, {"index": 1, "type": "B", "data": "y"}])


def test_checked_values_are_checked_once_and_only_sound_sets_are_marked() -> None:
    parsed = values_from_json([{"index": 1, "type": "URL", "data": "x"}, {"index": 2, "type": "DESC", "data": "y"}])
    assert type(parsed) is CheckedValues and check_values(parsed) is parsed  # the node does not check again
    assert parsed == (HandleValue(1, "URL", b"x"), HandleValue(2, "DESC", b"y"))  # still a tuple of values
    plain = (HandleValue(1, "URL", b"x"),)
    assert type(check_values(plain)) is CheckedValues
    bad = HandleValue(0, "URL", b"x")  # index 0 is refused: a plain tuple holding it is checked, and refused
    with pytest.raises(InvalidValue, match="value index"):
        check_values((bad,))
    decoded = [HandleValue.from_list([1, "URL", b"x", 86400, 0, 14, []]), HandleValue.from_list([1, "B", b"y", 86400, 0, 14, []])]
    twice = checked_decoded(decoded)  # each value sound but an index twice: not marked, refused when checked
    assert type(twice) is tuple
    with pytest.raises(InvalidValue, match="duplicate value index 1"):
        check_values(twice)
    assert type(checked_decoded(decoded[:1])) is CheckedValues


def test_only_the_checking_functions_build_checked_values() -> None:
    """``CheckedValues`` tells the node to skip its checks, so nothing else in the package may build one: a
    new call site would let unchecked values into a store."""
    import ast
    from pathlib import Path

    import idresolve

    allowed = {("core/values.py", name) for name in ("check_values", "checked_decoded", "values_from_json")}
    root = Path(idresolve.__file__).parent
    found = set()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
                        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "CheckedValues"):
                    found.add((path.relative_to(root).as_posix(), func.name))
        module_level = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        for stmt in module_level:
            for node in ast.walk(stmt):
                assert not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CheckedValues"), path
    assert found == allowed, f"CheckedValues built outside the checking functions: {sorted(found - allowed)}"


def test_a_known_prefix_is_still_checked_when_it_is_bad() -> None:
    assert check_prefix("88.100") == "88.100" and check_prefix("88.100") == "88.100"
    for _ in range(2):  # a refused prefix is never remembered
        with pytest.raises(InvalidHandle):
            check_prefix("88..100")


def test_a_field_remembers_good_values_only_and_a_bounded_number() -> None:
    check = make_checker(FieldType.INTEGER, max_length=None, pattern=None, values=(), minimum=0, maximum=10**6)
    assert check(b"12") is None and check(b"12") is None
    assert check(b"x12") is not None and check(b"x12") is not None
    for i in range(fields.KNOWN_GOOD_PER_FIELD * 2):
        assert check(str(i).encode()) is None
    good = next(c.cell_contents for c in check.__closure__ or () if isinstance(c.cell_contents, set))
    assert len(good) == fields.KNOWN_GOOD_PER_FIELD
    assert check(b"-1") == "below the minimum 0"


# -- one generation move per batch ----------------------------------------------------------------------


class CountingGenerations:
    def __init__(self) -> None:
        self.values = [0, 0, 0]
        self.bumped: list[str] = []

    @property
    def counters(self) -> list[int]:
        return self.values

    def bump(self, key: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        before = tuple(self.values)
        self.bumped.append(key)
        if "/tpl-" in key:
            self.values[2] += 1
        self.values[0] += 1
        return before, tuple(self.values)  # type: ignore[return-value]


def test_a_batch_moves_the_shared_generation_once_and_keeps_its_own_answers_valid() -> None:
    node = AuthoritativeNode(MemoryStore(), ["88.100"], name="n")
    node.bootstrap_record(prefix_record("88.100", "s"))
    gens = CountingGenerations()
    node.share_writes(gens)  # type: ignore[arg-type]
    seen: list[str] = []
    node.on_change(seen.append)
    caller = Identity(ADMIN_INDEX, "0.NA/88.100")
    items = [(f"88.100/b{i}", (HandleValue(1, "URL", b"u"),)) for i in range(50)]
    node.batch_create(items, caller=caller, now=100)
    assert gens.bumped == ["88.100/b0"]  # one move for fifty records
    assert seen == [f"88.100/b{i}" for i in range(50)]  # every listener still hears every key
    assert node._seen == tuple(gens.values)  # our own write: no resync of our caches
    assert node.query("88.100/b7", caller=None) is not None


# -- seeding, several batches in flight --------------------------------------------------------------------


class ThreadedFake:
    lock = threading.Lock()
    batches: list[list[str]] = []
    threads: set[str] = set()

    def __init__(self, host: str, port: int, *, timeout_s: float, auth: tuple[str, bytes]) -> None:
        pass

    def __enter__(self) -> ThreadedFake:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def batch_create(self, items: list[tuple[str, Any]]) -> Response:
        with ThreadedFake.lock:
            ThreadedFake.batches.append([h for h, _ in items])
            ThreadedFake.threads.add(threading.current_thread().name)
        return Response(0, 0, ResponseCode.SUCCESS)


def test_seeding_with_batches_in_flight_registers_each_identifier_once() -> None:
    ThreadedFake.batches, ThreadedFake.threads = [], set()
    targets = [seeding.SeedTarget(f"88.1.{i}", "127.0.0.1", 2641, "s") for i in (1, 2)]
    out = seeding.seed_targets(targets, 101, batch_size=10, tag="T", show_progress=False,
                               client=ThreadedFake, in_flight=4)  # type: ignore[arg-type]
    assert (out["registered"], out["failed"]) == (101, 0)
    names = [h for b in ThreadedFake.batches for h in b]
    assert len(names) == len(set(names)) == 101
    assert out["example"] == "88.1.1/T000000000"
    assert all(t.startswith("seed") for t in ThreadedFake.threads)


# -- the progress bar --------------------------------------------------------------------------------------


def test_progress_bar_shows_rate_and_time_left() -> None:
    assert eta_text(5) == "5s" and eta_text(185) == "3m05s" and eta_text(3720) == "1h02m"
    text = bar_text(250, 1000, 1.0)
    assert text.startswith("[#######.") and "250/1,000" in text and "(250/s, ETA 3s)" in text
    assert bar_text(1000, 1000, 2.0).endswith("(500/s, done)")
    assert "ETA ?" in bar_text(0, 10, 1.0)


def test_progress_draws_on_its_stream_and_ends_the_line(tmp_path: Any) -> None:
    import io

    out = io.StringIO()
    p = Progress(4, out=out, every_s=0.0)
    p.add(2)
    p.add(2)
    p.finish()
    assert out.getvalue().count("\r") == 3 and out.getvalue().endswith("\n") and "4/4" in out.getvalue()
    quiet = io.StringIO()
    q = Progress(4, show=False, out=quiet)
    q.add(4)
    q.finish()
    assert quiet.getvalue() == ""


def test_answer_written_out_init_sets_every_field() -> None:
    """``Answer`` sets its slots in a written-out __init__ (one per walk, twice): every field, with the
    class's defaults, frozen and compared by identity."""
    import inspect

    from idresolve.core.answers import Answer

    params = list(inspect.signature(Answer.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in dataclasses.fields(Answer)]
    for p, f in zip(params, dataclasses.fields(Answer), strict=True):
        assert p.default == (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default), f.name
    a = Answer(1)
    assert (a.code, a.values, a.referrer, a.expires_at) == (1, (), None, float("inf"))
    assert Answer(303, (), "0.NA/88.1", 5.0).referrer == "0.NA/88.1" and a != Answer(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.code = 2  # type: ignore[misc]
