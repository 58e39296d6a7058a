"""Metadata templates at an authoritative node: the template version a write must fit, and where it comes from.

Pure and synchronous, like the rest of the node layer (time comes in as ``now``). The checks themselves
are the core's (``core.templates``); this module holds what a node adds around them:

- ``TemplateCache``: parsed template versions by reference (folded handle, version). The node's own
  templates (records it holds) are read from its store and kept until their record changes; templates
  held elsewhere are learned from fetches and kept ``min(value TTL, ttl_cap_s)``. A template that does
  not exist, lacks the version or does not parse is remembered as that answer for ``negative_ttl_s``.
  At most ``entries`` versions are kept (the oldest template goes first).
- ``TemplateNeeded``: a write named a template version the node does not hold and has no fresh copy of.
  The node raises it *after* authentication and authority checks (an anonymous caller never makes a node
  fetch anything) and before anything is stored. A surface that can fetch (``net.services``,
  ``http.app``) catches it, fetches the named records through the hierarchy (``net.templates``), hands
  them to ``TemplateCache.learn`` and tries the write once more. A surface that cannot fetch answers it
  as it is: code 2, HTTP 503, nothing stored.
- ``TemplateUnavailable``: the documented choice when a template cannot be reached (its holder or the
  hierarchy does not answer): **the write is refused and nothing is stored** (code 2, HTTP 503: try
  again later), never stored unchecked. Published versions never change (``check_template_record_change``),
  so a copy that expired is still that version: when a refresh fails, an expired copy is used for
  ``stale_grace_s`` more seconds rather than refusing writes the node could check.
- ``check_template_write``: the rules for a write to a template record itself (append-only versions, one
  template name, each added definition parses and is stored in canonical form).

A write names at most ``MAX_FETCHES_PER_WRITE`` templates the node must fetch (a batch of 2,000 items
naming 2,000 made-up templates must not make it walk the hierarchy 2,000 times).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..core.codes import ResponseCode
from ..core.errors import HandleError, InvalidValue
from ..core.handles import fold
from ..core.templates import (
    TEMPLATE_DEFINITION_TYPE,
    Template,
    TemplateRef,
    check_template_record_change,
    stored_versions,
    template_from_values,
)
from ..core.values import TEMPLATE_REF_INDEX, HandleValue

MAX_FETCHES_PER_WRITE = 8
CACHE_ENTRIES = 256
TTL_CAP_S = 3600.0
NEGATIVE_TTL_S = 30.0
STALE_GRACE_S = 60.0

#: What a surface calls to fetch template records through the hierarchy (``net.templates.TemplateFetcher``):
#: it learns every reference it can into the node's cache, and raises ``TemplateUnavailable`` for those it
#: cannot reach (after keeping any expired copy).
FetchTemplates = Callable[[Sequence[TemplateRef]], Awaitable[None]]


class TemplateUnavailable(HandleError):
    """A write names a template that could not be reached: refused, nothing stored (code 2, HTTP 503)."""

    code = ResponseCode.ERROR

    @property
    def http_status(self) -> int:
        return 503


class TemplateNeeded(TemplateUnavailable):
    """The write needs template versions held elsewhere (``refs``); a surface that can fetch them catches
    this, fetches, and retries once. Answered as it is, it is the fail-closed refusal."""

    def __init__(self, refs: Sequence[TemplateRef], *, handle: str | None = None) -> None:
        self.refs = tuple(refs)
        super().__init__(f"{_names(self.refs)} {'is' if len(self.refs) == 1 else 'are'} not held by this node and "
                         "no copy has been fetched; nothing was stored", handle=handle)

    def without_resolver(self) -> TemplateUnavailable:
        """What a node that reaches no other node says (``idresolve node`` without --template-resolver)."""
        return TemplateUnavailable(f"{_names(self.refs)} {'is' if len(self.refs) == 1 else 'are'} held elsewhere "
                                   "and this node has no template resolver to fetch it from (idresolve node "
                                   "--template-resolver HOST:PORT); nothing was stored", handle=self.handle)


def _names(refs: Sequence[TemplateRef]) -> str:
    shown = ", ".join(str(r) for r in refs[:4]) + (f" and {len(refs) - 4} more" if len(refs) > 4 else "")
    return f"template{'s' * (len(refs) != 1)} {shown}"


@dataclass(slots=True)
class _Entry:
    template: Template | None  # None: the answer is ``problem``
    problem: str
    expires_at: float  # math.inf for the node's own templates (dropped when their record changes)


class TemplateCache:
    """Parsed template versions by ``TemplateRef.key``; see the module docstring for the rules."""

    def __init__(self, *, entries: int = CACHE_ENTRIES, ttl_cap_s: float = TTL_CAP_S,
                 negative_ttl_s: float = NEGATIVE_TTL_S, stale_grace_s: float = STALE_GRACE_S) -> None:
        self.entries, self.ttl_cap_s = entries, ttl_cap_s
        self.negative_ttl_s, self.stale_grace_s = negative_ttl_s, stale_grace_s
        # folded template handle -> version -> entry; forgetting a template record is one pop
        self._by_handle: dict[str, dict[int, _Entry]] = {}
        self._count = 0
        self.fetched = 0  # versions learned from other nodes (metrics, tests)

    def __len__(self) -> int:
        return self._count

    def get(self, ref: TemplateRef, now: float) -> Template | None:
        """The template ``ref`` names when a fresh answer is cached: the Template, or ``InvalidValue`` for a
        cached "does not exist / has no such version / does not parse". None: not cached or expired."""
        versions = self._by_handle.get(fold(ref.handle))
        entry = versions.get(ref.version) if versions is not None else None
        if entry is None or entry.expires_at <= now:
            return None
        if entry.template is None:
            raise InvalidValue(entry.problem)
        return entry.template

    def learn(self, ref: TemplateRef, values: Sequence[HandleValue] | None, now: float, *,
              local: bool = False) -> Template:
        """Remember what the template record holding ``values`` (None: it does not exist) says about ``ref``,
        and return the template, or raise ``InvalidValue`` with the problem. ``local``: the node's own
        record (kept until ``forget``)."""
        try:
            if values is None:
                raise InvalidValue(f"template {ref.handle} does not exist")
            template = template_from_values(values, ref.version, handle=ref.handle)
        except InvalidValue as exc:
            self._put(ref, _Entry(None, _named(ref, exc.message), now + self.negative_ttl_s))
            raise InvalidValue(_named(ref, exc.message)) from None
        if local:
            expires = math.inf
        else:
            self.fetched += 1
            ttl = min((v.ttl_s for v in values if v.type == TEMPLATE_DEFINITION_TYPE), default=0)
            expires = now + min(float(ttl), self.ttl_cap_s)
        self._put(ref, _Entry(template, "", expires))
        return template

    def hold(self, ref: TemplateRef, template: Template) -> None:
        """Keep ``template``, parsed already, as the node's own (until ``forget``): what ``learn(..., local=True)``
        does without parsing the definition again (the simulator gives every node the same parsed object)."""
        self._put(ref, _Entry(template, "", math.inf))

    def keep_stale(self, ref: TemplateRef, now: float) -> bool:
        """A refresh of ``ref`` failed: keep an expired copy ``stale_grace_s`` longer. False: none is held."""
        versions = self._by_handle.get(fold(ref.handle))
        entry = versions.get(ref.version) if versions is not None else None
        if entry is None or entry.template is None:
            return False
        entry.expires_at = max(entry.expires_at, now + self.stale_grace_s)
        return True

    def forget(self, key: str) -> None:
        """The record ``key`` (folded handle) changed or went: drop what was learned from it."""
        gone = self._by_handle.pop(key, None)
        if gone is not None:
            self._count -= len(gone)

    def _put(self, ref: TemplateRef, entry: _Entry) -> None:
        key = fold(ref.handle)
        versions = self._by_handle.get(key)
        if versions is None:
            while self._count >= self.entries and self._by_handle:
                self.forget(next(iter(self._by_handle)))  # the oldest template, all its versions
            versions = self._by_handle[key] = {}
        if ref.version not in versions:
            self._count += 1
        versions[ref.version] = entry


def _named(ref: TemplateRef, problem: str) -> str:
    return problem if str(ref.handle) in problem else f"template {ref}: {problem}"


@dataclass(frozen=True, slots=True)
class TemplateUse:
    """What a record's values say about templates, found in one pass: the reference at 1001 (or None) and
    whether any value is a template definition (the record is, or would become, a template record)."""

    ref: TemplateRef | None
    defines: bool


def template_use(values: Sequence[HandleValue]) -> TemplateUse:
    """One pass over ``values``; ``InvalidValue`` when the 1001 value is malformed."""
    ref = None
    defines = False
    for v in values:
        if v.index == TEMPLATE_REF_INDEX:
            ref = TemplateRef.from_value(v)
        elif v.type == TEMPLATE_DEFINITION_TYPE:
            defines = True
    if ref is None and not defines:
        return _NO_TEMPLATES  # most records: one shared answer (a batch asks for every record)
    return TemplateUse(ref, defines)


_NO_TEMPLATES = TemplateUse(None, False)


def check_template_write(old: Sequence[HandleValue], new: Sequence[HandleValue]) -> None:
    """A write that turns a record holding ``old`` into one holding ``new``, where either holds a template
    definition: the core's append-only rules, and every added version in canonical form (what
    ``Template.to_bytes`` writes and ``idresolve template create`` sends), so that stored definitions are
    the documented compact form, within 24 KiB each, and equal versions are equal bytes."""
    check_template_record_change(old, new)
    before = stored_versions(old)
    for version, value in sorted(stored_versions(new).items()):
        if version in before:
            continue
        template = template_from_values((value,), version)
        if template.to_bytes() != value.data:
            raise InvalidValue(f"version {version} of template {template.name} must be stored in canonical form "
                               "(compact JSON, keys in the documented order, defaults left out: what "
                               "`idresolve template create` sends)")
