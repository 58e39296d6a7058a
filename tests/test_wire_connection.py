"""The sans-I/O msgpack connections (core/wire_connection.py): bytes in, events out, bytes to send.

No sockets: every test feeds bytes and looks at the events and the bytes the connection gives back,
including hostile bytes (hypothesis: any bytes, cut anywhere, give only the four kinds of event).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idresolve.core.answers import Answer, EncodedAnswers, answer_response
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.errors import DecodeError
from idresolve.core.events import Close, Reply, plain_request
from idresolve.core.messages import FLAG_TRACE, Request, Response
from idresolve.core.values import string_value
from idresolve.core.wire import Codec, decode_message
from idresolve.core.wire_connection import ClientConnection, DatagramEndpoint, ServerConnection

CODEC = Codec()
URL = (string_value(1, "URL", "https://example.com/a"),)


def frame(msg: Request | Response) -> bytes:
    return CODEC.frame(msg)


def answers(data: bytes) -> list[Response]:
    """Split framed answers and decode them."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        msg = decode_message(data[pos + 4:pos + 4 + n])
        assert isinstance(msg, Response)
        out.append(msg)
        pos += 4 + n
    return out


# -- server side -----------------------------------------------------------------------------------------

def test_a_request_fed_byte_by_byte_is_one_event_at_its_last_byte() -> None:
    conn = ServerConnection()
    data = frame(Request(7, OpCode.RESOLUTION, "88.1/x", FLAG_TRACE))
    for b in data[:-1]:
        assert conn.receive_data(bytes([b])) is False
        assert conn.next_event() is None
    assert conn.receive_data(data[-1:]) is True
    assert conn.next_event() == Request(7, OpCode.RESOLUTION, "88.1/x", FLAG_TRACE)
    assert conn.next_event() is None


def test_plain_resolutions_come_undecoded_and_stand_for_their_request() -> None:
    conn = ServerConnection()
    conn.receive_data(frame(Request(9, OpCode.RESOLUTION, "88.1/Plain")) + frame(Request(10, OpCode.DELETE_HANDLE, "88.1/y")))
    plain = conn.next_event()
    assert type(plain) is tuple and plain == (9, "88.1/Plain")
    assert plain_request(plain) == Request(9, OpCode.RESOLUTION, "88.1/Plain")
    assert conn.next_event() == Request(10, OpCode.DELETE_HANDLE, "88.1/y")


def test_garbage_gets_a_protocol_error_and_the_connection_goes_on() -> None:
    conn = ServerConnection()
    garbage = b"\x93\x01\x02"  # msgpack, but not a message
    conn.receive_data(len(garbage).to_bytes(4, "big") + garbage + frame(Request(3, OpCode.RESOLUTION, "88.1/z")))
    reply = conn.next_event()
    assert isinstance(reply, Reply)
    (err,) = answers(reply.data)
    assert (err.request_id, err.code) == (0, ResponseCode.PROTOCOL_ERROR)
    assert conn.next_event() == (3, "88.1/z")


def test_an_answer_sent_to_a_server_is_refused_with_its_request_id() -> None:
    conn = ServerConnection()
    conn.receive_data(frame(Response(44, OpCode.RESOLUTION, ResponseCode.SUCCESS, "88.1/a")))
    reply = conn.next_event()
    assert isinstance(reply, Reply)
    (err,) = answers(reply.data)
    assert (err.request_id, err.code, err.message) == (44, ResponseCode.PROTOCOL_ERROR, "expected a request")


@pytest.mark.parametrize("length", [0, 9 * 1024 * 1024, 2**32 - 1])
def test_a_bad_frame_length_closes_after_an_error_answer(length: int) -> None:
    conn = ServerConnection()
    conn.receive_data(length.to_bytes(4, "big") + b"\x00" * 8)
    event = conn.next_event()
    assert isinstance(event, Close)
    (err,) = answers(event.data)
    assert err.code == ResponseCode.PROTOCOL_ERROR
    assert conn.closed and conn.next_event() is None
    assert conn.receive_data(frame(Request(1, OpCode.RESOLUTION, "88.1/a"))) is False  # nothing after it counts
    assert conn.next_event() is None and conn.buffered <= 12


def test_busy_answers_keep_id_and_opcode_and_skip_what_cannot_be_peeked() -> None:
    conn = ServerConnection()
    conn.receive_data(frame(Request(5, OpCode.ADD_VALUE, "88.1/a")) + (3).to_bytes(4, "big") + b"\xc1\xc1\xc1")
    busy = conn.busy_answer_for_next()
    assert busy is not None
    (r,) = answers(busy)
    assert (r.request_id, r.opcode, r.code) == (5, OpCode.ADD_VALUE, ResponseCode.SERVER_TOO_BUSY)
    assert conn.busy_answer_for_next() is None  # garbage: not taken, the decoder answers it
    assert isinstance(conn.next_event(), Reply)
    assert conn.busy_answer_for_next() is None and conn.next_event() is None


def test_the_limit_of_awaited_answers_in_flight() -> None:
    conn = ServerConnection(max_inflight=2)
    assert conn.start() and conn.start() and not conn.start()
    assert conn.inflight == 2
    (r,) = answers(conn.finish(Response(1, OpCode.RESOLUTION, ResponseCode.SUCCESS, "88.1/a")))
    assert r.request_id == 1 and conn.inflight == 1 and conn.start()


