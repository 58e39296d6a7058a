"""Hostile input for a live native listener on loopback (a node on its own event-loop thread): generated
messages, mutations of the captured requests, random bytes and hostile lengths, over TCP and UDP.

The rule: every message gets an answer (a PROTOCOL_ERROR answer for what does not decode, whatever the
node says for what does) or the connection is closed; never an exception in the server, a hang (every
read has a deadline) or unbounded memory (a length beyond the limit closes the stream at once, without
buffering). After each case the node still answers a good request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzutil import LoopThread
from idresolve.core.codes import ResponseCode
from idresolve.core.native import decode_message, encode_message
from idresolve.runtime.hosted import authoritative_host
from idresolve.runtime.listeners import NativeOptions
from idresolve.runtime.serverkey import generate_key
from idresolve.store import MemoryStore
from nativeutil import all_captured, captured
from test_native_fuzz import messages
from test_native_server import recorded_records

IO_TIMEOUT_S = 5.0
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
REQUESTS = [c for c in all_captured() if c.from_client]
GOOD = captured("02-resolve-tcp")[0].raw


@dataclass
class Live:
    host: str
    port: int
    errors: list[logging.LogRecord]


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    lt = LoopThread()
    lt.start()
    hosted = authoritative_host("fuzz", MemoryStore(), ["88.100"], "admin-secret")
    for r in recorded_records():
        hosted.node.bootstrap_record(r)

    async def start() -> tuple[str, int]:
        addrs = await hosted.start(http=None, handle="127.0.0.1:0", native=NativeOptions(generate_key()))
        assert addrs.handle is not None
        return addrs.handle

    errors = _Errors()
    logging.getLogger("idresolve").addHandler(errors)
    try:
        host, port = lt.run(start())
        yield Live(host, port, errors.records)
    finally:
        logging.getLogger("idresolve").removeHandler(errors)
        lt.run(hosted.stop())
        lt.stop()


QUIET_S = 0.05  # no more answers after this long: the server is done with the case


def _read_answers(sock: socket.socket, quiet_s: float = QUIET_S) -> list[bytes] | None:
    """Whole answers until the server is quiet or closes (None when it closed without any)."""
    buf, out = b"", []
    sock.settimeout(quiet_s)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return out or None
        buf += chunk
        while len(buf) >= 20 and len(buf) >= 20 + int.from_bytes(buf[16:20], "big"):
            n = 20 + int.from_bytes(buf[16:20], "big")
            out.append(buf[:n])
            buf = buf[n:]
    return out


def _tcp(live: Live, data: bytes) -> list[bytes] | None:
    with socket.create_connection((live.host, live.port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(data)
        return _read_answers(sock)


def _udp(live: Live, data: bytes) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, (live.host, live.port))
        sock.settimeout(QUIET_S)
        out = []
        while True:
            try:
                out.append(sock.recvfrom(65536)[0])
            except TimeoutError:
                return out


def _still_answers(live: Live) -> None:
    with socket.create_connection((live.host, live.port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(GOOD)
        head = sock.recv(20, socket.MSG_WAITALL)
        body = sock.recv(int.from_bytes(head[16:20], "big"), socket.MSG_WAITALL)
    assert decode_message(head + body).header.code == ResponseCode.SUCCESS
    assert not live.errors, [r.getMessage() for r in live.errors]


def _check(live: Live, data: bytes) -> None:
    """Any answers must decode; a stream that announced a message beyond the limit is closed."""
    answers = _tcp(live, data)
    for a in answers or []:
        decode_message(a)
    for d in _udp(live, data[:65000]):
        assert len(d) <= 512
    _still_answers(live)


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    kind = rng.randrange(6)
    if kind == 0:
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(1, len(data)):]
    elif kind == 2:  # a hostile length at any aligned offset
        i = rng.randrange(0, len(data) - 4)
        data[i:i + 4] = struct.pack(">I", rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)]))
    elif kind == 3:  # a message length that matches the new size (so the body is what is hostile)
        i = rng.randrange(20, len(data))
        data[i:i] = rng.randbytes(rng.randint(1, 32))
        data[16:20] = struct.pack(">I", len(data) - 20)
    elif kind == 4:
        other = rng.choice(REQUESTS).raw
        data = data[: rng.randrange(20, len(data))] + bytearray(other[rng.randrange(20, len(other)):])
        data[16:20] = struct.pack(">I", len(data) - 20)
    else:
        data += rng.choice(REQUESTS).raw  # two messages in one write
    return bytes(data)


@FAST
@given(st.integers(0, 2**32 - 1))
def test_mutated_captured_requests(live: Live, seed: int) -> None:
    rng = random.Random(seed)
    _check(live, _mutate(rng, rng.choice(REQUESTS).raw))


@FAST
@given(messages())
def test_generated_messages(live: Live, msg: object) -> None:
    _check(live, encode_message(msg))  # type: ignore[arg-type]


@FAST
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes(live: Live, data: bytes) -> None:
    _check(live, data)


def test_a_length_beyond_the_limit_closes_the_stream_with_an_error_answer(live: Live) -> None:
    head = bytes.fromhex("020a020a") + bytes(12) + struct.pack(">I", 2**32 - 1)
    answers = _tcp(live, head + b"x" * 1000)
    assert answers is not None and len(answers) == 1
    assert decode_message(answers[0]).header.code == ResponseCode.PROTOCOL_ERROR
    with socket.create_connection((live.host, live.port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(head)
        _read_answers(sock, 0.5)
        sock.settimeout(IO_TIMEOUT_S)
        assert sock.recv(65536) == b""  # closed by the server
    _still_answers(live)


def test_garbage_with_an_envelope_gets_a_protocol_error_answer_with_its_request_id(live: Live) -> None:
    raw = bytearray(GOOD)
    raw[44:48] = struct.pack(">I", 2**31)  # the handle's length: far beyond the body
    answers = _tcp(live, bytes(raw))
    assert answers is not None
    msg = decode_message(answers[0])
    assert msg.header.code == ResponseCode.PROTOCOL_ERROR
    assert msg.envelope.request_id == decode_message(GOOD).envelope.request_id
    udp = _udp(live, bytes(raw))
    assert udp and decode_message(udp[0]).header.code == ResponseCode.PROTOCOL_ERROR


def test_answers_sent_to_the_server_are_refused_over_tcp_and_ignored_over_udp(live: Live) -> None:
    answer = captured("02-resolve-tcp")[1].raw
    got = _tcp(live, answer)
    assert got is not None and decode_message(got[0]).header.code == ResponseCode.PROTOCOL_ERROR
    assert _udp(live, captured("04-resolve-not-found")[1].raw) == []


def test_a_message_dribbled_byte_by_byte_is_answered(live: Live) -> None:
    async def dribble() -> bytes:
        reader, writer = await asyncio.open_connection(live.host, live.port)
        try:
            for b in GOOD:
                writer.write(bytes([b]))
                await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(20), IO_TIMEOUT_S)
            return head + await asyncio.wait_for(reader.readexactly(int.from_bytes(head[16:20], "big")), IO_TIMEOUT_S)
        finally:
            writer.close()

    assert decode_message(asyncio.run(dribble())).header.code == ResponseCode.SUCCESS
