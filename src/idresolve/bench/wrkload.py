"""REST load from wrk (https://github.com/wg/wrk; Debian's package ``wrk``), when it is installed.

The project's own closed-loop client (``bench.httpload``) is Python: on a 2-core machine it spends 35-50 us
of CPU per request on a core the server needs, so it measures itself as much as the server. wrk is C: the
same 16 connections cost the server's cores far less, and the figures compare with those of other servers
measured with wrk (Handle.Net's among them). ``bench rest --load wrk`` (the default where wrk is found)
drives it.

A run is one ``wrk`` subprocess: one thread, ``connections`` keep-alive connections, each request a random
path of ``paths`` (a fixed seed, so runs draw the same sequence), for ``duration_s``. A Lua ``done`` hook
prints the counts and latency percentiles as one JSON line, read back here; nothing parses wrk's text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

MARK = "IDRESOLVE-WRK "
_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p99_9_us":%d}\n',
    "IDRESOLVE-WRK ", summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
'''


class WrkError(Exception):
    """wrk is missing, failed, or printed no figures."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # answers with a 2xx or 3xx status: the rate is of these
    errors: int  # answers with another status (wrk counts them, not which they were)
    socket_errors: int  # connect, read, write errors and timeouts
    elapsed_s: float
    latency: dict[str, float]  # mean_us, p50_us, p90_us, p99_us, p99_9_us, max_us (every answer)
    cpu_s: float  # CPU wrk used

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


def find() -> str | None:
    """The wrk executable on PATH, or None."""
    return shutil.which("wrk")


def script(paths: list[str], seed: int = 12345) -> str:
    """The Lua script: a random request path of ``paths`` each time (requests built once, on first use)."""
    if not paths:
        raise ValueError("wrk needs at least one request path")
    table = ",\n".join(_lua_string(p) for p in paths)
    return (f"local paths = {{\n{table}\n}}\nlocal built = {{}}\nlocal n = #paths\nmath.randomseed({int(seed)})\n"
            "request = function()\n  local i = math.random(1, n)\n  local r = built[i]\n"
            "  if r == nil then r = wrk.format(\"GET\", paths[i]); built[i] = r end\n  return r\nend\n" + _DONE)


def _lua_string(text: str) -> str:
    if any(c in text for c in "\\\"\n\r") or not text.isascii():
        raise ValueError(f"request path {text!r} needs escaping (paths are percent-encoded ASCII)")
    return f'"{text}"'


def run(wrk: str, host: str, port: int, paths: list[str], *, connections: int, duration_s: float,
        timeout_s: float = 10.0) -> WrkResult:
    """One closed-loop run of ``duration_s`` (whole seconds, at least 1) against ``http://host:port``."""
    seconds = max(1, round(duration_s))
    with tempfile.TemporaryDirectory(prefix="idresolve-wrk-") as tmp:
        lua = Path(tmp) / "paths.lua"
        lua.write_text(script(paths), encoding="ascii")
        argv = [wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", f"{timeout_s:g}s",
                "-s", str(lua), f"http://{host}:{port}/"]
        before = os.times()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
        except subprocess.TimeoutExpired:
            raise WrkError(f"wrk did not finish within {seconds + timeout_s + 30:g} s") from None
        except OSError as exc:
            raise WrkError(f"cannot run {wrk}: {exc.strerror or exc}") from None
        after = os.times()
    line = next((ln[len(MARK):] for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WrkError(f"wrk exited {proc.returncode} without figures: {' | '.join(tail) or 'no output'}")
    return parse(line, cpu_s=(after.children_user - before.children_user)
                 + (after.children_system - before.children_system))


def parse(line: str, *, cpu_s: float = 0.0) -> WrkResult:
    """The figures of the ``done`` hook's JSON line."""
    try:
        raw: dict[str, Any] = orjson.loads(line)
        total, status = int(raw["requests"]), int(raw["status"])
        sockets = sum(int(raw[k]) for k in ("connect", "read", "write", "timeout"))
        elapsed = int(raw["duration_us"]) / 1e6
        latency = {k: float(raw[k]) for k in ("mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us")}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise WrkError(f"wrk printed figures that do not parse ({exc}): {line[:200]!r}") from None
    return WrkResult(max(0, total - status), status, sockets, elapsed, latency, cpu_s)
