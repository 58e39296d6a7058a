"""Hostile and random input for the native codec: round trips of generated messages and values, and the
decoder rule for any bytes at all (a message, need-more, or DecodeError; bounded memory)."""

from __future__ import annotations

import contextlib
import random
import struct
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idresolve.core.errors import DecodeError, FrameTooLarge
from idresolve.core.native import (
    DEFAULT_LIMITS,
    Challenge,
    ChallengeAnswer,
    CreateResponse,
    Credential,
    EmptyBody,
    Envelope,
    ErrorBody,
    HandleBody,
    HandleList,
    HandleValues,
    Header,
    Message,
    OpFlag,
    RawBody,
    Reassembler,
    Referral,
    RemoveValues,
    RequestDigest,
    ResolutionRequest,
    SessionExchangeKey,
    SessionSetupRequest,
    SessionSetupResponse,
    SiteInfoBody,
    StreamFramer,
    VerifyRequest,
    VerifyResponse,
    decode_message,
    encode_message,
)
from idresolve.core.native.primitives import Reader
from idresolve.core.native.valuecodec import read_values, stamp_absolute, write_values
from idresolve.core.site import Interface, Server, SiteInfo
from idresolve.core.values import HandleValue
from nativeutil import all_captured, captured

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8, u16 = st.integers(0, 255), st.integers(0, 0xFFFF)
u32, i32 = st.integers(0, 2**32 - 1), st.integers(-(2**31), 2**31 - 1)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
handles = text
blobs = st.binary(max_size=64)


@st.composite
def handle_values(draw: st.DrawFn) -> HandleValue:
    value = HandleValue(draw(i32), draw(text), draw(blobs), draw(i32), draw(u32), draw(st.integers(0, 15)),
                        tuple(draw(st.lists(st.tuples(handles, i32), max_size=2))))
    return stamp_absolute(value) if draw(st.booleans()) and draw(st.booleans()) else value


value_lists = st.lists(handle_values(), max_size=3).map(tuple)
digests = st.one_of(
    st.builds(RequestDigest, st.just(1), st.binary(min_size=16, max_size=16)),
    st.builds(RequestDigest, st.just(2), st.binary(min_size=20, max_size=20)),
    st.builds(RequestDigest, st.just(3), st.binary(min_size=32, max_size=32)),
    st.builds(RequestDigest, st.just(0), st.binary(max_size=40)),
)
sites = st.builds(
    SiteInfo,
    servers=st.lists(st.builds(Server, server_id=u32, address=st.sampled_from(["127.0.0.1", "10.1.2.3", "::1", "fe80::1"]),
                               interfaces=st.lists(st.builds(Interface, st.sampled_from(["TCP", "UDP", "HTTP"]),
                                                             st.integers(1, 65535), st.booleans(), st.booleans()),
                                                   max_size=3).map(tuple),
                               public_key=blobs), max_size=2, unique_by=lambda s: s.server_id).map(tuple),
    serial=u16, version=u16, protocol_version=st.tuples(u8, u8), primary=st.booleans(), multi_primary=st.booleans(),
    attributes=st.lists(st.tuples(text.filter(lambda k: not k.startswith("host.")), text), max_size=2).map(tuple),
    hash_option=u8, hash_filter=text,
)
padding = st.binary(max_size=4)


@st.composite
def session_setup_requests(draw: st.DrawFn) -> SessionSetupRequest:
    mode = draw(st.integers(0, 6))
    key = draw(blobs) if mode in (1, 4) else b""
    ex_handle, ex_index = (draw(handles), draw(i32)) if mode == 3 else ("", 0)
    return SessionSetupRequest(mode, draw(u32), draw(handles), draw(i32), key, ex_handle, ex_index, draw(padding))


