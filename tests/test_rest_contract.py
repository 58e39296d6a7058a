"""The Handle REST API contract (docs/rest-contract.md), table-driven, over real sockets.

Every case is sent with the standard library's ``http.client`` exactly as a plain HTTP client would (Basic
auth with the percent-encoded identity, and the unencoded form too) to a fresh node from ``live_node``
(prefixes 88.100 and 88.200). Each test seeds the same few records first. After every case the node must
still answer, so a bad input never takes it down.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import SECRET

ADMIN_ENC = "300%3A0.NA%2F88.100"
ADMIN_PLAIN = "300:0.NA/88.100"
LIMITED_SECRET = "limited-secret"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
UUIDISH = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


AUTH: dict[str, str] = {
    "admin": basic(ADMIN_ENC, SECRET),
    "admin_plain": basic(ADMIN_PLAIN, SECRET),
    "admin_half_encoded": basic("300%3A0.NA/88.100", SECRET),
    "admin200": basic("300%3A0.NA%2F88.200", SECRET),  # authenticates, but administers only 88.200
    "limited": basic("300%3A88.100%2Flimited", LIMITED_SECRET),
    "wrong_secret": basic(ADMIN_ENC, "not-the-secret"),
    "unknown_identity": basic("300%3A0.NA%2F88.999", SECRET),
    "unknown_index": basic("301%3A0.NA%2F88.100", SECRET),
    "not_a_seckey": basic("100%3A0.NA%2F88.100", SECRET),  # index 100 is the HS_ADMIN, not a key
    "malformed_user": basic("admin", SECRET),
    "malformed_index": basic("abc%3A0.NA%2F88.100", SECRET),
    "malformed_percent": basic("300%3A0.NA%2F88.100%FF", SECRET),
    "no_colon": "Basic " + base64.b64encode(b"300%3A0.NA%2F88.100").decode(),
    "bad_base64": "Basic !!!not-base64!!!",
    "bad_scheme": "Bearer abcdef",
    "bad_session": 'Handle sessionId="no-such-session"',
}

# -- plain HTTP -------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None


def not_shed(r: Reply) -> Reply:
    """The contract's traffic is light, and the node runs with the shedding defaults users get: a 503 with
    code 3 here is a node that sheds without load, a failure (not something to send again)."""
    assert not (r.status == 503 and r.raw.startswith(b'{"responseCode":3')), f"shed under light traffic: {r}"
    return r


class Http:
    """Blocking requests with ``http.client``, one connection per request. Run it in a thread."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def __call__(self, method: str, path: str, *, body: Any = None, auth: str | None = None,
                 ctype: str | None = "application/json", headers: dict[str, str] | None = None,
                 chunked: bool = False) -> Reply:
        hdrs = dict(headers or {})
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        if data is not None and ctype is not None:
            hdrs["Content-Type"] = ctype
        if auth is not None:
            hdrs["Authorization"] = AUTH.get(auth, auth)
        return not_shed(self._once(method, path, data, hdrs, chunked))

    def _once(self, method: str, path: str, data: bytes | None, hdrs: dict[str, str], chunked: bool) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            if chunked:
                conn.request(method, path, body=iter([data or b""]), headers=hdrs, encode_chunked=True)
            else:
                conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def ok(self, method: str, path: str, **kw: Any) -> Reply:
        r = self(method, path, **kw)
        assert 200 <= r.status < 300, (method, path, r.status, r.raw[:300])
        return r

    def values(self, handle: str, auth: str | None = None) -> dict[int, dict[str, Any]]:
        r = self.ok("GET", f"/api/handles/{handle}", auth=auth)
        return {v["index"]: v for v in r.body["values"]}


def url_value(index: int, text: str, vtype: str = "URL") -> dict[str, Any]:
    return {"index": index, "type": vtype, "data": {"format": "string", "value": text}}


ADMIN_VALUE = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
    "handle": "0.NA/88.100", "index": 300, "permissions": "011111110011"}}}
LIMITED_PERMS = "010001010000"  # READ_VALUE, ADD_VALUE, MODIFY_VALUE: no DELETE_HANDLE, no REMOVE_VALUE

SEED: list[tuple[str, str, Any]] = [
    ("PUT", "/api/handles/88.100/test1", {"values": [url_value(1, "https://example.com/test1")]}),
    ("PUT", "/api/handles/88.100/withkey", {"values": [url_value(1, "https://example.com/k"),
                                                       {"index": 300, "type": "HS_SECKEY", "data": "hidden"}]}),
    # A second identity, 300:88.100/limited, administering only its own record and only in part.
    ("PUT", "/api/handles/88.100/limited", {"values": [
        url_value(1, "limited", "DESC"),
        {"index": 300, "type": "HS_SECKEY", "data": {"format": "string", "value": LIMITED_SECRET}},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "88.100/limited", "index": "300", "permissions": LIMITED_PERMS}}},
    ]}),
]


@pytest.fixture
async def node(live_node: Any) -> Http:
    client = Http(live_node.url)

    def seed() -> None:
        for method, path, body in SEED:
            client.ok(method, path, body=body, auth="admin")

    await asyncio.to_thread(seed)
    return client


# -- the table --------------------------------------------------------------------------------------------

Check = Callable[[Reply, Http], None]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    code: int | None  # the body's responseCode; None: no responseCode member (or no body at all)
    query: str = ""
    auth: str | None = None
    body: Any = None
    ctype: str | None = "application/json"
    keys: frozenset[str] | None = None  # exactly these top-level keys
    expect: dict[str, Any] = field(default_factory=dict)  # these members, with these values
    www_authenticate: bool = False
    setup: tuple[tuple[str, str, Any], ...] = ()  # more requests as admin before the case, each must succeed
    check: Check | None = None  # more assertions, may send follow-up requests
    chunked: bool = False
    empty: bool = False  # the body must be empty (failed authentication answers say nothing)


def keys(*names: str) -> frozenset[str]:
    return frozenset(names)


K_OK = keys("responseCode", "handle")
K_RESOLVED = keys("responseCode", "handle", "values")
K_MSG = keys("responseCode", "message")
K_MSG_HANDLE = keys("responseCode", "message", "handle")
K_LIST = keys("responseCode", "prefix", "totalCount", "handles")
VALUES1 = {"values": [url_value(1, "https://example.com/new")]}


# Checks that look inside answers or at the node's state afterwards.

def value_shapes(r: Reply, h: Http) -> None:
    vals = r.body["values"]
    assert [v["index"] for v in vals] == [1, 100]
    url, admin = vals
    assert url == {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/test1"},
                   "ttl": 86400, "timestamp": url["timestamp"]}  # no permissions: it is the default 1110
    assert TIMESTAMP.fullmatch(url["timestamp"])
    assert admin["type"] == "HS_ADMIN"
    assert admin["data"] == {"format": "admin", "value": {"handle": "0.NA/88.100", "index": 300,
                                                          "permissions": "011111110011"}}


def indexes_are(*expected: int, handle: str = "88.100/test1") -> Check:
    def check(r: Reply, h: Http) -> None:
        assert sorted(v["index"] for v in r.body["values"]) == list(expected)
    return check


def state_is(handle: str, *expected: int, auth: str | None = "admin") -> Check:
    def check(r: Reply, h: Http) -> None:
        assert sorted(h.values(handle, auth)) == list(expected)
    return check


