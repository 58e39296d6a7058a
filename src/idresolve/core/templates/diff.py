"""What changed between two template versions, and which changes are incompatible.

A change is *incompatible* when a record that fits the old version may not fit the new one: a new
required field, an optional field made required, a removed or renamed field, a narrowed type, a
shorter maximum length, a removed enumeration value, a raised minimum or lowered maximum, a pattern
added or changed (no general test tells whether one pattern accepts everything another does, so any
new pattern counts), and a changed unit (stored numbers would be read in another unit). Labels,
descriptions and examples are for people: always compatible.

Incompatible does not mean refused: a template may change in any way, because records name the
version they were made with and are validated against it (``storage``); the diff tells a publisher
what moving a record to the new version would require. ``TemplateDiff.to_text`` is what
``idresolve template diff`` prints; ``to_json`` the same as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import orjson

from ..values import TEMPLATE_FIELD_MAX_CHARS
from .definition import Template
from .fields import Field, FieldType

#: Type changes that keep every old value valid (each old lexical form is a form of the new type).
WIDENINGS = frozenset({(FieldType.INTEGER, FieldType.DECIMAL)}
                      | {(t, FieldType.STRING) for t in FieldType if t is not FieldType.STRING})


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    index: int | None  # None: the template itself (name, label, description)
    name: str  # the field's name (the new one when it was renamed), or the template's
    attribute: str | None  # None when a whole field was added or removed
    old: object
    new: object
    compatible: bool
    reason: str = ""

    @property
    def where(self) -> str:
        base = self.name if self.index is None else f"{self.index} {self.name}"
        return base if self.attribute is None else f"{base}.{self.attribute}"

    def to_json(self) -> dict[str, object]:
        return {"kind": str(self.kind), "index": self.index, "name": self.name, "attribute": self.attribute,
                "old": self.old, "new": self.new, "compatible": self.compatible, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class TemplateDiff:
    old_name: str
    old_version: int
    new_name: str
    new_version: int
    changes: tuple[Change, ...]

    @property
    def compatible(self) -> bool:
        return all(c.compatible for c in self.changes)

    @property
    def incompatible(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if not c.compatible)

    def to_json(self) -> dict[str, object]:
        return {"old": {"name": self.old_name, "version": self.old_version},
                "new": {"name": self.new_name, "version": self.new_version},
                "compatible": self.compatible, "changes": [c.to_json() for c in self.changes]}

    def to_text(self) -> str:
        head = f"{self.old_name} version {self.old_version} -> {self.new_name} version {self.new_version}"
        if not self.changes:
            return f"{head}: no changes\n"
        bad = len(self.incompatible)
        lines = [f"{head}: {len(self.changes)} change{'s' * (len(self.changes) != 1)}, "
                 + (f"{bad} incompatible" if bad else "all compatible")]
        for c in self.changes:
            mark = {ChangeKind.ADDED: "+", ChangeKind.REMOVED: "-", ChangeKind.CHANGED: "~"}[c.kind]
            if c.kind is ChangeKind.CHANGED:
                what = f"{_show(c.old)} -> {_show(c.new)}"
            else:  # a whole field (its summary), or values of a list (which ones)
                what = f"{c.kind} {_show(c.new if c.kind is ChangeKind.ADDED else c.old)}"
            note = "" if c.compatible else f"  [incompatible: {c.reason}]"
            lines.append(f"  {mark} {c.where}: {what}{note}")
        if bad:
            lines.append(f"Records keep the version they name: only records moved to version {self.new_version} "
                         "must fit it.")
        return "\n".join(lines) + "\n"


def _show(value: object, limit: int = 80) -> str:
    if value is None:
        return "none"
    out = value if isinstance(value, str) else orjson.dumps(value).decode("utf-8")
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _summary(f: Field) -> str:
    unit = f" in {f.unit}" if f.unit else ""
    return f"{'required' if f.required else 'optional'} {f.type}{unit}"


def _number(value: int | float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _field_changes(old: Field, new: Field) -> list[Change]:
    out: list[Change] = []

    def change(attribute: str, a: object, b: object, compatible: bool, reason: str = "") -> None:
        out.append(Change(ChangeKind.CHANGED, new.index, new.name, attribute, a, b, compatible, reason))

    if old.name != new.name:
        change("name", old.name, new.name, False, "stored values carry the old name as their type")
    if old.type != new.type:
        change("type", str(old.type), str(new.type), (old.type, new.type) in WIDENINGS,
               "a narrower or different type rejects stored values")
    if old.required != new.required:
        change("required", old.required, new.required, not new.required, "records made without it no longer fit")
    old_len, new_len = old.max_length or TEMPLATE_FIELD_MAX_CHARS, new.max_length or TEMPLATE_FIELD_MAX_CHARS
    if old_len != new_len:
        change("maxLength", old_len, new_len, new_len > old_len, "longer stored values no longer fit")
    old_pat, new_pat = old.pattern.text if old.pattern else None, new.pattern.text if new.pattern else None
    if old_pat != new_pat:
        change("pattern", old_pat, new_pat, new_pat is None, "stored values may not match the new pattern")
    out.extend(_values_changes(old, new))
    low_a, low_b = _number(old.minimum), _number(new.minimum)
    if low_a != low_b:
        change("minimum", old.minimum, new.minimum, low_b is None or (low_a is not None and low_b < low_a),
               "stored values below the new minimum no longer fit")
    high_a, high_b = _number(old.maximum), _number(new.maximum)
    if high_a != high_b:
        change("maximum", old.maximum, new.maximum, high_b is None or (high_a is not None and high_b > high_a),
               "stored values above the new maximum no longer fit")
    if old.unit != new.unit:
        change("unit", old.unit, new.unit, False, "stored numbers would be read in another unit")
    for attribute, a, b in (("label", old.label.to_json(), new.label.to_json()),
                            ("description", old.description, new.description),
                            ("examples", list(old.examples), list(new.examples))):
        if a != b:
            change(attribute, a, b, True)
    return out


def _values_changes(old: Field, new: Field) -> list[Change]:
    a = [v.value for v in old.values] if old.values else None  # None: not restricted to a list
    b = [v.value for v in new.values] if new.values else None
    if a is None and b is None:
        return []
    at = (new.index, new.name)
    if a is None or b is None:
        if a is None:
            return [Change(ChangeKind.CHANGED, *at, "values", None, b, False, "values outside the list no longer fit")]
        return [Change(ChangeKind.CHANGED, *at, "values", a, None, True)]
    out = []
    removed, added = [v for v in a if v not in b], [v for v in b if v not in a]
    if removed:
        out.append(Change(ChangeKind.REMOVED, *at, "values", removed, None, False,
                          "records holding a removed value no longer fit"))
    if added:
        out.append(Change(ChangeKind.ADDED, *at, "values", None, added, True))
    labels_a = {v.value: v.label for v in old.values}
    relabelled = [v.value for v in new.values if v.value in labels_a and labels_a[v.value] != v.label]
    if relabelled:
        out.append(Change(ChangeKind.CHANGED, *at, "value labels", None, relabelled, True))
    return out


def diff_templates(old: Template, new: Template) -> TemplateDiff:
    """Every change from ``old`` to ``new``: template attributes first, then fields by index."""
    changes: list[Change] = []
    if old.name != new.name:
        changes.append(Change(ChangeKind.CHANGED, None, new.name, "name", old.name, new.name, False,
                              "a different template"))
    if old.label != new.label:
        changes.append(Change(ChangeKind.CHANGED, None, new.name, "label", old.label.to_json(), new.label.to_json(), True))
    if old.description != new.description:
        changes.append(Change(ChangeKind.CHANGED, None, new.name, "description", old.description, new.description, True))
    for index in sorted(set(old.by_index) | set(new.by_index)):
        a, b = old.by_index.get(index), new.by_index.get(index)
        if a is None and b is not None:
            changes.append(Change(ChangeKind.ADDED, index, b.name, None, None, _summary(b), not b.required,
                                  "a new required field: records made without it no longer fit"))
        elif b is None and a is not None:
            changes.append(Change(ChangeKind.REMOVED, index, a.name, None, _summary(a), None, False,
                                  "records holding it no longer fit (its index is unknown to the new version)"))
        elif a is not None and b is not None:
            changes.extend(_field_changes(a, b))
    return TemplateDiff(old.name, old.version, new.name, new.version, tuple(changes))
