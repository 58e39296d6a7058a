"""The text of generated YAML files (docker-compose.yml, Kubernetes manifests), and what a person reads
when a file on disk has drifted from what the topology generates.

The writer knows block mappings, flow sequences of scalars and block sequences of mappings: all these
files need. A string is written plain only when it cannot be read back as anything else (YAML 1.1 or
1.2); otherwise as double-quoted JSON, which is valid YAML. So compose and kubectl (YAML 1.2 and 1.1
readers respectively) and PyYAML (1.1) read the same values.

Rules: pure; the same document gives the same text byte for byte, so ``--check`` compares text.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

_PLAIN = re.compile(r"(?:[A-Za-z_/]|--?[A-Za-z])[A-Za-z0-9_./=-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as YAML")


def _inline(value: object) -> str | None:
    """The value on one line, or None when it needs a block of its own."""
    if isinstance(value, dict):
        return "{}" if not value else None
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return None
    return scalar(value)


def _block(value: dict[str, Any] | list[Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            one = _inline(item)
            if one is not None:
                out.append(f"{pad}{scalar(key)}: {one}")
            else:
                out.append(f"{pad}{scalar(key)}:")
                out += _block(item, indent + 2)
        return out
    for item in value:
        if isinstance(item, dict) and item:
            lines = _block(item, indent + 2)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out += lines[1:]
        else:
            one = _inline(item)
            if one is None:
                raise TypeError("lists of lists are not written")
            out.append(f"{pad}- {one}")
    return out


def dump_yaml(doc: dict[str, Any]) -> str:
    """``doc`` as YAML; top-level sections and the services are separated by blank lines."""
    out: list[str] = []
    for key, value in doc.items():
        one = _inline(value)
        if one is not None:
            out.append(f"{scalar(key)}: {one}")
            continue
        if out and out[-1] != "":
            out.append("")
        out.append(f"{scalar(key)}:")
        if key == "services" and isinstance(value, dict):
            for i, (name, svc) in enumerate(value.items()):
                if i:
                    out.append("")
                out += _block({name: svc}, 2)
        else:
            out += _block(value, 2)
        out.append("")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def dump_document(doc: dict[str, Any]) -> str:
    """One YAML document (a Kubernetes object), no blank lines."""
    return "\n".join(_block(doc, 0)) + "\n"


def part_changes(old: dict[str, list[str]], new: dict[str, list[str]], noun: str) -> list[str]:
    """The parts of a generated file (services, objects), keyed by name, to add, remove and change."""
    out = []
    added = [s for s in new if s not in old]
    removed = [s for s in old if s not in new]
    changed = [s for s in new if s in old and old[s] != new[s]]
    if added:
        out.append(f"{noun} to add ({len(added)}): {', '.join(added)}")
    if removed:
        out.append(f"{noun} to remove ({len(removed)}): {', '.join(removed)}")
    if changed:
        out.append(f"{noun} that differ ({len(changed)}): {', '.join(changed)}")
    return out


def text_diff(existing: str, wanted: str, max_lines: int = 40) -> list[str]:
    """The start of a unified diff from the file on disk to what is generated."""
    diff = list(difflib.unified_diff(existing.splitlines(), wanted.splitlines(), "on disk", "generated", n=1,
                                     lineterm=""))
    if len(diff) > max_lines:
        return [*diff[:max_lines], f"... {len(diff) - max_lines} more diff lines"]
    return diff
