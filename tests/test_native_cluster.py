"""The native protocol in a running cluster (the minimal topology in-process, real sockets): the issue's
"done when" flow with the Python clients, and the sites the cluster publishes.

A native client resolves the demo identifier over UDP and TCP at the recursive node (which recurses) and
by walking the hierarchy itself from a top-level node; an authenticated native client creates, modifies
and deletes an identifier under an enterprise prefix and is refused under another enterprise's; a
public-key identity does the same by signing its challenges. Sites written by an older layout (the
msgpack port as TCP) still lead the recursive node, and the bootstrap rewrites them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clusterutil import LocalCluster, start_local_cluster
from idresolve.client.handle_auth import authenticate_session
from idresolve.client.rest import RestClient
from idresolve.cluster.bootstrap import DEMO_PREFIX, DEMO_SUFFIX, BootstrapReport, bootstrap
from idresolve.cluster.credentials import secret_for
from idresolve.cluster.plan import identity_of
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.handles import fold
from idresolve.core.messages import Request
from idresolve.core.native.client import ClientAuth, referral_endpoints, to_response
from idresolve.core.records import Record
from idresolve.core.site import Interface, Server, SiteInfo
from idresolve.core.values import HS_SITE, HandleValue, admin_value, site_value, string_value
from idresolve.net.native_blocking import NativeBlockingClient, udp_call
from idresolve.net.native_client import NativeConnection, udp_request
from idresolve.runtime.serverkey import generate_key, public_key_bytes

DEMO = f"{DEMO_PREFIX}/{DEMO_SUFFIX}"
TOP, SEC, ENT, REC = "top-beijing", "sec-tyre-qingdao", "ent-tyre-qingdao-8", "rec-jinan"
OTHER_PREFIX = "88.118.9"  # another enterprise's prefix (hosted at the secondary)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[LocalCluster, BootstrapReport]]:
    c = await start_local_cluster(tmp_path, latency_on=False)
    try:
        report = await asyncio.to_thread(bootstrap, c.plan, c.master)
        yield c, report
    finally:
        await c.worker.stop()


def _handle(c: LocalCluster, name: str) -> tuple[str, int]:
    n = c.plan.node(name)
    return n.dial_host, n.handle_port


async def test_recursive_node_resolves_the_demo_over_udp_and_tcp(cluster: tuple[LocalCluster, BootstrapReport]) -> None:
    c, _ = cluster
    host, port = _handle(c, REC)
    over_udp = to_response(await udp_request(host, port, Request(0, OpCode.RESOLUTION, DEMO)))
    conn = await NativeConnection.open(host, port)
    try:
        over_tcp = to_response(await conn.request(Request(0, OpCode.RESOLUTION, DEMO)))
        typed = to_response(await conn.request(Request(0, OpCode.RESOLUTION, DEMO, types=("URL",))))
    finally:
        conn.close()
    for resp in (over_udp, over_tcp):
        assert resp.code == ResponseCode.SUCCESS and resp.handle == DEMO
        assert {v.type for v in resp.values} >= {"URL", "DESC"}
    assert [v.type for v in typed.values] == ["URL"]


def _walk(start: tuple[str, int], handle: str, *, udp: bool) -> list[tuple[tuple[str, int], int]]:
    hops, target = [], start
    for _ in range(8):
        req = Request(0, OpCode.RESOLUTION, handle)
        if udp:
            resp = to_response(udp_call(*target, req))
        else:
            with NativeBlockingClient(*target, timeout_s=10) as client:
                resp = client.request(req)
        hops.append((target, resp.code))
        if resp.code != ResponseCode.PREFIX_REFERRAL:
            break
        target = referral_endpoints(resp.values, "UDP" if udp else "TCP")[0]
    return hops


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
async def test_a_native_client_walks_top_secondary_enterprise_by_itself(
        cluster: tuple[LocalCluster, BootstrapReport], udp: bool) -> None:
    c, _ = cluster
    hops = await asyncio.to_thread(_walk, _handle(c, TOP), DEMO, udp=udp)
    assert hops == [(_handle(c, TOP), 303), (_handle(c, SEC), 303), (_handle(c, ENT), 1)]


def _admin(c: LocalCluster, prefix: str) -> ClientAuth:
    return ClientAuth.parse(identity_of(prefix), secret=secret_for(c.master, prefix).encode())


def _writes(c: LocalCluster) -> dict[str, int]:
    handle = f"{DEMO_PREFIX}/NATIVE-1"
    codes = {}
    with NativeBlockingClient(*_handle(c, ENT), timeout_s=10, auth=_admin(c, DEMO_PREFIX)) as client:
        codes["create"] = client.create(handle, (string_value(1, "URL", "https://example.com/n1"),)).code
        codes["modify"] = client.modify_values(handle, (string_value(1, "URL", "https://example.com/n1-v2"),)).code
        resolved = client.resolve(handle, authoritative=True)
        codes["modified"] = int(resolved.values[0].data == b"https://example.com/n1-v2")
        codes["add"] = client.add_values(handle, (string_value(2, "EMAIL", "ops@example.com"),)).code
        codes["remove"] = client.remove_values(handle, (2,)).code
        codes["delete"] = client.delete(handle).code
        codes["gone"] = client.resolve(handle, authoritative=True).code
    # The same identity under another enterprise's prefix: refused at the node that holds it.
    with NativeBlockingClient(*_handle(c, SEC), timeout_s=10, auth=_admin(c, DEMO_PREFIX)) as client:
        codes["other"] = client.create(f"{OTHER_PREFIX}/NATIVE-X", (string_value(1, "URL", "https://x"),)).code
    with NativeBlockingClient(*_handle(c, ENT), timeout_s=10) as client:  # no credentials: challenged, not done
        codes["anonymous"] = client.create(f"{DEMO_PREFIX}/NATIVE-2", (string_value(1, "URL", "https://x"),)).code
    return codes


async def test_an_authenticated_native_client_administers_its_prefix_only(
        cluster: tuple[LocalCluster, BootstrapReport]) -> None:
    c, _ = cluster
    codes = await asyncio.to_thread(_writes, c)
    assert codes == {"create": 1, "modify": 1, "modified": 1, "add": 1, "remove": 1, "delete": 1, "gone": 100,
                     "other": ResponseCode.INVALID_ADMIN, "anonymous": ResponseCode.AUTHENTICATION_NEEDED}
    sec = next(h for h in c.worker.hosted if h.node.name == SEC)
    assert sec.node.store.get(fold(f"{OTHER_PREFIX}/NATIVE-X")) is None


def _public_key_identity(c: LocalCluster) -> dict[str, int]:
    """A public-key identity registered at the enterprise, granted on its prefix, used over both surfaces."""
    key = generate_key()
    ent = c.plan.node(ENT)
    identity = f"300:{DEMO_PREFIX}/ALICE"
    codes = {}
    with NativeBlockingClient(*_handle(c, ENT), timeout_s=10, auth=_admin(c, DEMO_PREFIX)) as client:
        codes["identity"] = client.create(f"{DEMO_PREFIX}/ALICE",
                                          (HandleValue(300, "HS_PUBKEY", public_key_bytes(key)),)).code
        codes["grant"] = client.add_values(f"0.NA/{DEMO_PREFIX}",
                                           (admin_value(102, f"{DEMO_PREFIX}/ALICE", 300, 0xFFF),)).code
    with NativeBlockingClient(*_handle(c, ENT), timeout_s=10, auth=ClientAuth.parse(identity, key=key)) as client:
        codes["native"] = client.create(f"{DEMO_PREFIX}/BY-KEY", (string_value(1, "URL", "https://k"),)).code
    wrong = ClientAuth.parse(identity, key=generate_key())
    with NativeBlockingClient(*_handle(c, ENT), timeout_s=10, auth=wrong) as client:
        codes["wrong_key"] = client.create(f"{DEMO_PREFIX}/BY-KEY-2", (string_value(1, "URL", "https://k"),)).code
    rest = RestClient(ent.http_url)
    authenticate_session(rest, identity, key=key)
    codes["rest"] = rest.delete(f"{DEMO_PREFIX}/BY-KEY").status
    rest.close()
    return codes


async def test_a_public_key_identity_authenticates_natively_and_over_rest(
        cluster: tuple[LocalCluster, BootstrapReport]) -> None:
    c, _ = cluster
    codes = await asyncio.to_thread(_public_key_identity, c)
    assert codes == {"identity": 1, "grant": 1, "native": 1, "wrong_key": ResponseCode.AUTHENTICATION_FAILED,
                     "rest": 200}


def _site_of_record(c: LocalCluster, node: str, handle: str) -> SiteInfo:
    hosted = next(h for h in c.worker.hosted if h.node.name == node)
    record = hosted.node.store.get(fold(handle))
    assert record is not None
    return SiteInfo.from_bytes(next(v.data for v in record.values if v.type == HS_SITE))


async def test_sites_name_the_native_port_the_key_and_the_msgpack_port(
        cluster: tuple[LocalCluster, BootstrapReport]) -> None:
    c, _ = cluster
    ent = c.plan.node(ENT)
    site = _site_of_record(c, SEC, f"0.NA/{DEMO_PREFIX}")  # the allocation at the secondary
    server = site.servers[0]
    assert server.endpoint("TCP") == server.endpoint("UDP") == ("127.0.0.1", ent.handle_port)
    assert dict(site.attributes)["idr-msgpack.1"] == str(ent.tcp_port)
    hosted = next(h for h in c.worker.hosted if h.node.name == ENT)
    assert hosted.listeners.native_state is not None and hosted.listeners.native_state.key is not None
    assert server.public_key == public_key_bytes(hosted.listeners.native_state.key)
    assert site == _site_of_record(c, ENT, f"0.NA/{DEMO_PREFIX}")  # the node's own record says the same


async def test_sites_of_an_older_layout_still_lead_and_are_rewritten(
        cluster: tuple[LocalCluster, BootstrapReport]) -> None:
    c, _ = cluster
    ent, sec = c.plan.node(ENT), c.plan.node(SEC)
    old = SiteInfo((Server(1, "127.0.0.1", (Interface("TCP", ent.tcp_port), Interface("UDP", ent.tcp_port),
                                            Interface("HTTP", ent.http_port))),),
                   attributes=(("name", ent.name), ("location", ent.spec.location.name)))
    hosted_sec = next(h for h in c.worker.hosted if h.node.name == SEC)
    record = hosted_sec.node.store.get(fold(f"0.NA/{DEMO_PREFIX}"))
    assert record is not None
    values = tuple(site_value(1, old) if v.type == HS_SITE else v for v in record.values)
    hosted_sec.node.bootstrap_record(Record(record.handle, values))
    # The recursive node (msgpack between nodes) follows the old site to the enterprise's msgpack port.
    host, port = _handle(c, REC)
    conn = await NativeConnection.open(host, port)
    try:
        resp = to_response(await conn.request(Request(0, OpCode.RESOLUTION, DEMO, flags=1)))  # AT: past the cache
    finally:
        conn.close()
    assert resp.code == ResponseCode.SUCCESS
    report = await asyncio.to_thread(bootstrap, c.plan, c.master)
    assert report.created == [f"0.NA/{DEMO_PREFIX}"]
    assert _site_of_record(c, SEC, f"0.NA/{DEMO_PREFIX}").servers[0].endpoint("TCP") == ("127.0.0.1", ent.handle_port)
    assert sec.handle_port != ent.handle_port
