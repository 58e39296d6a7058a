"""How a template lives as an identifier, and how a record names its template.

A template is published as a record of its own at the node of the secondary prefix that owns it, by
convention ``<prefix>/TPL-<name>`` (``88.118/TPL-tyre-batch``). It resolves through the hierarchy like
any identifier. Its values:

- version ``v`` (1..``MAX_TEMPLATE_VERSIONS``) is the value at index ``TEMPLATE_VERSION_BASE_INDEX + v``
  (1101, 1102, ...), type ``TEMPLATE_DEFINITION``, data the canonical definition (``Template.to_bytes``:
  compact UTF-8 JSON, at most ``MAX_DEFINITION_BYTES``), so one version can be read alone with the
  Handle API's index filter (``?index=1102``) and every version stays readable;
- the usual HS_ADMIN (and anything else the publisher adds: a DESC, a URL to documentation).

Versions are append-only: changing a template adds the next version (``new_version_value``); a write
that would change or remove a stored version, leave a gap, or mix templates of different names in one
record is refused (``check_template_record_change``, for every write to a record that holds or would
hold a definition). 32 versions of 24 KiB stay under the store's
1 MiB record limit; a template that needs a 33rd publishes under a new name.

A record that follows a template names it at index ``TEMPLATE_REF_INDEX`` (1001), type ``TEMPLATE``,
data ``<template handle>@<version>`` (``88.118/TPL-tyre-batch@1``). The version is always written: a
record is validated against the version it names, so a new version, however incompatible, never
invalidates a stored record; moving a record to a new version is an explicit change of its value 1001.
The handle is everything before the last ``@`` (a suffix may itself hold ``@``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InvalidValue
from ..handles import check_prefix, fold
from ..values import DEFAULT_TTL_S, TEMPLATE_REF_INDEX, HandleValue
from .definition import MAX_TEMPLATE_VERSIONS, Template, parse_definition_text
from .fields import handle_problem

TEMPLATE_REF_TYPE = "TEMPLATE"
TEMPLATE_DEFINITION_TYPE = "TEMPLATE_DEFINITION"
TEMPLATE_VERSION_BASE_INDEX = 1100
TEMPLATE_SUFFIX_PREFIX = "TPL-"

#: A handle (255 characters of up to 4 UTF-8 bytes), "@" and a version.
MAX_REF_BYTES = 255 * 4 + 8
_VERSION = re.compile(r"[1-9][0-9]{0,5}")


def template_handle(prefix: str, name: str) -> str:
    """The conventional handle of template ``name`` published under ``prefix``."""
    return f"{check_prefix(prefix)}/{TEMPLATE_SUFFIX_PREFIX}{name}"


def version_index(version: int) -> int:
    if not 1 <= version <= MAX_TEMPLATE_VERSIONS:
        raise InvalidValue(f"template version must be between 1 and {MAX_TEMPLATE_VERSIONS}, got {version}")
    return TEMPLATE_VERSION_BASE_INDEX + version


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """What a record's value 1001 says: which template, which version."""

    handle: str
    version: int

    @property
    def key(self) -> tuple[str, int]:
        """Cache key: handles match case-insensitively (ASCII), versions exactly."""
        return fold(self.handle), self.version

    def __str__(self) -> str:
        return f"{self.handle}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> TemplateRef:
        """``<handle>@<version>``; raises ``InvalidValue`` (the reference is a value, code 202)."""
        handle, at, version = text.rpartition("@")
        if not at or not _VERSION.fullmatch(version):
            raise InvalidValue(f"template reference {text[:80]!r} is not <template handle>@<version>")
        problem = handle_problem(handle)
        if problem is not None:
            raise InvalidValue(f"template reference {text[:80]!r}: {problem}")
        number = int(version)
        if number > MAX_TEMPLATE_VERSIONS:
            raise InvalidValue(f"template reference {text[:80]!r}: versions go up to {MAX_TEMPLATE_VERSIONS}")
        return cls(handle, number)

    @classmethod
    def from_value(cls, value: HandleValue) -> TemplateRef:
        if len(value.data) > MAX_REF_BYTES:  # checked before the cache, which then holds small keys only
            raise InvalidValue(f"template reference at index {TEMPLATE_REF_INDEX} is longer than a handle "
                               "and a version")
        return _ref_from(value.type[:64], value.data)

    def to_value(self, *, ttl_s: int = DEFAULT_TTL_S) -> HandleValue:
        return HandleValue(TEMPLATE_REF_INDEX, TEMPLATE_REF_TYPE, str(self).encode("utf-8"), ttl_s)


