"""Kubernetes manifests from a topology (``idresolve k8s``).

There is no Kubernetes here (nor a Docker engine). So the manifests are checked three ways:
- against the Kubernetes JSON schemas, offline, with kubernetes-validate (strict: an unknown field fails),
  for the release ``K8S_VERSION`` and for the newest one the installed package knows;
- for how the objects fit together, which no schema sees: selectors and the pods they pick, named target
  ports, volumes and mounts, the names the commands dial and the Services that carry them;
- by running what they tell each container to run as local processes (``containerutil.localize`` says what
  is replaced: only names, the bind address and in-image paths): every node, its probe, the Locust master
  and a worker started before the bootstrap Job (nothing orders them on Kubernetes either), the bootstrap
  Job, then the Locust run, whose requests must all succeed.
"""

from __future__ import annotations

import functools
import json
import random
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from clusterutil import free_base_port, wait_until
from containerutil import (
    DEMO,
    LOCUST,
    MINIMAL,
    SHANDONG,
    Proc,
    arg,
    check_locust_run,
    clean_env,
    cli,
    load_yaml_all,
    localize,
    run_idresolve,
    secret_like_lines,
    stop_all,
)
from idresolve.cluster.compose import ComposeOptions, compose_dict
from idresolve.cluster.containers import APP_UID, DATA_DIR, SECRET_ENV, SECRET_TARGET
from idresolve.cluster.k8s import K8S_VERSION, SECRET_KEY, SECRET_NAME, K8sOptions, manifests
from idresolve.cluster.plan import PORTS_PER_NODE, make_plan
from idresolve.core.topology import load_topology

NAMESPACED = {"Service", "StatefulSet", "Job"}



def objects_in(directory: Path) -> list[dict[str, Any]]:
    return [doc for f in sorted(directory.glob("*.yaml")) for doc in load_yaml_all(f)]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def keys_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["containers"])


