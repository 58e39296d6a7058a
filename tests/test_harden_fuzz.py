"""Hostile input over the binary protocol: the decoder rule under arbitrary bytes and structures, the
binary dispatch under random decoded requests, and mutated frames over real TCP to an authoritative and a
recursive node. (REST fuzzing: test_harden_restfuzz.py; slow clients: test_harden_slow.py.)

CI runs bounded versions (a few seconds each); ``@pytest.mark.slow`` versions run a million cases and more
(IDRESOLVE_LONG=1). Every random generator is seeded; a failure names its seed and case. Network: 127.0.0.1.
"""


from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fuzzutil import (
    ADMIN,
    ADMIN2,
    LOOPBACK,
    NOW,
    SECRET,
    SEEDED,
    Mutator,
    RawBinary,
    all_connections_gone,
    frame_of,
    fresh_node,
    good_request_on_a_fresh_connection,
    msgpack_ints,
    msgpack_objects,
    pack,
    valid_requests,
)
from idresolve.core.admin import AdminPerm, AdminRef
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.errors import DecodeError
from idresolve.core.handles import fold
from idresolve.core.messages import Request, Response
from idresolve.core.records import Record
from idresolve.core.site import Interface, Server, SiteInfo
from idresolve.core.values import HandleValue, encode_vlist, string_value
from idresolve.core.wire import MAX_FRAME_BYTES, Codec, FrameDecoder, decode_message
from idresolve.net.client import ClientPool
from idresolve.net.server import Limits
from idresolve.nodes.auth import parse_identity
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import prefix_record
from idresolve.nodes.dispatch import answer
from idresolve.nodes.pipeline import RecursiveNode
from idresolve.nodes.recursive import RecursiveResolver, Upstream
from idresolve.runtime.hosted import HostedAuthoritative, HostedRecursive, HostSettings
from idresolve.store.memory import MemoryStore

codec = Codec()


def check_decoder_rule(payload: bytes) -> None:
    """decode_message returns a message or raises DecodeError; a decoded message re-encodes to itself."""
    try:
        msg = decode_message(payload)
    except DecodeError:
        return
    assert isinstance(msg, Request | Response)
    assert decode_message(codec.encode(msg)) == msg


def check_store(node: AuthoritativeNode) -> None:
    """Every stored record decodes, sits under its folded key, and has unique value indexes."""
    store = node.store
    assert isinstance(store, MemoryStore)
    for key, blob in list(store._records.items()):
        record = Record.decode(blob)
        assert record.key == key
        indexes = [v.index for v in record.values]
        assert len(indexes) == len(set(indexes)), record
    for prefix in node.prefixes:
        for h in store.list_handles(fold(prefix)):
            assert store.get(fold(h)) is not None


# ==================================================================================================
# 1. The decoder rule (hypothesis)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=80), max_size=10), st.integers(min_value=1, max_value=600))
def test_any_byte_stream_through_framing_and_decoding(chunks: list[bytes], max_frame: int) -> None:
    dec = FrameDecoder(max_frame)
    for chunk in chunks:
        try:
            frames = dec.feed(chunk)
        except DecodeError:
            dec = FrameDecoder(max_frame)  # the stream is dead (the server closes it); a new connection
            continue
        for f in frames:
            assert 0 < len(f) <= max_frame
            check_decoder_rule(f)
        assert dec.buffered < 4 + max_frame


_kinds = st.one_of(st.sampled_from([0, 1]), msgpack_objects)
_value_lists = st.lists(st.one_of(
    st.tuples(msgpack_ints, st.sampled_from(["URL", "HS_ADMIN", "HS_SITE", "HS_VLIST", "HS_SECKEY", "", "\x00"]),
              st.binary(max_size=40), msgpack_ints, msgpack_ints, msgpack_ints,
              st.lists(st.tuples(st.text(max_size=8), msgpack_ints).map(list), max_size=2)).map(list),
    msgpack_objects), max_size=4)
