"""An in-memory store: a dict of encoded records plus a per-prefix index. Lost when the process ends."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from ..core.errors import DecodeError, StoreCorrupt
from ..core.records import Record


def _prefix_of(key: str) -> str:
    return key.split("/", 1)[0]


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[str, bytes] = {}
        self._by_prefix: dict[str, list[str]] = {}
        self._meta: dict[str, bytes] = {}

    def get(self, key: str) -> Record | None:
        blob = self._records.get(key)
        if blob is None:
            return None
        try:
            return Record.decode(blob)
        except DecodeError as exc:
            raise StoreCorrupt(f"stored record {key!r} is corrupt") from exc

    def _put(self, record: Record) -> None:
        key = record.key
        if key not in self._records:
            bisect.insort(self._by_prefix.setdefault(_prefix_of(key), []), key)
        self._records[key] = record.encode()

    def put(self, record: Record) -> None:
        self._put(record)

    def put_many(self, records: Sequence[Record]) -> None:
        encoded = [(r.key, r.encode()) for r in records]  # encode first: all or nothing
        for key, blob in encoded:
            if key not in self._records:
                bisect.insort(self._by_prefix.setdefault(_prefix_of(key), []), key)
            self._records[key] = blob

    def apply(self, puts: Sequence[Record], deletes: Iterable[str]) -> None:
        encoded = [(r.key, r.encode()) for r in puts]  # encode before changing anything: all or nothing
        for key in deletes:
            self.delete(key)
        for key, blob in encoded:
            if key not in self._records:
                bisect.insort(self._by_prefix.setdefault(_prefix_of(key), []), key)
            self._records[key] = blob

    def existing(self, keys: Sequence[str]) -> set[str]:
        return {k for k in keys if k in self._records}

    def delete(self, key: str) -> bool:
        if self._records.pop(key, None) is None:
            return False
        keys = self._by_prefix.get(_prefix_of(key), [])
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            keys.pop(i)
        return True

    def list_handles(self, folded_prefix: str, offset: int = 0, limit: int | None = None) -> list[str]:
        keys = self._by_prefix.get(folded_prefix, [])
        chosen = keys[offset:] if limit is None else keys[offset : offset + limit]
        return [Record.decode(self._records[k]).handle for k in chosen]

    def count(self, folded_prefix: str | None = None) -> int:
        if folded_prefix is None:
            return len(self._records)
        return len(self._by_prefix.get(folded_prefix, []))

    def get_meta(self, key: str) -> bytes | None:
        return self._meta.get(key)

    def put_meta(self, key: str, value: bytes) -> None:
        self._meta[key] = value

    def list_meta(self, prefix: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._meta.items() if k.startswith(prefix))

    def close(self) -> None:
        pass
