"""The native protocol as a user reaches it: ``idresolve up`` as a subprocess, then the README's commands with
``--protocol handle`` (resolution over TCP and UDP from the recursive node, ``--trace`` walking from a
top-level node, writes under the identity's own prefix and a refusal under another enterprise's, a
public-key identity), ``status --json``'s native addresses, and ``handle-config``'s files.

Handle.Net's own client: ``test_handle_net_client_resolves_through_the_cluster`` runs its ``hdl-qresolver``
with the configuration ``handle-config`` writes, when a Handle.Net 9 distribution is named by
``IDRESOLVE_HANDLE_NET`` (the directory holding ``bin/hdl-qresolver``) and ``java`` is on PATH; it is
skipped otherwise (no such distribution can be installed from this project's package sources).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterutil import cli_env, run_cli, stop_proc
from idresolve.cluster.plan import PORTS_PER_NODE
from idresolve.core.native.primitives import Reader
from idresolve.core.native.valuecodec import read_values
from idresolve.core.site import SiteInfo
from test_cluster_cli import NODES, up_until_ready

DEMO = "88.118.8/JXDY2106023"
DEMO_URL = "https://example.com/products/JXDY2106023"
OWN, OTHER = "88.118.8", "88.118.9"  # the demo's enterprise prefix, another enterprise's (minimal topology)
JAVA_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    data = tmp_path_factory.mktemp("native-cli") / "data"
    proc, base = up_until_ready(data)
    try:
        yield str(data), base
    finally:
        stop_proc(proc)


def cli(cluster: tuple[str, int], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--data-dir", cluster[0])


def test_status_shows_every_nodes_native_address_by_the_port_rule(cluster: tuple[str, int]) -> None:
    res = cli(cluster, "status", "--json")
    assert res.returncode == 0, res.stderr
    nodes = json.loads(res.stdout)["nodes"]
    assert len(nodes) == NODES
    base = cluster[1]
    for node in nodes:
        msgpack_port = int(node["tcp"].rsplit(":", 1)[1])
        i = (msgpack_port - base) // 2
        assert node["handle"] == f"127.0.0.1:{base + 2 * NODES + i}"
        assert base + 2 * NODES + i < base + PORTS_PER_NODE * NODES


@pytest.mark.parametrize("transport", [[], ["--udp"]], ids=["tcp", "udp"])
def test_resolve_over_the_native_protocol_from_the_recursive_node(cluster: tuple[str, int],
                                                                  transport: list[str]) -> None:
    res = cli(cluster, "resolve", DEMO, "--protocol", "handle", *transport)
    assert res.returncode == 0, res.stderr
    assert DEMO_URL in res.stdout


@pytest.mark.parametrize("transport", [[], ["--udp"]], ids=["tcp", "udp"])
def test_trace_walks_top_secondary_enterprise_over_the_native_protocol(cluster: tuple[str, int],
                                                                       transport: list[str]) -> None:
    res = cli(cluster, "resolve", DEMO, "--protocol", "handle", "--trace", *transport)
    assert res.returncode == 0, res.stderr
    hops = [line for line in res.stdout.splitlines() if line.startswith(";; ") and " ms" in line and "hop" not in line]
    assert [h.split()[3:5] for h in hops[:3]] == [["303", "referral"], ["303", "referral"], ["1", "success"]], hops
    assert DEMO_URL in res.stdout


def test_create_modify_delete_natively_under_the_own_prefix_and_refused_under_another(
        cluster: tuple[str, int]) -> None:
    handle = f"{OWN}/NATIVE-CLI-1"
    created = cli(cluster, "register", handle, "--url", "https://example.com/n/1", "--protocol", "handle")
    assert created.returncode == 0, created.stderr
    modified = cli(cluster, "register", handle, "--index", "1", "--url", "https://example.com/n/2",
                   "--protocol", "handle")
    assert modified.returncode == 0, modified.stderr
    got = cli(cluster, "resolve", handle, "--protocol", "handle", "--no-cache")
    assert "https://example.com/n/2" in got.stdout, got.stderr
    deleted = cli(cluster, "delete", handle, "--protocol", "handle")
    assert deleted.returncode == 0, deleted.stderr
    gone = cli(cluster, "resolve", handle, "--protocol", "handle", "--no-cache")
    assert gone.returncode != 0 and "100" in gone.stderr
    refused = cli(cluster, "register", f"{OTHER}/NOT-MINE", "--url", "https://example.com/x", "--protocol", "handle",
                  "--identity", f"300:0.NA/{OWN}")
    assert refused.returncode != 0 and "response code" in refused.stderr
    assert cli(cluster, "resolve", f"{OTHER}/NOT-MINE", "--protocol", "handle", "--no-cache").returncode != 0


def test_a_public_key_identity_administers_a_record_natively(cluster: tuple[str, int], tmp_path: Path) -> None:
    key = tmp_path / "ops.pem"
    assert run_cli("keygen", str(key)).returncode == 0
    assert cli(cluster, "register", f"{OWN}/OPS", "--pubkey", str(key)).returncode == 0
    handle = f"{OWN}/KEYED-1"
    made = cli(cluster, "register", handle, "--url", "https://example.com/k/1", "--admin", f"300:{OWN}/OPS")
    assert made.returncode == 0, made.stderr
    changed = cli(cluster, "register", handle, "--index", "1", "--url", "https://example.com/k/2", "--protocol",
                  "handle", "--identity", f"300:{OWN}/OPS", "--key", str(key))
    assert changed.returncode == 0, changed.stderr
    got = cli(cluster, "resolve", handle, "--protocol", "handle", "--no-cache")
    assert "https://example.com/k/2" in got.stdout and "HS_ADMIN" in got.stdout, got.stdout


def _handle_config(cluster: tuple[str, int], out: Path) -> dict[str, str]:
    res = cli(cluster, "handle-config", "--out", str(out))
    assert res.returncode == 0, res.stderr
    status = json.loads(cli(cluster, "status", "--json").stdout)["nodes"]
    return {n["name"]: n["handle"] for n in status} | {"role:" + n["name"]: n["role"] for n in status}


def _native(site: SiteInfo) -> set[str]:
    server = site.servers[0]
    return {f"{server.endpoint(p)[0]}:{server.endpoint(p)[1]}" for p in ("TCP", "UDP")  # type: ignore[index]
            if server.endpoint(p) is not None}


def test_handle_config_names_the_recursive_node_and_the_top_level_nodes(cluster: tuple[str, int],
                                                                        tmp_path: Path) -> None:
    nodes = _handle_config(cluster, tmp_path / "hdl")
    rec = next(v for k, v in nodes.items() if nodes.get("role:" + k) == "recursive")
    tops = {v for k, v in nodes.items() if nodes.get("role:" + k) == "top"}
    assert _native(SiteInfo.from_bytes((tmp_path / "hdl" / "resolver_site").read_bytes())) == {rec}
    root = read_values(Reader((tmp_path / "hdl" / "root_info").read_bytes()))
    assert {a for v in root for a in _native(SiteInfo.from_bytes(v.data))} == tops
    boot = json.loads((tmp_path / "hdl" / "bootstrap_handles").read_text(encoding="utf-8"))
    values = boot["handles"]["0.NA/0.NA"]["values"]
    assert [(v["index"], v["type"]) for v in values] == [(v.index, "HS_SITE") for v in root]
    assert boot["handles"]["0.0/0.0"]["values"] == []
    assert '"auto_update_root_info" = "no"' in (tmp_path / "hdl" / "config.dct").read_text(encoding="utf-8")
    walk = cli(cluster, "handle-config", "--out", str(tmp_path / "hdl"), "--walk")
    assert walk.returncode == 0 and not (tmp_path / "hdl" / "resolver_site").exists()


def _handle_net() -> Path:
    dist = os.environ.get("IDRESOLVE_HANDLE_NET")
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH (Handle.Net's client needs Java 8 or later)")
    if not dist or not (Path(dist) / "bin" / "hdl-qresolver").is_file():
        pytest.skip("Handle.Net's client is not on this machine: set IDRESOLVE_HANDLE_NET to a Handle.Net 9 "
                    "distribution (the directory holding bin/hdl-qresolver) to run it against the cluster")
    return Path(dist)


def test_handle_net_client_resolves_through_the_cluster(cluster: tuple[str, int], tmp_path: Path) -> None:
    dist = _handle_net()
    config = tmp_path / "hdl"
    _handle_config(cluster, config)
    (tmp_path / "home").mkdir()
    env = cli_env() | {"JAVA_TOOL_OPTIONS": f"-Duser.home={tmp_path / 'home'} -Dnet.handle.configDir={config}"}
    res = subprocess.run([str(dist / "bin" / "hdl-qresolver"), DEMO], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=JAVA_TIMEOUT_S)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rc=1" in res.stdout and DEMO_URL in res.stdout, res.stdout + res.stderr
