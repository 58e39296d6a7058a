"""Where the simulator's files are (importing this costs nothing: the CLI reads it for every command)."""

from __future__ import annotations

from pathlib import Path

CONFIG = Path(__file__).resolve().parents[3] / "config"
DEFAULT_FILE = CONFIG / "workloads.toml"
