"""Resolution, start-up and listing against the number of stored records (``bench sizes --records``).

For every size (default 10k, 100k, 1M, 10M) a store is filled once (``storefill``, reused by later runs),
then, ``repeats`` times, sizes alternating within each repeat: a node starts on it (start-up time to the
ready line, the store's own open time in-process, RSS at ready) and is measured with one connection,
closed loop:

- ``cached``: 1,000 handles asked again and again (answers from the node's answer cache);
- ``uncached``: handles never asked before, drawn at random from the whole store (every answer is a
  store read), with the file in the OS page cache (``warm``), and with the file's pages evicted first
  (``posix_fadvise(DONTNEED)``, ``cold``: every lookup starts from disk until the B-tree's upper pages
  are back), and between the two (``leaves``: evicted, then 20,000 random reads through another
  connection bring the B-tree's upper levels back: a machine whose RAM holds the index but not the data);
- listing ``pageSize=100``: the first page, then pages walked one after another from the middle
  (``page=N/200``, the first of them a jump, the rest the next page each time), timing each request.

Figures are medians over the repeats; the ratios are against the smallest size of the same run.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..core.handles import fold
from ..store.sqlite import SqliteStore
from . import httpload
from .procs import node_process, rss_bytes
from .storefill import fill, filled, handle_of
from .suite import HOST, _load, _run_figures
from .workload import PREFIX, auth_header, resolve_requests

SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
NODE_NAME = "bench"
PAGE_SIZE = 100
PAGES_WALKED = 20
PRIME_READS = 20_000
FRESH_PER_RUN = 60_000


def parse_sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        mult = {"k": 1_000, "m": 1_000_000}.get(p[-1:], 1)
        n = int(float(p[:-1] if mult > 1 else p) * mult)
        if not 1_000 <= n <= 100_000_000:
            raise ValueError(f"store size {part!r} must be between 1k and 100M")
        out.append(n)
    return sorted(set(out))


def store_file(store_dir: Path, n: int) -> Path:
    return store_dir / f"s{n}" / f"{NODE_NAME}.sqlite3"


def _evict(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal")):
        if p.exists():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 22):
            pass


def _prime(path: Path, n: int, rng: random.Random) -> None:
    """Read ``PRIME_READS`` random records through a connection of our own: the OS page cache then holds
    the B-tree's upper levels and a few leaves, as on a machine whose RAM holds the index, not the data."""
    s = SqliteStore(path)
    try:
        for i in rng.sample(range(n), min(n, PRIME_READS)):  # may repeat a measured handle: only the OS cache
            s.get(fold(handle_of(i)))
    finally:
        s.close()


def _open_ms(path: Path) -> float:
    t0 = time.perf_counter()
    s = SqliteStore(path)
    ms = (time.perf_counter() - t0) * 1e3
    s.close()
    return ms


async def _timed_gets(port: int, raws: Sequence[bytes]) -> list[float]:
    out = []
    async with httpload.Client(HOST, port) as client:
        for raw in raws:
            t0 = time.perf_counter()
            status, body = await client.request(raw)
            out.append((time.perf_counter() - t0) * 1e6)
            if status != 200:
                raise RuntimeError(f"listing answered {status}: {body[:200]!r}")
    return out


def _list_requests(port: int, secret: str, pages: Sequence[int]) -> list[bytes]:
    hdr = (auth_header(secret),)
    return [httpload.encode_request("GET", f"/api/handles?prefix={quote(PREFIX)}&page={p}&pageSize={PAGE_SIZE}",
                                    HOST, port, headers=hdr) for p in pages]


