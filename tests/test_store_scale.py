"""What keeps a big SQLite store fast stays correct: no check at a clean open, a check after an unclean
one; kept counts and list positions give exactly what ``LIMIT``/``OFFSET`` gives, across writes by this
connection and by another one (another worker process of the node)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from idresolve.core.errors import StoreCorrupt
from idresolve.core.records import Record
from idresolve.core.values import HandleValue
from idresolve.store import SqliteStore


def rec(handle: str) -> Record:
    return Record(handle, (HandleValue(1, "URL", b"v", timestamp=1_700_000_000),))


def offset_pages(path: Path, prefix: str, size: int) -> list[list[str]]:
    db = sqlite3.connect(path)
    try:
        rows = [r[0] for r in db.execute("SELECT handle FROM records WHERE prefix = ? ORDER BY key", (prefix,))]
    finally:
        db.close()
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def pages(store: SqliteStore, prefix: str, size: int) -> list[list[str]]:
    out, offset = [], 0
    while page := store.list_handles(prefix, offset, size):
        out.append(page)
        offset += len(page)
    return out


def test_clean_open_runs_no_check_and_leaves_no_marker(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    SqliteStore(path).close()
    s = SqliteStore(path)
    assert not s.checked_at_open
    assert len(list(tmp_path.glob("s.sqlite3.open-*"))) == 1
    s.close()
    assert not list(tmp_path.glob("s.sqlite3.open-*"))


def test_two_open_in_one_process_do_not_check(tmp_path: Path) -> None:
    a = SqliteStore(tmp_path / "s.sqlite3")
    b = SqliteStore(tmp_path / "s.sqlite3")
    try:
        assert not b.checked_at_open
    finally:
        a.close()
        b.close()


def test_unclean_exit_is_checked_at_next_open(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    code = ("import os, sys; from idresolve.store import SqliteStore; s = SqliteStore(sys.argv[1]); "
            "os._exit(0)")  # dies with the store open, as kill -9 would leave it
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert len(list(tmp_path.glob("s.sqlite3.open-*"))) == 1
    s = SqliteStore(path)
    assert s.checked_at_open
    s.close()
    s = SqliteStore(path)  # the stale marker is gone: the next open is quick again
    assert not s.checked_at_open
    s.close()


def test_marker_of_own_pid_from_an_earlier_process_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    SqliteStore(path).close()
    (tmp_path / f"s.sqlite3.open-{os.getpid()}-1").touch()  # a container's pid 1 that crashed, say
    s = SqliteStore(path)
    assert s.checked_at_open
    s.close()


def test_check_finds_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    s = SqliteStore(path)
    s.put_many([rec(f"88.100/h{i:05d}") for i in range(3000)])
    s.close()
    raw = bytearray(path.read_bytes())
    for i in range(4096 * 3 + 100, len(raw) - 4096, 4096):  # scribble inside pages, not on the header
        raw[i : i + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))
    (tmp_path / "s.sqlite3.open-999999999-1").touch()  # no such process: an unclean exit
    with pytest.raises((StoreCorrupt, sqlite3.DatabaseError)):
        SqliteStore(path)


@pytest.mark.parametrize("size", [1, 7, 50])
def test_pages_match_offset_across_writes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "s.sqlite3"
    s = SqliteStore(path)
    try:
        s.put_many([rec(f"88.100/h{i:04d}") for i in range(0, 300, 2)] + [rec(f"88.200/x{i}") for i in range(5)])
        assert pages(s, "88.100", size) == offset_pages(path, "88.100", size)
        assert s.count("88.100") == 150 and s.count() == 155
        first = s.list_handles("88.100", 0, size)
        second = s.list_handles("88.100", size, size)
        s.put(rec("88.100/h0001"))  # lands on the first page: the second page shifts by one
        assert s.count("88.100") == 151
        assert s.list_handles("88.100", size, size) == offset_pages(path, "88.100", size)[1]
        assert first and second
        other = SqliteStore(path)  # another connection writes: this one must see it
        try:
            other.delete("88.100/h0000")
            other.put(rec("88.100/h0003"))
        finally:
            other.close()
        assert s.count("88.100") == 151 and s.count() == 156
        assert pages(s, "88.100", size) == offset_pages(path, "88.100", size)
        assert s.list_handles("88.100", 10_000, size) == []
    finally:
        s.close()


def test_store_check_command(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "n1.sqlite3")
    s.put(rec("88.100/a"))
    s.close()
    argv = [sys.executable, "-c", "from idresolve.cli.main import entry; entry()", "store", "check"]
    ok = subprocess.run([*argv, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "n1.sqlite3: ok" in ok.stdout
    (tmp_path / "n2.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    bad = subprocess.run([*argv, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 3 and "n1.sqlite3: ok" in bad.stdout and "n2.sqlite3: ok" not in bad.stdout
    missing = subprocess.run([*argv, str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no store" in missing.stderr


def test_fill_and_sizes(tmp_path: Path) -> None:
    from idresolve.bench.storefill import fill, filled, handle_of
    from idresolve.bench.storesize import parse_sizes

    assert parse_sizes("10k, 1M,100k,10k") == [10_000, 100_000, 1_000_000]
    with pytest.raises(ValueError):
        parse_sizes("10")
    path = tmp_path / "d" / "bench.sqlite3"
    assert filled(path) is None
    fill(path, 1_500)
    assert filled(path) == 1_500
    s = SqliteStore(path)
    try:
        assert s.count("88.100") == 1_500
        got = s.get(handle_of(1_499).lower())
        assert got is not None and got.handle == handle_of(1_499)
        assert pages(s, "88.100", 400) == offset_pages(path, "88.100", 400)
    finally:
        s.close()


def test_jumps_forward_and_back_match_offset(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    s = SqliteStore(path)
    try:
        s.put_many([rec(f"88.100/h{i:04d}") for i in range(500)] + [rec(f"88.200/h{i:04d}") for i in range(50)])
        want = offset_pages(path, "88.100", 10)
        for page in (3, 20, 21, 7, 49, 0, 30, 50, 12):
            assert s.list_handles("88.100", page * 10, 10) == (want[page] if page < len(want) else [])
        assert s.list_handles("88.200", 20, 10) == offset_pages(path, "88.200", 10)[2]
        assert s.list_handles("88.100", 5, None) == [h for p in want for h in p][5:]
    finally:
        s.close()
