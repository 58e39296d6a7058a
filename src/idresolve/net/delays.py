"""Link delays on event-loop timers, trimmed so that on average they last what the latency model asked.

The event loop's timers are coarse: uvloop (libuv) counts whole milliseconds from a loop time that is
read once per loop pass, so ``call_later(0.0151, ...)`` fires anywhere from about 14 to 16 ms later,
and asyncio's own loop sleeps in epoll's whole milliseconds too. Per timer that is noise; summed over
the hops of a resolution it is a bias (measured here: a 2.35 ms delay fired after 2.10 ms on average, a
0.745 ms one after 1.10 ms), and the latency model's figures are means that a benchmark compares with.

``DelayTimers.call_later(delay_s, fn, *args)`` measures every firing against the intended instant on
``time.perf_counter`` and keeps, per sub-millisecond phase of the delay, a running mean of how late
such timers fire; it asks the loop for that much less next time. It is an integral controller: where the
loop can only honour whole milliseconds it alternates between the two neighbours so that the mean comes
out right. A firing held up by a busy loop (more than ``MAX_CORRECTION_S`` late) is the load's doing, not
the timer's, and is clipped before it is learned. Every firing's lateness is also counted in 0.1 ms bins
(``late_bins``, on ``/metrics`` as ``idresolve_link_timer_late_total{late_us}``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DelayTimers"]

PHASES = 10  # delays are told apart by their sub-millisecond phase, in tenths of a millisecond
LATE_BIN_S = 0.0001  # firings are counted by how late they were, in bins of 0.1 ms ...
LATE_BINS = (-20, 300)  # ... from 2 ms early to 30 ms late (beyond: the edge bins)
GAIN = 0.05  # share of each firing's error learned
MAX_CORRECTION_S = 0.002  # a trim beyond this is a loop under load, not timer granularity


class DelayTimers:
    """Timers for link delays on one event loop (see the module docstring)."""

    __slots__ = ("_clock", "_loop", "fired", "late_s_total", "trim_s", "late_bins")

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter,
                 loop: Callable[[], Any] = asyncio.get_running_loop) -> None:
        self._clock, self._loop = clock, loop  # injectable for a virtual-time test
        self.trim_s = [0.0] * PHASES  # seconds to ask less, per phase (negative: ask more)
        self.fired = 0
        self.late_s_total = 0.0  # sum of (actual - intended) over every firing: the residual bias
        # How late each firing was (bin of LATE_BIN_S -> firings): the timers' error as a distribution, which
        # the simulator's agreement run reproduces per message (``sim.links.Links.set_late``).
        self.late_bins: dict[int, int] = {}

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` ``delay_s`` seconds from now, on average (``delay_s`` > 0)."""
        phase = int(delay_s * 1000.0 * PHASES) % PHASES
        due = self._clock() + delay_s
        ask = delay_s - self.trim_s[phase]
        self._loop().call_later(ask if ask > 0.0 else 0.0, self._fire, phase, due, ask, fn, args)

    def _fire(self, phase: int, due: float, ask: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        late = self._clock() - due
        self.fired += 1
        self.late_s_total += late
        b = math.floor(late / LATE_BIN_S)
        b = LATE_BINS[0] if b < LATE_BINS[0] else LATE_BINS[1] if b > LATE_BINS[1] else b
        bins = self.late_bins
        bins[b] = bins.get(b, 0) + 1
        # Learn, unless asking less was impossible (a timer asked for 0 s that still fires late).
        if ask > 0.0 or late < 0.0:
            err = MAX_CORRECTION_S if late > MAX_CORRECTION_S else -MAX_CORRECTION_S if late < -MAX_CORRECTION_S else late
            trim = self.trim_s[phase] + GAIN * err
            self.trim_s[phase] = MAX_CORRECTION_S if trim > MAX_CORRECTION_S else (
                -MAX_CORRECTION_S if trim < -MAX_CORRECTION_S else trim)
        fn(*args)

    @property
    def mean_late_s(self) -> float:
        """Mean of (actual - intended) firing time so far: what is left of the bias."""
        return self.late_s_total / self.fired if self.fired else 0.0
