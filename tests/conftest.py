"""Shared fixtures: a node on loopback port 0 (in-process, real sockets) and its admin credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from idresolve.config import NodeConfig
from idresolve.host import RunningNode, serve_node

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
async def start_live_node(data_dir: Path) -> AsyncIterator[LiveNode]:
    """An authoritative node serving 88.100 and 88.200 on an ephemeral port, with the durable store."""
    cfg = NodeConfig(name="t", prefixes=("88.100", "88.200"), http="127.0.0.1:0", data_dir=data_dir,
                     admin_secret=SECRET)
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
