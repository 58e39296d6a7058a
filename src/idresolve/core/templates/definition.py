"""Template definitions: the JSON a person writes by hand, parsed strictly into a compiled ``Template``.

A definition is one JSON object (``docs/templates.md`` has a complete example)::

    {"name": "tyre-batch", "version": 1, "label": {"zh": "轮胎生产批次", "en": "Tyre production batch"},
     "description": "...", "fields": [{"index": 2000, "name": "productName", "type": "string", ...}]}

Rules:
- Parsing is strict: unknown keys, a key twice in one object, wrong JSON types, NaN or Infinity, a rule
  that does not apply to the field's type, an example that does not fit its own field: each is a
  problem naming where it is (``fields[3] (2003 loadIndex).maximum``). Every problem found (up to
  ``MAX_PROBLEMS``) goes into one ``InvalidValue`` (code 202).
- Parsing is bounded, and the bounds are checked before the work they bound: the text is at most
  ``MAX_SOURCE_BYTES``, a template has at most ``MAX_FIELDS`` fields and an enumeration at most
  ``MAX_ENUM_VALUES`` values, every string has a length limit, the canonical form is at most
  ``MAX_DEFINITION_BYTES`` (it must fit one Handle value, with room for ``MAX_TEMPLATE_VERSIONS`` in one
  record). JSON nested deeper than the format itself (its deepest point is an enumeration value's label)
  is refused by the type checks without being walked.
- A definition is self-contained: no includes, no inheritance, and a ``reference`` field names any
  identifier without saying which template it has, so there is nothing for a definition to recurse
  through and validation never resolves anything.
- ``Template.to_json`` is the canonical form (fixed key order, defaults left out);
  ``parse_definition(t.to_json()) == t``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from ..errors import InvalidValue
from ..values import TEMPLATE_FIELD_MAX_CHARS, TEMPLATE_FIELD_MIN_INDEX
from .fields import (
    NUMERIC_TYPES,
    TEXT_TYPES,
    Checker,
    EnumValue,
    Field,
    FieldType,
    Label,
    is_printable,
    make_checker,
)
from .patterns import compile_pattern

MAX_SOURCE_BYTES = 64 * 1024
MAX_DEFINITION_BYTES = 24 * 1024
MAX_TEMPLATE_VERSIONS = 32
MAX_FIELDS = 100
MAX_ENUM_VALUES = 200
MAX_EXAMPLES = 8
MAX_LABEL_CHARS = 64
MAX_DESCRIPTION_CHARS = 1000
MAX_UNIT_CHARS = 32
MAX_PROBLEMS = 20
MAX_FIELD_INDEX = 2**31 - 1
#: A minimum or maximum fits a 64-bit integer (the canonical JSON writes it as a number).
MAX_BOUND = 10**18

_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_TYPE_NAMES = tuple(t.value for t in FieldType)
_TEMPLATE_KEYS = ("name", "version", "label", "description", "fields")
_FIELD_KEYS = ("index", "name", "label", "type", "required", "description", "unit", "maxLength", "pattern",
               "values", "minimum", "maximum", "examples")


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed, compiled template version. Build it with ``parse_definition``; never mutate it."""

    name: str
    version: int
    label: Label
    fields: tuple[Field, ...]
    description: str = ""
    by_index: Mapping[int, Field] = field(default_factory=dict, repr=False, compare=False, hash=False)
    by_name: Mapping[str, Field] = field(default_factory=dict, repr=False, compare=False, hash=False)
    required: frozenset[int] = field(default=frozenset(), repr=False, compare=False, hash=False)
    #: index -> (field name, compiled checker): what validation looks up for each value
    checks: Mapping[int, tuple[str, Checker]] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def title(self) -> str:
        return f"{self.name} version {self.version}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "label": self.label.to_json()}
        if self.description:
            out["description"] = self.description
        out["fields"] = [f.to_json() for f in self.fields]
        return out

    def to_bytes(self) -> bytes:
        """The canonical definition: compact UTF-8 JSON, what a template record stores."""
        return orjson.dumps(self.to_json())