def test_cached_answers_are_encoded_once_per_answer_object() -> None:
    encoded = EncodedAnswers()
    conn = ServerConnection(encoded)
    answer = Answer(ResponseCode.SUCCESS, URL)
    first = conn.answer_cached(1, "88.1/A", answer)
    assert answers(first) == [answer_response(1, "88.1/A", answer)]
    assert len(encoded) == 1
    second = conn.answer_cached(2, "88.1/A", answer)
    assert answers(second) == [answer_response(2, "88.1/A", answer)]  # its own request id, the same tail
    assert first[4 + 3 + 4:] == second[4 + 3 + 4:]  # after the fixed-width request id: the same bytes
    newer = Answer(ResponseCode.SUCCESS, (string_value(1, "URL", "https://example.com/b"),))
    assert answers(conn.answer_cached(3, "88.1/A", newer))[0].values == newer.values  # never the older bytes
    referral = Answer(ResponseCode.PREFIX_REFERRAL, URL, referrer="0.NA/88.1")
    (r,) = answers(conn.answer_cached(4, "88.1/B", referral))
    assert (r.code, r.handle) == (ResponseCode.PREFIX_REFERRAL, "0.NA/88.1")


# -- datagrams -----------------------------------------------------------------------------------------

def test_datagrams_never_answer_an_answer_and_refuse_garbage() -> None:
    udp = DatagramEndpoint()
    peer = ("127.0.0.1", 5)
    assert udp.receive(CODEC.encode(Response(1, OpCode.RESOLUTION, 1, "88.1/a")), peer) == []
    (reply,) = udp.receive(b"\xc1garbage", peer)
    assert isinstance(reply, Reply)
    err = decode_message(reply.data)
    assert isinstance(err, Response) and err.code == ResponseCode.PROTOCOL_ERROR
    assert udp.receive(CODEC.encode(Request(2, OpCode.RESOLUTION, "88.1/a")), peer) == [(2, "88.1/a")]


def test_datagram_answers_over_the_limit_go_out_truncated() -> None:
    udp = DatagramEndpoint()
    peer = ("127.0.0.1", 5)
    big = Answer(ResponseCode.SUCCESS, tuple(string_value(i, "DESC", "x" * 200) for i in range(1, 5)))
    for (datagram,) in (udp.answer_cached(8, "88.1/big", big, peer),
                        udp.send(answer_response(8, "88.1/big", big), peer)):
        assert len(datagram) <= 512
        msg = decode_message(datagram)
        assert isinstance(msg, Response) and msg.truncated and not msg.values and msg.request_id == 8
    (small,) = udp.answer_cached(9, "88.1/a", Answer(ResponseCode.SUCCESS, URL), peer)
    assert decode_message(small) == answer_response(9, "88.1/a", Answer(ResponseCode.SUCCESS, URL))


# -- client side ---------------------------------------------------------------------------------------

def test_client_matches_answers_to_tokens_and_counts_strays() -> None:
    client: ClientConnection[str] = ClientConnection()
    rid_a, data_a = client.send(Request(0, OpCode.RESOLUTION, "88.1/a"), "a")
    rid_b, _ = client.send(Request(0, OpCode.RESOLUTION, "88.1/b"), "b")
    assert rid_b == rid_a + 1 and decode_message(data_a[4:]) == Request(rid_a, OpCode.RESOLUTION, "88.1/a")
    assert client.forget(rid_a) == "a"
    got = client.receive_data(frame(Response(rid_b, 1, 1, "88.1/b")) + frame(Response(rid_a, 1, 1, "88.1/a")))
    assert [(token, r.request_id) for token, r in got] == [("b", rid_b)]
    assert client.stray == 1 and client.pending == {}
    bad = b"\xc1"
    assert client.receive_data(len(bad).to_bytes(4, "big") + bad) == [] and client.garbage == 1


def test_client_heads_read_only_id_and_code() -> None:
    client: ClientConnection[int] = ClientConnection()
    rid = client.next_id(123)
    assert client.receive_heads(frame(Response(rid, 1, ResponseCode.HANDLE_NOT_FOUND, "88.1/x"))) == [
        (123, ResponseCode.HANDLE_NOT_FOUND)]


def test_client_bounds_frames_and_requests_in_flight() -> None:
    client: ClientConnection[None] = ClientConnection(max_pending=1, max_frame=1024)
    client.next_id(None)
    with pytest.raises(OverflowError):
        client.next_id(None)
    with pytest.raises(DecodeError):
        client.receive_data((4096).to_bytes(4, "big"))


# -- hostile bytes ------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=12), st.integers(min_value=8, max_value=4096))
def test_any_bytes_give_only_the_four_kinds_of_event(chunks: list[bytes], max_frame: int) -> None:
    conn = ServerConnection(max_frame=max_frame)
    closed = False
    for chunk in chunks:
        conn.receive_data(chunk)
        assert conn.buffered <= max_frame + 4
        while (event := conn.next_event()) is not None:
            assert not closed, "an event after Close"
            assert type(event) is tuple or isinstance(event, Request | Reply | Close)
            if isinstance(event, Reply | Close):
                assert all(r.code == ResponseCode.PROTOCOL_ERROR for r in answers(event.data))
            closed = closed or isinstance(event, Close)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_datagram_gives_at_most_one_event(data: bytes) -> None:
    events = DatagramEndpoint().receive(data, ("127.0.0.1", 1))
    assert len(events) <= 1
    assert all(type(e) is tuple or isinstance(e, Request | Reply) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_a_client_given_any_bytes_returns_answers_or_raises_the_decode_error(data: bytes) -> None:
    client: ClientConnection[None] = ClientConnection(max_frame=256)
    try:
        got = client.receive_data(data)
    except DecodeError:
        return
    assert got == []  # nothing was pending: every answer is stray or garbage
