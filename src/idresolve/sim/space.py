"""The identifier space at real scale without storing it: records generated from the identifier.

The report's 33 billion identifiers are spread over the topology's secondary and enterprise prefixes in
proportion to a weight per node (``SpaceSpec``). Prefix ``P`` of size ``n`` holds the identifiers
``P/<TAG><k>`` for ``k`` in ``[0, n)``: ``TAG`` is four letters fixed by the prefix and ``k`` is written
with eleven digits (``88.118.8/KQZD00012345678``). Anything else under ``P`` does not exist, which is how
a workload asks for unknown identifiers (``k >= n``).

A record is a pure function of its identifier: index 1 a URL naming it, index 100 the HS_ADMIN a
registration gives (the prefix admin), and the fields of the metadata template of the prefix's industry
(``config/templates``) with the 1001 reference naming it. The template fields come from a pool of
``variants`` records generated per prefix with ``core.templates.generate_values`` (identifier ``k`` takes
variant ``k mod variants``), so sizes and shapes are those of real records while a lookup costs a few
microseconds, not the generator's 40 or more (docs/benchmarks/scale-bulk.md).

Popularity ranks are not identifiers: ``handle_of_rank`` scrambles rank ``r`` with an affine bijection
modulo the size of the space, so the most popular identifiers are spread over every prefix in proportion
to its size rather than all sitting at the first prefix.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.admin import DEFAULT_PERMS_TEXT, AdminRef, perms_from_text
from ..core.handles import fold
from ..core.records import Record
from ..core.templates import Template, TemplateRef, generate_values, parse_definition_text
from ..core.templates.storage import template_handle
from ..core.topology import NodeSpec, Topology
from ..core.values import DEFAULT_TTL_S, HS_ADMIN, HandleValue

DIGITS = 11  # room for 99,999,999,999 identifiers per prefix
MAX_PER_PREFIX = 10**DIGITS
TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "config" / "templates"
# Industry words -> template name; the first match wins, anything else cycles through the templates.
INDUSTRY_TEMPLATES = (("tyre", "tyre-batch"), ("rubber", "tyre-batch"), ("steel", "steel-coil"),
                      ("metal", "steel-coil"), ("alumin", "steel-coil"), ("copper", "steel-coil"),
                      ("chemical", "chemical-lot"), ("pharma", "chemical-lot"), ("petro", "chemical-lot"),
                      ("appliance", "household-appliance"), ("electronic", "household-appliance"),
                      ("machinery", "machinery-part"), ("engine", "machinery-part"), ("bearing", "machinery-part"),
                      ("equipment", "machinery-part"))
REGISTERED_AT = 1_546_272_000  # 2019-01-01 UTC: synthetic records are stamped between this and the epoch


class SpaceError(ValueError):
    """A space that cannot be built (no prefix to spread over, a weight for an unknown node, ...)."""


@dataclass(frozen=True, slots=True)
class SpaceSpec:
    """How many identifiers, and how they spread: prefix weight = ``weights[node]`` or the role default."""

    identifiers: int = 33_000_000_000
    secondary_weight: float = 1.0  # a secondary node's own prefix (88.118/...)
    enterprise_weight: float = 3.0  # each enterprise prefix (88.118.8/...)
    weights: Mapping[str, float] = field(default_factory=dict)
    variants: int = 8  # generated records per prefix that identifiers take their template fields from
    optional_share: float = 0.25  # of a template's optional fields, the share a record fills

    def __post_init__(self) -> None:
        if self.identifiers < 1:
            raise SpaceError("identifiers must be at least 1")
        if not 1 <= self.variants <= 256:
            raise SpaceError("variants must be between 1 and 256")
        if not 0.0 <= self.optional_share <= 1.0:
            raise SpaceError("optional_share must be between 0 and 1")
        for name, w in (("secondary_weight", self.secondary_weight), ("enterprise_weight", self.enterprise_weight),
                        *self.weights.items()):
            if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
                raise SpaceError(f"weight {name!r} must be a number >= 0, not {w!r}")


def load_templates(directory: Path = TEMPLATES_DIR) -> dict[str, Template]:
    """The templates shipped in ``config/templates`` by name (empty when the directory is missing)."""
    out: dict[str, Template] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        t = parse_definition_text(path.read_bytes())
        out[t.name] = t
    return out


def template_for(industry: str | None, names: Sequence[str], i: int) -> str | None:
    if not names:
        return None
    text = (industry or "").lower()
    for word, name in INDUSTRY_TEMPLATES:
        if word in text and name in names:
            return name
    return names[i % len(names)]


def _tag(prefix: str) -> str:
    digest = hashlib.sha256(prefix.encode()).digest()
    return "".join(chr(ord("A") + b % 26) for b in digest[:4])


class PrefixSpace:
    """The synthetic identifiers of one prefix and how to make their records."""

    __slots__ = ("prefix", "folded", "tag", "ftag", "start", "size", "holder", "secondary_prefix", "_url",
                 "_admin", "_variants", "template")

    def __init__(self, prefix: str, start: int, size: int, holder: str, secondary_prefix: str,
                 template: Template | None, variants: int, optional_share: float = 0.25) -> None:
        self.prefix, self.folded, self.start, self.size, self.holder = prefix, fold(prefix), start, size, holder
        self.secondary_prefix = secondary_prefix
        self.tag = _tag(prefix)
        self.ftag = self.tag.lower()
        self.template = template
        self._url = f"https://id.example.cn/{prefix}/"
        admin = AdminRef(f"0.NA/{prefix}", 300, perms_from_text(DEFAULT_PERMS_TEXT)).to_bytes()
        self._admin = HandleValue(100, HS_ADMIN, admin, DEFAULT_TTL_S, REGISTERED_AT)
        pool: list[tuple[HandleValue, ...]] = []
        for v in range(variants):
            if template is None:
                pool.append(())
                continue
            ref = TemplateRef(template_handle(secondary_prefix, template.name), template.version)
            values = generate_values(template, f"{prefix}/{self.tag}{v:0{DIGITS}d}", seed=v, ref=ref,
                                     optional_share=optional_share)
            stamp = REGISTERED_AT + v * 9_973_331
            pool.append(tuple(HandleValue(x.index, x.type, x.data, x.ttl_s, stamp) for x in values))
        self._variants = pool

    def suffix(self, k: int) -> str:
        return f"{self.tag}{k:0{DIGITS}d}"

    def handle(self, k: int) -> str:
        return f"{self.prefix}/{self.tag}{k:0{DIGITS}d}"

    def member(self, folded_suffix: str) -> int | None:
        """``k`` when ``folded_suffix`` (lower case) names an identifier of this prefix, else None."""
        if len(folded_suffix) != 4 + DIGITS or not folded_suffix.startswith(self.ftag):
            return None
        digits = folded_suffix[4:]
        if not digits.isdigit() or not digits.isascii():
            return None
        k = int(digits)
        return k if k < self.size else None

    def record(self, k: int) -> Record:
        suffix = f"{self.tag}{k:0{DIGITS}d}"
        stamp = REGISTERED_AT + (k * 7_919) % 157_680_000  # somewhere in five years from 2019
        pool = self._variants
        url = HandleValue(1, "URL", (self._url + suffix).encode(), DEFAULT_TTL_S, stamp)
        return Record(f"{self.prefix}/{suffix}", (url, self._admin, *pool[k % len(pool)]))


class IdentifierSpace:
    """Every synthetic prefix, in topology order, with a global index over all of their identifiers."""

    def __init__(self, prefixes: list[PrefixSpace]) -> None:
        if not prefixes:
            raise SpaceError("the topology has no secondary or enterprise prefix to hold identifiers")
        self.prefixes = prefixes
        self.total = sum(p.size for p in prefixes)
        self._starts = [p.start for p in prefixes]
        self._by_folded = {p.folded: p for p in prefixes}
        # An odd multiplier near total / golden ratio, coprime with the total: the rank scramble.
        a = int(self.total * 0.6180339887) | 1
        while math.gcd(a, self.total) != 1:
            a += 2
        self._mul, self._add = a % self.total or 1, self.total // 3

    def of(self, folded_prefix: str) -> PrefixSpace | None:
        return self._by_folded.get(folded_prefix)

    def held_by(self, node: str) -> list[PrefixSpace]:
        return [p for p in self.prefixes if p.holder == node]

    def locate(self, x: int) -> tuple[PrefixSpace, int]:
        """Global position ``x`` in ``[0, total)`` -> its prefix and ``k`` within it."""
        p = self.prefixes[bisect.bisect_right(self._starts, x) - 1]
        return p, x - p.start

    def handle_of_rank(self, rank: int) -> str:
        """The identifier of popularity rank ``rank`` (0 the most popular)."""
        p, k = self.locate((rank * self._mul + self._add) % self.total)
        return f"{p.prefix}/{p.tag}{k:0{DIGITS}d}"

    def place_of_rank(self, rank: int) -> tuple[PrefixSpace, int]:
        """The prefix and ``k`` of popularity rank ``rank``: ``handle_of_rank`` before its name is written."""
        return self.locate((rank * self._mul + self._add) % self.total)

    def unknown_handle(self, x: int) -> str:
        """An identifier that does not exist, under a prefix drawn by size (``x`` uniform in the space)."""
        p, k = self.locate(x % self.total)
        room = MAX_PER_PREFIX - p.size
        return f"{p.prefix}/{p.tag}{p.size + k % max(1, room):0{DIGITS}d}"


def build_space(topology: Topology, spec: SpaceSpec, templates: Mapping[str, Template] | None = None) -> IdentifierSpace:
    """Spread ``spec.identifiers`` over the topology's prefixes (largest remainder, so sizes add up)."""
    nodes: dict[str, NodeSpec] = {n.name: n for n in topology.nodes}
    unknown = sorted(set(spec.weights) - set(nodes))
    if unknown:
        raise SpaceError(f"space weights name unknown nodes: {', '.join(unknown)}")
    entries: list[tuple[NodeSpec, float]] = []
    for n in topology.nodes:
        if n.role in ("secondary", "enterprise") and n.prefix:
            default = spec.secondary_weight if n.role == "secondary" else spec.enterprise_weight
            entries.append((n, float(spec.weights.get(n.name, default))))
    weight = sum(w for _, w in entries)
    if weight <= 0:
        raise SpaceError("every prefix has weight 0: nothing holds identifiers")
    exact = [spec.identifiers * w / weight for _, w in entries]
    sizes = [int(e) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - sizes[i], reverse=True)[:spec.identifiers - sum(sizes)]:
        sizes[i] += 1
    if max(sizes, default=0) >= MAX_PER_PREFIX:
        raise SpaceError(f"a prefix would hold {max(sizes):,} identifiers; at most {MAX_PER_PREFIX - 1:,} fit")
    templates = dict(templates if templates is not None else load_templates())
    names = sorted(templates)
    out: list[PrefixSpace] = []
    start = 0
    for i, ((n, _), size) in enumerate(zip(entries, sizes, strict=True)):
        if size == 0:
            continue
        secondary = n if n.role == "secondary" else nodes[n.parent or ""]
        assert n.prefix is not None and secondary.prefix is not None
        holder = topology.server_for_prefix(n.prefix).name
        industry = n.industry or secondary.industry
        name = template_for(industry, names, i)
        out.append(PrefixSpace(n.prefix, start, size, holder, secondary.prefix,
                               templates[name] if name else None, spec.variants, spec.optional_share))
        start += size
    return IdentifierSpace(out)


def template_records(space: IdentifierSpace) -> dict[str, list[tuple[str, Template]]]:
    """Per secondary prefix, the template records its identifiers name: ``(handle, template)``."""
    out: dict[str, list[tuple[str, Template]]] = {}
    for p in space.prefixes:
        if p.template is None:
            continue
        handle = template_handle(p.secondary_prefix, p.template.name)
        have = out.setdefault(p.secondary_prefix, [])
        if all(h != handle for h, _ in have):
            have.append((handle, p.template))
    return out
