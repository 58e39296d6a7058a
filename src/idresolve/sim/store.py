"""A read-only synthetic store with registered records overlaid: ``store.base.Store`` for simulated nodes.

``get(key)`` answers, in order: a record written here (the overlay, a ``MemoryStore``: prefix records,
templates, registrations, changes), nothing for a synthetic identifier deleted here (a tombstone), the
synthetic record of an identifier of one of this node's prefixes (``sim.space``), else nothing. So the
node code runs unchanged on 33 billion identifiers while memory holds only what was written.

Listing and counting see both layers, in key order, with a cost bounded by the page asked for (a page
deep in a prefix of billions is found by bisection, never by walking).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from ..core.records import Record
from ..store.memory import MemoryStore
from .space import DIGITS, IdentifierSpace, PrefixSpace


class SyntheticStore:
    def __init__(self, space: IdentifierSpace, holder: str) -> None:
        self.overlay = MemoryStore()
        self._mine: dict[str, PrefixSpace] = {p.folded: p for p in space.held_by(holder)}
        self._deleted: dict[str, list[int]] = {}  # folded prefix -> sorted k of deleted synthetic identifiers
        self._overlay_records = self.overlay._records  # read on the hot path
        self.synthetic_reads = 0

    def _synthetic(self, key: str) -> tuple[PrefixSpace, int] | None:
        prefix, _, suffix = key.partition("/")
        p = self._mine.get(prefix)
        if p is None:
            return None
        k = p.member(suffix)
        if k is None:
            return None
        gone = self._deleted.get(prefix)
        if gone:
            i = bisect.bisect_left(gone, k)
            if i < len(gone) and gone[i] == k:
                return None
        return p, k

    # -- reads ----------------------------------------------------------------------------------------
    def get(self, key: str) -> Record | None:
        if key in self._overlay_records:
            return self.overlay.get(key)
        hit = self._synthetic(key)
        if hit is None:
            return None
        self.synthetic_reads += 1
        return hit[0].record(hit[1])

    def existing(self, keys: Sequence[str]) -> set[str]:
        return {k for k in keys if k in self._overlay_records or self._synthetic(k) is not None}

    def count(self, folded_prefix: str | None = None) -> int:
        if folded_prefix is None:
            return self.overlay.count() + sum(self._synthetic_count(p) for p in self._mine.values())
        p = self._mine.get(folded_prefix)
        own = self.overlay.count(folded_prefix)
        return own if p is None else own + self._synthetic_count(p) - self._shadowed(p)

    def _synthetic_count(self, p: PrefixSpace) -> int:
        return p.size - len(self._deleted.get(p.folded, ()))

    def _shadowed(self, p: PrefixSpace) -> int:
        """Overlay keys that are also live synthetic identifiers (a synthetic record changed here)."""
        keys = self.overlay._by_prefix.get(p.folded, [])
        return sum(1 for key in keys if self._synthetic(key) is not None)

    def list_handles(self, folded_prefix: str, offset: int = 0, limit: int | None = None) -> list[str]:
        p = self._mine.get(folded_prefix)
        if p is None:
            return self.overlay.list_handles(folded_prefix, offset, limit)
        # Entries are the overlay-only keys and the live synthetic identifiers, each once, in key order.
        extra = [k for k in self.overlay._by_prefix.get(folded_prefix, []) if self._synthetic(k) is None]
        gone = self._deleted.get(p.folded, [])

        def position(k: int) -> int:  # entries whose key sorts before synthetic k's
            return k - bisect.bisect_left(gone, k) + bisect.bisect_left(extra, self._key(p, k))

        lo, hi = 0, p.size
        while lo < hi:  # the last k at or before ``offset``: bounded work for any page
            mid = (lo + hi + 1) // 2
            if position(mid) <= offset:
                lo = mid
            else:
                hi = mid - 1
        first = bisect.bisect_left(extra, self._key(p, lo))
        skip = offset - position(lo)
        if skip < 0:  # offset falls among overlay keys before the first synthetic one (lo is 0)
            first, skip = 0, offset
        later = extra[first:]
        merged = heapq.merge(((key, -1) for key in later), self._synthetic_keys(p, lo, set(gone)))
        out: list[str] = []
        for key, k in islice(merged, skip, None if limit is None else skip + limit):
            rec = self.overlay.get(key) if k < 0 or key in self._overlay_records else None
            out.append(rec.handle if rec is not None else p.handle(k))
        return out

    @staticmethod
    def _key(p: PrefixSpace, k: int) -> str:
        return f"{p.folded}/{p.ftag}{k:0{DIGITS}d}"

    def _synthetic_keys(self, p: PrefixSpace, lo: int, gone: set[int]) -> Iterator[tuple[str, int]]:
        for k in range(lo, p.size):
            if k not in gone:
                yield self._key(p, k), k

    # -- writes (all to the overlay) --------------------------------------------------------------------
    def _undelete(self, key: str) -> None:
        prefix, _, suffix = key.partition("/")
        gone = self._deleted.get(prefix)
        p = self._mine.get(prefix)
        if gone and p is not None and (k := p.member(suffix)) is not None:
            i = bisect.bisect_left(gone, k)
            if i < len(gone) and gone[i] == k:
                gone.pop(i)

    def put(self, record: Record) -> None:
        self.overlay.put(record)
        self._undelete(record.key)

    def put_many(self, records: Sequence[Record]) -> None:
        self.overlay.put_many(records)
        for r in records:
            self._undelete(r.key)

    def apply(self, puts: Sequence[Record], deletes: Iterable[str]) -> None:
        deletes = list(deletes)
        self.overlay.apply(puts, [])
        for key in deletes:
            self.delete(key)
        for r in puts:
            self._undelete(r.key)

    def delete(self, key: str) -> bool:
        had = self.overlay.delete(key)
        hit = self._synthetic(key)
        if hit is not None:
            bisect.insort(self._deleted.setdefault(hit[0].folded, []), hit[1])
            return True
        return had

    # -- node state ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        return self.overlay.get_meta(key)

    def put_meta(self, key: str, value: bytes) -> None:
        self.overlay.put_meta(key, value)

    def list_meta(self, prefix: str) -> list[tuple[str, bytes]]:
        return self.overlay.list_meta(prefix)

    def close(self) -> None:
        self.overlay.close()

