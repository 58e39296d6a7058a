"""Faults injected into a running emulated cluster: what they are, the table every worker holds, and the
client of the workers' control channel that the CLI (``idresolve fault``) and the dashboard both use.

Faults (``Fault.kind``):
- ``kill``: the node stops serving (its listeners close, its connections break, its store closes), as if
  its process had died; removing the fault (``restart``, ``heal``, or its duration running out) starts it
  again on the same store and ports.
- ``partition``: every message between the nodes of ``nodes`` and those of ``others`` (everyone else when
  ``others`` is empty) is dropped; each side still works inside itself.
- ``slow``: every link to and from the node takes ``factor`` times the latency model's delay (a link
  shorter than 1 ms, or with the latency model off, counts as 1 ms).
- ``link``: messages between the two nodes pay ``delay_ms`` more one way and are lost with probability
  ``loss``.
Faults act only in the emulated network (``net.links.LinkModel``, between the cluster's own nodes) and in
the node hosts (``cluster.worker``), never on the machine's real network: clients outside the cluster (the
CLI, curl, the load generator) reach every node that is up.

The control channel: every worker listens on a loopback port of its own (an aiohttp app, port 0) and
prints it in its ready line; the supervisor writes all of them to ``DATA_DIR/control.json``. A request
needs ``Authorization: Bearer <token>``, an HMAC of the cluster secret (readable by the cluster's owner
only). Every worker holds the same fault table: a fault is sent to every worker, each applies it to the
links of its own nodes (and kills or restarts the nodes it hosts), and each undoes it by itself when its
``until`` (wall-clock seconds) has passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..net.links import LinkEffect

KINDS = ("kill", "partition", "slow", "link")
CONTROL_FILE = "control.json"
MAX_FACTOR = 1000.0
MAX_DELAY_MS = 60_000.0
MAX_DURATION_S = 7 * 86400.0


class FaultError(ValueError):
    """A fault that cannot be applied as asked (a bad argument, an unknown node, an unreachable worker)."""


@dataclass(frozen=True, slots=True)
class Fault:
    id: str
    kind: str
    nodes: tuple[str, ...]
    others: tuple[str, ...] = ()
    factor: float = 1.0
    delay_ms: float = 0.0
    loss: float = 0.0
    until: float | None = None  # wall-clock seconds when it undoes itself; None: until healed

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "nodes": list(self.nodes), "others": list(self.others),
                "factor": self.factor, "delayMs": self.delay_ms, "loss": self.loss, "until": self.until}

    def describe(self) -> str:
        if self.kind == "kill":
            what = f"kill {self.nodes[0]}"
        elif self.kind == "partition":
            what = f"partition {','.join(self.nodes)} from {','.join(self.others) or 'every other node'}"
        elif self.kind == "slow":
            what = f"slow {self.nodes[0]} x{self.factor:g}"
        else:
            what = f"link {self.nodes[0]}<->{self.nodes[1]} +{self.delay_ms:g} ms loss {self.loss:g}"
        return what


def _number(raw: object, what: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= float(raw) <= high:
        raise FaultError(f"{what} must be a number between {low:g} and {high:g}, not {raw!r}")
    return float(raw)


def _names(raw: object, what: str) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or not all(isinstance(n, str) and n for n in raw) or len(raw) > 10_000:
        raise FaultError(f"{what} must be a list of node names")
    return tuple(dict.fromkeys(raw))


def fault_from_json(data: object, known: Iterable[str] | None = None) -> Fault:
    """Validate a fault given as JSON (the control channel, the dashboard); ``known``: the node names."""
    if not isinstance(data, Mapping):
        raise FaultError("a fault is a JSON object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise FaultError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    nodes = _names(data.get("nodes", []), "nodes")
    others = _names(data.get("others", []), "others")
    wanted = {"kill": 1, "slow": 1, "link": 2}.get(kind)
    if wanted is not None and len(nodes) != wanted:
        raise FaultError(f"a {kind} fault names {wanted} node{'s' if wanted > 1 else ''}, not {len(nodes)}")
    if kind == "partition" and not nodes:
        raise FaultError("a partition names at least one node")
    if set(nodes) & set(others):
        raise FaultError(f"a node cannot be on both sides: {', '.join(sorted(set(nodes) & set(others)))}")
    if known is not None:
        names = set(known)
        unknown = [n for n in (*nodes, *others) if n not in names]
        if unknown:
            raise FaultError(f"no node named {', '.join(unknown)} in this cluster")
    until = data.get("until")
    if until is not None:
        until = _number(until, "until", 0, 1e11)
    fid = data.get("id") or secrets.token_hex(4)
    if not isinstance(fid, str) or len(fid) > 64:
        raise FaultError("id must be a short string")
    return Fault(fid, kind, nodes, others,
                 factor=_number(data.get("factor", 1.0), "factor", 1.0, MAX_FACTOR),
                 delay_ms=_number(data.get("delayMs", 0.0), "delay-ms", 0.0, MAX_DELAY_MS),
                 loss=_number(data.get("loss", 0.0), "loss", 0.0, 1.0), until=until)


@dataclass
class FaultSet:
    """The faults in force, as one worker holds them; ``effect`` is what ``LinkModel`` asks per message."""

    faults: dict[str, Fault] = field(default_factory=dict)
    _effects: dict[tuple[str, str], LinkEffect | None] = field(default_factory=dict)

    def add(self, fault: Fault) -> None:
        self.faults[fault.id] = fault
        self._effects.clear()

    def remove(self, fault_id: str) -> Fault | None:
        self._effects.clear()
        return self.faults.pop(fault_id, None)

    def matching(self, kind: str | None = None, node: str | None = None) -> list[Fault]:
        return [f for f in self.faults.values()
                if (kind is None or f.kind == kind) and (node is None or node in f.nodes)]

    def killed(self) -> set[str]:
        return {f.nodes[0] for f in self.faults.values() if f.kind == "kill"}

    def expired(self, now: float) -> list[Fault]:
        return [f for f in self.faults.values() if f.until is not None and f.until <= now]

    def __bool__(self) -> bool:
        return bool(self.faults)

    def effect(self, src: str, dst: str) -> LinkEffect | None:
        if not self.faults:
            return None
        key = (src, dst)
        try:
            return self._effects[key]
        except KeyError:
            pass
        eff = self._effects[key] = self._compute(src, dst)
        return eff

    def _compute(self, src: str, dst: str) -> LinkEffect | None:
        dropped, factor, extra, keep, any_fault = False, 1.0, 0.0, 1.0, False
        for f in self.faults.values():
            if f.kind == "partition":
                a = src in f.nodes and (dst in f.others if f.others else dst not in f.nodes)
                b = dst in f.nodes and (src in f.others if f.others else src not in f.nodes)
                if a or b:
                    dropped = any_fault = True
            elif f.kind == "slow" and (src in f.nodes or dst in f.nodes):
                factor *= f.factor
                any_fault = True
            elif f.kind == "link" and {src, dst} == set(f.nodes):
                extra += f.delay_ms
                keep *= 1.0 - f.loss
                any_fault = True
        if not any_fault:
            return None
        return LinkEffect(dropped=dropped, factor=factor, extra_ms=extra, loss=1.0 - keep)


# -- the control channel's token and its address file ----------------------------------------------------

def control_token(master: str) -> str:
    """The bearer token of the workers' control channel, derived from the cluster secret."""
    return hmac.new(master.encode(), b"idresolve control channel", hashlib.sha256).hexdigest()


