"""The servers' own view of a run: ``/metrics`` of the cluster's nodes scraped right before and right after
it, as deltas, next to what the client counted (``crosscheck``).

What a node counts (``idresolve.metrics``): ``idresolve_requests_total{surface,op,code}`` for every answer
its service gave (binary: the Handle response code; REST: the HTTP status, refused requests included),
``idresolve_shed_*_total`` for binary requests refused with code 3 before the service saw them,
``idresolve_cache_hits_total`` and ``idresolve_upstream_requests_total`` at recursive nodes.

Agreement: the server's answers should equal the client's exactly. When the client gave up on requests
(timeouts) or lost connections, the server may have answered more than the client received but never
more than it sent: that is reported as consistent. Anything else is a disagreement, flagged.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
REST_OP = "GET /api/handles/{handle}"
SHED = ("idresolve_shed_overload_total", "idresolve_shed_rate_total", "idresolve_shed_inflight_total")


def parse(text: str) -> Sample:
    out: Sample = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = value
    return out


def scrape_one(url: str, timeout_s: float = 5.0) -> Sample | None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout_s) as resp:  # noqa: S310 - loopback
            return parse(resp.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def scrape(nodes: Sequence[Mapping[str, Any]]) -> dict[str, Sample | None]:
    """``{node name: sample or None when unreachable}`` for nodes with an ``http`` URL, in parallel."""
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(nodes)))) as pool:
        results = pool.map(lambda n: scrape_one(str(n["http"])), nodes)
        return {str(n["name"]): r for n, r in zip(nodes, results, strict=True)}


def delta(before: Mapping[str, Sample | None], after: Mapping[str, Sample | None]) -> dict[str, Sample | None]:
    out: dict[str, Sample | None] = {}
    for name, a in after.items():
        b = before.get(name)
        if a is None or b is None:
            out[name] = None
            continue
        out[name] = {k: v - b.get(k, 0.0) for k, v in a.items() if v - b.get(k, 0.0)}
    return out


def counts(d: Sample | None) -> dict[str, Any] | None:
    """The figures of one node's delta that a resolution run moves."""
    if d is None:
        return None
    binary: dict[str, int] = {}
    rest: dict[str, int] = {}
    scalars: dict[str, float] = {}
    for (name, labels), v in d.items():
        lab = dict(labels)
        if name == "idresolve_requests_total":
            if lab.get("surface") == "binary" and lab.get("op") == "resolution":
                binary[lab.get("code", "?")] = binary.get(lab.get("code", "?"), 0) + int(v)
            elif lab.get("surface") == "rest" and lab.get("op") == REST_OP:
                rest[lab.get("code", "?")] = rest.get(lab.get("code", "?"), 0) + int(v)
        elif not labels:
            scalars[name] = v
    return {"binary": dict(sorted(binary.items())), "rest": dict(sorted(rest.items())),
            "cache_hits": int(scalars.get("idresolve_cache_hits_total", 0)),
            "cache_misses": int(scalars.get("idresolve_cache_misses_total", 0)),
            "upstream": int(scalars.get("idresolve_upstream_requests_total", 0)),
            "shed": int(sum(scalars.get(k, 0) for k in SHED)),
            "link_delays": int(scalars.get("idresolve_link_delays_total", 0))}


def by_role(deltas: Mapping[str, Sample | None], roles: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Binary resolutions answered per role (``top``, ``secondary``, ...), and nodes that did not answer the
    scrape (a killed node)."""
    out: dict[str, dict[str, int]] = {}
    for name, d in deltas.items():
        role = roles.get(name, "?")
        slot = out.setdefault(role, {"answered": 0, "nodes": 0, "unreachable": 0})
        slot["nodes"] += 1
        c = counts(d)
        if c is None:
            slot["unreachable"] += 1
            continue
        slot["answered"] += sum(c["binary"].values())
    return out


def crosscheck(client: Mapping[str, Any], protocol: str, server: Mapping[str, Any] | None, *,
               expect_cache_hits: bool | None) -> dict[str, Any]:
    """Compare the client's counts of one run with the target node's own (``counts`` of its delta)."""
    if server is None:
        return {"verdict": "unavailable", "note": "the node's /metrics could not be scraped before and after"}
    client_codes = {str(k): int(v) for k, v in client.get("codes", {}).items()}
    answered_client = sum(client_codes.values())
    sent = int(client.get("sent", 0))
    if protocol == "binary":
        server_codes = dict(server["binary"])
        shed = int(server["shed"])
        if shed:
            server_codes["3"] = server_codes.get("3", 0) + shed
    else:
        server_codes = dict(server["rest"])
    answered_server = sum(server_codes.values())
    out: dict[str, Any] = {"client_sent": sent, "client_answers": answered_client, "server_answers": answered_server,
                           "client_codes": client_codes, "server_codes": server_codes,
                           "server_cache_hits": server["cache_hits"], "server_upstream": server["upstream"]}
    problems = []
    if server_codes == client_codes:
        verdict = "agree"
    elif answered_client <= answered_server <= sent and all(server_codes.get(k, 0) >= v for k, v in client_codes.items()):
        verdict = "consistent"
        out["note"] = (f"the server answered {answered_server - answered_client} requests whose answers the client "
                       "did not count (timed out or lost)")
    else:
        verdict = "DISAGREE"
        problems.append(f"server answers by code {server_codes} vs client {client_codes} (client sent {sent})")
    ok_client = int(client.get("ok", 0))
    if expect_cache_hits is True and server["cache_hits"] < ok_client:
        problems.append(f"server cache hits {server['cache_hits']} < client successes {ok_client}")
    if expect_cache_hits is False and server["cache_hits"] > max(10, answered_client // 100):
        problems.append(f"server cache hits {server['cache_hits']} on a cold run")
    if problems:
        verdict = "DISAGREE"
        out["problems"] = problems
    out["verdict"] = verdict
    return out
