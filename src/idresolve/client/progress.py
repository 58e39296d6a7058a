"""A progress bar on stderr for long client-side jobs (``idresolve seed``, ``register --batch``): done of
total, the rate so far and the time left at that rate.

Rules: it draws at most every ``every_s`` seconds (a bar redrawn per batch of a 10M-identifier seed would
cost more than the batch), on one line rewritten with ``\\r``, and only when ``show`` is set; ``finish``
draws the last state and ends the line. Safe to call from several threads (one lock).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

WIDTH = 30


def eta_text(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``: short enough for the end of a bar."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def bar_text(done: int, total: int, elapsed_s: float) -> str:
    """One bar: ``[####......] 1,200/10,000 (3,400/s, ETA 3s)``."""
    filled = int(WIDTH * done / total) if total else WIDTH
    filled = min(WIDTH, max(0, filled))
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = f"ETA {eta_text((total - done) / rate)}" if rate > 0 and done < total else (
        "done" if done >= total else "ETA ?")
    return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done:,}/{total:,} ({rate:,.0f}/s, {left})"


class Progress:
    def __init__(self, total: int, *, show: bool = True, every_s: float = 0.25, out: TextIO | None = None,
                 label: str = "") -> None:
        self.total, self.show, self.every_s, self.label = total, show, every_s, label
        self.out = out
        self.done = 0
        self.t0 = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self.show and now - self._shown >= self.every_s:
                self._shown = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        out = self.out or sys.stderr
        print(f"\r  {self.label}{bar_text(self.done, self.total, now - self.t0)}", end="", file=out, flush=True)

    def finish(self) -> None:
        with self._lock:
            if self.show:
                self._draw(time.monotonic())
                print(file=self.out or sys.stderr)
