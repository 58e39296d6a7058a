"""``register | resolve | delete --protocol handle``: the same commands over the native Handle protocol.

Where requests go: ``--server HOST:PORT`` (a node's native listener), else the cluster in ``--data-dir``:
reads to a recursive node's native port (it resolves with recursion), writes to the native port of the
node that holds the prefix. ``resolve --trace`` walks the hierarchy itself, as a Handle client does: it
asks a top-level node and follows each referral (303) to the site its HS_SITE names, printing every hop.
``--udp`` resolves over UDP. Writes authenticate by challenge and response: the identity's secret
(HS_SECKEY, as for REST) or, with ``--key FILE``, its private key (HS_PUBKEY); no secret crosses the wire.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..cluster.credentials import read_credentials
from ..cluster.plan import identity_of
from ..cluster.supervisor import ClusterError
from ..core.codes import OpCode, ResponseCode
from ..core.errors import HandleError
from ..core.messages import FLAG_AUTHORITATIVE, Request, Response
from ..core.native.client import ClientAuth, referral_endpoints, to_response
from ..core.values import HandleValue, values_from_json
from ..net.blocking import ProtocolClientError
from ..net.native_blocking import NativeBlockingClient, udp_call
from ..runtime.config import ConfigError, parse_hostport
from .cluster_client import CODE_WORDS, cluster_of, data_dir, holder_of, recursive_of
from .common import EXIT_HANDLE_ERROR, EXIT_OK, EXIT_UNREACHABLE, CliError, credentials, values_table

MAX_WALK = 16
NATIVE_PORT = 2641


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text.split("://", 1)[-1], NATIVE_PORT)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _cluster(args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        return cluster_of(args)
    except ClusterError as exc:
        raise CliError(str(exc)) from None


def _target(args: argparse.Namespace, prefix: str | None) -> tuple[str, int]:
    """The native listener to ask: --server, else the cluster's recursive node (reads) or holder (writes)."""
    if args.server:
        return _address(args.server)
    cluster = _cluster(args)
    if cluster is None:
        raise CliError("--protocol handle needs --server HOST:PORT (a node's --handle address) or a running "
                       "cluster in --data-dir")
    node = recursive_of(cluster) if prefix is None else holder_of(cluster, prefix)
    if not node.get("handle"):
        raise CliError(f"{node['name']} has no native address in cluster.json: restart the cluster (idresolve up)")
    return _address(str(node["handle"]))


def _auth(args: argparse.Namespace, prefix: str) -> ClientAuth:
    from ..runtime.serverkey import KeyFileError, read_key

    identity, secret = credentials(args, prefix)
    if getattr(args, "key", None) is not None:
        if not identity:
            raise CliError("--key needs --identity INDEX:HANDLE (the identity whose HS_PUBKEY holds its public key)")
        try:
            return ClientAuth.parse(identity, key=read_key(args.key))
        except (KeyFileError, ValueError) as exc:
            raise CliError(str(exc)) from None
    if not secret and args.server is None:
        cluster = _cluster(args)
        if cluster is not None:
            identity = identity or identity_of(prefix)
            secret = read_credentials(data_dir(args)).get(identity)
    if not secret or not identity:
        raise CliError("this command needs credentials: --secret-file FILE (or --secret), or --key FILE")
    try:
        return ClientAuth.parse(identity, secret=secret.encode())
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _print(args: argparse.Namespace, resp: Response, ok_text: str | None, extra: dict[str, Any] | None = None) -> int:
    ok = resp.code == ResponseCode.SUCCESS
    if args.json:
        out = {"responseCode": resp.code, "handle": resp.handle, "values": [v.to_json() for v in resp.values],
               **({"message": resp.message} if resp.message else {}), **(extra or {})}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif ok:
        if ok_text:
            print(ok_text)
    else:
        code = ResponseCode.of(resp.code)
        word = CODE_WORDS.get(resp.code) or (code.name.lower().replace("_", " ") if isinstance(code, ResponseCode) else "")
        print(f"error: response code {resp.code} ({word}) {resp.message}".rstrip(), file=sys.stderr)
    return EXIT_OK if ok else EXIT_HANDLE_ERROR


def _shown(resp: Response, handle: str) -> str:
    values = [v.to_json() for v in resp.values]
    return f"{resp.handle or handle}\n" + (values_table(values) if values else "  (no values)")


def _resolution(args: argparse.Namespace) -> Request:
    flags = FLAG_AUTHORITATIVE if args.no_cache else 0  # AT: past every cache
    return Request(0, OpCode.RESOLUTION, args.handle, flags, indexes=tuple(args.index or ()),
                   types=tuple(args.type or ()))


