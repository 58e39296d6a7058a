"""Helpers for the hardening suites (crash safety, graceful stop, safe defaults).

- Ports: base ports below the ephemeral range (client sockets in TIME_WAIT live there), retried on collision.
- Cluster worker processes (``python -m idresolve.cluster.worker``) that a test starts, SIGKILLs and
  restarts by their own pid; readiness is their ``{"event": "ready"}`` line.
- Writers: threads that hammer a node with binary CREATE / ADD_VALUE / BATCH_CREATE or REST PUT / batch,
  and keep a ledger of what was acknowledged (code 1, HTTP 2xx), what is in doubt (sent, answer never
  came), how each refusal looked, and anything that was not a clean answer or a clean refusal.
- Verification: pipelined binary resolutions of every handle in the ledger.

Rules: every loop is bounded in count and time; nothing sleeps to wait for a server; only 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clusterutil import IDRESOLVE, MINIMAL, Proc, cli_env, free_base_port, spawn
from idresolve.cluster.plan import PORTS_PER_NODE
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.errors import DecodeError
from idresolve.core.messages import Request
from idresolve.core.records import Record
from idresolve.core.values import HS_ADMIN, HandleValue, string_value
from idresolve.net.blocking import BlockingClient, ProtocolClientError

LOOPBACK = "127.0.0.1"
PORT_LO, PORT_HI = 20000, 30000
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------------
# Ports


def base_port(count: int) -> int:
    """A free run of ``count`` loopback ports (TCP and UDP) below the ephemeral range."""
    return free_base_port(count, lo=PORT_LO, hi=PORT_HI)


# --------------------------------------------------------------------------------------------------
# Cluster worker processes


class PortBusy(RuntimeError):
    pass


class WorkerProcess:
    """``python -m idresolve.cluster.worker --node ...`` for some nodes of the minimal topology."""

    def __init__(self, data_dir: Path, port: int, nodes: list[str], *, latency: str = "off",
                 log_level: str = "WARNING", config: Path = MINIMAL, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.port, self.nodes = data_dir, port, nodes
        argv = [_python(), "-m", "idresolve.cluster.worker", "--config", str(config), "--data-dir", str(data_dir),
                "--base-port", str(port), "--workers", "1", "--latency", latency, "--log-level", log_level]
        for n in nodes:
            argv += ["--node", n]
        self.proc: Proc = spawn(argv, env=env or cli_env())
        self.pid = self.proc.popen.pid

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, object]:
        line = self.proc.wait_for_line('"event"', timeout_s=timeout_s)
        event = json.loads(line)
        if event.get("event") != "ready":
            message = str(event.get("message", line))
            if "address already in use" in message.lower() or "cannot listen" in message:
                raise PortBusy(message)
            raise RuntimeError(f"worker {self.nodes} failed: {message}; stderr: {self.proc.stderr[-2000:]}")
        return event

    def sigkill(self) -> None:
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.popen.wait(STOP_TIMEOUT_S)
        self.proc.join_readers(5)

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait (bounded): the exit code."""
        if self.proc.popen.poll() is None:
            self.proc.popen.send_signal(signal.SIGTERM)
        code = self.proc.popen.wait(timeout_s)
        self.proc.join_readers(5)
        return code

    def ensure_gone(self) -> None:
        if self.proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.popen.kill()
        self.proc.popen.wait(STOP_TIMEOUT_S)
        self.proc.join_readers(5)


def _python() -> str:
    import sys

    return sys.executable


