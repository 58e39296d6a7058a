"""The binary protocol's pure core: codec round trips, stream framing, and the decoder rule."""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.errors import DecodeError, FrameTooLarge, PeerError
from idresolve.core.messages import Hop, Request, Response
from idresolve.core.values import HandleValue
from idresolve.core.wire import MAX_FRAME_BYTES, Codec, FrameDecoder, decode_message, plain_resolution
from idresolve.nodes.authoritative import ItemResult

# --------------------------------------------------------------------------------------------------
# Strategies: every field of Request and Response, within the limits the decoder enforces.

ints64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
short_text = st.text(max_size=40)
# Value types: printable (the decoder refuses control characters) and not one of the structured types
# whose data must decode (HS_ADMIN, HS_SITE, HS_VLIST).
value_types = st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), min_size=1,
                      max_size=30).filter(lambda t: t not in ("HS_ADMIN", "HS_SITE", "HS_VLIST"))

handle_values = st.builds(
    HandleValue,
    index=st.integers(min_value=1, max_value=2**31 - 1),
    type=value_types,
    data=st.binary(max_size=120),
    ttl_s=st.integers(min_value=0, max_value=2**31 - 1),
    timestamp=st.integers(min_value=0, max_value=2**40),
    perms=st.integers(min_value=0, max_value=15),
    refs=st.lists(st.tuples(short_text, st.integers(min_value=-(2**31), max_value=2**31)), max_size=3).map(tuple),
)
values_t = st.lists(handle_values, max_size=4).map(tuple)

requests = st.builds(
    Request,
    request_id=ints64,
    opcode=ints64,
    handle=st.text(max_size=300),
    flags=ints64,
    indexes=st.lists(ints64, max_size=5).map(tuple),
    types=st.lists(st.text(max_size=255), max_size=5).map(tuple),
    values=values_t,
    auth=st.none() | st.tuples(st.text(max_size=100), st.binary(max_size=64)),
    items=st.lists(st.tuples(st.text(max_size=60), values_t), max_size=3).map(tuple),
    page=st.none() | st.tuples(ints64, ints64),
    hops=ints64,
    version=ints64,
)

hops_t = st.builds(Hop, node=short_text, address=short_text, code=ints64, elapsed_us=ints64, cached=st.booleans())

responses = st.builds(
    Response,
    request_id=ints64,
    opcode=ints64,
    code=ints64,
    handle=st.text(max_size=300),
    values=values_t,
    message=st.text(max_size=500),
    node=short_text,
    trace=st.lists(hops_t, max_size=5).map(tuple),
    results=st.lists(st.tuples(st.text(max_size=60), ints64, st.text(max_size=80)), max_size=4).map(tuple),
    handles=st.lists(st.text(max_size=60), max_size=5).map(tuple),
    total=st.none() | ints64,
    truncated=st.booleans(),
)


# --------------------------------------------------------------------------------------------------
# Round trips


@given(requests)
def test_request_round_trip(req: Request) -> None:
    codec = Codec()
    assert decode_message(codec.encode(req)) == req


@given(responses)
def test_response_round_trip(resp: Response) -> None:
    codec = Codec()
    assert decode_message(codec.encode(resp)) == resp


def test_every_field_round_trips_at_once() -> None:
    """One request and one response with every optional field set (so none can be silently dropped)."""
    v = HandleValue(7, "URL", b"https://e.example", 60, 1_700_000_000, 0b1010, (("88.1/ref", 3),))
    req = Request(2**32 - 1, OpCode.BATCH_CREATE, "88.118.8/X", 31, (1, 2), ("URL", "EMAIL"), (v,),
                  ("300:0.NA/88.118.8", b"\x00secret\xff"), (("88.118.8/A", (v,)), ("88.118.8/B", ())),
                  (3, 50), 4, 1_700_000_000_123)
    resp = Response(9, OpCode.RESOLUTION, ResponseCode.PREFIX_REFERRAL, "0.NA/88.118", (v,), "msg", "top-a",
                    (Hop("top-a", "127.0.0.1:1", 303, 1500, False), Hop("cache", "", 1, 0, True)),
                    (("88.118.8/A", 1, ""), ("88.118.8/B", 101, "exists")), ("a", "b"), 0, True)
    codec = Codec()
    for msg in (req, resp):
        assert decode_message(codec.encode(msg)) == msg
    # None of the defaults may collapse to each other: total=0 is not total=None.
    assert decode_message(codec.encode(Response(1, 1, 1, total=0))).total == 0
    assert decode_message(codec.encode(Response(1, 1, 1))).total is None


