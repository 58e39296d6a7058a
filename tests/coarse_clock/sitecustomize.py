"""A wall clock that moves in whole hours, for every process started with this folder on ``PYTHONPATH``
(Python runs this file at start-up): ``time.time()`` returns the start of the current hour.

``test_harden_crash.py`` starts the top-level nodes this way to make "a change in the same second as the
copy the peer holds" certain instead of something to retry for (every timestamp and every replication
version such a node takes within the hour is the same whole second). Monotonic clocks are untouched, so
timers, timeouts and the event loop run as usual. Nothing in ``src/`` knows about it.
"""

from __future__ import annotations

import time

_real_time = time.time


def _hour_start() -> float:
    now = int(_real_time())
    return float(now - now % 3600)


time.time = _hour_start
