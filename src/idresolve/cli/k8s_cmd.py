"""``idresolve k8s``: write (or check) Kubernetes manifests for a topology: a thin shell around the pure
``cluster.k8s``.

``--out`` names a directory (default ``k8s``: one file per part, in apply order) or, ending in ``.yaml``
or ``.yml``, one file; ``-`` writes one file to stdout. A rewrite replaces the files it wrote before
(recognised by their header) and leaves any other file in the directory alone; ``--check`` compares the
same set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cluster.containers import DEFAULT_IMAGE, DEFAULT_LOAD_IMAGE
from ..cluster.k8s import (
    DEFAULT_STORAGE,
    MARKER,
    SECRET_KEY,
    SECRET_NAME,
    K8sOptions,
    drift_summary,
    generator_command,
    k8s_plan,
    render,
    render_files,
)
from ..cluster.plan import DEFAULT_BASE_PORT
from .cluster_cmd import default_config
from .common import EXIT_OK, CliError
from .compose_cmd import add_seed_arg, read_topology, report_check, report_missing


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("k8s", help="write Kubernetes manifests: a StatefulSet and a Service per node of a topology",
                       description="Write Kubernetes manifests running every node of the topology in a pod of its "
                       "own (the containers of `idresolve compose`: the same commands and ports), each with a "
                       "PersistentVolumeClaim and a Service named after the node; a Service in front of the "
                       "recursive nodes; the bootstrap as a Job; optionally Locust. No secret is written: create "
                       f"the Secret {SECRET_NAME} (key {SECRET_KEY}) yourself. --check compares the files with "
                       "what the topology generates.")
    p.add_argument("--config", type=Path, help="topology TOML (default config/shandong.toml); the image holds "
                   "config/, so the file should be there when the image is built")
    p.add_argument("--out", default="k8s", help="a directory (default ./k8s), a file ending in .yaml or .yml, or - "
                   "for stdout")
    p.add_argument("--latency", choices=["on", "off"], default="on", help="apply the latency model (default on)")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                   help=f"first port, as for `idresolve up` (default {DEFAULT_BASE_PORT})")
    p.add_argument("--image", default=DEFAULT_IMAGE,
                   help=f"image the nodes and the bootstrap run (default {DEFAULT_IMAGE}): one the cluster can pull")
    p.add_argument("--load-image", default=DEFAULT_LOAD_IMAGE,
                   help=f"image with Locust, for --with-locust (default {DEFAULT_LOAD_IMAGE})")
    p.add_argument("--namespace", help="put every object in this namespace, and write the namespace too "
                   "(default: none named, kubectl's current one)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"each node's volume claim (default {DEFAULT_STORAGE})")
    p.add_argument("--storage-class", help="StorageClass of the claims (default: the cluster's default)")
    add_seed_arg(p)
    p.add_argument("--with-locust", action="store_true", help="also a headless Locust master and its workers, "
                   "as Jobs, reading the seeded identifiers through the recursive nodes")
    p.add_argument("--locust-workers", type=int, default=2, help="Locust workers (default 2)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 with a summary when --out differs from what the topology generates")
    p.set_defaults(func=k8s)


def _display(out: str, single: bool) -> str:
    return out if single else out.rstrip("/") + "/"


def k8s(args: argparse.Namespace) -> int:
    config: Path = args.config or default_config()
    topology = read_topology(config)
    out: str = args.out
    single = out == "-" or out.endswith((".yaml", ".yml"))
    try:
        opts = K8sOptions(config_name=config.name, latency=args.latency, base_port=args.base_port, image=args.image,
                          load_image=args.load_image, seed_identifiers=args.seed_identifiers,
                          namespace=args.namespace, storage=args.storage, storage_class=args.storage_class,
                          with_locust=args.with_locust, locust_workers=args.locust_workers)
        plan = k8s_plan(topology, opts)
        shown = _display(out, single)
        wanted = {Path(out).name: render(topology, opts, shown)} if single else render_files(topology, opts, shown)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    again = generator_command(opts, out, str(config))
    if out == "-":
        if args.check:
            raise CliError("--check needs --out: a file or a directory to compare")
        sys.stdout.write(next(iter(wanted.values())))
        return EXIT_OK
    path = Path(out)
    if args.check:
        return _check(path, single, wanted, again, str(config), len(plan.nodes))
    try:
        if single:
            _write(path, wanted[path.name])
        else:
            path.mkdir(parents=True, exist_ok=True)
            for name, text in wanted.items():
                _write(path / name, text)
            for name in _ours(path):
                if name not in wanted:
                    (path / name).unlink()
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    ns = f" -n {opts.namespace}" if opts.namespace else ""
    print(f"wrote {shown}: {len(plan.nodes)} nodes of {topology.name!r} (latency {opts.latency}), the recursive "
          f"Service, the bootstrap Job{', Locust' if opts.with_locust else ''}")
    print(f"before `kubectl apply -f {shown}`: `kubectl{ns} create secret generic {SECRET_NAME} "
          f"--from-literal={SECRET_KEY}=<random>` (see the header), and push {opts.image} (built with config/"
          f"{config.name} in it) where the cluster pulls images")
    return EXIT_OK


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _ours(directory: Path) -> list[str]:
    """The YAML files in ``directory`` that ``idresolve k8s`` wrote (their header says so)."""
    names = []
    for p in sorted(directory.glob("*.y*ml")):
        try:
            with p.open(encoding="utf-8") as fh:
                head = fh.read(600)
        except (OSError, UnicodeDecodeError):
            continue
        if MARKER in head:
            names.append(p.name)
    return names


def _check(path: Path, single: bool, wanted: dict[str, str], again: str, config: str, nodes: int) -> int:
    if not path.exists():
        return report_missing(path, again)
    try:
        if single:
            existing = {path.name: path.read_text(encoding="utf-8")}
        else:
            existing = {name: (path / name).read_text(encoding="utf-8") for name in _ours(path)}
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    files = f"{len(wanted)} file{'s' * (len(wanted) > 1)}"
    return report_check(path, existing == wanted, config, f"{nodes} nodes, {files}",
                        lambda: drift_summary(existing, wanted), again)
