"""docker-compose.yml from a topology (``idresolve compose``) and the ``idresolve bootstrap`` step it runs.

Docker itself is NOT available on this machine: there is no engine (and no compose plugin), so nothing
here builds the image or starts a container. Instead the last test runs the containers' own commands,
read from a generated compose file, as plain subprocesses on 127.0.0.1 (``containerutil.localize`` says
what is replaced: only names, the bind address and in-image paths): every node service's worker command,
its healthcheck, the bootstrap service's command (which seeds identifiers), a resolution of the demo
identifier through the recursive node's published port, and the ``locust`` service's command, as a short
headless run whose requests must all succeed.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from clusterutil import free_base_port
from containerutil import (
    DEMO,
    LOCUST,
    MINIMAL,
    ROOT,
    SHANDONG,
    WORKER,
    Proc,
    arg,
    check_locust_run,
    clean_env,
    cli,
    load_yaml,
    localize,
    run_idresolve,
    secret_like_lines,
    stop_all,
    strings_in,
)
from idresolve.cluster.compose import (
    APP_DIR,
    DATA_DIR,
    SECRET_ENV,
    SECRET_NAME,
    SECRET_TARGET,
    ComposeOptions,
    compose_dict,
    drift_summary,
    dump_yaml,
    render,
)
from idresolve.cluster.plan import PORTS_PER_NODE, make_plan
from idresolve.core.codes import ResponseCode
from idresolve.core.topology import load_topology
from idresolve.net.blocking import BlockingClient

CHECKED_IN = ROOT / "docker-compose.yml"



# -- the checked-in file ------------------------------------------------------------------------------------

def test_checked_in_file_is_current():
    r = run_idresolve("compose", "--config", str(SHANDONG), "--out", str(CHECKED_IN), "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "up to date" in r.stdout


def test_checked_in_file_runs_every_node_with_the_plan_ports():
    doc = load_yaml(CHECKED_IN)
    topology = load_topology(SHANDONG)
    plan = make_plan(topology)  # what `idresolve up` runs: the same ports
    assert doc == compose_dict(topology, ComposeOptions("shandong.toml")), "the YAML reads back as the generator's dict"
    services = doc["services"]
    assert set(services) == {n.name for n in plan.nodes} | {"bootstrap", "locust"}
    assert len(plan.nodes) == len(topology.running_nodes()) > 60

    published = []
    for n in plan.nodes:
        svc = services[n.name]
        cmd = svc["command"]
        assert cmd[:3] == WORKER
        assert arg(cmd, "--node") == n.name and arg(cmd, "--host") == n.name
        assert arg(cmd, "--bind") == "0.0.0.0" and arg(cmd, "--dial-hosts") == "names"
        assert arg(cmd, "--latency") == "on" and arg(cmd, "--base-port") == str(plan.base_port)
        assert arg(cmd, "--config") == f"{APP_DIR}/config/shandong.toml" and arg(cmd, "--data-dir") == DATA_DIR
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"] and f"http://127.0.0.1:{n.http_port}/healthz" in test[3]
        assert "urllib" in test[3]
        assert "profiles" not in svc
        assert svc["volumes"] == [f"{n.name}-data:{DATA_DIR}"]
        assert [s["target"] for s in svc["secrets"] if s["source"] == SECRET_NAME] == [SECRET_TARGET]
        if n.role == "recursive":
            assert sorted(svc["ports"]) == sorted([
                f"127.0.0.1:{n.tcp_port}:{n.tcp_port}/tcp", f"127.0.0.1:{n.udp_port}:{n.udp_port}/udp",
                f"127.0.0.1:{n.http_port}:{n.http_port}/tcp"])
        published += svc.get("ports", [])
    recursive = plan.by_role("recursive")
    assert len(published) == 3 * len(recursive) > 0
    assert not any("ports" in svc for name, svc in services.items() if name in ("bootstrap", "locust"))

    boot = services["bootstrap"]
    assert boot["command"][:2] == ["idresolve", "bootstrap"] and arg(boot["command"], "--dial-hosts") == "names"
    assert arg(boot["command"], "--seed") == "1000"  # the identifiers Locust asks for
    assert boot["depends_on"] == {n.name: {"condition": "service_healthy"} for n in plan.nodes}
    assert boot["restart"] == "no"
    locust = services["locust"]
    assert locust["profiles"] == ["load"]
    assert arg(locust["command"], "-f") == "/app/loadtests/locustfile.py" and "--headless" in locust["command"]
    # Where the nodes are and what was seeded: from the topology in the image and the bootstrap's count,
    # not from a volume (the bootstrap writes none) nor from cluster.json (only `idresolve up` writes it).
    cmd = locust["command"]
    assert arg(cmd, "--idr-topology") == f"{APP_DIR}/config/shandong.toml" and arg(cmd, "--idr-dial-hosts") == "names"
    assert arg(cmd, "--idr-base-port") == str(plan.base_port) and arg(cmd, "--idr-identifiers") == "1000"
    assert "--idr-data-dir" not in cmd and "--host" not in cmd  # users spread over every recursive node
    assert cmd[-2:] == ["RestResolver", "BinaryResolver"]  # reads only: Locust holds no admin secret
    assert "secrets" not in locust and locust["volumes"] == [f"locust-data:{DATA_DIR}"]
    assert locust["depends_on"] == {"bootstrap": {"condition": "service_completed_successfully"}}
    assert set(doc["volumes"]) == {f"{name}-data" for name in services}


def test_no_secret_is_written_into_the_file(tmp_path, monkeypatch, capsys):
    canary = "canary-" + "q7" * 16
    (tmp_path / "config").mkdir()
    shutil.copy(MINIMAL, tmp_path / "config" / "minimal.toml")
    (tmp_path / "cluster-secret").write_text(canary)
    monkeypatch.setenv(SECRET_ENV, canary)
    monkeypatch.setenv("IDRESOLVE_DATA_DIR", str(tmp_path))
    out = tmp_path / "docker-compose.yml"
    rc, stdout, stderr = cli(capsys, "compose", "--config", str(tmp_path / "config" / "minimal.toml"), "--out", str(out))
    assert rc == 0, stderr
    text = out.read_text()
    assert canary not in text and canary not in stdout + stderr
    for path in (out, CHECKED_IN):
        doc = load_yaml(path)
        assert doc["secrets"] == {SECRET_NAME: {"environment": SECRET_ENV}}
        for name, svc in doc["services"].items():
            assert "environment" not in svc and "env_file" not in svc, name
        # The variable is named once, as the secret's source; no string anywhere holds a value for it.
        assert [s for s in strings_in(doc) if SECRET_ENV in s] == [SECRET_ENV]
        assert not secret_like_lines(path.read_text())


# -- the generator --------------------------------------------------------------------------------------------

def test_yaml_writer_quotes_whatever_would_read_back_as_something_else(tmp_path):
    awkward = ["on", "off", "yes", "No", "y", "n", "true", "null", "~", "", "0.0.0.0", "26400", "-1", "1e3", ".5",
               "0o17", "a: b", "a #b", "#x", "[x]", "{x}", "x, y", "-", "--", "*star", "&a", "!tag", "%p", "@at",
               "`bt`", "|", ">", "'q'", 'say "hi"', "tab\tin", "line\nbreak", "济南", "127.0.0.1:1:1/udp", "plain",
               "--config", "-m", "/app/config/x.toml", "idresolve.cluster.worker"]
    doc = {"name": "x", "list": awkward, "nested": {"on": [1, 0, True, False], "deep": [{"a": "on", "b": []},
                                                                                          {"c": {}}]},
           "empty": {}, "bools": [True, False], "num": 7}
    path = tmp_path / "awkward.yml"
    path.write_text(dump_yaml(doc))
    assert load_yaml(path) == doc


def test_check_fails_after_the_topology_changes(tmp_path, capsys):
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "minimal.toml"
    shutil.copy(MINIMAL, cfg)
    out = tmp_path / "docker-compose.yml"
    args = ("compose", "--config", str(cfg), "--out", str(out))
    rc, _, stderr = cli(capsys, *args, "--check")
    assert rc == 1 and "does not exist" in stderr
    rc, stdout, stderr = cli(capsys, *args)
    assert rc == 0 and stderr == "", stderr  # no warning: the topology is in config/ beside the file
    assert "wrote" in stdout and "rec-jinan REST" in stdout
    assert cli(capsys, *args, "--check")[0] == 0

    cfg.write_text(MINIMAL.read_text() + '\n[[recursive]]\nname = "rec-qingdao"\nlocation = "qingdao"\n')
    rc, _, stderr = cli(capsys, *args, "--check")
    assert rc == 1
    assert "drifted" in stderr and "services to add (1): rec-qingdao" in stderr
    assert "services that differ (1): bootstrap" in stderr  # it now waits for rec-qingdao too
    assert "regenerate it with `idresolve compose" in stderr

    assert cli(capsys, *args)[0] == 0
    assert cli(capsys, *args, "--check")[0] == 0
    rc, _, stderr = cli(capsys, *args, "--check", "--latency", "off")
    assert rc == 1 and "services that differ (7)" in stderr  # every node; not bootstrap, locust
    assert "--latency off" in stderr


def test_drift_summary_names_removed_and_changed_services():
    topology = load_topology(MINIMAL)
    a = render(topology, ComposeOptions("minimal.toml"))
    b = render(topology, ComposeOptions("minimal.toml", base_port=27000))
    lines = drift_summary(a, b)
    assert lines[0].startswith("services that differ (8): top-beijing, top-nanjing")
    assert any(line.startswith("-") and "26400" in line for line in lines)
    removed = a.replace("  rec-jinan:\n", "  rec-old:\n")
    assert "services to remove (1): rec-old" in drift_summary(removed, a)


def _cluster_info():  # loadtests/ is not a package: its modules import each other by plain name
    sys.path.insert(0, str(ROOT / "loadtests"))
    try:
        import cluster_info
    finally:
        sys.path.remove(str(ROOT / "loadtests"))
    return cluster_info


def test_locust_finds_the_containers_from_the_topology():
    """What the locust service reads instead of a cluster.json: the nodes at their names, the plan's ports."""
    ci = _cluster_info()
    plan = make_plan(load_topology(MINIMAL), base_port=27000)
    info = ci.cluster_from_topology(MINIMAL, 27000, "names")
    assert info.secrets == {} and "topology" in info.source
    assert {n.name: (n.role, n.http, n.tcp) for n in info.nodes.values()} == {
        n.name: (n.role, f"http://{n.name}:{n.http_port}", (n.name, n.tcp_port)) for n in plan.nodes}
    assert [(e.prefix, e.holder.name, e.reachable) for e in info.enterprises] == [
        ("88.118.8", "ent-tyre-qingdao-8", True), ("88.118.9", "sec-tyre-qingdao", True)]
    local = ci.cluster_from_topology(MINIMAL, 27000, "same")
    assert [n.http for n in local.recursive] == ["http://127.0.0.1:27011"]
    with pytest.raises(ci.ClusterInfoError, match="no-such.toml: file does not exist"):
        ci.cluster_from_topology(ROOT / "config" / "no-such.toml", 27000, "names")


