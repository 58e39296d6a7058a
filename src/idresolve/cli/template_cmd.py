"""``idresolve template create | show | list | diff | uses``: metadata templates through the REST API.

A template is an identifier like any other (docs/templates.md), so most of this is the Handle API plus
the pure core on the client: ``create`` parses the definition file here (every problem named before
anything is sent), reads the template record at the node that holds its prefix and writes the record,
or adds the next version (``PUT ...?index=110v``, never overwriting); ``show`` and ``diff`` resolve the
record (through the cluster's recursive node, or ``--server``) and parse the versions here. ``list`` and
``uses`` call the REST additions ``GET /api/templates`` and ``GET /api/templates/uses``.

Without ``--server`` a running cluster in ``--data-dir`` is used: reads go to a recursive node, writes and
``uses`` to the node holding the prefix, with that prefix admin's credentials.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..client.rest import Answer, RestClient
from ..cluster.supervisor import ClusterError
from ..core.errors import HandleError
from ..core.templates import (
    Template,
    TemplateRef,
    diff_templates,
    new_version_value,
    parse_definition_text,
    stored_versions,
    template_from_values,
    template_handle,
    version_index,
    version_value,
)
from ..core.templates.fields import Field
from ..core.values import HandleValue, values_from_json
from .cluster_client import apply_cluster_defaults, cluster_of, holder_of, recursive_of
from .common import EXIT_HANDLE_ERROR, EXIT_OK, CliError, add_server_args, client_for, describe, finish

USES_SCAN = 5_000  # identifiers the node looks at per call (its maximum)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("template", help="metadata templates: create, show, list, diff, uses",
                       description="Industry metadata templates (元数据模板): typed fields that identifiers "
                       "carry at indexes 2000 and up, published as identifiers of their own "
                       "(<prefix>/TPL-<name>, one value per version). docs/templates.md has the format.")
    tsub = p.add_subparsers(dest="template_command", metavar="ACTION")
    p.set_defaults(func=lambda _args: _usage(p))

    c = tsub.add_parser("create", help="publish a template, or its next version, from a JSON definition",
                        description="Publish the definition in FILE as <prefix>/TPL-<name>: create the record, "
                        "or add the file's version as the next one (published versions never change).")
    c.add_argument("file", type=Path, help="the JSON definition (config/templates/*.json; '-' for stdin)")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--prefix", help="publish under this prefix, as <prefix>/TPL-<name> (e.g. 88.118)")
    where.add_argument("--handle", help="publish as this identifier instead")
    add_server_args(c, write=True)
    c.set_defaults(func=create)

    s = tsub.add_parser("show", help="a template's fields", description="Resolve a template and show one version.")
    s.add_argument("template", help="the template identifier, with @VERSION or without (the latest)")
    s.add_argument("--version", type=int, help="the version to show (default: the one named, else the latest)")
    add_server_args(s, write=False)
    s.set_defaults(func=show)

    ls = tsub.add_parser("list", help="the templates published under a prefix",
                         description="List the templates a node publishes under PREFIX (GET /api/templates). "
                         "Without PREFIX, in a cluster: those of every secondary node.")
    ls.add_argument("prefix", nargs="?", help="e.g. 88.118")
    add_server_args(ls, write=False)
    ls.set_defaults(func=list_cmd)

    d = tsub.add_parser("diff", help="what changed between two versions, and what is incompatible",
                        description="Compare two versions of a template (default: the latest and the one before).")
    d.add_argument("template", help="the template identifier")
    d.add_argument("old", nargs="?", type=int, help="the older version")
    d.add_argument("new", nargs="?", type=int, help="the newer version (default: the latest)")
    add_server_args(d, write=False)
    d.set_defaults(func=diff)

    u = tsub.add_parser("uses", help="the identifiers of a prefix that name a template",
                        description="List the identifiers under PREFIX whose value 1001 names TEMPLATE "
                        "(GET /api/templates/uses; needs the prefix admin's credentials, like list).")
    u.add_argument("template", help="the template identifier")
    u.add_argument("--prefix", required=True, help="the prefix whose identifiers are looked at")
    u.add_argument("--version", type=int, help="only those naming this version")
    add_server_args(u, write=True)
    u.set_defaults(func=uses)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


# -- reading templates ---------------------------------------------------------------------------------

def split_ref(text: str) -> tuple[str, int | None]:
    """``88.118/TPL-x@2`` -> (handle, 2); ``88.118/TPL-x`` -> (handle, None)."""
    if "@" in text:
        try:
            ref = TemplateRef.parse(text)
        except HandleError as exc:
            raise CliError(exc.message) from None
        return ref.handle, ref.version
    return text, None


def read_record(client: RestClient, handle: str) -> tuple[HandleValue, ...] | None:
    """The values of ``handle`` (None when it does not exist); ``CliError`` for any other answer. Read past
    a recursive node's cache (``?auth=true``), so that a version published a moment ago is there."""
    answer = client.request("GET", "/api/handles/" + quote(handle, safe="/:."), query=[("auth", "true")])
    if answer.status == 404:
        return None
    if not answer.ok:
        raise CliError(f"cannot read {handle} at {client.base_url}: {describe(answer)}", EXIT_HANDLE_ERROR)
    try:
        return values_from_json(answer.body.get("values", []))
    except HandleError as exc:
        raise CliError(f"{handle} at {client.base_url}: {exc.message}", EXIT_HANDLE_ERROR) from None


