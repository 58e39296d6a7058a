"""The targets the issues set, each with its figure, its baseline ratio and a status, and what ``--check``
fails on.

Status of a target:
- ``PASS`` / ``FAIL``: measured, and within or beyond its limit;
- ``MISSING``: the run included what measures it, but the figure is not there (the scenario failed, the
  node's CPU or memory could not be read, ...): ``--check`` fails on it as on ``FAIL``;
- ``N/A``: the run measured something else than the target names (the latency model on where the target
  says off, a topology other than Shandong, a cluster the bench did not start): not a pass;
- ``NOT RUN``: nothing in the run measures it.

``problems(rep)`` lists what makes a ``--check`` run fail: every ``FAIL`` and ``MISSING`` target, every
scenario that failed, and every run whose servers' counters disagree with the client's (or could not be
read). ``rest_batch_targets`` gives the targets of ``bench rest`` and ``bench batch`` in the same form.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .config import TARGET_IDS_PER_S, TARGET_REST_RATIO

MB = 1024 * 1024
BenchTarget = dict[str, Any]


def _find(rep: Mapping[str, Any], scenario: str, protocol: str = "binary", latency: str | None = None,
          modes: tuple[str, ...] = ("closed", "sweep", "rate")) -> Mapping[str, Any] | None:
    """The first result of ``scenario`` over ``protocol`` (and latency), preferring modes in that order."""
    found = [r for r in rep.get("results", []) if r.get("scenario") == scenario and r.get("protocol") == protocol
             and "error" not in r and (latency is None or r.get("latency") == latency) and r.get("mode") in modes]
    found.sort(key=lambda r: modes.index(r["mode"]))
    return found[0] if found else None


def _asked(rep: Mapping[str, Any], scenario: str, protocol: str = "binary",
           modes: tuple[str, ...] = ("closed", "sweep", "rate")) -> list[Mapping[str, Any]]:
    """Every result (failed ones too) of what the run was asked to measure."""
    return [r for r in rep.get("results", []) if r.get("scenario") == scenario and r.get("protocol") == protocol
            and r.get("mode") in modes]


def _latency_off(rep: Mapping[str, Any], scenario: str, modes: tuple[str, ...],
                 not_run: str) -> tuple[bool, bool, Mapping[str, Any] | None, str]:
    """For a target that names the latency model off: (asked, applicable, the result to read, how). It
    does not apply when every run of it had the model on."""
    asked = _asked(rep, scenario, modes=modes)
    if {r.get("latency") for r in asked if r.get("latency")} == {"on"}:
        return True, False, None, "measured with the latency model on; the target names it off (use --latency off)"
    return bool(asked), True, _find(rep, scenario, latency="off", modes=modes), not_run


def _node_base(r: Mapping[str, Any], key: str) -> tuple[Any, Any, str]:
    """(node figure, baseline figure, how measured) from the best run kind available."""
    if r.get("mode") == "closed" and "median" in r:
        m = r["median"]
        return m["node"].get(key), (m.get("baseline") or {}).get(key), f"closed loop, median of {m['node']['runs']}"
    if r.get("sweep"):
        sw = r["sweep"]
        node = sw["node"]["probe"]["flat"].get(key)
        base = sw.get("baseline", {}).get("probe", {}).get("flat", {}).get(key)
        return node, base, "closed-loop probe of the sweep"
    if "median" in r:
        m = r["median"]
        return m["node"].get(key), (m.get("baseline") or {}).get(key), f"open loop, median of {m['node']['runs']}"
    return None, None, ""


def target(tid: str, issue: str, text: str, value: Any, unit: str, op: str, limit: float, *, asked: bool,
           applicable: bool = True, baseline: Any = None, baseline_text: str = "", how: str = "",
           note: str = "", met: bool | None = None) -> BenchTarget:
    """One target. ``met`` overrides the comparison (a measured value that still fails, or a band)."""
    if not asked:
        status = "NOT RUN"
    elif not applicable:
        status = "N/A"
    elif value is None:
        status = "MISSING"
    else:
        if met is None:
            met = value >= limit if op == ">=" else value <= limit
        status = "PASS" if met else "FAIL"
    t: BenchTarget = {"id": tid, "issue": issue, "text": text, "value": value, "unit": unit, "op": op, "limit": limit,
                 "status": status, "met": {"PASS": True, "FAIL": False}.get(status), "how": how, "note": note}
    if baseline is not None and value is not None:
        t["baseline"] = baseline
        t["baseline_ratio"] = round(value / baseline, 3) if baseline else None
        t["baseline_text"] = baseline_text
    return t


def _rss_mb(c: Mapping[str, Any]) -> float:
    return max((x or {}).get("total_bytes", 0) for x in (c.get("rss_ready"), c.get("rss_after"))) / MB


def _memory_problems(c: Mapping[str, Any]) -> list[str]:
    out = []
    for when in ("rss_ready", "rss_after"):
        x = c.get(when) or {}
        if not x:
            out.append(f"no memory reading {when.split('_')[1]}")
            continue
        if x.get("unreadable"):
            out.append(f"memory of pid(s) {x['unreadable']} unreadable ({when.split('_')[1]})")
        if x.get("nodes_missing"):
            out.append(f"{len(x['nodes_missing'])} node(s) in no worker found ({when.split('_')[1]}): "
                       f"{', '.join(x['nodes_missing'][:5])}")
        if x.get("nodes_doubled"):
            out.append(f"node(s) in two workers: {', '.join(x['nodes_doubled'][:5])}")
    return out


def targets(rep: Mapping[str, Any]) -> list[BenchTarget]:
    out = []
    # T1 (load benchmarking) is H1 (hierarchy): one figure, reported once. It is a maximum rate: closed loop
    # (or a sweep's closed-loop probe); at a low fixed rate the CPU per answer is mostly idle overhead.
    asked, applies, cached, how = _latency_off(rep, "cached", ("closed", "sweep"),
                                               "not measured: run --scenario cached --closed (latency off) over binary")
    node = base = None
    if cached:
        node, base, how = _node_base(cached, "server_answers_per_cpu_s")
        rate_n, rate_b, _ = _node_base(cached, "rate_per_s")
        how += (f"; {rate_n:,.0f} answers/s wall clock" if rate_n else "") + (f", echo {rate_b:,.0f}/s" if rate_b else "")
        if node is None:
            how += "; the recursive node's CPU could not be read (not in a process of its own?)"
    out.append(target("T1", "load benchmarking T1 = hierarchy H1", "cached binary resolution through the recursive "
                      "node (latency off), answers per CPU-second of its own process (one core)", node,
                      "answers/cpu-s", ">=", 40_000, asked=asked, applicable=applies, baseline=base,
                      baseline_text="bare asyncio msgpack echo, answers per CPU-second", how=how))
    asked, applies, swept, how = _latency_off(rep, "cached", ("sweep",),
                                              "not measured: run --scenario cached --sweep (latency off)")
    p99 = bp99 = None
    if swept:
        sw = swept["sweep"]
        hm = sw["node"].get("half_median") or sw["node"]["half"]["flat"]
        p99 = hm.get("p99_us")
        bhm = sw.get("baseline", {}).get("half_median") or sw.get("baseline", {}).get("half", {}).get("flat", {})
        bp99 = bhm.get("p99_us")
        lag = sw["node"]["half"].get("send_lag", {})
        how = (f"open loop at {sw['node']['half'].get('offered_per_s', 0):,.0f}/s = half of the saturation "
               f"{sw['node']['saturation_per_s']:,.0f}/s, median of {hm.get('runs', 1)}; every request counted "
               f"(errors and timeouts at the timeout), successes only p99 {hm.get('ok_p99_us')} us; the "
               f"generator's own lateness (p99 {lag.get('p99_us')} us in the median run) is in it")
    out.append(target("T2", "load benchmarking", "latency model off: open-loop p99 at half the saturation rate "
                      "(cached, binary)", p99, "us", "<=", 2_000, asked=asked, applicable=applies,
                      baseline=bp99, baseline_text="echo at the same rate, p99", how=how))
    out.append(_t3(rep))
    asked, applies, cold, how = _latency_off(rep, "cold", ("closed", "sweep"),
                                             "not measured: run --scenario cold --closed (latency off) over binary")
    rate = brate = None
    if cold:
        rate, brate, how = _node_base(cold, "rate_per_s")
        if cold.get("sweep"):
            rate = cold["sweep"]["node"]["saturation_per_s"]
            brate = cold["sweep"].get("baseline", {}).get("saturation_per_s")
            how = "saturation of the sweep"
        cpu, _, _ = _node_base(cold, "cluster_us_per_answer")
        if cpu:
            how += f"; all cluster processes together {cpu:,.0f} us CPU per answer ({1e6 / cpu:,.0f} answers per CPU-second)"
    out.append(target("H2", "hierarchy", "latency model off: cold resolution through the whole chain (top, "
                      "secondary, enterprise), answers/s", rate, "answers/s", ">=", 5_000, asked=asked,
                      applicable=applies, baseline=brate, baseline_text="bare asyncio msgpack echo, answers/s", how=how))
    out.extend(_h3_h4(rep))
    return out


def _t3(rep: Mapping[str, Any]) -> BenchTarget:
    asked = _asked(rep, "latency-on")
    lat_on = _find(rep, "latency-on")
    ratio = None
    how, applicable, note = "not measured: run --scenario latency-on (Shandong)", True, ""
    if lat_on:
        applicable = lat_on.get("cluster") == "shandong"
        if not applicable:
            note = f"measured on {lat_on.get('cluster')}; the target names the Shandong topology"
        md = lat_on.get("model", {})
        if "ratio" not in md:
            how = f"no expectation: {md.get('note', 'the model check did not run')}"
        else:
            ratio = md["ratio"]
            how = (f"measured mean {md['measured_mean_us'] / 1000:.2f} ms (every request) vs expected "
                   f"{md['expected_mean_us'] / 1000:.2f} ms, summed by the benchmark from the topology file over "
                   f"the identifiers' paths (first top-level node {md.get('first_top')})")
            roles = lat_on.get("trace", {}).get("roles", {})
            excess = [f"{role} {(f['mean_us'] - f['model_us']) / 1000:+.2f} ms" for role, f in roles.items()
                      if f.get("model_us")]
            if excess:
                how += "; per hop, measured minus model: " + ", ".join(excess)
            off = ((_find(rep, "latency-off") or {}).get("model") or {}).get("measured_mean_us")
            if off is not None and md["expected_mean_us"]:
                added = (md["measured_mean_us"] - off) / md["expected_mean_us"]
                how += (f"; what the model adds (latency-on minus latency-off mean, {off / 1000:.2f} ms) / expected "
                        f"= {added:.3f}")
    t = target("T3", "load benchmarking", "Shandong latency model on: mean cold resolution latency / the model's "
               "expected sum of round trips (within 5 %)", ratio, "x", "within 5 % of", 1.0, asked=bool(asked),
               applicable=applicable, how=how, note=note,
               met=None if ratio is None else abs(ratio - 1.0) <= 0.05)
    return t


def _h3_h4(rep: Mapping[str, Any]) -> list[BenchTarget]:
    clusters = rep.get("clusters", [])
    sd = [c for c in clusters if c.get("own") and c.get("topology") == "shandong"]
    na = "" if sd else ("the bench did not start a Shandong cluster itself (--topology shandong, no --data-dir)")
    ready = max((c["ready_s"] for c in sd if c.get("ready_s") is not None), default=None)
    h3 = target("H3", "hierarchy", "the whole Shandong cluster ready (`idresolve up` until its 'ready in' line)",
                ready, "s", "<=", 5.0, asked=bool(clusters), applicable=bool(sd),
                how=f"worst of {len(sd)} start(s)" if sd else na)
    rss = round(max(_rss_mb(c) for c in sd), 1) if sd else None
    problems = [p for c in sd for p in _memory_problems(c)]
    how = "largest of at start and after the runs (before a kill)" if sd else na
    if problems:
        how += "; cannot be trusted: " + "; ".join(problems)
    h4 = target("H4", "hierarchy", "the whole Shandong cluster, VmRSS of `up` and every worker together", rss, "MB",
                "<=", 600, asked=bool(clusters), applicable=bool(sd), how=how,
                met=None if rss is None else (rss <= 600 and not problems))
    return [h3, h4]


def rest_batch_targets(rest: Mapping[str, Any] | None = None, batch: Mapping[str, Any] | None = None) -> list[BenchTarget]:
    """``bench rest``: node / bare aiohttp requests/s; ``bench batch``: identifiers/s, core and over REST."""
    out = []
    if rest is not None:
        out.append(target("R1", "REST", "REST resolution at one node: requests/s over a bare aiohttp handler's",
                          rest.get("ratio"), "x", ">=", TARGET_REST_RATIO, asked=True,
                          how=f"median of {len(rest.get('node', {}).get('runs', []))} runs"))
    if batch is not None:
        for tid, key, what in (("B1", "core", "AuthoritativeNode.batch_create on SQLite"),
                               ("B2", "rest", "POST /api/batch to a node")):
            out.append(target(tid, "batch registration", f"batch registration, {what}: identifiers/s",
                              (batch.get(key) or {}).get("median_ids_per_s"), "ids/s", ">=", TARGET_IDS_PER_S,
                              asked=True, how="median of the runs"))
        tpl = batch.get("template")
        if tpl is not None:  # bench batch --template
            for tid, key, what in (("B3", "core", "core"), ("B4", "rest", "POST /api/batch")):
                out.append(target(tid, "batch registration", f"batch registration naming a template, {what}: time "
                                  "over the same batch unchecked", tpl.get(f"{key}_cost"), "x", "<=",
                                  tpl["target_cost"], asked=True, how="median of the paired runs"))
    return out


def _crosschecks(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """(where, verdict) of every server-counter cross-check in a result, however deep."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "crosscheck":
                verdict = v.get("verdict") if isinstance(v, Mapping) else v
                if isinstance(verdict, str):
                    yield where, verdict
            else:
                yield from _crosschecks(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _crosschecks(v, f"{where}[{i}]")


def problems(rep: Mapping[str, Any]) -> list[str]:
    """Why a ``--check`` run fails (empty: it passes)."""
    out = []
    for t in rep.get("targets", []):
        if t["status"] in ("FAIL", "MISSING"):
            out.append(f"target {t['id']} {t['status']}: {t['text']}: {_value(t)} (target {t['op']} {t['limit']:,g})"
                       + (f"; {t['how']}" if t["status"] == "MISSING" and t.get("how") else ""))
    for r in rep.get("results", []):
        name = f"{r.get('scenario')}/{r.get('protocol')}/{r.get('mode')}"
        if "error" in r:
            out.append(f"{name} failed: {r['error']}")
            continue
        bad = sorted({w for w, v in _crosschecks(r, name) if v in ("DISAGREE", "unavailable")})
        for w in bad[:5]:
            out.append(f"server counters {'disagree with the client' if 'DISAGREE' in _verdicts(r, w) else 'unavailable'}"
                       f" in {w}")
        if len(bad) > 5:
            out.append(f"... and {len(bad) - 5} more runs of {name} whose server counters do not check out")
    return out


def _verdicts(r: Mapping[str, Any], where: str) -> set[str]:
    name = f"{r.get('scenario')}/{r.get('protocol')}/{r.get('mode')}"
    return {v for w, v in _crosschecks(r, name) if w == where}


def _value(t: BenchTarget) -> str:
    v = t["value"]
    if v is None:
        return "not measured"
    if t["unit"] == "x":
        return f"{v:.3f}x"
    return f"{v:,.1f} {t['unit']}" if isinstance(v, float) and v < 100 else f"{v:,.0f} {t['unit']}"


def targets_text(ts: list[BenchTarget]) -> str:
    lines = ["targets (PASS/FAIL; MISSING: measured nothing where it should have; N/A: the run measured something "
             "else; `--check` fails on FAIL and MISSING):"]
    for t in ts:
        line = f"  [{t['status']}] {t['id']} ({t['issue']}): {t['text']}: {_value(t)} (target {t['op']} {t['limit']:,g})"
        if t.get("baseline_ratio") is not None:
            line += f"; {t['baseline_text']} {t['baseline']:,.0f}, ratio {t['baseline_ratio']:.3f}"
        if t.get("how"):
            line += f"\n         {t['how']}"
        if t.get("note"):
            line += f"\n         note: {t['note']}"
        lines.append(line)
    return "\n".join(lines)


def check_text(found: list[str]) -> str:
    if not found:
        return "check: every target measured and met, every server counter agrees"
    return "check FAILED:\n  " + "\n  ".join(found)
