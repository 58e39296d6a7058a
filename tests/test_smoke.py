"""A first end-to-end check: create, resolve and delete over real sockets with the blocking client."""

from __future__ import annotations

import asyncio

from idresolve.client.rest import RestClient


async def test_create_resolve_delete(live_node):
    def flow() -> list[tuple[int, int]]:
        with RestClient(live_node.url, identity="300:0.NA/88.100", secret=live_node.secret) as c:
            out = []
            a = c.put("88.100/Smoke1", [{"index": 1, "type": "URL", "data": "https://example.com"}])
            out.append((a.status, a.code))
            a = c.resolve("88.100/smoke1")
            out.append((a.status, a.code))
            assert a.body["handle"] == "88.100/smoke1"
            assert a.body["values"][0]["data"] == {"format": "string", "value": "https://example.com"}
            a = c.delete("88.100/SMOKE1")
            out.append((a.status, a.code))
            a = c.resolve("88.100/smoke1")
            out.append((a.status, a.code))
            return out

    got = await asyncio.to_thread(flow)
    assert got == [(201, 1), (200, 1), (200, 1), (404, 100)]
