"""``idresolve``: entry point and subcommand table."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..client.rest import ClientError
from .common import EXIT_UNREACHABLE, EXIT_USAGE, CliError

#: The modules of ``idresolve``'s commands, in the order ``idresolve --help`` lists them, and the commands
#: each defines. ``idresolve COMMAND`` imports only the module of COMMAND: what the others import (aiohttp
#: for the dashboard, the cluster supervisor, the simulator) would otherwise be paid by every command.
#: ``tests/test_cli.py`` checks this table against the modules.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "node_cmd": ("node",),
    "records_cmd": ("register", "resolve", "delete", "list"),
    "template_cmd": ("template",),
    "cluster_cmd": ("up", "status", "seed"),
    "compose_cmd": ("compose", "bootstrap", "k8s"),
    "keys_cmd": ("keygen", "handle-config"),
    "fault_cmd": ("fault",),
    "dashboard_cmd": ("dashboard",),
    "bench_cmd": ("bench",),
    "sim_cmd": ("simulate",),
    "store_cmd": ("store",),
    "topology_cmd": ("topology",),
}


def add_commands(sub: argparse._SubParsersAction, module: str) -> None:  # type: ignore[type-arg]
    """Add the commands of ``module`` (a key of ``COMMAND_MODULES``) to ``sub``."""
    mod = importlib.import_module(f"{__package__}.{module}")
    (getattr(mod, "add_parsers", None) or mod.add_parser)(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` (a command's name) of that command's module only."""
    parser = argparse.ArgumentParser(
        prog="idresolve",
        description="Simulate the industrial Internet identifier resolution system: run nodes and clusters, "
        "register and resolve identifiers, load-test them.",
    )
    parser.add_argument("--version", action="version", version=f"idresolve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = [m for m, names in COMMAND_MODULES.items() if command in names]
    for module in only or COMMAND_MODULES:
        add_commands(sub, module)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # the command is the first word (the top level's own options, --help and --version, take no value)
    parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
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
