"""A deliberately broken build, from outside the product: with this folder on ``PYTHONPATH``, Python runs
this file at start-up in every process of the tree (``idresolve up`` and its workers), and each recursive
node there spends 5 ms of CPU on every binary request before answering it (a busy wait, so that both the
answers per CPU-second and the latency show it). Nothing in ``src/`` knows about it.

Used by ``tests/test_bench_gate.py`` to show that ``idresolve bench run --check`` fails on a slow node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from idresolve.net import services

DELAY_S = 0.005


def _slowed(fn: Callable[..., Any]) -> Callable[..., Any]:
    def slow(*args: Any, **kwargs: Any) -> Any:
        end = time.perf_counter() + DELAY_S
        while time.perf_counter() < end:  # the point: burn the CPU a slower build would
            pass
        return fn(*args, **kwargs)

    return slow


services.RecursiveService.handle = _slowed(services.RecursiveService.handle)  # type: ignore[method-assign]
services.RecursiveService.cached = _slowed(services.RecursiveService.cached)  # type: ignore[method-assign]