@dataclass
class SplitCluster:
    """The minimal topology in several worker processes (``groups``), so one node can be killed alone."""

    data_dir: Path
    plan: object  # ClusterPlan
    master: str
    groups: list[list[str]]
    procs: dict[str, WorkerProcess] = field(default_factory=dict)  # first node of a group -> its process
    env: dict[str, str] | None = None  # the workers' environment (default: cli_env())

    def node(self, name: str):  # type: ignore[no-untyped-def]
        return self.plan.node(name)  # type: ignore[attr-defined]

    def group_of(self, name: str) -> list[str]:
        return next(g for g in self.groups if name in g)

    def start_group(self, name: str, *, attempts: int = 20) -> WorkerProcess:
        """(Re)start the process of the group holding ``name`` on the same data dir and ports."""
        group = self.group_of(name)
        for attempt in range(attempts):
            w = WorkerProcess(self.data_dir, self.plan.base_port, group, env=self.env)  # type: ignore[attr-defined]
            try:
                w.wait_ready()
            except PortBusy:
                w.ensure_gone()
                # Someone else holds one of our fixed ports for a moment: retry, bounded.
                time.sleep(0.05 * (attempt + 1))
                continue
            except BaseException:
                w.ensure_gone()
                raise
            self.procs[group[0]] = w
            return w
        raise RuntimeError(f"could not restart {group} on base port {self.plan.base_port}")  # type: ignore[attr-defined]

    def proc_of(self, name: str) -> WorkerProcess:
        return self.procs[self.group_of(name)[0]]

    def stop(self) -> dict[str, int]:
        codes = {}
        for key, w in self.procs.items():
            try:
                codes[key] = w.terminate()
            except Exception:  # noqa: BLE001 - make sure it is gone, report the code as -1
                w.ensure_gone()
                codes[key] = -1
        return codes

    def ensure_gone(self) -> None:
        for w in self.procs.values():
            w.ensure_gone()


def start_split_cluster(data_dir: Path, own: list[str], *, attempts: int = 5,
                        env: dict[str, str] | None = None) -> SplitCluster:
    """Start the minimal topology with each node of ``own`` in a process of its own and every other node
    in one more process, on a free base port (retried on collision); then run the start-up allocation."""
    from idresolve.cluster.bootstrap import bootstrap
    from idresolve.cluster.credentials import cluster_secret
    from idresolve.cluster.plan import make_plan
    from idresolve.core.topology import load_topology

    topology = load_topology(MINIMAL)
    master = cluster_secret(data_dir)  # created once here, before the workers read it
    names = [n.name for n in topology.running_nodes()]
    groups = [[n for n in names if n not in own]] + [[n] for n in own]
    last: BaseException | None = None
    for _ in range(attempts):
        plan = make_plan(topology, base_port=base_port(PORTS_PER_NODE * len(names)), workers=1)
        cluster = SplitCluster(data_dir, plan, master, groups, env=env)
        workers = [WorkerProcess(data_dir, plan.base_port, g, env=env) for g in groups]
        try:
            for g, w in zip(groups, workers, strict=True):
                w.wait_ready()
                cluster.procs[g[0]] = w
        except PortBusy as exc:
            last = exc
            for w in workers:
                w.ensure_gone()
            continue
        except BaseException:
            for w in workers:
                w.ensure_gone()
            raise
        try:
            bootstrap(plan, master)
        except BaseException:
            cluster.ensure_gone()
            raise
        return cluster
    raise RuntimeError(f"could not start the cluster in {attempts} attempts: {last!r}")


# --------------------------------------------------------------------------------------------------
# The ledger of acknowledged writes


@dataclass
class Batch:
    handles: list[str]
    data: dict[str, bytes]
    acked: bool = False


