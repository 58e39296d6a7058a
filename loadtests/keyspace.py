"""Which identifiers a load test asks for: the seeded layout, uniform or Zipf popularity, names that do
not exist and names to register.

Pure (stdlib only: no Locust, no gevent, no I/O), so tests import it without monkey-patching anything.

The seeded layout mirrors ``idresolve seed`` (src/idresolve/cluster/seeding.py): N identifiers are split
over the E enterprises of cluster.json in order, enterprise i getting N // E, plus one for the first
N % E, with suffixes ``<tag>000000000``, ``<tag>000000001``, ... Rank r of the popularity order maps to
enterprise r % E and number r // E, so hot identifiers are spread over every enterprise and every rank
below N names a seeded identifier. The split only grows with N, so drawing from fewer identifiers than
were seeded is always safe.

Sampling is cheap per request: Zipf keeps a precomputed cumulative table (``array('d')``, 8 bytes per
identifier) and a draw is one ``random()`` plus a bisection.
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array
from collections.abc import Sequence

SEED_TAG = "SEED"
UNKNOWN_TAG = "NX-"  # never the shape of a seeded (<tag><9 digits>) or a registered (LT-...) suffix
WRITE_TAG = "LT-"


def seeded_counts(total: int, enterprises: int) -> list[int]:
    """How many identifiers ``idresolve seed --identifiers total`` registers under each enterprise."""
    if enterprises <= 0:
        raise ValueError("no enterprises to draw identifiers from")
    share, extra = divmod(max(0, total), enterprises)
    return [share + (1 if i < extra else 0) for i in range(enterprises)]


class KeySpace:
    """Rank -> seeded handle over some enterprises (in seeding order) and their seeded counts.

    Counts may differ by at most one (the seeding split, possibly with some enterprises left out, e.g.
    those a recursive node cannot reach)."""

    def __init__(self, prefixes: Sequence[str], counts: Sequence[int], tag: str = SEED_TAG) -> None:
        if len(prefixes) != len(counts) or not prefixes:
            raise ValueError("need one seeded count per enterprise, and at least one enterprise")
        low, high = min(counts), max(counts)
        if low < 0 or high - low > 1:
            raise ValueError("seeded counts must differ by at most one (the seeding split)")
        self.prefixes = tuple(prefixes)
        self.counts = tuple(counts)
        self.tag = tag
        self._full_rows = low  # rows 0..low-1 hold one identifier of every enterprise
        self._last_row = tuple(i for i, c in enumerate(counts) if c > low)
        self.size = sum(counts)

    def locate(self, rank: int) -> tuple[str, int]:
        """(prefix, seeded number) of the identifier at ``rank`` (0 = most popular)."""
        if not 0 <= rank < self.size:
            raise IndexError(f"rank {rank} outside 0..{self.size - 1}")
        width = len(self.prefixes)
        if rank < self._full_rows * width:
            return self.prefixes[rank % width], rank // width
        return self.prefixes[self._last_row[rank - self._full_rows * width]], self._full_rows

    def handle(self, rank: int) -> str:
        prefix, number = self.locate(rank)
        return f"{prefix}/{self.tag}{number:09d}"

    def last_of_each(self) -> list[str]:
        """Every enterprise's last seeded handle: seeding writes each enterprise's in order, so these all
        existing means every identifier drawn from is in place."""
        return [f"{p}/{self.tag}{c - 1:09d}" for p, c in zip(self.prefixes, self.counts, strict=True) if c]


class UniformSampler:
    def __init__(self, size: int, rng: random.Random) -> None:
        if size <= 0:
            raise ValueError("nothing to sample from")
        self.size = size
        self._randrange = rng.randrange

    def sample(self) -> int:
        return self._randrange(self.size)


class ZipfSampler:
    """Rank k (0-based) is drawn with probability proportional to (k + 1) ** -s."""

    def __init__(self, size: int, s: float, rng: random.Random) -> None:
        if size <= 0:
            raise ValueError("nothing to sample from")
        if not s > 0:
            raise ValueError("the Zipf exponent must be positive")
        self.size = size
        self.s = s
        self._cdf = array("d", itertools.accumulate(k ** -s for k in range(1, size + 1)))
        self._total = self._cdf[-1]
        self._random = rng.random

    def probability(self, rank: int) -> float:
        below = self._cdf[rank - 1] if rank else 0.0
        return float((self._cdf[rank] - below) / self._total)

    def sample(self) -> int:
        # bisect_right: a draw equal to a boundary belongs to the next rank; min() guards rounding at the top
        return min(bisect.bisect_right(self._cdf, self._random() * self._total), self.size - 1)


def make_sampler(kind: str, size: int, s: float, rng: random.Random) -> UniformSampler | ZipfSampler:
    if kind == "uniform":
        return UniformSampler(size, rng)
    if kind == "zipf":
        return ZipfSampler(size, s, rng)
    raise ValueError(f"unknown key distribution {kind!r} (uniform or zipf)")


class Names:
    """Names that do not exist (for the unknown share) and fresh names to register.

    Registered names carry a random token per process, so several Locust workers never collide."""

    def __init__(self, rng: random.Random) -> None:
        self._bits = rng.getrandbits
        self.run = f"{rng.getrandbits(32):08x}"
        self._seq = itertools.count()

    def unknown(self, prefix: str) -> str:
        return f"{prefix}/{UNKNOWN_TAG}{self._bits(48):012x}"

    def fresh(self, prefix: str) -> str:
        return f"{prefix}/{WRITE_TAG}{self.run}-{next(self._seq):09d}"
