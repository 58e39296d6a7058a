"""``idresolve keygen`` (a key pair for an HS_PUBKEY identity) and ``idresolve handle-config`` (the files
that point Handle.Net's own client at a running cluster).

Where Handle.Net's client (9.x) looks for its root: ``bootstrap_handles`` in its configuration directory, a
JSON object ``{"lastUpdate": ms, "handles": {"0.NA/0.NA": record, "0.0/0.0": record}}`` whose records are
in the REST API's JSON form; without that file it takes the real global service's, bundled in its jar.
Older clients (and 9.x when it saves) use ``root_info``, the same HS_SITE values in binary (u32 count,
then values). Both are written, from the top-level nodes' own sites; ``resolver_site`` (binary HS_SITE)
sends every resolution to a recursive node.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from ..core.codes import OpCode
from ..core.messages import Request
from ..core.values import HS_SITE, HandleValue
from .common import EXIT_OK, EXIT_UNREACHABLE, CliError

RESOLVER_SITE, ROOT_INFO, CONFIG_DCT = "resolver_site", "root_info", "config.dct"
BOOTSTRAP_HANDLES = "bootstrap_handles"
ROOT_TTL_S = 86400


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keygen", help="make a key pair for a public-key (HS_PUBKEY) identity",
                       description="Write a new RSA 2048 private key (PEM, mode 0600) to FILE and print its public "
                       "half as an HS_PUBKEY value. Register it with `idresolve register HANDLE --pubkey FILE`, "
                       "then authenticate with `--identity 300:HANDLE --key FILE` (REST or --protocol handle).")
    p.add_argument("file", type=Path, help="where the private key goes (must not exist)")
    p.add_argument("--json", action="store_true", help="print the HS_PUBKEY value as JSON")
    p.set_defaults(func=keygen)

    p = sub.add_parser("handle-config", help="write a Handle.Net client configuration for the running cluster",
                       description="Write the files Handle.Net's client reads from its configuration directory "
                       "(-Dnet.handle.configDir=DIR, or ~/.handle): resolver_site (the recursive node's site, as it "
                       "answers get-site-info: every resolution goes there and it recurses), bootstrap_handles "
                       "(Handle.Net 9) and root_info (older clients): the top-level nodes' sites, the root a client "
                       "that walks the hierarchy starts from; and "
                       "config.dct (no automatic update of the root information from the real global service).")
    p.add_argument("--out", type=Path, required=True, help="the configuration directory to write")
    p.add_argument("--data-dir", help="the cluster's data directory (default ./data)")
    p.add_argument("--node", help="the recursive node to use as resolver site (default: the first)")
    p.add_argument("--walk", action="store_true", help="leave out resolver_site: the client walks from the top")
    p.set_defaults(func=handle_config)


def keygen(args: argparse.Namespace) -> int:
    from ..runtime.serverkey import generate_key, public_key_bytes, write_key

    key = generate_key()
    try:
        write_key(args.file, key)
    except FileExistsError:
        raise CliError(f"{args.file} exists: choose another file (keys are never overwritten)") from None
    except OSError as exc:
        raise CliError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    value = {"index": 300, "type": "HS_PUBKEY",
             "data": {"format": "base64", "value": base64.b64encode(public_key_bytes(key)).decode()}}
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        print(f"private key: {args.file} (mode 0600; keep it)")
        print(f"HS_PUBKEY value: {json.dumps(value)}")
    return EXIT_OK


def bootstrap_handles(root: list[HandleValue]) -> dict[str, object]:
    """Handle.Net 9's ``bootstrap_handles``: the root of resolution (the top-level nodes' sites) and an empty
    trust root (no root key: answers are not checked against one)."""
    import time

    values = [{"index": v.index, "type": v.type, "ttl": ROOT_TTL_S,
               "data": {"format": "base64", "value": base64.b64encode(v.data).decode("ascii")}} for v in root]
    return {"lastUpdate": int(time.time() * 1000),
            "handles": {"0.NA/0.NA": {"handle": "0.NA/0.NA", "values": values},
                        "0.0/0.0": {"handle": "0.0/0.0", "values": []}}}


def _site_of(address: str) -> bytes:
    """The binary site a node's native listener answers get-site-info with."""
    from ..core.native.client import to_response
    from ..net.native_blocking import NativeBlockingClient
    from .native_cmd import _address

    host, port = _address(address)
    with NativeBlockingClient(host, port, timeout_s=10.0) as c:
        resp = to_response(c.call(Request(0, OpCode.GET_SITEINFO, "/")))
    site = next((v.data for v in resp.values if v.type == HS_SITE), None)
    if site is None:
        raise CliError(f"{address} answered get-site-info with code {resp.code}")
    return site


def handle_config(args: argparse.Namespace) -> int:
    from ..core.native.valuecodec import write_values
    from ..net.blocking import ProtocolClientError
    from .cluster_client import cluster_of, recursive_of

    cluster = cluster_of(args)
    if cluster is None:
        raise CliError("handle-config needs a running cluster (no cluster.json in --data-dir)")
    nodes = cluster["nodes"]
    tops = [n for n in nodes if n["role"] == "top"]
    tops.sort(key=lambda n: bool(n.get("disasterRecovery")))
    rec = next((n for n in nodes if n["name"] == args.node), None) if args.node else recursive_of(cluster)
    if rec is None or rec["role"] != "recursive":
        raise CliError(f"{args.node} is not a recursive node of the cluster")
    try:
        root = [HandleValue(i, HS_SITE, _site_of(str(t["handle"]))) for i, t in enumerate(tops, start=1)]
        resolver = None if args.walk else _site_of(str(rec["handle"]))
    except (ProtocolClientError, KeyError) as exc:
        print(f"error: cannot read the nodes' sites: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    args.out.mkdir(parents=True, exist_ok=True)
    out = bytearray()
    write_values(out, root)
    (args.out / ROOT_INFO).write_bytes(bytes(out))
    (args.out / BOOTSTRAP_HANDLES).write_text(json.dumps(bootstrap_handles(root), indent=2) + "\n",
                                              encoding="utf-8")
    written = [BOOTSTRAP_HANDLES, ROOT_INFO]
    if resolver is not None:
        (args.out / RESOLVER_SITE).write_bytes(resolver)
        written.append(RESOLVER_SITE)
    elif (args.out / RESOLVER_SITE).exists():
        os.remove(args.out / RESOLVER_SITE)
    (args.out / CONFIG_DCT).write_text('{\n  "auto_update_root_info" = "no"\n}\n', encoding="utf-8")
    written.append(CONFIG_DCT)
    via = "walking from the top-level nodes" if resolver is None else f"through {rec['name']} ({rec['handle']})"
    print(f"wrote {', '.join(written)} to {args.out}: Handle.Net clients resolve {via}")
    print(f"  e.g. JAVA_TOOL_OPTIONS=-Dnet.handle.configDir={args.out} hdl-qresolver 88.118.8/JXDY2106023")
    return EXIT_OK