def test_a_batch_is_decoded_with_the_servers_stamp_and_nothing_else_is() -> None:
    """A server decodes a batch's values with its own timestamp (it stamps what it stores, so the node need
    not copy them); values elsewhere keep the timestamps sent (a registry sync carries the record's own)."""
    plain = HandleValue(7, "URL", b"https://e.example", 60, 5, 0b1110)
    with_refs = HandleValue(8, "EMAIL", b"a@e.example", 60, 6, 0b1110, (("88.1/ref", 3),))
    req = Request(3, OpCode.BATCH_CREATE, "", 0, values=(plain,), items=(("88.1/A", (plain, with_refs)),))
    payload = Codec().encode(req)
    stamped = decode_message(payload, stamp=1_700_000_000)
    assert isinstance(stamped, Request)
    assert [v.timestamp for v in stamped.items[0][1]] == [1_700_000_000, 1_700_000_000]
    assert stamped.values[0].timestamp == 5  # not a batch item: as sent
    assert [(v.index, v.data, v.refs) for v in stamped.items[0][1]] == [(7, plain.data, ()), (8, with_refs.data,
                                                                                           with_refs.refs)]
    assert decode_message(payload) == req  # without a stamp: as sent


def test_batch_results_as_item_results_encode_as_plain_tuples() -> None:
    # the node answers a batch with its ItemResults (named tuples, IntEnum codes) as they are
    named = tuple(ItemResult(f"88.100/x{i}", ResponseCode.SUCCESS) for i in range(3))
    plain = tuple((f"88.100/x{i}", 1, "") for i in range(3))
    codec = Codec()
    payloads = [codec.encode(Response(7, OpCode.BATCH_CREATE, ResponseCode.SUCCESS, "", results=r, total=3))
                for r in (named, plain)]
    assert payloads[0] == payloads[1]
    decoded = decode_message(payloads[0])
    assert isinstance(decoded, Response) and decoded.results == plain


def test_str_secret_is_accepted_as_bytes() -> None:
    payload = msgpack.packb([0, 1, 1, 0, "88.1/x", {"a": ["300:0.NA/88.1", "pw"]}], use_bin_type=True)
    msg = decode_message(payload)
    assert isinstance(msg, Request) and msg.auth == ("300:0.NA/88.1", b"pw")


def test_unknown_opcodes_codes_and_body_keys_decode() -> None:
    payload = msgpack.packb([1, 5, 60000, 777, "h", {"zz": [1, 2], "m": "hi"}], use_bin_type=True)
    msg = decode_message(payload)
    assert isinstance(msg, Response)
    assert (msg.opcode, msg.code, msg.message) == (60000, 777, "hi")
    assert OpCode.of(60000) == 60000 and ResponseCode.of(777) == 777


@given(responses, u32)
def test_payload_with_tail_matches_encode(resp: Response, rid: int) -> None:
    """A cached answer re-sent under another request id decodes to the same Response as encode()."""
    codec = Codec()
    tail = codec.response_tail(resp)
    fresh = Response(rid, resp.opcode, resp.code, resp.handle, resp.values, resp.message, resp.node, resp.trace,
                     resp.results, resp.handles, resp.total, resp.truncated)
    assert decode_message(codec.payload_with_tail(rid, tail)) == decode_message(codec.encode(fresh)) == fresh
    assert codec.payload_with_tail(rid, tail) == codec.encode(fresh)
    framed = codec.frame_with_tail(rid, tail)
    assert FrameDecoder().feed(framed) == [codec.encode(fresh)]