def resolve(args: argparse.Namespace) -> int:
    if args.trace:
        return _walk(args)
    host, port = _target(args, None)
    req = _resolution(args)
    try:
        if args.udp:
            resp = to_response(udp_call(host, port, req))
        else:
            with NativeBlockingClient(host, port) as c:
                resp = c.request(req)
    except ProtocolClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return _print(args, resp, _shown(resp, args.handle))


def _walk(args: argparse.Namespace) -> int:
    """Resolve by following referrals from a top-level node, one hop at a time."""
    if args.server:
        start = _address(args.server)
    else:
        cluster = _cluster(args)
        if cluster is None:
            raise CliError("--trace over the Handle protocol needs --server HOST:PORT (a top-level node's "
                           "--handle address) or a running cluster in --data-dir")
        tops = [n for n in cluster["nodes"] if n["role"] == "top" and not n.get("disasterRecovery")]
        if not tops or not tops[0].get("handle"):
            raise CliError("the cluster has no top-level node with a native address")
        start = _address(str(tops[0]["handle"]))
    req = _resolution(args)
    hops: list[dict[str, Any]] = []
    target, t0, seen = start, time.perf_counter(), set()
    resp = Response(0, OpCode.RESOLUTION, ResponseCode.ERROR, message="no hop")
    for _ in range(MAX_WALK):
        seen.add(target)
        t = time.perf_counter()
        try:
            if args.udp:
                resp = to_response(udp_call(*target, req))
            else:
                with NativeBlockingClient(*target) as c:
                    resp = c.request(req)
        except ProtocolClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        hops.append({"address": f"{target[0]}:{target[1]}", "responseCode": resp.code,
                     "ms": round((time.perf_counter() - t) * 1000, 2)})
        if resp.code != ResponseCode.PREFIX_REFERRAL:
            break
        targets = referral_endpoints(resp.values, "UDP" if args.udp else "TCP")
        hops[-1]["referral"] = resp.handle
        if not targets or targets[0] in seen:
            resp = Response(0, OpCode.RESOLUTION, ResponseCode.ERROR, message=f"referral for {resp.handle} leads "
                            "nowhere new")
            break
        target = targets[0]
    total_ms = (time.perf_counter() - t0) * 1000
    if not args.json:
        print(f";; {args.handle} over the Handle protocol ({'udp' if args.udp else 'tcp'}), walking from "
              f"{start[0]}:{start[1]}")
        for i, h in enumerate(hops, 1):
            word = CODE_WORDS.get(h["responseCode"], "")
            via = f" -> {h['referral']}" if h.get("referral") else ""
            print(f";; {i}  {h['address']:<21}  {h['responseCode']} {word}{via}  {h['ms']:.1f} ms")
        print(f";; {len(hops)} hop(s), {total_ms:.1f} ms")
    return _print(args, resp, _shown(resp, args.handle), {"trace": hops, "totalMs": round(total_ms, 2)})


def _holder_values(c: NativeBlockingClient, handle: str) -> set[int]:
    current = c.resolve(handle, authoritative=True)
    return {v.index for v in current.values} if current.code == ResponseCode.SUCCESS else set()


def register(args: argparse.Namespace, raw_values: list[dict[str, Any]], prefix: str) -> int:
    try:
        values: tuple[HandleValue, ...] = values_from_json(raw_values)
    except HandleError as exc:
        raise CliError(exc.message) from None
    host, port = _target(args, prefix)
    try:
        with NativeBlockingClient(host, port, auth=_auth(args, prefix)) as c:
            if args.index:
                wanted = [v for v in values if v.index in set(args.index)]
                present = _holder_values(c, args.handle)
                changed, added = [v for v in wanted if v.index in present], [v for v in wanted if v.index not in present]
                resp = Response(0, OpCode.MODIFY_VALUE, ResponseCode.SUCCESS, args.handle)
                if changed:
                    resp = c.modify_values(args.handle, tuple(changed))
                if added and resp.code == ResponseCode.SUCCESS:
                    resp = c.add_values(args.handle, tuple(added))
                text = f"updated {args.handle} (modified {[v.index for v in changed]}, added {[v.index for v in added]})"
            else:
                resp = c.create(args.handle, values, overwrite=not args.no_overwrite)
                text = f"created {args.handle}"
    except ProtocolClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return _print(args, resp, text)


def delete(args: argparse.Namespace, prefix: str) -> int:
    host, port = _target(args, prefix)
    try:
        with NativeBlockingClient(host, port, auth=_auth(args, prefix)) as c:
            resp = c.remove_values(args.handle, tuple(args.index)) if args.index else c.delete(args.handle)
    except ProtocolClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    what = f"values {args.index} of {args.handle}" if args.index else args.handle
    return _print(args, resp, f"deleted {what}")