_bodies = st.one_of(
    st.dictionaries(st.sampled_from(["v", "a", "b", "p", "i", "t", "h", "ver", "m", "n", "tr", "r", "l", "c", "x"]),
                    st.one_of(msgpack_objects, _value_lists,
                              st.lists(st.tuples(st.text(max_size=10), _value_lists).map(list), max_size=3)),
                    max_size=6),
    msgpack_objects)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    msgpack_objects,
    st.tuples(_kinds, msgpack_objects | msgpack_ints, msgpack_objects | msgpack_ints, msgpack_objects | msgpack_ints,
              msgpack_objects | st.text(max_size=30), _bodies).map(list)))
def test_any_msgpack_structure_through_framing_and_decoding(obj: Any) -> None:
    payload = pack(obj)
    dec = FrameDecoder()
    try:
        frames = dec.feed(frame_of(payload))
    except DecodeError:
        return
    assert frames == [payload]
    check_decoder_rule(payload)


# ==================================================================================================
# 2. Decoded requests of random opcodes and fields through nodes.dispatch.answer (hypothesis)

def _sometimes(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``usual``, about one draw in four ``odd`` (so most requests decode and reach the node logic)."""
    return st.integers(0, 3).flatmap(lambda i: odd if i == 3 else usual)


_admin_data = _sometimes(
    st.builds(lambda h, i, p: AdminRef(h, i, AdminPerm(p)).to_bytes(),
              st.sampled_from(["0.NA/88.100", "0.NA/88.200", "88.100/R1", "x/y"]), st.sampled_from([0, 100, 300, 301]),
              st.integers(0, 0xFFF)),
    st.binary(max_size=30))
_site_data = _sometimes(st.just(SiteInfo((Server(1, "127.0.0.1", (Interface("TCP", 1),)),)).to_bytes()),
                       st.binary(max_size=40))
_vlist_data = _sometimes(st.lists(st.tuples(st.sampled_from(["0.NA/88.100", "88.100/R1"]), st.integers(0, 400)),
                                 max_size=3).map(encode_vlist), st.binary(max_size=20))


@st.composite
def _values(draw: st.DrawFn) -> HandleValue:
    vtype = draw(st.sampled_from(["URL", "DESC", "EMAIL", "HS_ADMIN", "HS_SITE", "HS_VLIST", "HS_SECKEY", "x.y"]))
    data = draw({"HS_ADMIN": _admin_data, "HS_SITE": _site_data, "HS_VLIST": _vlist_data}.get(
        vtype, st.binary(max_size=40)))
    index = draw(_sometimes(st.one_of(st.integers(1, 5), st.sampled_from([100, 101, 300, 1001, 2000])),
                            st.integers(-5, 2**31 + 5)))
    ttl = draw(_sometimes(st.sampled_from([0, 60, 86_400]), st.integers(-1, 2**31)))
    return HandleValue(index, vtype, data, ttl, 0, draw(st.integers(0, 15)),
                       tuple(draw(st.lists(st.tuples(st.text(max_size=8), st.integers(-3, 3)), max_size=2))))


_handles = _sometimes(
    st.sampled_from([*SEEDED, "88.100/new", "88.100/NEW", "88.200/x", "0.NA/88.100", "0.NA/88.100.1", "0.na/88.100.1",
                     "0.NA/88.200", "0.NA/88", "88.100", "88.100.1/x", "88.999/x", "88.100/", "/x", "", "88..100/x",
                     "88.100/\x00", "88.100/" + "x" * 300, "88.100.1", "0.NA/88.100.1/x"]),
    st.text(max_size=20))
# Identities: any text, non-ASCII digits and bad percent-escapes included (refused with code 402).
_identities = st.one_of(st.sampled_from([ADMIN, ADMIN2, "300%3A0.NA%2F88.100", "100:0.NA/88.100", "301:0.NA/88.100",
                                         "300:88.100/R1", "0:0.NA/88.100", "99999999999:0.NA/88.100",
                                         "²:0.NA/88.100", "300%3A0.NA%2F88.100%FF", "3¹:0.NA/88.100"]),
                        st.text(max_size=20))
_auth = st.one_of(st.just((ADMIN, SECRET.encode())), st.just((ADMIN, SECRET.encode())), st.none(),
                  st.just((ADMIN2, (SECRET + "-2").encode())),
                  st.tuples(_identities, st.one_of(st.just(SECRET.encode()), st.binary(max_size=40))))
_opcodes = _sometimes(st.sampled_from([1, 2, 100, 101, 102, 103, 104, 105, 106, 150]),
                      st.one_of(st.sampled_from([int(o) for o in OpCode]), msgpack_ints))

dispatch_requests = st.builds(
    Request,
    request_id=st.integers(0, 2**32 - 1),
    opcode=_opcodes,
    handle=_handles,
    flags=_sometimes(st.integers(0, 31), msgpack_ints),
    indexes=st.lists(_sometimes(st.one_of(st.integers(1, 5), st.sampled_from([100, 300])),
                                st.one_of(st.integers(-2, 0), msgpack_ints)), max_size=4).map(tuple),
    types=st.lists(st.one_of(st.sampled_from(["URL", "HS_ADMIN", "HS_SECKEY", "url", ""]), st.text(max_size=8)),
                   max_size=3).map(tuple),
    values=st.lists(_values(), max_size=4).map(tuple),
    auth=_auth,
    items=st.lists(st.tuples(_handles, st.lists(_values(), max_size=3).map(tuple)), max_size=4).map(tuple),
    page=st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 20)),
                   st.tuples(st.integers(-3, 5), st.integers(-3, 2**31))),
    hops=st.integers(0, 50),
    version=_sometimes(st.just(0), msgpack_ints),
)


def _dispatch_case(reqs: list[Request]) -> Counter[int]:
    node = fresh_node()
    codes: Counter[int] = Counter()
    for req in reqs:
        try:
            on_server = decode_message(codec.encode(req))  # only what a peer can really send
        except DecodeError:
            codes[-1] += 1
            continue
        assert isinstance(on_server, Request)
        resp = answer(node, on_server, NOW)
        assert isinstance(resp, Response)
        assert (resp.request_id, resp.opcode) == (req.request_id, req.opcode)
        assert resp.code != ResponseCode.ERROR, f"internal error for {on_server!r}: {resp!r}"
        encoded = codec.encode(resp)  # every answer can be sent
        assert decode_message(encoded) == resp
        assert SECRET not in resp.message  # secrets never echo, whatever the request
        codes[int(resp.code)] += 1
    check_store(node)
    return codes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(dispatch_requests, min_size=1, max_size=5))
def test_random_decoded_requests_always_get_an_answer_and_keep_the_store_sound(reqs: list[Request]) -> None:
    _dispatch_case(reqs)


@pytest.mark.parametrize("identity", ["²:0.NA/88.100", "300%3A0.NA%2F88.100%FF", "3¹:0.NA/88.100"])
def test_malformed_identity_over_the_binary_protocol_is_refused_not_an_internal_error(identity: str) -> None:
    node = fresh_node()
    resp = answer(node, Request(1, OpCode.CREATE_HANDLE, "88.100/x", values=(string_value(1, "URL", "u"),),
                                auth=(identity, SECRET.encode())), NOW)
    assert resp.code == ResponseCode.AUTHENTICATION_FAILED, resp


def test_list_handles_with_a_huge_or_negative_page(tmp_path: Any) -> None:
    from idresolve.store.sqlite import SqliteStore

    node = AuthoritativeNode(SqliteStore(tmp_path / "p.sqlite3"), ["88.100"], name="pages")
    node.bootstrap_record(prefix_record("88.100", SECRET))
    caller = node.authenticate(parse_identity(ADMIN), SECRET.encode())
    for i in range(12):
        node.put_record(f"88.100/P{i:02}", (string_value(1, "URL", "u"),), caller=caller, now=NOW)
    try:
        huge = answer(node, Request(1, OpCode.LIST_HANDLES, "88.100", page=(2**62, 10), auth=(ADMIN, SECRET.encode())),
                      NOW)
        negative = answer(node, Request(2, OpCode.LIST_HANDLES, "88.100", page=(-1, 5),
                                        auth=(ADMIN, SECRET.encode())), NOW)
    finally:
        node.store.close()
    assert huge.code in (ResponseCode.SUCCESS, ResponseCode.PROTOCOL_ERROR) and huge.handles == ()
    assert negative.code == ResponseCode.PROTOCOL_ERROR, negative


@pytest.mark.slow
def test_a_million_mutated_payloads_through_decoder_and_dispatch(long_seed: int) -> None:
    """Long run: 1,000,000 mutations of valid frames through FrameDecoder, decode_message and answer."""
    node = fresh_node()
    corpus = [codec.frame(r) for r in valid_requests("88.100", ADMIN, SECRET.encode())]
    mut = Mutator(corpus, seed=long_seed)
    decoded = answered = 0
    for i in range(1_000_000):
        kind, data = mut.one()
        dec = FrameDecoder()
        try:
            frames = dec.feed(data)
        except DecodeError:
            continue
        for f in frames:
            try:
                msg = decode_message(f)
            except DecodeError:
                continue
            decoded += 1
            if isinstance(msg, Request):
                resp = answer(node, msg, NOW)
                assert resp.code != ResponseCode.ERROR, (i, kind, data, resp)
                answered += 1
        if i % 50_000 == 0:
            check_store(node)
    check_store(node)
    print(f"\n1,000,000 mutated frames: {decoded} decoded, {answered} requests answered, none with an internal error")
    assert decoded > 10_000 and answered > 10_000


@pytest.mark.slow
def test_random_decoded_requests_long(long_seed: int) -> None:
    """Long run: 20,000 random request sequences, in rounds of 2,000 with their own seeds (one hypothesis run
    of 20,000 keeps gigabytes of search state)."""
    for round_seed in range(long_seed * 10, long_seed * 10 + 10):
        @seed(round_seed)
        @settings(max_examples=2_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(dispatch_requests, min_size=1, max_size=8))
        def one_round(reqs: list[Request]) -> None:
            _dispatch_case(reqs)

        one_round()


# ==================================================================================================
# 3. Mutated valid frames over real TCP: an authoritative node and a recursive node


@dataclass
class Nodes:
    auth: HostedAuthoritative
    auth_port: int
    rec: HostedRecursive
    rec_port: int
    corpus: list[bytes] = field(default_factory=list)


@pytest.fixture
async def tcp_nodes() -> AsyncIterator[Nodes]:
    node = fresh_node()
    # Shedding off: the fuzz runs its six clients and both nodes flat out in one event loop, which lags by
    # construction; its checks need each mutated frame's own answer (code 4, an auth refusal, ...), not a
    # code 3 in its place. Shedding under load has its own suite (test_harden_overload.py).
    limits = Limits(idle_timeout_s=5.0, max_frame=256 * 1024)
    auth = HostedAuthoritative(node, HostSettings(limits=limits, shed_lag_s=0))
    a = await auth.start(http=None, tcp=f"{LOOPBACK}:0")
    assert a.tcp is not None
    rec = HostedRecursive(RecursiveNode("rec-fuzz", RecursiveResolver([Upstream("auth", LOOPBACK, a.tcp[1])])),
                          ClientPool(connect_timeout_s=1.0),  # as above: no shedding, no rate limit
                          HostSettings(limits=limits, hop_timeout_s=1.0, shed_lag_s=0, client_rate=None))
    r = await rec.start(http=None, tcp=f"{LOOPBACK}:0")
    assert r.tcp is not None
    corpus = [codec.frame(q) for q in valid_requests("88.100", ADMIN, SECRET.encode())]
    try:
        yield Nodes(auth, a.tcp[1], rec, r.tcp[1], corpus)
    finally:
        await rec.stop()
        await auth.stop()


def expected_answers(data: bytes, max_frame: int) -> int | None:
    """How many answers a server owes for ``data`` (one per complete frame), or None when the framing is
    fatal (the server answers code 4 once and closes; frames before it in the same read may be dropped)."""
    try:
        return len(FrameDecoder(max_frame).feed(data))
    except DecodeError:
        return None


def is_one_whole_frame(data: bytes, max_frame: int) -> bool:
    dec = FrameDecoder(max_frame)
    try:
        return len(dec.feed(data)) == 1 and dec.buffered == 0
    except DecodeError:
        return False


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class FuzzStats:
    rounds: int = 0
    answers: int = 0
    closes: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)


async def mutation_rounds(port: int, corpus: list[bytes], *, seed: int, rounds: int, server: Any,
                          max_frame: int, no_internal_errors: bool, workers: int = 6,
                          answer_bound_s: float = 5.0) -> FuzzStats:
    """``rounds`` connections, each sending 1-4 mutated frames: every owed answer arrives within the bound,
    or (fatal framing) the server answers and closes within it; all it sends are well-formed answers."""
    stats = FuzzStats()
    per_worker = rounds // workers

    async def worker(w: int) -> None:
        mut = Mutator(corpus, seed=seed * 1000 + w)
        for i in range(per_worker):
            parts = [mut.one() for _ in range(mut.rng.randint(1, 4))]
            data = b"".join(p[1] for p in parts)
            kinds = "+".join(p[0] for p in parts)
            owed = expected_answers(data, max_frame)
            conn = await RawBinary.open(port)
            try:
                await conn.send(data)
                if owed is None:
                    got = await conn.read_all(answer_bound_s)  # answered (code 4) and closed
                    assert got and got[-1].code == ResponseCode.PROTOCOL_ERROR, (seed, w, i, kinds, data, got)
                    stats.closes += 1
                else:
                    got = [await conn.frame(answer_bound_s) for _ in range(owed)]
                for resp in got:
                    stats.codes[int(resp.code)] += 1
                    if no_internal_errors:
                        assert resp.code != ResponseCode.ERROR, (seed, w, i, kinds, data, resp)
                stats.answers += len(got)
                stats.rounds += 1
                stats.kinds[kinds.split("+")[0]] += 1
            except (TimeoutError, asyncio.IncompleteReadError) as exc:
                raise AssertionError(f"no answer/close within {answer_bound_s} s: seed={seed} worker={w} round={i} "
                                     f"mutations={kinds} owed={owed} data={data!r}") from exc
            finally:
                await conn.close()
            if i % 100 == 0:
                assert (await good_request_on_a_fresh_connection(port)).code == ResponseCode.SUCCESS
                for proto in list(server.conns.open):  # bounded per connection
                    assert proto.conn.buffered <= max_frame + 4
                    assert proto.inflight <= proto.limits.max_inflight

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return stats


async def test_mutated_frames_to_an_authoritative_node(tcp_nodes: Nodes, caplog: pytest.LogCaptureFixture) -> None:
    server = tcp_nodes.auth.listeners.tcp
    assert server is not None
    rss0 = rss_bytes()
    t0 = time.monotonic()
    stats = await mutation_rounds(tcp_nodes.auth_port, tcp_nodes.corpus, seed=1, rounds=4200, server=server,
                                  max_frame=256 * 1024, no_internal_errors=True)
    elapsed = time.monotonic() - t0
    print(f"\nauthoritative mutation fuzz: {stats.rounds} rounds, {stats.answers} answers, {stats.closes} fatal "
          f"closes in {elapsed:.1f} s; codes {dict(stats.codes)}; mutations {dict(stats.kinds)}")
    assert stats.rounds == 4200
    assert stats.codes[ResponseCode.PROTOCOL_ERROR] > 100 and stats.codes[ResponseCode.SUCCESS] > 30  # it bit
    assert (await good_request_on_a_fresh_connection(tcp_nodes.auth_port)).code == ResponseCode.SUCCESS
    assert await all_connections_gone(server)
    assert rss_bytes() - rss0 < 200 * 1024 * 1024  # memory bounded (generous: allocator noise)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("idresolve")]
    check_store(tcp_nodes.auth.node)


async def test_mutated_frames_to_a_recursive_node(tcp_nodes: Nodes) -> None:
    server = tcp_nodes.rec.listeners.tcp
    assert server is not None
    stats = await mutation_rounds(tcp_nodes.rec_port, tcp_nodes.corpus, seed=2, rounds=900, server=server,
                                  max_frame=256 * 1024, no_internal_errors=False)
    print(f"\nrecursive mutation fuzz: {stats.rounds} rounds, {stats.answers} answers, {stats.closes} fatal closes; "
          f"codes {dict(stats.codes)}")
    assert stats.rounds == 900
    assert stats.codes[ResponseCode.PROTOCOL_ERROR] > 50 and stats.codes[ResponseCode.OPERATION_NOT_SUPPORTED] > 10
    assert (await good_request_on_a_fresh_connection(tcp_nodes.rec_port)).code == ResponseCode.SUCCESS
    assert await all_connections_gone(server)


async def test_many_mutated_frames_pipelined_on_one_connection(tcp_nodes: Nodes) -> None:
    """One long-lived connection: 3,000 mutated frames whose framing stays sound, all pipelined in one write;
    every one is answered exactly once (well-formed, no internal error), and the node serves others after."""
    mut = Mutator(tcp_nodes.corpus, seed=3)
    chosen: list[bytes] = []
    while len(chosen) < 3000:
        _, data = mut.one()
        if is_one_whole_frame(data, 256 * 1024):
            chosen.append(data)
    conn = await RawBinary.open(tcp_nodes.auth_port)
    try:
        await conn.send(b"".join(chosen))
        got = [await conn.frame() for _ in range(len(chosen))]
    finally:
        await conn.close()
    assert len(got) == 3000
    assert all(r.code != ResponseCode.ERROR for r in got), [r for r in got if r.code == ResponseCode.ERROR][:3]
    assert Counter(r.code for r in got)[ResponseCode.PROTOCOL_ERROR] < 3000  # not all garbage: some were served
    assert (await good_request_on_a_fresh_connection(tcp_nodes.auth_port)).code == ResponseCode.SUCCESS


@pytest.mark.slow
async def test_mutated_frames_long(tcp_nodes: Nodes, long_seed: int) -> None:
    server = tcp_nodes.auth.listeners.tcp
    stats = await mutation_rounds(tcp_nodes.auth_port, tcp_nodes.corpus, seed=long_seed, rounds=200_000, server=server,
                                  max_frame=256 * 1024, no_internal_errors=True, workers=8)
    assert await all_connections_gone(server)
    rserver = tcp_nodes.rec.listeners.tcp
    rstats = await mutation_rounds(tcp_nodes.rec_port, tcp_nodes.corpus, seed=long_seed + 1, rounds=50_000, server=rserver,
                                   max_frame=256 * 1024, no_internal_errors=False, workers=8)
    print(f"\nlong mutation fuzz: {stats.rounds} rounds ({stats.answers} answers, codes {dict(stats.codes)}) + "
          f"{rstats.rounds} recursive rounds ({rstats.answers} answers, codes {dict(rstats.codes)})")
    assert await all_connections_gone(rserver)
    assert server.conns.count <= 1  # the recursive node's own upstream connection


def test_fuzz_corpus_is_valid() -> None:
    """The mutation corpus itself is well formed: every frame decodes to the request it was made from."""
    reqs = valid_requests("88.100", ADMIN, SECRET.encode())
    for req in reqs:
        payload = codec.encode(req)
        assert decode_message(payload) == req
        assert struct.unpack(">I", codec.frame(req)[:4])[0] == len(payload)
    assert len({r.opcode for r in reqs}) >= 10
    assert msgpack.unpackb(pack([1, b"x"]), raw=False) == [1, b"x"]
    assert MAX_FRAME_BYTES >= 256 * 1024