@lru_cache(maxsize=1024)
def _ref_from(vtype: str, data: bytes) -> TemplateRef:
    """A 1001 value's reference. Cached: a batch's records name the same few templates, and a
    refusal is an exception, which the cache does not keep."""
    if vtype != TEMPLATE_REF_TYPE:
        raise InvalidValue(f"value {TEMPLATE_REF_INDEX} names the template and must have type "
                           f"{TEMPLATE_REF_TYPE}, not {vtype[:40]!r}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidValue(f"template reference at index {TEMPLATE_REF_INDEX} is not UTF-8 text") from None
    return TemplateRef.parse(text)


def template_ref_of(values: Iterable[HandleValue]) -> TemplateRef | None:
    """The template a record's values name at index 1001, or None; ``InvalidValue`` if malformed."""
    for v in values:
        if v.index == TEMPLATE_REF_INDEX:
            return TemplateRef.from_value(v)
    return None


# -- the template record ------------------------------------------------------------------------------

def version_value(template: Template, *, ttl_s: int = DEFAULT_TTL_S) -> HandleValue:
    """The value that stores ``template`` (one version) in its template record."""
    return HandleValue(version_index(template.version), TEMPLATE_DEFINITION_TYPE, template.to_bytes(), ttl_s)


def is_template_record(values: Iterable[HandleValue]) -> bool:
    return any(v.type == TEMPLATE_DEFINITION_TYPE for v in values)


def stored_versions(values: Iterable[HandleValue]) -> dict[int, HandleValue]:
    """Version number -> its stored value, for every definition value of a template record."""
    out: dict[int, HandleValue] = {}
    for v in values:
        if v.type == TEMPLATE_DEFINITION_TYPE:
            version = v.index - TEMPLATE_VERSION_BASE_INDEX
            if not 1 <= version <= MAX_TEMPLATE_VERSIONS:
                raise InvalidValue(f"a {TEMPLATE_DEFINITION_TYPE} value must be at index "
                                   f"{TEMPLATE_VERSION_BASE_INDEX + 1}..{TEMPLATE_VERSION_BASE_INDEX + MAX_TEMPLATE_VERSIONS}"
                                   f" (version 1..{MAX_TEMPLATE_VERSIONS}), not {v.index}")
            out[version] = v
    return out


def _decode(value: HandleValue) -> Template:
    template = parse_definition_text(value.data)
    if version_index(template.version) != value.index:
        raise InvalidValue(f"the definition at index {value.index} says version {template.version}; "
                           f"version {template.version} belongs at index {version_index(template.version)}")
    return template


def template_from_values(values: Iterable[HandleValue], version: int | None = None, *, handle: str = "template") -> Template:
    """One version (the latest when ``version`` is None) of the template stored in ``values``."""
    versions = stored_versions(values)
    if not versions:
        raise InvalidValue(f"{handle} holds no template definition")
    wanted = max(versions) if version is None else version
    if wanted not in versions:
        raise InvalidValue(f"{handle} has no version {wanted} (it has {', '.join(map(str, sorted(versions)))})")
    return _decode(versions[wanted])


def new_version_value(existing: Iterable[HandleValue], template: Template, *,
                      ttl_s: int = DEFAULT_TTL_S) -> HandleValue:
    """The value to add for ``template`` as the next version of the record holding ``existing``.

    The first version is 1; each next one is the latest + 1 and keeps the template's name."""
    versions = stored_versions(existing)
    latest = max(versions, default=0)
    if template.version != latest + 1:
        have = f"its latest version is {latest}" if latest else "it has no version yet"
        raise InvalidValue(f"a new version of {template.name} must be version {latest + 1} ({have}), "
                           f"not {template.version}")
    if latest and _decode(versions[latest]).name != template.name:
        raise InvalidValue(f"this record holds template {_decode(versions[latest]).name}, not {template.name}")
    return version_value(template, ttl_s=ttl_s)


def check_template_record_change(old: Sequence[HandleValue], new: Sequence[HandleValue]) -> None:
    """Refuse a write to a template record that would break what records rely on.

    ``old`` is the stored record's values (empty when creating), ``new`` what it would hold after the
    write. A published version is never changed or removed (records may name it); versions run 1..n
    without a gap; every added definition parses at its own index; one record holds one template name.
    Only the added definitions are parsed (the stored ones were checked when they were added)."""
    before = stored_versions(old)
    after = stored_versions(new)
    for version, value in before.items():
        kept = after.get(version)
        if kept is None:
            raise InvalidValue(f"version {version} of a template cannot be removed: records may name it")
        if kept.data != value.data:
            raise InvalidValue(f"version {version} of a template cannot be changed: publish version "
                               f"{max(after) + 1} instead")
    if sorted(after) != list(range(1, len(after) + 1)):
        raise InvalidValue(f"template versions must run from 1 without gaps, got {', '.join(map(str, sorted(after)))}")
    added = sorted(set(after) - set(before))
    names = {_decode(after[v]).name for v in added}
    if names and before:
        names.add(_decode(before[max(before)]).name)
    if len(names) > 1:
        raise InvalidValue(f"one template record holds one template, not {', '.join(sorted(names))}")