def gone(*handles: str) -> Check:
    def check(r: Reply, h: Http) -> None:
        for handle in handles:
            again = h("GET", f"/api/handles/{handle}")
            assert (again.status, again.body["responseCode"]) == (404, 100), handle
    return check


def data_of(handle: str, index: int, value: str) -> Check:
    def check(r: Reply, h: Http) -> None:
        assert h.values(handle)[index]["data"]["value"] == value
    return check


def types_are(*expected: str) -> Check:
    def check(r: Reply, h: Http) -> None:
        assert sorted(v["type"] for v in r.body["values"]) == sorted(expected)
    return check


def all_of(*checks: Check) -> Check:
    def check(r: Reply, h: Http) -> None:
        for c in checks:
            c(r, h)
    return check


def listed(*handles: str, total: int) -> Check:
    def check(r: Reply, h: Http) -> None:
        assert r.body["totalCount"] == str(total)  # a JSON string, as the reference server sends it
        assert r.body["handles"] == list(handles)
    return check


def minted(r: Reply, h: Http) -> None:
    handle = r.body["handle"]
    prefix, _, suffix = handle.partition("/")
    assert prefix == "88.100" and UUIDISH.fullmatch(suffix), handle
    assert h.values(handle)[1]["data"]["value"] == "https://example.com/new"


def batch_ok(*handles: str) -> Check:
    def check(r: Reply, h: Http) -> None:
        assert r.body["count"] == len(handles)
        assert r.body["results"] == [{"handle": x, "responseCode": 1} for x in handles]
        for x in handles:
            assert 1 in h.values(x)
    return check


def batch_refused(results: list[tuple[str, int]], *absent: str) -> Check:
    def check(r: Reply, h: Http) -> None:
        assert [(x["handle"], x["responseCode"]) for x in r.body["results"]] == results
        assert all("message" in x for x in r.body["results"] if x["responseCode"] != 1)
        gone(*absent)(r, h)
    return check


def pretty(r: Reply, h: Http) -> None:
    assert b"\n  " in r.raw  # indented


def timestamp_is_servers(r: Reply, h: Http) -> None:
    stamp = h.values("88.100/stamped")[1]["timestamp"]
    assert stamp != "2001-01-01T00:00:00Z"
    assert abs(time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime())) < 600


def session_ok(authenticated: bool) -> Check:
    def check(r: Reply, h: Http) -> None:
        assert r.body["authenticated"] is authenticated
        assert isinstance(r.body["sessionId"], str) and r.body["sessionId"]
        assert isinstance(r.body["nonce"], str) and r.body["nonce"]
        if authenticated:
            assert r.body["id"] == "300:0.NA/88.100"
        else:
            assert "id" not in r.body
    return check


def batch_items(n: int, start: int = 0, prefix: str = "88.100") -> dict[str, Any]:
    return {"handles": [{"handle": f"{prefix}/b{i}", "values": [url_value(1, f"https://e.com/{i}")]}
                        for i in range(start, start + n)]}


LONG_SUFFIX = "x" * (255 - len("88.100/"))
BAD = "PUT"  # shorthand for the bad-input block below
MAX_BODY = 256 * 1024