# --------------------------------------------------------------------------------------------------
# Framing


@st.composite
def frames_and_chunkings(draw: st.DrawFn) -> tuple[list[bytes], bytes, list[int]]:
    msgs = draw(st.lists(st.one_of(requests, responses), min_size=1, max_size=4))
    codec = Codec()
    payloads = [codec.encode(m) for m in msgs]
    stream = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20)))
    return payloads, stream, cuts


def _feed_in_chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    dec = FrameDecoder()
    out: list[bytes] = []
    bounds = [0, *cuts, len(stream)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        out.extend(dec.feed(stream[a:b]))
    assert dec.buffered == 0
    return out


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(frames_and_chunkings())
def test_frames_survive_any_chunking(case: tuple[list[bytes], bytes, list[int]]) -> None:
    payloads, stream, cuts = case
    assert _feed_in_chunks(stream, cuts) == payloads
    # byte at a time
    dec = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i : i + 1]))
    assert got == payloads
    # all at once
    assert FrameDecoder().feed(stream) == payloads


class _GatherEarly(FrameDecoder):
    """Gathers every frame over 8 bytes in pieces: the long-frame path, on frames a test can draw."""

    __slots__ = ()
    GATHER_BYTES = 8


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(frames_and_chunkings())
def test_long_frames_gathered_in_pieces_survive_any_chunking(case: tuple[list[bytes], bytes, list[int]]) -> None:
    payloads, stream, cuts = case
    bounds = [0, *cuts, len(stream)]
    dec, got = _GatherEarly(), []
    for a, b in zip(bounds, bounds[1:], strict=False):
        got.extend(dec.feed(stream[a:b]))
        assert dec.buffered == b - sum(len(p) + 4 for p in got)  # every byte not yet given out is counted
    assert got == payloads and dec.buffered == 0
    one = _GatherEarly()
    assert [f for i in range(len(stream)) for f in one.feed(stream[i : i + 1])] == payloads
    assert all(type(f) is bytes for f in got)


def test_a_long_frame_is_joined_once_and_what_follows_it_is_still_framed() -> None:
    big = b"\x91" + b"x" * (FrameDecoder.GATHER_BYTES * 3)  # any bytes: framing does not read them
    small = b"\x90"
    stream = struct.pack(">I", len(big)) + big + struct.pack(">I", len(small)) + small + struct.pack(">I", 9)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), 65536):
        got.extend(dec.feed(memoryview(stream)[i : i + 65536]))  # a memoryview read gives bytes frames
    assert got == [big, small] and dec.buffered == 4  # the last header waits for its body
    with pytest.raises(FrameTooLarge):  # a long frame is bounded like any other, before its body comes
        FrameDecoder(max_frame=FrameDecoder.GATHER_BYTES * 2).feed(stream[:4])


def test_byte_at_a_time_yields_each_frame_exactly_when_complete() -> None:
    codec = Codec()
    msgs = [Request(1, OpCode.RESOLUTION, "88.118.8/JXDY2106023"), Response(1, 1, 1, "88.118.8/JXDY2106023")]
    stream = b"".join(codec.frame(m) for m in msgs)
    first_end = len(codec.frame(msgs[0]))
    dec = FrameDecoder()
    for i in range(len(stream)):
        out = dec.feed(stream[i : i + 1])
        if i + 1 in (first_end, len(stream)):
            assert len(out) == 1
        else:
            assert out == []
    assert dec.buffered == 0


