"""The authorization matrix on a minimal cluster (config/minimal.toml): every write operation, over REST and
the binary protocol, by every kind of caller, against an identifier under a hosted enterprise prefix
(88.118.9, held by its secondary node) and one under an enterprise with its own node (88.118.8).

The cluster is the real one: every node in one ``cluster.worker.Worker`` (latency off) on an event-loop
thread, prefixes allocated by ``cluster.bootstrap.bootstrap`` through the nodes' own APIs, secrets derived
from the master by ``cluster.credentials``. Authority layout: on an enterprise's prefix record, the
secondary's admin ``300:0.NA/88.118`` keeps only the right to revoke the allocation (DELETE_HANDLE): no
ADD_HANDLE, no listing, no reading or changing the enterprise's key; an enterprise's admin
``300:0.NA/88.118.<m>`` owns its prefix. Identities authenticate only at nodes that hold them.

Callers: nobody (no credentials), the rightful identity with a wrong secret, another enterprise's admin,
the secondary node's admin, the rightful enterprise admin. Every case sets up its own identifier, checks
the answer against the table, then checks that a refused operation changed nothing. No answer ever
carries a secret; the secret comparison is constant-time (hmac.compare_digest, for unknown identities too).
"""

from __future__ import annotations

import base64
import hmac
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from fuzzutil import IO_TIMEOUT_S, LOOPBACK, cluster_in_thread, contains_any
from idresolve.cluster.credentials import secret_for
from idresolve.cluster.plan import ClusterPlan
from idresolve.core.admin import ALL_PERMS
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.messages import FLAG_OVERWRITE, Request, Response
from idresolve.core.values import HS_SECKEY, HandleValue, admin_value, string_value
from idresolve.net.blocking import BlockingClient
from idresolve.nodes import auth as auth_mod
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import prefix_record
from idresolve.nodes.dispatch import answer
from idresolve.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "config" / "minimal.toml"
SECONDARY, HOSTED, OWN = "88.118", "88.118.9", "88.118.8"
NODE_OF = {HOSTED: "sec-tyre-qingdao", OWN: "ent-tyre-qingdao-8"}
OTHER_ENTERPRISE = {HOSTED: OWN, OWN: HOSTED}


def ident(prefix: str) -> str:
    return f"300:0.NA/{prefix}"


# --------------------------------------------------------------------------------------------------
# The cluster, once for the module


@dataclass
class Cluster:
    plan: ClusterPlan
    master: str

    def secret(self, prefix: str) -> str:
        return secret_for(self.master, prefix)

    def all_secrets(self) -> list[str]:
        prefixes = {n.spec.prefix for n in self.plan.nodes if n.spec.prefix} | {HOSTED}
        return [self.master, *(self.secret(p) for p in prefixes)]

    def http_port(self, node: str) -> int:
        return self.plan.node(node).http_port

    def tcp_port(self, node: str) -> int:
        return self.plan.node(node).tcp_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_in_thread(tmp_path_factory.mktemp("authz"), MINIMAL) as (plan, master):
        yield Cluster(plan, master)


# --------------------------------------------------------------------------------------------------
# Callers

WHO = ["none", "wrong", "other", "secondary", "owner"]


def credentials(c: Cluster, who: str, target: str) -> tuple[str, str] | None:
    if who == "none":
        return None
    if who == "wrong":
        return ident(target), c.secret(target)[::-1] + "x"
    if who == "other":
        other = OTHER_ENTERPRISE[target]
        return ident(other), c.secret(other)
    if who == "secondary":
        return ident(SECONDARY), c.secret(SECONDARY)
    return ident(target), c.secret(target)


# --------------------------------------------------------------------------------------------------
# Surfaces


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def code(self) -> int | None:
        return json.loads(self.raw).get("responseCode") if self.raw else None


def rest(c: Cluster, node: str, method: str, path: str, *, creds: tuple[str, str] | None = None,
         body: Any = None) -> Reply:
    headers = {}
    data = None
    if creds is not None:
        user = quote(creds[0], safe="")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{creds[1]}".encode()).decode()
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(LOOPBACK, c.http_port(node), timeout=IO_TIMEOUT_S)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
    # One request at a time, with the shedding defaults users get: a 503 (code 3) is a failure here.
    assert not (reply.status == 503 and reply.code == ResponseCode.SERVER_TOO_BUSY), ("shed", method, path, reply)
    return reply


