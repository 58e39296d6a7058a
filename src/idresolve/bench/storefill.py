"""Filling a node's SQLite store directly, for benchmarks at millions of records (``bench sizes --records``).

Registering ten million identifiers over REST takes longer than the benchmark itself, so big stores are
written straight into the node's file: the store's own schema (``SqliteStore`` creates it), then rows of
encoded records (``Record.encode``, the bytes a node writes) by ``executemany`` in large transactions with
``synchronous=OFF`` (a fill that dies is started again; nothing else uses the file meanwhile). Handles are
``<prefix>/bench-s<i:09d>``, inserted in key order (as a bulk registration of serial numbers would be).
A finished fill records its size in the ``meta`` table, so a store built once is reused by later runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..core.handles import fold
from ..core.records import Record
from ..store.sqlite import SqliteStore
from .workload import PREFIX, core_values

FILLED_KEY = "bench:filled-records"
CHUNK = 50_000


def handle_of(i: int, prefix: str = PREFIX) -> str:
    return f"{prefix}/bench-s{i:09d}"


def filled(path: Path) -> int | None:
    """How many benchmark records a finished fill wrote into ``path`` (None: not a finished fill)."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (FILLED_KEY,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return None if row is None else int(bytes(row[0]))


def fill(path: Path, count: int, progress: Callable[[str], None] | None = None) -> None:
    """Create the store at ``path`` (removed first if it exists) holding ``count`` benchmark records."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    SqliteStore(path).close()  # the schema, exactly as a node creates it
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")  # 256 MiB while filling: fewer page writes
        folded_prefix = fold(PREFIX)
        for start in range(0, count, CHUNK):
            rows = []
            for i in range(start, min(count, start + CHUNK)):
                h = handle_of(i)
                rows.append((fold(h), folded_prefix, h, Record(h, core_values(h)).encode()))
            db.execute("BEGIN")
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
            if progress is not None and (start // CHUNK) % 20 == 19:
                progress(f"filled {start + len(rows):,} of {count:,} records")
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (FILLED_KEY, str(count).encode()))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