class _Problems:
    """Collects a definition's problems; raises once at the end (or when there are too many)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, problem: str) -> None:
        self.items.append(f"{where}: {problem}" if where else problem)
        if len(self.items) >= MAX_PROBLEMS:
            self.raise_if_any()

    def raise_if_any(self) -> None:
        if self.items:
            more = " (and maybe more; fix these first)" if len(self.items) >= MAX_PROBLEMS else ""
            raise InvalidValue("template definition is invalid: " + "; ".join(self.items) + more)


def _keys(obj: Mapping[str, Any], known: tuple[str, ...], where: str, problems: _Problems) -> None:
    for key in obj:
        if key not in known:
            close = difflib.get_close_matches(str(key)[:40], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            problems.add(where, f"unknown key {str(key)[:40]!r}{hint}")


def _text(raw: object, where: str, problems: _Problems, *, limit: int, pattern: re.Pattern[str] | None = None,
          rule: str = "") -> str | None:
    if not isinstance(raw, str) or not raw:
        problems.add(where, "must be a non-empty string")
        return None
    if len(raw) > limit:
        problems.add(where, f"longer than {limit} characters")
        return None
    if not is_printable(raw):
        problems.add(where, "holds control or invisible characters (one line of text)")
        return None
    if pattern is not None and not pattern.fullmatch(raw):
        problems.add(where, f"{raw!r} is not {rule}")
        return None
    return raw


def _label(raw: object, where: str, problems: _Problems) -> Label | None:
    if not isinstance(raw, dict):
        problems.add(where, 'must be an object {"zh": "...", "en": "..."}')
        return None
    _keys(raw, ("zh", "en"), where, problems)
    zh = _text(raw.get("zh"), f"{where}.zh", problems, limit=MAX_LABEL_CHARS)
    en = _text(raw.get("en"), f"{where}.en", problems, limit=MAX_LABEL_CHARS)
    return Label(zh, en) if zh is not None and en is not None else None


def _int(raw: object, where: str, problems: _Problems, low: int, high: int) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int):
        problems.add(where, "must be an integer")
        return None
    if not low <= raw <= high:
        problems.add(where, f"must be between {low} and {high}, got {raw}")
        return None
    return raw


def _number(raw: object, where: str, problems: _Problems, ftype: FieldType) -> int | float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or (isinstance(raw, float) and not math.isfinite(raw)):
        problems.add(where, "must be a finite number")
        return None
    if ftype is FieldType.INTEGER and not isinstance(raw, int):
        problems.add(where, "must be an integer for an integer field")
        return None
    if not -MAX_BOUND <= raw <= MAX_BOUND:
        problems.add(where, f"must be between -{MAX_BOUND} and {MAX_BOUND}")
        return None
    return raw


def _enum_values(raw: object, where: str, problems: _Problems) -> tuple[EnumValue, ...]:
    if not isinstance(raw, list) or not raw:
        problems.add(where, "an enumeration needs a non-empty list of values")
        return ()
    if len(raw) > MAX_ENUM_VALUES:
        problems.add(where, f"more than {MAX_ENUM_VALUES} values ({len(raw)})")
        return ()
    out: list[EnumValue] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        label = None
        if isinstance(item, dict):
            _keys(item, ("value", "label"), at, problems)
            value = _text(item.get("value"), f"{at}.value", problems, limit=TEMPLATE_FIELD_MAX_CHARS)
            if "label" in item:
                label = _label(item["label"], f"{at}.label", problems)
        else:
            value = _text(item, at, problems, limit=TEMPLATE_FIELD_MAX_CHARS)
        if value is None:
            continue
        if value in seen:
            problems.add(at, f"value {value!r} is listed twice")
            continue
        seen.add(value)
        out.append(EnumValue(value, label))
    return tuple(out)


def _field(raw: object, where: str, problems: _Problems) -> Field | None:
    if not isinstance(raw, dict):
        problems.add(where, "each field must be an object")
        return None
    index = _int(raw.get("index"), f"{where}.index", problems, TEMPLATE_FIELD_MIN_INDEX, MAX_FIELD_INDEX)
    name = _text(raw.get("name"), f"{where}.name", problems, limit=64, pattern=_FIELD_NAME,
                 rule="a field name (a letter, then letters, digits or _; at most 64)")
    if name is not None and name.upper().startswith("HS_"):
        problems.add(f"{where}.name", "names beginning with HS_ are the Handle System's own types")
        name = None
    if index is not None or name is not None:
        where = f"{where} ({index if index is not None else '?'} {name or '?'})"
    _keys(raw, _FIELD_KEYS, where, problems)
    label = _label(raw.get("label"), f"{where}.label", problems)
    raw_type = raw.get("type")
    ftype = FieldType(raw_type) if isinstance(raw_type, str) and raw_type in _TYPE_NAMES else None
    if ftype is None:
        problems.add(f"{where}.type", f"must be one of {', '.join(_TYPE_NAMES)}")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        problems.add(f"{where}.required", "must be true or false")
    description = ""
    if "description" in raw:
        description = _text(raw["description"], f"{where}.description", problems, limit=MAX_DESCRIPTION_CHARS) or ""
    if ftype is None or index is None or name is None or label is None or not isinstance(required, bool):
        return None
    return _typed_field(raw, where, problems, index=index, name=name, label=label, ftype=ftype,
                        required=required, description=description)


def _applies(raw: Mapping[str, Any], key: str, ok: bool, where: str, problems: _Problems, which: str) -> bool:
    if key not in raw:
        return False
    if not ok:
        problems.add(f"{where}.{key}", f"applies only to {which} fields")
        return False
    return True


def _typed_field(raw: Mapping[str, Any], where: str, problems: _Problems, *, index: int, name: str, label: Label,
                 ftype: FieldType, required: bool, description: str) -> Field | None:
    before = len(problems.items)
    numeric, text = ftype in NUMERIC_TYPES, ftype in TEXT_TYPES
    unit = max_length = pattern = minimum = maximum = None
    values: tuple[EnumValue, ...] = ()
    if _applies(raw, "unit", numeric, where, problems, "integer and decimal"):
        unit = _text(raw["unit"], f"{where}.unit", problems, limit=MAX_UNIT_CHARS)
    if _applies(raw, "maxLength", text, where, problems, "string, url and reference"):
        max_length = _int(raw["maxLength"], f"{where}.maxLength", problems, 1, TEMPLATE_FIELD_MAX_CHARS)
    if _applies(raw, "pattern", text, where, problems, "string, url and reference"):
        try:
            pattern = compile_pattern(raw["pattern"], where=f"{where}.pattern")
        except InvalidValue as exc:
            problems.add("", exc.message)
    if ftype is FieldType.ENUMERATION:
        values = _enum_values(raw.get("values"), f"{where}.values", problems)
    elif "values" in raw:
        problems.add(f"{where}.values", "applies only to enumeration fields")
    if _applies(raw, "minimum", numeric, where, problems, "integer and decimal"):
        minimum = _number(raw["minimum"], f"{where}.minimum", problems, ftype)
    if _applies(raw, "maximum", numeric, where, problems, "integer and decimal"):
        maximum = _number(raw["maximum"], f"{where}.maximum", problems, ftype)
    if minimum is not None and maximum is not None and minimum > maximum:
        problems.add(f"{where}.maximum", f"is below the minimum {minimum}")
    if len(problems.items) > before:
        return None
    check = make_checker(ftype, max_length=max_length, pattern=pattern, values=values, minimum=minimum,
                         maximum=maximum)
    examples = _examples(raw.get("examples"), f"{where}.examples", problems, check) if "examples" in raw else ()
    return Field(index, name, label, ftype, required, description, unit, max_length, pattern, values, minimum,
                 maximum, examples, check)


def _examples(raw: object, where: str, problems: _Problems, check: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_EXAMPLES:
        problems.add(where, f"must be a list of 1 to {MAX_EXAMPLES} strings")
        return ()
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            problems.add(f"{where}[{i}]", "must be a string (values are stored as text)")
            continue
        problem = check(item.encode("utf-8", "surrogatepass"))  # a lone surrogate: not valid UTF-8
        if problem is not None:
            problems.add(f"{where}[{i}]", f"{item[:40]!r} does not fit the field: {problem}")
            continue
        out.append(item)
    return tuple(out)


def parse_definition(raw: object) -> Template:
    """Parse and compile an already-decoded definition. Raises ``InvalidValue`` listing every problem."""
    problems = _Problems()
    if not isinstance(raw, dict):
        raise InvalidValue("template definition must be a JSON object")
    _keys(raw, _TEMPLATE_KEYS, "", problems)
    name = _text(raw.get("name"), "name", problems, limit=64, pattern=_TEMPLATE_NAME,
                 rule="a template name (lowercase letters, digits and -, at most 64)")
    version = _int(raw.get("version"), "version", problems, 1, MAX_TEMPLATE_VERSIONS)
    label = _label(raw.get("label"), "label", problems)
    description = ""
    if "description" in raw:
        description = _text(raw["description"], "description", problems, limit=MAX_DESCRIPTION_CHARS) or ""
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        problems.add("fields", "must be a non-empty list of fields")
        raw_fields = []
    elif len(raw_fields) > MAX_FIELDS:
        problems.add("fields", f"a template has at most {MAX_FIELDS} fields, this one has {len(raw_fields)}")
        raw_fields = []
    fields: list[Field] = []
    by_index: dict[int, Field] = {}
    by_name: dict[str, Field] = {}
    for i, item in enumerate(raw_fields):
        f = _field(item, f"fields[{i}]", problems)
        if f is None:
            continue
        if f.index in by_index:
            problems.add(f"fields[{i}].index", f"{f.index} is already the index of {by_index[f.index].name}")
        elif f.name in by_name:
            problems.add(f"fields[{i}].name", f"{f.name} is already the name of field {by_name[f.name].index}")
        else:
            by_index[f.index] = by_name[f.name] = f
            fields.append(f)
    problems.raise_if_any()
    if name is None or version is None or label is None:  # each None came with a problem raised above
        raise InvalidValue("template definition is invalid")
    fields.sort(key=lambda f: f.index)
    template = Template(name, version, label, tuple(fields), description, by_index, by_name,
                        frozenset(f.index for f in fields if f.required), {f.index: (f.name, f.check) for f in fields})
    size = len(template.to_bytes())
    if size > MAX_DEFINITION_BYTES:
        raise InvalidValue(f"template definition is invalid: {size} bytes in canonical form, "
                           f"more than {MAX_DEFINITION_BYTES}")
    return template


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidValue(f"template definition is invalid: key {key[:40]!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise InvalidValue(f"template definition is invalid: {name} is not a JSON number")


def parse_definition_text(text: str | bytes) -> Template:
    """Parse a definition from its JSON text (a file, a request body, a stored value)."""
    if isinstance(text, str):
        if len(text) > MAX_SOURCE_BYTES:  # a cheap bound before encoding
            raise InvalidValue(f"template definition longer than {MAX_SOURCE_BYTES} bytes")
        text = text.encode("utf-8", "surrogatepass")
    if len(text) > MAX_SOURCE_BYTES:
        raise InvalidValue(f"template definition longer than {MAX_SOURCE_BYTES} bytes")
    return _parse_bytes(bytes(text))


@lru_cache(maxsize=256)
def _parse_bytes(text: bytes) -> Template:
    """The same bytes give the same (immutable) Template: a definition stored at many nodes, or learned
    again after its TTL, is parsed once per process. Failures raise and are not kept."""
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidValue("template definition is invalid: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidValue(f"template definition is not valid JSON: {exc}") from None
    return parse_definition(raw)