CASES: list[Case] = [
    # -- resolution ------------------------------------------------------------------------------------
    Case("resolve found", "GET", "/api/handles/88.100/test1", 200, 1, keys=K_RESOLVED,
         expect={"handle": "88.100/test1"}, check=value_shapes),
    Case("resolve echoes the client's spelling", "GET", "/api/handles/88.100/TEST1", 200, 1, keys=K_RESOLVED,
         expect={"handle": "88.100/TEST1"}, check=indexes_are(1, 100)),
    Case("resolve with a mixed-case prefix", "GET", "/api/handles/88.100/Test1", 200, 1,
         expect={"handle": "88.100/Test1"}),
    Case("filter by index", "GET", "/api/handles/88.100/test1", 200, 1, query="index=1", keys=K_RESOLVED,
         check=indexes_are(1)),
    Case("filter by type", "GET", "/api/handles/88.100/test1", 200, 1, query="type=URL", check=indexes_are(1)),
    Case("filter by type, any case", "GET", "/api/handles/88.100/test1", 200, 1, query="type=url",
         check=indexes_are(1)),
    Case("filters repeat (type)", "GET", "/api/handles/88.100/test1", 200, 1, query="type=URL&type=HS_ADMIN",
         check=indexes_are(1, 100)),
    Case("filters repeat (index)", "GET", "/api/handles/88.100/test1", 200, 1, query="index=1&index=100",
         check=indexes_are(1, 100)),
    Case("filter ?index=2 matches nothing", "GET", "/api/handles/88.100/test1", 200, 200, query="index=2",
         keys=keys("responseCode", "values", "handle"), expect={"values": [], "handle": "88.100/test1"}),
    Case("filter ?type=EMAIL matches nothing", "GET", "/api/handles/88.100/test1", 200, 200, query="type=EMAIL",
         keys=keys("responseCode", "values", "handle"), expect={"values": []}),
    Case("filter with a non-numeric index", "GET", "/api/handles/88.100/test1", 400, 202, query="index=abc"),
    Case("filter with index 0", "GET", "/api/handles/88.100/test1", 400, 202, query="index=0"),
    Case("?pretty indents", "GET", "/api/handles/88.100/test1", 200, 1, query="pretty", check=pretty),
    Case("?auth=true", "GET", "/api/handles/88.100/test1", 200, 1, query="auth=true", check=indexes_are(1, 100)),
    Case("resolve unknown handle", "GET", "/api/handles/88.100/doesnotexist", 404, 100,
         keys=K_OK, expect={"handle": "88.100/doesnotexist"}),
    Case("resolve empty handle", "GET", "/api/handles/", 400, 102, keys=K_MSG,
         expect={"message": "Empty handle invalid"}),
    Case("resolve without a slash", "GET", "/api/handles/88.100", 400, 301, keys=K_MSG_HANDLE,
         expect={"message": "That prefix doesn't live here", "handle": "88.100"}),
    Case("resolve under a foreign prefix", "GET", "/api/handles/88.999/x", 400, 301, keys=K_MSG_HANDLE,
         expect={"message": "That prefix doesn't live here", "handle": "88.999/x"}),
    Case("resolve under a look-alike prefix", "GET", "/api/handles/88.1000/x", 400, 301),
    Case("resolve under a derived prefix not hosted", "GET", "/api/handles/88.100.5/x", 400, 301),
    Case("resolve a foreign prefix record", "GET", "/api/handles/0.NA/88.999", 400, 301),
    Case("prefix record, anonymous: no HS_SECKEY", "GET", "/api/handles/0.NA/88.100", 200, 1,
         expect={"handle": "0.NA/88.100"}, check=types_are("HS_ADMIN")),
    Case("prefix record, admin: HS_SECKEY visible", "GET", "/api/handles/0.NA/88.100", 200, 1, auth="admin",
         check=types_are("HS_ADMIN", "HS_SECKEY")),
    Case("prefix record, lower case", "GET", "/api/handles/0.na/88.100", 200, 1, expect={"handle": "0.na/88.100"}),
    Case("HS_SECKEY hidden from anonymous resolution", "GET", "/api/handles/88.100/withkey", 200, 1,
         check=types_are("URL", "HS_ADMIN")),
    Case("HS_SECKEY hidden from anonymous ?type=HS_SECKEY", "GET", "/api/handles/88.100/withkey", 200, 200,
         query="type=HS_SECKEY"),
    Case("HS_SECKEY visible to the admin", "GET", "/api/handles/88.100/withkey", 200, 1, auth="admin",
         check=all_of(types_are("URL", "HS_ADMIN", "HS_SECKEY"), lambda r, h: _seckey_shape(r))),
    Case("HS_SECKEY visible to the admin, plain identity", "GET", "/api/handles/88.100/withkey", 200, 1,
         auth="admin_plain", check=types_are("URL", "HS_ADMIN", "HS_SECKEY")),
    Case("HS_SECKEY hidden from another admin", "GET", "/api/handles/88.100/withkey", 200, 1, auth="admin200",
         check=types_are("URL", "HS_ADMIN")),
    Case("HS_SECKEY visible to its record's reader", "GET", "/api/handles/88.100/limited", 200, 1, auth="limited",
         check=types_are("DESC", "HS_ADMIN", "HS_SECKEY")),
    Case("resolve with a wrong secret", "GET", "/api/handles/88.100/test1", 401, None, empty=True, auth="wrong_secret",
         www_authenticate=True),
    # -- create, replace, modify --------------------------------------------------------------------
    Case("create new", "PUT", "/api/handles/88.100/new1", 201, 1, auth="admin", body=VALUES1, keys=K_OK,
         expect={"handle": "88.100/new1"}, check=state_is("88.100/new1", 1, 100)),
    Case("create, unencoded identity", "PUT", "/api/handles/88.100/new1", 201, 1, auth="admin_plain", body=VALUES1,
         keys=K_OK),
    Case("create, half-encoded identity", "PUT", "/api/handles/88.100/new1", 201, 1, auth="admin_half_encoded",
         body=VALUES1),
    Case("create keeps the client's spelling", "PUT", "/api/handles/88.100/MiXed", 201, 1, auth="admin",
         body=VALUES1, expect={"handle": "88.100/MiXed"},
         check=lambda r, h: _assert_listed(h, "88.100/MiXed")),
    Case("create with a UTF-8 suffix", "PUT", "/api/handles/88.100/%E4%BA%A7%E5%93%81-1", 201, 1, auth="admin",
         body=VALUES1, expect={"handle": "88.100/产品-1"}, check=state_is("88.100/%E4%BA%A7%E5%93%81-1", 1, 100)),
    Case("create in the second prefix", "PUT", "/api/handles/88.200/x", 201, 1, auth="admin200", body=VALUES1),
    Case("create with input variants: string index, bare data, admin index as string", "PUT",
         "/api/handles/88.100/variants", 201, 1, auth="admin", body={"values": [
             {"index": "1", "type": "URL", "data": "https://bare.example"},
             {"index": 2, "type": "EMAIL", "data": {"format": "string", "value": "a@b.c"}, "ttl": 60},
             {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                 "handle": "0.NA/88.100", "index": "300", "permissions": "011111110011"}}}]},
         check=lambda r, h: _variants(h)),
    Case("client timestamps are ignored", "PUT", "/api/handles/88.100/stamped", 201, 1, auth="admin",
         body={"values": [{**url_value(1, "x"), "timestamp": "2001-01-01T00:00:00Z"}]}, check=timestamp_is_servers),
    Case("create a handle of exactly 255 characters", "PUT", f"/api/handles/88.100/{LONG_SUFFIX}", 201, 1,
         auth="admin", body=VALUES1),
    Case("replace existing (overwrite default)", "PUT", "/api/handles/88.100/test1", 200, 1, auth="admin",
         body={"values": [url_value(1, "https://example.com/replaced"), url_value(2, "a@b.c", "EMAIL"),
                          {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                              "handle": "0.NA/88.100", "index": 300}}}]},
         keys=K_OK, expect={"handle": "88.100/test1"},
         check=all_of(state_is("88.100/test1", 1, 2, 100), data_of("88.100/test1", 1, "https://example.com/replaced"))),
    Case("replace existing with ?overwrite=true", "PUT", "/api/handles/88.100/test1", 200, 1, query="overwrite=true",
         auth="admin", body={"values": [url_value(1, "https://example.com/t")]}),
    Case("replace, spelled differently", "PUT", "/api/handles/88.100/TEST1", 200, 1, auth="admin",
         body={"values": [url_value(1, "https://example.com/t")]}, expect={"handle": "88.100/TEST1"},
         check=lambda r, h: _assert_listed(h, "88.100/test1")),
    Case("create with ?overwrite=false, exists", "PUT", "/api/handles/88.100/test1", 409, 101,
         query="overwrite=false", auth="admin", body=VALUES1, keys=K_OK, expect={"handle": "88.100/test1"},
         check=data_of("88.100/test1", 1, "https://example.com/test1")),
    Case("create with ?overwrite=false, exists under another case", "PUT", "/api/handles/88.100/TEST1", 409, 101,
         query="overwrite=false", auth="admin", body=VALUES1, expect={"handle": "88.100/TEST1"}),
    Case("create with ?overwrite=false, new", "PUT", "/api/handles/88.100/fresh", 201, 1, query="overwrite=false",
         auth="admin", body=VALUES1),
    Case("modify value ?index=1", "PUT", "/api/handles/88.100/test1", 200, 1, query="index=1", auth="admin",
         body={"values": [url_value(1, "https://example.com/modified")]}, keys=K_OK,
         check=all_of(state_is("88.100/test1", 1, 100), data_of("88.100/test1", 1, "https://example.com/modified"))),
    Case("add value ?index=2", "PUT", "/api/handles/88.100/test1", 201, 1, query="index=2", auth="admin",
         body={"values": [url_value(2, "a@b.c", "EMAIL")]}, keys=K_OK,
         check=all_of(state_is("88.100/test1", 1, 2, 100), data_of("88.100/test1", 1, "https://example.com/test1"))),
    Case("add and modify together", "PUT", "/api/handles/88.100/test1", 201, 1, query="index=1&index=3",
         auth="admin", body={"values": [url_value(1, "m"), url_value(3, "n")]},
         check=state_is("88.100/test1", 1, 3, 100)),
    Case("add value ?index=1&overwrite=false, exists", "PUT", "/api/handles/88.100/test1", 409, 201,
         query="index=1&overwrite=false", auth="admin", body={"values": [url_value(1, "x")]}, keys=K_MSG_HANDLE,
         expect={"message": "Index conflict for 1", "handle": "88.100/test1"},
         check=data_of("88.100/test1", 1, "https://example.com/test1")),
    Case("query indexes must match the body", "PUT", "/api/handles/88.100/test1", 400, 202, query="index=2",
         auth="admin", body={"values": [url_value(3, "x")]}, check=state_is("88.100/test1", 1, 100)),
    Case("add a value to an unknown handle", "PUT", "/api/handles/88.100/nothere", 404, 100, query="index=1",
         auth="admin", body=VALUES1, expect={"handle": "88.100/nothere"}),
    Case("create under a foreign prefix", "PUT", "/api/handles/88.999/x", 400, 301, auth="admin", body=VALUES1,
         expect={"handle": "88.999/x"}),
    Case("create without a slash", "PUT", "/api/handles/88.100", 400, 301, auth="admin", body=VALUES1),
    Case("create the empty handle", "PUT", "/api/handles/", 400, 102, auth="admin", body=VALUES1),
    Case("value index 0", "PUT", "/api/handles/88.100/bad", 400, 202, auth="admin",
         body={"values": [url_value(0, "x")]}, expect={"handle": "88.100/bad"}, check=gone("88.100/bad")),
    Case("value index -1", "PUT", "/api/handles/88.100/bad", 400, 202, auth="admin",
         body={"values": [url_value(-1, "x")]}, check=gone("88.100/bad")),
    Case("PUT without Content-Type", "PUT", "/api/handles/88.100/bad", 400, 4, auth="admin", body=VALUES1,
         ctype=None, keys=K_MSG, check=gone("88.100/bad")),
    Case("PUT with Content-Type text/plain", "PUT", "/api/handles/88.100/bad", 400, 4, auth="admin", body=VALUES1,
         ctype="text/plain", keys=K_MSG),
    Case("PUT with JSON and a charset", "PUT", "/api/handles/88.100/cs", 201, 1, auth="admin", body=VALUES1,
         ctype="application/json; charset=utf-8"),
    Case("malformed JSON", "PUT", "/api/handles/88.100/bad", 400, 4, auth="admin", body=b'{"values": [',
         keys=K_MSG, check=gone("88.100/bad")),
    Case("body without values", "PUT", "/api/handles/88.100/bad", 400, 4, auth="admin", body={}),
    Case("values not a list", "PUT", "/api/handles/88.100/bad", 400, 202, auth="admin", body={"values": "x"}),
    # -- mintNewSuffix ----------------------------------------------------------------------------------
    Case("mintNewSuffix", "PUT", "/api/handles/88.100/", 201, 1, query="mintNewSuffix=true", auth="admin",
         body=VALUES1, keys=K_OK, check=minted),
    Case("mintNewSuffix without credentials", "PUT", "/api/handles/88.100/", 401, 402, query="mintNewSuffix=true",
         body=VALUES1, www_authenticate=True),
    Case("mintNewSuffix under a foreign prefix", "PUT", "/api/handles/88.999/", 400, 301,
         query="mintNewSuffix=true", auth="admin", body=VALUES1),
    Case("mintNewSuffix on a full handle", "PUT", "/api/handles/88.100/x", 400, 102, query="mintNewSuffix=true",
         auth="admin", body=VALUES1),
    # -- delete -----------------------------------------------------------------------------------------
    Case("delete a value that is not there", "DELETE", "/api/handles/88.100/test1", 400, 200, query="index=7",
         auth="admin", keys=K_OK, expect={"handle": "88.100/test1"}, check=state_is("88.100/test1", 1, 100)),
    Case("delete a value", "DELETE", "/api/handles/88.100/test1", 200, 1, query="index=1", auth="admin", keys=K_OK,
         check=state_is("88.100/test1", 100)),
    Case("delete values, one missing: nothing deleted", "DELETE", "/api/handles/88.100/test1", 400, 200,
         query="index=1&index=7", auth="admin", check=state_is("88.100/test1", 1, 100)),
    Case("delete record", "DELETE", "/api/handles/88.100/test1", 200, 1, auth="admin", keys=K_OK,
         expect={"handle": "88.100/test1"}, check=gone("88.100/test1", "88.100/TEST1")),
    Case("delete record, spelled differently", "DELETE", "/api/handles/88.100/Test1", 200, 1, auth="admin",
         expect={"handle": "88.100/Test1"}, check=gone("88.100/test1")),
    Case("delete record, plain identity", "DELETE", "/api/handles/88.100/test1", 200, 1, auth="admin_plain"),
    Case("delete unknown record", "DELETE", "/api/handles/88.100/nothere", 404, 100, auth="admin", keys=K_OK,
         expect={"handle": "88.100/nothere"}),
    Case("delete values of an unknown record", "DELETE", "/api/handles/88.100/nothere", 404, 100, query="index=1",
         auth="admin", expect={"handle": "88.100/nothere"}),
    Case("delete under a foreign prefix", "DELETE", "/api/handles/88.999/x", 400, 301, auth="admin"),
    Case("delete a created then deleted record again", "DELETE", "/api/handles/88.100/twice", 404, 100,
         auth="admin", setup=(("PUT", "/api/handles/88.100/twice", VALUES1), ("DELETE", "/api/handles/88.100/twice",
                                                                               None))),
    # -- authentication -------------------------------------------------------------------------------
    Case("write with no credentials", "PUT", "/api/handles/88.100/new1", 401, 402, body=VALUES1, keys=K_OK,
         expect={"handle": "88.100/new1"}, www_authenticate=True, check=gone("88.100/new1")),
    Case("delete with no credentials", "DELETE", "/api/handles/88.100/test1", 401, 402, keys=K_OK,
         expect={"handle": "88.100/test1"}, www_authenticate=True, check=state_is("88.100/test1", 1, 100)),
    *[Case(f"write with {a.replace('_', ' ')}", "PUT", "/api/handles/88.100/new1", 401, None, empty=True, auth=a,
           body=VALUES1, www_authenticate=True, check=gone("88.100/new1"))
      for a in ("wrong_secret", "unknown_identity", "unknown_index", "not_a_seckey", "malformed_user",
                "malformed_index", "malformed_percent", "no_colon", "bad_base64", "bad_scheme", "bad_session")],
    Case("delete with a wrong secret", "DELETE", "/api/handles/88.100/test1", 401, None, empty=True, auth="wrong_secret",
         www_authenticate=True, check=state_is("88.100/test1", 1, 100)),
    Case("list with a wrong secret", "GET", "/api/handles", 401, None, empty=True, query="prefix=88.100", auth="wrong_secret",
         www_authenticate=True),
    Case("batch with a wrong secret", "POST", "/api/batch", 401, None, empty=True, auth="wrong_secret", body=batch_items(2),
         www_authenticate=True, check=gone("88.100/b0")),
    Case("another prefix's admin may not create here", "PUT", "/api/handles/88.100/new1", 403, 400,
         auth="admin200", body=VALUES1, expect={"handle": "88.100/new1"}, check=gone("88.100/new1")),
    Case("another prefix's admin may not delete here", "DELETE", "/api/handles/88.100/test1", 403, 400,
         auth="admin200", check=state_is("88.100/test1", 1, 100)),
    Case("another prefix's admin may not modify here", "PUT", "/api/handles/88.100/test1", 403, 400,
         query="index=1", auth="admin200", body={"values": [url_value(1, "evil")]},
         check=data_of("88.100/test1", 1, "https://example.com/test1")),
    Case("limited identity may not create handles", "PUT", "/api/handles/88.100/new1", 403, 400, auth="limited",
         body=VALUES1, check=gone("88.100/new1")),
    Case("limited identity may not delete its record", "DELETE", "/api/handles/88.100/limited", 403, 400,
         auth="limited", check=state_is("88.100/limited", 1, 100, 300, auth="limited")),
    Case("limited identity may not remove a value", "DELETE", "/api/handles/88.100/limited", 403, 400,
         query="index=1", auth="limited", check=state_is("88.100/limited", 1, 100, 300, auth="limited")),
    Case("limited identity may add a value", "PUT", "/api/handles/88.100/limited", 201, 1, query="index=2",
         auth="limited", body={"values": [url_value(2, "more")]},
         check=state_is("88.100/limited", 1, 2, 100, 300, auth="limited")),
    Case("limited identity may modify a value", "PUT", "/api/handles/88.100/limited", 200, 1, query="index=1",
         auth="limited", body={"values": [url_value(1, "changed", "DESC")]}, check=data_of("88.100/limited", 1,
                                                                                          "changed")),
    Case("limited identity may not touch another record", "PUT", "/api/handles/88.100/test1", 403, 400,
         query="index=1", auth="limited", body={"values": [url_value(1, "evil")]}),
    Case("limited identity may not list", "GET", "/api/handles", 403, 400, query="prefix=88.100", auth="limited"),
    # -- listing --------------------------------------------------------------------------------------
    Case("list a prefix, no credentials", "GET", "/api/handles", 401, 402, query="prefix=88.100", keys=K_OK,
         expect={"handle": "88.100"}, www_authenticate=True),
    Case("list a prefix", "GET", "/api/handles", 200, 1, query="prefix=88.100", auth="admin", keys=K_LIST,
         expect={"prefix": "88.100"},
         check=listed("88.100/limited", "88.100/test1", "88.100/withkey", total=3)),
    Case("list a prefix, plain identity", "GET", "/api/handles", 200, 1, query="prefix=88.100", auth="admin_plain",
         check=listed("88.100/limited", "88.100/test1", "88.100/withkey", total=3)),
    Case("list in the 0.NA/ form", "GET", "/api/handles", 200, 1, query="prefix=0.NA/88.100", auth="admin",
         keys=K_LIST, expect={"prefix": "88.100"},
         check=listed("88.100/limited", "88.100/test1", "88.100/withkey", total=3)),
    Case("list in the 0.NA/ form, encoded", "GET", "/api/handles", 200, 1, query="prefix=0.NA%2F88.100",
         auth="admin", expect={"prefix": "88.100"}),
    Case("list page 0 of size 2", "GET", "/api/handles", 200, 1, query="prefix=88.100&page=0&pageSize=2",
         auth="admin", keys=keys(*K_LIST, "page", "pageSize"), expect={"page": 0, "pageSize": 2},
         check=listed("88.100/limited", "88.100/test1", total=3)),
    Case("list page 1 of size 2", "GET", "/api/handles", 200, 1, query="prefix=88.100&page=1&pageSize=2",
         auth="admin", check=listed("88.100/withkey", total=3)),
    Case("list a page past the end", "GET", "/api/handles", 200, 1, query="prefix=88.100&page=5&pageSize=2",
         auth="admin", check=listed(total=3)),
    Case("list pageSize=0 counts only", "GET", "/api/handles", 200, 1, query="prefix=88.100&pageSize=0",
         auth="admin", expect={"pageSize": 0}, check=listed(total=3)),
    Case("list an empty prefix", "GET", "/api/handles", 200, 1, query="prefix=88.200", auth="admin200",
         check=listed(total=0)),
    Case("list another admin's prefix", "GET", "/api/handles", 403, 400, query="prefix=88.200", auth="admin"),
    Case("list a foreign prefix", "GET", "/api/handles", 400, 301, query="prefix=88.999", auth="admin"),
    Case("list without ?prefix", "GET", "/api/handles", 400, 4, auth="admin"),
    Case("list with a bad page", "GET", "/api/handles", 400, 4, query="prefix=88.100&page=abc", auth="admin"),
    Case("list with a negative pageSize", "GET", "/api/handles", 400, 4, query="prefix=88.100&pageSize=-1",
         auth="admin"),
    Case("list a malformed prefix", "GET", "/api/handles", 400, 102, query="prefix=88..100", auth="admin"),
    Case("list a hosted derived prefix", "GET", "/api/handles", 200, 1, query="prefix=88.100.7", auth="admin",
         setup=(("PUT", "/api/handles/0.NA/88.100.7", {"values": [
             {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                 "handle": "0.NA/88.100", "index": 300, "permissions": "111111111111"}}}]}),
                ("PUT", "/api/handles/88.100.7/a", VALUES1)),
         expect={"prefix": "88.100.7"}, check=listed("88.100.7/a", total=1)),
    # -- prefixes and sessions ----------------------------------------------------------------------
    Case("list prefixes", "GET", "/api/prefixes", 200, 1, auth="admin",
         expect={"prefixes": ["0.NA/88.100", "0.NA/88.200"], "totalCount": "2"}),
    Case("list prefixes, no credentials", "GET", "/api/prefixes", 401, 402, www_authenticate=True),
    Case("list prefixes, wrong secret", "GET", "/api/prefixes", 401, None, empty=True, auth="wrong_secret",
         www_authenticate=True),
    Case("open a session", "POST", "/api/sessions", 201, None, auth="admin",
         keys=keys("sessionId", "nonce", "authenticated", "id"), check=session_ok(True)),
    Case("open a session, plain identity", "POST", "/api/sessions", 201, None, auth="admin_plain",
         check=session_ok(True)),
    Case("open an anonymous session", "POST", "/api/sessions", 201, None, check=session_ok(False)),
    Case("open a session with a wrong secret", "POST", "/api/sessions", 401, None, empty=True, auth="wrong_secret",
         www_authenticate=True),
    Case("this session, unknown", "GET", "/api/sessions/this", 401, None, empty=True, auth="bad_session"),
    # -- unknown paths --------------------------------------------------------------------------------
    Case("unknown /api path", "GET", "/api/nothing", 404, 4, keys=K_MSG),
    Case("unknown /api path, POST", "POST", "/api/nothing/here", 404, 4, keys=K_MSG),
    Case("/api/handlesx is not /api/handles", "GET", "/api/handlesx", 404, 4),
    Case("POST to a handle", "POST", "/api/handles/88.100/test1", 405, 4),
    # -- batch ----------------------------------------------------------------------------------------
    Case("batch", "POST", "/api/batch", 201, 1, auth="admin", body=batch_items(3),
         keys=keys("responseCode", "count", "results"), check=batch_ok("88.100/b0", "88.100/b1", "88.100/b2")),
    Case("batch of 2000", "POST", "/api/batch", 201, 1, auth="admin", body=batch_items(2000),
         check=lambda r, h: _assert_count(h, "88.100", 2003)),
    Case("batch of 2001 is refused, nothing registered", "POST", "/api/batch", 400, 4, auth="admin",
         body=batch_items(2001), keys=K_MSG, check=gone("88.100/b0", "88.100/b2000")),
    Case("batch with an existing handle: nothing registered", "POST", "/api/batch", 409, 101, auth="admin",
         body={"handles": [*batch_items(2)["handles"], {"handle": "88.100/test1", "values": [url_value(1, "x")]}]},
         keys=keys("responseCode", "message", "results"),
         check=all_of(batch_refused([("88.100/b0", 1), ("88.100/b1", 1), ("88.100/test1", 101)], "88.100/b0",
                                    "88.100/b1"), data_of("88.100/test1", 1, "https://example.com/test1"))),
    Case("batch with overwrite", "POST", "/api/batch", 201, 1, auth="admin",
         body={"overwrite": True, "handles": [{"handle": "88.100/test1", "values": [url_value(1, "over")]}]},
         check=data_of("88.100/test1", 1, "over")),
    Case("batch with an invalid value: nothing registered", "POST", "/api/batch", 400, 202, auth="admin",
         body={"handles": [*batch_items(2)["handles"], {"handle": "88.100/v", "values": [url_value(0, "x")]}]},
         check=all_of(lambda r, h: _assert_results_include(r, "88.100/v", 202), gone("88.100/b0", "88.100/v"))),
    Case("batch naming a handle twice: nothing registered", "POST", "/api/batch", 409, 101, auth="admin",
         body={"handles": [*batch_items(1)["handles"], *batch_items(1)["handles"]]},
         check=batch_refused([("88.100/b0", 1), ("88.100/b0", 101)], "88.100/b0")),
    Case("batch with a foreign prefix: nothing registered", "POST", "/api/batch", 400, 301, auth="admin",
         body={"handles": [*batch_items(1)["handles"], {"handle": "88.999/x", "values": [url_value(1, "x")]}]},
         check=batch_refused([("88.100/b0", 1), ("88.999/x", 301)], "88.100/b0")),
    Case("batch with a malformed handle: nothing registered", "POST", "/api/batch", 400, 102, auth="admin",
         body={"handles": [*batch_items(1)["handles"], {"handle": "88.100/\u0001", "values": [url_value(1, "x")]}]},
         check=gone("88.100/b0")),
    Case("batch not permitted: nothing registered", "POST", "/api/batch", 403, 400, auth="admin200",
         body=batch_items(2), check=gone("88.100/b0", "88.100/b1")),
    Case("batch without credentials", "POST", "/api/batch", 401, 402, body=batch_items(1), www_authenticate=True,
         check=gone("88.100/b0")),
    Case("batch without Content-Type", "POST", "/api/batch", 400, 4, auth="admin", body=batch_items(1), ctype=None),
    Case("batch body is a list", "POST", "/api/batch", 400, 4, auth="admin", body=batch_items(1)["handles"]),
    Case("batch handles not a list", "POST", "/api/batch", 400, 4, auth="admin", body={"handles": "x"}),
    Case("batch item not an object", "POST", "/api/batch", 400, 4, auth="admin", body={"handles": [5]}),
    Case("batch item without a handle", "POST", "/api/batch", 400, 4, auth="admin",
         body={"handles": [{"values": [url_value(1, "x")]}]}),
    Case("batch empty", "POST", "/api/batch", 201, 1, auth="admin", body={"handles": []}, expect={"count": 0}),
    Case("batch malformed JSON", "POST", "/api/batch", 400, 4, auth="admin", body=b'{"handles": [}'),
    # -- bad input: never a 500, the node keeps serving ---------------------------------------------------
    Case("oversized body", BAD, "/api/handles/88.100/big", 400, 4, auth="admin",
         body=b'{"values": [], "pad": "' + b"x" * MAX_BODY + b'"}', check=gone("88.100/big")),
    Case("oversized chunked body", BAD, "/api/handles/88.100/big", 400, 4, auth="admin", chunked=True,
         body=b'{"values": [], "pad": "' + b"x" * MAX_BODY + b'"}', check=gone("88.100/big")),
    Case("chunked body of a good size", BAD, "/api/handles/88.100/chunked", 201, 1, auth="admin", chunked=True,
         body=VALUES1),
    Case("value data over 64 KiB", BAD, "/api/handles/88.100/big", 400, 202, auth="admin",
         body={"values": [url_value(1, "y" * (64 * 1024 + 1))]}),
    Case("handle over 255 characters, GET", "GET", f"/api/handles/88.100/{LONG_SUFFIX}y", 400, 102),
    Case("handle over 255 characters, PUT", BAD, f"/api/handles/88.100/{LONG_SUFFIX}y", 400, 102, auth="admin",
         body=VALUES1),
    Case("handle over 255 characters, DELETE", "DELETE", f"/api/handles/88.100/{LONG_SUFFIX}y", 400, 102,
         auth="admin"),
    Case("handle of 5,000 characters", "GET", "/api/handles/88.100/" + "z" * 5_000, 400, 102),
    Case("control character %01, GET", "GET", "/api/handles/88.100/a%01b", 400, 102),
    Case("control character %01, PUT", BAD, "/api/handles/88.100/a%01b", 400, 102, auth="admin", body=VALUES1),
    Case("control character %00 in the prefix", "GET", "/api/handles/88.1%0000/x", 400, 102),
    Case("DEL %7F", "GET", "/api/handles/88.100/a%7F", 400, 102),
    Case("C1 control %C2%85", "GET", "/api/handles/88.100/a%C2%85", 400, 102),
    Case("invalid UTF-8 %FF, GET", "GET", "/api/handles/88.100/%FF", 400, 102),
    Case("invalid UTF-8 %FF, PUT", BAD, "/api/handles/88.100/%FF", 400, 102, auth="admin", body=VALUES1),
    Case("invalid UTF-8 %FF, DELETE", "DELETE", "/api/handles/88.100/%FF", 400, 102, auth="admin"),
    Case("encoded surrogate %ED%A0%80", "GET", "/api/handles/88.100/%ED%A0%80", 400, 102),
    Case("invalid UTF-8 in a query", "GET", "/api/handles/88.100/test1", 400, 202, query="index=%FF"),
    Case("duplicate index", BAD, "/api/handles/88.100/dup", 400, 202, auth="admin",
         body={"values": [url_value(1, "a"), url_value(1, "b", "EMAIL")]}, check=gone("88.100/dup")),
    Case("duplicate index, string and int", BAD, "/api/handles/88.100/dup", 400, 202, auth="admin",
         body={"values": [url_value(1, "a"), {**url_value(2, "b"), "index": "1"}]}),
    Case("unknown data format", BAD, "/api/handles/88.100/fmt", 400, 202, auth="admin",
         body={"values": [{"index": 1, "type": "URL", "data": {"format": "xml", "value": "<a/>"}}]}),
    Case("missing type", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{"index": 1, "data": "x"}]}),
    Case("missing index", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{"type": "URL", "data": "x"}]}),
    Case("missing data", BAD, "/api/handles/88.100/t", 400, 202, auth="admin", body={"values": [{"index": 1,
                                                                                                "type": "URL"}]}),
    Case("index not a number", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{**url_value(1, "x"), "index": "abc"}]}),
    Case("index '--5'", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{**url_value(1, "x"), "index": "--5"}]}),
    Case("index a superscript digit", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{**url_value(1, "x"), "index": "\u00b2"}]}),
    Case("index above 2**31-1", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [url_value(2**31, "x")]}),
    Case("index beyond 64 bits", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body=b'{"values": [{"index": 123456789012345678901234567890, "type": "URL", "data": "x"}]}'),
    Case("ttl a superscript digit", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{**url_value(1, "x"), "ttl": "\u00b2"}]}),
    Case("ttl negative", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{**url_value(1, "x"), "ttl": -1}]}),
    Case("ttl of 5000 digits", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{**url_value(1, "x"), "ttl": "9" * 5000}]}),
    Case("bad permissions", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{**url_value(1, "x"), "permissions": "11x0"}]}),
    Case("HS_ADMIN with a bare string", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{"index": 100, "type": "HS_ADMIN", "data": "admin please"}]}),
    Case("HS_SITE server id beyond 32 bits", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{"index": 1, "type": "HS_SITE", "data": {"format": "site", "value": {
             "servers": [{"serverId": 2**40, "address": "10.0.0.1"}]}}}]}),
    Case("HS_SITE host not a string", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{"index": 1, "type": "HS_SITE", "data": {"format": "site", "value": {
             "servers": [{"address": "10.0.0.1", "host": 5}]}}}]}),
    Case("HS_SITE serial beyond 16 bits", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{"index": 1, "type": "HS_SITE", "data": {"format": "site", "value": {
             "serialNumber": 70000}}}]}),
    Case("base64 that is not", BAD, "/api/handles/88.100/t", 400, 202, auth="admin",
         body={"values": [{"index": 1, "type": "X", "data": {"format": "base64", "value": "@@@"}}]}),
    Case("value not an object", BAD, "/api/handles/88.100/t", 400, 202, auth="admin", body={"values": [5]}),
    Case("JSON null", BAD, "/api/handles/88.100/t", 400, 4, auth="admin", body=b"null"),
    Case("JSON string", BAD, "/api/handles/88.100/t", 400, 4, auth="admin", body=b'"values"'),
    Case("deeply nested JSON", BAD, "/api/handles/88.100/t", 400, 4, auth="admin",
         body=b"[" * 100_000 + b"]" * 100_000),
    Case("invalid UTF-8 in the body", BAD, "/api/handles/88.100/t", 400, 4, auth="admin", body=b'{"values":"\xff"}'),
    Case("empty body", BAD, "/api/handles/88.100/t", 400, 4, auth="admin", body=b""),
]


