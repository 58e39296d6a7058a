"""Hostile input over REST: random requests of every shape (paths, queries, headers, bodies, encodings,
credentials) against a live node, which must answer each with the right code, log no traceback and keep
serving.

CI runs a bounded version; ``@pytest.mark.slow`` runs 100,000 requests (IDRESOLVE_LONG=1). Every random
generator is seeded; a failure names its seed and case. Network: 127.0.0.1.
"""


from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import random
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import SECRET as LIVE_SECRET
from conftest import LiveNode, start_live_node
from fuzzutil import (
    contains_any,
    http_exchange,
    http_request,
)
from idresolve.core.codes import ResponseCode
from idresolve.core.handles import fold
from idresolve.core.wire import Codec

codec = Codec()


# ==================================================================================================
# 4. REST fuzzing of a live node


_METHODS = ["GET", "PUT", "DELETE", "POST", "HEAD", "OPTIONS", "PATCH", "get", "TRACE", "CONNECT", "BREW", "G\x7fT"]
_HANDLES = ["88.100/F1", "88.100/f1", "88.200/F2", "0.NA/88.100", "0.NA/88.100.7", "88.999/x", "88.100", "",
            "88.100/", "88.100/%2E%2E", "88.100%2FF1", "88.100/F%31", "%38%38.100/F1", "88.100/a%00b", "88.100/a%0D%0Ab",
            "88.100/%FF%FE", "88.100/%C3%28", "88.100/%ED%A0%80", "88.100/\xff", "88.100/é", "88.100/%E2%82%AC",
            "../88.100/F1", "88.100/../../etc/passwd", "88.100/./F1", "88.100//F1", "88.100/" + "x" * 300,
            "88.100/" + "y" * 7000, "88.100/" + "%41" * 3000, "0.NA/", "0.NA/%", "88.100/%", "88.100/%G1", "%"]
_PATHS = ["/api/handles/{h}", "/api/handles/{h}", "/api/handles/{h}", "/api/handles", "/api/prefixes", "/api/batch",
          "/api/sessions", "/api/sessions/this", "/healthz", "/metrics", "/api/", "/api", "/", "*", "/api/nothing",
          "//api/handles/{h}", "/api/handles/../handles/{h}", "/api/./handles/{h}", "/API/HANDLES/{h}",
          "http://127.0.0.1/api/handles/{h}", "/api/handles/{h}#frag", "/api%2Fhandles/{h}"]
_QUERIES = ["", "", "pretty", "type=URL", "index=1", "index=1&index=2", "index=abc", "index=0", "index=-1",
            "index=99999999999999999999", "index=%FF", "type=%FF%FE", "auth=true", "overwrite=false", "overwrite=%00",
            "mintNewSuffix=true", "prefix=88.100", "prefix=0.NA/88.100", "prefix=88.100&page=0&pageSize=2",
            "prefix=88.100&page=-1", "prefix=88.100&pageSize=2147483648", "prefix=%FF", "prefix=",
            "prefix=88.100&page=1e9", "page=1", "a=" + "b" * 5000, "&&&==&", "index=1;index=2", "trace", "%"]
_CTYPES = ["application/json", "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
           "text/plain", "multipart/form-data; boundary=xx", "application/x-www-form-urlencoded", "", "*/*",
           "application/json\x00", "APPLICATION/JSON", "application/" + "j" * 2000]


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


#: Credentials that authenticate as 88.100's admin (every spelling), and as 88.200's.
_ADMIN100 = [_basic("300%3A0.NA%2F88.100", LIVE_SECRET), _basic("300:0.NA/88.100", LIVE_SECRET),
             "basic " + base64.b64encode(b"300:0.NA/88.100:" + LIVE_SECRET.encode()).decode()]
