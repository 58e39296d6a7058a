"""Baselines measured in the same run as the thing they judge (docs/architecture.md, "Performance facts").

- A bare aiohttp server: the same hosting as a node (AppRunner/TCPSite, access log off, uvloop), the same
  route shape (``/api/handles/{handle:.*}``), no middleware, and a handler that returns fixed JSON bytes
  (a node answer captured earlier in the run, so the bodies are the same size). Run it as
  ``python -m idresolve.bench.baselines --body-file F --http 127.0.0.1:0``; it prints
  ``baseline bare-aiohttp serving at http://127.0.0.1:PORT`` when ready and stops on SIGTERM or Ctrl-C.
  ``--processes N`` runs N copies sharing the port (SO_REUSEPORT, as a node's workers do), so that a node
  of N workers is judged against as many processes.
- Raw SQLite inserts: ``executemany`` of already-encoded rows into the store's own schema and pragmas,
  one transaction per batch: the floor under any batch registration path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
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


async def serve_bare(body: bytes, host: str, port: int, stop: asyncio.Event, reuse_port: bool = False) -> None:
    runner = web.AppRunner(bare_app(body), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=1024)
        await site.start()
        bound = runner.addresses[0]
        print(f"baseline bare-aiohttp serving at http://{bound[0]}:{bound[1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


#: a baseline's server: (answer bytes, host, port, stop, reuse_port); prints its ready line when listening
Serve = Callable[[bytes, str, int, asyncio.Event, bool], Awaitable[None]]
MAX_PROCESSES = 64


def _processes(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= n <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PROCESSES}")
    return n


def baseline_main(argv: list[str] | None, *, prog: str, description: str, file_flag: str, file_help: str,
                  addr_flag: str, serve: Serve) -> int:
    """The command line of a baseline server: a file of fixed answer bytes, a loopback address, how many
    processes share it, a clean stop on SIGTERM; errors are one line on stderr and exit 2."""
    from ..runtime.config import ConfigError, parse_hostport

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(file_flag, type=Path, required=True, help=file_help)
    p.add_argument(addr_flag, default="127.0.0.1:0", help="listen address (loopback only; default 127.0.0.1:0)")
    p.add_argument("--processes", type=_processes, default=1,
                   help="processes sharing the port with SO_REUSEPORT, as a node's workers do (default 1)")
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
    if args.processes == 1:
        return _serve_one(serve, data, host, port, addr, reuse_port=False)
    return _serve_many(serve, data, host, port, addr, args.processes)


def _serve_one(serve: Serve, data: bytes, host: str, port: int, addr: str, *, reuse_port: bool) -> int:
    from ..runtime.serve import run_until_signal

    try:
        run_until_signal(lambda stop: serve(data, host, port, stop, reuse_port))
    except OSError as exc:
        print(f"error: cannot listen on {addr}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _serve_many(serve: Serve, data: bytes, host: str, port: int, addr: str, processes: int) -> int:
    """``processes`` forked copies of ``serve`` on one port. A port 0 is fixed first by a socket bound with
    SO_REUSEPORT that never listens (so it takes no connection), as ``idresolve node --workers`` does.
    SIGTERM or SIGINT stops every copy; one that fails stops the others, and the exit code is 2."""
    held = None
    try:
        if port == 0:
            held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind((host, 0))
            port = held.getsockname()[1]
    except OSError as exc:
        print(f"error: cannot listen on {addr}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    pids: list[int] = []
    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    # A stop signal is held back while forking: one arriving then is handled once every copy is known (and
    # a copy never runs the parent's handler, which would stop its siblings).
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # a copy: its own event loop on the shared port
            code = 2
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
                if held is not None:
                    held.close()
                code = _serve_one(serve, data, host, port, addr, reuse_port=True)
            finally:
                sys.stdout.flush()
                os._exit(code)
        pids.append(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # a signal held back is delivered now, to every copy
    failed = False
    for _ in range(processes):
        _, status = os.wait()  # a signal handled meanwhile does not interrupt it (PEP 475)
        if os.waitstatus_to_exitcode(status) != 0 and not stopping:
            failed = True
            stop_all()
    if held is not None:
        held.close()
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return baseline_main(argv, prog="python -m idresolve.bench.baselines",
                         description="A bare aiohttp server answering GET /api/handles/* with fixed bytes.",
                         file_flag="--body-file", file_help="the JSON bytes every answer carries", addr_flag="--http",
                         serve=serve_bare)


if __name__ == "__main__":
    sys.exit(main())
