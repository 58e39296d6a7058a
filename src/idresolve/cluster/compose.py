"""docker compose for a topology: a pure function from the topology and a few options to the compose
document (plain dicts and lists), its text, and a drift summary for ``--check``.

Containers run the very nodes ``idresolve up`` runs, with the command lines of ``cluster.containers``.
Every running node becomes one service named after the node, listening on 0.0.0.0 at the ports
``plan.make_plan`` assigns (node i: ``P+2i`` binary TCP and UDP, ``P+2i+1`` HTTP, ``P+2N+i`` the native
Handle protocol, TCP and UDP) and reaching the other nodes by service name on the compose network. Only
the recursive nodes' REST, binary and native ports are published (on ``publish_host``, loopback by default). Each node keeps its store in a named volume of its
own at ``/data``, as a node on a machine of its own would.

The one-shot ``bootstrap`` service waits until every node's healthcheck (``GET /healthz`` with Python's
urllib: the slim image has no curl) passes, then allocates the prefixes and seeds the identifiers the
load test asks for (``idresolve bootstrap --seed N``). The ``locust`` service runs only under the compose
profile ``load``, after the bootstrap has finished; it finds the nodes from the topology in the image.

The cluster secret is never written here: compose reads ``IDRESOLVE_CLUSTER_SECRET`` from ``.env`` (or
the shell) and hands it to every node and the bootstrap as the docker secret ``cluster_secret``, placed
where they read it: ``/data/cluster-secret``, owned by the image's user. Locust gets none.

Rules: no I/O, no clock, no environment; the same topology and options give the same text byte for byte,
so ``idresolve compose --check`` compares text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..core.topology import Topology, config_hash
from .containers import (
    APP_DIR,
    APP_UID,
    DATA_DIR,
    DEFAULT_IMAGE,
    DEFAULT_LOAD_IMAGE,
    DEFAULT_SEED,
    LOCUSTFILE,
    SECRET_ENV,
    SECRET_TARGET,
    ContainerOptions,
    bootstrap_command,
    container_plan,
    has_load_test,
    locust_command,
    node_command,
)
from .plan import ClusterPlan, NodePlan
from .yamltext import dump_yaml, part_changes, text_diff

__all__ = ["APP_DIR", "DATA_DIR", "DEFAULT_IMAGE", "DEFAULT_LOAD_IMAGE", "SECRET_ENV", "SECRET_TARGET",
           "ComposeOptions", "compose_dict", "compose_plan", "drift_summary", "dump_yaml", "render"]

SECRET_NAME = "cluster_secret"
BOOTSTRAP = "bootstrap"
LOCUST = "locust"
LOAD_PROFILE = "load"
DEFAULT_PUBLISH_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ComposeOptions(ContainerOptions):
    publish_host: str = DEFAULT_PUBLISH_HOST


# -- the document ----------------------------------------------------------------------------------------

def compose_plan(topology: Topology, opts: ComposeOptions) -> ClusterPlan:
    """The plan the containers run: the ports of ``make_plan``, every node dialled by its service name."""
    return container_plan(topology, opts, (BOOTSTRAP, LOCUST))


def healthcheck(n: NodePlan) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{n.http_port}/healthz', timeout=3)"
    # Every check starts a Python process: 10 s keeps 60-odd nodes cheap; start_period covers start-up.
    return {"test": ["CMD", "python", "-c", probe], "interval": "10s", "timeout": "5s", "retries": 6,
            "start_period": "30s"}


def published_ports(n: NodePlan, opts: ComposeOptions) -> list[str]:
    h = opts.publish_host
    return [f"{h}:{n.tcp_port}:{n.tcp_port}/tcp", f"{h}:{n.udp_port}:{n.udp_port}/udp",
            f"{h}:{n.http_port}:{n.http_port}/tcp",
            f"{h}:{n.handle_port}:{n.handle_port}/tcp", f"{h}:{n.handle_port}:{n.handle_port}/udp"]


def _secret_ref() -> dict[str, Any]:
    return {"source": SECRET_NAME, "target": SECRET_TARGET, "uid": str(APP_UID), "gid": str(APP_UID)}


def _build(args: dict[str, str] | None = None) -> dict[str, Any]:
    # Every node service names the same image and build: compose builds it once and all of them run it.
    return {"context": ".", "dockerfile": "Dockerfile", **({"args": args} if args else {})}


def volume_of(name: str) -> str:
    return f"{name}-data"


def compose_dict(topology: Topology, opts: ComposeOptions) -> dict[str, Any]:
    plan = compose_plan(topology, opts)
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    for n in plan.nodes:
        svc: dict[str, Any] = {
            "image": opts.image,
            "build": _build(),
            "command": node_command(n, opts),
            "labels": {"idresolve.role": n.role, "idresolve.location": n.spec.location.name},
            "volumes": [f"{volume_of(n.name)}:{DATA_DIR}"],
            "secrets": [_secret_ref()],
        }
        if n.role == "recursive":
            svc["ports"] = published_ports(n, opts)
        svc.update({"healthcheck": healthcheck(n), "restart": "unless-stopped", "stop_grace_period": "25s"})
        services[n.name] = svc
        volumes[volume_of(n.name)] = {}
    services[BOOTSTRAP] = {
        "image": opts.image,
        "build": _build(),
        "command": bootstrap_command(opts),
        "volumes": [f"{volume_of(BOOTSTRAP)}:{DATA_DIR}"],
        "secrets": [_secret_ref()],
        "depends_on": {n.name: {"condition": "service_healthy"} for n in plan.nodes},
        "restart": "no",
    }
    volumes[volume_of(BOOTSTRAP)] = {}
    if has_load_test(plan, opts):
        services[LOCUST] = {
            "image": opts.load_image,
            "build": _build({"EXTRAS": "load"}),
            "profiles": [LOAD_PROFILE],
            "command": locust_command(opts, csv=f"{DATA_DIR}/locust"),
            "volumes": [f"{volume_of(LOCUST)}:{DATA_DIR}"],
            "depends_on": {BOOTSTRAP: {"condition": "service_completed_successfully"}},
            "restart": "no",
        }
        volumes[volume_of(LOCUST)] = {}
    return {
        "name": project_name(topology),
        "x-idresolve": {"topology": topology.name, "configHash": config_hash(topology), "latency": opts.latency,
                        "basePort": opts.base_port, "nodes": len(plan.nodes), "seeded": opts.seed_identifiers},
        "services": services,
        "volumes": volumes,
        "secrets": {SECRET_NAME: {"environment": SECRET_ENV}},
    }


def project_name(topology: Topology) -> str:
    return "idresolve-" + (re.sub(r"[^a-z0-9_-]+", "-", topology.name.lower()).strip("-") or "cluster")


def generator_command(opts: ComposeOptions, config: str | None = None, out: str | None = None) -> str:
    """The command that writes the file; ``config``: the topology's path (default config/<its name>)."""
    parts = ["idresolve compose", f"--config {config or 'config/' + opts.config_name}",
             *([f"--out {out}"] if out else []), f"--latency {opts.latency}", f"--base-port {opts.base_port}"]
    if opts.image != DEFAULT_IMAGE:
        parts.append(f"--image {opts.image}")
    if opts.publish_host != DEFAULT_PUBLISH_HOST:
        parts.append(f"--publish-host {opts.publish_host}")
    if opts.seed_identifiers != DEFAULT_SEED:
        parts.append(f"--seed-identifiers {opts.seed_identifiers}")
    return " ".join(parts)


