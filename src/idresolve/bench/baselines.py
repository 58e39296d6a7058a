"""Baselines measured in the same run as the thing they judge (docs/architecture.md, "Performance facts").

- A bare aiohttp server: the same hosting as a node (AppRunner/TCPSite, access log off, uvloop), the same
  route shape (``/api/handles/{handle:.*}``), no middleware, and a handler that returns fixed JSON bytes
  (a node answer captured earlier in the run, so the bodies are the same size). Run it as
  ``python -m idresolve.bench.baselines --body-file F --http 127.0.0.1:0``; it prints
  ``baseline bare-aiohttp serving at http://127.0.0.1:PORT`` when ready and stops on SIGTERM or Ctrl-C.
- Raw SQLite inserts: ``executemany`` of already-encoded rows into the store's own schema and pragmas,
  one transaction per batch: the floor under any batch registration path.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from ..store.sqlite import _SCHEMA  # the very schema SqliteStore creates, so the rows land the same way

Row = tuple[str, str, str, bytes]


# -- raw SQLite -----------------------------------------------------------------------------------------

def raw_sqlite_insert(path: Path, batches: Sequence[Sequence[Row]], *, fsync: bool = False) -> float:
    """Insert ``batches`` into a fresh database at ``path``, one transaction each; returns seconds taken."""
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        db.executescript(_SCHEMA)
        t0 = time.perf_counter()
        for rows in batches:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        db.close()


def read_rows(path: Path, folded_prefix: str) -> list[Row]:
    """The encoded rows a store wrote for one prefix, in key order (to replay them into the baseline)."""
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT key, prefix, handle, data FROM records WHERE prefix = ? ORDER BY key",
                          (folded_prefix,)).fetchall()
    finally:
        db.close()


# -- bare aiohttp -----------------------------------------------------------------------------------------

def bare_app(body: bytes) -> web.Application:
    async def fixed(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/handles/{handle:.*}", fixed)
    return app


async def serve_bare(body: bytes, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(bare_app(body), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0]
        print(f"baseline bare-aiohttp serving at http://{bound[0]}:{bound[1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def baseline_main(argv: list[str] | None, *, prog: str, description: str, file_flag: str, file_help: str,
                  addr_flag: str, serve: Callable[[bytes, str, int, asyncio.Event], Awaitable[None]]) -> int:
    """The command line of a baseline server: a file of fixed answer bytes, a loopback address, a clean
    stop on SIGTERM; errors are one line on stderr and exit 2."""
    from ..runtime.config import ConfigError, parse_hostport
    from ..runtime.serve import run_until_signal

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(file_flag, type=Path, required=True, help=file_help)
    p.add_argument(addr_flag, default="127.0.0.1:0", help="listen address (loopback only; default 127.0.0.1:0)")
    args = p.parse_args(argv)
    path: Path = getattr(args, file_flag.lstrip("-").replace("-", "_"))
    addr: str = getattr(args, addr_flag.lstrip("-"))
    try:
        host, port = parse_hostport(addr, 0)
        data = path.read_bytes()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    if not host.startswith("127."):
        print("error: the baseline server listens on 127.0.0.1 only", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    try:
        run_until_signal(lambda stop: serve(data, host, port, stop))
    except OSError as exc:
        print(f"error: cannot listen on {addr}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return baseline_main(argv, prog="python -m idresolve.bench.baselines",
                         description="A bare aiohttp server answering GET /api/handles/* with fixed bytes.",
                         file_flag="--body-file", file_help="the JSON bytes every answer carries", addr_flag="--http",
                         serve=serve_bare)


if __name__ == "__main__":
    sys.exit(main())