@pytest.fixture(scope="module")
def shandong(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s") / "k8s"
    r = run_idresolve("k8s", "--config", str(SHANDONG), "--out", str(out), "--namespace", "idresolve",
                      "--storage-class", "standard", "--with-locust", "--locust-workers", "3")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def fast_schemas() -> Iterator[None]:
    """kubernetes-validate reads its 1.3 MB definitions file again for every object: read each once."""
    utils = kubernetes_validate.utils
    original = utils.schema_contents
    utils.schema_contents = functools.cache(original)
    try:
        yield
    finally:
        utils.schema_contents = original


# -- the schemas ------------------------------------------------------------------------------------------

def test_every_object_validates_against_the_kubernetes_schemas(shandong, fast_schemas):
    objects = objects_in(shandong)
    running = load_topology(SHANDONG).running_nodes()
    kinds = [o["kind"] for o in objects]
    assert kinds.count("StatefulSet") == len(running) > 60
    assert kinds.count("Service") == len(running) + 2  # one per node, `recursive`, `locust-master`
    assert kinds.count("Job") == 3 and kinds.count("Namespace") == 1 and len(kinds) == 2 * len(running) + 6
    newest = kubernetes_validate.latest_version()
    for version in dict.fromkeys((K8S_VERSION, newest)):
        for o in objects:
            try:
                checked = kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{o['kind']}/{o['metadata']['name']} against {version}: {exc.message} at "
                                     f"{'.'.join(map(str, exc.path))}") from None
            assert checked == kubernetes_validate.utils.major_minor(version)

    # The validator would say so: a misspelt field, a port given as text where a number is due.
    bad = json.loads(json.dumps(by_kind(objects, "StatefulSet")["rec-jinan"]))
    bad["spec"]["replica"] = bad["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = json.loads(json.dumps(by_kind(objects, "Service")["rec-jinan"]))
    bad["spec"]["ports"][0]["port"] = "26522"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


# -- how the objects fit together ----------------------------------------------------------------------------

def test_each_node_has_a_service_a_statefulset_and_a_volume(shandong):
    objects = objects_in(shandong)
    topology = load_topology(SHANDONG)
    plan = make_plan(topology)  # the ports `idresolve up` uses
    compose = compose_dict(topology, ComposeOptions("shandong.toml"))["services"]
    services, sets = by_kind(objects, "Service"), by_kind(objects, "StatefulSet")
    pods = {name: s["spec"]["template"] for name, s in sets.items()}
    for n in plan.nodes:
        svc, sts = services[n.name], sets[n.name]
        (c,) = containers(sts)
        # The container runs what the compose service runs: the same command, byte for byte.
        assert c["command"] == compose[n.name]["command"]
        assert arg(c["command"], "--host") == n.name and arg(c["command"], "--dial-hosts") == "names"
        ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in c["ports"]}
        assert ports == {"binary-tcp": (n.tcp_port, "TCP"), "binary-udp": (n.udp_port, "UDP"),
                         "http": (n.http_port, "TCP")}
        # The Service picks this node's pod and no other, at the same port numbers (nodes dial NAME:port).
        assert [name for name, pod in pods.items() if selects(svc["spec"]["selector"], pod["metadata"]["labels"])] \
            == [n.name]
        assert {p["targetPort"]: (p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == ports
        assert sts["spec"]["serviceName"] == n.name and sts["spec"]["replicas"] == 1
        assert selects(sts["spec"]["selector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"])
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert claim["spec"]["storageClassName"] == "standard"
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts[DATA_DIR]["name"] == claim["metadata"]["name"]
        assert mounts[SECRET_TARGET]["subPath"] == "cluster-secret" and mounts[SECRET_TARGET]["readOnly"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Every name a command dials is a Service: the nodes reach each other by name.
    dialled = {arg(c["command"], "--host") for s in sets.values() for c in containers(s)}
    assert dialled == {n.name for n in plan.nodes} <= set(services)

    recursive = services["recursive"]
    picked = sorted(name for name, pod in pods.items()
                    if selects(recursive["spec"]["selector"], pod["metadata"]["labels"]))
    assert picked == sorted(n.name for n in plan.by_role("recursive")) and len(picked) == 2
    assert {(p["port"], p["protocol"], p["targetPort"]) for p in recursive["spec"]["ports"]} == {
        (2641, "TCP", "binary-tcp"), (2641, "UDP", "binary-udp"), (8000, "TCP", "http")}


def test_every_pod_runs_as_the_image_user_and_mounts_only_what_it_declares(shandong):
    objects = objects_in(shandong)
    for o in objects:
        if o["kind"] in NAMESPACED:
            assert o["metadata"]["namespace"] == "idresolve", o["metadata"]
        if o["kind"] not in ("StatefulSet", "Job"):
            continue
        pod = o["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == APP_UID
        assert pod["securityContext"]["runAsNonRoot"] is True
        claims = {c["metadata"]["name"] for c in o["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])} | claims
        for c in pod["containers"]:
            assert c["imagePullPolicy"] == "IfNotPresent"  # an image loaded into the cluster by hand works
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes
        assert volumes == {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}


def test_the_bootstrap_job_and_locust_agree_with_each_other(shandong):
    objects = objects_in(shandong)
    jobs, services = by_kind(objects, "Job"), by_kind(objects, "Service")
    (boot,) = containers(jobs["bootstrap"])
    cmd = boot["command"]
    assert cmd[:2] == ["idresolve", "bootstrap"] and arg(cmd, "--dial-hosts") == "names"
    assert arg(cmd, "--seed") == "1000" and float(arg(cmd, "--wait")) >= 300  # it waits for the nodes itself
    assert jobs["bootstrap"]["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert [m["mountPath"] for m in boot["volumeMounts"]] == [DATA_DIR]  # the secret, read-only, as /data

    (master,) = containers(jobs["locust-master"])
    (worker,) = containers(jobs["locust-worker"])
    m = master["command"]
    assert "--master" in m and "--headless" in m and m[-2:] == ["RestResolver", "BinaryResolver"]
    assert arg(m, "--idr-topology") == arg(cmd, "--config") and arg(m, "--idr-base-port") == arg(cmd, "--base-port")
    assert arg(m, "--idr-identifiers") == arg(cmd, "--seed") and arg(m, "--idr-dial-hosts") == "names"
    assert float(arg(m, "--idr-wait")) >= 300  # nothing starts it after the bootstrap
    workers = jobs["locust-worker"]["spec"]
    assert arg(m, "--expect-workers") == str(workers["parallelism"]) == str(workers["completions"]) == "3"
    assert jobs["locust-master"]["spec"]["backoffLimit"] == 0  # its exit code is the verdict: not rerun
    svc = services["locust-master"]
    assert arg(worker["command"], "--master-host") == "locust-master" and "--worker" in worker["command"]
    (port,) = svc["spec"]["ports"]
    assert str(port["port"]) == arg(m, "--master-bind-port") == arg(worker["command"], "--master-port")
    assert port["targetPort"] in {p["name"] for p in master["ports"]}
    templates = {name: j["spec"]["template"]["metadata"]["labels"] for name, j in jobs.items()}
    assert [n for n, labels in templates.items() if selects(svc["spec"]["selector"], labels)] == ["locust-master"]
    assert master["image"] == worker["image"] == "idresolve-load:latest" and boot["image"] == "idresolve:latest"


def test_no_secret_is_written_into_the_manifests(tmp_path, monkeypatch, capsys):
    canary = "canary-" + "k8" * 16
    (tmp_path / "cluster-secret").write_text(canary)
    monkeypatch.setenv(SECRET_ENV, canary)
    monkeypatch.setenv("IDRESOLVE_DATA_DIR", str(tmp_path))
    out = tmp_path / "all.yaml"
    rc, stdout, stderr = cli(capsys, "k8s", "--config", str(MINIMAL), "--out", str(out), "--with-locust")
    assert rc == 0, stderr
    text = out.read_text()
    assert canary not in text + stdout + stderr
    objects = load_yaml_all(out)
    assert "Secret" not in {o["kind"] for o in objects}  # the user creates it
    refs = []
    for o in objects:
        assert not {"env", "envFrom", "stringData", "data"} & keys_in(o), o["metadata"]["name"]
        if o["kind"] in ("StatefulSet", "Job"):
            refs += [v["secret"] for v in o["spec"]["template"]["spec"].get("volumes", []) if "secret" in v]
    assert refs and all(r["secretName"] == SECRET_NAME and r["items"] == [{"key": SECRET_KEY, "path": "cluster-secret"}]
                        for r in refs)
    assert len(refs) == 7  # 6 nodes and the bootstrap; Locust none
    assert not secret_like_lines("\n".join(line for line in text.splitlines() if "secretName:" not in line))


# -- the command ----------------------------------------------------------------------------------------------

def test_check_fails_after_the_topology_or_the_options_change(tmp_path, capsys):
    cfg = tmp_path / "minimal.toml"
    shutil.copy(MINIMAL, cfg)
    out = tmp_path / "k8s"
    args = ("k8s", "--config", str(cfg), "--out", str(out))
    rc, _, stderr = cli(capsys, *args, "--check")
    assert rc == 1 and "does not exist" in stderr
    rc, stdout, stderr = cli(capsys, *args, "--with-locust")
    assert rc == 0 and stderr == "" and "wrote" in stdout, stderr
    assert sorted(p.name for p in out.iterdir()) == ["10-nodes.yaml", "20-recursive.yaml", "30-bootstrap.yaml",
                                                     "40-locust.yaml"]
    rc, stdout, _ = cli(capsys, *args, "--with-locust", "--check")
    assert rc == 0 and "up to date" in stdout

    rc, _, stderr = cli(capsys, *args, "--check")  # Locust no longer wanted
    assert rc == 1 and "files to remove (1): 40-locust.yaml" in stderr
    assert "objects to remove (3): Service/locust-master, Job/locust-master, Job/locust-worker" in stderr
    assert "regenerate it with `idresolve k8s" in stderr
    (out / "mine.yaml").write_text("kind: ConfigMap\n")  # the user's own file: left alone, not compared
    assert cli(capsys, *args)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["10-nodes.yaml", "20-recursive.yaml", "30-bootstrap.yaml",
                                                     "mine.yaml"]
    assert cli(capsys, *args, "--check")[0] == 0

    cfg.write_text(MINIMAL.read_text() + '\n[[recursive]]\nname = "rec-qingdao"\nlocation = "qingdao"\n')
    rc, _, stderr = cli(capsys, *args, "--check")
    assert rc == 1 and "objects to add (2): Service/rec-qingdao, StatefulSet/rec-qingdao" in stderr
    assert "StatefulSet/top-beijing" in stderr  # the topology's hash rolls every pod
    assert "10-nodes.yaml:" in stderr and "+        idresolve/config-hash: " in stderr

    single = tmp_path / "all.yaml"
    assert cli(capsys, "k8s", "--config", str(cfg), "--out", str(single), "--namespace", "idr")[0] == 0
    rc, _, stderr = cli(capsys, "k8s", "--config", str(cfg), "--out", str(single), "--namespace", "idr2", "--check")
    assert rc == 1 and "objects to add (1): Namespace/idr2" in stderr and "objects to remove (1): Namespace/idr" in stderr
    rc, stdout, _ = cli(capsys, "k8s", "--config", str(cfg), "--out", "-", "--namespace", "idr")
    assert rc == 0 and stdout == single.read_text().replace(str(single), "-")  # with `kubectl apply -f -`
    assert cli(capsys, "k8s", "--config", str(cfg), "--out", "-", "--check")[0] == 2


@pytest.mark.parametrize("extra,message", [
    (["--namespace", "Not_A_Label"], "is not a DNS label"),
    (["--storage", "lots"], "is not a Kubernetes quantity"),
    (["--with-locust", "--seed-identifiers", "0"], "Locust needs a recursive node and seeded identifiers"),
    (["--with-locust", "--locust-workers", "0"], "at least one worker"),
])
def test_bad_options_are_refused(capsys, extra, message):
    rc, _, stderr = cli(capsys, "k8s", "--config", str(MINIMAL), "--out", "-", *extra)
    assert rc == 2 and message in stderr, stderr


@pytest.mark.parametrize("name,message", [("9rec-jinan", "cannot name a Service"), ("recursive", "a name the "),
                                          ("r" * 53, "at most 52 characters")])
def test_node_names_kubernetes_cannot_take_are_refused(tmp_path, name, message):
    text = MINIMAL.read_text().replace('name = "rec-jinan"', f'name = "{name}"')
    assert text != MINIMAL.read_text()
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=message):
        manifests(load_topology(cfg), K8sOptions("t.toml"))


# -- the containers' commands, without Kubernetes ---------------------------------------------------------------

def _stderr_has(proc: Proc, needle: str) -> bool:
    return needle in proc.stderr()


def test_manifest_commands_run_a_cluster_without_kubernetes(tmp_path):
    """Start each StatefulSet's container command and, at the same time, the Locust master and a worker;
    probe the nodes as the kubelet would; run the bootstrap Job's command. The load test waits for the
    seeded identifiers, runs and passes; every node stops cleanly on SIGTERM."""
    if not LOCUST.exists():
        pytest.skip("locust is not installed (pip install -e '.[load]')")
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "minimal.toml"
    shutil.copy(MINIMAL, cfg)
    running = load_topology(cfg).running_nodes()
    base = free_base_port(PORTS_PER_NODE * len(running))
    locust_port = free_base_port(1, lo=base + PORTS_PER_NODE * len(running) + 1)
    out = tmp_path / "k8s"
    r = run_idresolve("k8s", "--config", str(cfg), "--out", str(out), "--base-port", str(base), "--with-locust",
                      "--locust-workers", "1")
    assert r.returncode == 0, r.stderr
    objects = objects_in(out)
    sets, jobs = by_kind(objects, "StatefulSet"), by_kind(objects, "Job")
    assert set(sets) == {n.name for n in running}

    secret = "k8s-test-" + "".join(random.choices("abcdefghjkmnpqrstuvwxyz23456789", k=24))
    env = clean_env(PYTHONUNBUFFERED="1")
    nodes: list[Proc] = []
    load: list[Proc] = []
    try:
        for name, sts in sets.items():
            (c,) = containers(sts)
            # What the kubelet does: the claim at /data, the Secret's key at its subPath mount inside it.
            data = tmp_path / "pvc" / name
            data.mkdir(parents=True)
            mount = next(m for m in c["volumeMounts"] if m["mountPath"] == SECRET_TARGET)
            (data / Path(mount["mountPath"]).relative_to(DATA_DIR)).write_text(secret)
            nodes.append(Proc(localize(c["command"], cfg, data), tmp_path / f"{name}.log", env))
        # The load test at once, as Kubernetes may start it: before the nodes are up, let alone seeded.
        (master,) = containers(jobs["locust-master"])
        (worker,) = containers(jobs["locust-worker"])
        stats = tmp_path / "locust" / "run"
        stats.parent.mkdir()
        lenv = clean_env(PYTHONWARNINGS="error")
        load.append(Proc(localize(master["command"], cfg, run_time="2s", users="4", spawn_rate="4", idr_wait="90",
                                  expect_workers_max_wait="90", master_bind_port=str(locust_port),
                                  extra=("--master-bind-host", "127.0.0.1", "--csv", str(stats))),
                         tmp_path / "locust-master.log", lenv, cwd=stats.parent))
        load.append(Proc(localize(worker["command"], cfg, master_port=str(locust_port)),
                         tmp_path / "locust-worker.log", lenv, cwd=stats.parent))
        deadline = time.monotonic() + 60
        assert sorted(n["name"] for p in nodes for n in p.ready(deadline)["nodes"]) == sorted(sets)
        http_of = {}
        for name, sts in sets.items():  # the readiness probe, on the port it names
            (c,) = containers(sts)
            probe = c["readinessProbe"]["httpGet"]
            port = next(p["containerPort"] for p in c["ports"] if p["name"] == probe["port"])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe['path']}", timeout=10) as resp:
                assert resp.status == 200, name
            http_of[name] = port

        # The bootstrap has to find the load test already waiting, before seeding or even allocating anything.
        wait_until(lambda: _stderr_has(load[0], "waiting up to"), timeout_s=60, interval_s=0.1)
        assert "idresolve: 1000 seeded identifiers" not in load[0].stderr()

        (boot,) = containers(jobs["bootstrap"])
        secret_dir = tmp_path / "bootstrap-secret"  # the Secret volume, mounted as /data
        secret_dir.mkdir()
        assert [m["mountPath"] for m in boot["volumeMounts"]] == [DATA_DIR]
        (secret_dir / SECRET_KEY).write_text(secret + "\n")
        b = subprocess.run(localize(boot["command"], cfg, secret_dir), capture_output=True, text=True, timeout=120,
                           env=env)
        assert b.returncode == 0, b.stdout + b.stderr
        assert f"demo identifier: {DEMO}" in b.stdout
        assert re.search(r"seeded: 1000 identifiers over [1-9]\d* enterprises .*, 0 failed", b.stdout), b.stdout
        assert secret not in b.stdout + b.stderr

        code = load[0].wait(timeout=90)
        check_locust_run((code, load[0].stderr()), stats)
        assert load[1].wait(timeout=30) == 0, load[1].stderr()  # the worker ends with its master

        (rec,) = [name for name, s in sets.items() if s["metadata"]["labels"]["idresolve/role"] == "recursive"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_of[rec]}/api/handles/{DEMO}", timeout=10) as resp:
            assert json.loads(resp.read())["handle"] == DEMO
    finally:
        for p in load:
            p.close()
        codes = stop_all(nodes)
    assert codes == [0] * len(nodes), "every node stops cleanly on SIGTERM (what the kubelet sends)"