def binary(c: Cluster, node: str, req: Request, creds: tuple[str, str] | None = None) -> Response:
    if creds is not None:
        req = Request(req.request_id, req.opcode, req.handle, req.flags, req.indexes, req.types, req.values,
                      (creds[0], creds[1].encode()), req.items, req.page)
    with BlockingClient(LOOPBACK, c.tcp_port(node), timeout_s=IO_TIMEOUT_S) as client:
        for _ in range(40):
            resp = client.call(req)
            if resp.code != ResponseCode.SERVER_TOO_BUSY:
                return resp
            time.sleep(0.05)
    return resp


V1 = string_value(1, "URL", "https://example.com/original")
V2 = string_value(2, "DESC", "original description")
J1 = {"index": 1, "type": "URL", "data": "https://example.com/original"}
J2 = {"index": 2, "type": "DESC", "data": "original description"}


def owner_creates(c: Cluster, target: str, handle: str) -> None:
    resp = binary(c, NODE_OF[target], Request(0, OpCode.CREATE_HANDLE, handle, FLAG_OVERWRITE, values=(V1, V2)),
                  credentials(c, "owner", target))
    assert resp.code == ResponseCode.SUCCESS, resp


def state(c: Cluster, target: str, handle: str) -> tuple[int, frozenset[tuple[int, str, bytes]]]:
    resp = binary(c, NODE_OF[target], Request(0, OpCode.RESOLUTION, handle))
    return resp.code, frozenset((v.index, v.type, v.data) for v in resp.values)


# --------------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Op:
    name: str
    creates: bool  # the operation makes something new (no set-up record)
    rest_ok: tuple[int, int]  # the owner's answer: (HTTP status, responseCode)
    changes: bool = True  # success changes the record


REST_OPS = [
    Op("PUT create", True, (201, 1)),
    Op("PUT replace", False, (200, 1)),
    Op("PUT ?index add", False, (201, 1)),
    Op("PUT ?index modify", False, (200, 1)),
    Op("DELETE value", False, (200, 1)),
    Op("DELETE record", False, (200, 1)),
    Op("POST /api/batch", True, (201, 1)),
    Op("GET list", False, (200, 1), changes=False),
]
BINARY_OPS = ["CREATE", "ADD_VALUE", "MODIFY_VALUE", "REMOVE_VALUE", "DELETE", "BATCH_CREATE", "LIST_HANDLES"]
UNAUTHENTICATED = (401, None)  # wrong password, unknown identity: 401 + WWW-Authenticate, empty body


def expected_rest(op: Op, who: str, target: str) -> tuple[int, int | None]:
    if who == "owner":
        return op.rest_ok
    if who == "none":
        return (401, ResponseCode.AUTHENTICATION_NEEDED)
    if who == "wrong":
        return UNAUTHENTICATED
    if target == OWN:  # neither the other enterprise's nor the secondary's identity is held at 88.118.8's node
        return UNAUTHENTICATED
    return (403, ResponseCode.INVALID_ADMIN)  # authenticated, not permitted (the secondary may only revoke)


def expected_binary(op: str, who: str, target: str) -> int:
    if who == "owner":
        return ResponseCode.SUCCESS
    if who == "none":
        return ResponseCode.AUTHENTICATION_NEEDED
    if who == "wrong" or target == OWN:
        return ResponseCode.AUTHENTICATION_FAILED
    return ResponseCode.INVALID_ADMIN


CASES = [(op, who, target) for target in (HOSTED, OWN) for op in REST_OPS for who in WHO]
BIN_CASES = [(op, who, target) for target in (HOSTED, OWN) for op in BINARY_OPS for who in WHO]
SEEN: list[tuple[str, bytes]] = []  # every answer of the matrix, checked for secrets at the end


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s).strip("-").lower()


