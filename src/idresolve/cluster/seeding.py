"""``idresolve seed``: register N identifiers spread evenly over every enterprise of a running cluster,
through the batch API (binary protocol) of the node that holds each prefix, with each enterprise admin's
own credentials. Suffixes are ``<tag><n>`` so reruns with another tag add more; a rerun with the same tag
skips identifiers that exist (the batch is retried without them)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..core.codes import ResponseCode
from ..core.values import string_value
from ..net.blocking import BlockingClient
from .credentials import read_credentials
from .plan import identity_of


def _endpoint(nodes: dict[str, dict[str, Any]], name: str) -> tuple[str, int]:
    host, _, port = str(nodes[name]["tcp"]).rpartition(":")
    return host, int(port)


def _bar(done: int, total: int, t0: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(1e-9, time.monotonic() - t0)
    print(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({rate:,.0f}/s)", end="", file=sys.stderr,
          flush=True)


def seed_cluster(cluster: dict[str, Any], data_dir: Path, count: int, *, batch_size: int = 1000, tag: str = "SEED",
                 show_progress: bool = True) -> dict[str, Any]:
    creds = read_credentials(data_dir)
    nodes = {n["name"]: n for n in cluster["nodes"]}
    enterprises = [e for e in cluster["enterprises"] if e.get("prefix")]
    if not enterprises:
        raise ValueError("the cluster has no enterprises to seed")
    share, extra = divmod(count, len(enterprises))
    t0 = time.monotonic()
    done = failed = 0
    example = ""
    shown = 0.0
    for i, ent in enumerate(enterprises):
        n = share + (1 if i < extra else 0)
        if n == 0:
            continue
        prefix = ent["prefix"]
        identity = identity_of(prefix)
        host, port = _endpoint(nodes, ent["holder"])
        with BlockingClient(host, port, timeout_s=60.0, auth=(identity, creds[identity].encode())) as c:
            for start in range(0, n, batch_size):
                items = [(f"{prefix}/{tag}{k:09d}",
                          (string_value(1, "URL", f"https://example.com/{prefix}/{tag}{k:09d}"),
                           string_value(2000, "productName", f"product {k}")))
                         for k in range(start, min(n, start + batch_size))]
                resp = c.batch_create(items)
                if resp.code != ResponseCode.SUCCESS and resp.results:
                    fresh = [it for it, r in zip(items, resp.results, strict=False)
                             if r[1] != ResponseCode.HANDLE_ALREADY_EXISTS]
                    skipped = len(items) - len(fresh)
                    resp = c.batch_create(fresh) if fresh else resp
                    if not fresh or resp.code == ResponseCode.SUCCESS:
                        done += skipped
                        items = fresh
                if resp.code == ResponseCode.SUCCESS or not items:
                    done += len(items)
                    example = example or (items[0][0] if items else "")
                else:
                    failed += len(items)
                if show_progress and time.monotonic() - shown >= 0.25:
                    shown = time.monotonic()
                    _bar(done + failed, count, t0)
    if show_progress:
        _bar(done + failed, count, t0)
        print(file=sys.stderr)
    seconds = time.monotonic() - t0
    return {"registered": done, "failed": failed, "enterprises": len(enterprises), "seconds": seconds,
            "perSecond": done / seconds if seconds > 0 else 0.0, "example": example}
