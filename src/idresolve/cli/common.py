"""What the subcommands share: credentials from flags, environment or a file; output; exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..client.rest import Answer, ClientError, RestClient
from ..core.handles import prefix_handle

EXIT_OK, EXIT_HANDLE_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_SERVER = "http://127.0.0.1:8000"


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_server_args(p: argparse.ArgumentParser, *, write: bool) -> None:
    p.add_argument("--server", help="node REST address (env IDRESOLVE_SERVER). Without it, the cluster in "
                   f"--data-dir is used if one runs there, else {DEFAULT_SERVER}")
    p.add_argument("--data-dir", help="data directory of a running cluster (env IDRESOLVE_DATA_DIR; default ./data)")
    p.add_argument("--json", action="store_true", help="print the node's JSON answer, for scripts")
    p.add_argument("--identity", help="admin identity index:handle (env IDRESOLVE_IDENTITY; default "
                   "300:0.NA/<prefix of the handle>)" if write else "identity index:handle, to read hidden values")
    p.add_argument("--secret", help="the identity's secret (env IDRESOLVE_SECRET); prefer --secret-file")
    p.add_argument("--secret-file", type=Path, help="file holding the secret (env IDRESOLVE_SECRET_FILE), "
                   "e.g. DATA_DIR/admin-secret")
    p.add_argument("--key", type=Path, help="private key file (`idresolve keygen`) of an HS_PUBKEY identity given "
                   "with --identity: authenticates by signing the node's challenge instead of sending a secret")
    p.add_argument("--insecure", action="store_true", help="do not verify the node's TLS certificate")


def credentials(args: argparse.Namespace, prefix: str | None) -> tuple[str | None, str | None]:
    secret = args.secret or os.environ.get("IDRESOLVE_SECRET")
    secret_file = args.secret_file or (Path(os.environ["IDRESOLVE_SECRET_FILE"])
                                       if os.environ.get("IDRESOLVE_SECRET_FILE") else None)
    if not secret and secret_file:
        try:
            secret = secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read secret file {secret_file}: {exc.strerror}") from None
    identity = args.identity or os.environ.get("IDRESOLVE_IDENTITY")
    if secret and not identity and prefix:
        identity = f"300:{prefix_handle(prefix)}"
    return identity, secret


def client_for(args: argparse.Namespace, prefix: str | None = None, *, need_auth: bool = False) -> RestClient:
    server = args.server or os.environ.get("IDRESOLVE_SERVER") or DEFAULT_SERVER
    identity, secret = credentials(args, prefix)
    if getattr(args, "key", None) is not None:
        return _key_client(args, server, identity)
    if need_auth and not secret:
        raise CliError("this command needs credentials: --secret-file FILE (or --secret, IDRESOLVE_SECRET)")
    try:
        return RestClient(server, identity=identity, secret=secret, verify_tls=not args.insecure)
    except ClientError as exc:
        raise CliError(str(exc)) from None


def _key_client(args: argparse.Namespace, server: str, identity: str | None) -> RestClient:
    """A client whose session the node authenticated by the identity's key (``client.handle_auth``)."""
    from ..client.handle_auth import authenticate_session
    from ..runtime.serverkey import KeyFileError, read_key

    if not identity:
        raise CliError("--key needs --identity INDEX:HANDLE (the identity whose HS_PUBKEY holds its public key)")
    try:
        key = read_key(args.key)
        client = RestClient(server, verify_tls=not args.insecure)
    except (KeyFileError, ClientError) as exc:
        raise CliError(str(exc)) from None
    authenticate_session(client, identity, key=key)
    return client


def describe(answer: Answer) -> str:
    if answer.status == 401 and not answer.body:
        return "authentication failed (wrong secret or unknown identity)"
    msg = answer.body.get("message") or {
        100: "handle not found", 101: "handle already exists", 200: "values not found",
        402: "authentication needed", 301: "the server is not responsible for that prefix",
    }.get(answer.code, "")
    return f"HTTP {answer.status}, response code {answer.code}" + (f": {msg}" if msg else "")


def finish(args: argparse.Namespace, answer: Answer, human: str | None = None) -> int:
    """Print the answer (JSON or human) and return the exit code."""
    if getattr(args, "json", False):
        print(json.dumps(answer.body, indent=2, ensure_ascii=False))
    elif answer.ok:
        if human:
            print(human)
    else:
        print(f"error: {describe(answer)}", file=sys.stderr)
    return EXIT_OK if answer.ok else EXIT_HANDLE_ERROR


def data_text(data: dict[str, Any] | str) -> str:
    if isinstance(data, str):
        return data
    value = data.get("value")
    if data.get("format") in ("string", "base64", "hex"):
        return str(value) if data.get("format") == "string" else f"{data.get('format')}:{value}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def values_table(values: list[dict[str, Any]]) -> str:
    rows = [("index", "type", "ttl", "data")] + [
        (str(v.get("index")), str(v.get("type")), str(v.get("ttl")), data_text(v.get("data", "")))
        for v in values
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    return "\n".join(f"  {a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}" for a, b, c, d in rows)
