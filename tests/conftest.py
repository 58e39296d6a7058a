"""Shared fixtures: a node on loopback port 0 (in-process, real sockets) and its admin credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idresolve.runtime.config import NodeConfig
from idresolve.runtime.serve import RunningNode, serve_node

SECRET = "test-secret-not-for-production"

# Nodes started by tests shed load with the defaults users get (50 ms of event-loop lag): a test that sends
# light traffic and gets code 3 / HTTP 503 fails, as a user would notice. Only tests that need exact counts
# under heavy load turn shedding off, each saying why.
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class LiveNode:
    url: str
    running: RunningNode
    secret: str = SECRET


@contextlib.asynccontextmanager
async def start_live_node(data_dir: Path, **settings: Any) -> AsyncIterator[LiveNode]:
    """An authoritative node serving 88.100 and 88.200 on an ephemeral port, with the durable store
    (``settings``: other ``NodeConfig`` fields)."""
    cfg = NodeConfig(name="t", prefixes=("88.100", "88.200"), http="127.0.0.1:0", data_dir=data_dir,
                     admin_secret=SECRET, **settings)
    ready: asyncio.Future[RunningNode] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_node(cfg, shutdown_trigger=stop.wait(), on_ready=ready.set_result))
    running = await asyncio.wait_for(asyncio.shield(ready), 10)
    try:
        yield LiveNode(running.http_url, running)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def live_node(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async with start_live_node(tmp_path) as node:
        yield node


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long hardening runs (``@pytest.mark.slow``) run only with IDRESOLVE_LONG=1 (``make test-long``)."""
    if os.environ.get("IDRESOLVE_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="long run: set IDRESOLVE_LONG=1 or use `make test-long`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# -- seeds of the long runs ------------------------------------------------------------------------------
# Every randomised long run takes its seed from the ``long_seed`` fixture: IDRESOLVE_SEED when set, else the
# time (a new seed per session, so long runs explore). A failure names the seed and the command that reruns
# it; the terminal summary lists every long run's seed (``make test-long`` prints them).

_SEEDS: dict[str, int] = {}


def _session_seed() -> int:
    raw = os.environ.get("IDRESOLVE_SEED")
    if raw is None:
        return int(time.time())
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"IDRESOLVE_SEED must be a whole number, not {raw!r}") from None


def rerun_command(nodeid: str, seed: int) -> str:
    return f"IDRESOLVE_LONG=1 IDRESOLVE_SEED={seed} .venv/bin/python -m pytest {shlex.quote(nodeid)}"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SEED_KEY] = _session_seed()  # a bad IDRESOLVE_SEED stops the run before any test


_SEED_KEY = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def session_seed(pytestconfig: pytest.Config) -> int:
    return pytestconfig.stash[_SEED_KEY]


@pytest.fixture
def long_seed(request: pytest.FixtureRequest, session_seed: int) -> int:
    """The seed of a randomised long run (see above)."""
    _SEEDS[request.node.nodeid] = session_seed
    print(f"\n{request.node.nodeid}: seed {session_seed} (rerun: {rerun_command(request.node.nodeid, session_seed)})")
    return session_seed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    seed = _SEEDS.get(item.nodeid)
    if seed is not None and report.failed:
        report.longrepr = f"{report.longrepr}\n\nseed {seed}; rerun with: {rerun_command(item.nodeid, seed)}"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SEEDS:
        terminalreporter.section("seeds of the long runs")
        for nodeid, seed in _SEEDS.items():
            terminalreporter.write_line(f"{nodeid}: seed {seed}; rerun: {rerun_command(nodeid, seed)}")
