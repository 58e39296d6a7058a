"""Locust entry point for idresolve: REST and binary resolvers and a registrar against an
``idresolve up`` cluster, with a pass/fail verdict at exit. See loadtests/README.md.

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 30s --idr-data-dir /tmp/lc RestResolver

Locust is closed-loop and rounds to whole milliseconds: use it for throughput, pass/fail and user mixes;
use ``idresolve bench`` (open-loop, microsecond HDR histograms) for latency.
"""

from __future__ import annotations

import logging
from typing import Any

from binary_user import BinaryResolver
from cluster_info import ClusterInfoError
from idresolve_users import Registrar, RestResolver
from knobs import add_arguments, verdict
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from workload import forget, settings_of, wait_for_cluster, workload_of

__all__ = ["BinaryResolver", "Registrar", "RestResolver"]

log = logging.getLogger("idresolve.loadtest")


@events.init_command_line_parser.add_listener
def _knobs(parser: Any) -> None:
    add_arguments(parser)


@events.init.add_listener
def _check_setup(environment: Environment, **_: Any) -> None:
    """Fail fast, before any user starts, on bad knobs, a missing cluster or unseeded identifiers.
    Workers get their options from the master later, so only the master (or a local run) checks."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    try:
        wl = workload_of(environment)
    except (ValueError, ClusterInfoError) as exc:
        raise SystemExit(f"idresolve load test: {exc}") from None
    writes = wl.settings.write_share > 0 or any(getattr(c, "writes", False) for c in environment.user_classes)
    if writes and not wl.writers:
        raise SystemExit(f"idresolve load test: writes need admin secrets, but {wl.cluster.secrets_hint}")
    if not environment.parsed_options.idr_skip_preflight:
        problem = wait_for_cluster(wl)
        if problem is not None:
            raise SystemExit(f"idresolve load test: {problem}")
    log.info("idresolve: %d seeded identifiers over %d enterprises, keys %s, target %s", wl.keys.size,
             len(wl.enterprises), wl.settings.keys, wl.settings.target)


@events.test_start.add_listener
def _fresh_workload(environment: Environment, **_: Any) -> None:
    forget(environment)  # rebuilt from the (possibly changed) options by the first user


@events.quitting.add_listener
def _verdict(environment: Environment, **_: Any) -> None:
    """Pass/fail against --idr-max-fail-ratio and --idr-max-p99-ms; sets the process exit code (0 or 1)
    so that tolerated failures do not make Locust exit 1 on their own."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    try:
        settings = settings_of(environment)
    except ValueError:
        return  # already reported at init
    total = environment.stats.total
    p99 = total.get_response_time_percentile(0.99) or 0.0
    problems = verdict(settings, requests=total.num_requests, fail_ratio=total.fail_ratio, p99_ms=p99)
    if problems:
        log.error("idresolve load test FAILED: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        log.info("idresolve load test passed: %d requests, failure ratio %.4f, p99 %.0f ms", total.num_requests,
                 total.fail_ratio, p99)
        environment.process_exit_code = 0