REQUEST_BODIES: list[tuple[int, st.SearchStrategy[object]]] = [
    (1, st.builds(ResolutionRequest, handles, st.lists(i32, max_size=3).map(tuple), st.lists(text, max_size=3).map(tuple))),
    (2, st.builds(HandleBody, handles)),
    (100, st.builds(HandleValues, handles, value_lists)),
    (101, st.builds(HandleBody, handles)),
    (102, st.builds(HandleValues, handles, value_lists)),
    (103, st.builds(RemoveValues, handles, st.lists(i32, max_size=3).map(tuple))),
    (104, st.builds(HandleValues, handles, value_lists)),
    (105, st.builds(HandleBody, handles)),
    (200, st.builds(ChallengeAnswer, text, handles, i32, blobs)),
    (201, st.builds(VerifyRequest, handles, i32, blobs, digests, blobs)),
    (400, session_setup_requests()),
    (401, st.builds(HandleBody, handles)),
    (402, st.builds(SessionExchangeKey, st.none() | blobs)),
    (999, st.builds(RawBody, blobs)),
]
SUCCESS_BODIES: list[tuple[int, st.SearchStrategy[object]]] = [
    (1, st.builds(HandleValues, handles, value_lists)),
    (2, st.builds(SiteInfoBody, sites)),
    (100, st.builds(CreateResponse, st.none() | handles)),
    (101, st.just(EmptyBody())),
    (102, st.just(EmptyBody())),
    (105, st.builds(HandleList, st.lists(handles, max_size=3).map(tuple))),
    (201, st.builds(VerifyResponse, st.booleans())),
    (400, st.builds(SessionSetupResponse, u16, blobs, padding)),
    (777, st.builds(RawBody, blobs)),
]
OTHER_BODIES: list[tuple[int, st.SearchStrategy[object]]] = [
    (302, st.builds(Referral, handles, st.none() | value_lists)),
    (303, st.builds(Referral, handles, st.none() | value_lists)),
    (402, st.builds(Challenge, blobs)),
    (100, st.builds(ErrorBody, text)),
    (301, st.builds(ErrorBody, text)),
    (4, st.builds(ErrorBody, text)),
    (9999, st.builds(RawBody, blobs)),
]
credentials = st.none() | st.builds(Credential, text, text, blobs, i32, handles, u8, u8, u16)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(["request", "success", "other"]))
    if kind == "request":
        opcode, body_st = draw(st.sampled_from(REQUEST_BODIES))
        code = 0
    elif kind == "success":
        opcode, body_st = draw(st.sampled_from(SUCCESS_BODIES))
        code = 1
    else:
        code, body_st = draw(st.sampled_from(OTHER_BODIES))
        opcode = draw(st.sampled_from([1, 100, 101, 200]))
    flags = draw(u32)
    digest = draw(digests) if code and flags & OpFlag.RD else None
    envelope = Envelope(draw(u8), draw(u8), draw(st.sampled_from([0, 0x20, 0x04, 0x10])), draw(st.integers(0, 3)),
                        draw(u8), draw(u32), draw(u32), draw(u32))
    header = Header(opcode, code, flags, draw(u16), draw(u8), draw(u32), draw(u8))
    return Message(envelope, header, draw(body_st), draw(credentials), digest)  # type: ignore[arg-type]


@given(messages())
@FAST
def test_generated_messages_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    decoded = decode_message(data)
    assert decoded == msg
    assert encode_message(decoded) == data
    assert decoded.wire == data[20:20 + 24 + int.from_bytes(data[40:44], "big")]


@given(st.lists(handle_values(), max_size=5))
@FAST
def test_generated_values_round_trip(values: list[HandleValue]) -> None:
    out = bytearray()
    write_values(out, values)
    r = Reader(bytes(out))
    decoded = read_values(r)
    r.done("values")
    assert decoded == tuple(values)
    assert [type(v) for v in decoded] == [type(v) for v in values]


def _decodes_or_refuses(data: bytes) -> Message | None:
    try:
        msg = decode_message(data)
    except DecodeError:
        return None  # anything else escapes and fails the test
    again = encode_message(msg)  # whatever decodes can be encoded again, and decodes to the same message
    assert decode_message(again) == msg
    return msg


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    _decodes_or_refuses(data)


KNOWN_OPCODES = [0, 1, 2, 100, 101, 102, 103, 104, 105, 106, 200, 201, 400, 401, 402, 1000]
KNOWN_CODES = [0, 1, 2, 4, 100, 200, 301, 302, 303, 402, 403, 501, 606]


@given(st.sampled_from(KNOWN_OPCODES) | u32, st.sampled_from(KNOWN_CODES) | u32, u32, st.binary(max_size=200),
       st.binary(max_size=40))