def _seckey_shape(r: Reply) -> None:
    (key,) = [v for v in r.body["values"] if v["type"] == "HS_SECKEY"]
    assert key["index"] == 300
    assert key["permissions"] == "1100"
    assert key["data"] == {"format": "string", "value": "hidden"}


def _assert_listed(h: Http, handle: str) -> None:
    r = h.ok("GET", "/api/handles?prefix=88.100", auth="admin")
    assert handle in r.body["handles"]


def _assert_count(h: Http, prefix: str, n: int) -> None:
    r = h.ok("GET", f"/api/handles?prefix={prefix}&pageSize=0", auth="admin")
    assert r.body["totalCount"] == str(n)


def _assert_results_include(r: Reply, handle: str, code: int) -> None:
    assert {"handle": handle, "code": code} in [{"handle": x["handle"], "code": x["responseCode"]}
                                                for x in r.body["results"]]


def _variants(h: Http) -> None:
    vals = h.values("88.100/variants")
    assert sorted(vals) == [1, 2, 100]
    assert vals[1]["data"] == {"format": "string", "value": "https://bare.example"}
    assert vals[2]["ttl"] == 60 and vals[1]["ttl"] == 86400
    assert vals[100]["data"]["value"] == {"handle": "0.NA/88.100", "index": 300, "permissions": "011111110011"}