def test_locust_gives_up_when_the_cluster_does_not_come(tmp_path):
    """--idr-wait bounds the start-up check: no cluster at the topology's ports, a clear exit 1."""
    if not LOCUST.exists():
        pytest.skip("locust is not installed (pip install -e '.[load]')")
    base = free_base_port(12)
    opts = ComposeOptions("minimal.toml", base_port=base, seed_identifiers=10)
    argv = localize(compose_dict(load_topology(MINIMAL), opts)["services"]["locust"]["command"], MINIMAL,
                    csv=str(tmp_path / "run"), run_time="1s", extra=("--idr-wait", "1"))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env())
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"idresolve load test: cannot reach the recursive node rec-jinan at http://127.0.0.1:{base + 11}" in r.stderr
    assert re.search(r"waiting up to \d+ s more for the cluster", r.stderr) and "Traceback" not in r.stderr


def test_bootstrap_refuses_to_run_without_the_cluster_secret(tmp_path):
    r = run_idresolve("bootstrap", "--config", str(MINIMAL), "--data-dir", str(tmp_path), "--wait", "0")
    assert r.returncode == 2 and "no cluster secret" in r.stderr
    assert not (tmp_path / "cluster-secret").exists(), "bootstrap must never invent a secret the nodes lack"


def test_bootstrap_gives_up_when_the_nodes_do_not_come(tmp_path):
    base = free_base_port(12)
    r = run_idresolve("bootstrap", "--config", str(MINIMAL), "--data-dir", str(tmp_path), "--base-port", str(base),
                      "--wait", "0.5", env=clean_env(**{SECRET_ENV: "s3cret-for-a-test"}))
    assert r.returncode == 3, r.stderr
    assert "not reachable after 0.5 s: top-beijing, top-nanjing" in r.stderr


