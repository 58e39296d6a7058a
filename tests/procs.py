"""Helpers for tests that run ``idresolve`` as a user would: as a subprocess, waiting on its readiness line.

Every wait is bounded by a deadline; nothing sleeps to wait for a server.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from idresolve.client.rest import BUSY_NOTE

_SCRIPT = Path(sys.executable).with_name("idresolve")
#: The command line of ``idresolve``: the installed script next to this interpreter, or the entry point.
IDRESOLVE: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from idresolve.cli.main import entry; entry()"]
READY = re.compile(r"^idresolve node '.*' serving .* at (https?://\S+)$")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without IDRESOLVE_* settings that could leak in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRESOLVE_")}
    env.update(extra)
    return env


def assert_not_shed(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The CLI's REST client met no 503 (load shed): the light traffic of a CLI test must never provoke one,
    with the shedding defaults users get; a retried 503 is a failure, not something to absorb."""
    assert BUSY_NOTE not in (result.stderr or ""), f"a node shed a request of {result.args[1:4]}: {result.stderr}"
    return result


def run_cli(*args: str, timeout: float = 20.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return assert_not_shed(subprocess.run([*IDRESOLVE, *args], capture_output=True, text=True, timeout=timeout,
                                          env=env if env is not None else clean_env()))


class NodeProcess:
    """``idresolve node ...`` in a subprocess; stdout lines are collected by a reader thread."""

    def __init__(self, *args: str, log: Path, env: dict[str, str] | None = None) -> None:
        self._log = log
        self._log_fh = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([*IDRESOLVE, "node", *args], stdout=subprocess.PIPE, stderr=self._log_fh,
                                     text=True, env=env if env is not None else clean_env())
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url: str | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def stderr_text(self) -> str:
        if not self._log_fh.closed:
            self._log_fh.flush()
        return self._log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 20.0) -> re.Match[str]:
        """The first stdout line (from now on) matching ``pattern``; fails on exit or after ``timeout``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {rx.pattern!r} within {timeout} s; stdout: {self.lines}; "
                                     f"stderr: {self.stderr_text()[-2000:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=10)
                raise AssertionError(f"node exited ({self.proc.returncode}) before {rx.pattern!r}; stdout: "
                                     f"{self.lines}; stderr: {self.stderr_text()[-2000:]}")
            m = rx.search(line)
            if m is not None:
                return m

    def wait_ready(self, timeout: float = 20.0) -> str:
        self.url = self.wait_for(READY, timeout).group(1)
        return self.url

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait: the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_fh.close()
