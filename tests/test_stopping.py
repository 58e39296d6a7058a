"""A node that is stopping: whatever still reaches it is refused as busy or not served, never mis-answered.

A stop closes the listeners, then the store. A request that reaches the store after that (on a connection
the loop accepted just before the listener closed, or on a surface still draining) must be refused as busy
(code 3, HTTP 503), the answer the listeners give while they stop; it must never read as a wrong secret
("authentication failed") nor as an internal error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
from pathlib import Path

import aiohttp
import pytest

from idresolve.core.answers import EncodedAnswers
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.errors import AuthenticationFailed, StoreClosed
from idresolve.core.messages import Request, Response
from idresolve.core.records import Record
from idresolve.core.values import seckey_value, string_value
from idresolve.core.wire import Codec, decode_message
from idresolve.net.server import Limits, StreamProtocol, msgpack_connections, start_tcp
from idresolve.nodes.auth import Identity, authenticate
from idresolve.runtime.hosted import authoritative_host
from idresolve.store.sqlite import SqliteStore

SECRET = "stopping-secret"
IDENTITY = Identity(300, "0.NA/88.100")
codec = Codec()


def test_a_closed_sqlite_store_refuses_as_busy(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.put(Record("88.100/A", (string_value(1, "URL", "https://a.example"),)))
    store.close()
    store.close()  # twice is harmless
    for use in (lambda: store.get("88.100/a"), lambda: store.count(), lambda: store.put(Record("88.100/B", ()))):
        with pytest.raises(StoreClosed) as info:
            use()
        assert info.value.code == ResponseCode.SERVER_TOO_BUSY
        assert "stopping" in info.value.message
    reopened = SqliteStore(tmp_path / "s.sqlite3")  # nothing was lost by the refusals
    assert reopened.get("88.100/a") is not None and reopened.count() == 1
    reopened.close()


def test_a_closed_store_is_not_a_wrong_secret(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.put(Record("0.NA/88.100", (seckey_value(300, SECRET),)))
    assert authenticate(store, IDENTITY, SECRET.encode()) == IDENTITY
    with pytest.raises(AuthenticationFailed):
        authenticate(store, IDENTITY, b"wrong")
    store.close()
    with pytest.raises(StoreClosed):
        authenticate(store, IDENTITY, SECRET.encode())


def test_a_corrupt_identity_record_still_fails_authentication(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.put(Record("0.NA/88.100", (seckey_value(300, SECRET),)))
    store._db.execute("UPDATE records SET data = ? WHERE key = ?", (b"\xc1garbage", "0.na/88.100"))
    with pytest.raises(AuthenticationFailed):
        authenticate(store, IDENTITY, SECRET.encode())
    store.close()


async def _frame(reader: asyncio.StreamReader) -> Response:
    (n,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
    msg = decode_message(await asyncio.wait_for(reader.readexactly(n), 5))
    assert isinstance(msg, Response)
    return msg


async def test_writes_that_reach_a_closed_store_are_refused_as_busy_on_both_surfaces(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "node.sqlite3")
    hosted = authoritative_host("stopping", store, ["88.100"], SECRET)
    addrs = await hosted.start(http="127.0.0.1:0", tcp="127.0.0.1:0")
    assert addrs.http is not None and addrs.tcp is not None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", addrs.tcp[1])
        create = Request(7, OpCode.CREATE_HANDLE, "88.100/X1", values=(string_value(1, "URL", "https://x.example"),),
                         auth=("300:0.NA/88.100", SECRET.encode()))
        writer.write(codec.frame(create))
        assert (await _frame(reader)).code == ResponseCode.SUCCESS  # open: served
        store.close()  # the stop's last step, while this connection is still open
        writer.write(codec.frame(Request(8, OpCode.CREATE_HANDLE, "88.100/X2", values=create.values, auth=create.auth)))
        refused = await _frame(reader)
        assert (refused.request_id, refused.code) == (8, ResponseCode.SERVER_TOO_BUSY), refused
        writer.close()

        token = base64.b64encode(f"300%3A0.NA%2F88.100:{SECRET}".encode()).decode()
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{addrs.http[1]}/api/handles/88.100/X3"
            body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x3"}}]}
            async with http.put(url, json=body, headers={"Authorization": f"Basic {token}"}) as resp:
                assert resp.status == 503, await resp.text()
                assert (await resp.json())["responseCode"] == ResponseCode.SERVER_TOO_BUSY
    finally:
        await hosted.stop()
    reopened = SqliteStore(tmp_path / "node.sqlite3")
    assert reopened.get("88.100/x1") is not None
    assert reopened.get("88.100/x2") is None and reopened.get("88.100/x3") is None
    reopened.close()


class _Never:
    """A service that must not be asked: the connection it would serve was made after the listener closed."""

    name = "never"
    admission = None

    def __init__(self) -> None:
        self.asked: list[Request] = []

    def cached(self, handle: str) -> None:
        self.asked.append(Request(0, OpCode.RESOLUTION, handle))

    def handle(self, req: Request) -> Response:
        self.asked.append(req)
        raise AssertionError("served after close")


async def test_a_connection_made_after_the_listener_closed_is_closed_unserved() -> None:
    service = _Never()
    tcp = await start_tcp(service, "127.0.0.1", 0)  # type: ignore[arg-type]
    await tcp.close(0.1)
    # What asyncio does with a connection it accepted just before the close: the protocol is made after it.
    ours, theirs = socket.socketpair()
    limits = Limits()
    proto = StreamProtocol(service, msgpack_connections(EncodedAnswers())(limits), limits, tcp.conns)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    ours.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(lambda: proto, ours)
    theirs.settimeout(5)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed already: the request is refused
        theirs.sendall(codec.frame(Request(1, OpCode.RESOLUTION, "88.100/A")))
        assert theirs.recv(64) == b""  # closed at once: no answer
    theirs.close()
    await asyncio.sleep(0)
    assert service.asked == []
    assert transport.is_closing()