# -- the containers' commands, without docker ------------------------------------------------------------

def _resolutions(http_port: int) -> int:
    """Resolutions a recursive node has served: every one is a hit or a miss of its answer cache."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10) as resp:
        health = json.loads(resp.read())
    return int(health["cacheHits"]) + int(health["cacheMisses"])


def test_compose_commands_run_a_cluster_without_docker(tmp_path):
    """Start each node service's command as the compose file says, check their healthchecks, run the
    bootstrap service's command (allocation and seeding), resolve the demo identifier at the recursive
    node's published port, then run the locust service's command: `docker compose --profile load up locust`."""
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "minimal.toml"
    shutil.copy(MINIMAL, cfg)
    running = load_topology(cfg).running_nodes()
    base = free_base_port(PORTS_PER_NODE * len(running))
    out = tmp_path / "docker-compose.yml"
    r = run_idresolve("compose", "--config", str(cfg), "--out", str(out), "--base-port", str(base))
    assert r.returncode == 0, r.stderr
    doc = load_yaml(out)
    services = doc["services"]
    nodes = {name: svc for name, svc in services.items() if svc["command"][:3] == WORKER}
    assert set(nodes) == {n.name for n in running}
    assert doc["secrets"][SECRET_NAME] == {"environment": SECRET_ENV}

    secret = "compose-test-" + "".join(random.choices("abcdefghjkmnpqrstuvwxyz23456789", k=24))
    env = clean_env(PYTHONUNBUFFERED="1")
    procs: list[Proc] = []
    try:
        for name, svc in nodes.items():
            volume, mount = svc["volumes"][0].split(":")
            assert mount == DATA_DIR
            data = tmp_path / "volumes" / volume
            data.mkdir(parents=True)
            # What compose does with the docker secret: the file at its target inside the node's /data.
            (target,) = [s["target"] for s in svc["secrets"] if s["source"] == SECRET_NAME]
            (data / Path(target).relative_to(DATA_DIR)).write_text(secret)
            procs.append(Proc(localize(svc["command"], cfg, data), tmp_path / f"{name}.log", env))
        deadline = time.monotonic() + 60
        ready = [p.ready(deadline) for p in procs]
        assert sorted(n["name"] for e in ready for n in e["nodes"]) == sorted(nodes)

        for name, svc in nodes.items():  # the healthchecks, run as the engine would run them
            test = svc["healthcheck"]["test"]
            assert test[:2] == ["CMD", "python"]
            hc = subprocess.run([sys.executable, *test[2:]], capture_output=True, text=True, timeout=30)
            assert hc.returncode == 0, f"{name}: {hc.stderr}"

        boot = services["bootstrap"]
        assert set(boot["depends_on"]) == set(nodes)
        boot_dir = tmp_path / "volumes" / "bootstrap-data"
        boot_dir.mkdir()
        argv = localize(boot["command"], cfg, boot_dir)
        b = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=clean_env(**{SECRET_ENV: secret}))
        assert b.returncode == 0, b.stdout + b.stderr
        assert re.search(r"bootstrap of 'minimal': [1-9]\d* prefix records written", b.stdout), b.stdout
        assert f"demo identifier: {DEMO}" in b.stdout
        assert re.search(r"seeded: 1000 identifiers over [1-9]\d* enterprises .*, 0 failed", b.stdout), b.stdout
        assert secret not in b.stdout + b.stderr

        # Again, with the secret from the data dir this time (the docker secret's place): nothing left to do.
        (boot_dir / Path(SECRET_TARGET).relative_to(DATA_DIR)).write_text(secret + "\n")
        again = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=120, env=env)
        assert again.returncode == 0, again.stderr
        report = json.loads(again.stdout)
        assert report["created"] == [] and report["demo"] == DEMO
        assert {"0.NA/88.118", "0.NA/88.118.8", "0.NA/88.118.9"} <= set(report["unchanged"])
        assert report["seeded"]["registered"] == 1000 and report["seeded"]["failed"] == 0  # all in place already

        rec_name = next(name for name, svc in services.items() if "ports" in svc)
        ports = services[rec_name]["ports"]
        binary = int(next(p for p in ports if p.endswith("/udp")).split(":")[1])
        (rest,) = [int(p.split(":")[1]) for p in ports if p.endswith("/tcp") and int(p.split(":")[1]) != binary]
        with urllib.request.urlopen(f"http://127.0.0.1:{rest}/api/handles/{DEMO}", timeout=10) as resp:
            assert resp.status == 200
            body = json.loads(resp.read())
        assert body["handle"] == DEMO
        assert {"index": 1, "type": "URL"}.items() <= body["values"][0].items()
        assert body["values"][0]["data"]["value"] == "https://example.com/products/JXDY2106023"
        with BlockingClient("127.0.0.1", binary, timeout_s=10) as c:
            answer = c.resolve(DEMO)
        assert answer.code == ResponseCode.SUCCESS and any(v.type == "URL" for v in answer.values)

        if not LOCUST.exists():
            pytest.skip("the cluster part passed; locust is not installed for the load part (pip install -e '.[load]')")
        served = _resolutions(rest)
        stats = tmp_path / "locust" / "run"
        stats.parent.mkdir()
        argv = localize(services["locust"]["command"], cfg, csv=str(stats), run_time="2s", users="4",
                        spawn_rate="4")
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=stats.parent,
                             env=clean_env(PYTHONWARNINGS="error"))
        rows = check_locust_run(run, stats)
        # Through the recursive node, found from the topology by its name (here: loopback).
        counted = int(rows["/api/handles/[seeded]"]["Request Count"]) + int(rows["resolve"]["Request Count"])
        assert _resolutions(rest) - served >= counted, rows
    finally:
        codes = stop_all(procs)
    assert codes == [0] * len(procs), "every node stops cleanly on SIGTERM (what `docker compose stop` sends)"