@dataclass
class Ledger:
    """What nodes acknowledged, what is in doubt, and how every answer looked. Thread-safe via ``lock``."""

    acked: dict[str, dict[int, bytes]] = field(default_factory=dict)  # handle -> {index: data}
    doubt: dict[str, dict[int, bytes]] = field(default_factory=dict)  # sent, no answer: there or not
    batches: list[Batch] = field(default_factory=list)
    acks: int = 0  # acknowledged operations (a batch counts once)
    doubt_ops: int = 0  # operations sent whose answer never came
    acked_items: int = 0  # acknowledged identifiers and values
    refusals: Counter[str] = field(default_factory=Counter)  # clean refusals by kind
    unexpected: list[str] = field(default_factory=list)  # well-formed answers with codes we did not expect
    corrupt: list[str] = field(default_factory=list)  # answers that were neither clean answers nor refusals
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, kind: str, items: dict[str, dict[int, bytes]]) -> None:
        with self.lock:
            for h, vals in items.items():
                self.acked.setdefault(h, {}).update(vals)
                self.acked_items += len(vals)
            self.acks += 1

    def in_doubt(self, items: dict[str, dict[int, bytes]]) -> None:
        with self.lock:
            self.doubt_ops += 1
            for h, vals in items.items():
                self.doubt.setdefault(h, {}).update(vals)

    def refused(self, kind: str) -> None:
        with self.lock:
            self.refusals[kind] += 1

    def snapshot(self) -> tuple[dict[str, dict[int, bytes]], dict[str, dict[int, bytes]], list[Batch]]:
        with self.lock:
            return ({h: dict(v) for h, v in self.acked.items()}, {h: dict(v) for h, v in self.doubt.items()},
                    [Batch(list(b.handles), dict(b.data), b.acked) for b in self.batches])


#: Kinds of clean refusal: the connection was refused or closed, or the node said it was too busy.
CLEAN_CLIENT_ERRORS = ("cannot connect", "closed the connection", "receive from", "send to")


def classify_binary_error(exc: ProtocolClientError) -> str | None:
    """'refused' for a closed or refused connection, None for an answer that was garbage."""
    text = str(exc)
    return "refused" if any(m in text for m in CLEAN_CLIENT_ERRORS) else None


# --------------------------------------------------------------------------------------------------
# Writers


