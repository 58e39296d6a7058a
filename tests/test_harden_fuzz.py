"""Hostile input: the decoder rule under arbitrary bytes and structures, the binary dispatch under random
decoded requests, mutated frames over real TCP to an authoritative and a recursive node, REST fuzzing of a
live node, and slow clients (slowloris, half-open, idle, connection and in-flight limits).

CI runs bounded versions (a few seconds each); ``@pytest.mark.slow`` versions run a million cases and more
(IDRESOLVE_LONG=1). Every random generator is seeded; a failure names its seed and case. Network: 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
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

import idresolve.hosting as hosting
from conftest import SECRET as LIVE_SECRET
from conftest import LiveNode
from fuzzutil import (
    LOOPBACK,
    Mutator,
    RawBinary,
    contains_any,
    frame_of,
    http_exchange,
    http_request,
    msgpack_ints,
    msgpack_objects,
    pack,
    valid_requests,
)
from idresolve.core.admin import AdminPerm, AdminRef
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.errors import DecodeError, HandleError
from idresolve.core.handles import fold
from idresolve.core.records import Record
from idresolve.core.site import Interface, Server, SiteInfo
from idresolve.core.values import HandleValue, encode_vlist, string_value
from idresolve.core.wire import (
    MAX_FRAME_BYTES,
    Codec,
    FrameDecoder,
    Request,
    Response,
    decode_message,
)
from idresolve.hosting import HostedAuthoritative, HostedRecursive
from idresolve.net.client import ClientPool
from idresolve.net.server import Limits
from idresolve.net.services import RecursiveService
from idresolve.nodes.auth import parse_identity
from idresolve.nodes.authoritative import AuthoritativeNode
from idresolve.nodes.bootstrap import prefix_record
from idresolve.nodes.dispatch import answer
from idresolve.nodes.recursive import RecursiveResolver, Target
from idresolve.store.memory import MemoryStore

SECRET = "harden-fuzz-secret"
ADMIN = "300:0.NA/88.100"
ADMIN2 = "300:0.NA/88.200"
NOW = 1_700_000_000.0
codec = Codec()
SEEDED = {f"88.100/R{i}": (string_value(1, "URL", f"https://r{i}.example"), string_value(2, "DESC", f"record {i}"))
          for i in range(1, 6)}


def fresh_node() -> AuthoritativeNode:
    node = AuthoritativeNode(MemoryStore(), ["88.100", "88.200"], name="fuzz")
    node.bootstrap_record(prefix_record("88.100", SECRET))
    node.bootstrap_record(prefix_record("88.200", SECRET + "-2"))
    caller = node.authenticate(parse_identity(ADMIN), SECRET.encode())
    for h, vals in SEEDED.items():
        node.put_record(h, vals, caller=caller, now=NOW)
    return node


def check_decoder_rule(payload: bytes) -> None:
    """decode_message returns a message or raises DecodeError; a decoded message re-encodes to itself."""
    try:
        msg = decode_message(payload)
    except DecodeError:
        return
    assert isinstance(msg, Request | Response)
    assert decode_message(codec.encode(msg)) == msg


def known_identity_bug(req: Request) -> bool:
    """The request carries an identity that hits the known parse_identity bug (xfail test below): it is
    answered with code 2 instead of 403. Fuzz oracles set such requests aside rather than stop on them."""
    if req.auth is None:
        return False
    try:
        parse_identity(req.auth[0])
    except HandleError:  # AuthenticationFailed: the right answer
        return False
    except ValueError:  # int('²'), or UnicodeDecodeError from a bad %-escape: the bug
        return True
    return False


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
# Identities: printable ASCII (non-ASCII digits and bad percent-escapes are a known bug, tested below).
_identities = st.one_of(st.sampled_from([ADMIN, ADMIN2, "300%3A0.NA%2F88.100", "100:0.NA/88.100", "301:0.NA/88.100",
                                         "300:88.100/R1", "0:0.NA/88.100", "99999999999:0.NA/88.100"]),
                        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20))
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
        if known_identity_bug(on_server):
            codes[-2] += 1
            continue
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
def test_a_million_mutated_payloads_through_decoder_and_dispatch() -> None:
    """Long run: 1,000,000 mutations of valid frames through FrameDecoder, decode_message and answer."""
    node = fresh_node()
    corpus = [codec.frame(r) for r in valid_requests("88.100", ADMIN, SECRET.encode())]
    mut = Mutator(corpus, seed=20240601)
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
                assert resp.code != ResponseCode.ERROR or known_identity_bug(msg), (i, kind, data, resp)
                answered += 1
        if i % 50_000 == 0:
            check_store(node)
    check_store(node)
    print(f"\n1,000,000 mutated frames: {decoded} decoded, {answered} requests answered, none with an internal error")
    assert decoded > 10_000 and answered > 10_000


@pytest.mark.slow
def test_random_decoded_requests_long() -> None:
    """Long run: 20,000 random request sequences, in rounds of 2,000 with their own seeds (one hypothesis run
    of 20,000 keeps gigabytes of search state)."""
    for round_seed in range(10):
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
    auth = HostedAuthoritative(node, limits=Limits(idle_timeout_s=5.0, max_frame=256 * 1024), shed_lag_s=0)
    a = await auth.start(http=None, tcp=f"{LOOPBACK}:0")
    assert a.tcp is not None
    service = RecursiveService("rec-fuzz", RecursiveResolver([Target("auth", LOOPBACK, a.tcp[1])]),
                               ClientPool(connect_timeout_s=1.0), hop_timeout_s=1.0, client_rate=None)
    service.admission = None
    rec = HostedRecursive(service, limits=Limits(idle_timeout_s=5.0, max_frame=256 * 1024))
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


def _requests_in(data: bytes, max_frame: int) -> list[Request]:
    out = []
    with contextlib.suppress(DecodeError):
        for f in FrameDecoder(max_frame).feed(data):
            with contextlib.suppress(DecodeError):
                msg = decode_message(f)
                if isinstance(msg, Request):
                    out.append(msg)
    return out


def is_one_whole_frame(data: bytes, max_frame: int) -> bool:
    dec = FrameDecoder(max_frame)
    try:
        return len(dec.feed(data)) == 1 and dec.buffered == 0
    except DecodeError:
        return False


async def good_request_on_a_fresh_connection(port: int) -> Response:
    conn = await RawBinary.open(port)
    try:
        return await conn.request(Request(777, OpCode.RESOLUTION, "88.100/R1"))
    finally:
        await conn.close()


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
            known = any(known_identity_bug(m) for m in _requests_in(data, max_frame))
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
                    if no_internal_errors and not known:
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
                    assert proto.decoder.buffered <= max_frame + 4
                    assert proto.inflight <= proto.limits.max_inflight

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return stats


async def all_connections_gone(server: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.conns.count == 0:
            return True
        await asyncio.sleep(0.01)  # the server notices closes asynchronously: bounded poll
    return server.conns.count == 0


async def test_mutated_frames_to_an_authoritative_node(tcp_nodes: Nodes, caplog: pytest.LogCaptureFixture) -> None:
    server = tcp_nodes.auth._listeners.tcp
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
    server = tcp_nodes.rec._listeners.tcp
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
    known = {m.request_id for d in chosen for m in _requests_in(d, 256 * 1024) if known_identity_bug(m)}
    assert all(r.code != ResponseCode.ERROR or r.request_id in known for r in got)
    assert Counter(r.code for r in got)[ResponseCode.PROTOCOL_ERROR] < 3000  # not all garbage: some were served
    assert (await good_request_on_a_fresh_connection(tcp_nodes.auth_port)).code == ResponseCode.SUCCESS


@pytest.mark.slow
async def test_mutated_frames_long(tcp_nodes: Nodes) -> None:
    server = tcp_nodes.auth._listeners.tcp
    stats = await mutation_rounds(tcp_nodes.auth_port, tcp_nodes.corpus, seed=11, rounds=200_000, server=server,
                                  max_frame=256 * 1024, no_internal_errors=True, workers=8)
    assert await all_connections_gone(server)
    rserver = tcp_nodes.rec._listeners.tcp
    rstats = await mutation_rounds(tcp_nodes.rec_port, tcp_nodes.corpus, seed=12, rounds=50_000, server=rserver,
                                   max_frame=256 * 1024, no_internal_errors=False, workers=8)
    print(f"\nlong mutation fuzz: {stats.rounds} rounds ({stats.answers} answers, codes {dict(stats.codes)}) + "
          f"{rstats.rounds} recursive rounds ({rstats.answers} answers, codes {dict(rstats.codes)})")
    assert await all_connections_gone(rserver)
    assert server.conns.count <= 1  # the recursive node's own upstream connection


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
    # No Content-Encoding here: a body that does not match it is a known bug with its own xfail tests.
    body = _body(rng) if method.upper() in ("PUT", "POST", "DELETE", "PATCH") or rng.random() < 0.1 else None
    length: int | None = None
    if body is not None and rng.random() < 0.05:
        # Never a Content-Length above the body: a body that stops short is the slow-body case, with its own
        # tests (it holds an authenticated handler for ever, a known bug).
        length = rng.choice([0, len(body) // 2, 2**40])
    raw_target: str | bytes = target
    if rng.random() < 0.05:
        raw_target = target.encode("utf-8", "surrogateescape") + bytes([rng.randrange(128, 256)])
    desc = f"{method} {target[:200]!r} auth={str(auth)[:40]!r} headers={[h[0] for h in headers]} " \
           f"body={None if body is None else body[:120]!r} len={length} te={chunked}"
    if chunked is not None:
        # A chunked body always ends (an unterminated one is the slow-body case of the slow-client tests);
        # its chunks may be malformed.
        payload = body or b""
        size = rng.choice([f"{len(payload):x}", f"{len(payload):X}", "zz", "-1", "0x10", f"{len(payload):x};ext=1"])
        framed = (f"{size}\r\n".encode() + payload + b"\r\n" if payload else b"") + b"0\r\n\r\n"
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


async def test_rest_fuzz_against_a_live_node(live_node: LiveNode, caplog: pytest.LogCaptureFixture) -> None:
    port = _port_of(live_node.url)
    seed = await http_exchange(port, http_request("PUT", "/api/handles/88.100/F1", headers=[
        ("Authorization", _basic("300%3A0.NA%2F88.100", LIVE_SECRET)), ("Content-Type", "application/json")],
        body=b'{"values":[{"index":1,"type":"URL","data":"https://f1.example"}]}'))
    assert seed is not None and seed.status == 201
    t0 = time.monotonic()
    caplog.set_level(logging.WARNING)
    stats = await rest_fuzz(port, seed=5, count=4000, secrets=[LIVE_SECRET])
    print(f"\nREST fuzz: {stats.sent} requests in {time.monotonic() - t0:.1f} s, {stats.no_answer} closed without "
          f"an answer; statuses {dict(sorted(stats.statuses.items()))}; codes {dict(sorted(stats.codes.items()))}")
    assert stats.sent == 4000
    assert stats.statuses[400] > 100 and stats.statuses[200] + stats.statuses[201] > 20  # it bit, both ways
    assert stats.no_answer < stats.sent // 10
    await node_still_serves(port)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and not _known_bad_request_log(r)]
    assert not errors, [f"{r.name}: {r.getMessage()} {r.exc_info!r}" for r in errors[:5]]
    print(f"aiohttp bad-request tracebacks logged at ERROR: {sum(map(_known_bad_request_log, caplog.records))}")


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


def _known_bad_request_log(record: logging.LogRecord) -> bool:
    """aiohttp's ERROR traceback for an unparsable request that hosting's filter misses (a known bug with its
    own xfail test below)."""
    from aiohttp.http_exceptions import HttpProcessingError

    exc = record.exc_info[1] if record.exc_info else None
    return record.name == "aiohttp.server" and (isinstance(exc, HttpProcessingError)
                                                or type(exc).__name__ == "RequestPayloadError")


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
async def test_rest_fuzz_long(live_node: LiveNode) -> None:
    port = _port_of(live_node.url)
    stats = await rest_fuzz(port, seed=55, count=100_000, secrets=[LIVE_SECRET], concurrency=16)
    print(f"\nlong REST fuzz: {stats.sent} requests; statuses {dict(stats.statuses)}")
    await node_still_serves(port)


# ==================================================================================================
# 5. Slow clients: slowloris, half-open and idle connections, connection and in-flight limits

IDLE_S = 0.4


@dataclass
class Slow:
    hosted: HostedAuthoritative
    http_port: int
    tcp_port: int

    @property
    def conns(self) -> Any:
        server = self.hosted._listeners.tcp
        assert server is not None
        return server.conns


@pytest.fixture
async def slow(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Slow]:
    monkeypatch.setattr(hosting, "HTTP_IDLE_TIMEOUT_S", IDLE_S)
    node = fresh_node()
    caller = node.authenticate(parse_identity(ADMIN), SECRET.encode())
    node.put_record("88.100/BIG", [string_value(i, "DESC", "z" * 4000) for i in range(1, 16)], caller=caller, now=NOW)
    hosted = HostedAuthoritative(node, limits=Limits(idle_timeout_s=IDLE_S, max_connections=8), shed_lag_s=0)
    addrs = await hosted.start(http=f"{LOOPBACK}:0", tcp=f"{LOOPBACK}:0")
    assert addrs.http is not None and addrs.tcp is not None
    try:
        yield Slow(hosted, addrs.http[1], addrs.tcp[1])
    finally:
        await hosted.stop()


async def dribble_until_closed(conn: RawBinary, data: bytes, *, every_s: float, limit_s: float) -> float | None:
    """Send ``data`` a byte at a time every ``every_s``; seconds until the server closed, or None."""
    t0 = time.monotonic()
    for i in range(len(data)):
        if time.monotonic() - t0 > limit_s:
            return None
        try:
            conn.writer.write(data[i : i + 1])
            await conn.writer.drain()
        except ConnectionError:
            return time.monotonic() - t0
        try:
            chunk = await asyncio.wait_for(conn.reader.read(65536), every_s)
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - t0
        if chunk == b"":
            return time.monotonic() - t0
    return None


HTTP_PARTIAL = b"GET /api/handles/88.100/R1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 200


async def test_http_slowloris_partial_headers_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        closed = await dribble_until_closed(conn, HTTP_PARTIAL, every_s=IDLE_S / 4, limit_s=8 * IDLE_S)
    finally:
        await conn.close()
    assert closed is not None, "a dribbling HTTP client was never closed"
    assert IDLE_S * 0.8 <= closed <= 5 * IDLE_S, closed


async def test_http_partial_request_line_then_silence_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        await conn.send(b"GET /api/hand")
        t0 = time.monotonic()
        assert await conn.closed_by_peer(8 * IDLE_S)
        assert time.monotonic() - t0 <= 5 * IDLE_S
    finally:
        await conn.close()


async def test_http_idle_keepalive_connection_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        await conn.send(b"GET /api/handles/88.100/R1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert await conn.closed_by_peer(8 * IDLE_S)  # reads the body, then the close
        assert time.monotonic() - t0 <= 5 * IDLE_S
    finally:
        await conn.close()


def _put_head(length: int) -> bytes:
    auth = base64.b64encode(f"{ADMIN}:{SECRET}".encode()).decode()
    return (f"PUT /api/handles/88.100/slowbody HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


SLOW_BODY = b'{"values":[{"index":1,"type":"URL","data":"' + b"b" * 200 + b'"}]}'


async def test_http_slow_body_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.http_port)
    try:
        await conn.send(_put_head(len(SLOW_BODY)))
        closed = await dribble_until_closed(conn, SLOW_BODY[:-1], every_s=IDLE_S / 4, limit_s=6 * IDLE_S)
    finally:
        await conn.close()
    assert closed is not None and closed <= 5 * IDLE_S, closed


async def _http_connections(slow: Slow) -> int:
    runner = slow.hosted._listeners.runner
    assert runner is not None and runner.server is not None
    return len(runner.server.connections)


async def test_http_client_gone_mid_body_logs_no_internal_error(slow: Slow, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    conn = await RawBinary.open(slow.http_port)
    await conn.send(_put_head(len(SLOW_BODY)) + SLOW_BODY[:20])
    deadline = time.monotonic() + 5
    while await _http_connections(slow) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # bounded: until the server has the request
    conn.writer.transport.abort()
    while await _http_connections(slow) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # bounded: until the server let go of it
    assert await _http_connections(slow) == 0
    grace = time.monotonic() + 1.0
    while time.monotonic() < grace and not any(r.levelno >= logging.ERROR for r in caplog.records):
        await asyncio.sleep(0.01)  # bounded: the handler learns of the reset a little after the close
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_binary_partial_frame_then_silence_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.tcp_port)
    try:
        await conn.send(codec.frame(Request(1, OpCode.RESOLUTION, "88.100/R1"))[:7])
        t0 = time.monotonic()
        assert await conn.closed_by_peer(8 * IDLE_S)
        assert time.monotonic() - t0 <= 4 * IDLE_S
    finally:
        await conn.close()


async def test_binary_slowloris_partial_frame_is_closed(slow: Slow) -> None:
    conn = await RawBinary.open(slow.tcp_port)
    frame = codec.frame(Request(1, OpCode.RESOLUTION, "88.100/R1" + "x" * 60))
    try:
        closed = await dribble_until_closed(conn, frame[:-1], every_s=IDLE_S / 4, limit_s=6 * IDLE_S)
    finally:
        await conn.close()
    assert closed is not None and closed <= 5 * IDLE_S, closed


async def test_binary_half_closed_client_gets_its_answers_then_the_close(slow: Slow) -> None:
    conn = await RawBinary.open(slow.tcp_port)
    try:
        await conn.send(b"".join(codec.frame(Request(i, OpCode.RESOLUTION, "88.100/R1")) for i in range(5)))
        conn.writer.write_eof()
        t0 = time.monotonic()
        got = await conn.read_all(5.0)
        assert sorted(r.request_id for r in got) == list(range(5))
        assert all(r.code == ResponseCode.SUCCESS for r in got)
        assert time.monotonic() - t0 < 1.75 * IDLE_S  # before an idle close (>= 2 periods): the EOF closed it
    finally:
        await conn.close()


async def _pipelined_without_reading(slow: Slow, n: int) -> RawBinary:
    conn = await RawBinary.open(slow.tcp_port)
    conn.writer.transport.pause_reading()  # a peer that never reads its answers
    req = b"".join(codec.frame(Request(i, OpCode.RESOLUTION, "88.100/BIG")) for i in range(n))
    conn.writer.write(req)
    return conn


def _max_write_buffer(slow: Slow) -> int:
    return max((p.transport.get_write_buffer_size() for p in slow.conns.open if p.transport is not None), default=0)


async def test_binary_peer_that_does_not_read_cannot_grow_the_write_buffer(slow: Slow) -> None:
    conn = await _pipelined_without_reading(slow, 400)
    try:
        peak = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:  # bounded observation
            peak = max(peak, _max_write_buffer(slow))
            await asyncio.sleep(0.01)
        assert peak <= 8 * 1024 * 1024, f"write buffer reached {peak} bytes"
    finally:
        conn.writer.transport.abort()
        await conn.close()


async def test_binary_peer_that_never_reads_is_dropped_after_the_idle_timeout(slow: Slow) -> None:
    conn = await _pipelined_without_reading(slow, 300)
    try:
        deadline = time.monotonic() + 6 * IDLE_S
        while slow.conns.count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # bounded: the idle check runs every IDLE_S
        assert slow.conns.count == 0, f"{slow.conns.count} connection(s) still held"
    finally:
        conn.writer.transport.abort()
        await conn.close()


async def test_connections_per_server_are_bounded_under_a_burst(slow: Slow) -> None:
    limit = 8  # Limits(max_connections=8) in the fixture
    conns = await asyncio.gather(*(RawBinary.open(slow.tcp_port) for _ in range(3 * limit)))
    try:
        async def outcome(c: RawBinary) -> str:
            try:
                await c.send(codec.frame(Request(5, OpCode.RESOLUTION, "88.100/R1")))
                return "answered" if (await c.frame(3.0)).code == ResponseCode.SUCCESS else "other"
            except (asyncio.IncompleteReadError, ConnectionError):
                return "closed"

        results = Counter(await asyncio.gather(*(outcome(c) for c in conns)))
        assert results["answered"] == limit and results["closed"] == 2 * limit, results
        assert slow.conns.count <= limit + 2 * limit  # the refused ones are on their way out
    finally:
        for c in conns:
            await c.close()
    assert await all_connections_gone(slow.hosted._listeners.tcp)
    assert (await good_request_on_a_fresh_connection(slow.tcp_port)).code == ResponseCode.SUCCESS


async def test_inflight_requests_are_bounded_per_connection() -> None:
    """A recursive node whose only root never answers: beyond max_inflight on one connection, code 3 at once;
    another connection has its own budget."""
    transports: list[asyncio.BaseTransport] = []

    class Hole(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)

    loop = asyncio.get_running_loop()
    hole = await loop.create_server(Hole, LOOPBACK, 0)
    hole_port = hole.sockets[0].getsockname()[1]
    service = RecursiveService("rec-inflight", RecursiveResolver([Target("hole", LOOPBACK, hole_port)]),
                               ClientPool(connect_timeout_s=1.0), hop_timeout_s=0.5, client_rate=None)
    rec = HostedRecursive(service, limits=Limits(max_inflight=3))
    addrs = await rec.start(http=None, tcp=f"{LOOPBACK}:0")
    assert addrs.tcp is not None
    a = await RawBinary.open(addrs.tcp[1])
    b = await RawBinary.open(addrs.tcp[1])
    try:
        t0 = time.monotonic()
        await a.send(b"".join(codec.frame(Request(i, OpCode.RESOLUTION, f"88.118.8/A{i}")) for i in range(7)))
        await b.send(b"".join(codec.frame(Request(100 + i, OpCode.RESOLUTION, f"88.118.8/B{i}")) for i in range(3)))
        first_a = [await a.frame() for _ in range(4)]
        busy_s = time.monotonic() - t0
        assert sorted(r.request_id for r in first_a) == [3, 4, 5, 6]
        assert all(r.code == ResponseCode.SERVER_TOO_BUSY for r in first_a)
        assert busy_s < 0.5  # before any upstream timeout: refused at once
        rest_a = [await a.frame() for _ in range(3)]
        got_b = [await b.frame() for _ in range(3)]
        assert sorted(r.request_id for r in rest_a) == [0, 1, 2]
        assert sorted(r.request_id for r in got_b) == [100, 101, 102]
        assert all(r.code == ResponseCode.ERROR for r in rest_a + got_b)  # the silent root timed out
    finally:
        await a.close()
        await b.close()
        await rec.stop()
        hole.close()
        for t in transports:
            t.close()
        await hole.wait_closed()


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
