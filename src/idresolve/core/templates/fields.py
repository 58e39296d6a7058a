"""Template fields: their types, their lexical forms, and the checker each field compiles to.

A template field's value is UTF-8 text of at most ``TEMPLATE_FIELD_MAX_CHARS`` characters (the limit
``core.values`` already enforces for indexes >= 2000). Each type fixes one lexical form, written the
way the value is stored, so that every node reads a stored value the same way:

| type        | form                                                                   |
|-------------|------------------------------------------------------------------------|
| string      | printable text (spaces of any script allowed; no newlines or tabs)     |
| integer     | ``-?(0|[1-9][0-9]*)``: ASCII digits, no leading zeros, no ``+``         |
| decimal     | an integer, optionally ``.`` and digits (``12.5``); no exponent, NaN    |
| boolean     | ``true`` or ``false``                                                  |
| date        | ``YYYY-MM-DD``, a real calendar date                                   |
| datetime    | ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` then ``Z`` or ``+HH:MM``: a zone is required |
| enumeration | exactly one of the field's ``values``                                  |
| url         | an ``http://`` or ``https://`` URL with a host, no spaces              |
| reference   | another identifier, ``prefix/suffix`` (``core.handles.parse_handle``)  |

A field compiles once to one checker, ``bytes -> problem text or None``, built from closures so that
checking a value costs a decode, a length test and one type test (and the RE2 pattern when given), or one
set lookup for a value the checker has seen fit already (``KNOWN_GOOD_PER_FIELD``).
The built-in forms are matched with Python's ``re`` on fixed patterns that cannot backtrack
(no nested quantifiers); authors' patterns go through RE2 only (``patterns``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from urllib.parse import urlsplit

from ..errors import InvalidHandle
from ..handles import MAX_HANDLE_CHARS, parse_handle
from ..values import TEMPLATE_FIELD_MAX_CHARS
from .patterns import Pattern

Checker = Callable[[bytes], "str | None"]

#: A checker remembers up to this many values that fitted (a checker is a pure function of the bytes, so a
#: value that fitted once fits again). Bulk registrations repeat the few values of low-cardinality fields
#: (manufacturer, category, size, standard) on every record; the first distinct values of a field fill the
#: set and then it stops growing, so a field whose every value is new (a batch number) pays one set lookup.
#: Bounded per field: at most 256 values of at most 255 characters (64 KiB).
KNOWN_GOOD_PER_FIELD = 256


class FieldType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    ENUMERATION = "enumeration"
    URL = "url"
    REFERENCE = "reference"


NUMERIC_TYPES = frozenset({FieldType.INTEGER, FieldType.DECIMAL})
#: Types whose values are free text the author may narrow with ``maxLength`` and ``pattern``.
TEXT_TYPES = frozenset({FieldType.STRING, FieldType.URL, FieldType.REFERENCE})


@dataclass(frozen=True, slots=True)
class Label:
    """A name for people, in Chinese and in English (both required)."""

    zh: str
    en: str

    def to_json(self) -> dict[str, str]:
        return {"zh": self.zh, "en": self.en}


@dataclass(frozen=True, slots=True)
class EnumValue:
    value: str
    label: Label | None = None

    def to_json(self) -> str | dict[str, object]:
        return self.value if self.label is None else {"value": self.value, "label": self.label.to_json()}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a template, as its author defined it, with its compiled checker."""

    index: int
    name: str
    label: Label
    type: FieldType
    required: bool = False
    description: str = ""
    unit: str | None = None
    max_length: int | None = None  # None: the template-field limit, TEMPLATE_FIELD_MAX_CHARS
    pattern: Pattern | None = None
    values: tuple[EnumValue, ...] = ()
    minimum: int | float | None = None
    maximum: int | float | None = None
    examples: tuple[str, ...] = ()
    check: Checker = field(default=lambda _data: None, repr=False, compare=False, hash=False)

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(v.value for v in self.values)

    def to_json(self) -> dict[str, object]:
        """The definition's JSON form of this field: keys in a fixed order, defaults left out."""
        out: dict[str, object] = {"index": self.index, "name": self.name, "label": self.label.to_json(),
                                  "type": str(self.type), "required": self.required}
        if self.description:
            out["description"] = self.description
        if self.unit is not None:
            out["unit"] = self.unit
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.pattern is not None:
            out["pattern"] = self.pattern.text
        if self.values:
            out["values"] = [v.to_json() for v in self.values]
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.examples:
            out["examples"] = list(self.examples)
        return out


# -- lexical forms ------------------------------------------------------------------------------------

_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)").fullmatch
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?").fullmatch
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").fullmatch
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})").fullmatch
# Fast paths: plain ASCII forms every full check accepts too; anything else takes the full check.
PLAIN_URL = re.compile(r"https?://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?:[/?#][!-~]*)?").fullmatch
PLAIN_HANDLE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*/[!-~]+").fullmatch

INTEGER_FORM = "not an integer (ASCII digits, optional leading -, no leading zeros)"
DECIMAL_FORM = "not a decimal number (like 12.5: digits, optional - and fraction)"

TypeCheck = Callable[[str], "str | None"]


def is_printable(text: str) -> bool:
    """Printable, or a space of any script (U+3000, the ideographic space Chinese text uses, is no
    control character); not control, format (bidi overrides), line or paragraph separators."""
    return text.isprintable() or all(c.isprintable() or unicodedata.category(c) == "Zs" for c in text)


