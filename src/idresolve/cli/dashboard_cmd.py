"""``idresolve dashboard``: serve the live dashboard (``http.dashboard``) of a cluster that runs already.

``idresolve up`` starts the same command for its own cluster. This module wires the pieces the dashboard
app is given: the cluster (``cluster.json``), the topology's places, the metrics parser
(``bench.scrape.parse``), the control channel (``cluster.faults.Controller``, the one ``idresolve fault``
uses) and, beyond loopback, the admin credentials that its controls require.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from ..bench.scrape import parse
from ..cluster.credentials import CLUSTER_SECRET_FILE, CREDENTIALS_FILE
from ..cluster.faults import Controller, FaultError, new_fault, read_control_file, write_control_file
from ..cluster.plan import identity_of
from ..cluster.supervisor import ClusterError, load_cluster
from ..core.topology import TopologyError, load_topology
from ..http.dashboard import Dashboard
from ..runtime.config import is_loopback, parse_hostport
from ..runtime.serve import run_until_signal
from .common import EXIT_OK, CliError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dashboard", help="serve the live dashboard of a running cluster",
                       description="Serve the live web dashboard of the cluster in --data-dir: the map, live "
                       "figures per node, traced resolutions and fault controls. `idresolve up` serves one itself.")
    p.add_argument("--data-dir", help="the cluster's data directory (default ./data)")
    p.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1 and the cluster's base port - 1); "
                   "beyond loopback the controls need the registry admin's credentials")
    p.add_argument("--ready-json", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stop-with-stdin", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def topology_view(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """What the page draws: every running node with its place and its ties, and the latency scenarios."""
    topo = load_topology(str(cluster["config"]))
    places = {loc.name: (loc.lat, loc.lon) for loc in topo.locations}
    nodes = []
    for n in cluster["nodes"]:
        spec = topo.node(str(n["name"]))
        lat, lon = places[spec.location.name]
        nodes.append({"name": spec.name, "role": spec.role, "location": spec.location.name,
                      "province": spec.location.province, "lat": lat, "lon": lon, "prefix": spec.prefix,
                      "parent": spec.parent, "mirrorOf": spec.mirror_of, "connected": spec.connected,
                      "disasterRecovery": spec.disaster_recovery, "http": n["http"], "tcp": n["tcp"]})
    return {"name": topo.name, "nodes": nodes, "scenarios": [s.name for s in topo.scenarios],
            "defaultScenario": topo.default_scenario, "latency": cluster.get("latency"),
            "scenario": cluster.get("scenario")}


class FaultControls:
    """The dashboard's controls over the control channel: the same requests as ``idresolve fault``."""

    def __init__(self, data_dir: Path, master: str, known: list[str]) -> None:
        self.data_dir, self.master, self.known = data_dir, master, known

    async def call(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._call, action, body)

    def _call(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ctl = Controller.for_data_dir(self.data_dir, self.master)  # read each time: workers may come later
        if action == "state":
            return ctl.state()
        if action == "add":
            duration = body.get("duration")
            fault = new_fault(str(body.get("kind")), list(body.get("nodes") or []), others=list(body.get("others") or []),
                              factor=body.get("factor", 1.0), delay_ms=body.get("delayMs", 0.0),
                              loss=body.get("loss", 0.0), duration_s=None if duration in (None, "", 0) else duration,
                              now=time.time(), known=self.known)
            return ctl.add(fault)
        if action == "remove":
            return ctl.remove(fault_id=body.get("id"), kind=body.get("kind"), node=body.get("node"))
        if action == "heal":
            return ctl.heal()
        if action == "latency":
            mode = body.get("latency", "on")
            return ctl.latency(str(mode), body.get("scenario") or None)
        raise FaultError(f"unknown action {action!r}")


def registry_admin(data_dir: Path, cluster: Mapping[str, Any]) -> tuple[str, str]:
    """The Basic credentials the controls take beyond loopback: the registry admin's identity (as the REST
    API spells it in a user name, ``300%3A0.NA%2F88``) and its secret."""
    country = next((str(n["prefix"]) for n in cluster["nodes"] if n["role"] == "top" and n.get("prefix")), "88")
    identity = identity_of(country)
    creds = json.loads((data_dir / CREDENTIALS_FILE).read_text(encoding="utf-8"))
    return urllib.parse.quote(identity, safe=""), str(creds["identities"][identity])


def run(args: argparse.Namespace) -> int:
    from .cluster_cmd import data_dir_of

    data_dir = data_dir_of(args)
    try:
        cluster = load_cluster(data_dir)
        view = topology_view(cluster)
        master = (data_dir / CLUSTER_SECRET_FILE).read_text(encoding="utf-8").strip()
    except (ClusterError, TopologyError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read the cluster's files in {data_dir}: {exc.strerror or exc}") from None
    default_port = max(1, int(cluster.get("basePort", 26400)) - 1)
    host, port = parse_hostport(args.listen or f"127.0.0.1:{default_port}", default_port)
    admin = None if is_loopback(host) else registry_admin(data_dir, cluster)
    dash = Dashboard(cluster, view, parse, controls=FaultControls(data_dir, master, [n["name"] for n in view["nodes"]]),
                     admin=admin)

    async def serve(stop: asyncio.Event) -> None:
        if args.stop_with_stdin:
            loop = asyncio.get_running_loop()
            fd = sys.stdin.fileno()

            def readable() -> None:
                if not os.read(fd, 4096):
                    loop.remove_reader(fd)
                    stop.set()

            loop.add_reader(fd, readable)
        runner = web.AppRunner(dash.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            message = f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another with --listen)"
            if args.ready_json:
                print(json.dumps({"event": "error", "message": message}), flush=True)
                return
            raise CliError(message) from None
        bound = runner.addresses[0]
        url = f"http://{bound[0] if ':' not in bound[0] else '[' + bound[0] + ']'}:{bound[1]}/"
        _note_address(data_dir, url)
        if args.ready_json:
            print(json.dumps({"event": "ready", "url": url}), flush=True)
        else:
            print(f"dashboard of {cluster['topology']!r}: {url}" + ("" if admin is None else
                  f"  (controls: user {admin[0]}, password from {data_dir / CREDENTIALS_FILE})"), flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    run_until_signal(serve)
    return EXIT_OK


def _note_address(data_dir: Path, url: str) -> None:
    """Record the dashboard's address beside the workers' control channels (``control.json``)."""
    try:
        control = read_control_file(data_dir)
    except FaultError:
        return
    write_control_file(data_dir, control["workers"], url)
