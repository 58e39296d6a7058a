"""What-if events at a virtual time, written one per line as ``WHEN ACTION ARGS``:

    08:30 kill top-beijing            a node's process dies: peers are refused after one round trip
    +2h recover top-beijing           it starts again: its store is kept, its caches are empty
    09:00 partition sec-steel-jinan,ent-steel-jinan-1   messages between these and the rest are lost
    10:00 heal                        the partition ends
    11:00 slow sec-tyre-qingdao 4     its service times x 4 (1: back to normal)
    12:00 degrade rec-jinan top-beijing 3 loss=0.01 add=5   that link: delay x 3, +5 ms, 1 % loss
    12:00 degrade rec-jinan * 2       every link of rec-jinan
    13:00 scenario before-interconnect   switch the latency scenario
    14:00 connect sec-ceramics-zibo   the top level allocates its prefix (``all``: every unconnected one)
    15:00 disconnect sec-tyre-qingdao the top level revokes it
    16:00 ttl-cap 4h [rec-jinan]      recursive nodes' TTL cap (all of them unless one is named)
    16:00 cache-size 50000 [rec-jinan]   recursive nodes' answer cache entries
    16:00 negative-ttl 60s [rec-jinan]   cache "not found" answers this long

``WHEN`` is a time of day (the next time the clock shows it), ``+DURATION`` after the start, or a
duration. Parsing checks the shape here; names are checked against the topology when the run is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from .timetext import at_s, duration_s

ACTIONS = {  # action -> (min args, max args)
    "kill": (1, 1), "recover": (1, 1), "partition": (1, 1), "heal": (0, 0), "slow": (2, 2),
    "degrade": (3, 5), "scenario": (1, 1), "connect": (1, 1), "disconnect": (1, 1),
    "ttl-cap": (1, 2), "cache-size": (1, 2), "negative-ttl": (1, 2),
}


class EventError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SimEvent:
    at_s: float  # seconds after the start of the run
    action: str
    args: tuple[str, ...]
    text: str  # as written, for reports and errors

    @property
    def label(self) -> str:
        return f"{self.action} {' '.join(self.args)}".strip()


def parse_event(text: str, start_of_day_s: float) -> SimEvent:
    """One event line (see the module docstring). Raises ``EventError`` saying what is wrong."""
    parts = text.split()
    if len(parts) < 2:
        raise EventError(f"event {text!r}: write WHEN ACTION [ARGS], e.g. '08:30 kill top-beijing'")
    when, action, *args = parts
    if action not in ACTIONS:
        raise EventError(f"event {text!r}: unknown action {action!r}; actions: {', '.join(sorted(ACTIONS))}")
    lo, hi = ACTIONS[action]
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise EventError(f"event {text!r}: {action} takes {want} argument(s), got {len(args)}")
    try:
        t = at_s(when, start_of_day_s, f"event time {when!r}")
        _check_args(action, args)
    except ValueError as exc:
        raise EventError(f"event {text!r}: {exc}") from None
    return SimEvent(t, action, tuple(args), text.strip())


def _number(text: str, what: str, *, low: float = 0.0) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, not {text!r}") from None
    if not v >= low:
        raise ValueError(f"{what} must be at least {low:g}, not {text!r}")
    return v


def _check_args(action: str, args: list[str]) -> None:
    if action == "slow":
        _number(args[1], "the slow-down factor", low=0.01)
    elif action == "degrade":
        _number(args[2], "the delay factor")
        for extra in args[3:]:
            degrade_option(extra)
    elif action in ("ttl-cap", "negative-ttl"):
        duration_s(args[0], action)
    elif action == "cache-size" and (not args[0].isdigit() or int(args[0]) < 1):
        raise ValueError(f"cache-size must be a whole number >= 1, not {args[0]!r}")


def degrade_option(text: str) -> tuple[str, float]:
    """``loss=0.01`` or ``add=5`` (milliseconds) of a degrade event."""
    key, eq, value = text.partition("=")
    if not eq or key not in ("loss", "add"):
        raise ValueError(f"degrade options are loss=P and add=MS, not {text!r}")
    v = _number(value, key)
    if key == "loss" and v >= 1.0:
        raise ValueError(f"loss must be below 1, not {value}")
    return key, v


def node_args(event: SimEvent) -> list[str]:
    """The node names an event names (to check them against the topology)."""
    a = event.args
    if event.action in ("kill", "recover", "slow"):
        return [a[0]]
    if event.action == "partition":
        return a[0].split(",")
    if event.action == "degrade":
        return [x for x in a[:2] if x != "*"]
    if event.action in ("connect", "disconnect"):
        return [] if a[0] == "all" else [a[0]]
    if event.action in ("ttl-cap", "cache-size", "negative-ttl") and len(a) == 2:
        return [a[1]]
    return []
