"""Random draws for workloads: arrivals in blocks, Zipf ranks over billions, independent streams.

- ``streams(seed, run)``: one ``random.Random`` per purpose (arrivals, keys, links, ...), each seeded from
  the seed, the run number and its name (string seeds hash with SHA-512: the same in every process), so
  a seed and a run number give the same independent streams everywhere, and changing one draw never
  shifts another stream.
- ``Zipf(n, s)``: ranks ``0 .. n-1`` with P(k) proportional to ``(k+1)**-s``, by rejection-inversion
  (Hormann and Derflinger, 1996): O(1) per draw and no table, for any ``n`` (33 billion) and ``s > 0``.
- ``ArrivalBlocks``: arrival times of a piecewise-constant rate profile, Poisson or evenly spaced, handed
  out in blocks of lists (the engine's inner loop walks lists, not generators), each arrival with its
  recursive node, its kind and its identifier drawn at once.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from itertools import accumulate

READ, WRITE, REGISTER = 0, 1, 2
STREAMS = ("arrivals", "keys", "links", "writes")


def streams(seed: int, run: int) -> dict[str, random.Random]:
    return {name: random.Random(f"idresolve-sim|{seed}|{run}|{name}") for name in STREAMS}


def _h1(x: float) -> float:  # log1p(x) / x, smooth at 0
    return math.log1p(x) / x if abs(x) > 1e-8 else 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))


def _h2(x: float) -> float:  # expm1(x) / x, smooth at 0
    return math.expm1(x) / x if abs(x) > 1e-8 else 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))


class Zipf:
    """Zipf ranks (see the module docstring); ``draw()`` gives 0 for the most popular."""

    __slots__ = ("n", "s", "rng", "_hx1", "_hn", "_c", "draw")

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        if n < 1 or not s > 0:
            raise ValueError("Zipf needs n >= 1 and an exponent above 0")
        self.n, self.s, self.rng = n, s, rng
        self._hx1 = self._hi(1.5) - 1.0
        self._hn = self._hi(n + 0.5)
        self._c = 2.0 - self._hii(self._hi(2.5) - math.exp(-s * math.log(2.0)))
        self.draw: Callable[[], int] = self._drawer()  # ``draw()``: a rank, 0 the most popular

    def _hi(self, x: float) -> float:
        lx = math.log(x)
        return _h2((1.0 - self.s) * lx) * lx

    def _hii(self, x: float) -> float:
        t = max(-1.0, x * (1.0 - self.s))
        return math.exp(_h1(t) * x)

    def _drawer(self) -> Callable[[], int]:
        # A closure over the constants (one draw per arrival: 0.33 against 0.54 us a draw when a method read
        # them off the instance, medians of seven rounds of 100,000); ``_hii`` and ``_h1`` written out, the
        # same operations in the same order, so the same ranks.
        rnd, hn, span, n, s, c, hi = self.rng.random, self._hn, self._hx1 - self._hn, self.n, self.s, self._c, self._hi
        one_s, log1p, exp, log = 1.0 - s, math.log1p, math.exp, math.log

        def draw() -> int:
            while True:
                u = hn + rnd() * span
                t = u * one_s
                if t < -1.0:
                    t = -1.0
                x = exp((log1p(t) / t if abs(t) > 1e-8 else 1.0 - t * (0.5 - t * (1.0 / 3.0 - 0.25 * t))) * u)
                k = int(x + 0.5)
                k = 1 if k < 1 else n if k > n else k
                if k - x <= c or u >= hi(k + 0.5) - exp(-s * log(k)):
                    return k - 1

        return draw


Block = tuple[list[float], list[int], list[int], list[str]]  # times, recursive index, kind, identifier


class ArrivalBlocks:
    """Arrivals from ``t0`` until ``t_end`` (seconds since the epoch), in blocks (see the module docstring).

    ``rate_at(t)`` is the rate in force at ``t`` (constant between ``edges``); ``key()`` draws a readable
    identifier, ``unknown()`` one that does not exist; ``shares`` splits arrivals over recursive nodes."""

    def __init__(self, *, t0: float, t_end: float, rate_at: Callable[[float], float], edges: Sequence[float],
                 poisson: bool, shares: Sequence[float], unknown_share: float, write_share: float,
                 register_share: float, key: Callable[[], str], unknown: Callable[[], str],
                 rng: random.Random, block: int = 4096) -> None:
        self.t, self.t_end, self.rate_at, self.poisson = t0, t_end, rate_at, poisson
        self.edges = sorted(e for e in edges if t0 < e < t_end)
        total = sum(shares)
        self.cum = list(accumulate(s / total for s in shares))
        self.cum[-1] = 1.0
        self.unknown_share, self.write_share = unknown_share, write_share
        self.register_share = register_share
        self.key, self.unknown, self.rng, self.block = key, unknown, rng, block
        self.count = 0

    def _next_edge(self, t: float) -> float:
        i = bisect.bisect_right(self.edges, t)
        return self.edges[i] if i < len(self.edges) else self.t_end

    def next_block(self) -> Block | None:
        times: list[float] = []
        t, t_end = self.t, self.t_end
        rng = self.rng
        rnd, expo = rng.random, rng.expovariate
        while len(times) < self.block and t < t_end:
            rate = self.rate_at(t)
            edge = self._next_edge(t)
            if rate <= 0:
                t = edge
                continue
            gap = 1.0 / rate
            room = self.block - len(times)
            while room:
                nxt = t + (expo(rate) if self.poisson else gap)
                if nxt >= edge:  # memoryless: start again at the edge with the rate after it
                    t = edge if self.poisson else nxt
                    if not self.poisson and nxt < t_end:
                        times.append(nxt)
                        room -= 1
                    break
                t = nxt
                times.append(t)
                room -= 1
        self.t = t
        if not times:
            return None
        n = len(times)
        self.count += n
        cum = self.cum
        recs = [0] * n if len(cum) == 1 else [bisect.bisect_left(cum, rnd()) for _ in range(n)]
        kinds = [READ] * n
        handles: list[str] = []
        w, r, u = self.write_share, self.write_share + self.register_share, self.unknown_share
        key, unknown = self.key, self.unknown
        if r > 0 or u > 0:
            for i in range(n):
                x = rnd()
                if x < w:
                    kinds[i] = WRITE
                    handles.append(key())
                elif x < r:
                    kinds[i] = REGISTER
                    handles.append("")
                elif x < r + u:
                    handles.append(unknown())
                else:
                    handles.append(key())
        else:
            handles = [key() for _ in range(n)]
        return times, recs, kinds, handles
