"""Admission control: shed work with SERVER_TOO_BUSY (3) instead of growing queues.

- ``LoopLag`` measures how late a periodic timer fires in this event loop. The signal is the *minimum*
  over the last few ticks: one long request (a 2,000-identifier batch) makes one tick late and must
  not shed anything, while a saturated loop fires every tick late. One per loop, shared by its nodes.
- ``Admission.admit(client, backlog)`` answers False when the request should get code 3: the loop's lag is
  above ``lag_threshold_s`` *and* requests are queueing (``backlog``: several requests arrived in one
  read, or others are still in flight), in which case a growing fraction is refused, deterministically,
  with no random draw; or the client has used up its token bucket (``rate_per_client``; recursive
  nodes); or too many requests are in flight on this node. A single client sending big requests one
  after another keeps the loop busy but queues nothing, so it is never refused.
Refusing is cheap, so admitted requests keep a bounded latency, and everything recovers by itself when
the load drops (the lag falls, buckets refill).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

MAX_TRACKED_CLIENTS = 10_000


class LoopLag:
    def __init__(self, interval_s: float = 0.02, window: int = 5) -> None:
        self.interval_s = interval_s
        self._recent: deque[float] = deque([0.0], maxlen=window)
        self.lag_s = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval_s
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        late = max(0.0, self._loop.time() - self._due)
        self._recent.append(late)
        self.lag_s = min(self._recent)
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


_loop_lags: dict[int, LoopLag] = {}


def loop_lag() -> LoopLag:
    """The shared lag monitor of the running loop (started on first use)."""
    loop = asyncio.get_running_loop()
    lag = _loop_lags.get(id(loop))
    if lag is None or lag._loop is not loop:
        lag = _loop_lags[id(loop)] = LoopLag()
        lag.start()
    return lag


@dataclass
class AdmissionStats:
    admitted: int = 0
    shed_overload: int = 0
    shed_rate: int = 0
    shed_inflight: int = 0


class Admission:
    def __init__(self, *, lag_threshold_s: float = 0.05, rate_per_client: float | None = None,
                 burst: float | None = None, max_inflight: int = 20_000) -> None:
        self.lag_threshold_s = lag_threshold_s
        self.rate = rate_per_client
        self.burst = burst if burst is not None else (rate_per_client or 0.0) * 0.2 + 1
        self.max_inflight = max_inflight
        self.inflight = 0
        self.stats = AdmissionStats()
        self._lag: LoopLag | None = None
        self._shed_acc = 0.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, last time)

    def _lag_s(self) -> float:
        if self._lag is None:
            try:
                self._lag = loop_lag()
            except RuntimeError:  # no running loop (unit use)
                return 0.0
        return self._lag.lag_s

    def admit(self, client: str | None = None, backlog: bool = True) -> bool:
        lag = self._lag_s() if backlog or self.inflight > 0 else 0.0
        if lag > self.lag_threshold_s:
            self._shed_acc += min(0.95, (lag - self.lag_threshold_s) / self.lag_threshold_s)
            if self._shed_acc >= 1.0:
                self._shed_acc -= 1.0
                self.stats.shed_overload += 1
                return False
        if self.inflight >= self.max_inflight:
            self.stats.shed_inflight += 1
            return False
        if self.rate is not None and client is not None and not self._take(client, time.monotonic()):
            self.stats.shed_rate += 1
            return False
        self.stats.admitted += 1
        return True

    def _take(self, client: str, now: float) -> bool:
        assert self.rate is not None
        buckets = self._buckets
        tokens, last = buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        buckets[client] = (tokens - 1.0 if ok else tokens, now)
        buckets.move_to_end(client)
        if len(buckets) > MAX_TRACKED_CLIENTS:
            buckets.popitem(last=False)
        return ok