def token_ok(header: str | None, token: str) -> bool:
    return bool(header) and hmac.compare_digest(str(header).encode(), f"Bearer {token}".encode())


def write_control_file(data_dir: Path, workers: Sequence[Mapping[str, Any]], dashboard: str | None = None) -> None:
    tmp = data_dir / (CONTROL_FILE + ".tmp")
    tmp.write_text(json.dumps({"workers": list(workers), "dashboard": dashboard}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, data_dir / CONTROL_FILE)


def read_control_file(data_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((data_dir / CONTROL_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FaultError(f"no control channel in {data_dir} ({CONTROL_FILE} is missing): is the cluster "
                         "running (`idresolve up`)?") from None
    except ValueError as exc:
        raise FaultError(f"{data_dir / CONTROL_FILE} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list):
        raise FaultError(f"{data_dir / CONTROL_FILE} has no worker list")
    return data


# -- the client: one request to every worker ---------------------------------------------------------------

class Controller:
    """Sends control requests to every worker of a running cluster (blocking; the dashboard calls it from a
    thread). Every answer is the worker's state: the nodes it hosts, which are down, the faults in force."""

    def __init__(self, workers: Sequence[Mapping[str, Any]], token: str, *, timeout_s: float = 10.0) -> None:
        self.urls = [str(w["url"]) for w in workers]
        self.token = token
        self.timeout_s = timeout_s

    @classmethod
    def for_data_dir(cls, data_dir: Path, master: str) -> Controller:
        return cls(read_control_file(data_dir)["workers"], control_token(master))

    def _one(self, url: str, method: str, path: str, body: object) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - loopback
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise FaultError(f"the worker at {url} refused: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FaultError(f"the worker at {url} did not answer ({exc}): is the cluster still running?") from None

    def _all(self, method: str, path: str, body: object = None) -> list[dict[str, Any]]:
        if not self.urls:
            raise FaultError("the cluster has no worker to control")
        with ThreadPoolExecutor(max_workers=min(8, len(self.urls))) as pool:
            futures = [pool.submit(self._one, u, method, path, body) for u in self.urls]
            errors, out = [], []
            for f in futures:
                try:
                    out.append(f.result())
                except FaultError as exc:
                    errors.append(str(exc))
        if errors:
            raise FaultError("; ".join(errors))
        return out

    def state(self) -> dict[str, Any]:
        """The faults in force (as the first worker holds them), the nodes down, and the latency setting."""
        return merge_states(self._all("GET", "/control"))

    def add(self, fault: Fault) -> dict[str, Any]:
        return merge_states(self._all("POST", "/control/faults", fault.to_json()))

    def remove(self, *, fault_id: str | None = None, kind: str | None = None, node: str | None = None) -> dict[str, Any]:
        body = {"id": fault_id, "kind": kind, "node": node}
        return merge_states(self._all("POST", "/control/remove", body))

    def heal(self) -> dict[str, Any]:
        return merge_states(self._all("POST", "/control/heal", {}))

    def latency(self, latency: str, scenario: str | None) -> dict[str, Any]:
        return merge_states(self._all("POST", "/control/latency", {"latency": latency, "scenario": scenario}))


def merge_states(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    down: list[str] = []
    errors: dict[str, str] = {}
    for s in states:
        for f in s.get("faults", []):
            faults.setdefault(f["id"], f)
        down.extend(s.get("down", []))
        errors.update(s.get("errors", {}))
    first = states[0] if states else {}
    return {"faults": sorted(faults.values(), key=lambda f: f["id"]), "down": sorted(down), "errors": errors,
            "latency": first.get("latency"), "scenario": first.get("scenario")}


def new_fault(kind: str, nodes: Sequence[str], *, others: Sequence[str] = (), factor: float = 1.0,
              delay_ms: float = 0.0, loss: float = 0.0, duration_s: float | None = None,
              now: float, known: Iterable[str] | None = None) -> Fault:
    """A fault as the CLI and the dashboard make it: validated, with an id and an expiry from ``duration_s``."""
    until = None
    if duration_s is not None:
        until = now + _number(duration_s, "duration", 0.001, MAX_DURATION_S)
    return fault_from_json({"kind": kind, "nodes": list(nodes), "others": list(others), "factor": factor,
                            "delayMs": delay_ms, "loss": loss, "until": until}, known)
