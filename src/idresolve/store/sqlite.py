"""The durable embedded store: SQLite in WAL mode, one table of msgpack-encoded records.

Durability: every ``put``/``delete``/``put_many`` is its own committed transaction before it returns.
With WAL and ``synchronous=NORMAL`` a committed transaction is in the OS page cache, so it survives
``kill -9`` of the process (not a power cut); pass ``fsync=True`` for ``synchronous=FULL``, which survives
a power cut at the cost of an fsync per commit. Bulk paths write one transaction per batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..core.errors import DecodeError, StoreCorrupt
from ..core.records import Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key    TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    handle TEXT NOT NULL,
    data   BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_prefix ON records (prefix, key);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""


def _prefix_of(key: str) -> str:
    return key.split("/", 1)[0]


class SqliteStore:
    def __init__(self, path: Path | str, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._closed = False
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is left uncommitted.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        ok = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise RuntimeError(f"store {self.path} failed its integrity check: {ok}")

    def get(self, key: str) -> Record | None:
        row = self._db.execute("SELECT data FROM records WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return Record.decode(row[0])
        except DecodeError as exc:
            raise StoreCorrupt(f"stored record {key!r} is corrupt") from exc

    @staticmethod
    def _row(record: Record) -> tuple[str, str, str, bytes]:
        key = record.key
        return (key, _prefix_of(key), record.handle, record.encode())

    def put(self, record: Record) -> None:
        self._db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", self._row(record))

    def put_many(self, records: Sequence[Record]) -> None:
        self.apply(records, ())

    def apply(self, puts: Sequence[Record], deletes: Iterable[str]) -> None:
        rows = [self._row(r) for r in puts]  # encode before the transaction opens
        dels = [(k,) for k in deletes]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if dels:
                db.executemany("DELETE FROM records WHERE key = ?", dels)
            if rows:
                db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def existing(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 500):  # well under SQLite's limit on bound parameters
            chunk = list(keys[i : i + 500])
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._db.execute(f"SELECT key FROM records WHERE key IN ({marks})", chunk))
        return found

    def delete(self, key: str) -> bool:
        cur = self._db.execute("DELETE FROM records WHERE key = ?", (key,))
        return cur.rowcount > 0

    def list_handles(self, folded_prefix: str, offset: int = 0, limit: int | None = None) -> list[str]:
        rows = self._db.execute(
            "SELECT handle FROM records WHERE prefix = ? ORDER BY key LIMIT ? OFFSET ?",
            (folded_prefix, -1 if limit is None else limit, offset),
        ).fetchall()
        return [r[0] for r in rows]

    def count(self, folded_prefix: str | None = None) -> int:
        if folded_prefix is None:
            return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM records WHERE prefix = ?", (folded_prefix,)).fetchone()[0])

    def get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_meta(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def list_meta(self, prefix: str) -> list[tuple[str, bytes]]:
        rows = self._db.execute("SELECT key, value FROM meta WHERE key >= ? AND key < ? ORDER BY key",
                                (prefix, prefix + "\U0010ffff")).fetchall()
        return [(k, bytes(v)) for k, v in rows]

    def close(self) -> None:
        """Checkpoint the WAL and close. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
