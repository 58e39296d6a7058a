"""The live dashboard of a running cluster: an aiohttp app serving one page and what the page asks for.

Routes:
- ``GET /``: the page (``static/dashboard/``: plain HTML, SVG and a little JavaScript, shipped in the
  package; no build step, nothing fetched from elsewhere).
- ``GET /api/topology``: every node with its role, place (latitude, longitude), prefix, secondary or
  primary, and the latency scenarios.
- ``GET /api/events``: Server-Sent Events, one ``snapshot`` a second: per node up/down and its figures
  (``dashboard_stats.figures``), requests per second on every link, the faults in force.
- ``GET /api/history?node=NAME``: the node's figures of the last ``HISTORY_S`` seconds.
- ``GET /api/resolve?handle=H[&via=REC][&cache=1]``: a traced resolution at a recursive node's REST
  surface (``?trace``, past every cache unless ``cache=1``): its answer and its hops.
- ``POST /api/faults`` (a fault as JSON, plus ``duration`` in seconds), ``POST /api/faults/remove``
  (``id``, or ``kind`` and ``node``), ``POST /api/heal``, ``POST /api/latency`` (``latency``,
  ``scenario``): the same control channel as ``idresolve fault`` (``Controls``, wired by the CLI).
Controls are open on loopback; on any other address they need HTTP Basic credentials (``admin``: the
registry admin's identity and secret from the cluster's ``credentials.json``), like every other write.

The figures come from the nodes' own ``/metrics``, scraped every second, in parallel, by this process
(aggregated here, so the page gets a few kilobytes a second whatever the cluster's size). Scraping runs
only while a page is connected (or for ``IDLE_S`` after an API call), so an idle dashboard costs the
nodes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from aiohttp import web

from .dashboard_stats import Sample, figures

log = logging.getLogger("idresolve.dashboard")
STATIC = Path(__file__).resolve().parent / "static" / "dashboard"
TICK_S = 1.0
HISTORY_S = 300
QUANTILE_WINDOW = 5  # seconds of samples behind p50/p99
IDLE_S = 30.0
SCRAPE_TIMEOUT_S = 0.8


class Controls(Protocol):
    """The control channel (``cluster.faults.Controller`` behind an adapter). Bad input raises ValueError."""

    async def call(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass
class NodeTrack:
    """One node's last samples and its figures' history."""

    samples: deque[tuple[float, Sample]] = field(default_factory=lambda: deque(maxlen=QUANTILE_WINDOW + 1))
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_S))
    up: bool | None = None
    current: dict[str, Any] = field(default_factory=dict)


class Dashboard:
    """Scrapes the cluster described by ``cluster`` (its ``cluster.json``) and serves the page."""

    def __init__(self, cluster: Mapping[str, Any], topology: Mapping[str, Any], parse: Callable[[str], Sample], *,
                 controls: Controls | None = None, admin: tuple[str, str] | None = None) -> None:
        self.cluster, self.topology, self.parse = cluster, topology, parse
        self.controls = controls
        self.admin = admin  # None: controls need no credentials (loopback)
        self.nodes: list[dict[str, Any]] = list(cluster["nodes"])
        self.tracks = {str(n["name"]): NodeTrack() for n in self.nodes}
        self.snapshot: dict[str, Any] = {}
        self.control_state: dict[str, Any] = {}
        self.subscribers: set[asyncio.Queue[str]] = set()
        self.last_call = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # -- scraping ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S))
        self._task = asyncio.create_task(self._loop(), name="dashboard-scrape")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _wanted(self) -> bool:
        return bool(self.subscribers) or time.monotonic() - self.last_call < IDLE_S

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            if self._wanted():
                try:
                    await self.tick()
                except Exception:  # noqa: BLE001 - one bad tick must not end the dashboard
                    log.exception("dashboard tick failed")
            await asyncio.sleep(max(0.05, TICK_S - (time.monotonic() - started)))

    async def _scrape(self, node: Mapping[str, Any]) -> Sample | None:
        assert self._session is not None
        try:
            async with self._session.get(str(node["http"]).rstrip("/") + "/metrics") as resp:
                if resp.status != 200:
                    return None
                return self.parse(await resp.text())
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None

    async def tick(self) -> dict[str, Any]:
        """Scrape every node once, update the figures and history, and push the snapshot to every page."""
        now = time.time()
        results = await asyncio.gather(*(self._scrape(n) for n in self.nodes), self._control_state())
        samples: Sequence[Sample | None] = results[:-1]
        nodes = {}
        for node, sample in zip(self.nodes, samples, strict=True):
            track = self.tracks[str(node["name"])]
            track.up = sample is not None
            if sample is None:
                track.samples.clear()
                track.current = {"up": False}
            else:
                track.current = {"up": True, **self._figures(track, now, sample)}
            track.history.append({"t": round(now, 1), **{k: track.current.get(k) for k in (
                "up", "rps", "p50_ms", "p99_ms", "errors", "shed", "hit", "lag_s", "records")}})
            nodes[str(node["name"])] = track.current
        self.snapshot = {"t": now, "nodes": nodes, "control": self.control_state}
        self._publish(self.snapshot)
        return self.snapshot

    def _figures(self, track: NodeTrack, now: float, sample: Sample) -> dict[str, Any]:
        previous = track.samples[-1] if track.samples else None
        oldest = track.samples[0] if track.samples else None
        track.samples.append((now, sample))
        out = figures(sample, previous[1] if previous else None, now - previous[0] if previous else 0.0)
        if oldest is not None and oldest is not previous:  # p50/p99 over a few seconds: steadier
            wide = figures(sample, oldest[1], now - oldest[0])
            out["p50_ms"], out["p99_ms"] = wide["p50_ms"], wide["p99_ms"]
        return out

    async def _control_state(self) -> None:
        if self.controls is None:
            return
        try:
            self.control_state = await self.controls.call("state", {})
        except (ValueError, OSError) as exc:
            self.control_state = {"error": str(exc)}

    def _publish(self, snapshot: Mapping[str, Any]) -> None:
        text = json.dumps(snapshot, separators=(",", ":"))
        for q in list(self.subscribers):
            if q.qsize() > 5:  # a page that does not read: drop its backlog rather than grow
                while not q.empty():
                    q.get_nowait()
            q.put_nowait(text)

    # -- routes --------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/favicon.ico", self._no_icon)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        app.router.add_get("/api/topology", self._topology)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/history", self._history)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/resolve", self._resolve)
        app.router.add_post("/api/faults", self._control("add"))
        app.router.add_post("/api/faults/remove", self._control("remove"))
        app.router.add_post("/api/heal", self._control("heal"))
        app.router.add_post("/api/latency", self._control("latency"))
        app.on_startup.append(lambda _app: self.start())
        app.on_cleanup.append(lambda _app: self.stop())
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        self.last_call = time.monotonic()
        if request.method == "POST" and self.admin is not None and not self._authorised(request):
            return web.json_response({"error": "the controls need the cluster's admin credentials"}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="idresolve dashboard"'})
        return await handler(request)

    def _authorised(self, request: web.Request) -> bool:
        assert self.admin is not None
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        ok_user = hmac.compare_digest(user.encode(), self.admin[0].encode())
        return hmac.compare_digest(password.encode(), self.admin[1].encode()) and ok_user

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _topology(self, request: web.Request) -> web.Response:
        return web.json_response(self.topology)

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot or await self.tick())

    async def _history(self, request: web.Request) -> web.Response:
        track = self.tracks.get(request.query.get("node", ""))
        if track is None:
            return web.json_response({"error": "no such node"}, status=404)
        return web.json_response({"node": request.query["node"], "points": list(track.history)})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue()
        self.subscribers.add(q)
        try:
            if self.snapshot:
                await resp.write(f"event: snapshot\ndata: {json.dumps(self.snapshot)}\n\n".encode())
            while True:
                try:
                    text = await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                await resp.write(f"event: snapshot\ndata: {text}\n\n".encode())
        except ConnectionResetError:  # the page went away
            pass
        finally:
            self.subscribers.discard(q)
        return resp

    async def _resolve(self, request: web.Request) -> web.Response:
        handle = request.query.get("handle", "").strip()
        recursive = [n for n in self.nodes if n["role"] == "recursive"]
        via = next((n for n in recursive if n["name"] == request.query.get("via")), recursive[0] if recursive else None)
        if not handle or len(handle) > 1024 or via is None:
            return web.json_response({"error": "give an identifier (and a recursive node)"}, status=400)
        query = {"trace": ""} if request.query.get("cache") == "1" else {"trace": "", "auth": "true"}
        url = f"{str(via['http']).rstrip('/')}/api/handles/{quote(handle, safe='/')}"  # %XX escapes are kept
        assert self._session is not None
        started = time.perf_counter()
        try:
            async with self._session.get(url, params=query, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return web.json_response({"error": f"{via['name']} did not answer: {exc!r}"}, status=502)
        return web.json_response({"via": via["name"], "status": status, "answer": body,
                                  "ms": round((time.perf_counter() - started) * 1000, 2)})

    def _control(self, action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            if self.controls is None:
                return web.json_response({"error": "this dashboard has no control channel"}, status=503)
            try:
                body = await request.json() if request.can_read_body else {}
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                self.control_state = await self.controls.call(action, body)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            self._publish({**self.snapshot, "control": self.control_state})
            return web.json_response(self.control_state)

        return handler
