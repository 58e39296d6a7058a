"""``idresolve compose | bootstrap``: write (or check) docker-compose.yml for a topology, and allocate the
prefixes of a cluster whose nodes run elsewhere (the one-shot ``bootstrap`` service of the compose file,
and the ``bootstrap`` Job of ``idresolve k8s``).

``compose`` is a thin shell around the pure ``cluster.compose``. ``bootstrap`` reads the cluster secret
from ``IDRESOLVE_CLUSTER_SECRET`` or ``DATA_DIR/cluster-secret`` (never generating one: a secret the nodes
do not share would only fail later), waits for every node's binary port, then runs
``cluster.bootstrap.bootstrap`` and, with ``--seed N``, ``cluster.seeding.seed_plan``: both idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cluster.bootstrap import BootstrapError, BootstrapReport, bootstrap
from ..cluster.compose import (
    DEFAULT_PUBLISH_HOST,
    ComposeOptions,
    compose_plan,
    drift_summary,
    generator_command,
    render,
)
from ..cluster.containers import DEFAULT_IMAGE, DEFAULT_SEED, SECRET_ENV, SEED_TAG, has_load_test
from ..cluster.credentials import CLUSTER_SECRET_FILE, cluster_secret
from ..cluster.plan import DEFAULT_BASE_PORT, ClusterPlan, make_plan
from ..cluster.seeding import seed_plan
from ..core.topology import Topology, TopologyError, load_topology
from ..net.blocking import ProtocolClientError
from .cluster_cmd import data_dir_of, default_config
from .common import EXIT_HANDLE_ERROR, EXIT_OK, EXIT_UNREACHABLE, CliError

EXIT_DRIFT = 1
WAIT_POLL_S = 0.25


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("compose", help="write docker-compose.yml: one container per node of a topology",
                       description="Write a docker compose file running every node of the topology in a container "
                       "of its own (the same worker command and ports as `idresolve up`), a one-shot `bootstrap` "
                       "service that allocates the prefixes once every node is healthy, and a `locust` service "
                       f"under the profile 'load'. The cluster secret comes from {SECRET_ENV} in .env, never from "
                       "the file. --check compares the file with what the topology generates.")
    p.add_argument("--config", type=Path, help="topology TOML (default config/shandong.toml); the image holds "
                   "config/, so the file should be there")
    p.add_argument("--out", type=Path, default=Path("docker-compose.yml"),
                   help="the compose file (default ./docker-compose.yml, beside the Dockerfile)")
    p.add_argument("--latency", choices=["on", "off"], default="on", help="apply the latency model (default on)")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                   help=f"first port, as for `idresolve up` (default {DEFAULT_BASE_PORT})")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"image every node runs (default {DEFAULT_IMAGE})")
    p.add_argument("--publish-host", default=DEFAULT_PUBLISH_HOST,
                   help=f"host address the recursive nodes' ports are published on (default {DEFAULT_PUBLISH_HOST})")
    add_seed_arg(p)
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 with a summary when --out differs from what the topology generates")
    p.set_defaults(func=compose)

    p = sub.add_parser("bootstrap", help="allocate the prefixes of a cluster whose nodes already run",
                       description="Wait until every node of the topology accepts connections on its binary port, "
                       "then allocate the secondary and enterprise prefixes through the nodes' own APIs and "
                       "register the demo identifier. Idempotent. The cluster secret comes from "
                       f"{SECRET_ENV} or DATA_DIR/{CLUSTER_SECRET_FILE}.")
    p.add_argument("--config", type=Path, help="topology TOML (default config/shandong.toml)")
    p.add_argument("--data-dir", help=f"where {CLUSTER_SECRET_FILE} is (env IDRESOLVE_DATA_DIR; default ./data)")
    p.add_argument("--dial-hosts", choices=["same", "names"], default="same",
                   help="'names': reach each node by its name (compose services); 'same': all at --host")
    p.add_argument("--host", default="127.0.0.1", help="the nodes' address with --dial-hosts same")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT, help=f"first port (default {DEFAULT_BASE_PORT})")
    p.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for the nodes (default 120)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help=f"then register N identifiers spread over the enterprises (suffixes {SEED_TAG}<n>, as "
                   "`idresolve seed`; existing ones are kept), for the load test (default 0: none)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_bootstrap)

    from . import k8s_cmd  # it builds on this module

    k8s_cmd.add_parser(sub)


add_parser = add_parsers


def add_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-identifiers", type=int, default=DEFAULT_SEED, metavar="N",
                   help=f"identifiers the bootstrap registers for Locust to ask for (default {DEFAULT_SEED}; "
                   "0: none, and no Locust)")


def read_topology(config: Path) -> Topology:
    try:
        return load_topology(config)
    except OSError as exc:
        raise CliError(f"cannot read {config}: {exc.strerror or exc}") from None
    except TopologyError as exc:
        raise CliError(str(exc)) from None


# -- compose -----------------------------------------------------------------------------------------------

def compose(args: argparse.Namespace) -> int:
    config: Path = args.config or default_config()
    topology = read_topology(config)
    try:
        opts = ComposeOptions(config_name=config.name, latency=args.latency, base_port=args.base_port,
                              image=args.image, publish_host=args.publish_host, seed_identifiers=args.seed_identifiers)
        text = render(topology, opts)
        plan = compose_plan(topology, opts)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out: Path = args.out
    if args.check:
        return _check(out, text, generator_command(opts, str(config), str(out)), plan)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    rec = ", ".join(f"{n.name} REST {n.http_port} binary {n.tcp_port} handle {n.handle_port}" for n in plan.by_role("recursive"))
    locust = ", locust (profile load)" if has_load_test(plan, opts) else ""
    print(f"wrote {out}: {len(plan.nodes)} node services of {topology.name!r} (latency {opts.latency}), bootstrap"
          f"{locust}; published: {rec}")
    print(f"before `docker compose up`: put {SECRET_ENV}=<random> in .env beside it (see the file's header)")
    in_image = out.resolve().parent / "config" / config.name
    if not in_image.exists() or not in_image.samefile(config):
        print(f"warning: the image holds config/ from beside {out.name}, and {in_image} is not {config}: copy the "
              "topology there before building", file=sys.stderr)
    return EXIT_OK


def _check(out: Path, text: str, again: str, plan: ClusterPlan) -> int:
    try:
        existing = out.read_text(encoding="utf-8")
    except FileNotFoundError:
        return report_missing(out, again)
    return report_check(out, existing == text, str(plan.topology.source), f"{len(plan.nodes)} node services",
                        lambda: drift_summary(existing, text), again)


def report_missing(out: Path, again: str) -> int:
    print(f"{out} does not exist: write it with `{again}`", file=sys.stderr)
    return EXIT_DRIFT


def report_check(out: Path, same: bool, config: str, what: str, summary: Callable[[], list[str]], again: str) -> int:
    """``--check``'s verdict on generated files: up to date (exit 0), or how they drifted (exit 1)."""
    if same:
        print(f"{out} is up to date with {config} ({what})")
        return EXIT_OK
    print(f"{out} has drifted from what {config} generates:", file=sys.stderr)
    for line in summary():
        print(f"  {line}", file=sys.stderr)
    print(f"regenerate it with `{again}`", file=sys.stderr)
    return EXIT_DRIFT


