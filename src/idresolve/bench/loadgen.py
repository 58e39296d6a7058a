"""Open-loop and closed-loop load drivers over binary or REST connections, and what they record.

Open loop (docs/architecture.md, "Performance facts"): request ``k`` of a run is due at ``t0 + k / rate`` and goes to connection
``k mod C``, so each connection follows its own schedule of ``rate / C`` requests/s, with as many requests
in flight as the server lets pile up (pipelined). Latency runs from the *scheduled* time, not from when
the request was actually written: a server that stalls cannot hide the stall by slowing the generator
(no coordinated omission). The generator's own lateness (actual write time minus scheduled time) is
recorded apart as ``send_lag`` so that a busy client is visible in the report.

Closed loop: every connection keeps ``depth`` requests in flight and sends the next when one is answered;
latency runs from the actual send. It measures the maximum rate, not latency under a given load.

Every run is bounded by its count (``rate x duration`` or ``max_requests``) and by time (the schedule,
then ``grace_s`` for the last answers); requests unanswered after ``timeout_s`` count as timeouts, answers
arriving after that as late. A per-interval timeline (answers, errors, timeouts, percentiles) is kept for
runs where something happens mid-run (a node killed).

Latency is reported twice: ``latency`` over every request of the run, error answers included and each
request that timed out or was lost counted at the timeout (it waited at least that long), so that a
server cannot look fast by failing; and ``latency_ok`` over the successful answers only.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import httpload
from .hist import distribution, histogram, summary

EXPIRE_EVERY_NS = 50_000_000
PRECISE_WAIT_S = 0.0025  # waits up to this long are timed by select(); longer ones by the loop's ms timer
COARSE_MARGIN_S = 0.0015  # ... up to this much before the due time (at least its 1 ms resolution left to it)
DEFAULT_TICK_S = 50e-6  # the shortest wait: the kernel's default timer slack
MAX_HOLD_NS = 1_000_000  # the driver gives the event loop its turn at least this often


class LoadConn(Protocol):
    after_read: Callable[[], None] | None  # set by the open-loop driver: called after each read of answers

    @property
    def alive(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    def send(self, i: int, sched_ns: int) -> None: ...

    def fileno(self) -> int: ...

    def queue(self, i: int, sched_ns: int) -> None: ...

    def flush(self) -> None: ...

    def expire(self, now_ns: int, timeout_ns: int) -> int: ...

    def close(self) -> None: ...


class Recorder:
    """Counts of one run. ``record`` is the per-answer hot path (called by the connections)."""

    def __init__(self, ok_codes: Sequence[int], *, timeout_s: float, slice_s: float = 1.0) -> None:
        self.ok = frozenset(ok_codes)
        self.timeout_us = int(timeout_s * 1e6)
        self.slice_ns = max(1, int(slice_s * 1e9))
        self.t0 = time.perf_counter_ns()
        self.lat: dict[int, int] = {}  # whole microseconds -> successful answers
        self.lat_other: dict[int, int] = {}  # whole microseconds -> answers not counted in lat (errors, late)
        self.expired = 0  # requests given up on at the timeout (no answer came in time)
        self.codes: dict[int, int] = {}  # response code (binary) or HTTP status (REST) -> answers
        self.send_lag: dict[int, int] = {}
        self.slices: list[list[Any]] = []  # [sent, ok, errors, timeouts, {us: n}]
        self.sent = self.errors = self.timeouts = self.late = self.lost = self.garbage = self.not_sent = 0
        self.last_answer_ns = 0
        self.aborted = ""
        self.connections = 0
        self._cur: list[Any] = []
        self._cur_from = self._cur_to = 0  # the slice last used, [from, to) in ns
        self.progress: Callable[[str], None] | None = None  # a line every ``progress_every_s`` during long runs
        self.progress_every_s = 5.0
        self._next_progress = 0

    def start(self, t0_ns: int) -> None:
        self.t0 = t0_ns
        self._cur_from = self._cur_to = 0

    def _slice(self, now_ns: int) -> list[Any]:
        if self._cur_from <= now_ns < self._cur_to:
            return self._cur
        k = max(0, (now_ns - self.t0) // self.slice_ns)
        slices = self.slices
        while len(slices) <= k:
            slices.append([0, 0, 0, 0, {}])
        self._cur_from = self.t0 + k * self.slice_ns
        self._cur_to = self._cur_from + self.slice_ns
        self._cur = slices[k]
        return self._cur

    def record(self, code: int, sched_ns: int, now_ns: int) -> None:
        us = (now_ns - sched_ns) // 1000
        sl = self._slice(now_ns)
        self.last_answer_ns = now_ns
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        if us <= self.timeout_us and code in self.ok:  # the usual answer: one histogram entry, no more
            lat = self.lat
            lat[us] = lat.get(us, 0) + 1
            sl[1] += 1
            d = sl[4]
            d[us] = d.get(us, 0) + 1
            return
        other = self.lat_other
        other[us] = other.get(us, 0) + 1
        if us > self.timeout_us:  # answered, but later than the run's timeout (REST answers in order)
            self.timeouts += 1
            sl[3] += 1
        else:
            self.errors += 1
            sl[2] += 1

    def sent_one(self, sched_ns: int, now_ns: int) -> None:
        self.sent += 1
        self._slice(sched_ns)[0] += 1
        lag = (now_ns - sched_ns) // 1000
        self.send_lag[lag] = self.send_lag.get(lag, 0) + 1

    def maybe_progress(self, now_ns: int) -> None:
        if self.progress is None:
            return
        if not self._next_progress:
            self._next_progress = self.t0 + int(self.progress_every_s * 1e9)
        if now_ns < self._next_progress:
            return
        self._next_progress = now_ns + int(self.progress_every_s * 1e9)
        ok = sum(self.lat.values())
        self.progress(f"  ... {(now_ns - self.t0) / 1e9:.0f} s: {self.sent:,} sent, {ok:,} answered ok, "
                      f"{self.errors:,} errors, {self.timeouts:,} timeouts")

    def sent_closed(self, now_ns: int) -> None:
        self.sent += 1
        self._slice(now_ns)[0] += 1

    def timed_out(self, n: int, now_ns: int) -> None:
        self.timeouts += n
        self.expired += n
        self._slice(now_ns)[3] += n

    # -- the figures ---------------------------------------------------------------------------------
    def result(self, **settings: Any) -> dict[str, Any]:
        ok = sum(self.lat.values())
        answered = sum(self.codes.values())
        end = self.last_answer_ns or self.t0
        elapsed = max(1e-9, (end - self.t0) / 1e9)
        out: dict[str, Any] = dict(settings)
        out.update({
            "sent": self.sent, "answered": answered, "ok": ok, "errors": self.errors,
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "timeouts": self.timeouts, "late": self.late, "lost": self.lost, "not_sent": self.not_sent,
            "garbage": self.garbage, "elapsed_s": round(elapsed, 4),
            "rate_per_s": round(ok / elapsed, 1) if ok else 0.0,
            "answers_per_s": round(answered / elapsed, 1) if answered else 0.0,
        })
        everything = dict(self.lat)
        for us, n in self.lat_other.items():
            everything[us] = everything.get(us, 0) + n
        unanswered = self.expired + self.lost
        if unanswered:
            everything[self.timeout_us] = everything.get(self.timeout_us, 0) + unanswered
        h = histogram(everything)
        out["latency"] = summary(h)
        out["latency_ok"] = summary(histogram(self.lat))
        out["distribution"] = distribution(h)
        if self.send_lag:
            lag = summary(histogram(self.send_lag))
            out["send_lag"] = {k: lag[k] for k in ("mean_us", "p50_us", "p99_us", "max_us") if k in lag}
        out["timeline"] = self.timeline()
        if self.aborted:
            out["aborted"] = self.aborted
        return out

    def timeline(self) -> list[dict[str, Any]]:
        out = []
        step = self.slice_ns / 1e9
        for k, (sent, ok, err, tmo, lat) in enumerate(self.slices):
            row: dict[str, Any] = {"t_s": round(k * step, 3), "sent": sent, "ok": ok, "errors": err,
                                   "timeouts": tmo, "rate_per_s": round(ok / step, 1)}
            if lat:
                s = summary(histogram(lat))
                row.update({"p50_us": s["p50_us"], "p99_us": s["p99_us"], "max_us": s["max_us"]})
            out.append(row)
        return out


# -- REST connections ----------------------------------------------------------------------------------

class RestLoadConnection:
    """``httpload.HttpConnection`` (HTTP/1.1, pipelined, answered in order) as a load connection."""

    def __init__(self, rec: Recorder, requests: Sequence[bytes],
                 on_answer: Callable[[RestLoadConnection], None] | None = None) -> None:
        self.rec, self.requests, self.on_answer = rec, requests, on_answer
        self.conn: httpload.HttpConnection | None = None
        self._out: list[bytes] = []
        self.after_read: Callable[[], None] | None = None

    async def open(self, host: str, port: int) -> RestLoadConnection:
        self.conn = await httpload.connect(host, port, self._answered)
        return self

    def _answered(self, status: int, _body: bytes | None, sched_ns: int) -> None:
        self.rec.record(status, sched_ns, time.perf_counter_ns())
        if self.on_answer is not None:
            self.on_answer(self)
        if self.after_read is not None:
            self.after_read()

    @property
    def alive(self) -> bool:
        return self.conn is not None and self.conn.transport is not None

    @property
    def in_flight(self) -> int:
        return len(self.conn.in_flight) if self.conn is not None else 0

    def fileno(self) -> int:
        """The socket's descriptor, -1 when closed."""
        return httpload.transport_fd(self.conn.transport if self.conn is not None else None)

    @property
    def error(self) -> str | None:
        err = self.conn.error if self.conn is not None else None
        return None if err is None else str(err)

    @property
    def closed(self) -> asyncio.Future[None]:
        assert self.conn is not None
        return self.conn.closed

    def send(self, i: int, sched_ns: int) -> None:
        assert self.conn is not None
        self.conn.send(self.requests[i % len(self.requests)], sched_ns)

    def queue(self, i: int, sched_ns: int) -> None:
        assert self.conn is not None
        self.conn.in_flight.append(sched_ns)
        self._out.append(self.requests[i % len(self.requests)])

    def flush(self) -> None:
        if self._out:
            if self.conn is not None and self.conn.transport is not None:
                self.conn.transport.write(b"".join(self._out))
            self._out.clear()

    def expire(self, now_ns: int, timeout_ns: int) -> int:
        return 0  # answers come in order: a late one is counted as a timeout when it arrives

    def settle(self) -> tuple[int, int]:
        """At the end of a run: (lost, unanswered) requests still held by this connection."""
        if self.conn is None or not self.conn.in_flight:
            return 0, 0
        n = len(self.conn.in_flight)
        self.conn.in_flight = deque()
        return (n, 0) if self.conn.transport is None else (0, n)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _settle(conns: Sequence[Any], rec: Recorder) -> None:
    for c in conns:
        if isinstance(c, RestLoadConnection):
            lost, unanswered = c.settle()
            rec.lost += lost
            rec.timeouts += unanswered
        else:
            n = len(c.pending)
            c.pending.clear()
            rec.timeouts += n


