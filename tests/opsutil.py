"""Helpers of the operations tests (faults, mirrors, dashboard): an in-process cluster with its control
channel, a topology with mirrors, and blocking calls run off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterutil import CONFIG, MINIMAL, LocalCluster, start_local_cluster
from idresolve.cluster.bootstrap import BootstrapReport, bootstrap
from idresolve.cluster.control import start_control
from idresolve.cluster.credentials import secret_for
from idresolve.cluster.faults import Controller, control_token
from idresolve.cluster.plan import identity_of
from idresolve.core.messages import Response
from idresolve.net.blocking import BlockingClient

REC, TOP, DR, SEC, ENT, MIR = ("rec-jinan", "top-beijing", "top-nanjing", "sec-tyre-qingdao", "ent-tyre-qingdao-8",
                               "mir-tyre-jinan")
HOSTED = "88.118.9"  # hosted by SEC (and so by its mirror)
CLIENT_TIMEOUT_S = 10.0
HOP_TIMEOUT_S = 0.3  # short: tests wait for timeouts, bounded by this


def mirrored_minimal(tmp_path: Path) -> Path:
    """config/minimal.toml with a mirror of the tyre secondary at Jinan."""
    text = MINIMAL.read_text(encoding="utf-8").replace(
        'industry = "tyres and rubber"\n',
        'industry = "tyres and rubber"\nmirrors = [{ name = "mir-tyre-jinan", location = "jinan" }]\n', 1)
    assert "mirrors" in text
    path = tmp_path / "mirrored.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Ops:
    cluster: LocalCluster
    report: BootstrapReport
    control: Controller

    def client(self, name: str, prefix: str | None = None) -> BlockingClient:
        n = self.cluster.plan.node(name)
        auth = None if prefix is None else (identity_of(prefix), secret_for(self.cluster.master, prefix).encode())
        return BlockingClient(n.dial_host, n.tcp_port, timeout_s=CLIENT_TIMEOUT_S, auth=auth)

    async def call(self, name: str, fn: str, *args: Any, prefix: str | None = None, **kwargs: Any) -> Response:
        def run() -> Response:
            with self.client(name, prefix) as c:
                return getattr(c, fn)(*args, **kwargs)  # type: ignore[no-any-return]

        return await asyncio.to_thread(run)

    async def resolve(self, handle: str, *, via: str = REC) -> Response:
        """A fresh (authoritative, traced) resolution through a recursive node: the client's view."""
        return await self.call(via, "resolve", handle, trace=True, authoritative=True)

    async def ctl(self, fn: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(getattr(self.control, fn), *args, **kwargs)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def ops_cluster(tmp_path: Path, *, config: Path = MINIMAL) -> AsyncIterator[Ops]:
    cluster = await start_local_cluster(tmp_path, latency_on=False, config=config, hop_timeout_s=HOP_TIMEOUT_S)
    runner = None
    try:
        token = control_token(cluster.master)
        runner, url = await start_control(cluster.worker, token)
        report = await asyncio.to_thread(bootstrap, cluster.plan, cluster.master)
        yield Ops(cluster, report, Controller([{"url": url}], token))
    finally:
        if runner is not None:
            await runner.cleanup()
        await cluster.worker.stop()


__all__ = ["CONFIG", "DR", "ENT", "HOSTED", "MIR", "REC", "SEC", "TOP", "Ops", "mirrored_minimal", "ops_cluster"]
