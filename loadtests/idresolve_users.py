"""Locust users of the Handle REST API: ``RestResolver`` (lookups, optionally some writes) and
``Registrar`` (registration only: binary batch create, or one REST PUT per task).

Lookups are ``GET /api/handles/<handle>`` at the user's recursive node (``--host`` overrides it) or, with
--idr-target authoritative, at the node that holds the prefix. Writes always go to the holder, with
Basic auth of the enterprise admin identity from credentials.json. Requests are named by kind, not by
handle ("/api/handles/[seeded]", "[unknown]", "[new]"), so Locust's tables stay small.
"""

from __future__ import annotations

from typing import Any

from binary_user import BinaryTransport
from locust import FastHttpUser, task
from locust.env import Environment
from workload import Workload, record_json, workload_of

SEEDED, UNKNOWN, NEW = "/api/handles/[seeded]", "/api/handles/[unknown]", "/api/handles/[new]"


def _settle(workload: Workload, resp: Any, expected: int) -> None:
    """Mark a ``catch_response`` answer as success or failure by its HTTP status (no JSON parsing: the
    REST API maps every Handle code to one status, DOMAIN.md section 5)."""
    status = resp.status_code
    if not status:  # connection error: FastHttp reports status 0 with the error
        resp.failure(resp.error or "no answer")
        return
    problem = workload.verdict(success=200 <= status < 300, as_expected=status == expected,
                               got=f"HTTP {status}", expected=f"HTTP {expected}")
    if problem is None:
        resp.success()
    else:
        resp.failure(problem)


class _RestUser(FastHttpUser):
    abstract = True

    def __init__(self, environment: Environment) -> None:
        self.workload = workload_of(environment)
        self.node = self.workload.assign_recursive()
        if self.host is None:  # FastHttpUser needs a base URL; every request below uses absolute URLs
            self.host = (self.node or self.workload.enterprises[0].holder).http
        self.network_timeout = self.connection_timeout = self.workload.settings.timeout_s
        super().__init__(environment)
        self.base = self.host.rstrip("/") if self.node else ""

    def wait_time(self) -> float:
        return self.workload.wait(self)

    def on_stop(self) -> None:
        self.client.client.close()  # FastHttpUser leaves its pooled sockets to the GC (ResourceWarning)

    def rest_register(self) -> None:
        wl = self.workload
        writer = wl.next_writer()
        handle = wl.fresh_handle(writer)
        url = f"{writer.enterprise.holder.http}/api/handles/{handle}?overwrite=false"
        with self.client.put(url, json=record_json(handle), name=NEW, catch_response=True,
                             headers={"Authorization": writer.authorization}) as resp:
            _settle(wl, resp, 201)


class RestResolver(_RestUser):
    """Resolves over REST; with --idr-write-share, some tasks register one identifier (PUT) instead."""

    @task
    def work(self) -> None:
        wl = self.workload
        if wl.wants_write():
            self.rest_register()
            return
        lookup = wl.next_lookup()
        base = self.base or lookup.holder.http
        with self.client.get(f"{base}/api/handles/{lookup.handle}", name=SEEDED if lookup.seeded else UNKNOWN,
                             catch_response=True) as resp:
            _settle(wl, resp, 200 if lookup.seeded else 404)


class Registrar(_RestUser):
    """Registers new identifiers at the holder of a random enterprise prefix: a binary batch of
    --idr-batch-size per task (default), or one REST PUT per task (--idr-registrar-mode rest)."""

    writes = True  # the preflight checks that credentials.json is readable

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.transport = BinaryTransport(environment, self.workload)

    @task
    def work(self) -> None:
        wl = self.workload
        if wl.settings.registrar_mode == "rest":
            self.rest_register()
            return
        writer = wl.next_writer()
        self.transport.batch_create(writer, [wl.fresh_handle(writer) for _ in range(wl.settings.batch_size)])

    def on_stop(self) -> None:
        super().on_stop()
        self.transport.close()