def _first_error(conns: Sequence[Any]) -> str:
    for c in conns:
        if getattr(c, "error", None):
            return str(c.error)
    return "every connection closed"


# -- the drivers ---------------------------------------------------------------------------------------

@dataclass
class Event:
    """Something to do at ``at_s`` seconds into a run (kill a node); ``fired_s`` records when it ran."""

    at_s: float
    action: Callable[[], None]
    fired_s: float | None = None
    error: str = ""
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def open_loop(conns: Sequence[LoadConn], rec: Recorder, *, rate: float, duration_s: float, work_len: int,
                    offset: int = 0, timeout_s: float = 5.0, grace_s: float | None = None,
                    events: Sequence[Event] = (), tick_s: float = DEFAULT_TICK_S, least_loaded: bool = False) -> None:
    """Send ``rate x duration_s`` requests on schedule. ``least_loaded``: each request goes to the connection
    with the fewest in flight instead of the next in turn (HTTP/1.1: a server answers a connection's
    pipelined requests one after another, so a slow answer holds up the ones behind it).

    Requests due go out whenever the generator gets control: right after each read of answers, which
    under load come often, and on time otherwise. The event loop's timers have millisecond resolution, so
    the last ``PRECISE_WAIT_S`` of a wait for the next due request is a ``select()`` on the connections'
    sockets (microsecond timeout; an answer arriving ends it early and is read at once), for ``tick_s`` at
    least. So the send lag stays near the kernel's timer slack at every rate without a busy loop, and a
    stalled server, which sends nothing, still gets its requests on time. ``tick_s = 0`` never waits (a
    busy loop)."""
    if rate <= 0 or duration_s <= 0 or not conns or work_len < 1:
        raise ValueError("open_loop needs rate > 0, duration > 0, connections and a workload")
    sched = _Schedule(conns, rec, rate=rate, duration_s=duration_s, work_len=work_len, offset=offset,
                      least_loaded=least_loaded)
    timeout_ns = int(timeout_s * 1e9)
    pending_events = sorted(events, key=lambda e: e.at_s)
    clock = time.perf_counter_ns
    t0 = sched.start()
    next_expire = t0 + EXPIRE_EVERY_NS
    sleep = asyncio.sleep
    for c in conns:
        c.after_read = sched.pump
    fds = _fds(conns)
    yielded = clock()  # when the event loop last had its turn
    try:
        while sched.sent < sched.total:
            sched.pump()
            now = clock()
            if pending_events and now - t0 >= pending_events[0].at_s * 1e9:
                _fire(pending_events.pop(0), now, t0)
            if now >= next_expire:
                next_expire = now + EXPIRE_EVERY_NS
                rec.maybe_progress(now)
                for c in conns:
                    c.expire(now, timeout_ns)
                if not any(c.alive for c in conns):
                    rec.aborted = f"{_first_error(conns)} at {(now - t0) / 1e9:.1f} s; the run stopped there"
                    rec.not_sent += sched.total - sched.sent
                    break
            wait = sched.next_due_s()
            if wait <= 0 or tick_s <= 0:
                await sleep(0)
            elif wait > PRECISE_WAIT_S:
                await sleep(wait - COARSE_MARGIN_S)  # the loop's coarse timer first, the rest precisely
            elif fds:
                fds, readable = _wait_readable(fds, conns, max(wait, tick_s))  # an answer ends it early
                if not readable and clock() - yielded < MAX_HOLD_NS:
                    continue  # timed out: a request is due, send it now (the loop gets its turn soon)
                await sleep(0)
            else:
                await sleep(max(wait, tick_s))
            yielded = clock()
    finally:
        for c in conns:
            c.after_read = None
    await _drain(conns, rec, timeout_ns, timeout_s if grace_s is None else grace_s)


