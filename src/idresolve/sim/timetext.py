"""Durations and times of day as people write them: ``90s``, ``15m``, ``1h30m``, ``24h``, ``08:30``."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def duration_s(text: object, what: str = "duration") -> float:
    """``1h30m`` -> 5400.0; a bare number is seconds. Raises ``ValueError`` naming ``what``."""
    if isinstance(text, bool):
        raise ValueError(f"{what} must be a duration like 90s, 15m, 1h30m or a number of seconds, not {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"{what} must be a number of seconds >= 0, not {text!r}")
        return float(text)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a duration like 90s, 15m, 1h30m, not {text!r}")
    s = text.strip().lower()
    total, pos = 0.0, 0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s):
        try:
            return duration_s(float(s), what)
        except ValueError:
            raise ValueError(f"{what} {text!r} is not a duration like 90s, 15m, 1h30m, 2d") from None
    return total


def clock_s(text: str, what: str = "time") -> float:
    """``08:30`` or ``08:30:15`` -> seconds after midnight."""
    m = _CLOCK.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{what} {text!r} is not a time of day like 08:30")
    h, mi, sec = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if h > 23 or mi > 59 or sec > 59:
        raise ValueError(f"{what} {text!r} is not a time of day (00:00 to 23:59:59)")
    return h * 3600.0 + mi * 60.0 + sec


def at_s(text: str, start_of_day_s: float, what: str = "time") -> float:
    """When an event happens, in seconds from the start of the run: ``+1h30m`` after the start, ``08:30``
    the next time the clock shows 08:30 (the run starts at ``start_of_day_s`` after midnight)."""
    t = text.strip()
    if t.startswith("+"):
        return duration_s(t[1:], what)
    if ":" in t:
        return (clock_s(t, what) - start_of_day_s) % 86400.0
    return duration_s(t, what)


def show_s(seconds: float) -> str:
    """5400 -> ``1h30m``; 90.5 -> ``1m30.5s`` (for messages and reports)."""
    if seconds < 60:
        return f"{seconds:g}s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = (f"{int(h)}h" if h else "") + (f"{int(m)}m" if m else "") + (f"{s:g}s" if s else "")
    return out or "0s"