class Writer(threading.Thread):
    """One connection's worth of writes, until ``stop`` or ``max_ops`` or ``deadline``; reconnects after a
    refusal (the node is being killed and restarted) with a short bounded pause."""

    kind = "write"

    def __init__(self, ledger: Ledger, prefix: str, tag: str, *, seed: int, max_ops: int = 1_000_000,
                 max_seconds: float = 600.0, naming: Callable[[int], str] | None = None) -> None:
        super().__init__(daemon=True, name=f"writer-{tag}")
        self.ledger, self.prefix, self.tag = ledger, prefix, tag
        self.naming = naming or (lambda n: f"{prefix}/{tag}-{n}")
        self.rng = random.Random(seed)
        self.max_ops, self.deadline = max_ops, time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.n = 0
        self.sent = 0

    def handle(self) -> str:
        self.n += 1
        return self.naming(self.n)

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.sent < self.max_ops and time.monotonic() < self.deadline:
                self.sent += 1
                if not self.step():
                    self.stop.wait(0.005)  # refused: the node is down; ask again shortly (bounded by stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.close()

    def step(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _values_map(values: Iterable[HandleValue]) -> dict[int, bytes]:
    return {v.index: v.data for v in values if v.type != HS_ADMIN}


class BinaryWriter(Writer):
    """Binary CREATE of single records, ADD_VALUE to some of them, and/or BATCH_CREATE of ``batch`` items."""

    def __init__(self, ledger: Ledger, host: str, port: int, auth: tuple[str, bytes], prefix: str, tag: str, *,
                 seed: int, batch: tuple[int, int] | None = None, singles: bool = True,
                 make_values: Callable[[str], tuple[HandleValue, ...]] | None = None, add_index: int = 2,
                 **kw: object) -> None:
        super().__init__(ledger, prefix, tag, seed=seed, **kw)  # type: ignore[arg-type]
        self.add_index = add_index
        self.client = BlockingClient(host, port, timeout_s=15.0, auth=auth)
        self.batch, self.singles = batch, singles
        self.make_values = make_values or (lambda h: (string_value(1, "URL", f"https://example.com/{h}"),))
        self.addable: list[str] = []
        self.kind = "binary-batch" if batch and not singles else "binary"

    def _call(self, req: Request, doubt: dict[str, dict[int, bytes]]) -> int | None:
        try:
            resp = self.client.call(req)
        except ProtocolClientError as exc:
            self.client.close()
            if classify_binary_error(exc) is None:
                with self.ledger.lock:
                    self.ledger.corrupt.append(f"{self.tag}: {exc}")
            else:
                self.ledger.refused("binary-connection")
            self.ledger.in_doubt(doubt)
            return None
        except (OSError, DecodeError) as exc:
            self.client.close()
            with self.ledger.lock:
                self.ledger.corrupt.append(f"{self.tag}: {exc!r}")
            self.ledger.in_doubt(doubt)
            return None
        if resp.code == ResponseCode.SERVER_TOO_BUSY:
            self.ledger.refused("binary-code-3")
            return resp.code
        if resp.code != ResponseCode.SUCCESS:
            with self.ledger.lock:
                self.ledger.unexpected.append(f"{self.tag} {req.opcode} {req.handle}: {resp.code} {resp.message}")
        return resp.code

    def step(self) -> bool:
        try:
            self.client.connect()
        except ProtocolClientError:
            self.ledger.refused("binary-connect")
            return False  # refused before anything was sent: nothing to record
        use_batch = self.batch is not None and (not self.singles or self.rng.random() < 0.2)
        if use_batch:
            assert self.batch is not None
            handles = [self.handle() for _ in range(self.rng.randint(*self.batch))]
            items = [(h, self.make_values(h)) for h in handles]
            data = {h: _values_map(v) for h, v in items}
            b = Batch(handles, {h: d[1] for h, d in data.items()})
            with self.ledger.lock:
                self.ledger.batches.append(b)
            code = self._call(Request(0, OpCode.BATCH_CREATE, "", items=tuple(items)), data)
            if code == ResponseCode.SUCCESS:
                with self.ledger.lock:
                    b.acked = True
                self.ledger.ack(self.kind, data)
            return code is not None
        if self.addable and self.rng.random() < 0.3:
            target = self.addable.pop(self.rng.randrange(len(self.addable)))  # never asked twice
            value = string_value(self.add_index, "EMAIL", f"ops-{target}@example.com")
            data = {target: {self.add_index: value.data}}
            code = self._call(Request(0, OpCode.ADD_VALUE, target, values=(value,)), data)
            if code == ResponseCode.SUCCESS:
                self.ledger.ack(self.kind, data)
            return code is not None
        h = self.handle()
        values = self.make_values(h)
        data = {h: _values_map(values)}
        code = self._call(Request(0, OpCode.CREATE_HANDLE, h, values=values), data)
        if code == ResponseCode.SUCCESS:
            self.ledger.ack(self.kind, data)
            self.addable.append(h)
        return code is not None

    def close(self) -> None:
        self.client.close()


def basic_auth(identity: str, secret: str) -> str:
    ident = identity.replace(":", "%3A").replace("/", "%2F")
    return "Basic " + base64.b64encode(f"{ident}:{secret}".encode()).decode()


class RestWriter(Writer):
    """REST PUT of single records (and ``?index=2`` additions), and/or POST /api/batch."""

    def __init__(self, ledger: Ledger, host: str, port: int, identity: str, secret: str, prefix: str, tag: str, *,
                 seed: int, batch: tuple[int, int] | None = None, **kw: object) -> None:
        super().__init__(ledger, prefix, tag, seed=seed, **kw)  # type: ignore[arg-type]
        self.host, self.port = host, port
        self.auth = basic_auth(identity, secret)
        self.conn: http.client.HTTPConnection | None = None
        self.batch = batch
        self.addable: list[str] = []
        self.kind = "rest"

    def _send(self, method: str, path: str, body: object, doubt: dict[str, dict[int, bytes]]) -> int | None:
        """HTTP status, or None when the request was refused at the connection (or the answer was bad)."""
        assert self.conn is not None
        try:
            self.conn.request(method, path, body=json.dumps(body),
                              headers={"Content-Type": "application/json", "Authorization": self.auth})
            resp = self.conn.getresponse()
            raw = resp.read()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest) as exc:
            self._drop(doubt, f"rest-{type(exc).__name__}")
            return None
        except (OSError, http.client.HTTPException) as exc:  # a half answer, a bad status line, a timeout
            with self.ledger.lock:
                self.ledger.corrupt.append(f"{self.tag} {method} {path}: {exc!r}")
            self._drop(doubt, None)
            return None
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if resp.status == 503 and isinstance(answer, dict) and answer.get("responseCode") == 3:
            self.ledger.refused("rest-503")
            return resp.status
        if not isinstance(answer, dict) or not 200 <= resp.status < 300 or answer.get("responseCode") != 1:
            with self.ledger.lock:
                self.ledger.unexpected.append(f"{self.tag} {method} {path}: {resp.status} {raw[:200]!r}")
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return resp.status

    def _drop(self, doubt: dict[str, dict[int, bytes]], refusal: str | None) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if refusal is not None:
            self.ledger.refused(refusal)
        self.ledger.in_doubt(doubt)

    def step(self) -> bool:
        if self.conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
            try:
                conn.connect()
            except OSError:
                conn.close()
                self.ledger.refused("rest-connect")
                return False  # refused before anything was sent: nothing to record
            self.conn = conn
        if self.batch is not None and self.rng.random() < 0.25:
            handles = [self.handle() for _ in range(self.rng.randint(*self.batch))]
            items = [{"handle": h, "values": [{"index": 1, "type": "URL", "data": f"batch {h}"}]} for h in handles]
            data = {h: {1: f"batch {h}".encode()} for h in handles}
            b = Batch(handles, {h: d[1] for h, d in data.items()})
            with self.ledger.lock:
                self.ledger.batches.append(b)
            status = self._send("POST", "/api/batch", {"handles": items}, data)
            if status is not None and 200 <= status < 300:
                with self.ledger.lock:
                    b.acked = True
                self.ledger.ack("rest-batch", data)
            return status is not None
        if self.addable and self.rng.random() < 0.3:
            target = self.addable.pop(self.rng.randrange(len(self.addable)))
            text = f"ops-{target}@example.com"
            data = {target: {2: text.encode()}}
            status = self._send("PUT", f"/api/handles/{target}?index=2",
                                {"values": [{"index": 2, "type": "EMAIL", "data": text}]}, data)
            if status is not None and 200 <= status < 300:
                self.ledger.ack(self.kind, data)
            return status is not None
        h = self.handle()
        text = f"https://example.com/rest/{h}"
        data = {h: {1: text.encode()}}
        status = self._send("PUT", f"/api/handles/{h}", {"values": [{"index": 1, "type": "URL", "data": text}]}, data)
        if status is not None and 200 <= status < 300:
            self.ledger.ack(self.kind, data)
            self.addable.append(h)
        return status is not None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def stop_writers(writers: list[Writer], timeout_s: float = 30.0) -> None:
    for w in writers:
        w.stop.set()
    deadline = time.monotonic() + timeout_s
    for w in writers:
        w.join(max(0.1, deadline - time.monotonic()))
    stuck = [w.name for w in writers if w.is_alive()]
    assert not stuck, f"writers did not stop: {stuck}"
    errors = [(w.name, w.error) for w in writers if w.error is not None]
    assert not errors, errors