def _ids() -> list[str]:
    seen: set[str] = set()
    for c in CASES:
        assert c.id not in seen, f"duplicate case id {c.id!r}"
        seen.add(c.id)
    return [c.id for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=_ids())
async def test_contract(node: Http, case: Case) -> None:
    def run() -> None:
        for method, path, body in case.setup:
            node.ok(method, path, body=body, auth="admin")
        path = case.path + (f"?{case.query}" if case.query else "")
        r = node(case.method, path, body=case.body, auth=case.auth, ctype=case.ctype, chunked=case.chunked)
        assert r.status == case.status, (r.status, r.raw[:500])
        if case.empty:
            assert r.raw == b"", r.raw[:300]
        else:
            assert r.headers.get("content-type", "").startswith("application/json")
            body = r.body
            assert isinstance(body, dict)
            if case.code is not None:
                assert body.get("responseCode") == case.code, body
            else:
                assert "responseCode" not in body, body
            if case.keys is not None:
                assert set(body) == case.keys, body
            for k, v in case.expect.items():
                assert body.get(k) == v, (k, body)
        if case.www_authenticate:
            assert r.headers.get("www-authenticate") == 'Basic realm="handle"'
        if case.check is not None:
            case.check(r, node)
        # Whatever came in, the node still serves.
        alive = node("GET", "/api/handles/0.NA/88.100")
        assert (alive.status, alive.body["responseCode"]) == (200, 1)

    await asyncio.to_thread(run)


