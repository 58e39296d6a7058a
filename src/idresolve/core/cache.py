"""A TTL + LRU cache. Pure: every call takes ``now`` (seconds, any monotonic origin).

Entries expire at ``now + ttl_s`` (``math.inf``: never; they leave only by ``remove``, ``clear`` or
eviction); the cache holds at most ``max_entries`` and drops the least recently used beyond that.
``ttl_s <= 0`` means "do not cache". Expiry is checked at lookup, never scheduled.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    expired: int = 0
    evicted: int = 0


class TtlCache(Generic[V]):
    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, now: float, *, count_miss: bool = True) -> V | None:
        """The fresh value of ``key`` (counted as a hit) or None (counted as a miss unless ``count_miss`` is
        False: a caller that will look again through the counted path, so each lookup counts once)."""
        item = self._data.get(key)
        if item is None:
            if count_miss:
                self.stats.misses += 1
            return None
        expires_at, value = item
        if expires_at <= now:
            del self._data[key]
            self.stats.expired += 1
            if count_miss:
                self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def fresh(self, key: str, now: float) -> V | None:
        """The value of ``key`` while it is fresh, else None; counted nowhere (the caller counts a hit when it
        uses the value, and looks again through ``get`` when it does not, which counts that lookup once).
        For hot paths: it does not refresh the entry's place in the LRU order (an entry read only this way
        ages out first-in, first-out) and leaves expired entries to ``get``."""
        item = self._data.get(key)
        if item is None or item[0] <= now:
            return None
        return item[1]

    def put(self, key: str, value: V, ttl_s: float, now: float) -> None:
        if ttl_s <= 0:
            return
        data = self._data
        data[key] = (now + ttl_s, value)
        data.move_to_end(key)
        while len(data) > self.max_entries:
            data.popitem(last=False)
            self.stats.evicted += 1

    def remove(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
