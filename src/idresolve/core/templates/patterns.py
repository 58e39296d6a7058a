"""Field patterns, matched in time linear in the input: RE2, never Python's backtracking ``re``.

Python's ``re`` backtracks: ``(a+)+$`` against 30 ``a`` and a ``b`` takes about 2**30 steps, and a
template author (or an attacker publishing a template) chooses the pattern. RE2 (``google-re2``)
compiles a pattern to an automaton and matches in O(len(pattern) * len(input)) with no backtracking;
what it cannot do that way it refuses to compile (backreferences, look-around).

Rules:
- A pattern is at most ``MAX_PATTERN_CHARS`` characters of RE2 syntax and must compile within
  ``PATTERN_MAX_MEM`` bytes of RE2 memory (program and DFA cache together); a pattern whose automaton
  is larger (``[\\p{L}]{1,255}``: counted repetition of a large class) is refused at parse time, so a
  template bounds what its patterns can cost. Bound lengths with ``maxLength`` instead.
- It is matched against the whole value (``fullmatch``), on the value's UTF-8 bytes as stored (no
  decode, no copy), case-sensitively; ``\\d``, ``\\w``, ``\\s`` are ASCII as in RE2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

from ..errors import InvalidValue

try:  # the binding's own matcher, without the Python wrapper's span bookkeeping (half the cost)
    from re2 import _re2

    _ANCHOR_BOTH: Any = _re2.RE2.Anchor.ANCHOR_BOTH
except (ImportError, AttributeError):  # a later binding without it: the public API below
    _ANCHOR_BOTH = None
_NO_MATCH = (-1, -1)

MAX_PATTERN_CHARS = 256
#: RE2's memory budget per pattern (its default is 8 MiB): bounds a template with 100 patterned
#: fields to about 25 MiB in the worst case, while ordinary patterns need a few KiB.
PATTERN_MAX_MEM = 256 * 1024


def _options() -> Any:
    opts = re2.Options()
    opts.max_mem = PATTERN_MAX_MEM
    opts.log_errors = False  # RE2 would write every refused pattern to stderr
    opts.never_capture = True  # groups are never read; capture-free matching is cheaper
    return opts


_OPTIONS = _options()


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled field pattern. ``text`` is what the author wrote; ``matches`` takes UTF-8 bytes."""

    text: str
    _regexp: Any = field(repr=False, compare=False)

    def matches(self, data: bytes) -> bool:
        return self._regexp.fullmatch(data) is not None

    def matcher(self) -> Callable[[bytes], bool]:
        """A function ``data -> whether the whole of it matches``, as cheap as the binding allows:
        RE2's ``Match`` anchored at both ends when the binding exposes it, else ``fullmatch``."""
        raw: Any = getattr(self._regexp, "_regexp", None)
        if _ANCHOR_BOTH is not None and callable(getattr(raw, "Match", None)):
            match, anchor = raw.Match, _ANCHOR_BOTH
            return lambda data: match(anchor, data, 0, len(data))[0] != _NO_MATCH
        return self.matches

    @property
    def program_size(self) -> int:
        """RE2's instruction count: the size of the automaton the pattern compiled to."""
        return int(self._regexp.programsize)


def compile_pattern(text: object, *, where: str = "pattern") -> Pattern:
    """Compile an author's pattern; raises ``InvalidValue`` naming ``where`` and RE2's reason."""
    if not isinstance(text, str) or not text:
        raise InvalidValue(f"{where}: a pattern must be a non-empty string")
    if len(text) > MAX_PATTERN_CHARS:
        raise InvalidValue(f"{where}: pattern longer than {MAX_PATTERN_CHARS} characters")
    if any(ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise InvalidValue(f"{where}: pattern holds control characters (write them as escapes)")
    try:
        regexp = re2.compile(text, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidValue(f"{where}: pattern {text!r} is not valid RE2 syntax or is too large: {reason}") from None
    return Pattern(text, regexp)
