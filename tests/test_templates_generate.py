"""Seeding's generator: the planned draws (``generate._plan``) give exactly what the generator as first written
gives.

``field_value`` below is that generator, kept here as the oracle: it reads a field's rules on every draw. The
plans work the rules out once per template and must draw the same numbers in the same order, so a record is
the same whichever builds it (and the same as the records earlier versions seeded). Checked here on every shipped
template and on made-up fields that take every branch: each type, ranges open on either side or narrower
than a hundredth, redrawn examples that fail their pattern (the example as written), references without examples,
URLs cut to the field's length, and fields that cannot be generated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from idresolve.core.errors import InvalidValue
from idresolve.core.handles import fold
from idresolve.core.templates import (
    Template,
    TemplateRef,
    generate_values,
    parse_definition,
    parse_definition_text,
)
from idresolve.core.templates.fields import Field, FieldType
from idresolve.core.templates.generate import _CENT, _DAY0, _DAYS, _DIGIT_RUN, _REDRAWS, _cents, _span
from idresolve.core.values import DEFAULT_TTL_S, TEMPLATE_FIELD_MAX_CHARS, HandleValue

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "config" / "templates").glob("*.json"))
LABEL = {"zh": "字段", "en": "x"}


# -- the oracle: the generator as first written ---------------------------------------------------------

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


def reference_values(template: Template, handle: str, *, seed: int | str = 0, ref: TemplateRef | None = None,
                     optional_share: float = 0.75, ttl_s: int = DEFAULT_TTL_S) -> tuple[HandleValue, ...]:
    """``generate_values`` as it reads with ``field_value`` (the way it was written before the plans)."""
    rng = random.Random(f"{seed}|{fold(handle)}|{template.name}|{template.version}")
    out = [] if ref is None else [ref.to_value(ttl_s=ttl_s)]
    for f in template.fields:
        if not f.required and rng.random() >= optional_share:
            continue
        out.append(HandleValue(f.index, f.name, field_value(f, handle, rng).encode("utf-8"), ttl_s))
    return tuple(out)


def outcome(make: Any) -> Any:
    try:
        return make()
    except InvalidValue as exc:
        return ("InvalidValue", exc.message)


HANDLES = [f"88.118.{k % 7}/T{k:06d}" for k in range(300)] + ["88.1/ü-é/x", "88.1/" + "L" * 200, "88.1/a b?c"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_templates_are_generated_as_field_value_would(path: Path) -> None:
    t = parse_definition_text(path.read_bytes())
    ref = TemplateRef("88.118/TPL-x", 3)
    for i, handle in enumerate(HANDLES):
        for seed, share in (("SEED", 0.75), (i, 0.25), ("all", 1.0), ("none", 0.0)):
            kw: dict[str, Any] = {"seed": seed, "optional_share": share, "ref": ref if i % 2 else None,
                                  "ttl_s": 3600 + i % 3}
            assert generate_values(t, handle, **kw) == reference_values(t, handle, **kw), (handle, kw)


def made_up(*fields: dict[str, Any]) -> Template:
    return parse_definition({"name": "made-up", "version": 2, "label": LABEL, "fields": [
        {"index": 2000 + i, "label": LABEL, "required": True, **f} for i, f in enumerate(fields)]})


BRANCHES = {
    "integers": [{"name": "n0", "type": "integer"}, {"name": "n1", "type": "integer", "minimum": -50},
                 {"name": "n2", "type": "integer", "maximum": 7}, {"name": "n3", "type": "integer", "minimum": 5,
                                                                     "maximum": 5}],
    "decimals": [{"name": "d0", "type": "decimal"}, {"name": "d1", "type": "decimal", "minimum": -3.5, "maximum": 2},
                 {"name": "d2", "type": "decimal", "minimum": 0.001, "maximum": 0.009},
                 {"name": "d3", "type": "decimal", "maximum": -990.25}],
    "dates": [{"name": "day", "type": "date"}, {"name": "at", "type": "datetime"}, {"name": "ok", "type": "boolean"}],
    "enumerations": [{"name": "e", "type": "enumeration", "values": [{"value": v, "label": LABEL}
                                                                    for v in ("A", "BB", "CCC", "DDDD")]}],
    "texts": [{"name": "free", "type": "string", "examples": ["one", "two words", "三"]},
              {"name": "code", "type": "string", "pattern": "Q[0-9]{6}", "examples": ["Q123456", "Q999999"]},
              # redrawn, the digits rarely fit: four tries, then the example as written
              {"name": "tail", "type": "string", "pattern": "[0-9]{3}0000", "examples": ["1230000"]},
              {"name": "plain", "type": "string"}, {"name": "short", "type": "string", "maxLength": 5}],
    "references": [{"name": "part", "type": "reference", "examples": ["88.118.8/PART20210001", "88.1/x12345"]},
                   {"name": "other", "type": "reference"}],
    "urls": [{"name": "site", "type": "url"}, {"name": "page", "type": "url", "maxLength": 40},
             {"name": "ex", "type": "url", "examples": ["https://a.example/p/2021000123"]}],
}


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_every_branch_is_drawn_as_field_value_draws_it(name: str) -> None:
    t = made_up(*BRANCHES[name])
    for i, handle in enumerate(HANDLES):
        planned = outcome(lambda h=handle, s=i: generate_values(t, h, seed=s, optional_share=0.5))
        written = outcome(lambda h=handle, s=i: reference_values(t, h, seed=s, optional_share=0.5))
        assert planned == written, (handle, planned, written)


def test_a_field_that_cannot_be_generated_fails_alike() -> None:
    t = made_up({"name": "code", "type": "string", "pattern": "Q[0-9]{3}"})  # a pattern and no examples
    planned, written = outcome(lambda: generate_values(t, "88.1/x")), outcome(lambda: reference_values(t, "88.1/x"))
    assert planned == written and planned[0] == "InvalidValue" and "give it examples" in planned[1]


def test_cents_format_as_decimal_does() -> None:
    cent = Decimal("0.01")
    for n in [*range(-2_000, 2_000), 10**12 + 7, -(10**12) - 7]:
        assert _cents(n) == format(Decimal(n) * cent, "f"), n