def wait_for_acks(ledger: Ledger, target: int, *, timeout_s: float, writers: list[Writer] | None = None) -> None:
    """Block until ``ledger.acks >= target`` (bounded; fails with the writers' state otherwise)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with ledger.lock:
            if ledger.acks >= target:
                return
            acks = ledger.acks
        if writers is not None:
            errors = [w.error for w in writers if w.error is not None]
            assert not errors, errors
        assert time.monotonic() < deadline, f"only {acks} of {target} acknowledged writes within {timeout_s} s"
        time.sleep(0.002)  # polling the ledger (a counter), not waiting for a server


# --------------------------------------------------------------------------------------------------
# Verification


def resolve_many(host: str, port: int, handles: list[str], *, window: int = 256,
                 timeout_s: float = 60.0) -> dict[str, dict[int, bytes] | None]:
    """Every handle's non-admin values ({index: data}) or None when not found, pipelined over one binary
    connection; answers with code 3 (shedding) are asked again, bounded by ``timeout_s``."""
    out: dict[str, dict[int, bytes] | None] = {}
    todo = list(handles)
    deadline = time.monotonic() + timeout_s
    with BlockingClient(host, port, timeout_s=timeout_s) as c:
        while todo:
            assert time.monotonic() < deadline, f"{len(todo)} resolutions still unanswered after {timeout_s} s"
            retry: list[str] = []
            for i in range(0, len(todo), window):
                chunk = todo[i:i + window]
                ids = {c.send(Request(0, OpCode.RESOLUTION, h)): h for h in chunk}
                while ids:
                    resp = c.receive()
                    h = ids.pop(resp.request_id)
                    if resp.code == ResponseCode.SUCCESS:
                        out[h] = _values_map(resp.values)
                    elif resp.code == ResponseCode.HANDLE_NOT_FOUND:
                        out[h] = None
                    elif resp.code == ResponseCode.SERVER_TOO_BUSY:
                        retry.append(h)
                    else:
                        raise AssertionError(f"resolving {h}: code {resp.code} {resp.message}")
            todo = retry
    return out


@dataclass
class Verdict:
    checked: int
    lost: dict[str, tuple[dict[int, bytes], dict[int, bytes] | None]]  # acknowledged, not there (as acked)
    torn_batches: list[tuple[str, int, int]]  # (first handle, present, size)
    lost_batches: list[str]  # acknowledged batches not there
    bad_doubtful: list[str]  # unacknowledged writes present with values we never sent
    batches_present: int
    doubt_present: int


Lookup = Callable[[list[str]], dict[str, dict[int, bytes] | None]]


def judge(ledger: Ledger, lookup: Lookup, *, sample_batches: bool = False) -> Verdict:
    """Look up what the ledger says was written. ``sample_batches``: of each batch only its first and last
    identifiers (a cheap check through the API; the store check looks at every one)."""
    acked, doubt, batches = ledger.snapshot()
    in_batch = {h for b in batches for h in b.handles}
    if sample_batches:
        shown = [[b.handles[0], b.handles[-1]] for b in batches]
        every = sorted((set(acked) | set(doubt)) - in_batch | {h for s in shown for h in s})
        acked = {h: v for h, v in acked.items() if h not in in_batch or h in every}
        doubt = {h: v for h, v in doubt.items() if h not in in_batch or h in every}
        batches = [Batch(s, {h: b.data[h] for h in s}, b.acked) for s, b in zip(shown, batches, strict=True)]
    else:
        every = sorted(set(acked) | set(doubt) | in_batch)
    got = lookup(every)
    lost = {h: (want, got[h]) for h, want in acked.items()
            if got[h] is None or any(got[h].get(i) != d for i, d in want.items())}  # type: ignore[union-attr]
    torn, lost_batches, present_batches = [], [], 0
    for b in batches:
        present = sum(1 for h in b.handles if got[h] is not None)
        if present not in (0, len(b.handles)):
            torn.append((b.handles[0], present, len(b.handles)))
        if present:
            present_batches += 1
        if b.acked and present != len(b.handles):
            lost_batches.append(b.handles[0])
    bad, doubt_present = [], 0
    for h, sent in doubt.items():
        g = got[h]
        if g is None or h in acked:
            continue
        doubt_present += 1
        if any(i in g and g[i] != d for i, d in sent.items()):
            bad.append(h)
    return Verdict(len(every), lost, torn, lost_batches, bad, present_batches, doubt_present)


def verify(ledger: Ledger, host: str, port: int, *, sample_batches: bool = True) -> Verdict:
    """Through the node's binary API (pipelined resolutions)."""
    return judge(ledger, lambda hs: resolve_many(host, port, hs), sample_batches=sample_batches)