# -- flows that need more than one request ----------------------------------------------------------------

async def test_session_authorizes_writes_until_closed(node: Http) -> None:
    def flow() -> None:
        sid = node("POST", "/api/sessions", auth="admin").body["sessionId"]
        session = f'Handle sessionId="{sid}"'
        r = node("PUT", "/api/handles/88.100/bysession", body=VALUES1, auth=session)
        assert (r.status, r.body["responseCode"]) == (201, 1)
        r = node("GET", "/api/handles/88.100/withkey", auth=session)
        assert "HS_SECKEY" in {v["type"] for v in r.body["values"]}
        r = node("GET", "/api/handles?prefix=88.100", auth=session)
        assert r.status == 200 and "88.100/bysession" in r.body["handles"]
        r = node("GET", "/api/sessions/this", auth=session)
        assert r.status == 200 and r.body["sessionId"] == sid and r.body["id"] == "300:0.NA/88.100"
        assert node("DELETE", "/api/sessions/this", auth=session).status == 204
        r = node("PUT", "/api/handles/88.100/bysession2", body=VALUES1, auth=session)
        assert r.status == 401 and r.headers.get("www-authenticate")
        # An anonymous session authenticates nobody.
        anon = node("POST", "/api/sessions").body["sessionId"]
        r = node("PUT", "/api/handles/88.100/anon", body=VALUES1, auth=f'Handle sessionId="{anon}"')
        assert (r.status, r.body["responseCode"]) == (401, 402)

    await asyncio.to_thread(flow)