@pytest.mark.parametrize("op,who,target", CASES, ids=[f"{t}-{_slug(o.name)}-{w}" for o, w, t in CASES])
def test_rest_matrix(cluster: Cluster, op: Op, who: str, target: str) -> None:
    c, node = cluster, NODE_OF[target]
    handle = f"{target}/authz-rest-{_slug(op.name)}-{who}"
    creds = credentials(c, who, target)
    if not op.creates:
        owner_creates(c, target, handle)
    before = state(c, target, handle)
    path = f"/api/handles/{handle}"
    if op.name == "PUT create" or op.name == "PUT replace":
        reply = rest(c, node, "PUT", path, creds=creds, body={"values": [{**J1, "data": "https://changed"}]})
    elif op.name == "PUT ?index add":
        reply = rest(c, node, "PUT", path + "?index=3", creds=creds,
                     body={"values": [{"index": 3, "type": "EMAIL", "data": "x@example.com"}]})
    elif op.name == "PUT ?index modify":
        reply = rest(c, node, "PUT", path + "?index=1", creds=creds, body={"values": [{**J1, "data": "https://m"}]})
    elif op.name == "DELETE value":
        reply = rest(c, node, "DELETE", path + "?index=2", creds=creds)
    elif op.name == "DELETE record":
        reply = rest(c, node, "DELETE", path, creds=creds)
    elif op.name == "POST /api/batch":
        reply = rest(c, node, "POST", "/api/batch", creds=creds, body={"handles": [
            {"handle": handle, "values": [J1, J2]}, {"handle": handle + "-2", "values": [J1]}]})
    else:
        reply = rest(c, node, "GET", f"/api/handles?prefix={target}", creds=creds)
    SEEN.append((f"REST {op.name} {who} {target}", reply.raw + json.dumps(reply.headers).encode()))
    want_status, want_code = expected_rest(op, who, target)
    assert (reply.status, reply.code) == (want_status, want_code), reply
    if want_status == 401:
        assert reply.headers.get("www-authenticate") == 'Basic realm="handle"'
    if want_code is None:
        assert reply.raw == b""  # no oracle: a failed authentication says nothing
    after = state(c, target, handle)
    if reply.status >= 400 or not op.changes:
        assert after == before, f"a refused or read-only {op.name} changed {handle}"
        if op.name == "POST /api/batch":
            assert state(c, target, handle + "-2")[0] == ResponseCode.HANDLE_NOT_FOUND
    elif op.name == "DELETE record":
        assert after[0] == ResponseCode.HANDLE_NOT_FOUND
    else:
        assert after != before and after[0] == ResponseCode.SUCCESS
    if op.name == "GET list" and reply.status == 200:
        assert handle in json.loads(reply.raw)["handles"]


@pytest.mark.parametrize("op,who,target", BIN_CASES, ids=[f"{t}-{o}-{w}" for o, w, t in BIN_CASES])
def test_binary_matrix(cluster: Cluster, op: str, who: str, target: str) -> None:
    c, node = cluster, NODE_OF[target]
    handle = f"{target}/authz-bin-{op.lower()}-{who}"
    creds = credentials(c, who, target)
    if op not in ("CREATE", "BATCH_CREATE"):
        owner_creates(c, target, handle)
    before = state(c, target, handle)
    changed = string_value(1, "URL", "https://changed")
    req = {
        "CREATE": Request(0, OpCode.CREATE_HANDLE, handle, values=(changed,)),
        "ADD_VALUE": Request(0, OpCode.ADD_VALUE, handle, values=(string_value(3, "EMAIL", "x@example.com"),)),
        "MODIFY_VALUE": Request(0, OpCode.MODIFY_VALUE, handle, values=(changed,)),
        "REMOVE_VALUE": Request(0, OpCode.REMOVE_VALUE, handle, indexes=(2,)),
        "DELETE": Request(0, OpCode.DELETE_HANDLE, handle),
        "BATCH_CREATE": Request(0, OpCode.BATCH_CREATE, "", items=((handle, (V1, V2)), (handle + "-2", (V1,)))),
        "LIST_HANDLES": Request(0, OpCode.LIST_HANDLES, target, page=(0, 10_000)),
    }[op]
    resp = binary(c, node, req, creds)
    SEEN.append((f"binary {op} {who} {target}", repr(resp).encode()))
    assert resp.code == expected_binary(op, who, target), resp
    after = state(c, target, handle)
    if resp.code != ResponseCode.SUCCESS or op == "LIST_HANDLES":
        assert after == before, f"a refused or read-only {op} changed {handle}"
        if op == "BATCH_CREATE":
            assert state(c, target, handle + "-2")[0] == ResponseCode.HANDLE_NOT_FOUND
    elif op == "DELETE":
        assert after[0] == ResponseCode.HANDLE_NOT_FOUND
    else:
        assert after != before and after[0] == ResponseCode.SUCCESS
    if op == "LIST_HANDLES" and resp.code == ResponseCode.SUCCESS:
        assert handle in resp.handles


# --------------------------------------------------------------------------------------------------
# An enterprise never writes under another enterprise's prefix, wherever it asks