def test_random_chunkings_seeded() -> None:
    codec = Codec()
    payloads = [codec.encode(Request(i, OpCode.RESOLUTION, f"88.1/item{i}" * (i % 7 + 1))) for i in range(200)]
    stream = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    rng = random.Random(2641)
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(stream)), 300))
        assert _feed_in_chunks(stream, cuts) == payloads


def test_oversized_frame_is_rejected_before_its_body_arrives() -> None:
    dec = FrameDecoder(max_frame=100)
    assert dec.feed(struct.pack(">I", 100)) == []  # the limit itself is fine
    dec2 = FrameDecoder(max_frame=100)
    with pytest.raises(FrameTooLarge):
        dec2.feed(struct.pack(">I", 101))
    assert dec2.buffered == 0  # nothing of the bad stream is kept
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        decode_message(b"\x00" * (MAX_FRAME_BYTES + 1))
    assert issubclass(FrameTooLarge, DecodeError) and issubclass(DecodeError, PeerError)


def test_oversized_frame_after_good_ones_in_the_same_chunk() -> None:
    codec = Codec()
    good = codec.frame(Request(1, OpCode.RESOLUTION, "88.1/a"))
    dec = FrameDecoder(max_frame=1000)
    with pytest.raises(FrameTooLarge):
        dec.feed(good + struct.pack(">I", 5000) + b"x" * 10)


def test_empty_frame_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_partial_frame_is_kept_bounded() -> None:
    dec = FrameDecoder(max_frame=64)
    assert dec.feed(struct.pack(">I", 64) + b"a" * 63) == []
    assert dec.buffered == 67
    assert dec.feed(b"b") == [b"a" * 63 + b"b"]
    assert dec.buffered == 0


# --------------------------------------------------------------------------------------------------
# The decoder rule: any bytes -> frames/messages, "need more", or DecodeError. Nothing else.


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=2000))
def test_frame_decoder_rule_for_any_bytes(data: bytes, max_frame: int) -> None:
    dec = FrameDecoder(max_frame=max_frame)
    try:
        frames = dec.feed(data)
    except DecodeError:
        return
    assert isinstance(frames, list)
    assert all(isinstance(f, bytes) and 0 < len(f) <= max_frame for f in frames)
    assert dec.buffered < 4 + max_frame  # what waits is at most one partial frame


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_decode_message_rule_for_any_bytes(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except DecodeError:
        return
    assert isinstance(msg, Request | Response)


_leaf = st.one_of(st.none(), st.booleans(), ints64, st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                  st.binary(max_size=8))
_BODY_KEYS = ["v", "m", "n", "tr", "r", "l", "c", "x", "a", "b", "p", "i", "t", "h", "ver", "zz"]
_obj = st.recursive(_leaf, lambda c: st.lists(c, max_size=8) | st.dictionaries(st.sampled_from(_BODY_KEYS), c,
                                                                              max_size=6), max_leaves=30)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 1, 2]), st.one_of(ints64, _leaf), st.integers(0, 300), st.integers(0, 400),
       st.one_of(st.text(max_size=10), _leaf), st.dictionaries(st.sampled_from(_BODY_KEYS), _obj, max_size=5))
def test_decode_message_rule_for_message_shaped_garbage(kind, rid, opcode, fourth, handle, body) -> None:  # type: ignore[no-untyped-def]
    """Random bytes rarely get past msgpack; this feeds well-formed msgpack arrays with garbage fields
    (NaN and infinite floats included: the cases of ``test_decoder_rule_with_infinite_floats``)."""
    payload = msgpack.packb([kind, rid, opcode, fourth, handle, body], use_bin_type=True)
    try:
        msg = decode_message(payload)
    except DecodeError:
        return
    assert isinstance(msg, Request | Response)


_INF = float("inf")


