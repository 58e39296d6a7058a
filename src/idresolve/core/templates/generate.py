"""Filled template fields for seeding: realistic values, the same ones for the same seed and identifier.

``generate_values(template, handle, seed=...)`` returns the values of every required field and of about
``optional_share`` of the optional ones (which ones depends on the identifier), plus the 1001 reference
when ``ref`` is given. The random stream is seeded from the seed, the identifier (folded), and the
template's name and version, never from the process, so two runs, two processes or two machines
produce the same record for the same identifier.

Values come from the field's own rules: an enumeration value, a number inside the field's range, a date
in 2019-2025, a datetime in China's zone (+08:00). Text fields start from the author's ``examples``:
free text (a name, a standard) is taken as written; a patterned code and a reference's suffix get the
second half of each long digit run redrawn (batch ``2106023`` becomes ``210xxxx``); a candidate that
fails the field's checker falls back to the example itself. Every value
returned passes the field's checker; a text field with a pattern and no examples cannot be generated
and raises ``InvalidValue`` saying so.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from urllib.parse import quote

from ..errors import InvalidValue
from ..handles import fold
from ..values import DEFAULT_TTL_S, TEMPLATE_FIELD_MAX_CHARS, HandleValue
from .definition import Template
from .fields import Field, FieldType
from .storage import TemplateRef

_DAY0 = date(2019, 1, 1)
_DAYS = 7 * 365
_CENT = Decimal("0.01")
_REDRAWS = 4
_DIGIT_RUN = re.compile(r"[0-9]{4,}")


def _span(f: Field, default_width: int) -> tuple[Decimal, Decimal]:
    low = None if f.minimum is None else Decimal(str(f.minimum))
    high = None if f.maximum is None else Decimal(str(f.maximum))
    if low is None:
        return (Decimal(0), Decimal(default_width)) if high is None else (high - default_width, high)
    return low, (low + default_width if high is None else high)


def _integer(f: Field, rng: random.Random) -> str:
    low, high = _span(f, 10_000)
    return str(rng.randint(int(low.to_integral_value(ROUND_CEILING)), int(high.to_integral_value(ROUND_FLOOR))))


def _decimal(f: Field, rng: random.Random) -> str:
    low, high = _span(f, 1_000)
    first = int((low / _CENT).to_integral_value(ROUND_CEILING))
    last = int((high / _CENT).to_integral_value(ROUND_FLOOR))
    if first > last:  # the range is narrower than a hundredth
        return format(low, "f")
    return format(Decimal(rng.randint(first, last)) * _CENT, "f")


def _redrawn(example: str, rng: random.Random) -> str:
    """Redraw the second half of every run of four or more digits: serial and batch numbers vary,
    while short numbers (a tyre size 205/55R16, a model XQG100) and leading dates (2021...) stay."""
    def redraw(run: re.Match[str]) -> str:
        digits = run.group()
        keep = len(digits) // 2
        width = len(digits) - keep
        return digits[:keep] + str(rng.randrange(10**width)).zfill(width)  # each digit uniform, one draw

    return _DIGIT_RUN.sub(redraw, example)


def _text_candidates(f: Field, handle: str, rng: random.Random) -> Iterator[str]:
    """Candidates in order of preference, drawn only when the one before fails the checker (the first
    usually passes: seeding a templated record draws one candidate per field, not six)."""
    if f.examples:
        example = rng.choice(f.examples)
        if f.type is FieldType.REFERENCE:  # another identifier: keep its prefix, vary its suffix
            head, _, tail = example.partition("/")
            for _ in range(_REDRAWS):
                yield f"{head}/{_redrawn(tail, rng)}"
        elif f.pattern is not None:  # a code or a number: vary it
            for _ in range(_REDRAWS):
                yield _redrawn(example, rng)
        yield example  # free text (a name, a standard) is kept as the author wrote it
    prefix, _, suffix = handle.partition("/")
    if f.type is FieldType.URL:
        generic = f"https://example.com/{quote(prefix)}/{quote(suffix, safe='')}/{f.name}"
    elif f.type is FieldType.REFERENCE:
        generic = f"{prefix}/{f.name.upper()}{rng.randrange(10**8):08d}"
    else:
        generic = f"{f.name}-{rng.randrange(10**6):06d}"
    yield generic[: f.max_length or TEMPLATE_FIELD_MAX_CHARS]  # a long identifier's URL, cut to fit


def _candidates(f: Field, handle: str, rng: random.Random) -> Iterable[str]:
    if f.type is FieldType.ENUMERATION:
        return [rng.choice(f.values).value]
    if f.type is FieldType.BOOLEAN:
        return [rng.choice(("true", "false"))]
    if f.type is FieldType.INTEGER:
        return [_integer(f, rng)]
    if f.type is FieldType.DECIMAL:
        return [_decimal(f, rng)]
    if f.type is FieldType.DATE:
        return [(_DAY0 + timedelta(days=rng.randrange(_DAYS))).isoformat()]
    if f.type is FieldType.DATETIME:
        day = _DAY0 + timedelta(days=rng.randrange(_DAYS))
        seconds = rng.randrange(86_400)
        return [f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}+08:00"]
    return _text_candidates(f, handle, rng)


def field_value(f: Field, handle: str, rng: random.Random) -> str:
    """One value for ``f`` that passes its checker, drawn from ``rng``."""
    for text in _candidates(f, handle, rng):
        if f.check(text.encode("utf-8")) is None:
            return text
    raise InvalidValue(f"cannot generate a value for field {f.name} ({f.index}): give it examples that fit")


def generate_values(template: Template, handle: str, *, seed: int | str = 0, ref: TemplateRef | None = None,
                    optional_share: float = 0.75, ttl_s: int = DEFAULT_TTL_S) -> tuple[HandleValue, ...]:
    """The template field values (and the 1001 reference, when given) for identifier ``handle``."""
    rng = random.Random(f"{seed}|{fold(handle)}|{template.name}|{template.version}")
    out = [] if ref is None else [ref.to_value(ttl_s=ttl_s)]
    for f in template.fields:
        if not f.required and rng.random() >= optional_share:
            continue
        out.append(HandleValue(f.index, f.name, field_value(f, handle, rng).encode("utf-8"), ttl_s))
    return tuple(out)
