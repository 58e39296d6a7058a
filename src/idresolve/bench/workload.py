"""What benchmarks send: identifiers, their values, and requests encoded before any clock starts.

Identifiers are zero-padded (``88.100/bench-r000042``) so every answer of a run has the same size, and
carry two values (a URL and a DESC), the shape of a typical product record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from ..client.rest import basic_header
from ..core.values import HandleValue, string_value
from ..nodes.bootstrap import admin_identity
from .httpload import encode_request

PREFIX = "88.100"


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


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def auth_header(secret: str, prefix: str = PREFIX) -> tuple[str, str]:
    return ("Authorization", basic_header(admin_identity(prefix), secret))


def batch_requests(names: Sequence[str], batch_size: int, host: str, port: int, secret: str) -> list[bytes]:
    """``POST /api/batch`` requests registering ``names``, ``batch_size`` per request, fully encoded."""
    headers = (auth_header(secret), ("Content-Type", "application/json"))
    out = []
    for part in chunks(names, batch_size):
        body = orjson.dumps({"handles": [{"handle": h, "values": json_values(h)} for h in part], "overwrite": False})
        out.append(encode_request("POST", "/api/batch", host, port, body=body, headers=headers))
    return out


def resolve_requests(names: Sequence[str], host: str, port: int) -> list[bytes]:
    """Anonymous ``GET /api/handles/<handle>`` requests, the resolution hot path."""
    return [encode_request("GET", "/api/handles/" + quote(h, safe="/:."), host, port) for h in names]