@pytest.mark.parametrize("kind,body", [
    (1, {"tr": [["node", "addr", _INF, 0, False]]}),
    (1, {"tr": [["node", "addr", 1, _INF, False]]}),
    (0, {"v": [[1, "URL", b"x", 60, 0, 14, [["88.1/ref", _INF]]]]}),
    (1, {"v": [[1, "URL", b"x", 60, 0, 14, [["88.1/ref", -_INF]]]]}),
])
def test_decoder_rule_with_infinite_floats(kind: int, body: dict[str, object]) -> None:
    payload = msgpack.packb([kind, 1, 1, 1, "88.1/x", body], use_bin_type=True)
    with pytest.raises(DecodeError):
        decode_message(payload)


def _deep_trace_payload(depth: int) -> bytes:
    head = msgpack.packb([1, 1, 1, 1, "h"], use_bin_type=True)[1:]  # the first five elements, no array header
    deep = b"\x91" * depth + b"\xc0"
    body = b"\x81" + msgpack.packb("tr") + b"\x91\x95" + deep + msgpack.packb("a") + b"\x01\x01\xc2"
    return b"\x96" + head + body


def test_deep_nesting_beyond_msgpack_stack_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_message(_deep_trace_payload(5000))


def test_decoder_rule_with_nesting_just_under_msgpack_stack_limit() -> None:
    with pytest.raises(DecodeError):
        decode_message(_deep_trace_payload(1010))


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",  # never used in msgpack
    msgpack.packb([0, 1, 1, 0, "h"]),  # five elements
    msgpack.packb([0, 1, 1, 0, "h", {}, 7]),  # seven elements
    msgpack.packb({"not": "an array"}),
    msgpack.packb([3, 1, 1, 0, "h", {}]),  # unknown kind
    msgpack.packb([0, "1", 1, 0, "h", {}]),  # request id not an int
    msgpack.packb([0, True, 1, 0, "h", {}]),  # bools are not ints
    msgpack.packb([0, 1, 1, 0, b"h", {}], use_bin_type=True),  # handle as bytes
    msgpack.packb([0, 1, 1, 0, "h" * 1025, {}]),  # handle too long
    msgpack.packb([0, 1, 1, 0, "h", []]),  # body not a map
    msgpack.packb([0, 1, 1, 0, "h", {1: 2}]),  # non-string map key
    msgpack.packb([0, 1, 1, 0, "h", {"v": [[0, "URL", b"x", 1, 0, 14, []]]}], use_bin_type=True),  # index 0
    msgpack.packb([0, 1, 1, 0, "h", {"a": ["id", 5]}]),  # secret not bytes
    msgpack.packb([0, 1, 1, 0, "h", {"i": list(range(10_001))}]),  # too many filters
    msgpack.packb([1, 1, 1, 1, "h", {"tr": [["n", "a", "x", 1, False]]}]),
    msgpack.packb([1, 1, 1, 1, "h", {"c": "many"}]),
    msgpack.packb([0, 1, 1, 0, "h", {}]) + b"\x00",  # trailing bytes
])
def test_malformed_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(payload)


# --------------------------------------------------------------------------------------------------
# The plain-resolution fast path: it recognises exactly what decodes to a plain resolution request.

@given(rid=u32, handle=st.text(max_size=1100))
def test_plain_resolution_reads_what_the_codec_writes(rid: int, handle: str) -> None:
    payload = Codec().encode(Request(rid, OpCode.RESOLUTION, handle))
    got = plain_resolution(payload)
    if len(handle) <= 1024:
        assert got == (rid, handle)
        assert decode_message(payload) == Request(rid, OpCode.RESOLUTION, handle)
    else:
        assert got is None  # too long: the decoder gives the error


@given(req=st.builds(Request, request_id=u32, opcode=st.sampled_from([OpCode.RESOLUTION, OpCode.CREATE_HANDLE]),
                     handle=st.text(max_size=40), flags=st.integers(0, 3),
                     indexes=st.lists(st.integers(1, 9), max_size=2).map(tuple)))
