"""``idresolve store check``: SQLite's integrity check of a node's store, on demand.

A node no longer checks its store at every start (that reads the whole file: seconds at ten million
records); it checks only after an unclean shutdown (``store/sqlite.py``). This command runs the same
``quick_check`` (or, with ``--full``, ``integrity_check``) whenever an operator wants it; it may run beside
a live node (WAL readers do not block the writer).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from .common import EXIT_USAGE, CliError

EXIT_CORRUPT = 3


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("store", help="a node's store: check its integrity")
    ssub = p.add_subparsers(dest="store_command", metavar="STORE_COMMAND", required=True)
    c = ssub.add_parser("check", help="SQLite's integrity check of a store (reads the whole file)",
                        description="Check a node's SQLite store: a .sqlite3 file, or a --data-dir holding them. "
                        "Exit 0 when every store is ok, 3 when one is not.")
    c.add_argument("path", type=Path, help="a store file, or a node's data directory")
    c.add_argument("--full", action="store_true", help="integrity_check (also index contents) instead of "
                   "quick_check")
    c.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    path: Path = args.path
    files = sorted(path.glob("*.sqlite3")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise CliError(f"no store at {path} (a .sqlite3 file or a directory holding one)", EXIT_USAGE)
    worst = 0
    for f in files:
        t0 = time.perf_counter()
        try:
            db = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
            try:
                rows = db.execute("PRAGMA integrity_check" if args.full else "PRAGMA quick_check").fetchall()
            finally:
                db.close()
            result = "; ".join(str(r[0]) for r in rows[:10])
        except sqlite3.Error as exc:
            result = f"unreadable: {exc}"
        if result != "ok":
            worst = EXIT_CORRUPT
        print(f"{f}: {result} ({time.perf_counter() - t0:.2f} s)")
    return worst