# -- bootstrap ---------------------------------------------------------------------------------------------

def _secret(data_dir: Path) -> str:
    given = os.environ.get(SECRET_ENV, "").strip() or None
    if given is None:
        path = data_dir / CLUSTER_SECRET_FILE
        try:
            if not path.read_text(encoding="utf-8").strip():
                raise CliError(f"{path} is empty")
        except FileNotFoundError:
            raise CliError(f"no cluster secret: set {SECRET_ENV}, or put the nodes' secret in {path} "
                           "(docker compose and the Kubernetes manifests mount the secret there)") from None
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return cluster_secret(data_dir, given)


def wait_for_nodes(plan: ClusterPlan, timeout_s: float) -> list[str]:
    """Poll every node's binary TCP port until all accept or ``timeout_s`` passes; the names still down."""
    deadline = time.monotonic() + timeout_s
    pending = list(plan.nodes)
    while True:
        still = []
        for n in pending:
            remaining = deadline - time.monotonic()
            try:
                with socket.create_connection((n.dial_host, n.tcp_port), timeout=max(0.1, min(2.0, remaining))):
                    pass
            except OSError:  # refused, or (containers) the name does not resolve yet
                still.append(n)
        pending = still
        if not pending or time.monotonic() >= deadline:
            return [n.name for n in pending]
        time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))  # nothing to wait on but time


def run_bootstrap(args: argparse.Namespace) -> int:
    config: Path = args.config or default_config()
    topology = read_topology(config)
    dial = {n.name: n.name for n in topology.running_nodes()} if args.dial_hosts == "names" else None
    try:
        plan = make_plan(topology, base_port=args.base_port, workers=1, host=args.host, dial_hosts=dial)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    master = _secret(data_dir_of(args))

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    say(f"waiting up to {args.wait:g} s for {len(plan.nodes)} nodes of {topology.name!r}")
    down = wait_for_nodes(plan, args.wait)
    if down:
        more = f" and {len(down) - 5} more" if len(down) > 5 else ""
        raise CliError(f"not reachable after {args.wait:g} s: {', '.join(down[:5])}{more}", EXIT_UNREACHABLE)
    if args.seed < 0:
        raise CliError("--seed cannot be negative")
    try:
        report = bootstrap(plan, master, progress=say)
    except (BootstrapError, ProtocolClientError, OSError) as exc:
        raise CliError(f"allocation failed: {exc}", EXIT_HANDLE_ERROR) from None
    seeded = None
    if args.seed:
        say(f"seeding {args.seed} identifiers")
        try:
            seeded = seed_plan(plan, master, args.seed, tag=SEED_TAG)
        except (ProtocolClientError, OSError, ValueError) as exc:
            raise CliError(f"seeding failed: {exc}", EXIT_HANDLE_ERROR) from None
    _print_report(plan, report, seeded, as_json=args.json)
    return EXIT_OK if seeded is None or seeded["failed"] == 0 else EXIT_HANDLE_ERROR


def _print_report(plan: ClusterPlan, report: BootstrapReport, seeded: dict[str, Any] | None, *, as_json: bool) -> None:
    recursive = [{"name": n.name, "http": n.http_url, "tcp": f"{n.dial_host}:{n.tcp_port}"}
                 for n in plan.by_role("recursive")]
    if as_json:
        print(json.dumps({"topology": plan.topology.name, "created": report.created, "unchanged": report.unchanged,
                          "demo": report.demo, "recursive": recursive, "seeded": seeded}, indent=2))
        return
    print(f"bootstrap of {plan.topology.name!r}: {len(report.created)} prefix records written, "
          f"{len(report.unchanged)} already in place")
    if report.demo:
        print(f"  demo identifier: {report.demo}")
    if seeded is not None:
        print(f"  seeded: {seeded['registered']} identifiers over {seeded['enterprises']} enterprises "
              f"({SEED_TAG}000000000 on), {seeded['failed']} failed; e.g. {seeded['example'] or '(all in place)'}")
    for r in recursive:
        print(f"  recursive {r['name']}: REST {r['http']}  binary tcp/udp {r['tcp']}")
