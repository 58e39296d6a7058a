"""``idresolve topology generate``: write a generated topology (``core/topogen.py``) for scaling runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("topology", help="generate topologies of any size (scaling runs)")
    tsub = p.add_subparsers(dest="topology_cmd", required=True)
    g = tsub.add_parser("generate", help="write a generated national topology as TOML",
                        description="Write a topology of two top-level nodes, N secondary nodes over the provinces, "
                        "M enterprise prefixes under each (some with a node of their own, the rest hosted) and "
                        "recursive nodes, for `idresolve up --config` and the benchmarks.")
    g.add_argument("--secondary", type=int, required=True, metavar="N", help="secondary nodes (prefixes 88.100 up)")
    g.add_argument("--enterprises-per-secondary", type=int, required=True, metavar="M",
                   help="enterprise prefixes under each secondary")
    g.add_argument("--own-nodes", type=int, metavar="K",
                   help="of those, how many run a node of their own (default: all; the rest are hosted)")
    g.add_argument("--recursive-every", type=int, default=25, metavar="S",
                   help="one recursive node per S secondaries (default 25, at least one)")
    g.add_argument("--secondary-workers", type=int, default=1, metavar="W",
                   help="workers = W for every secondary node (processes sharing its ports; default 1)")
    g.add_argument("--name", default="", help="topology name (default generated-<running nodes>)")
    g.add_argument("--out", type=Path, help="file to write (default: standard output)")
    g.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..core.topogen import GenError, GenSpec, generate
    from ..core.topology import TopologyError, parse_topology

    spec = GenSpec(args.secondary, args.enterprises_per_secondary, own_nodes=args.own_nodes,
                   recursive_every=args.recursive_every, secondary_workers=args.secondary_workers, name=args.name)
    try:
        text = generate(spec)
        topo = parse_topology(text, str(args.out or "<generated>"))
    except (GenError, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}: {len(topo.running_nodes())} running nodes ({spec.secondaries} secondary, "
              f"{spec.secondaries * spec.own} enterprise nodes, {spec.recursive} recursive, 2 top-level), "
              f"{len(topo.nodes_by_role('enterprise'))} enterprise prefixes")
    return 0