_ADMIN200 = _basic("300%3A0.NA%2F88.200", LIVE_SECRET)
_AUTHS = [None, None, *_ADMIN100, _ADMIN200, _basic("300%3A0.NA%2F88.100", "wrong"), "Basic", "Basic ",
          "Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Basic " + base64.b64encode(b":").decode(),
          _basic("²:0.NA/88.100", LIVE_SECRET), _basic("300%3A0.NA%2F88.100%FF", LIVE_SECRET),
          _basic("300%3A" + "%41" * 2000, "x"), "Bearer x", "Handle sessionId=\"nope\"", "Handle", "Handle sessionId",
          "Basic " + "A" * 6000, "\xff\xfe", "Digest username=x"]


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 4 or r < 0.3:
        return rng.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 10**30, 1.5, 1e308, -0.0, True, False, None, "",
                           "x", "\u0000", "\ud7ff", "1110", "011111110011", "HS_ADMIN", "URL", "88.100/F1",
                           "x" * 300, "é"])
    if r < 0.6:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["index", "type", "data", "ttl", "permissions", "references", "format", "value", "handle", "values",
            "handles", "overwrite", "servers", "attributes", "address", "port", "interfaces", "x"]
    return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _value_json(rng: random.Random) -> Any:
    if rng.random() < 0.6:  # a sound value, so that writes get through and change the node's state
        return rng.choice([{"index": rng.randint(1, 5), "type": "URL", "data": f"https://{rng.random()}.example"},
                           {"index": "2", "type": "DESC", "data": {"format": "hex", "value": "c3a9"}, "ttl": 60},
                           {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                               "handle": "0.NA/88.100", "index": 300, "permissions": "011111111111"}}},
                           {"index": 3, "type": "HS_VLIST", "data": {"format": "vlist", "value": [
                               {"handle": "0.NA/88.100", "index": 300}]}},
                           {"index": 2000, "type": "productName", "data": "é" * rng.choice([10, 255, 256])}])
    vtype = rng.choice(["URL", "DESC", "HS_ADMIN", "HS_SITE", "HS_VLIST", "HS_SECKEY", "EMAIL", "", 7])
    fmt = rng.choice(["string", "base64", "hex", "admin", "site", "vlist", "nope", None])
    value: Any = rng.choice([
        "https://example.com", "!!!", "zz", "00ff", "", {"handle": "0.NA/88.100", "index": "300", "permissions":
                                                         "011111110011"},
        {"handle": "", "index": -1}, {"handle": "x", "index": 300, "permissions": "2"},
        {"servers": [{"address": "127.0.0.1", "interfaces": [{"protocol": "TCP", "port": 70000}]}]},
        {"servers": [{"address": "not-an-ip"}]}, {"servers": [{"address": "::1", "serverId": -1}]},
        {"attributes": [{"name": "host.1", "value": "x"}]}, {"protocolVersion": "999.999"},
        [{"handle": "88.100/F1", "index": 1}], [{"handle": 5}], _json_value(rng)])
    data: Any = value if fmt is None else {"format": fmt, "value": value}
    v: dict[str, Any] = {"index": rng.choice([1, 2, "3", "0", -1, 2**31, "abc", 100, 300, 1001, 2000, 2.5, None]),
                         "type": vtype, "data": data}
    if rng.random() < 0.3:
        v["ttl"] = rng.choice([0, -1, 86400, 2**31, 2**64, "60", "x", 1.5])
    if rng.random() < 0.2:
        v["permissions"] = rng.choice(["1110", "1100", "11", "abcd", 1110, None])
    if rng.random() < 0.1:
        v["references"] = rng.choice([[{"handle": "a/b", "index": 1}], "x", [1], [{"handle": "a/b", "index": "x"}]])
    return v


def _body(rng: random.Random) -> bytes | None:
    r = rng.random()
    if r < 0.1:
        return None
    if r < 0.6:
        doc: Any = {"values": [_value_json(rng) for _ in range(rng.randint(0, 3))]}
    elif r < 0.67:
        doc = {"handles": [{"handle": rng.choice(_HANDLES), "values": [_value_json(rng)]}
                           for _ in range(rng.randint(0, 4))], "overwrite": rng.choice([True, False, "yes", None])}
    elif r < 0.75:
        return rng.choice([b"[" * 100_000 + b"]" * 100_000, b'{"values":' * 5000, b"\xff\xfe{}", b"{", b"nul",
                           b'{"values": [1e999999]}', b'{"values": [' + b"9" * 5000 + b"]}", b"\x00" * 100,
                           b'{"values": "\\ud800"}', b"[]", b"{}", b'"values"', b"{" + b'"a":1,' * 20000 + b'"b":2}'])
    else:
        doc = _json_value(rng)
    return json.dumps(doc).encode()