def _check_boolean(text: str) -> str | None:
    return None if text in ("true", "false") else "not a boolean (true or false)"


def _iso_check(form: Callable[[str], object], parse: Callable[[str], object], form_problem: str,
               value_problem: str) -> TypeCheck:
    """A date or datetime check: the exact lexical form first (``fromisoformat`` alone takes more
    forms than this format allows), then whether the day and time exist."""
    def check(text: str) -> str | None:
        if not form(text):
            return form_problem
        try:
            parse(text)
        except ValueError:
            return value_problem
        return None

    return check


_check_date = _iso_check(_DATE, date.fromisoformat, "not a date (YYYY-MM-DD)", "not a calendar date")
_check_datetime = _iso_check(_DATETIME, datetime.fromisoformat,
                             "not a date-time (YYYY-MM-DDTHH:MM:SS with Z or an offset like +08:00)",
                             "not a real date and time (check the day, the hour and the zone offset)")


def url_problem_full(text: str) -> str | None:
    """The full URL check (``urlsplit``); ``_check_url`` takes it when the fast path does not decide."""
    if text.startswith(("http://", "https://")) and " " not in text:
        try:
            parts = urlsplit(text)
            if parts.hostname and (parts.port is None or parts.port > 0):
                return None
        except ValueError:
            pass
    return "not an http:// or https:// URL with a host"


def _check_url(text: str) -> str | None:
    return None if PLAIN_URL(text) else url_problem_full(text)


def handle_problem(text: str) -> str | None:
    """Why ``text`` is not an identifier (``prefix/suffix``), or None when it is one."""
    if PLAIN_HANDLE(text) and len(text) <= MAX_HANDLE_CHARS:
        return None
    try:
        parse_handle(text)
    except InvalidHandle as exc:
        return exc.message
    return None


def _check_reference(text: str) -> str | None:
    problem = handle_problem(text)
    return None if problem is None else f"not an identifier (prefix/suffix): {problem}"


_TYPE_CHECKS: dict[FieldType, TypeCheck] = {
    FieldType.BOOLEAN: _check_boolean,
    FieldType.DATE: _check_date,
    FieldType.DATETIME: _check_datetime,
    FieldType.URL: _check_url,
    FieldType.REFERENCE: _check_reference,
}

Tail = Callable[[str, bytes], "str | None"]


def _show(values: tuple[EnumValue, ...], limit: int = 12) -> str:
    shown = ", ".join(v.value for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _numeric_tail(ftype: FieldType, minimum: int | float | None, maximum: int | float | None) -> Tail:
    form, problem_text = (_INTEGER, INTEGER_FORM) if ftype is FieldType.INTEGER else (_DECIMAL, DECIMAL_FORM)
    as_number: Callable[[str], int | Decimal] = int if ftype is FieldType.INTEGER else Decimal
    low = None if minimum is None else as_number(str(minimum))
    high = None if maximum is None else as_number(str(maximum))
    if low is None and high is None:
        return lambda text, _data: None if form(text) else problem_text

    def tail(text: str, _data: bytes) -> str | None:
        if not form(text):
            return problem_text
        number = as_number(text)
        if low is not None and number < low:
            return f"below the minimum {minimum}"
        if high is not None and number > high:
            return f"above the maximum {maximum}"
        return None

    return tail


def _tail(ftype: FieldType, pattern: Pattern | None, values: tuple[EnumValue, ...],
          minimum: int | float | None, maximum: int | float | None) -> Tail | None:
    """The type-specific part of a checker, specialised so that each value pays only for its rules."""
    if ftype is FieldType.ENUMERATION:
        allowed, problem = frozenset(v.value for v in values), f"not one of the allowed values: {_show(values)}"
        return lambda text, _data: None if text in allowed else problem
    if ftype in (FieldType.INTEGER, FieldType.DECIMAL):
        return _numeric_tail(ftype, minimum, maximum)
    type_check = _TYPE_CHECKS.get(ftype)  # None for a string: any printable text
    if pattern is None:
        return None if type_check is None else (lambda text, _data: type_check(text))
    matches, mismatch = pattern.matcher(), f"does not match the pattern {pattern.text}"
    if type_check is None:
        return lambda _text, data: None if matches(data) else mismatch

    def tail(text: str, data: bytes) -> str | None:
        problem = type_check(text)
        if problem is not None:
            return problem
        return None if matches(data) else mismatch

    return tail


def make_checker(ftype: FieldType, *, max_length: int | None, pattern: Pattern | None,
                 values: tuple[EnumValue, ...], minimum: int | float | None,
                 maximum: int | float | None) -> Checker:
    """Compile a field's rules to one function from stored bytes to a problem (or None)."""
    limit = max_length if max_length is not None else TEMPLATE_FIELD_MAX_CHARS
    tail = _tail(ftype, pattern, values, minimum, maximum)
    too_long = f"longer than {limit} characters"
    good: set[bytes] = set()  # values already found to fit: see KNOWN_GOOD_PER_FIELD

    def check(data: bytes) -> str | None:
        if data in good:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "not valid UTF-8 text"
        if not text:
            return "empty (leave an optional field out instead)"
        if len(text) > limit:
            return f"{too_long} ({len(text)})"
        if not is_printable(text):
            return "holds control or invisible characters (newlines, tabs, bidi marks...)"
        problem = None if tail is None else tail(text, data)
        if problem is None and len(good) < KNOWN_GOOD_PER_FIELD:
            good.add(data)
        return problem

    return check