SELECT_FD_LIMIT = 1024  # select()'s FD_SETSIZE


def _fds(conns: Sequence[LoadConn]) -> list[int]:
    """The open connections' socket descriptors, or [] when any is beyond what select() takes."""
    fds = [c.fileno() for c in conns]
    if any(fd >= SELECT_FD_LIMIT for fd in fds):
        return []
    return [fd for fd in fds if fd >= 0]


def _wait_readable(fds: list[int], conns: Sequence[LoadConn], timeout_s: float) -> tuple[list[int], bool]:
    """Block up to ``timeout_s`` until a connection has something to read: (the descriptors to use next
    time, a connection that closed left out; whether something is readable)."""
    try:
        readable, _, _ = select.select(fds, [], [], timeout_s)
        return fds, bool(readable)
    except (OSError, ValueError):  # a descriptor closed under us: take the live ones again
        return _fds([c for c in conns if c.alive]), True


class _Schedule:
    """Request ``k`` is due at ``t0 + k / rate``; ``pump`` sends every request due by now, one write per
    connection."""

    def __init__(self, conns: Sequence[LoadConn], rec: Recorder, *, rate: float, duration_s: float,
                 work_len: int, offset: int, least_loaded: bool) -> None:
        self.conns, self.rec = conns, rec
        self.interval = 1e9 / rate
        self.total = max(1, round(rate * duration_s))
        self.work_len, self.offset, self.least_loaded = work_len, offset, least_loaded
        self.sent = 0
        self.t0 = 0

    def start(self) -> int:
        self.t0 = time.perf_counter_ns()
        self.rec.start(self.t0)
        return self.t0

    def pump(self) -> None:
        now = time.perf_counter_ns()
        sent, total = self.sent, self.total
        due = min(total, int((now - self.t0) / self.interval) + 1)
        if sent >= due:
            return
        conns, rec, n = self.conns, self.rec, len(self.conns)
        t0, interval, work_len, offset = self.t0, self.interval, self.work_len, self.offset
        while sent < due:
            sched = t0 + int(sent * interval)
            conn = min(conns, key=_load) if self.least_loaded else conns[sent % n]
            if conn.alive:
                conn.queue((offset + sent) % work_len, sched)
                rec.sent_one(sched, now)
            else:
                rec.not_sent += 1
            sent += 1
        self.sent = sent
        for c in conns:
            c.flush()

    def next_due_s(self) -> float:
        """Seconds until the next request is due (0 or less: due now)."""
        return (self.t0 + self.sent * self.interval - time.perf_counter_ns()) / 1e9


