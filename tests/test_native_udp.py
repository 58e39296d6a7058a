"""Splitting native messages into datagrams and reassembling them: round trips, out of order,
duplicates, expiry, and the reassembler's bounds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from idresolve.core.errors import DecodeError, FrameTooLarge
from idresolve.core.native import (
    EnvelopeFlag,
    HandleValues,
    Limits,
    Reassembler,
    decode_envelope,
    decode_message,
    encode_message,
    split_message,
)
from idresolve.core.native.udp import MAX_DATAGRAM, MAX_PAYLOAD
from idresolve.core.values import HandleValue
from nativeutil import captured

BIG = captured("01-resolve-udp")[1].raw  # 2,456 bytes: 5 datagrams
SMALL = captured("03-resolve-type-filter")[0].raw


def _message_of(filler: int, request_id: int = 7) -> bytes:
    """An encoded resolution answer carrying one value of ``filler`` data bytes."""
    msg = decode_message(BIG)
    body = HandleValues("h", (HandleValue(1, "X", b"x" * filler),))
    return encode_message(replace(msg, envelope=replace(msg.envelope, request_id=request_id), body=body))


def test_small_message_is_one_datagram() -> None:
    assert split_message(SMALL) == [SMALL]
    assert Reassembler().feed(SMALL, "peer", 0.0) == SMALL


def test_split_matches_the_reference() -> None:
    datagrams = split_message(BIG)
    assert datagrams == list(captured("01-resolve-udp")[1].datagrams)
    envelopes = [decode_envelope(d) for d in datagrams]
    assert [e.sequence for e, _ in envelopes] == [0, 1, 2, 3, 4]
    assert {length for _, length in envelopes} == {2436}
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)


def test_client_split_sets_tc_and_reassembles() -> None:
    datagrams = split_message(BIG, truncated=True)
    assert all(d[2] & EnvelopeFlag.TC for d in datagrams)
    r = Reassembler()
    results = [r.feed(d, "c", 0.0) for d in datagrams]
    assert results[:-1] == [None] * 4
    assert results[-1] == BIG  # TC is a datagram matter: the message comes back as it was encoded


@given(st.integers(MAX_PAYLOAD + 1, 6000), st.randoms(use_true_random=False), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_round_trip_out_of_order_with_duplicates(size: int, rnd: object, dups: int) -> None:
    message = _message_of(size)
    datagrams = split_message(message)
    assert len(datagrams) == -(-(len(message) - 20) // MAX_PAYLOAD)
    assume(len(datagrams) > 1)
    shuffled = datagrams + [rnd.choice(datagrams) for _ in range(dups)]  # type: ignore[attr-defined]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    r = Reassembler()
    got = [m for d in shuffled if (m := r.feed(d, ("127.0.0.1", 4000), 1.0)) is not None]
    # Every complete copy comes out (a client that retries sends the datagrams again and must get an answer
    # again); duplicates inside one copy are ignored, and a copy left incomplete expires.
    assert got and set(got) == {message}
    assert len(got) <= 1 + dups // len(datagrams)
    assert decode_message(got[0]) == decode_message(message)
    r.expire(1.0 + r.timeout_s + 1)
    assert r.partial_count == 0 and r.pending_bytes == 0


def test_messages_from_different_sources_and_requests_are_kept_apart() -> None:
    a, b = split_message(_message_of(1500, 1)), split_message(_message_of(1500, 2))
    r = Reassembler()
    interleaved = [x for pair in zip(a, b, strict=True) for x in pair]
    done = [m for d in interleaved if (m := r.feed(d, "peer", 0.0))]
    assert sorted(done) == sorted([_message_of(1500, 1), _message_of(1500, 2)])
    # The same request id from two peers: two messages.
    r2 = Reassembler()
    done = [m for d in a for peer in ("p1", "p2") if (m := r2.feed(d, peer, 0.0))]
    assert len(done) == 2


def test_missing_datagram_expires() -> None:
    datagrams = split_message(BIG)
    r = Reassembler(timeout_s=2.0)
    for d in datagrams[:-1]:
        assert r.feed(d, "p", 10.0) is None
    assert r.partial_count == 1 and r.pending_bytes == 4 * MAX_PAYLOAD
    assert r.expire(11.0) == 0
    assert r.expire(12.5) == 1
    assert (r.partial_count, r.pending_bytes, r.dropped) == (0, 0, 1)
    # The late datagram starts a new partial message that never completes.
    assert r.feed(datagrams[-1], "p", 13.0) is None
    assert r.partial_count == 1


def test_bounds_evict_the_oldest() -> None:
    r = Reassembler(max_partial=3, max_pending_bytes=10 * MAX_PAYLOAD)
    for rid in range(10):
        r.feed(split_message(_message_of(1500, rid))[0], "p", float(rid) / 100)
        assert r.partial_count <= 3 and r.pending_bytes <= 10 * MAX_PAYLOAD
    assert r.partial_count == 3 and r.dropped == 7
    # An evicted message cannot complete; a kept one can.
    last = split_message(_message_of(1500, 9))
    assert [r.feed(d, "p", 0.2) for d in last[1:]][-1] == _message_of(1500, 9)
    first = split_message(_message_of(1500, 0))
    assert all(r.feed(d, "p", 0.2) is None for d in first[1:])


def test_one_message_larger_than_the_pending_bound_is_dropped() -> None:
    r = Reassembler(max_pending_bytes=2 * MAX_PAYLOAD)
    datagrams = split_message(_message_of(3000))
    assert all(r.feed(d, "p", 0.0) is None for d in datagrams)
    assert r.pending_bytes <= 2 * MAX_PAYLOAD


@pytest.mark.parametrize("damage", ["bad sequence", "short chunk", "long chunk", "disagreeing length", "too large"])
def test_datagrams_that_cannot_belong_to_a_message(damage: str) -> None:
    datagrams = split_message(BIG)
    r = Reassembler(limits=Limits(max_message=4096))
    r.feed(datagrams[0], "p", 0.0)
    d = bytearray(datagrams[1])
    if damage == "bad sequence":
        d[12:16] = (9).to_bytes(4, "big")
    elif damage == "short chunk":
        d = d[:-1]
    elif damage == "long chunk":
        d += b"\0"
    elif damage == "disagreeing length":
        d[16:20] = (2437).to_bytes(4, "big")
    else:
        d[16:20] = (5000).to_bytes(4, "big")
    with pytest.raises(FrameTooLarge if damage == "too large" else DecodeError):
        r.feed(bytes(d), "p", 0.0)
    with pytest.raises(DecodeError):
        r.feed(b"\x02\x0a", "p", 0.0)