@pytest.mark.parametrize("attacker,victim,node", [
    (OWN, HOSTED, "sec-tyre-qingdao"),  # 88.118.8's admin is held at the secondary: authenticated, refused
    (HOSTED, OWN, "ent-tyre-qingdao-8"),  # 88.118.9's admin is unknown at 88.118.8's node
    (HOSTED, OWN, "sec-tyre-qingdao"),  # the secondary refers 88.118.8 elsewhere: not its to write
    (OWN, HOSTED, "top-beijing"),
    (HOSTED, OWN, "top-beijing"),
])
def test_an_enterprise_never_writes_under_another_enterprises_prefix(cluster: Cluster, attacker: str, victim: str,
                                                                     node: str) -> None:
    c = cluster
    creds = (ident(attacker), c.secret(attacker))
    handle = f"{victim}/intrusion-{_slug(attacker)}-{_slug(node)}"
    attempts = [
        binary(c, node, Request(0, OpCode.CREATE_HANDLE, handle, values=(V1,)), creds),
        binary(c, node, Request(0, OpCode.BATCH_CREATE, "", items=((handle, (V1,)),)), creds),
        binary(c, node, Request(0, OpCode.CREATE_HANDLE, f"0.NA/{victim}.66", values=(V1,)), creds),
        binary(c, node, Request(0, OpCode.ADD_VALUE, f"0.NA/{victim}", values=(
            admin_value(150, f"0.NA/{attacker}", 300, int(ALL_PERMS)),)), creds),
        binary(c, node, Request(0, OpCode.LIST_HANDLES, victim), creds),
    ]
    rest_attempts = [
        rest(c, node, "PUT", f"/api/handles/{handle}", creds=creds, body={"values": [J1]}),
        rest(c, node, "POST", "/api/batch", creds=creds, body={"handles": [{"handle": handle, "values": [J1]}]}),
    ]
    for resp in attempts:
        assert resp.code in (ResponseCode.INVALID_ADMIN, ResponseCode.AUTHENTICATION_FAILED,
                             ResponseCode.SERVER_NOT_RESP), resp
    for reply in rest_attempts:
        assert reply.status in (400, 401, 403), reply
        assert reply.code in (None, ResponseCode.INVALID_ADMIN, ResponseCode.SERVER_NOT_RESP), reply
    assert state(c, victim, handle)[0] == ResponseCode.HANDLE_NOT_FOUND
    SEEN.extend((f"intrusion {attacker}->{victim}@{node}", repr(r).encode()) for r in attempts)
    SEEN.extend((f"intrusion REST {attacker}->{victim}@{node}", r.raw) for r in rest_attempts)


def test_an_enterprise_cannot_allocate_a_sibling_prefix(cluster: Cluster) -> None:
    c = cluster
    creds = (ident(HOSTED), c.secret(HOSTED))
    resp = binary(c, "sec-tyre-qingdao", Request(0, OpCode.CREATE_HANDLE, "0.NA/88.118.77", values=(
        admin_value(100, f"0.NA/{HOSTED}", 300, int(ALL_PERMS)),)), creds)
    assert resp.code == ResponseCode.INVALID_ADMIN, resp


def test_the_secondary_admin_cannot_grant_itself_add_handle_under_an_enterprise(cluster: Cluster) -> None:
    c = cluster
    sec = (ident(SECONDARY), c.secret(SECONDARY))
    node = NODE_OF[HOSTED]
    current = binary(c, node, Request(0, OpCode.RESOLUTION, f"0.NA/{HOSTED}"))
    mine = next(v for v in current.values if v.type == "HS_ADMIN" and v.index == 100)
    try:
        escalate = binary(c, node, Request(0, OpCode.MODIFY_VALUE, f"0.NA/{HOSTED}", values=(
            admin_value(100, f"0.NA/{SECONDARY}", 300, int(ALL_PERMS)),)), sec)
        created = binary(c, node, Request(0, OpCode.CREATE_HANDLE, f"{HOSTED}/by-the-secondary", values=(V1,)), sec)
    finally:  # put the allocation back as bootstrap wrote it (other tests share the cluster)
        restore = binary(c, node, Request(0, OpCode.MODIFY_VALUE, f"0.NA/{HOSTED}", values=(mine,)),
                         (ident(HOSTED), c.secret(HOSTED)))
        assert restore.code == ResponseCode.SUCCESS, restore
        binary(c, node, Request(0, OpCode.DELETE_HANDLE, f"{HOSTED}/by-the-secondary"),
               (ident(HOSTED), c.secret(HOSTED)))
    assert escalate.code == ResponseCode.INVALID_ADMIN, escalate
    assert created.code == ResponseCode.INVALID_ADMIN, created


