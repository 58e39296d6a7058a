"""One behaviour table for every store: ``MemoryStore`` and ``SqliteStore`` must be indistinguishable.

Each case is a list of operations and what each returns; the same table runs against both stores. The
SQLite store must also keep everything across a reopen, and with the writer never closed (a crash).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from idresolve.core.errors import StoreCorrupt
from idresolve.core.handles import fold
from idresolve.core.records import Record
from idresolve.core.values import HandleValue
from idresolve.store import MemoryStore, SqliteStore, Store, open_store


def rec(handle: str, *texts: str) -> Record:
    return Record(handle, tuple(HandleValue(i, "URL", t.encode(), timestamp=1_700_000_000)
                                for i, t in enumerate(texts or ("v",), start=1)))


class Unencodable:
    """Not msgpack-able: a record holding it fails to encode."""


BAD = Record("88.100/bad", (HandleValue(1, "URL", Unencodable()),))  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.sqlite3")
    yield s
    s.close()


# Each step: (method, args, expected result). ``get`` results compare to a Record or None; the special
# expectation RAISES means the call must raise and change nothing.
RAISES = object()
Step = tuple[str, tuple[Any, ...], Any]

CASES: list[tuple[str, list[Step]]] = [
    ("get missing", [("get", ("88.100/x",), None), ("count", (), 0), ("count", ("88.100",), 0)]),
    ("put then get by folded key", [
        ("put", (rec("88.100/MiXed", "a"),), None),
        ("get", ("88.100/mixed",), rec("88.100/MiXed", "a")),
        ("get", ("88.100/MiXed",), None),  # keys are folded by the caller
        ("count", (), 1), ("count", ("88.100",), 1),
    ]),
    ("put replaces, keeps one entry", [
        ("put", (rec("88.100/a", "1"),), None), ("put", (rec("88.100/A", "2", "3"),), None),
        ("get", ("88.100/a",), rec("88.100/A", "2", "3")),
        ("count", ("88.100",), 1), ("list_handles", ("88.100",), ["88.100/A"]),
    ]),
    ("put_many inserts and replaces", [
        ("put", (rec("88.100/a", "old"),), None),
        ("put_many", ([rec("88.100/a", "new"), rec("88.100/b"), rec("88.200/c"), rec("88.100/b", "again")],), None),
        ("get", ("88.100/a",), rec("88.100/a", "new")), ("get", ("88.100/b",), rec("88.100/b", "again")),
        ("count", (), 3), ("count", ("88.100",), 2), ("count", ("88.200",), 1),
    ]),
    ("put_many of nothing", [("put_many", ([],), None), ("count", (), 0)]),
    ("delete", [
        ("put", (rec("88.100/a"),), None), ("delete", ("88.100/a",), True), ("delete", ("88.100/a",), False),
        ("get", ("88.100/a",), None), ("count", ("88.100",), 0), ("list_handles", ("88.100",), []),
        ("delete", ("88.100/never",), False),
    ]),
    ("apply puts and deletes together", [
        ("put_many", ([rec("88.100/a"), rec("88.100/b")],), None),
        ("apply", ([rec("88.100/c"), rec("88.100/b", "changed")], ["88.100/a", "88.100/missing"]), None),
        ("get", ("88.100/a",), None), ("get", ("88.100/b",), rec("88.100/b", "changed")),
        ("list_handles", ("88.100",), ["88.100/b", "88.100/c"]),
    ]),
    ("apply deletes before it puts the same key", [
        ("put", (rec("88.100/a", "old"),), None),
        ("apply", ([rec("88.100/a", "new")], ["88.100/a"]), None),
        ("get", ("88.100/a",), rec("88.100/a", "new")), ("count", (), 1),
    ]),
    ("apply is all or nothing when a record cannot be encoded", [
        ("put_many", ([rec("88.100/a"), rec("88.100/b")],), None),
        ("apply", ([rec("88.100/c"), BAD], ["88.100/a"]), RAISES),
        ("get", ("88.100/a",), rec("88.100/a")), ("get", ("88.100/c",), None), ("count", (), 2),
    ]),
    ("put_many is all or nothing when a record cannot be encoded", [
        ("put_many", ([rec("88.100/a"), BAD],), RAISES),
        ("get", ("88.100/a",), None), ("count", (), 0),
    ]),
    ("list_handles: sorted by folded key, spelled as created, exact prefix only", [
        ("put_many", ([rec("88.100/b"), rec("88.100/C"), rec("88.100/a"), rec("88.1000/x"), rec("88.100.1/y"),
                       rec("88.10/z"), rec("88.100/产品")],), None),
        ("list_handles", ("88.100",), ["88.100/a", "88.100/b", "88.100/C", "88.100/产品"]),
        ("list_handles", ("88.1000",), ["88.1000/x"]), ("list_handles", ("88.100.1",), ["88.100.1/y"]),
        ("list_handles", ("88.999",), []), ("count", ("88.100",), 4), ("count", (), 7),
    ]),
    ("list_handles paging", [
        ("put_many", ([rec(f"88.100/h{i:02d}") for i in range(10)],), None),
        ("list_handles", ("88.100", 0, 3), ["88.100/h00", "88.100/h01", "88.100/h02"]),
        ("list_handles", ("88.100", 3, 3), ["88.100/h03", "88.100/h04", "88.100/h05"]),
        ("list_handles", ("88.100", 9, 3), ["88.100/h09"]),
        ("list_handles", ("88.100", 10, 3), []), ("list_handles", ("88.100", 50, None), []),
        ("list_handles", ("88.100", 8, None), ["88.100/h08", "88.100/h09"]),
        ("list_handles", ("88.100", 0, 0), []),
    ]),
    ("prefix records live under 0.na", [
        ("put", (rec("0.NA/88.100"),), None), ("list_handles", ("0.na",), ["0.NA/88.100"]),
        ("get", ("0.na/88.100",), rec("0.NA/88.100")),
    ]),
]


def run_step(store: Store, method: str, args: tuple[Any, ...], expected: Any) -> None:
    call: Callable[..., Any] = getattr(store, method)
    if expected is RAISES:
        with pytest.raises(Exception):  # noqa: B017 - any failure to encode, as long as nothing changed
            call(*args)
        return
    assert call(*args) == expected, f"{method}{args}"


@pytest.mark.parametrize(("name", "steps"), CASES, ids=[c[0] for c in CASES])
def test_store_behaviour(store: Store, name: str, steps: list[Step]) -> None:
    for method, args, expected in steps:
        run_step(store, method, args, expected)


def test_many_records_page_without_gaps(store: Store) -> None:
    handles = [f"88.100/item-{i:04d}" for i in range(1500)]
    store.put_many([rec(h) for h in handles])
    pages = [store.list_handles("88.100", off, 400) for off in range(0, 1600, 400)]
    assert [len(p) for p in pages] == [400, 400, 400, 300]
    assert [h for p in pages for h in p] == sorted(handles)
    assert store.count("88.100") == 1500


def test_sqlite_reopen_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    s = SqliteStore(path)
    s.put(rec("88.100/One", "1"))
    s.put_many([rec(f"88.100/m{i}") for i in range(5)])
    s.apply([rec("88.200/x")], ["88.100/m0"])
    s.delete("88.100/m1")
    s.close()
    again = SqliteStore(path)
    try:
        assert again.get("88.100/one") == rec("88.100/One", "1")
        assert again.get("88.100/m0") is None and again.get("88.100/m1") is None
        assert again.list_handles("88.100") == ["88.100/m2", "88.100/m3", "88.100/m4", "88.100/One"]
        assert again.count() == 5 and again.count("88.200") == 1
    finally:
        again.close()


def test_sqlite_commits_are_visible_without_close(tmp_path: Path) -> None:
    """A write is committed when the call returns: a second connection sees it while the writer is still
    open (as after kill -9, when close never runs)."""
    path = tmp_path / "c.sqlite3"
    writer = SqliteStore(path)
    try:
        writer.put(rec("88.100/a"))
        writer.put_many([rec("88.100/b"), rec("88.100/c")])
        writer.apply([rec("88.100/d")], ["88.100/a"])
        reader = SqliteStore(path)
        try:
            assert reader.list_handles("88.100") == ["88.100/b", "88.100/c", "88.100/d"]
        finally:
            reader._db.close()  # leave the WAL in place, as a crashed process would
    finally:
        writer.close()


def test_sqlite_corrupt_record_is_store_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    s = SqliteStore(path)
    s.put(rec("88.100/a"))
    s.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE records SET data = ? WHERE key = ?", (b"\xc1garbage", "88.100/a"))
    db.commit()
    db.close()
    s = SqliteStore(path)
    try:
        with pytest.raises(StoreCorrupt) as info:
            s.get("88.100/a")
        assert info.value.code == 2
    finally:
        s.close()


def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store("memory", None), MemoryStore)
    s = open_store("sqlite", tmp_path / "sub", name="n1")
    try:
        assert isinstance(s, SqliteStore) and (tmp_path / "sub" / "n1.sqlite3").exists()
    finally:
        s.close()
    with pytest.raises(ValueError, match="data directory"):
        open_store("sqlite", None)
    with pytest.raises(ValueError, match="unknown store kind"):
        open_store("lmdb", tmp_path)


def test_keys_are_folded_record_keys(store: Store) -> None:
    r = rec("88.100/ABC-产品")
    store.put(r)
    assert r.key == fold("88.100/ABC-产品") == "88.100/abc-产品"
    assert store.get(r.key) == r
