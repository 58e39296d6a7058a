"""docker compose for a topology: a pure function from the topology and a few options to the compose
document (plain dicts and lists), a small YAML writer for it, and a drift summary for ``--check``.

Containers run the very nodes ``idresolve up`` runs. Every running node becomes one service named after
the node, whose command is the cluster worker hosting exactly that node::

    python -m idresolve.cluster.worker --config /app/config/T.toml --data-dir /data --base-port P
        --workers 1 --node NAME --host NAME --bind 0.0.0.0 --dial-hosts names --latency on|off

so it listens on 0.0.0.0 at the ports ``plan.make_plan`` assigns (node i: ``P+2i`` binary TCP and UDP,
``P+2i+1`` HTTP) and reaches the other nodes by service name on the compose network. Only the recursive
nodes' REST and binary ports are published (on ``publish_host``, loopback by default). Each node keeps
its store in a named volume of its own at ``/data``, as a node on a machine of its own would.

The one-shot ``bootstrap`` service waits until every node's healthcheck (``GET /healthz`` with Python's
urllib: the slim image has no curl) passes, then allocates the prefixes (``idresolve bootstrap``). The
``locust`` service runs only under the compose profile ``load``.

The cluster secret is never written here: compose reads ``IDRESOLVE_CLUSTER_SECRET`` from ``.env`` (or
the shell) and hands it to every node as the docker secret ``cluster_secret``, placed where the worker
reads it: ``/data/cluster-secret``, owned by the image's user.

Rules: no I/O, no clock, no environment; the same topology and options give the same text byte for byte,
so ``idresolve compose --check`` compares text.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from ..core.topology import Topology, config_hash
from .credentials import CLUSTER_SECRET_FILE
from .plan import DEFAULT_BASE_PORT, ClusterPlan, NodePlan, make_plan

APP_DIR = "/app"  # the Dockerfile's WORKDIR: config/ is copied to /app/config
DATA_DIR = "/data"  # the Dockerfile's VOLUME
APP_UID = 10001  # the Dockerfile's user; the injected secret file belongs to it
SECRET_NAME = "cluster_secret"
SECRET_ENV = "IDRESOLVE_CLUSTER_SECRET"
SECRET_TARGET = f"{DATA_DIR}/{CLUSTER_SECRET_FILE}"
BOOTSTRAP = "bootstrap"
LOCUST = "locust"
LOAD_PROFILE = "load"
LOCUSTFILE = f"{APP_DIR}/loadtests/locustfile.py"
DEFAULT_IMAGE = "idresolve:latest"
DEFAULT_LOAD_IMAGE = "idresolve-load:latest"
DEFAULT_PUBLISH_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ComposeOptions:
    config_name: str  # the topology's file name; the image holds it as /app/config/<config_name>
    latency: str = "on"
    base_port: int = DEFAULT_BASE_PORT
    image: str = DEFAULT_IMAGE
    load_image: str = DEFAULT_LOAD_IMAGE
    publish_host: str = DEFAULT_PUBLISH_HOST
    locust_users: int = 50
    locust_spawn_rate: int = 10
    locust_run_time: str = "60s"

    def __post_init__(self) -> None:
        if self.latency not in ("on", "off"):
            raise ValueError(f"latency must be 'on' or 'off', not {self.latency!r}")
        if not self.config_name or "/" in self.config_name or self.config_name.startswith("."):
            raise ValueError(f"config_name must be a plain file name, not {self.config_name!r}")

    @property
    def container_config(self) -> str:
        return f"{APP_DIR}/config/{self.config_name}"


# -- the document ----------------------------------------------------------------------------------------

def compose_plan(topology: Topology, opts: ComposeOptions) -> ClusterPlan:
    """The plan the containers run: the ports of ``make_plan``, every node dialled by its service name."""
    names = {n.name: n.name for n in topology.running_nodes()}
    for reserved in (BOOTSTRAP, LOCUST):
        if reserved in names:
            raise ValueError(f"a node is named {reserved!r}, the name of a compose service of its own: rename it")
    return make_plan(topology, base_port=opts.base_port, workers=1, host="0.0.0.0", dial_hosts=names)


def node_command(n: NodePlan, opts: ComposeOptions) -> list[str]:
    return ["python", "-m", "idresolve.cluster.worker", "--config", opts.container_config, "--data-dir", DATA_DIR,
            "--base-port", str(opts.base_port), "--workers", "1", "--node", n.name, "--host", n.name,
            "--bind", "0.0.0.0", "--dial-hosts", "names", "--latency", opts.latency,
            # The compose network is private (only recursive nodes publish ports, and they take no writes),
            # so nodes take credentials and writes over it in plain text: bootstrap and replication need it.
            "--plain-writes"]


def bootstrap_command(opts: ComposeOptions) -> list[str]:
    return ["idresolve", "bootstrap", "--config", opts.container_config, "--data-dir", DATA_DIR,
            "--dial-hosts", "names", "--base-port", str(opts.base_port)]


def healthcheck(n: NodePlan) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{n.http_port}/healthz', timeout=3)"
    # Every check starts a Python process: 10 s keeps 60-odd nodes cheap; start_period covers start-up.
    return {"test": ["CMD", "python", "-c", probe], "interval": "10s", "timeout": "5s", "retries": 6,
            "start_period": "30s"}


def published_ports(n: NodePlan, opts: ComposeOptions) -> list[str]:
    h = opts.publish_host
    return [f"{h}:{n.tcp_port}:{n.tcp_port}/tcp", f"{h}:{n.udp_port}:{n.udp_port}/udp",
            f"{h}:{n.http_port}:{n.http_port}/tcp"]


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
    recursive = plan.by_role("recursive")
    if recursive:
        target = recursive[0]
        services[LOCUST] = {
            "image": opts.load_image,
            "build": _build({"EXTRAS": "load"}),
            "profiles": [LOAD_PROFILE],
            "command": ["locust", "-f", LOCUSTFILE, "--headless", "--host", f"http://{target.dial_host}:{target.http_port}",
                        "--users", str(opts.locust_users), "--spawn-rate", str(opts.locust_spawn_rate),
                        "--run-time", opts.locust_run_time, "--csv", f"{DATA_DIR}/locust"],
            "volumes": [f"./loadtests:{APP_DIR}/loadtests:ro", f"{volume_of(LOCUST)}:{DATA_DIR}"],
            "depends_on": {BOOTSTRAP: {"condition": "service_completed_successfully"}},
            "restart": "no",
        }
        volumes[volume_of(LOCUST)] = {}
    return {
        "name": project_name(topology),
        "x-idresolve": {"topology": topology.name, "configHash": config_hash(topology), "latency": opts.latency,
                        "basePort": opts.base_port, "nodes": len(plan.nodes)},
        "services": services,
        "volumes": volumes,
        "secrets": {SECRET_NAME: {"environment": SECRET_ENV}},
    }


def project_name(topology: Topology) -> str:
    return "idresolve-" + (re.sub(r"[^a-z0-9_-]+", "-", topology.name.lower()).strip("-") or "cluster")


def generator_command(opts: ComposeOptions) -> str:
    parts = ["idresolve compose", f"--config config/{opts.config_name}", f"--latency {opts.latency}",
             f"--base-port {opts.base_port}"]
    if opts.image != DEFAULT_IMAGE:
        parts.append(f"--image {opts.image}")
    if opts.publish_host != DEFAULT_PUBLISH_HOST:
        parts.append(f"--publish-host {opts.publish_host}")
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
        cmd("docker compose logs bootstrap", "the allocation report and the demo identifier"),
    ]
    for r in rec:
        lines.append(cmd(f"curl http://{opts.publish_host}:{r.http_port}/healthz",
                         f"{r.name}: REST {r.http_port}, binary tcp/udp {r.tcp_port}"))
    if rec:
        lines.append(cmd("docker compose --profile load up locust",
                         f"Locust, headless, against {rec[0].name} (runs {LOCUSTFILE.removeprefix(APP_DIR + '/')})"))
    lines.append(cmd("docker compose down", "stop; `down -v` also deletes every node's store"))
    return ["# " + line if line else "#" for line in lines]


def render(topology: Topology, opts: ComposeOptions) -> str:
    return "\n".join(header(topology, opts)) + "\n\n" + dump_yaml(compose_dict(topology, opts))


# -- a YAML writer for the compose document -------------------------------------------------------------
# Block mappings, flow sequences of scalars, block sequences of mappings. A string is written plain only
# when it cannot be read back as anything else (YAML 1.1 or 1.2); otherwise double-quoted JSON, which is
# valid YAML. So compose (YAML 1.2) and PyYAML (1.1) read the same values.

_PLAIN = re.compile(r"(?:[A-Za-z_/]|--?[A-Za-z])[A-Za-z0-9_./=-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as YAML")


def _inline(value: object) -> str | None:
    """The value on one line, or None when it needs a block of its own."""
    if isinstance(value, dict):
        return "{}" if not value else None
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return None
    return scalar(value)


def _block(value: dict[str, Any] | list[Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            one = _inline(item)
            if one is not None:
                out.append(f"{pad}{scalar(key)}: {one}")
            else:
                out.append(f"{pad}{scalar(key)}:")
                out += _block(item, indent + 2)
        return out
    for item in value:
        if isinstance(item, dict) and item:
            lines = _block(item, indent + 2)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out += lines[1:]
        else:
            one = _inline(item)
            if one is None:
                raise TypeError("lists of lists are not written")
            out.append(f"{pad}- {one}")
    return out


def dump_yaml(doc: dict[str, Any]) -> str:
    """``doc`` as YAML; top-level sections and the services are separated by blank lines."""
    out: list[str] = []
    for key, value in doc.items():
        one = _inline(value)
        if one is not None:
            out.append(f"{scalar(key)}: {one}")
            continue
        if out and out[-1] != "":
            out.append("")
        out.append(f"{scalar(key)}:")
        if key == "services" and isinstance(value, dict):
            for i, (name, svc) in enumerate(value.items()):
                if i:
                    out.append("")
                out += _block({name: svc}, 2)
        else:
            out += _block(value, 2)
        out.append("")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


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
    out = []
    added = [s for s in new if s not in old]
    removed = [s for s in old if s not in new]
    changed = [s for s in new if s in old and old[s] != new[s]]
    if added:
        out.append(f"services to add ({len(added)}): {', '.join(added)}")
    if removed:
        out.append(f"services to remove ({len(removed)}): {', '.join(removed)}")
    if changed:
        out.append(f"services that differ ({len(changed)}): {', '.join(changed)}")
    if old_rest != new_rest:
        out.append("the header, volumes, secrets or metadata differ")
    diff = list(difflib.unified_diff(existing.splitlines(), wanted.splitlines(), "on disk", "generated", n=1,
                                     lineterm=""))
    out += diff[:max_diff_lines]
    if len(diff) > max_diff_lines:
        out.append(f"... {len(diff) - max_diff_lines} more diff lines")
    return out
