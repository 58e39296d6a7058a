"""The load test's knobs: custom Locust arguments (each also an env var, and a key in a locust.conf),
read into one frozen ``Settings``.

Every knob is ``--idr-<name>`` on the command line and ``LOCUST_IDR_<NAME>`` in the environment. Locust
sends custom arguments from the master to its workers, so a distributed run sets them on the master.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idresolve.cluster.plan import DEFAULT_BASE_PORT

TARGETS = ("recursive", "authoritative")
DIAL_HOSTS = ("names", "same")
KEY_DISTRIBUTIONS = ("uniform", "zipf")
FAIL_ON = ("unexpected", "non-success", "transport")
REGISTRAR_MODES = ("batch", "rest")
MAX_BATCH = 2000  # the batch API's limit (docs/domain.md §6)


def _env(name: str) -> str:
    return "LOCUST_IDR_" + name.upper().replace("-", "_")


def add_arguments(parser: Any) -> None:
    """Register the knobs on Locust's parser (``events.init_command_line_parser``)."""

    def knob(name: str, **kwargs: Any) -> None:
        parser.add_argument(f"--idr-{name}", env_var=_env(name), **kwargs)

    knob("data-dir", default=None,
         help="the cluster's data directory (cluster.json, credentials.json); default $IDRESOLVE_DATA_DIR or ./data")
    knob("topology", default=None,
         help="instead of --idr-data-dir: find the nodes from this topology file, as containers run them (each at "
              "its name, the ports of --idr-base-port); no admin secrets, so reads only")
    knob("base-port", type=int, default=DEFAULT_BASE_PORT,
         help=f"with --idr-topology: the cluster's first port (default {DEFAULT_BASE_PORT})")
    knob("dial-hosts", choices=DIAL_HOSTS, default="names",
         help="with --idr-topology: reach each node at its name (containers; default) or all at 127.0.0.1 ('same')")
    knob("target", choices=TARGETS, default="recursive",
         help="lookups go to a recursive node (walks the hierarchy, caches) or straight to the node that holds "
              "each prefix (default recursive)")
    knob("recursive", default="",
         help="name of the recursive node to use (default: spread users over every recursive node)")
    knob("keys", choices=KEY_DISTRIBUTIONS, default="zipf", help="popularity of seeded identifiers (default zipf)")
    knob("zipf-s", type=float, default=1.1, help="Zipf exponent s, rank k drawn with weight k^-s (default 1.1)")
    knob("identifiers", type=int, default=1000,
         help="how many seeded identifiers to draw from: at most the count given to `idresolve seed` (default 1000)")
    knob("seed-tag", default="SEED", help="suffix tag used by `idresolve seed --prefix-suffix` (default SEED)")
    knob("unknown-share", type=float, default=0.0,
         help="fraction of lookups for identifiers that do not exist (default 0)")
    knob("write-share", type=float, default=0.0,
         help="fraction of resolver tasks that register an identifier instead (REST PUT or binary create, "
              "at the holder of the prefix; default 0)")
    knob("registrar-mode", choices=REGISTRAR_MODES, default="batch",
         help="how Registrar users write: binary batch create, or one REST PUT per task (default batch)")
    knob("batch-size", type=int, default=100, help=f"identifiers per Registrar batch (1-{MAX_BATCH}; default 100)")
    knob("fail-on", choices=FAIL_ON, default="unexpected",
         help="what counts as a failure besides connection errors: 'unexpected' answers (seeded not found, unknown "
              "found, error codes), any 'non-success' code (unknown lookups then fail), or only 'transport' errors")
    knob("timeout", type=float, default=10.0, help="connect and request timeout in seconds (default 10)")
    knob("rate", type=float, default=0.0,
         help="tasks per second per user (constant throughput); 0 = as fast as answers come back (default 0)")
    knob("skip-preflight", action="store_true", default=False,
         help="do not check at start that the cluster answers and the last seeded identifier exists")
    knob("wait", type=float, default=0.0,
         help="keep repeating the start-up check for up to this many seconds (a cluster still starting or being "
              "seeded, e.g. on Kubernetes); default 0: check once")
    knob("max-fail-ratio", type=float, default=0.01,
         help="pass/fail: the run fails (exit code 1) above this failure ratio (default 0.01)")
    knob("max-p99-ms", type=float, default=1000.0,
         help="pass/fail: the run fails above this p99 response time in ms; 0 disables (default 1000)")


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    topology: Path | None
    base_port: int
    dial_hosts: str
    target: str
    recursive: str
    keys: str
    zipf_s: float
    identifiers: int
    seed_tag: str
    unknown_share: float
    write_share: float
    registrar_mode: str
    batch_size: int
    fail_on: str
    timeout_s: float
    rate: float
    max_fail_ratio: float
    max_p99_ms: float
    wait_s: float

    @classmethod
    def from_options(cls, options: argparse.Namespace | None) -> Settings:
        o = vars(options) if options is not None else {}

        def get(name: str, default: Any) -> Any:
            value = o.get("idr_" + name)
            return default if value is None else value

        data_dir = get("data_dir", "") or os.environ.get("IDRESOLVE_DATA_DIR") or "data"
        topology = get("topology", "")
        s = cls(Path(data_dir), Path(topology) if topology else None, int(get("base_port", DEFAULT_BASE_PORT)),
                str(get("dial_hosts", "names")), str(get("target", "recursive")), str(get("recursive", "")),
                str(get("keys", "zipf")), float(get("zipf_s", 1.1)), int(get("identifiers", 1000)),
                str(get("seed_tag", "SEED")), float(get("unknown_share", 0.0)), float(get("write_share", 0.0)),
                str(get("registrar_mode", "batch")), int(get("batch_size", 100)), str(get("fail_on", "unexpected")),
                float(get("timeout", 10.0)), float(get("rate", 0.0)), float(get("max_fail_ratio", 0.01)),
                float(get("max_p99_ms", 1000.0)), float(get("wait", 0.0)))
        s.check()
        return s

    def check(self) -> None:
        """Values come from env vars and the web UI too, not only from argparse: check them here."""
        problems = []
        if self.target not in TARGETS:
            problems.append(f"--idr-target must be one of {', '.join(TARGETS)}")
        if self.dial_hosts not in DIAL_HOSTS:
            problems.append(f"--idr-dial-hosts must be one of {', '.join(DIAL_HOSTS)}")
        if not 1024 <= self.base_port <= 65535:
            problems.append("--idr-base-port must be between 1024 and 65535")
        if self.wait_s < 0:
            problems.append("--idr-wait must be >= 0")
        if self.keys not in KEY_DISTRIBUTIONS:
            problems.append(f"--idr-keys must be one of {', '.join(KEY_DISTRIBUTIONS)}")
        if self.fail_on not in FAIL_ON:
            problems.append(f"--idr-fail-on must be one of {', '.join(FAIL_ON)}")
        if self.registrar_mode not in REGISTRAR_MODES:
            problems.append(f"--idr-registrar-mode must be one of {', '.join(REGISTRAR_MODES)}")
        if not self.zipf_s > 0:
            problems.append("--idr-zipf-s must be positive")
        if self.identifiers < 1:
            problems.append("--idr-identifiers must be at least 1")
        for name, share in (("unknown-share", self.unknown_share), ("write-share", self.write_share)):
            if not 0.0 <= share <= 1.0:
                problems.append(f"--idr-{name} must be between 0 and 1")
        if not 1 <= self.batch_size <= MAX_BATCH:
            problems.append(f"--idr-batch-size must be between 1 and {MAX_BATCH}")
        if not self.timeout_s > 0:
            problems.append("--idr-timeout must be positive")
        if self.rate < 0 or self.max_p99_ms < 0 or not 0.0 <= self.max_fail_ratio <= 1.0:
            problems.append("--idr-rate and --idr-max-p99-ms must be >= 0, --idr-max-fail-ratio between 0 and 1")
        if problems:
            raise ValueError("; ".join(problems))


def verdict(settings: Settings, *, requests: int, fail_ratio: float, p99_ms: float) -> list[str]:
    """The run's pass/fail against --idr-max-fail-ratio and --idr-max-p99-ms: what failed (empty: it passed)."""
    problems = []
    if requests == 0:
        problems.append("no requests were made")
    if fail_ratio > settings.max_fail_ratio:
        problems.append(f"failure ratio {fail_ratio:.4f} > {settings.max_fail_ratio}")
    if settings.max_p99_ms and p99_ms > settings.max_p99_ms:
        problems.append(f"p99 {p99_ms:.0f} ms > {settings.max_p99_ms:g} ms")
    return problems
