"""The durable embedded store: SQLite in WAL mode, one table of msgpack-encoded records.

Durability: every ``put``/``delete``/``put_many`` is its own committed transaction before it returns.
With WAL and ``synchronous=NORMAL`` a committed transaction is in the OS page cache, so it survives
``kill -9`` of the process (not a power cut); pass ``fsync=True`` for ``synchronous=FULL``, which survives
a power cut at the cost of an fsync per commit. Bulk paths write one transaction per batch.

Start-up reads nothing in proportion to the store: no integrity check and no count at open, so a node
with ten million records opens in milliseconds. SQLite's ``quick_check`` (which reads the whole file)
runs at open only after an unclean shutdown: every open connection leaves a marker file
``<store>.open-<pid>`` that ``close`` removes; a marker whose process is gone means that process died
with the store open (``kill -9``, a crash, a power cut), and the next open checks the file first and
clears the marker. ``check()`` runs the same check on demand (``idresolve store check``).

Counts and deep pages: ``count`` and the position of the end of the last pages listed are kept per
connection, valid while the store is unchanged (``PRAGMA data_version`` for other connections'
commits, ``total_changes`` for this connection's): a count of millions is read once, not per page, and
the page that follows the last one listed starts from its last key (keyset) instead of skipping
``offset`` rows. Any write drops both, so answers are always those of ``LIMIT``/``OFFSET``. A jump to a
deep page skips along the (prefix, key) index only (never the records' pages), from the nearest known
position before it, then reads from there.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..core.errors import DecodeError, StoreClosed, StoreCorrupt
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


MAX_PAGE_ENDS = 64  # remembered list positions per connection: a few listings paging at once
_OPEN_HERE: set[str] = set()  # markers of this process's open stores (a marker of our pid not here is stale)


def _prefix_of(key: str) -> str:
    return key.split("/", 1)[0]


def process_alive(pid: int) -> bool:
    """True while a process of that number exists (the open-markers here, and the node's worker sockets)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process of that number: alive
    return True


class _ClosedDb:
    """Stands in for the connection once the store is closed: any use is ``StoreClosed`` (code 3), not
    sqlite3's ``ProgrammingError``, so a request that reaches a stopping node is refused as busy."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __getattr__(self, name: str) -> object:
        raise StoreClosed(f"the store {self.path.name} is closed: the node is stopping")


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
        self._marker = self.path.with_name(f"{self.path.name}.open-{os.getpid()}-{id(self):x}")
        self.checked_at_open = False
        stale = self._stale_markers()
        if stale:
            self.check()
            self.checked_at_open = True
            for m in stale:
                m.unlink(missing_ok=True)
        self._marker.touch()
        _OPEN_HERE.add(self._marker.name)
        self._token: tuple[int, int] = (-1, -1)
        self._counts: dict[str | None, int] = {}
        self._page_ends: OrderedDict[tuple[str, int], str] = OrderedDict()

    def _stale_markers(self) -> list[Path]:
        """Markers of processes that died with this store open. A marker of our own pid that this process
        did not make was left by an earlier process of the same number (a container's pid 1): stale."""
        out = []
        for m in self.path.parent.glob(f"{self.path.name}.open-*"):
            pid = m.name.removeprefix(f"{self.path.name}.open-").split("-", 1)[0]
            if not pid.isdigit():
                out.append(m)
            elif int(pid) == os.getpid():
                if m.name not in _OPEN_HERE:
                    out.append(m)
            elif not process_alive(int(pid)):
                out.append(m)
        return out

    def check(self) -> None:
        """SQLite's ``quick_check`` of the whole file (reads every page); raises ``StoreCorrupt``."""
        ok = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise StoreCorrupt(f"store {self.path} failed its integrity check: {ok}")

    def _fresh(self) -> None:
        """Drop the kept counts and list positions if anything changed the store since they were read."""
        token = (self._db.total_changes, int(self._db.execute("PRAGMA data_version").fetchone()[0]))
        if token != self._token:
            self._token = token
            self._counts.clear()
            self._page_ends.clear()

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
        self._fresh()
        n = -1 if limit is None else limit
        after = self._page_ends.get((folded_prefix, offset)) if offset > 0 else None
        if after is not None:  # the page after one listed before: seek to its last key, skip nothing
            rows = self._db.execute(
                "SELECT key, handle FROM records WHERE prefix = ? AND key > ? ORDER BY key LIMIT ?",
                (folded_prefix, after, n)).fetchall()
        elif offset > 0:  # skip along the (prefix, key) index alone, then read the page from its first key
            base, base_key = max(((o, k) for (p, o), k in self._page_ends.items() if p == folded_prefix and o < offset),
                                 default=(0, None))
            if base_key is None:
                first = self._db.execute(
                    "SELECT key FROM records WHERE prefix = ? ORDER BY key LIMIT 1 OFFSET ?",
                    (folded_prefix, offset)).fetchone()
            else:  # from the nearest position known before it: skip only the rows in between
                first = self._db.execute(
                    "SELECT key FROM records WHERE prefix = ? AND key > ? ORDER BY key LIMIT 1 OFFSET ?",
                    (folded_prefix, base_key, offset - base)).fetchone()
            rows = [] if first is None else self._db.execute(
                "SELECT key, handle FROM records WHERE prefix = ? AND key >= ? ORDER BY key LIMIT ?",
                (folded_prefix, first[0], n)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT key, handle FROM records WHERE prefix = ? ORDER BY key LIMIT ?",
                (folded_prefix, n)).fetchall()
        if rows and limit is not None:
            ends = self._page_ends
            ends[(folded_prefix, offset + len(rows))] = rows[-1][0]
            ends.move_to_end((folded_prefix, offset + len(rows)))
            while len(ends) > MAX_PAGE_ENDS:
                ends.popitem(last=False)
        return [r[1] for r in rows]

    def count(self, folded_prefix: str | None = None) -> int:
        self._fresh()
        n = self._counts.get(folded_prefix)
        if n is None:
            if folded_prefix is None:
                n = int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])
            else:
                n = int(self._db.execute("SELECT count(*) FROM records WHERE prefix = ?",
                                         (folded_prefix,)).fetchone()[0])
            self._counts[folded_prefix] = n
        return n

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
            self._db = _ClosedDb(self.path)  # type: ignore[assignment]
            _OPEN_HERE.discard(self._marker.name)
            self._marker.unlink(missing_ok=True)