def verify_store(ledger: Ledger, path: Path) -> Verdict:
    """Through the store file of a stopped node: every identifier of every batch, with its values."""
    from idresolve.core.handles import fold

    db = sqlite3.connect(str(path))
    try:
        rows = db.execute("SELECT data FROM records").fetchall()
    finally:
        db.close()
    held = {}
    for (data,) in rows:
        record = Record.decode(data)
        held[record.key] = _values_map(record.values)
    return judge(ledger, lambda hs: {h: held.get(fold(h)) for h in hs})


def assert_sound(v: Verdict) -> None:
    assert not v.lost, f"{len(v.lost)} acknowledged writes lost, e.g. {dict(list(v.lost.items())[:3])}"
    assert not v.lost_batches, f"acknowledged batches missing: {v.lost_batches[:5]}"
    assert not v.torn_batches, f"batches half there (first, present, size): {v.torn_batches[:5]}"
    assert not v.bad_doubtful, f"unacknowledged writes present with values never sent: {v.bad_doubtful[:5]}"


def integrity_check(path: Path) -> tuple[str, int]:
    """SQLite's integrity_check of a stopped node's store, and the number of records, each decoded."""
    db = sqlite3.connect(str(path))
    try:
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT key, data FROM records").fetchall()
    finally:
        db.close()
    for key, data in rows:
        record = Record.decode(data)
        assert record.key == key, (key, record.key)
    return str(result), len(rows)


