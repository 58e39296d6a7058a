"""The store interface every node uses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from ..core.records import Record


class Store(Protocol):
    """Records keyed by the folded handle. All methods are synchronous and atomic."""

    def get(self, key: str) -> Record | None: ...

    def put(self, record: Record) -> None:
        """Insert or replace one record; durable when it returns."""

    def put_many(self, records: Sequence[Record]) -> None:
        """Insert or replace all records in one transaction: all or nothing."""

    def apply(self, puts: Sequence[Record], deletes: Iterable[str]) -> None:
        """Puts and deletes in one transaction."""

    def delete(self, key: str) -> bool: ...

    def existing(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are stored (one query for a whole batch)."""

    def list_handles(self, folded_prefix: str, offset: int = 0, limit: int | None = None) -> list[str]:
        """Handles (as spelled at creation) whose prefix folds to ``folded_prefix``, sorted by key."""

    def count(self, folded_prefix: str | None = None) -> int: ...

    def get_meta(self, key: str) -> bytes | None:
        """A small value of the node's own state (not a record), e.g. a replication version."""

    def put_meta(self, key: str, value: bytes) -> None:
        """Store node state durably (committed when it returns)."""

    def list_meta(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every node-state entry whose key starts with ``prefix``."""

    def close(self) -> None: ...


def open_store(kind: str, data_dir: Path | None, name: str = "records", *, fsync: bool = False) -> Store:
    """``memory`` or ``sqlite`` (the durable default, a file under ``data_dir``; ``fsync``: every commit
    survives a power cut, not only a crash of the process)."""
    from .memory import MemoryStore
    from .sqlite import SqliteStore

    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        if data_dir is None:
            raise ValueError("the sqlite store needs a data directory")
        data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteStore(data_dir / f"{name}.sqlite3", fsync=fsync)
    raise ValueError(f"unknown store kind {kind!r} (expected memory or sqlite)")
