"""Cluster credentials: one random cluster secret per data directory (mode 0600), and from it a distinct
secret for every prefix admin identity (HMAC-SHA256), so knowing one enterprise's secret gives nothing of
another's. ``credentials.json`` (mode 0600) lists every identity with its secret for the operator."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from .plan import ClusterPlan, identity_of

CLUSTER_SECRET_FILE = "cluster-secret"
CREDENTIALS_FILE = "credentials.json"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def cluster_secret(data_dir: Path, given: str | None = None) -> str:
    if given:
        return given
    path = data_dir / CLUSTER_SECRET_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        _write_private(path, secret + "\n")
        return secret


def secret_for(master: str, prefix: str) -> str:
    return hmac.new(master.encode(), identity_of(prefix).lower().encode(), hashlib.sha256).hexdigest()[:32]


def write_credentials(data_dir: Path, plan: ClusterPlan, master: str) -> Path:
    prefixes = [n.prefix for n in plan.topology.nodes if n.prefix]
    creds = {identity_of(p): secret_for(master, p) for p in dict.fromkeys(prefixes)}
    path = data_dir / CREDENTIALS_FILE
    _write_private(path, json.dumps({"identities": creds}, indent=2) + "\n")
    return path


def read_credentials(data_dir: Path) -> dict[str, str]:
    data = json.loads((data_dir / CREDENTIALS_FILE).read_text(encoding="utf-8"))
    return dict(data["identities"])
