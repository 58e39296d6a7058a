"""The asyncio mover of the resolve pipeline: runs a ``nodes.pipeline.Walk`` over a ``ClientPool``.

This is the only place where a recursive node waits on the network. It does nothing but move the
messages the pipeline asks for and report, with the time, what came back or that nothing did.
"""

from __future__ import annotations

from collections.abc import Callable

from ..nodes.pipeline import Walk
from ..nodes.recursive import Done
from .client import ClientPool


async def drive(walk: Walk, pool: ClientPool, *, timeout_s: float, clock: Callable[[], float]) -> Done:
    while (hop := walk.next_hop(clock())) is not None:
        upstream, request = hop
        try:
            response = await pool.request(upstream.host, upstream.port, request, timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            walk.timed_out(clock())
            continue
        walk.answered(response, clock())
    return walk.done