def test_plain_resolution_leaves_every_other_request_to_the_decoder(req: Request) -> None:
    payload = Codec().encode(req)
    plain = req.opcode == OpCode.RESOLUTION and not req.flags and not req.indexes
    assert (plain_resolution(payload) is not None) == plain


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_whatever_the_fast_path_accepts_decodes_to_the_same_request(data: st.DataObject) -> None:
    base = Codec().encode(Request(data.draw(u32), OpCode.RESOLUTION, data.draw(st.text(max_size=40))))
    payload = bytearray(base)
    for _ in range(data.draw(st.integers(0, 3))):  # mutate a few bytes, or cut, or extend
        how = data.draw(st.sampled_from(["set", "cut", "add"]))
        if how == "set" and payload:
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        elif how == "cut" and payload:
            del payload[data.draw(st.integers(0, len(payload) - 1)):]
        else:
            payload += data.draw(st.binary(max_size=3))
    got = plain_resolution(bytes(payload))
    if got is not None:
        assert decode_message(bytes(payload)) == Request(got[0], OpCode.RESOLUTION, got[1])


def test_the_response_memo_keeps_referrals_and_decodes_them_once() -> None:
    """A client's memo keeps referrals, which come again and again; answers with values name their
    identifier and are decoded each time, never kept. A memo hit is what decoding gives, with its own id."""
    from idresolve.core.site import Interface, Server, SiteInfo
    from idresolve.core.values import HS_SITE
    from idresolve.core.wire import ResponseMemo

    site = SiteInfo(servers=(Server(1, "127.0.0.1", (Interface("TCP", 2641),)),)).to_bytes()
    referral = Response(7, OpCode.RESOLUTION, ResponseCode.PREFIX_REFERRAL, "0.NA/88.118",
                        values=(HandleValue(1, HS_SITE, site),))
    answer = Response(8, OpCode.RESOLUTION, ResponseCode.SUCCESS, "88.118/x", values=(HandleValue(1, "URL", b"u"),))
    codec, memo = Codec(), ResponseMemo()
    for rid in (7, 300, 70_000, 2**40):
        payload = codec.encode(Response(rid, *[getattr(referral, f) for f in ("opcode", "code", "handle", "values")]))
        first = decode_message(payload, memo)
        assert first == decode_message(payload) and first.request_id == rid
    assert len(memo.entries) == 1  # the same referral after four request ids of different widths
    again = decode_message(codec.encode(referral), memo)
    assert again == referral and len(memo.entries) == 1
    assert decode_message(codec.encode(answer), memo) == answer and len(memo.entries) == 1
    for cut in (2, 3, 5, 7):  # a referral cut short is garbage, memo or not
        with pytest.raises(DecodeError):
            decode_message(codec.encode(referral)[:cut], memo)


@pytest.mark.parametrize("keep_head", [False, True])
def test_a_read_that_is_exactly_one_frame_is_that_frame(keep_head: bool) -> None:
    """Most reads (and every message between simulated nodes) are one whole frame: given back at once,
    and the same as the general path gives, with the same limits and the same state after."""
    head, at = (20, 16) if keep_head else (4, 0)
    def frame(body: bytes) -> bytes:
        return b"\x01" * at + struct.pack(">I", len(body)) + b"\x02" * (head - at - 4) + body
    one = frame(b"payload")
    dec = FrameDecoder(max_frame=100, head=head, length_at=at, keep_head=keep_head)
    assert dec.feed(one) == [one if keep_head else b"payload"] and dec.buffered == 0
    assert dec.feed(one[:3]) == [] and dec.feed(one[3:]) == [one if keep_head else b"payload"]  # then pieces
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=3, head=head, length_at=at, keep_head=keep_head).feed(one)
    with pytest.raises(DecodeError):
        FrameDecoder(head=head, length_at=at, keep_head=keep_head).feed(frame(b""))
    two = FrameDecoder(max_frame=100, head=head, length_at=at, keep_head=keep_head)
    assert len(two.feed(one + one[:5])) == 1 and two.buffered == 5  # a frame and a piece: the general path
