"""The REST fast path (``http.edge.FastPath``): the commonest resolution answered before aiohttp's routing
and middleware chain. It must answer exactly as the routed path does (the same bytes, statuses and
headers), shed load as the edge middleware does, count in the same metrics, and leave every other request
to the app. Live, in-process, on loopback port 0.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from idresolve.core.values import string_value
from idresolve.net import admission as admission_mod
from idresolve.net.client import ClientPool
from idresolve.nodes.auth import parse_identity
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import prefix_record
from idresolve.nodes.pipeline import RecursiveNode
from idresolve.nodes.recursive import RecursiveResolver, Upstream
from idresolve.runtime.hosted import HostedAuthoritative, HostedRecursive, HostSettings
from idresolve.store.memory import MemoryStore

LOOPBACK = "127.0.0.1"
SECRET = "fast-path-secret"
ADMIN = "300:0.NA/88.100"
OP = 'op="GET /api/handles/{handle}"'


def _node() -> AuthoritativeNode:
    node = AuthoritativeNode(MemoryStore(), ["88.100"], name="fast")
    node.bootstrap_record(prefix_record("88.100", SECRET))
    caller = node.authenticate(parse_identity(ADMIN), SECRET.encode())
    node.put_record("88.100/R1", (string_value(1, "URL", "https://r1.example"),
                                  string_value(2, "EMAIL", "ops@r1.example")), caller=caller, now=0)
    node.put_record("88.100/ÄÖ", (string_value(1, "URL", "https://umlaut.example"),), caller=caller, now=0)
    return node


@pytest.fixture
async def auth_http() -> AsyncIterator[tuple[HostedAuthoritative, str, int]]:
    hosted = HostedAuthoritative(_node(), HostSettings(shed_lag_s=0))
    a = await hosted.start(http=f"{LOOPBACK}:0", tcp=f"{LOOPBACK}:0")
    assert a.http is not None and a.tcp is not None
    try:
        yield hosted, f"http://{LOOPBACK}:{a.http[1]}", a.tcp[1]
    finally:
        await hosted.stop()


def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"300%3A0.NA%2F88.100:{secret}".encode()).decode("ascii")


async def _get(s: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str, bytes]:
    async with s.get(url, **kw) as r:  # type: ignore[arg-type]
        return r.status, r.headers.get("Content-Type", ""), await r.read()


# Paths the fast path takes; each is also sent with "?auth=false", which the fast path leaves to the app.
PATHS = [
    "/api/handles/88.100/R1",
    "/api/handles/88.100/r1",  # ASCII case folding
    "/api/handles/88.100/%C3%84%C3%96",  # percent-encoded UTF-8
    "/api/handles/88.100/NOPE",  # not found: 404, code 100
    "/api/handles/88.999/X",  # a prefix elsewhere: code 301 or 100, as the app says
    "/api/handles/88.100/%FF",  # not UTF-8: 400, code 102
    "/api/handles/",  # empty: 400
    "/api/handles/nohandle",  # no slash
]


async def test_fast_path_answers_as_the_routed_path_does(auth_http: tuple[HostedAuthoritative, str, int]) -> None:
    hosted, url, _ = auth_http
    server = hosted.listeners.runner.server if hosted.listeners.runner is not None else None
    assert server is not None and server.request_handler.__qualname__.startswith("with_fast_path."), \
        "the hosting serves HTTP without the fast path"
    async with aiohttp.ClientSession() as s:
        for path in PATHS:
            fast = await _get(s, url + path)
            routed = await _get(s, url + path + "?auth=false")
            assert fast == routed, path
            again = await _get(s, url + path)  # the second answer comes from the kept body
            assert again == fast, path
        status, _, body = await _get(s, url + "/api/handles/88.100/R1")
        assert status == 200 and b'"https://r1.example"' in body


async def test_requests_the_fast_path_leaves_to_the_app(auth_http: tuple[HostedAuthoritative, str, int]) -> None:
    _, url, _ = auth_http
    h = url + "/api/handles/88.100/R1"
    async with aiohttp.ClientSession() as s:
        async with s.head(h) as r:  # HEAD is routed (aiohttp answers it from the GET route)
            assert r.status == 200
        status, _, body = await _get(s, h + "?type=EMAIL")  # filters need the app
        assert status == 200 and b"EMAIL" in body and b"URL" not in body
        status, _, body = await _get(s, h, headers={"Authorization": _basic(SECRET)})  # credentials: the app checks them
        assert status == 200
        status, _, _ = await _get(s, h, headers={"Authorization": _basic("wrong")})
        assert status == 401
        async with s.put(h, json={"values": []}) as r:  # writes are never the fast path's
            assert r.status == 401
        status, _, body = await _get(s, url + "/api/handles?prefix=88.100", headers={"Authorization": _basic(SECRET)})
        assert status == 200 and b'"handles"' in body, body  # listing is routed


async def test_fast_path_counts_in_the_same_metrics(auth_http: tuple[HostedAuthoritative, str, int]) -> None:
    _, url, _ = auth_http
    async with aiohttp.ClientSession() as s:
        for _ in range(7):
            await _get(s, url + "/api/handles/88.100/R1")  # fast
        await _get(s, url + "/api/handles/88.100/R1?auth=true")  # routed
        await _get(s, url + "/api/handles/88.100/NOPE")  # fast, 404
        _, _, text = await _get(s, url + "/metrics")
    lines = text.decode().splitlines()

    def count(code: str) -> float:
        found = [ln for ln in lines if ln.startswith("idresolve_requests_total{") and OP in ln
                 and f'code="{code}"' in ln and 'surface="rest"' in ln]
        assert len(found) == 1, (code, found)
        return float(found[0].rsplit(" ", 1)[1])

    assert count("200") == 8 and count("404") == 1
    counted = [ln for ln in lines if ln.startswith("idresolve_request_seconds_count{") and OP in ln]
    assert len(counted) == 1 and float(counted[0].rsplit(" ", 1)[1]) == 9


class FrozenTime:
    """Stands in for ``net.admission``'s ``time`` module: the token buckets' clock moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