def _one(n: int, path: Path, rng: random.Random, duration_s: float) -> dict[str, Any]:
    secret = secrets.token_urlsafe(24)
    out: dict[str, Any] = {"records": n, "store_open_ms": round(_open_ms(path), 2)}
    _evict(path)  # start-up from a cold page cache: what a node restarted after a while sees
    t0 = time.perf_counter()
    with node_process(path.parent, PREFIX, secret, name=NODE_NAME) as node:
        out["startup_s"] = round(time.perf_counter() - t0, 3)
        out["rss_mb"] = round((rss_bytes(node.pid or 0) or 0) / 2**20, 1)
        hot = [handle_of(i) for i in rng.sample(range(n), min(n, 1_000))]
        reqs = resolve_requests(hot, HOST, node.port)
        _load(node, reqs, 1, 1.0)  # fills the answer cache
        res, cpu = _load(node, reqs, 1, duration_s)
        if res.errors or res.statuses or not res.requests:
            raise RuntimeError(f"resolution at {n:,} records answered {res.statuses}")
        out["cached"] = _run_figures(res, cpu)
        # every uncached run asks handles no run of this node asked before (at ~5k answers/s a run asks
        # well under 60k; a small store is split in thirds, and a run stops when its share is used up)
        share = min(n // 4, FRESH_PER_RUN)
        order = rng.sample(range(n), 3 * share)
        for j, label in enumerate(("warm", "leaves", "cold")):
            fresh = resolve_requests([handle_of(i) for i in order[j * share : (j + 1) * share]], HOST, node.port)
            if label == "warm":
                _warm(path)
            else:
                _evict(path)
            if label == "leaves":
                _prime(path, n, rng)
            cpu0 = node.cpu_seconds()
            res = httpload.run(httpload.closed_loop(HOST, node.port, fresh, connections=1, duration_s=duration_s,
                                                    max_requests=len(fresh)))
            cpu1 = node.cpu_seconds()
            cpu = ({"server_cpu_us_per_req": round((cpu1 - cpu0) / res.requests * 1e6, 1)}
                   if cpu0 is not None and cpu1 is not None and res.requests else {})
            if res.errors or res.statuses or not res.requests:
                raise RuntimeError(f"resolution at {n:,} records answered {res.statuses}")
            out[f"uncached_{label}"] = _run_figures(res, cpu)
        mid = n // PAGE_SIZE // 2
        first = asyncio.run(_timed_gets(node.port, _list_requests(node.port, secret, [0] * 5)))
        walk = asyncio.run(_timed_gets(node.port, _list_requests(node.port, secret, range(mid, mid + PAGES_WALKED))))
        out["list_first_page_us"] = round(statistics.median(first), 1)
        out["list_first_page_first_us"] = round(first[0], 1)  # includes the count of the prefix
        out["list_jump_to_middle_us"] = round(walk[0], 1)
        out["list_next_page_us"] = round(statistics.median(walk[1:]), 1)
    return out


MEDIANS = ("store_open_ms", "startup_s", "rss_mb", "list_first_page_us", "list_first_page_first_us",
           "list_jump_to_middle_us", "list_next_page_us")
LATENCY_RUNS = ("cached", "uncached_warm", "uncached_leaves", "uncached_cold")


def run_store_sizes(sizes: Sequence[int], store_dir: Path | None, *, repeats: int, duration_s: float,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="idresolve-sizes-") as tmp:
        base = store_dir or Path(tmp)
        for n in sizes:
            path = store_file(base, n)
            if filled(path) != n:
                progress(f"filling {n:,} records into {path}")
                t0 = time.perf_counter()
                fill(path, n, progress)
                progress(f"filled {n:,} records in {time.perf_counter() - t0:.0f} s")
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
        rng = random.Random(1)
        for rep in range(repeats):
            for n in (sizes if rep % 2 == 0 else list(reversed(sizes))):
                r = _one(n, store_file(base, n), rng, duration_s)
                runs[n].append(r)
                progress(f"repeat {rep + 1}/{repeats}, {n:,} records: start-up {r['startup_s']} s, "
                         + ", ".join(f"{k} p50 {r[k]['p50_us']} p99 {r[k]['p99_us']} us" for k in LATENCY_RUNS)
                         + f", next list page {r['list_next_page_us']} us")
        rows = []
        for n in sizes:
            path = store_file(base, n)
            row: dict[str, Any] = {"records": n, "disk_bytes": path.stat().st_size,
                                   "disk_bytes_per_record": round(path.stat().st_size / n, 1)}
            for k in MEDIANS:
                row[k] = round(statistics.median(r[k] for r in runs[n]), 3)
            for k in LATENCY_RUNS:
                row[k] = {f: round(statistics.median(r[k][f] for r in runs[n]), 1)
                          for f in ("rate_per_s", "p50_us", "p99_us")}
            rows.append(row)
    smallest = rows[0]
    for row in rows:
        row["ratio_to_smallest"] = {k: {f: round(row[k][f] / smallest[k][f], 3) for f in ("p50_us", "p99_us")}
                                    for k in LATENCY_RUNS}
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"kind": "store-sizes", "repeats": repeats, "duration_s": duration_s, "rows": rows,
            "runs": {str(n): runs[n] for n in sizes}, "ram_bytes": mem, "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%d %H:%M"), "loadavg": list(os.getloadavg())}


def text(rep: dict[str, Any]) -> str:
    head = ["records", "disk B/record", "open ms", "start-up s", "RSS MB"]
    for k in LATENCY_RUNS:
        head += [f"{k} p50 us", f"{k} p99 us", f"{k} x p50/p99"]
    head += ["list first us", "list jump us", "list next us"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rep["rows"]:
        cells = [f"{r['records']:,}", f"{r['disk_bytes_per_record']:.0f}", f"{r['store_open_ms']:.1f}",
                 f"{r['startup_s']:.2f}", f"{r['rss_mb']:.0f}"]
        for k in LATENCY_RUNS:
            q = r["ratio_to_smallest"][k]
            cells += [f"{r[k]['p50_us']:.0f}", f"{r[k]['p99_us']:.0f}", f"{q['p50_us']:.2f}/{q['p99_us']:.2f}"]
        cells += [f"{r['list_first_page_first_us']:.0f}", f"{r['list_jump_to_middle_us']:.0f}",
                  f"{r['list_next_page_us']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
