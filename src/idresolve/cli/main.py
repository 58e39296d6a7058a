"""``idresolve``: entry point and subcommand table."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..client.rest import ClientError
from . import (
    bench_cmd,
    cluster_cmd,
    compose_cmd,
    dashboard_cmd,
    fault_cmd,
    keys_cmd,
    node_cmd,
    records_cmd,
    sim_cmd,
    store_cmd,
    template_cmd,
    topology_cmd,
)
from .common import EXIT_UNREACHABLE, EXIT_USAGE, CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idresolve",
        description="Simulate the industrial Internet identifier resolution system: run nodes and clusters, "
        "register and resolve identifiers, load-test them.",
    )
    parser.add_argument("--version", action="version", version=f"idresolve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    node_cmd.add_parser(sub)
    records_cmd.add_parsers(sub)
    template_cmd.add_parsers(sub)
    cluster_cmd.add_parsers(sub)
    compose_cmd.add_parsers(sub)
    keys_cmd.add_parsers(sub)
    fault_cmd.add_parsers(sub)
    dashboard_cmd.add_parser(sub)
    bench_cmd.add_parser(sub)
    sim_cmd.add_parser(sub)
    store_cmd.add_parsers(sub)
    topology_cmd.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `idresolve ... | head`: the reader left; that is not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    sys.exit(main())
