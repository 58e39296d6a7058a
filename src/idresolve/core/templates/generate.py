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
from collections.abc import Callable
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


def _cannot(f: Field) -> InvalidValue:
    return InvalidValue(f"cannot generate a value for field {f.name} ({f.index}): give it examples that fit")


# -- plans: each field's draws, worked out once per template ------------------------------------------------
#
# Reading a field's rules on every draw (a chain of type tests, the range as Decimals, a regular expression
# substitution for every example redrawn) cost seeding ten million records 150 million readings. A plan
# reads them once per template: each field becomes a function from the random stream and the identifier
# to the value's bytes. The draws are those of the generator as first written, in the same order, so
# records stay what earlier versions seeded (tests/test_templates_generate.py keeps that version as its
# oracle and holds the two equal).

Draw = Callable[[random.Random, str], bytes]
_DATE_TEXT = tuple((_DAY0 + timedelta(days=d)).isoformat() for d in range(_DAYS))
_PLANS: dict[int, tuple[Template, tuple[tuple[int, str, bool, Draw], ...]]] = {}
_MAX_PLANS = 256


def _cents(n: int) -> str:
    """``format(Decimal(n) * Decimal("0.01"), "f")`` in integers."""
    m = -n if n < 0 else n
    return f"{'-' if n < 0 else ''}{m // 100}.{m % 100:02d}"


def _runs(text: str) -> tuple[tuple[str, str, int], ...]:
    """``text`` as (literal before, digits kept, digits redrawn) per run of four or more digits, and the
    literal after the last run (kept "", redrawn 0). The second half of every such run is redrawn: serial
    and batch numbers vary, while short numbers (a tyre size 205/55R16, a model XQG100) and the leading
    half of a long one (a date 2021...) stay."""
    out, pos = [], 0
    for m in _DIGIT_RUN.finditer(text):
        digits = m.group()
        keep = len(digits) // 2
        out.append((text[pos:m.start()], digits[:keep], len(digits) - keep))
        pos = m.end()
    out.append((text[pos:], "", 0))
    return tuple(out)


def _redraw_runs(runs: tuple[tuple[str, str, int], ...], rng: random.Random) -> str:
    """The text ``runs`` came from, each run's second half redrawn: one ``randrange`` per run, left to right,
    each digit uniform."""
    parts = []
    for literal, kept, width in runs:
        parts.append(literal)
        if width:
            parts.append(kept + str(rng.randrange(10**width)).zfill(width))
    return "".join(parts)


def _text_plan(f: Field) -> Draw:
    """A text field's candidates in order of preference, each checked, each drawn only when the one before
    failed (the first usually passes: one candidate per field, not six): the example redrawn up to four
    times (a code with a pattern; a reference keeps its prefix and varies its suffix), the example as
    written (free text such as a name or a standard), then a generic value (a long identifier's URL cut
    to fit)."""
    check, name, limit = f.check, f.name, f.max_length or TEMPLATE_FIELD_MAX_CHARS
    reference, url = f.type is FieldType.REFERENCE, f.type is FieldType.URL
    redraws = reference or f.pattern is not None
    # Per example: the text as written, and the parts that vary (a reference: the suffix only).
    examples = []
    for example in f.examples:
        head, _, rest = example.partition("/")
        examples.append((example, f"{head}/" if reference else "", _runs(rest if reference else example)))
    choices = tuple(examples)
    upper = name.upper()

    def draw(rng: random.Random, handle: str) -> bytes:
        if choices:
            example, head, runs = rng.choice(choices)
            if redraws:
                for _ in range(_REDRAWS):
                    data = (head + _redraw_runs(runs, rng)).encode("utf-8")
                    if check(data) is None:
                        return data
            data = example.encode("utf-8")
            if check(data) is None:
                return data
        prefix, _, suffix = handle.partition("/")
        if url:
            generic = f"https://example.com/{quote(prefix)}/{quote(suffix, safe='')}/{name}"
        elif reference:
            generic = f"{prefix}/{upper}{rng.randrange(10**8):08d}"
        else:
            generic = f"{name}-{rng.randrange(10**6):06d}"
        data = generic[:limit].encode("utf-8")
        if check(data) is None:
            return data
        raise _cannot(f)

    return draw


def _field_plan(f: Field) -> Draw:
    check = f.check
    t = f.type

    def checked(data: bytes) -> bytes:
        if check(data) is None:
            return data
        raise _cannot(f)

    if t is FieldType.ENUMERATION or t is FieldType.BOOLEAN:
        texts = [v.value for v in f.values] if t is FieldType.ENUMERATION else ["true", "false"]
        options = tuple((text.encode("utf-8"), check(text.encode("utf-8")) is None) for text in texts)

        def one_of(rng: random.Random, handle: str) -> bytes:
            data, fits = rng.choice(options)
            if fits:
                return data
            raise _cannot(f)
        return one_of
    if t is FieldType.INTEGER:
        low, high = _span(f, 10_000)
        first, last = int(low.to_integral_value(ROUND_CEILING)), int(high.to_integral_value(ROUND_FLOOR))
        return lambda rng, handle: checked(str(rng.randint(first, last)).encode())
    if t is FieldType.DECIMAL:
        low, high = _span(f, 1_000)
        first = int((low / _CENT).to_integral_value(ROUND_CEILING))
        last = int((high / _CENT).to_integral_value(ROUND_FLOOR))
        if first > last:  # the range is narrower than a hundredth: no draw
            narrow = format(low, "f").encode()
            return lambda rng, handle: checked(narrow)
        return lambda rng, handle: checked(_cents(rng.randint(first, last)).encode())
    if t is FieldType.DATE:
        return lambda rng, handle: checked(_DATE_TEXT[rng.randrange(_DAYS)].encode())
    if t is FieldType.DATETIME:
        def moment(rng: random.Random, handle: str) -> bytes:
            day = _DATE_TEXT[rng.randrange(_DAYS)]
            s = rng.randrange(86_400)
            return checked(f"{day}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+08:00".encode())
        return moment
    return _text_plan(f)


def _plan(template: Template) -> tuple[tuple[int, str, bool, Draw], ...]:
    """Each field of ``template`` as (index, name, required, draw), built once per template object."""
    entry = _PLANS.get(id(template))
    if entry is not None and entry[0] is template:
        return entry[1]
    plan = tuple((f.index, f.name, f.required, _field_plan(f)) for f in template.fields)
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[id(template)] = (template, plan)  # the template is kept, so its id is not reused while planned
    return plan


def generate_values(template: Template, handle: str, *, seed: int | str = 0, ref: TemplateRef | None = None,
                    optional_share: float = 0.75, ttl_s: int = DEFAULT_TTL_S) -> tuple[HandleValue, ...]:
    """The template field values (and the 1001 reference, when given) for identifier ``handle``."""
    rng = random.Random(f"{seed}|{fold(handle)}|{template.name}|{template.version}")
    out = [] if ref is None else [ref.to_value(ttl_s=ttl_s)]
    draw_share = rng.random
    for index, name, required, draw in _plan(template):
        if not required and draw_share() >= optional_share:
            continue
        out.append(HandleValue(index, name, draw(rng, handle), ttl_s))
    return tuple(out)