async def test_list_pages_cover_every_handle_once(node: Http) -> None:
    def flow() -> None:
        node.ok("POST", "/api/batch", body=batch_items(23), auth="admin")
        total = node.ok("GET", "/api/handles?prefix=88.100&pageSize=0", auth="admin").body["totalCount"]
        assert total == "26"
        seen: list[str] = []
        for page in range(10):
            r = node.ok("GET", f"/api/handles?prefix=88.100&page={page}&pageSize=5", auth="admin")
            assert r.body["totalCount"] == "26" and len(r.body["handles"]) <= 5
            if not r.body["handles"]:
                break
            seen += r.body["handles"]
        assert len(seen) == 26 and len(set(seen)) == 26
        assert seen == sorted(seen, key=str.lower)

    await asyncio.to_thread(flow)


async def test_answers_follow_writes(node: Http) -> None:
    """Anonymous answers come from a cache of encoded answers: every write must show at once."""
    def flow() -> None:
        def url() -> str | None:
            r = node("GET", "/api/handles/88.100/TEST1")
            return r.body["values"][0]["data"]["value"] if r.status == 200 else None

        assert url() == "https://example.com/test1"
        node.ok("PUT", "/api/handles/88.100/test1?index=1", body={"values": [url_value(1, "v2")]}, auth="admin")
        assert url() == "v2"
        node.ok("PUT", "/api/handles/88.100/Test1", body={"values": [url_value(1, "v3"), ADMIN_VALUE]}, auth="admin")
        assert url() == "v3"
        node.ok("DELETE", "/api/handles/88.100/test1", auth="admin")
        assert url() is None
        node.ok("POST", "/api/batch", body={"handles": [{"handle": "88.100/test1", "values": [url_value(1, "v4")]}]},
                auth="admin")
        assert url() == "v4"

    await asyncio.to_thread(flow)


