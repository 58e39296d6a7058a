"""``idresolve fault ...``: inject faults into a running cluster, remove them, switch its latency model.

Every subcommand sends one request to every worker's control channel (``cluster.faults.Controller``, the
API the dashboard uses too) and prints the faults in force afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..cluster.credentials import CLUSTER_SECRET_FILE
from ..cluster.faults import Controller, Fault, FaultError, new_fault
from ..cluster.supervisor import ClusterError, load_cluster
from .common import EXIT_HANDLE_ERROR, EXIT_OK, CliError


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("fault", help="inject faults into the running cluster: kill, partition, slow, link, heal",
                       description="Inject faults into the emulated cluster in --data-dir (never into the real "
                       "network): they act on the links between its nodes and on the node hosts. Each fault can "
                       "undo itself after --duration seconds; `heal` undoes them all.")
    fs = p.add_subparsers(dest="fault_command", metavar="FAULT", required=True)

    def common(q: argparse.ArgumentParser, *, duration: bool = True) -> None:
        q.add_argument("--data-dir", help="the cluster's data directory (default ./data)")
        q.add_argument("--json", action="store_true", help="print the state as JSON")
        if duration:
            q.add_argument("--duration", type=float, metavar="SECONDS",
                           help="undo the fault by itself after this many seconds (default: until healed)")

    q = fs.add_parser("kill", help="stop a node as a crash would (until `restart`, `heal` or --duration)")
    q.add_argument("node")
    common(q)
    q = fs.add_parser("restart", help="start a killed node again")
    q.add_argument("node")
    common(q, duration=False)
    q = fs.add_parser("partition", help="drop every message between NODES and the others (or --from NODES)")
    q.add_argument("nodes", nargs="+")
    q.add_argument("--from", dest="others", nargs="+", default=[], metavar="NODE",
                   help="the other side (default: every node not in NODES)")
    common(q)
    q = fs.add_parser("slow", help="make every link to and from NODE take K times as long")
    q.add_argument("node")
    q.add_argument("--factor", type=float, required=True, metavar="K")
    common(q)
    q = fs.add_parser("link", help="add delay and loss to the link between two nodes (both ways)")
    q.add_argument("a")
    q.add_argument("b")
    q.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay added (ms)")
    q.add_argument("--loss", type=float, default=0.0, help="probability that a message is lost (0-1)")
    common(q)
    q = fs.add_parser("heal", help="undo every fault (killed nodes start again)")
    common(q, duration=False)
    q = fs.add_parser("list", help="the faults in force")
    common(q, duration=False)
    q = fs.add_parser("latency", help="switch the latency model: a scenario of the topology, or off")
    q.add_argument("scenario", help="a scenario name, 'on' (the default scenario) or 'off'")
    common(q, duration=False)
    p.set_defaults(func=run)


def _data_dir(args: argparse.Namespace) -> Path:
    from .cluster_cmd import data_dir_of

    return data_dir_of(args)


def controller(data_dir: Path) -> tuple[Controller, list[str]]:
    """The control client of the cluster in ``data_dir`` and its node names."""
    try:
        cluster = load_cluster(data_dir)
        master = (data_dir / CLUSTER_SECRET_FILE).read_text(encoding="utf-8").strip()
        return Controller.for_data_dir(data_dir, master), [str(n["name"]) for n in cluster["nodes"]]  # type: ignore[attr-defined]
    except (ClusterError, FaultError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read the cluster secret in {data_dir}: {exc.strerror or exc}") from None


def describe_fault(f: dict[str, Any], now: float) -> str:
    fault = Fault(f["id"], f["kind"], tuple(f["nodes"]), tuple(f.get("others", ())), f.get("factor", 1.0),
                  f.get("delayMs", 0.0), f.get("loss", 0.0), f.get("until"))
    left = "" if fault.until is None else f" ({max(0.0, fault.until - now):.0f} s left)"
    return f"{fault.id}  {fault.describe()}{left}"


def state_lines(state: dict[str, Any]) -> list[str]:
    now = time.time()
    lines = [f"faults in force: {len(state['faults']) or 'none'}"]
    lines += [f"  {describe_fault(f, now)}" for f in state["faults"]]
    if state.get("down"):
        lines.append(f"nodes down: {', '.join(state['down'])}")
    for node, why in sorted((state.get("errors") or {}).items()):
        lines.append(f"  {node} could not start again: {why} (`idresolve fault restart {node}` tries again)")
    latency = state.get("latency")
    if latency is not None:
        lines.append(f"latency: {latency}" + (f" ({state['scenario']})" if latency == "on" else ""))
    return lines


def run(args: argparse.Namespace) -> int:
    ctl, known = controller(_data_dir(args))
    cmd = args.fault_command
    now = time.time()
    duration = getattr(args, "duration", None)
    try:
        if cmd == "kill":
            state = ctl.add(new_fault("kill", [args.node], duration_s=duration, now=now, known=known))
        elif cmd == "restart":
            if args.node not in known:
                raise FaultError(f"no node named {args.node!r} in this cluster")
            state = ctl.remove(kind="kill", node=args.node)
        elif cmd == "partition":
            state = ctl.add(new_fault("partition", args.nodes, others=args.others, duration_s=duration, now=now,
                                      known=known))
        elif cmd == "slow":
            state = ctl.add(new_fault("slow", [args.node], factor=args.factor, duration_s=duration, now=now, known=known))
        elif cmd == "link":
            state = ctl.add(new_fault("link", [args.a, args.b], delay_ms=args.delay_ms, loss=args.loss,
                                      duration_s=duration, now=now, known=known))
        elif cmd == "heal":
            state = ctl.heal()
        elif cmd == "latency":
            mode = "off" if args.scenario == "off" else "on"
            state = ctl.latency(mode, None if args.scenario in ("on", "off") else args.scenario)
        else:
            state = ctl.state()
    except FaultError as exc:
        raise CliError(str(exc), EXIT_HANDLE_ERROR) from None
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print("\n".join(state_lines(state)))
    return EXIT_OK


def status_lines(data_dir: Path) -> tuple[list[str], dict[str, Any] | None]:
    """What ``idresolve status`` adds: the faults in force (nothing when the cluster has no control channel)."""
    try:
        ctl, _ = controller(data_dir)
        state = ctl.state()
    except (CliError, FaultError):
        return [], None
    return state_lines(state), state
