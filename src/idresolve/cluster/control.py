"""The control channel of a cluster worker: a small aiohttp app on a loopback port of its own.

Routes (JSON in and out, every one needs ``Authorization: Bearer <token>``, ``faults.control_token``):
- ``GET /control``: the worker's state: the nodes it hosts, those down, the faults in force, the latency.
- ``POST /control/faults``: add a fault (``faults.fault_from_json``); a kill stops the node if it is here.
- ``POST /control/remove``: remove a fault by ``id``, or every fault of ``kind`` naming ``node``; nodes
  no longer killed start again.
- ``POST /control/heal``: remove every fault.
- ``POST /control/latency``: ``{"latency": "on"|"off", "scenario": NAME}`` swaps the latency model.
Every answer is the worker's state after the change. Bad input is a 400 with ``{"error": ...}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..core.topology import TopologyError
from .faults import KINDS, FaultError, fault_from_json, token_ok

if TYPE_CHECKING:
    from .worker import Worker

MAX_BODY = 64 * 1024


def control_app(worker: Worker, token: str) -> web.Application:
    known = {n.name for n in worker.plan.nodes}

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if not token_ok(request.headers.get("Authorization"), token):
            return web.json_response({"error": "the control channel needs the cluster's control token"}, status=401)
        try:
            return await handler(request)
        except (FaultError, TopologyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise FaultError("the body must be JSON") from None
        if not isinstance(data, dict):
            raise FaultError("the body must be a JSON object")
        return data

    async def state(request: web.Request) -> web.Response:
        return web.json_response(worker.state())

    async def add(request: web.Request) -> web.Response:
        await worker.add_fault(fault_from_json(await body(request), known))
        return web.json_response(worker.state())

    async def remove(request: web.Request) -> web.Response:
        data = await body(request)
        fid, kind, node = data.get("id"), data.get("kind"), data.get("node")
        if fid is None and kind is None and node is None:
            raise FaultError("say which faults to remove: id, kind or node")
        if kind is not None and kind not in KINDS:
            raise FaultError(f"kind must be one of {', '.join(KINDS)}")
        if node is not None and node not in known:
            raise FaultError(f"no node named {node!r} in this cluster")
        await worker.remove_faults(str(fid) if fid is not None else None, kind=kind, node=node)
        return web.json_response(worker.state())

    async def heal(request: web.Request) -> web.Response:
        await worker.remove_faults()
        return web.json_response(worker.state())

    async def latency(request: web.Request) -> web.Response:
        data = await body(request)
        mode, scenario = data.get("latency", "on"), data.get("scenario")
        if mode not in ("on", "off") or not (scenario is None or isinstance(scenario, str)):
            raise FaultError("latency must be 'on' or 'off', scenario a name")
        if mode == "on":
            worker.topology.latency(scenario)  # an unknown scenario: TopologyError, a 400
        worker.set_latency(mode, scenario)
        return web.json_response(worker.state())

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.router.add_get("/control", state)
    app.router.add_post("/control/faults", add)
    app.router.add_post("/control/remove", remove)
    app.router.add_post("/control/heal", heal)
    app.router.add_post("/control/latency", latency)
    return app


async def start_control(worker: Worker, token: str, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    """Serve the control channel on ``host`` at a free port; returns the runner and the URL."""
    runner = web.AppRunner(control_app(worker, token), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    addr = runner.addresses[0]
    return runner, f"http://{addr[0]}:{addr[1]}"
