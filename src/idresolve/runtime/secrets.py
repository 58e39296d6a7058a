"""Admin secrets of a data directory: given (flag or environment), or generated once into
``<data_dir>/admin-secret`` with mode 0600. A generated secret is announced once, when it is created."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "admin-secret"


def load_or_create_secret(data_dir: Path, given: str | None) -> tuple[str, Path | None, bool]:
    """(secret, file holding it or None, whether it was generated just now)."""
    if given:
        return given, None, False
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return path.read_text(encoding="utf-8").strip(), path, False
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return secret, path, True

