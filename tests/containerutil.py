"""Running what a container file (docker-compose.yml, Kubernetes manifests) tells each container to run,
as local processes: there is no Docker engine or Kubernetes on the test machines.

Only what needs container DNS, a container network or the image's file system is replaced
(``localize``): ``--host NAME`` and ``--dial-hosts names`` become ``127.0.0.1`` and ``same`` (and
Locust's ``--idr-dial-hosts names`` and ``--master-host NAME`` likewise), ``--bind 0.0.0.0`` becomes
``127.0.0.1`` (no traffic leaves loopback), the in-image paths ``/app/config/...``, ``/app/loadtests/...``
and ``/data`` become files under the test's ``tmp_path``, and ``python``, ``idresolve`` and ``locust``
are this venv's. Everything else runs as written.

Every wait has a deadline; readiness is a line on stdout, never a sleep.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from idresolve.cli.main import main
from procs import IDRESOLVE

ROOT = Path(__file__).resolve().parent.parent
SHANDONG = ROOT / "config" / "shandong.toml"
MINIMAL = ROOT / "config" / "minimal.toml"
LOCUST = Path(sys.executable).with_name("locust")
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
WORKER = ["python", "-m", "idresolve.cluster.worker"]
DEMO = "88.118.8/JXDY2106023"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    """``path`` read by PyYAML, a YAML 1.1 reader: stricter about on/off/yes/no than compose's 1.2."""
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_LOADER)  # noqa: S506 - a safe loader


def load_yaml_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.load_all(fh, Loader=_LOADER) if doc is not None]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without IDRESOLVE_* or LOCUST_* settings leaking in from the developer's shell."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("IDRESOLVE_", "LOCUST_"))}, **extra}


def run_idresolve(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IDRESOLVE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else clean_env())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``idresolve ARGS`` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def stop_all(procs: list[Proc]) -> list[int]:
    """SIGTERM to all at once (what `docker compose stop` and the kubelet send), then their exit codes."""
    for p in procs:
        with contextlib.suppress(Exception):
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):  # then close() kills it; its code is missing
            codes.append(p.proc.wait(timeout=20))
        p.close()
    return codes


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_in(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


_SECRET_LIKE = re.compile(r"(secret|password|token)\w*[ \t]*[:=][ \t]*\S{16,}", re.IGNORECASE)


def secret_like_lines(text: str) -> list[str]:
    """Lines that look like a secret being set (a long value after secret=, password:, token= ...),
    comments aside."""
    return [line for line in text.splitlines() if _SECRET_LIKE.search(line.split("#", 1)[0])]


def arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


class Proc:
    """A subprocess whose stdout lines a reader thread queues, so waits on it have deadlines."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                     text=True, env=env, cwd=cwd)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def ready(self, deadline: float) -> dict[str, Any]:
        """The worker's readiness line (``{"event": "ready", ...}``)."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no readiness line in time; stderr: {self.stderr()}") from None
            if line is None:
                raise AssertionError(f"exited ({self.proc.wait(10)}) before ready; stderr: {self.stderr()}")
            event = json.loads(line)
            assert event.get("event") == "ready", event
            return event

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; stderr: {self.stderr()}") from None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


_EXECUTABLES = {"python": [sys.executable], "idresolve": IDRESOLVE, "locust": [str(LOCUST)]}


def localize(command: list[str], cfg: Path, data_dir: Path | None = None, *, extra: tuple[str, ...] = (),
             **flags: str) -> list[str]:
    """A container's command for this machine (see the module's docstring). ``flags`` replace more values
    (``run_time="3s"`` replaces ``--run-time``'s); ``extra`` options go in after the executable's first
    two arguments (so before any positional ones at the end)."""
    replace = {"--host": "127.0.0.1", "--bind": "127.0.0.1", "--dial-hosts": "same", "--config": str(cfg),
               "--idr-topology": str(cfg), "--idr-dial-hosts": "same", "--master-host": "127.0.0.1",
               "-f": str(LOCUSTFILE)}
    if data_dir is not None:
        replace["--data-dir"] = str(data_dir)
    replace.update({"--" + k.replace("_", "-"): v for k, v in flags.items()})
    out = list(command)
    for flag, value in replace.items():
        if flag in out:
            out[out.index(flag) + 1] = value
    for leftover in ("/app/", "/data"):
        assert not any(a.startswith(leftover) for a in out), f"an in-image path is left in {out}"
    exe = _EXECUTABLES[out[0]]
    return [*exe, *out[1:3], *extra, *out[3:]]


def read_stats(prefix: Path) -> dict[str, dict[str, str]]:
    """Locust's ``<prefix>_stats.csv``: request name -> its row."""
    with Path(f"{prefix}_stats.csv").open(newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def check_locust_run(proc: subprocess.CompletedProcess[str] | tuple[int, str], stats: Path) -> dict[str, dict[str, str]]:
    """A Locust run that passed its verdict, with REST and binary lookups of seeded identifiers, all answered."""
    code, stderr = (proc.returncode, proc.stderr) if isinstance(proc, subprocess.CompletedProcess) else proc
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "idresolve load test passed" in stderr, stderr[-3000:]
    rows = read_stats(stats)
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, (rows, stderr[-2000:])
    for name in ("/api/handles/[seeded]", "resolve"):  # RestResolver, BinaryResolver
        assert name in rows and int(rows[name]["Request Count"]) > 0, (name, rows)
    return rows