def header(topology: Topology, opts: ComposeOptions) -> list[str]:
    plan = compose_plan(topology, opts)
    rec = plan.by_role("recursive")
    def cmd(command: str, comment: str) -> str:
        return f"  {command:<41} # {comment}"

    lines = [
        f"docker compose for the idresolve topology {topology.name!r}: {len(plan.nodes)} nodes, one container each.",
        f"Generated by `{generator_command(opts)}`.",
        "Do not edit by hand: change the topology and run the command again. `idresolve compose --check` fails",
        "when this file and the topology have drifted apart.",
        "",
        "The cluster secret is not in this file. Put it in .env beside it, and keep .env out of git:",
        "  python3 -c \"import secrets; print('IDRESOLVE_CLUSTER_SECRET=' + secrets.token_urlsafe(32))\" > .env",
        "Compose reads IDRESOLVE_CLUSTER_SECRET from .env (or the shell) and gives it to every node as the",
        f"docker secret `{SECRET_NAME}`: the file {SECRET_TARGET}, owned by the image's user (uid {APP_UID}).",
        "",
        cmd("docker compose up -d --build", "all nodes; `bootstrap` allocates prefixes once all are healthy"),
        cmd("docker compose logs bootstrap", "the allocation report, the demo identifier, identifiers seeded"),
    ]
    for r in rec:
        lines.append(cmd(f"curl http://{opts.publish_host}:{r.http_port}/healthz",
                         f"{r.name}: REST {r.http_port}, binary tcp/udp {r.tcp_port}, handle tcp/udp {r.handle_port}"))
    if has_load_test(plan, opts):
        lines.append(cmd("docker compose --profile load up locust",
                         f"Locust, headless, {opts.locust_run_time}, against every recursive node"))
        lines.append(f"    (asks for the {opts.seed_identifiers} identifiers `bootstrap` seeded; runs "
                     f"{LOCUSTFILE.removeprefix(APP_DIR + '/')} from the image,")
        lines.append("    so after editing loadtests/: `docker compose --profile load build locust`)")
    lines.append(cmd("docker compose down", "stop; `down -v` also deletes every node's store"))
    return ["# " + line if line else "#" for line in lines]


def render(topology: Topology, opts: ComposeOptions) -> str:
    return "\n".join(header(topology, opts)) + "\n\n" + dump_yaml(compose_dict(topology, opts))


# -- drift -------------------------------------------------------------------------------------------------

_SERVICE_KEY = re.compile(r"^  ([^\s#][^:]*):\s*$")


def _service_blocks(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """Each service's lines (in the layout ``dump_yaml`` writes) and every line outside ``services:``."""
    blocks: dict[str, list[str]] = {}
    rest: list[str] = []
    current: list[str] | None = None
    in_services = False
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            in_services = line.rstrip() == "services:"
            current = None
            rest.append(line)
            continue
        m = _SERVICE_KEY.match(line) if in_services else None
        if m:
            current = blocks.setdefault(m.group(1).strip().strip('"'), [])
        elif current is not None and line.strip():
            current.append(line)
        elif current is None and line.strip():
            rest.append(line)
    return blocks, rest


def drift_summary(existing: str, wanted: str, *, max_diff_lines: int = 40) -> list[str]:
    """What differs between the file on disk and what the topology generates, for a person to read."""
    old, old_rest = _service_blocks(existing)
    new, new_rest = _service_blocks(wanted)
    out = part_changes(old, new, "services")
    if old_rest != new_rest:
        out.append("the header, volumes, secrets or metadata differ")
    return out + text_diff(existing, wanted, max_diff_lines)