class ClosedDriver:
    """Closed loop: each connection keeps ``depth`` requests in flight until the deadline or the count."""

    def __init__(self, rec: Recorder, *, depth: int, duration_s: float, max_requests: int, work_len: int,
                 offset: int = 0, timeout_s: float = 5.0) -> None:
        if depth < 1 or duration_s <= 0 or max_requests < 1 or work_len < 1:
            raise ValueError("a closed loop needs depth >= 1, duration > 0, max_requests >= 1 and a workload")
        self.rec, self.depth, self.duration_s = rec, depth, duration_s
        self.max_requests, self.work_len, self.offset = max_requests, work_len, offset
        self.timeout_s = timeout_s
        self.deadline_ns = 0
        self.sent = 0

    def on_answer(self, conn: Any) -> None:
        now = time.perf_counter_ns()
        if now < self.deadline_ns and self.sent < self.max_requests and conn.alive:
            conn.send((self.offset + self.sent) % self.work_len, now)
            self.sent += 1
            self.rec.sent_closed(now)

    def _top_up(self, conns: Sequence[Any], now: int) -> None:
        for c in conns:
            while c.alive and c.in_flight < self.depth and self.sent < self.max_requests and now < self.deadline_ns:
                c.send((self.offset + self.sent) % self.work_len, now)
                self.sent += 1
                self.rec.sent_closed(now)

    async def run(self, conns: Sequence[Any], grace_s: float | None = None) -> None:
        clock = time.perf_counter_ns
        timeout_ns = int(self.timeout_s * 1e9)
        t0 = clock()
        self.rec.start(t0)
        self.deadline_ns = t0 + int(self.duration_s * 1e9)
        self._top_up(conns, t0)
        while clock() < self.deadline_ns and self.sent < self.max_requests:
            await asyncio.sleep(min(0.05, max(0.0, (self.deadline_ns - clock()) / 1e9)))
            now = clock()
            self.rec.maybe_progress(now)
            for c in conns:
                c.expire(now, timeout_ns)
            if not any(c.alive for c in conns):
                self.rec.aborted = f"{_first_error(conns)} at {(now - t0) / 1e9:.1f} s; the run stopped there"
                break
            self._top_up(conns, now)
        self.deadline_ns = 0  # no more sends
        await _drain(conns, self.rec, timeout_ns, self.timeout_s if grace_s is None else grace_s)


async def _drain(conns: Sequence[Any], rec: Recorder, timeout_ns: int, grace_s: float) -> None:
    clock = time.perf_counter_ns
    end = clock() + int(grace_s * 1e9)
    while clock() < end and any(c.alive and c.in_flight for c in conns):
        now = clock()
        for c in conns:
            c.expire(now, timeout_ns)
        await asyncio.sleep(0.005)
    _settle(conns, rec)


def _load(c: LoadConn) -> int:
    return c.in_flight if c.alive else 1 << 60


def _fire(event: Event, now: int, t0: int) -> None:
    event.fired_s = round((now - t0) / 1e9, 3)
    try:
        event.action()
    except Exception as exc:  # an event that fails (the process was already gone) is reported, not raised
        event.error = f"{type(exc).__name__}: {exc}"


__all__ = ["ClosedDriver", "Event", "LoadConn", "Recorder", "RestLoadConnection", "open_loop"]
