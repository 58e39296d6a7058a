"""Link-delay timers (net/delays.py) on a virtual loop whose timers, like libuv's, count whole
milliseconds from a loop time read once per pass: the trim must take the bias out of the mean."""

from __future__ import annotations

import heapq
import math
import random

from idresolve.net.delays import LATE_BIN_S, LATE_BINS, MAX_CORRECTION_S, DelayTimers


class CoarseLoop:
    """Virtual time. ``call_later`` rounds the delay to whole ms and counts from a stale loop time
    (the start of the current pass, up to 0.9 ms ago): a timer fires early or late by up to a ms."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.pass_start = 0.0
        self.heap: list[tuple[float, int, object, tuple[object, ...]]] = []
        self.seq = 0

    def call_later(self, delay: float, fn: object, *args: object) -> None:
        ticks = round(delay * 1000)
        when = math.floor(self.pass_start * 1000) / 1000 + ticks / 1000
        when = max(when, self.now) + 0.00002  # wake-up cost
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, fn, args))

    def run_one(self) -> None:
        when, _, fn, args = heapq.heappop(self.heap)
        self.now = max(self.now, when)
        self.pass_start = self.now
        fn(*args)  # type: ignore[operator]


def _drive(timers: DelayTimers | None, loop: CoarseLoop, delays: list[float], n: int) -> dict[float, float]:
    """Schedule ``n`` rounds of every delay at random instants; mean (actual - intended) per delay in ms."""
    errs: dict[float, list[float]] = {d: [] for d in delays}

    def fired(d: float, due: float) -> None:
        errs[d].append(loop.now - due)

    for _ in range(n):
        until = loop.now + loop.rng.uniform(0.0002, 0.003)  # the next request arrives then
        while loop.heap and loop.heap[0][0] <= until:
            loop.run_one()  # timers fire in between, each when it is due
        loop.now = until
        loop.pass_start = loop.now - loop.rng.uniform(0.0, 0.0009)  # busy a while into its pass
        for d in delays:
            due = loop.now + d
            if timers is None:
                loop.call_later(d, fired, d, due)
            else:
                timers.call_later(d, fired, d, due)
    while loop.heap:
        loop.run_one()
    return {d: 1000 * sum(v[200:]) / len(v[200:]) for d, v in errs.items()}


DELAYS = [0.0151, 0.001475, 0.00235, 0.000745, 0.0002]


def test_raw_coarse_timers_are_biased() -> None:
    loop = CoarseLoop(1)
    raw = _drive(None, loop, DELAYS, 2000)
    assert max(abs(v) for v in raw.values()) > 0.2  # the problem the trim solves (ms)


def test_trimmed_timers_fire_on_time_on_average() -> None:
    loop = CoarseLoop(1)
    timers = DelayTimers(clock=lambda: loop.now, loop=lambda: loop)
    trimmed = _drive(timers, loop, DELAYS, 2000)
    assert all(abs(v) < 0.03 for v in trimmed.values()), trimmed
    assert timers.fired == 2000 * len(DELAYS)
    assert all(abs(t) <= MAX_CORRECTION_S for t in timers.trim_s)


def test_a_stalled_loop_is_not_learned_as_bias() -> None:
    loop = CoarseLoop(2)
    timers = DelayTimers(clock=lambda: loop.now, loop=lambda: loop)
    timers.call_later(0.005, lambda: None)
    loop.now += 1.0  # the loop was blocked for a second
    loop.run_one()
    assert all(abs(t) <= MAX_CORRECTION_S * 0.05 + 1e-12 for t in timers.trim_s)
    assert timers.late_bins == {LATE_BINS[1]: 1}  # a second late: counted in the last bin, not dropped


def test_lateness_is_counted_per_bin_and_sums_to_the_firings() -> None:
    loop = CoarseLoop(3)
    timers = DelayTimers(clock=lambda: loop.now, loop=lambda: loop)
    _drive(timers, loop, DELAYS, 300)
    assert sum(timers.late_bins.values()) == timers.fired == 300 * len(DELAYS)
    assert all(LATE_BINS[0] <= b <= LATE_BINS[1] for b in timers.late_bins)
    # The coarse loop, trimmed, fires within about two milliseconds of the intended time.
    assert min(timers.late_bins) >= -20 and max(timers.late_bins) <= 20
    mean_from_bins = sum((b + 0.5) * LATE_BIN_S * n for b, n in timers.late_bins.items()) / timers.fired
    assert abs(mean_from_bins - timers.mean_late_s) <= LATE_BIN_S  # the bins keep the mean to a bin's width