@settings(max_examples=600, deadline=None)
def test_any_body_behind_a_consistent_envelope(opcode: int, code: int, flags: int, body: bytes, cred: bytes) -> None:
    """Well-formed envelope and header lengths, so random bytes reach every body and credential reader."""
    rest = struct.pack(">IIIHBBII", opcode, code, flags, 0, 0, 0, 0, len(body)) + body + cred
    _decodes_or_refuses(bytes([2, 10, 2, 10]) + bytes(12) + struct.pack(">I", len(rest)) + rest)


_CAPTURES = [c.raw for c in all_captured()]


@given(st.sampled_from(_CAPTURES), st.data())
@settings(max_examples=600, deadline=None)
def test_mutated_captures_decode_or_raise_decode_error(raw: bytes, data: st.DataObject) -> None:
    blob = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(blob)))
    for candidate in (bytes(blob), bytes(blob[:cut]), raw[:cut], raw + b"\0"):
        _decodes_or_refuses(candidate)
        # And with the envelope length made consistent, so the damage reaches the body.
        if len(candidate) >= 20:
            _decodes_or_refuses(candidate[:16] + struct.pack(">I", len(candidate) - 20) + candidate[20:])


def _peak_bytes(fn: Callable[[], object]) -> int:
    """Peak memory allocated while ``fn`` runs (tracemalloc must be tracing)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    with contextlib.suppress(DecodeError):
        fn()
    return tracemalloc.get_traced_memory()[1] - before


HOSTILE_LENGTHS = (2**32 - 1, 2**31, 2**31 - 1, 0x00FFFFFF)


@pytest.mark.parametrize("cap", [captured("01-resolve-udp")[1], captured("05-get-siteinfo")[1],
                                 captured("06-create-add-auth-session")[0], captured("12-resolve-certified")[1]],
                         ids=lambda c: f"{c.name}#{c.position}")
def test_hostile_lengths_never_allocate_beyond_the_bound(cap: object) -> None:
    raw = cap.raw  # type: ignore[attr-defined]
    bound = 2 * DEFAULT_LIMITS.max_message
    worst = 0
    tracemalloc.start()
    try:
        for pos in range(0, len(raw) - 3):
            for n in HOSTILE_LENGTHS:
                hostile = raw[:pos] + struct.pack(">I", n) + raw[pos + 4:]
                worst = max(worst, _peak_bytes(lambda h=hostile: decode_message(h)))  # type: ignore[misc]
    finally:
        tracemalloc.stop()
    assert 0 < worst < bound


def test_envelope_length_of_2_32_minus_1_is_refused_before_buffering() -> None:
    raw = captured("02-resolve-tcp")[0].raw
    hostile = raw[:16] + b"\xff\xff\xff\xff" + raw[20:]
    with pytest.raises(FrameTooLarge):
        decode_message(hostile)
    framer = StreamFramer()
    tracemalloc.start()
    try:
        peak = _peak_bytes(lambda: pytest.raises(FrameTooLarge, framer.feed, hostile))
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 and framer.buffered == 0


def test_stream_framer_splits_byte_at_a_time_and_buffers_at_most_one_message() -> None:
    stream = b"".join(c.raw for c in all_captured() if c.transport == "tcp")
    framer = StreamFramer()
    out: list[bytes] = []
    most = 0
    for i in range(len(stream)):
        out += framer.feed(stream[i:i + 1])
        most = max(most, framer.buffered)
    assert out == [c.raw for c in all_captured() if c.transport == "tcp"]
    assert framer.buffered == 0 and most < 20 + DEFAULT_LIMITS.max_message


def test_stream_framer_on_random_streams() -> None:
    rng = random.Random(11)
    for _ in range(200):
        framer = StreamFramer()
        try:
            for _ in range(8):
                for frame in framer.feed(rng.randbytes(rng.randint(0, 64))):
                    _decodes_or_refuses(frame)
        except FrameTooLarge:
            assert framer.buffered == 0
        assert framer.buffered < 20 + DEFAULT_LIMITS.max_message


@given(st.lists(st.binary(max_size=600), max_size=40))
@settings(max_examples=200, deadline=None)
def test_reassembler_on_random_datagrams(datagrams: list[bytes]) -> None:
    r = Reassembler(max_partial=4, max_pending_bytes=4096)
    for i, d in enumerate(datagrams):
        try:
            whole = r.feed(d, i % 3, float(i))
        except DecodeError:
            continue
        if whole is not None:
            _decodes_or_refuses(whole)
        assert r.partial_count <= 4 and r.pending_bytes <= 4096