def _reader(args: argparse.Namespace, server: str | None = None) -> RestClient:
    """A client for reading templates: ``server``, else the cluster's recursive node, else ``--server``."""
    if server:
        return RestClient(server, verify_tls=not args.insecure)
    cluster = _cluster(args)
    if cluster is not None:  # args stay as given: a write that follows finds the holder the same way
        return RestClient(str(recursive_of(cluster)["http"]), verify_tls=not args.insecure)
    return client_for(args)


def _cluster(args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        return cluster_of(args)
    except ClusterError as exc:
        raise CliError(str(exc)) from None


def fetch_template(args: argparse.Namespace, text: str, *, server: str | None = None,
                   version: int | None = None) -> tuple[str, dict[int, HandleValue], Template]:
    """(handle, stored versions, the version asked for: ``@v`` in ``text``, ``version``, else the latest)."""
    handle, named = split_ref(text)
    with _reader(args, server) as client:
        values = read_record(client, handle)
    if values is None:
        raise CliError(f"template {handle} does not exist", EXIT_HANDLE_ERROR)
    try:
        return handle, stored_versions(values), template_from_values(values, version or named, handle=handle)
    except HandleError as exc:
        raise CliError(exc.message, EXIT_HANDLE_ERROR) from None


# -- create ------------------------------------------------------------------------------------------

def _definition(path: Path) -> Template:
    try:
        text = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_definition_text(text)
    except HandleError as exc:
        raise CliError(f"{path}: {exc.message}", EXIT_HANDLE_ERROR) from None


def create(args: argparse.Namespace) -> int:
    template = _definition(args.file)
    try:
        handle = args.handle or template_handle(args.prefix, template.name)
    except HandleError as exc:
        raise CliError(exc.message) from None
    prefix = handle.split("/", 1)[0]
    apply_cluster_defaults(args, prefix, write=True)
    with client_for(args, prefix, need_auth=True) as client:
        existing = read_record(client, handle)
        if existing is None:
            answer = client.put(handle, [version_value(template).to_json()], overwrite=False)
            return finish(args, answer, f"created {handle} with {template.title}")
        versions = stored_versions(existing)
        if versions.get(template.version) is not None and versions[template.version].data == template.to_bytes():
            return finish(args, Answer(200, {"responseCode": 1, "handle": handle, "unchanged": True}),
                          f"{handle} already holds {template.title}: unchanged")
        try:
            value = new_version_value(existing, template)
            previous = template_from_values(existing, template.version - 1, handle=handle)
        except HandleError as exc:
            raise CliError(f"{handle}: {exc.message}", EXIT_HANDLE_ERROR) from None
        answer = client.put(handle, [value.to_json()], overwrite=False, indexes=[version_index(template.version)])
    return finish(args, answer, f"added {template.title} to {handle}\n{diff_templates(previous, template).to_text().rstrip()}")


# -- show, list, diff ----------------------------------------------------------------------------------

def _rules(f: Field) -> str:
    parts = []
    if f.unit:
        parts.append(f"unit {f.unit}")
    if f.minimum is not None or f.maximum is not None:
        parts.append(f"{'' if f.minimum is None else f.minimum}..{'' if f.maximum is None else f.maximum}")
    if f.max_length is not None:
        parts.append(f"maxLength {f.max_length}")
    if f.pattern is not None:
        parts.append(f"pattern {f.pattern.text}")
    if f.values:
        shown = ", ".join(v.value for v in f.values[:8]) + (", ..." if len(f.values) > 8 else "")
        parts.append(f"one of {shown}")
    return "; ".join(parts)


def _width(text: str) -> int:
    """Terminal columns: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def template_text(handle: str, versions: dict[int, HandleValue], t: Template) -> str:
    rows = [("index", "name", "type", "req", "label", "rules")] + [
        (str(f.index), f.name, f.type.value, "yes" if f.required else "", f"{f.label.zh} / {f.label.en}", _rules(f))
        for f in t.fields
    ]
    widths = [max(_width(r[i]) for r in rows) for i in range(5)]
    lines = [f"{handle}@{t.version} (versions {', '.join(map(str, sorted(versions)))}): {t.name}  "
             f"{t.label.zh} / {t.label.en}"]
    if t.description:
        lines.append(f"  {t.description}")
    lines += ["  " + "  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=False)) + f"  {r[5]}"
              for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def show(args: argparse.Namespace) -> int:
    handle, versions, t = fetch_template(args, args.template, version=args.version)
    if args.json:
        print(json.dumps({"handle": handle, "versions": sorted(versions), "definition": t.to_json()},
                         indent=2, ensure_ascii=False))
    else:
        print(template_text(handle, versions, t))
    return EXIT_OK


def _servers_for_list(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(prefix, REST address) of each node asked for its templates."""
    cluster = _cluster(args)
    if cluster is None:
        if not args.prefix:
            raise CliError("template list needs a PREFIX (or a running cluster in --data-dir)")
        with client_for(args) as c:
            return [(args.prefix, c.base_url)]
    if args.prefix:
        return [(args.prefix, str(holder_of(cluster, args.prefix)["http"]))]
    return [(str(n["prefix"]), str(n["http"])) for n in cluster["nodes"] if n["role"] == "secondary" and n["prefix"]]


def list_cmd(args: argparse.Namespace) -> int:
    found: list[dict[str, Any]] = []
    for prefix, server in _servers_for_list(args):
        with RestClient(server, verify_tls=not args.insecure) as client:
            answer = client.request("GET", "/api/templates", query=[("prefix", prefix)], auth=False)
        if not answer.ok:
            print(f"error: {prefix} at {server}: {describe(answer)}", file=sys.stderr)
            return EXIT_HANDLE_ERROR
        found.extend(answer.body.get("templates", []))
    if args.json:
        print(json.dumps({"templates": found}, indent=2, ensure_ascii=False))
    elif not found:
        print("(no templates)")
    for t in [] if args.json else found:
        label = t.get("label", {})
        print(f"{t['handle']}@{t['latest']}  {t['name']}  versions {','.join(map(str, t['versions']))}  "
              f"{t['fields']} fields  {label.get('zh', '')} / {label.get('en', '')}")
    return EXIT_OK


def diff(args: argparse.Namespace) -> int:
    handle, versions, latest = fetch_template(args, args.template)
    new_v = args.new or latest.version
    old_v = args.old or new_v - 1
    if old_v not in versions or new_v not in versions:
        raise CliError(f"{handle} has versions {', '.join(map(str, sorted(versions)))}; "
                       f"cannot compare {old_v} with {new_v}", EXIT_HANDLE_ERROR)
    try:
        old_t, new_t = (template_from_values(versions.values(), v, handle=handle) for v in (old_v, new_v))
    except HandleError as exc:
        raise CliError(exc.message, EXIT_HANDLE_ERROR) from None
    result = diff_templates(old_t, new_t)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        print(result.to_text().rstrip())
    return EXIT_OK


def uses(args: argparse.Namespace) -> int:
    handle, named = split_ref(args.template)
    version = args.version or named
    prefix = args.prefix[5:] if args.prefix.lower().startswith("0.na/") else args.prefix
    apply_cluster_defaults(args, prefix, write=True)
    found: list[dict[str, Any]] = []
    start: int | None = 0
    with client_for(args, prefix, need_auth=True) as client:
        while start is not None:
            query = [("prefix", prefix), ("template", handle), ("from", str(start)), ("scan", str(USES_SCAN))]
            answer = client.request("GET", "/api/templates/uses",
                                    query=query + ([("version", str(version))] if version else []))
            if not answer.ok:
                return finish(args, answer)
            found.extend(answer.body.get("handles", []))
            start = answer.body.get("next")
    if args.json:
        print(json.dumps({"prefix": prefix, "template": handle, "handles": found}, indent=2, ensure_ascii=False))
    else:
        for item in found:
            print(f"{item['handle']}  @{item['version']}")
        print(f"({len(found)} under {prefix} name {handle}{f'@{version}' if version else ''})")
    return EXIT_OK
