"""Seeding's generator: the planned draws (``generate._plan``) give exactly what ``field_value`` gives.

``field_value`` reads a field's rules on every draw and is the generator as written down; the plans work the
rules out once per template and must draw the same numbers in the same order, so a record is the same
whichever builds it (and the same as the records earlier versions seeded). Checked here on every shipped
template and on made-up fields that take every branch: each type, ranges open on either side or narrower
than a hundredth, redrawn examples that fail their pattern (the example as written), references without examples,
URLs cut to the field's length, and fields that cannot be generated.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

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
from idresolve.core.templates.generate import _cents, field_value
from idresolve.core.values import DEFAULT_TTL_S, HandleValue

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "config" / "templates").glob("*.json"))
LABEL = {"zh": "字段", "en": "x"}


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
