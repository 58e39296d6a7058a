"""Generated topologies (core/topogen.py, ``idresolve topology generate``) and the cluster-size table
(bench/sizes.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from idresolve.bench import sizes
from idresolve.core.topogen import GenError, GenSpec, generate
from idresolve.core.topology import load_topology, parse_topology
from idresolve.runtime.metrics import merge_texts
from procs import IDRESOLVE, clean_env


@pytest.mark.parametrize(("secondaries", "per", "own", "running"), [(20, 9, None, 203), (50, 9, None, 504),
                                                                     (3, 4, 1, 2 + 3 + 3 + 1)])
def test_generated_sizes(secondaries: int, per: int, own: int | None, running: int) -> None:
    spec = GenSpec(secondaries, per, own_nodes=own)
    topo = parse_topology(generate(spec))
    assert spec.running_nodes == len(topo.running_nodes()) == running
    assert len(topo.nodes_by_role("enterprise")) == secondaries * per
    hosted = [e for e in topo.nodes_by_role("enterprise") if e.hosted]
    assert len(hosted) == secondaries * (per - (per if own is None else own))
    assert all(s.connected for s in topo.nodes_by_role("secondary"))
    assert generate(spec) == generate(spec)  # pure


def test_generated_workers_and_bad_settings() -> None:
    topo = parse_topology(generate(GenSpec(2, 1, secondary_workers=3)))
    assert {s.workers for s in topo.nodes_by_role("secondary")} == {3}
    for bad in (GenSpec(0, 1), GenSpec(1, 2, own_nodes=3), GenSpec(1, 1, secondary_workers=0)):
        with pytest.raises(GenError):
            generate(bad)


def test_topology_workers_validated() -> None:
    base = generate(GenSpec(1, 1))
    with pytest.raises(ValueError, match="workers"):
        parse_topology(base.replace('connected = true\n', 'connected = true\nworkers = 0\n', 1))
    hosted = generate(GenSpec(1, 1, own_nodes=0))
    with pytest.raises(ValueError, match="hosted enterprise"):
        parse_topology(hosted.replace("hosted = true\n", "hosted = true\nworkers = 2\n", 1))


def test_cli_generate_writes_a_loadable_file(tmp_path: Path) -> None:
    out = tmp_path / "t.toml"
    res = subprocess.run([*IDRESOLVE, "topology", "generate", "--secondary", "4", "--enterprises-per-secondary", "2",
                          "--out", str(out)], capture_output=True, text=True, timeout=30, env=clean_env())
    assert res.returncode == 0, res.stderr
    assert "15 running nodes" in res.stdout
    assert len(load_topology(out).running_nodes()) == 15
    bad = subprocess.run([*IDRESOLVE, "topology", "generate", "--secondary", "0", "--enterprises-per-secondary", "2"],
                         capture_output=True, text=True, timeout=30, env=clean_env())
    assert bad.returncode == 2 and "secondaries must be" in bad.stderr


def test_merge_sums_counters_and_histograms_keeps_own_gauges() -> None:
    def text(n: int, records: int) -> bytes:
        return (f'# HELP idresolve_requests_total Requests answered\n# TYPE idresolve_requests_total counter\n'
                f'idresolve_requests_total{{surface="rest",code="200"}} {n}.0\n'
                f'# HELP idresolve_request_seconds t\n# TYPE idresolve_request_seconds histogram\n'
                f'idresolve_request_seconds_bucket{{le="0.1"}} {n}.0\nidresolve_request_seconds_bucket{{le="+Inf"}} '
                f'{n}.0\nidresolve_request_seconds_count {n}.0\nidresolve_request_seconds_sum 0.5\n'
                f'# HELP idresolve_records r\n# TYPE idresolve_records gauge\nidresolve_records {records}.0\n').encode()
    merged = merge_texts(text(3, 10), [text(4, 10), text(5, 11)]).decode()
    assert 'idresolve_requests_total{code="200",surface="rest"} 12.0' in merged
    assert 'idresolve_request_seconds_bucket{le="+Inf"} 12.0' in merged
    assert "idresolve_request_seconds_sum 1.5" in merged
    assert "idresolve_records 10.0" in merged


def test_size_rows_from_reports() -> None:
    def report(nodes: int, rate: float) -> dict:
        return {"clusters": [{"topology": f"t{nodes}", "nodes": nodes, "processes": 3, "ready_s": 1.5,
                              "rss_ready": {"total_bytes": nodes * 2**20}}],
                "results": [{"scenario": "cold", "protocol": "binary", "cluster": f"t{nodes}",
                             "median": {"node": {"rate_per_s": rate, "p50_us": 100, "p99_us": 900},
                                        "baseline": {"rate_per_s": 2 * rate}}}]}
    table = sizes.rows([report(500, 1000.0), report(6, 3000.0)])
    assert [r["nodes"] for r in table] == [6, 500]
    assert table[1]["rss_per_node_mb"] == 1.0
    assert table[0]["scenarios"]["cold/binary"]["node"]["rate_per_s"] == 3000.0
    md = sizes.text(table)
    assert "| t500 | 500 | 3 | 1.50 | 500 | 1.00 | 1,000 | 100 | 900 | 2,000 |" in md
    assert all(svg.startswith("<svg") for svg in sizes.charts(table).values())
