"""``idresolve register | resolve | delete | list``: talk to a node's REST API, or with ``--protocol handle``
its native Handle protocol listener (``cli.native_cmd``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..client.rest import Answer
from ..core.templates import TEMPLATE_REF_TYPE
from ..core.values import TEMPLATE_REF_INDEX
from .cluster_client import apply_cluster_defaults, resolve_with_trace
from .common import (
    EXIT_HANDLE_ERROR,
    EXIT_OK,
    CliError,
    add_server_args,
    client_for,
    finish,
    values_table,
)

BATCH_CHUNK = 2_000  # the batch API's maximum: one transaction per 2,000 identifiers
BATCH_IN_FLIGHT = 4


def _prefix(handle: str) -> str:
    """The prefix whose node holds ``handle`` (a prefix record ``0.NA/P`` lives with ``P``'s node)."""
    if handle.lower().startswith("0.na/"):
        return handle[5:]
    return handle.split("/", 1)[0]


def _protocol_args(p: argparse.ArgumentParser, *, udp: bool = False) -> None:
    p.add_argument("--protocol", choices=["rest", "handle"], default="rest",
                   help="rest (default) or handle: the native Handle protocol (RFC 3652); then --server is a "
                   "node's native HOST:PORT")
    if udp:
        p.add_argument("--udp", action="store_true", help="with --protocol handle: over UDP (default TCP)")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("register", help="create or change an identifier (or many, with --batch)",
                       description="Create an identifier, replace its values, or (with --index) add or modify "
                       "single values. With --batch, register many identifiers from a JSON file.")
    p.add_argument("handle", nargs="?", help="identifier prefix/suffix, e.g. 88.100/JXDY2106023")
    p.add_argument("--url", help="shortcut for --value URL=<url>")
    p.add_argument("--value", action="append", default=[], metavar="[INDEX:]TYPE=TEXT",
                   help="a string value, e.g. 2:EMAIL=ops@example.com (repeat; index defaults to 1, 2, ...)")
    p.add_argument("--values-json", type=Path, metavar="FILE",
                   help="a JSON file with the values list in the REST API's form ('-' for stdin)")
    p.add_argument("--template", metavar="TEMPLATE[@VERSION]",
                   help="the metadata template the identifier follows (e.g. 88.118/TPL-tyre-batch; default: its "
                   "latest version): written at index 1001; the node checks the record against it")
    p.add_argument("--field", action="append", default=[], metavar="NAME=TEXT",
                   help="a field of --template by name, e.g. batchNumber=2106023 (repeat)")
    p.add_argument("--template-server", metavar="URL",
                   help="where to read --template (default: the cluster's recursive node, else --server)")
    p.add_argument("--index", type=int, action="append", help="only add or modify the values at this index")
    p.add_argument("--no-overwrite", action="store_true", help="fail if the identifier (or value) exists")
    p.add_argument("--batch", type=Path, metavar="FILE",
                   help="JSON list (or JSON lines) of {\"handle\":..., \"values\":[...]}; sent in chunks of "
                   f"{BATCH_CHUNK}, each all or nothing, several at once (--in-flight), with a progress bar")
    p.add_argument("--in-flight", type=int, default=BATCH_IN_FLIGHT, metavar="N",
                   help=f"with --batch: chunks sent at once, each on its own connection (1-64; default "
                   f"{BATCH_IN_FLIGHT})")
    p.add_argument("--pubkey", action="append", default=[], metavar="[INDEX=]FILE",
                   help="an HS_PUBKEY value holding the public half of a key file made by `idresolve keygen` "
                   "(index 300 unless given): the record becomes an identity INDEX:HANDLE")
    p.add_argument("--admin", action="append", default=[], metavar="[INDEX=]IDENTITY",
                   help="an HS_ADMIN value (index 100 unless given) granting IDENTITY (index:handle) the usual "
                        "administrator rights")
    add_server_args(p, write=True)
    _protocol_args(p)
    p.set_defaults(func=register)

    p = sub.add_parser("resolve", help="resolve an identifier", description="Resolve an identifier.")
    p.add_argument("handle")
    p.add_argument("--type", action="append", help="only values of this type (repeat)")
    p.add_argument("--index", type=int, action="append", help="only the value at this index (repeat)")
    p.add_argument("--trace", action="store_true", help="show every hop of the resolution through the cluster "
                   "(node, answer, latency), like dig +trace")
    p.add_argument("--no-cache", action="store_true", help="bypass the recursive node's cache (with --trace, or --protocol handle)")
    add_server_args(p, write=False)
    _protocol_args(p, udp=True)
    p.set_defaults(func=resolve)

    p = sub.add_parser("delete", help="delete an identifier or some of its values",
                       description="Delete an identifier, or with --index only those values.")
    p.add_argument("handle")
    p.add_argument("--index", type=int, action="append", help="delete only the value at this index (repeat)")
    add_server_args(p, write=True)
    _protocol_args(p)
    p.set_defaults(func=delete)

    p = sub.add_parser("list", help="list the identifiers under a prefix",
                       description="List the identifiers under a prefix (needs the prefix admin's credentials).")
    p.add_argument("prefix", help="e.g. 88.100 or 0.NA/88.100")
    p.add_argument("--page", type=int, help="page number, from 0")
    p.add_argument("--page-size", type=int, help="identifiers per page (0 counts only)")
    add_server_args(p, write=True)
    p.set_defaults(func=list_cmd)


def _values(args: argparse.Namespace) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = []
    if args.values_json:
        try:
            text = sys.stdin.read() if str(args.values_json) == "-" else args.values_json.read_text(encoding="utf-8")
            loaded = json.loads(text)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read values from {args.values_json}: {exc}") from None
        values = loaded.get("values", []) if isinstance(loaded, dict) else loaded
        if not isinstance(values, list):
            raise CliError("--values-json must hold a list of values or {\"values\": [...]}")
    specs = ([f"URL={args.url}"] if args.url else []) + args.value
    used = {v.get("index") for v in values if isinstance(v, dict)}
    values += _key_and_admin_values(args, used)
    next_index = 1
    for spec in specs:
        head, eq, text = spec.partition("=")
        if not eq or not head:
            raise CliError(f"bad --value {spec!r}; expected [INDEX:]TYPE=TEXT")
        idx_text, colon, vtype = head.partition(":")
        if colon and idx_text.isdigit():
            index = int(idx_text)
        else:
            vtype = head
            while next_index in used:
                next_index += 1
            index = next_index
        used.add(index)
        values.append({"index": index, "type": vtype, "data": {"format": "string", "value": text}})
    return values


def _indexed(spec: str, default: int | None, used: set[Any]) -> tuple[int, str]:
    head, eq, rest = spec.partition("=")
    if eq and head.isdigit():
        index = int(head)
    else:
        index, rest = default if default is not None else max([0, *[u for u in used if isinstance(u, int)]]) + 1, spec
        while index in used:
            index += 1
    used.add(index)
    return index, rest


def _key_and_admin_values(args: argparse.Namespace, used: set[Any]) -> list[dict[str, Any]]:
    import base64

    from ..core.admin import DEFAULT_PERMS_TEXT
    from ..runtime.serverkey import KeyFileError, public_key_bytes, read_key

    out: list[dict[str, Any]] = []
    for spec in getattr(args, "pubkey", []):
        index, path = _indexed(spec, 300, used)
        try:
            data = public_key_bytes(read_key(Path(path)))
        except KeyFileError as exc:
            raise CliError(str(exc)) from None
        out.append({"index": index, "type": "HS_PUBKEY", "data": {"format": "base64",
                                                                   "value": base64.b64encode(data).decode()}})
    for spec in getattr(args, "admin", []):
        index, identity = _indexed(spec, 100, used)  # where Handle tools put HS_ADMIN
        admin_index, colon, admin_handle = identity.partition(":")
        if not colon or not admin_index.isdigit() or not admin_handle:
            raise CliError(f"--admin takes [INDEX=]IDENTITY with IDENTITY index:handle, not {spec!r}")
        out.append({"index": index, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": admin_handle, "index": int(admin_index), "permissions": DEFAULT_PERMS_TEXT}}})
    return out


def _template_values(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Value 1001 naming ``--template`` and one value per ``--field``, at the field's index and with its
    name as type (the template is read to find them; the node checks the values)."""
    if not args.template:
        if args.field:
            raise CliError("--field needs --template")
        return []
    from .template_cmd import fetch_template

    handle, _versions, template = fetch_template(args, args.template, server=args.template_server)
    out: list[dict[str, Any]] = [{"index": TEMPLATE_REF_INDEX, "type": TEMPLATE_REF_TYPE,
                                  "data": f"{handle}@{template.version}"}]
    for spec in args.field:
        name, eq, text = spec.partition("=")
        field = template.by_name.get(name)
        if not eq or field is None:
            known = ", ".join(f.name for f in template.fields)
            raise CliError(f"bad --field {spec!r}: {template.title} has the fields {known}")
        out.append({"index": field.index, "type": field.name, "data": text})
    return out


def register(args: argparse.Namespace) -> int:
    if args.batch:
        return _register_batch(args)
    if not args.handle:
        raise CliError("register needs a HANDLE (or --batch FILE)")
    values = _values(args) + _template_values(args)
    if not values:
        raise CliError("nothing to register: give --url, --value, --pubkey, --admin, --values-json or --template")
    if args.protocol == "handle":
        from . import native_cmd

        return native_cmd.register(args, values, _prefix(args.handle))
    apply_cluster_defaults(args, _prefix(args.handle), write=True)
    with client_for(args, _prefix(args.handle), need_auth=True) as client:
        answer = client.put(args.handle, values, overwrite=not args.no_overwrite, indexes=args.index)
    verb = "created" if answer.status == 201 else "updated"
    return finish(args, answer, f"{verb} {answer.body.get('handle', args.handle)}")


def _load_batch(path: Path) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        stripped = text.lstrip()
        items = json.loads(text) if stripped.startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                   if line.strip()]
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read batch file {path}: {exc}") from None
    if not all(isinstance(i, dict) and isinstance(i.get("handle"), str) for i in items):
        raise CliError("every batch item needs a \"handle\" and \"values\"")
    return items


def _register_batch(args: argparse.Namespace) -> int:
    import threading  # here, not at the top: every command's start-up (and --help) would pay for them
    from concurrent.futures import ThreadPoolExecutor

    from ..client.progress import Progress

    items = _load_batch(args.batch)
    if not items:
        raise CliError("the batch file holds no identifiers")
    if not 1 <= args.in_flight <= 64:
        raise CliError("--in-flight must be between 1 and 64")
    prefix = _prefix(items[0]["handle"])
    apply_cluster_defaults(args, prefix, write=True)
    chunks = [items[start : start + BATCH_CHUNK] for start in range(0, len(items), BATCH_CHUNK)]
    progress = Progress(len(items), show=not args.json)
    local = threading.local()
    clients: list[Any] = []
    lock = threading.Lock()

    def send(chunk: list[dict[str, Any]]) -> Answer:
        client = getattr(local, "client", None)
        if client is None:  # one connection per thread: the chunks in flight go out side by side
            client = local.client = client_for(args, prefix, need_auth=True)
            with lock:
                clients.append(client)
        answer = client.batch(chunk, overwrite=not args.no_overwrite)
        progress.add(len(chunk))
        return answer

    done, failed_answers = 0, []
    try:
        with ThreadPoolExecutor(max_workers=min(args.in_flight, len(chunks)), thread_name_prefix="batch") as pool:
            for chunk, answer in zip(chunks, pool.map(send, chunks), strict=True):
                if answer.ok:
                    done += len(chunk)
                    continue
                failed_answers.append(answer)
                for r in answer.body.get("results", []):
                    if r.get("responseCode") != 1:
                        print(f"  {r.get('handle')}: code {r.get('responseCode')} {r.get('message', '')}",
                              file=sys.stderr)
    finally:
        for client in clients:
            client.close()
        progress.finish()
    if args.json:
        print(json.dumps({"registered": done, "total": len(items), "failedChunks": len(failed_answers)}))
    if failed_answers:
        print(f"error: {len(failed_answers)} chunk(s) refused; {done} of {len(items)} registered",
              file=sys.stderr)
        return EXIT_HANDLE_ERROR
    return EXIT_OK


def resolve(args: argparse.Namespace) -> int:
    if args.protocol == "handle":
        from . import native_cmd

        return native_cmd.resolve(args)
    if args.trace:
        return resolve_with_trace(args)
    apply_cluster_defaults(args, None, write=False)
    with client_for(args, None) as client:
        answer = client.resolve(args.handle, types=args.type, indexes=args.index)
    human = None
    if answer.ok:
        values = answer.body.get("values", [])
        human = f"{answer.body.get('handle', args.handle)}\n" + (values_table(values) if values else "  (no values)")
    return finish(args, answer, human)


def delete(args: argparse.Namespace) -> int:
    if args.protocol == "handle":
        from . import native_cmd

        return native_cmd.delete(args, _prefix(args.handle))
    apply_cluster_defaults(args, _prefix(args.handle), write=True)
    with client_for(args, _prefix(args.handle), need_auth=True) as client:
        answer = client.delete(args.handle, indexes=args.index)
    what = f"values {args.index} of {args.handle}" if args.index else args.handle
    return finish(args, answer, f"deleted {what}")


def list_cmd(args: argparse.Namespace) -> int:
    prefix = args.prefix[5:] if args.prefix.lower().startswith("0.na/") else args.prefix
    apply_cluster_defaults(args, prefix, write=True)
    with client_for(args, prefix, need_auth=True) as client:
        answer: Answer = client.list(args.prefix, page=args.page, page_size=args.page_size)
    human = None
    if answer.ok:
        handles = answer.body.get("handles", [])
        human = "\n".join(handles + [f"({answer.body.get('totalCount')} in all under {prefix})"])
    return finish(args, answer, human)
