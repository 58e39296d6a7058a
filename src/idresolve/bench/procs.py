"""Server subprocesses for benchmarks: an authoritative node (``idresolve node``) or a baseline server.

A server is started with a command line, its readiness line (``... at http://127.0.0.1:PORT``) is awaited
on its stdout with a deadline (no sleeping, no polling of ports), and it is always stopped: SIGTERM, a
bounded wait for its clean exit, then SIGKILL. Use it as a context manager so a failing benchmark still
stops it. stderr goes to a temporary file that is quoted when the server fails to start.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

READY_RE = re.compile(r" at ((?:http|tcp)://127\.0\.0\.1:(\d+))\s*$")
TCP_READY_RE = re.compile(r"binary protocol: tcp (127\.0\.0\.1:(\d+))\s*$")  # a node's line for --tcp
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class ServerFailed(Exception):
    """A server subprocess did not come up, or died."""


def idresolve_argv(*args: str) -> list[str]:
    """``idresolve ARGS`` through this interpreter's own entry point (no dependence on PATH)."""
    return [sys.executable, "-c", "from idresolve.cli.main import entry; entry()", *args]


class ServerProcess:
    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, ready: re.Pattern[str] = READY_RE) -> None:
        self.name, self.argv = name, argv
        self.ready = ready
        self.env = dict(os.environ if env is None else env)
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # Lives as long as the server, closed in stop(): a with-block cannot span that.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=self.env)
        self._await_ready()

    def _await_ready(self) -> None:
        if self.proc is None or self.proc.stdout is None:
            raise ServerFailed(f"{self.name} was not started")
        out = self.proc.stdout
        deadline = time.monotonic() + self.start_timeout_s
        seen: list[str] = []
        pending = b""
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerFailed(f"{self.name} did not report readiness within {self.start_timeout_s:g} s"
                                       + self._stderr_tail())
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(out.fileno(), 65536)
                if not chunk:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                    raise ServerFailed(f"{self.name} exited with code {self.proc.returncode} before it was "
                                       f"ready{self._stderr_tail(seen)}")
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    seen.append(line)
                    m = self.ready.search(line)
                    if m:
                        self.url, self.port = m.group(1), int(m.group(2))
                        return

    def _stderr_tail(self, stdout_lines: list[str] | None = None) -> str:
        text = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        if stdout_lines:
            text = "\n".join(stdout_lines[-10:]) + ("\n" + text if text else "")
        return f":\n{text}" if text else ""

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the server and its child processes (a node's workers) have used so
        far (Linux /proc), None where unknown."""
        if self.proc is None:
            return None
        total = cpu_seconds(self.proc.pid)
        for child in children(self.proc.pid):
            used = cpu_seconds(child)
            if total is not None and used is not None:
                total += used
        return total

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after a bounded wait); returns its exit code."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            try:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=STOP_TIMEOUT_S)
                code = proc.returncode
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return code


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used so far (Linux /proc), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def rss_bytes(pid: int) -> int | None:
    """Resident set size (VmRSS) of process ``pid``, None where unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def children(ppid: int) -> list[int]:
    """Processes whose parent is ``ppid`` (a scan of /proc; empty where /proc is missing)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == ppid:
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


def node_process(data_dir: Path, prefix: str, secret: str, *, store: str = "sqlite",
                 name: str = "bench", workers: int = 0, tcp: bool = False) -> ServerProcess:
    """An authoritative node serving ``prefix`` on 127.0.0.1, port 0 (REST, or with ``tcp`` the binary
    protocol only); the secret travels in the environment.

    Other ``IDRESOLVE_*`` variables of the caller are not passed on: the node runs with defaults plus flags.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRESOLVE_")}
    env["IDRESOLVE_ADMIN_SECRET"] = secret
    argv = idresolve_argv("node", "--name", name, "--prefix", prefix, "--http", "127.0.0.1:0",
                          *(("--tcp", "127.0.0.1:0") if tcp else ()),
                          "--data-dir", str(data_dir), "--store", store, "--log-level", "WARNING",
                          *(("--workers", str(workers)) if workers else ()))
    return ServerProcess(f"node ({store})", argv, env=env, ready=TCP_READY_RE if tcp else READY_RE)


def echo_process(answer_file: Path) -> ServerProcess:
    """The bare asyncio msgpack echo server of ``echo`` answering every frame with ``answer_file``."""
    argv = [sys.executable, "-m", "idresolve.bench.echo", "--answer-file", str(answer_file), "--tcp", "127.0.0.1:0"]
    return ServerProcess("bare msgpack-echo baseline", argv)


def baseline_process(body_file: Path, processes: int = 1) -> ServerProcess:
    """The bare aiohttp server of ``baselines`` answering every GET with the bytes of ``body_file``, as
    ``processes`` processes sharing the port."""
    argv = [sys.executable, "-m", "idresolve.bench.baselines", "--body-file", str(body_file),
            "--http", "127.0.0.1:0", "--processes", str(processes)]
    return ServerProcess("bare aiohttp baseline", argv)