async def test_cached_anonymous_answers_never_leak_or_skip_authentication(node: Http) -> None:
    def flow() -> None:
        for _ in range(2):  # the second anonymous request is answered from the cache of whole bodies
            r = node.ok("GET", "/api/handles/88.100/withkey")
            assert "HS_SECKEY" not in {v["type"] for v in r.body["values"]}
        r = node("GET", "/api/handles/88.100/withkey", auth="wrong_secret")
        assert (r.status, r.raw) == (401, b"")
        r = node.ok("GET", "/api/handles/88.100/withkey", auth="admin")
        assert "HS_SECKEY" in {v["type"] for v in r.body["values"]}
        r = node.ok("GET", "/api/handles/88.100/WITHKEY")
        assert r.body["handle"] == "88.100/WITHKEY"  # each spelling gets its own echo
        r = node.ok("GET", "/api/handles/88.100/withkey?type=URL")
        assert [v["type"] for v in r.body["values"]] == ["URL"]

    await asyncio.to_thread(flow)


async def test_derived_prefix_becomes_served(node: Http) -> None:
    def flow() -> None:
        r = node("PUT", "/api/handles/88.100.9/x", body=VALUES1, auth="admin")
        assert (r.status, r.body["responseCode"]) == (400, 301)
        node.ok("PUT", "/api/handles/0.NA/88.100.9", auth="admin", body={"values": []})
        r = node("PUT", "/api/handles/88.100.9/x", body=VALUES1, auth="admin")
        assert (r.status, r.body["responseCode"]) == (201, 1)
        assert "0.NA/88.100.9" in node.ok("GET", "/api/prefixes", auth="admin").body["prefixes"]
        assert node.values("88.100.9/x")[1]["data"]["value"] == "https://example.com/new"  # now cached
        r = node("DELETE", "/api/handles/0.NA/88.100.9", auth="admin")  # it still has an identifier
        assert (r.status, r.body["responseCode"]) == (403, 400)
        node.ok("DELETE", "/api/handles/88.100.9/x", auth="admin")
        node.ok("DELETE", "/api/handles/0.NA/88.100.9", auth="admin")
        r = node("GET", "/api/handles/88.100.9/x")
        assert (r.status, r.body["responseCode"]) == (400, 301)

    await asyncio.to_thread(flow)


async def test_body_arriving_in_pieces(node: Http, live_node: Any) -> None:
    """A slow client: the body comes in two TCP segments. The node must wait for all of it."""
    host, port = node.host, node.port
    body = json.dumps(VALUES1).encode()
    head = (f"PUT /api/handles/88.100/slow HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: {AUTH['admin']}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()

    def send_once() -> bytes:
        with socket.create_connection((host, port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(head + body[:7])
            time.sleep(0.1)  # not waiting for a server: this is the slow client's pause between segments
            s.sendall(body[7:])
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out

    answer = await asyncio.to_thread(send_once)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert (await asyncio.to_thread(node.values, "88.100/slow"))[1]["data"]["value"] == "https://example.com/new"


async def test_many_requests_on_one_kept_alive_connection(node: Http) -> None:
    def flow() -> list[int]:
        conn = http.client.HTTPConnection(node.host, node.port, timeout=10)
        statuses = []
        try:
            for i in range(20):
                path = "/api/handles/88.100/test1" if i % 2 else "/api/handles/88.100/%FF"
                conn.request("GET", path)
                resp = conn.getresponse()
                not_shed(Reply(resp.status, {}, resp.read()))
                statuses.append(resp.status)
        finally:
            conn.close()
        return statuses

    assert await asyncio.to_thread(flow) == [400, 200] * 10


async def test_aiohttp_client_speaks_the_api(node: Http) -> None:
    import aiohttp

    async def call(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with session.request(method, path, **kw) as resp:
            body = await resp.json()
        assert not (resp.status == 503 and body.get("responseCode") == 3), ("shed under light traffic", body)
        return resp.status, body

    async with aiohttp.ClientSession(f"http://{node.host}:{node.port}") as session:
        auth = {"Authorization": AUTH["admin"]}
        status, body = await call(session, "PUT", "/api/handles/88.100/aio", json=VALUES1, headers=auth)
        assert status == 201 and body["handle"] == "88.100/aio"
        status, body = await call(session, "GET", "/api/handles/88.100/AIO", params={"type": "URL"})
        assert status == 200 and body["handle"] == "88.100/AIO" and len(body["values"]) == 1
        status, body = await call(session, "DELETE", "/api/handles/88.100/aio", headers=auth)
        assert status == 200


async def test_request_line_beyond_the_http_parser_limit(node: Http) -> None:
    """aiohttp's parser refuses request lines over 8 KiB before the app sees them: a 400 (not the contract's
    JSON body, since no handler runs), and the node goes on serving."""
    r = await asyncio.to_thread(node, "GET", "/api/handles/88.100/" + "z" * 10_000)
    assert r.status == 400
    r = await asyncio.to_thread(node, "GET", "/api/handles/88.100/test1")
    assert (r.status, r.body["responseCode"]) == (200, 1)


async def test_replace_without_hs_admin_keeps_the_record_administrable(node: Http) -> None:
    def flow() -> tuple[int, int]:
        node.ok("PUT", "/api/handles/88.100/test1", body={"values": [url_value(1, "replaced")]}, auth="admin")
        modify = node("PUT", "/api/handles/88.100/test1?index=1", body={"values": [url_value(1, "again")]},
                      auth="admin")
        delete = node("DELETE", "/api/handles/88.100/test1", auth="admin")
        return modify.status, delete.status

    assert await asyncio.to_thread(flow) == (200, 200)


async def test_rest_client_backs_off_while_the_node_sheds_load(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """``RestClient`` (the CLI's client) sends again after a 503 with code 3, a bounded number of times, and
    says so at WARNING each time (what the CLI tests look for in stderr)."""
    from aiohttp import web

    from idresolve.client import rest

    monkeypatch.setattr(rest, "BUSY_BACKOFF_S", (0.01, 0.01, 0.01))
    seen: list[str] = []
    busy_left = {"n": 2}

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.method)
        if busy_left["n"] > 0 or request.method == "DELETE":
            busy_left["n"] -= 1
            return web.json_response({"responseCode": 3, "message": "Server too busy"}, status=503,
                                     headers={"Retry-After": "1"})
        return web.json_response({"responseCode": 1, "handle": "88.100/x"}, status=201)

    app = web.Application()
    app.router.add_route("*", "/api/handles/{h:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        def flow() -> tuple[rest.Answer, rest.Answer]:
            with rest.RestClient(f"http://127.0.0.1:{port}", identity=ADMIN_PLAIN, secret=SECRET) as c:
                return c.put("88.100/x", [url_value(1, "x")]), c.delete("88.100/x")

        put, delete = await asyncio.to_thread(flow)
    finally:
        await runner.cleanup()
    assert (put.status, put.code) == (201, 1)
    assert (delete.status, delete.code) == (503, 3)  # still busy after every retry: the answer is returned
    assert seen == ["PUT"] * 3 + ["DELETE"] * 4
    busy = [r for r in caplog.records if r.name == "idresolve.client" and rest.BUSY_NOTE in r.getMessage()]
    assert [r.levelname for r in busy] == ["WARNING"] * 5  # two retried PUTs, three retried DELETEs