def test_the_secondary_admin_can_neither_read_nor_change_an_enterprises_key(cluster: Cluster) -> None:
    """Otherwise it could become the enterprise's admin and write under its prefix."""
    c = cluster
    sec = (ident(SECONDARY), c.secret(SECONDARY))
    node = NODE_OF[HOSTED]
    read = binary(c, node, Request(0, OpCode.RESOLUTION, f"0.NA/{HOSTED}", indexes=(300,)), sec)
    assert read.code in (ResponseCode.SUCCESS, ResponseCode.VALUES_NOT_FOUND) and not read.values, read
    reply = rest(c, node, "GET", f"/api/handles/0.NA/{HOSTED}", creds=sec)
    assert reply.status == 200 and b"HS_SECKEY" not in reply.raw and c.secret(HOSTED).encode() not in reply.raw
    changed = binary(c, node, Request(0, OpCode.MODIFY_VALUE, f"0.NA/{HOSTED}", values=(
        HandleValue(300, HS_SECKEY, b"the-secondary-knows-this", perms=12),)), sec)
    removed = binary(c, node, Request(0, OpCode.REMOVE_VALUE, f"0.NA/{HOSTED}", indexes=(300,)), sec)
    assert (changed.code, removed.code) == (ResponseCode.INVALID_ADMIN, ResponseCode.INVALID_ADMIN)
    owner = binary(c, node, Request(0, OpCode.LIST_HANDLES, HOSTED), credentials(c, "owner", HOSTED))
    assert owner.code == ResponseCode.SUCCESS  # the enterprise's key still works


# --------------------------------------------------------------------------------------------------
# Secrets never appear in answers


def test_prefix_records_never_show_their_secret_to_anyone_but_their_admins(cluster: Cluster) -> None:
    c = cluster
    for who in ("none", "wrong", "other", "secondary"):
        creds = credentials(c, who, HOSTED)
        resp = binary(c, NODE_OF[HOSTED], Request(0, OpCode.RESOLUTION, f"0.NA/{HOSTED}"), creds)
        assert resp.code in (ResponseCode.SUCCESS, ResponseCode.AUTHENTICATION_FAILED), resp
        assert not [v for v in resp.values if v.type == HS_SECKEY], (who, resp)
        filtered = binary(c, NODE_OF[HOSTED], Request(0, OpCode.RESOLUTION, f"0.NA/{HOSTED}", indexes=(300,),
                                                      types=(HS_SECKEY,)), creds)
        assert not filtered.values, (who, filtered)
        for query in ("", "?index=300", "?type=HS_SECKEY", "?auth=true"):
            reply = rest(c, NODE_OF[HOSTED], "GET", f"/api/handles/0.NA/{HOSTED}{query}", creds=creds)
            assert reply.status in (200, 401)
            assert b"HS_SECKEY" not in reply.raw
            SEEN.append((f"resolve prefix record{query} as {who}", repr(resp).encode() + reply.raw))
    owner = binary(c, NODE_OF[HOSTED], Request(0, OpCode.RESOLUTION, f"0.NA/{HOSTED}"),
                   credentials(c, "owner", HOSTED))
    assert [v.data for v in owner.values if v.type == HS_SECKEY] == [c.secret(HOSTED).encode()]  # admin read


def test_no_answer_of_the_matrix_carries_a_secret(cluster: Cluster) -> None:
    """Runs after the matrix (file order): every answer collected above, bodies, headers and messages."""
    if len(SEEN) < len(CASES) + len(BIN_CASES):
        pytest.skip("needs the whole matrix in the same run (run the module, not this test alone)")
    secrets = cluster.all_secrets()
    for where, blob in SEEN:
        leak = contains_any(blob, secrets)
        assert leak is None, f"a secret in the answer of {where}"


# --------------------------------------------------------------------------------------------------
# Constant-time secret comparison


class CompareRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.real = hmac.compare_digest

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((len(a), len(b)))
        return self.real(a, b)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> CompareRecorder:
    rec = CompareRecorder()
    monkeypatch.setattr(auth_mod.hmac, "compare_digest", rec)
    return rec


