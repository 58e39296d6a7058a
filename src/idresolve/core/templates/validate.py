"""Validation of a record's values against one template version.

``validate(template, values)`` returns every problem, sorted by index; ``check_record`` raises one
``TemplateViolation`` (an ``InvalidValue``: code 202, HTTP 400) whose message names every failing field.

What is checked:
- each value at an index >= 2000 (the template-field range) is a field of the template, holds the
  field's name as its type, and its data fits the field (``fields``: type, length, enumeration, range,
  pattern); an index given twice is a problem;
- every required field is present;
- the value at 1001, when present, is a well-formed reference (``<handle>@<version>``, type TEMPLATE)
  naming this template's version. Which template a record names, and fetching it, is the caller's
  work: it calls ``template_ref_of`` first, then this with the version it fetched.
Values below 1001 and between 1002 and 1999 (URL, DESC, HS_ADMIN, ...) are not the template's business.

Cost: one dict lookup, one string compare and one compiled checker per template field of the record,
then one set difference for required fields. The template was compiled once when it was parsed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InvalidValue
from ..values import TEMPLATE_FIELD_MIN_INDEX, TEMPLATE_REF_INDEX, HandleValue
from .definition import Template
from .storage import TemplateRef

#: Problems named in one error message; the error's ``problems`` keeps them all.
MAX_PROBLEMS_SHOWN = 40


@dataclass(frozen=True, slots=True)
class FieldProblem:
    index: int
    name: str  # the field's name, or what the value calls itself when its index is no field
    problem: str

    def __str__(self) -> str:
        return f"{self.name} ({self.index}): {self.problem}"

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "name": self.name, "problem": self.problem}


class TemplateViolation(InvalidValue):
    """A record does not fit its template. ``problems`` holds every failing field."""

    def __init__(self, template: Template, problems: Sequence[FieldProblem], *, handle: str | None = None) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:MAX_PROBLEMS_SHOWN])
        more = len(self.problems) - MAX_PROBLEMS_SHOWN
        if more > 0:
            shown += f"; and {more} more"
        count = len(self.problems)
        super().__init__(f"values do not fit template {template.title} ({count} problem{'s' * (count != 1)}): "
                         f"{shown}", handle=handle)


def _reference_problem(template: Template, value: HandleValue) -> str | None:
    try:
        ref = TemplateRef.from_value(value)
    except InvalidValue as exc:
        return exc.message
    if ref.version != template.version:
        return f"names version {ref.version} of {ref.handle}, but the template given is {template.title}"
    return None


def validate(template: Template, values: Iterable[HandleValue]) -> list[FieldProblem]:
    """Every way ``values`` fail ``template``, sorted by index (empty when they fit)."""
    checks = template.checks
    problems: list[FieldProblem] = []
    seen: set[int] = set()
    for v in values:
        index = v.index
        if index < TEMPLATE_FIELD_MIN_INDEX:
            if index == TEMPLATE_REF_INDEX:
                problem = _reference_problem(template, v)
                if problem is not None:
                    problems.append(FieldProblem(index, "template reference", problem))
            continue
        entry = checks.get(index)
        if entry is None:
            problems.append(FieldProblem(index, v.type[:64], f"index {index} is not a field of {template.title}"))
            continue
        name, check = entry
        if index in seen:
            problems.append(FieldProblem(index, name, "given twice"))
            continue
        seen.add(index)
        if v.type != name:
            problems.append(FieldProblem(index, name, f"the value's type must be the field name {name!r}, "
                                                      f"not {v.type[:64]!r}"))
            continue
        problem = check(v.data)
        if problem is not None:
            problems.append(FieldProblem(index, name, problem))
    if not template.required <= seen:
        problems.extend(FieldProblem(i, checks[i][0], "required field missing")
                        for i in sorted(template.required - seen))
    if problems:
        problems.sort(key=lambda p: p.index)
    return problems


def check_record(template: Template, values: Iterable[HandleValue], *, handle: str | None = None) -> None:
    """Raise ``TemplateViolation`` naming every failing field, or return when ``values`` fit."""
    problems = validate(template, values)
    if problems:
        raise TemplateViolation(template, problems, handle=handle)