def headers_named(headers: list[tuple[str, str]]) -> list[str]:
    return [k if k != "Content-Encoding" else f"{k}: {v}" for k, v in headers]


def rest_case(rng: random.Random) -> tuple[str, bytes]:
    """(description, raw request bytes)."""
    # Weighted towards what reaches the handlers: the API's own paths, methods and credentials.
    method = rng.choice(["GET", "PUT", "DELETE", "PUT"]) if rng.random() < 0.7 else rng.choice(_METHODS)
    template = "/api/handles/{h}" if rng.random() < 0.7 else rng.choice(_PATHS)
    handle = rng.choice(["88.100/F1", "88.100/F2", "88.100/F3", "88.200/F1"]) if rng.random() < 0.4 else \
        rng.choice(_HANDLES)
    path = template.replace("{h}", handle)
    if path == "/api/batch" or rng.random() < 0.05:
        method = "POST"
    query = rng.choice(_QUERIES) if rng.random() < 0.6 else ""
    target = path + ("?" + query if query else "")
    headers: list[tuple[str, str]] = []
    chunked: str | None = None
    auth = rng.choice(_ADMIN100[:2]) if rng.random() < 0.55 else rng.choice(_AUTHS)
    if fold(handle) == "0.na/88.100" and method.upper() in ("PUT", "DELETE", "POST") and auth in _ADMIN100:
        # The admin may rewrite its own prefix record, HS_SECKEY included, and lock itself out (as in the
        # Handle System): the fuzz keeps its own key and sends another prefix's admin instead.
        auth = _ADMIN200
    if auth is not None:
        headers.append(("Authorization", auth))
    if rng.random() < 0.9:
        headers.append(("Content-Type", "application/json" if rng.random() < 0.8 else rng.choice(_CTYPES)))
    r = rng.random()
    if r < 0.03:
        headers.append(("X-Huge", "h" * rng.choice([5000, 9000, 70_000])))
    elif r < 0.06:
        headers.extend((f"X-H{i}", "v") for i in range(rng.choice([50, 150])))
    elif r < 0.08:
        headers.append(("Expect", "100-continue"))
    elif r < 0.10:
        chunked = rng.choice(["chunked", "gzip", "chunked, chunked", "x"])
    body = _body(rng) if method.upper() in ("PUT", "POST", "DELETE", "PATCH") or rng.random() < 0.1 else None
    if body is not None and rng.random() < 0.08:
        # A Content-Encoding, sometimes honest (the body really is compressed), sometimes not.
        encoding = rng.choice(["gzip", "deflate", "br", "identity", "x-nope", "gzip, gzip"])
        headers.append(("Content-Encoding", encoding))
        if encoding == "gzip" and rng.random() < 0.5:
            body = gzip.compress(body)
        elif encoding == "deflate" and rng.random() < 0.5:
            body = zlib.compress(body)
    length: int | None = None
    if body is not None and rng.random() < 0.05:
        # A Content-Length below the body, far above it (refused at once), or a little above it: a body that
        # stops short, which the node gives up on after its idle timeout (the fixture shortens it).
        length = rng.choice([0, len(body) // 2, 2**40, len(body) + rng.randint(1, 64)])
    raw_target: str | bytes = target
    if rng.random() < 0.05:
        raw_target = target.encode("utf-8", "surrogateescape") + bytes([rng.randrange(128, 256)])
    short = body is not None and length is not None and 0 < length - len(body) <= 64
    desc = f"{method} {target[:200]!r} auth={str(auth)[:40]!r} headers={headers_named(headers)} " \
           f"body={None if body is None else body[:120]!r} len={length}{' (short body)' if short else ''} te={chunked}"
    if chunked is not None:
        # Its chunks may be malformed, and one chunked body in ten never ends (the node gives up on it after
        # its idle timeout).
        payload = body or b""
        size = rng.choice([f"{len(payload):x}", f"{len(payload):X}", "zz", "-1", "0x10", f"{len(payload):x};ext=1"])
        framed = f"{size}\r\n".encode() + payload + b"\r\n" if payload else b""
        if rng.random() < 0.9:
            framed += b"0\r\n\r\n"
        head = http_request(method, raw_target, headers=[*headers, ("Transfer-Encoding", chunked)])
        return desc, head + framed
    return desc, http_request(method, raw_target, headers=headers, body=body, content_length=length)


TRACEBACK_MARKERS = ["Traceback", 'File "', "/site-packages/", "idresolve/", "Exception", "Error:"]


@dataclass
class RestStats:
    sent: int = 0
    no_answer: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # hostile shapes sent: short bodies, encodings


async def rest_fuzz(port: int, *, seed: int, count: int, secrets: list[str], concurrency: int = 8) -> RestStats:
    stats = RestStats()

    async def worker(w: int) -> None:
        rng = random.Random(seed * 7919 + w)
        for i in range(count // concurrency):
            desc, raw = rest_case(rng)
            where = f"seed={seed} worker={w} case={i}: {desc}"
            try:
                reply = await http_exchange(port, raw, timeout_s=10.0)
            except TimeoutError as exc:
                raise AssertionError(f"no answer and no close within 10 s: {where}") from exc
            stats.sent += 1
            for kind in ("(short body)", "Content-Encoding", "te=chunked"):
                stats.kinds[kind] += kind in desc
            if reply is None:
                stats.no_answer += 1
                continue
            stats.statuses[reply.status] += 1
            assert reply.status != 500 and 100 <= reply.status < 600, (reply, where)
            leak = contains_any(reply.body, secrets) or contains_any(" ".join(reply.headers.values()), secrets)
            # An admin may read its own HS_SECKEY (permissions 1100) in a resolution; nothing else shows it.
            own_read = reply.status == 200 and raw.startswith(b"GET ") and any(
                a.encode() in raw for a in (*_ADMIN100, _ADMIN200))
            assert leak is None or own_read, f"secret in the answer: {where}"
            marker = contains_any(reply.body, TRACEBACK_MARKERS)
            assert marker is None, f"{marker!r} in the body {reply.body[:300]!r}: {where}"
            ctype = reply.headers.get("content-type", "")
            if ctype.startswith("application/json") and reply.body and b"/api/sessions" not in raw.split(b"\r\n")[0]:
                doc = json.loads(reply.body)
                if isinstance(doc, dict) and "status" in doc and "node" in doc:
                    continue  # /healthz (any spelling the router normalises to it)
                assert isinstance(doc, dict) and isinstance(doc.get("responseCode"), int), (reply, where)
                code = doc["responseCode"]
                stats.codes[code] += 1
                if code == ResponseCode.SUCCESS:
                    assert reply.status in (200, 201), (reply, where)
                if reply.status == 503:
                    assert code == ResponseCode.SERVER_TOO_BUSY, (reply, where)
                if reply.status in (200, 201):
                    assert code in (ResponseCode.SUCCESS, ResponseCode.VALUES_NOT_FOUND), (reply, where)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return stats


async def node_still_serves(port: int) -> None:
    put = http_request("PUT", "/api/handles/88.100/after-fuzz", headers=[
        ("Authorization", _basic("300%3A0.NA%2F88.100", LIVE_SECRET)), ("Content-Type", "application/json")],
        body=b'{"values":[{"index":1,"type":"URL","data":"https://after.example"}]}')
    reply = await http_exchange(port, put)
    assert reply is not None and reply.status in (200, 201), reply
    reply = await http_exchange(port, http_request("GET", "/api/handles/88.100/after-fuzz"))
    assert reply is not None and reply.status == 200 and json.loads(reply.body)["responseCode"] == 1
    listing = await http_exchange(port, http_request("GET", "/api/handles?prefix=88.100", headers=[
        ("Authorization", _basic("300%3A0.NA%2F88.100", LIVE_SECRET))]))
    assert listing is not None and listing.status == 200, listing
    assert "88.100/after-fuzz" in json.loads(listing.body)["handles"]


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


FUZZ_IDLE_S = 0.5


@pytest.fixture
async def fuzz_node(tmp_path: Path) -> AsyncIterator[LiveNode]:
    """``live_node`` with a short HTTP idle (and request body) timeout, so that the bodies that stop short
    are given up on in half a second rather than thirty."""
    async with start_live_node(tmp_path, http_idle_timeout_s=FUZZ_IDLE_S) as node:
        yield node


async def test_rest_fuzz_against_a_live_node(fuzz_node: LiveNode, caplog: pytest.LogCaptureFixture) -> None:
    port = _port_of(fuzz_node.url)
    seed = await http_exchange(port, http_request("PUT", "/api/handles/88.100/F1", headers=[
        ("Authorization", _basic("300%3A0.NA%2F88.100", LIVE_SECRET)), ("Content-Type", "application/json")],
        body=b'{"values":[{"index":1,"type":"URL","data":"https://f1.example"}]}'))
    assert seed is not None and seed.status == 201
    t0 = time.monotonic()
    caplog.set_level(logging.WARNING)
    stats = await rest_fuzz(port, seed=5, count=4000, secrets=[LIVE_SECRET])
    print(f"\nREST fuzz: {stats.sent} requests in {time.monotonic() - t0:.1f} s, {stats.no_answer} closed without "
          f"an answer; statuses {dict(sorted(stats.statuses.items()))}; codes {dict(sorted(stats.codes.items()))}; "
          f"hostile shapes {dict(stats.kinds)}")
    assert stats.sent == 4000
    assert stats.statuses[400] > 100 and stats.statuses[200] + stats.statuses[201] > 20  # it bit, both ways
    assert stats.no_answer < stats.sent // 10
    assert min(stats.kinds.values()) >= 10, stats.kinds  # short bodies, encodings, chunked bodies were sent
    await node_still_serves(port)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()} {r.exc_info!r}" for r in errors[:5]]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("path", ["/api/handles/88.100/enc", "/api/batch"])
async def test_body_that_does_not_match_its_content_encoding_is_a_400(live_node: LiveNode, encoding: str,
                                                                      path: str) -> None:
    reply = await http_exchange(_port_of(live_node.url), http_request(
        "POST" if path == "/api/batch" else "PUT", path, body=b'{"values": []}', headers=[
            ("Authorization", _basic("300%3A0.NA%2F88.100", LIVE_SECRET)), ("Content-Type", "application/json"),
            ("Content-Encoding", encoding)]))
    assert reply is not None
    assert (reply.status, json.loads(reply.body)["responseCode"]) == (400, ResponseCode.PROTOCOL_ERROR), reply


@pytest.mark.parametrize("query", ["prefix=88.100&pageSize=99999999999999999999999",
                                   "prefix=88.100&page=99999999999999999999999&pageSize=5",
                                   "prefix=88.100&page=9223372036854775807&pageSize=10"])
async def test_list_with_a_huge_page_or_page_size_is_a_400(live_node: LiveNode, query: str) -> None:
    reply = await http_exchange(_port_of(live_node.url), http_request("GET", f"/api/handles?{query}", headers=[
        ("Authorization", _basic("300%3A0.NA%2F88.100", LIVE_SECRET))]))
    assert reply is not None
    assert reply.status != 500, reply
    assert (reply.status, json.loads(reply.body)["responseCode"]) in ((400, ResponseCode.PROTOCOL_ERROR),
                                                                      (200, ResponseCode.SUCCESS)), reply


@pytest.mark.parametrize("raw", [
    http_request("GET", b"/api/handles/88.100/F1?x=\xf3"),
    http_request("PUT", "/api/handles/88.100/F1", headers=[("Content-Type", "application/json"),
                                                           ("Content-Encoding", "gzip")], body=b"not gzip at all"),
], ids=["invalid-url-char", "bad-content-encoding"])
async def test_unparsable_requests_log_no_traceback_at_error(live_node: LiveNode, caplog: pytest.LogCaptureFixture,
                                                             raw: bytes) -> None:
    caplog.set_level(logging.WARNING)
    reply = await http_exchange(_port_of(live_node.url), raw)
    assert reply is None or reply.status in (400, 401)
    await node_still_serves(_port_of(live_node.url))  # also lets the server finish with the bad request
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.mark.slow
async def test_rest_fuzz_long(fuzz_node: LiveNode, long_seed: int) -> None:
    port = _port_of(fuzz_node.url)
    stats = await rest_fuzz(port, seed=long_seed, count=100_000, secrets=[LIVE_SECRET], concurrency=16)
    print(f"\nlong REST fuzz: {stats.sent} requests; statuses {dict(stats.statuses)}")
    await node_still_serves(port)