@pytest.mark.parametrize("identity,secret,ok", [
    ("300:0.NA/88.100", b"right-secret", True),
    ("300:0.NA/88.100", b"wrong-secret", False),
    ("300:0.NA/88.100", b"", False),
    ("300:0.NA/88.999", b"right-secret", False),  # unknown identity: compared all the same
    ("301:0.NA/88.100", b"right-secret", False),  # no value at that index
    ("100:0.NA/88.100", b"right-secret", False),  # a value that is not an HS_SECKEY
])
def test_authenticate_always_compares_with_hmac_compare_digest(recorder: CompareRecorder, identity: str,
                                                               secret: bytes, ok: bool) -> None:
    node = AuthoritativeNode(MemoryStore(), ["88.100"], name="ct")
    node.bootstrap_record(prefix_record("88.100", "right-secret"))
    req = Request(1, OpCode.LIST_PREFIXES, "", auth=(identity, secret))
    resp = answer(node, req, 0.0)
    assert len(recorder.calls) == 1, recorder.calls  # exactly one comparison, whatever the case
    assert resp.code == (ResponseCode.SUCCESS if ok else ResponseCode.AUTHENTICATION_FAILED), resp
    assert b"right-secret" not in repr(resp).encode()


def test_authentication_through_the_cluster_uses_compare_digest(cluster: Cluster, recorder: CompareRecorder) -> None:
    c = cluster
    rest(c, NODE_OF[HOSTED], "GET", f"/api/handles?prefix={HOSTED}", creds=(ident("88.118.55"), "whatever"))
    binary(c, NODE_OF[HOSTED], Request(0, OpCode.LIST_HANDLES, HOSTED), (ident("88.118.55"), "whatever"))
    binary(c, NODE_OF[HOSTED], Request(0, OpCode.LIST_HANDLES, HOSTED), (ident(HOSTED), "wrong"))
    assert len(recorder.calls) >= 3, recorder.calls


# --------------------------------------------------------------------------------------------------
# Revocation (runs last: it revokes and restores 88.118.9's allocation)


def test_revoking_an_enterprise_prefix_does_not_hand_its_identifiers_to_the_next_holder(cluster: Cluster) -> None:
    from idresolve.cluster.bootstrap import allocation_values

    c = cluster
    node = NODE_OF[HOSTED]
    sec = (ident(SECONDARY), c.secret(SECONDARY))
    handle = f"{HOSTED}/survives-revocation"
    owner_creates(c, HOSTED, handle)
    revoked = binary(c, node, Request(0, OpCode.DELETE_HANDLE, f"0.NA/{HOSTED}"), sec)
    try:
        assert revoked.code in (ResponseCode.SUCCESS, ResponseCode.INVALID_ADMIN), revoked
        if revoked.code == ResponseCode.SUCCESS:
            binary(c, node, Request(0, OpCode.CREATE_HANDLE, f"0.NA/{HOSTED}", values=(
                admin_value(100, f"0.NA/{HOSTED}", 300, int(ALL_PERMS)),
                HandleValue(300, HS_SECKEY, b"chosen-by-the-next-holder", perms=12))), sec)
        hijack = binary(c, node, Request(0, OpCode.MODIFY_VALUE, handle, values=(
            string_value(1, "URL", "https://hijacked.example"),)), (ident(HOSTED), "chosen-by-the-next-holder"))
        assert hijack.code != ResponseCode.SUCCESS, hijack
        code, values = state(c, HOSTED, handle)
        assert code == ResponseCode.HANDLE_NOT_FOUND or \
            frozenset((v.index, v.type, v.data) for v in (V1, V2)) <= values, (code, values)
    finally:  # restore the allocation as bootstrap made it (the parent creates, the owner maintains)
        if revoked.code == ResponseCode.SUCCESS:
            binary(c, node, Request(0, OpCode.DELETE_HANDLE, f"0.NA/{HOSTED}"), sec)
            again = binary(c, node, Request(0, OpCode.CREATE_HANDLE, f"0.NA/{HOSTED}", values=allocation_values(
                SECONDARY, HOSTED, c.master, None, owner_perms=int(ALL_PERMS))), sec)
            assert again.code == ResponseCode.SUCCESS, again
        binary(c, node, Request(0, OpCode.DELETE_HANDLE, handle), credentials(c, "owner", HOSTED))
        assert binary(c, node, Request(0, OpCode.LIST_HANDLES, HOSTED),
                      credentials(c, "owner", HOSTED)).code == ResponseCode.SUCCESS
