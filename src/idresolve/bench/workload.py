"""What benchmarks send: identifiers, their values, and requests encoded before any clock starts.

Identifiers are zero-padded (``88.100/bench-r000042``) so every answer of a run has the same size, and
carry two values (a URL and a DESC), the shape of a typical product record.

``bench batch --template``: records that fill the tyre-batch template (``TemplatedWorkload``: a URL and
about 14 generated fields, the shape ``idresolve seed`` registers), registered once naming the template
at index 1001 (checked on every write) and once with the same text at index 3 as a DESC instead (not
checked): the same values and bytes to store, so the difference is what checking costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from ..client.rest import basic_header
from ..core.records import Record
from ..core.templates import (
    Template,
    TemplateRef,
    generate_values,
    parse_definition_text,
    template_handle,
    version_value,
)
from ..core.values import TEMPLATE_REF_INDEX, HandleValue, string_value
from ..nodes.bootstrap import admin_identity
from .httpload import encode_request

PREFIX = "88.100"
TEMPLATE_FILE = Path(__file__).resolve().parents[3] / "config" / "templates" / "tyre-batch.json"
FILLED_POOL = 1_000  # distinct filled records; identifier i carries those of i % FILLED_POOL (generating costs)


def handles(count: int, tag: str, prefix: str = PREFIX) -> list[str]:
    return [f"{prefix}/bench-{tag}{i:06d}" for i in range(count)]


def json_values(handle: str) -> list[dict[str, Any]]:
    suffix = handle.split("/", 1)[1]
    return [{"index": 1, "type": "URL", "data": f"https://example.com/products/{suffix}"},
            {"index": 2, "type": "DESC", "data": f"Radial tyre, batch {suffix}"}]


def core_values(handle: str) -> tuple[HandleValue, ...]:
    suffix = handle.split("/", 1)[1]
    return (string_value(1, "URL", f"https://example.com/products/{suffix}"),
            string_value(2, "DESC", f"Radial tyre, batch {suffix}"))


@dataclass
class TemplatedWorkload:
    """The tyre-batch template published under ``PREFIX`` and records that fill it, with and without the
    reference that makes a node check them."""

    template: Template
    ref: TemplateRef
    _filled: list[tuple[HandleValue, ...]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = TEMPLATE_FILE) -> TemplatedWorkload:
        template = parse_definition_text(path.read_bytes())
        ref = TemplateRef(template_handle(PREFIX, template.name), template.version)
        pool = [generate_values(template, f"{PREFIX}/bench-t{i:06d}", seed="bench", ref=ref) for i in range(FILLED_POOL)]
        return cls(template, ref, pool)

    @property
    def record(self) -> Record:
        return Record(self.ref.handle, (version_value(self.template),))

    def values(self, handle: str, i: int, *, checked: bool) -> tuple[HandleValue, ...]:
        fields = self._filled[i % len(self._filled)]
        if not checked:  # the reference's text as a plain value: names no template, same size
            fields = tuple(string_value(3, "DESC", str(self.ref)) if v.index == TEMPLATE_REF_INDEX else v
                           for v in fields)
        return (string_value(1, "URL", f"https://example.com/products/{handle.split('/', 1)[1]}"), *fields)

    def items(self, names: Sequence[str], *, checked: bool) -> list[tuple[str, tuple[HandleValue, ...]]]:
        return [(h, self.values(h, i, checked=checked)) for i, h in enumerate(names)]


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def auth_header(secret: str, prefix: str = PREFIX) -> tuple[str, str]:
    return ("Authorization", basic_header(admin_identity(prefix), secret))


def batch_requests(names: Sequence[str], batch_size: int, host: str, port: int, secret: str, *,
                   values: Callable[[str], list[dict[str, Any]]] = json_values) -> list[bytes]:
    """``POST /api/batch`` requests registering ``names``, ``batch_size`` per request, fully encoded."""
    headers = (auth_header(secret), ("Content-Type", "application/json"))
    out = []
    for part in chunks(names, batch_size):
        body = orjson.dumps({"handles": [{"handle": h, "values": values(h)} for h in part], "overwrite": False})
        out.append(encode_request("POST", "/api/batch", host, port, body=body, headers=headers))
    return out


def resolve_paths(names: Sequence[str]) -> list[str]:
    """The request paths ``/api/handles/<handle>`` of ``names``, percent-encoded."""
    return ["/api/handles/" + quote(h, safe="/:.") for h in names]


def resolve_requests(names: Sequence[str], host: str, port: int) -> list[bytes]:
    """Anonymous ``GET /api/handles/<handle>`` requests, the resolution hot path."""
    return [encode_request("GET", path, host, port) for path in resolve_paths(names)]