# --------------------------------------------------------------------------------------------------
# `idresolve up` as a subprocess


def children_of(pid: int) -> list[int]:
    """Processes that ``pid`` started (its workers), to clean up by id should ``up`` die without stopping
    them (they run in sessions of their own, so nothing else would end them)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


UP_NODES = 6  # running nodes of the minimal topology


class UpProcess:
    """``idresolve up --config config/minimal.toml --latency off`` on a data dir and base port."""

    def __init__(self, data_dir: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.port = data_dir, port
        self.proc: Proc = spawn([IDRESOLVE, "up", "--config", str(MINIMAL), "--data-dir", str(data_dir),
                                 "--base-port", str(port), "--latency", "off", *extra], env=env or cli_env())
        self.workers: list[int] = []

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        self.proc.wait_for_line("ready in", timeout_s=timeout_s)
        self.workers = children_of(self.proc.popen.pid)

    def interrupt(self, timeout_s: float = 60.0) -> tuple[int, float]:
        """SIGINT (Ctrl-C) and wait, bounded: (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.popen.send_signal(signal.SIGINT)
        code = self.proc.popen.wait(timeout_s)
        took = time.monotonic() - t0
        self.proc.join_readers(5)
        return code, took

    def ensure_gone(self) -> None:
        kids = children_of(self.proc.popen.pid) or self.workers
        if self.proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.popen.wait(30)
        for pid in kids:  # only the workers this `up` started, by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.join_readers(5)


def start_up(data_dir: Path, port: int | None = None, *extra: str, attempts: int = 4,
             env: dict[str, str] | None = None) -> UpProcess:
    """Start ``up`` and wait for its "ready in" line; on a free base port (retried if another process took
    one first) unless ``port`` is given (a restart on the same ports)."""
    last = ""
    for _ in range(attempts if port is None else 1):
        up = UpProcess(data_dir, port if port is not None else base_port(PORTS_PER_NODE * UP_NODES), *extra, env=env)
        try:
            up.wait_ready()
            return up
        except (RuntimeError, TimeoutError):
            up.ensure_gone()
            last = up.proc.stderr
            if "in use" not in last or port is not None:
                raise
    raise AssertionError(f"`idresolve up` did not start in {attempts} attempts: {last[-2000:]}")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True