async def recursive_http(auth_http: tuple[HostedAuthoritative, str, int]) -> AsyncIterator[tuple[HostedRecursive, str]]:
    _, _, tcp = auth_http
    rec = HostedRecursive(RecursiveNode("rec-fast", RecursiveResolver([Upstream("fast", LOOPBACK, tcp)])),
                          ClientPool(), HostSettings(client_rate=50.0, shed_lag_s=10.0))
    r = await rec.start(http=f"{LOOPBACK}:0")
    assert r.http is not None
    try:
        yield rec, f"http://{LOOPBACK}:{r.http[1]}"
    finally:
        await rec.stop()


async def test_recursive_fast_path_sheds_per_client_and_counts(recursive_http: tuple[HostedRecursive, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rec, url = recursive_http
    clock = FrozenTime()
    monkeypatch.setattr(admission_mod, "time", clock)
    h = url + "/api/handles/88.100/R1"
    async with aiohttp.ClientSession() as s:
        # 50/s with a burst of 11, no time passing on the limiter's clock: the first walks, the next ten
        # are cache hits, then code 3; health stays reachable.
        replies = [await _get(s, h) for _ in range(30)]
        statuses = [st for st, _, _ in replies]
        assert statuses == [200] * 11 + [503] * 19, statuses
        assert all(b'"responseCode":3' in body for st, _, body in replies if st == 503)
        status, _, _ = await _get(s, url + "/healthz")
        assert status == 200
        clock.now += 1.0  # refilled
        assert (await _get(s, h + "?trace"))[0] == 200  # routed, walks again (a trace is never cached)
        assert (await _get(s, h))[0] == 200
        _, _, text = await _get(s, url + "/metrics")
    assert rec.service.admission.stats.admitted == 13  # each request admitted once, fast or routed
    got = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'idresolve_requests_total\{code="(\d+)",op="GET /api/handles/\{handle\}",surface="rest"\} (\S+)',
        text.decode())}
    assert got == {"200": 13.0, "503": 19.0}, got
