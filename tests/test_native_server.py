"""Every captured request of tests/data/handle-wire/, sent to a live idresolve node on loopback (port 0),
gets an answer of the captured answer's shape: envelope, header, opcode, response code, flags, body layout.

The node holds what the recorded server held (``88.100/test1``, ``88.100/ADMIN`` with its HS_SECKEY
``secret``). Resolutions are sent byte for byte and their answers compared whole but for the fields that
are legitimately fresh (expiration, signatures). The administration flows are replayed with the fresh
parts made anew: challenge answers signed for our nonce (same form, same salt), session set-up with our
own Diffie-Hellman key (the recording's private value is unknown), session MACs under our session key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from idresolve.core.admin import ALL_PERMS
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.native import (
    Challenge,
    ChallengeAnswer,
    CreateResponse,
    EmptyBody,
    ErrorBody,
    HandleValues,
    Message,
    OpFlag,
    SessionSetupResponse,
    SiteInfoBody,
    check_certified,
    decode_message,
    encode_dh_public,
    encode_message,
    make_secret_response,
    sign_for_session,
)
from idresolve.core.native import session as dh
from idresolve.core.native.keys import decode_public_key
from idresolve.core.records import Record
from idresolve.core.values import HandleValue, admin_value
from idresolve.runtime.hosted import HostedAuthoritative, authoritative_host
from idresolve.runtime.listeners import NativeOptions
from idresolve.runtime.serverkey import generate_key
from idresolve.store import MemoryStore
from nativeutil import captured, exchanges

SECRET = b"secret"
KEY = generate_key()


@dataclass
class Node:
    hosted: HostedAuthoritative
    host: str
    port: int


async def _node(prefix: str, *, records: tuple[Record, ...] = ()) -> Node:
    hosted = authoritative_host("t", MemoryStore(), [prefix], "admin-secret")
    for r in records:
        hosted.node.bootstrap_record(r)
    addrs = await hosted.start(http=None, handle="127.0.0.1:0", native=NativeOptions(KEY))
    assert addrs.handle is not None
    return Node(hosted, *addrs.handle)


def recorded_records() -> tuple[Record, ...]:
    """What the recorded server held: 88.100/test1 as it answered it, 88.100/ADMIN with its key, and the
    prefix record granting 88.100/ADMIN the right to create handles."""
    test1 = captured("02-resolve-tcp")[1].message.body
    admin = captured("10-resolve-restricted-value")[1].message.body
    assert isinstance(test1, HandleValues) and isinstance(admin, HandleValues)
    seckey = HandleValue(300, "HS_SECKEY", SECRET, perms=0b1100)
    prefix = Record("0.NA/88.100", (admin_value(100, "0.NA/88.100", 300, ALL_PERMS),
                                    admin_value(101, "88.100/ADMIN", 300, ALL_PERMS)))
    return (Record("88.100/test1", test1.values), Record("88.100/ADMIN", (*admin.values, seckey)), prefix)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = await _node("88.100", records=recorded_records())
    try:
        yield n
    finally:
        await n.hosted.stop()


# -- moving messages ------------------------------------------------------------------------------------

async def tcp_exchange(n: Node, data: bytes) -> Message:
    """One message over a new TCP connection (as Handle.Net's tools do), its answer."""
    reader, writer = await asyncio.open_connection(n.host, n.port)
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readexactly(20), 10)
        rest = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[16:20], "big")), 10)
        return decode_message(head + rest)
    finally:
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def udp_exchange(n: Node, datagrams: tuple[bytes, ...] | list[bytes]) -> list[bytes]:
    """The datagrams of a message, and the datagrams of its answer (as many as its envelope announces)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Udp, remote_addr=(n.host, n.port))
    try:
        for d in datagrams:
            transport.sendto(d)
        first = await asyncio.wait_for(proto.got.get(), 10)
        count = -(-int.from_bytes(first[16:20], "big") // 492)
        return [first] + [await asyncio.wait_for(proto.got.get(), 10) for _ in range(count - 1)]
    finally:
        transport.close()


def joined(datagrams: list[bytes]) -> bytes:
    return datagrams[0][:20] + b"".join(d[20:] for d in sorted(datagrams, key=lambda d: d[12:16]))


def _expiration_free(raw: bytes) -> bytes:
    """A whole answer with its header's expiration time zeroed (the only field fresh in every answer)."""
    return raw[:36] + bytes(4) + raw[40:]


def same_shape(ours: Message, theirs: Message) -> None:
    e1, e2, h1, h2 = ours.envelope, theirs.envelope, ours.header, theirs.header
    assert (e1.major, e1.minor, e1.flags, e1.suggested, e1.request_id) == (
        e2.major, e2.minor, e2.flags, e2.suggested, e2.request_id)
    assert (h1.opcode, h1.code, h1.op_flags, h1.recursion) == (h2.opcode, h2.code, h2.op_flags, h2.recursion)
    assert type(ours.body) is type(theirs.body)
    assert (ours.digest is None) == (theirs.digest is None)
    assert (ours.credential is None) == (theirs.credential is None)


# -- resolutions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["01-resolve-udp", "02-resolve-tcp", "03-resolve-type-filter", "04-resolve-not-found",
                                  "10-resolve-restricted-value", "11-resolve-index-filter"])
async def test_captured_resolutions_get_the_captured_answer(node: Node, name: str) -> None:
    request, answer = exchanges(name)[0]
    for _ in range(2):  # the second time from the node's answer cache
        if request.transport == "udp":
            got = await udp_exchange(node, request.datagrams)
            assert len(got) == len(answer.datagrams)  # split, not truncated, as the reference does
            raw = joined(got)
        else:
            raw = encode_message(await tcp_exchange(node, request.raw))
        assert _expiration_free(raw) == _expiration_free(answer.raw)


async def test_captured_certified_resolution_is_signed_by_the_node(node: Node) -> None:
    request, answer = exchanges("12-resolve-certified")[0]
    got = decode_message(joined(await udp_exchange(node, request.datagrams)))
    same_shape(got, answer.message)
    assert got.header.has(OpFlag.CT) and got.body == answer.message.body
    assert got.credential is not None and got.credential.type == "HS_SIGNED" and got.credential.alg == "SHA-256"
    assert check_certified(got, KEY.public_key())


async def test_captured_site_info_request_gets_the_nodes_site(node: Node) -> None:
    request, answer = exchanges("05-get-siteinfo")[0]
    got = await tcp_exchange(node, request.raw)
    same_shape(got, answer.message)
    assert isinstance(got.body, SiteInfoBody)
    server = got.body.site.servers[0]
    assert [(i.protocol, i.port) for i in server.interfaces] == [("TCP", node.port), ("UDP", node.port)]
    assert decode_public_key(server.public_key).public_numbers() == KEY.public_key().public_numbers()


async def test_captured_resolution_of_a_prefix_not_here() -> None:
    request, answer = exchanges("09-resolve-prefix-not-here")[0]
    other = await _node("88.200")  # the recorded server did not serve 0.NA/88.100: neither does this one
    try:
        got = decode_message(joined(await udp_exchange(other, request.datagrams)))
    finally:
        await other.hosted.stop()
    same_shape(got, answer.message)
    assert got.body == answer.message.body == ErrorBody("That prefix doesn't live here")


# -- administration ---------------------------------------------------------------------------------------

def challenge_answer(captured_answer: Message, challenge: Message) -> bytes:
    """The captured challenge answer, for our challenge: its session id, a PBKDF2 answer with its salt."""
    body = captured_answer.body
    assert isinstance(body, ChallengeAnswer) and isinstance(challenge.body, Challenge) and challenge.digest
    salt = body.signed_response[5:5 + int.from_bytes(body.signed_response[1:5], "big")]
    signed = make_secret_response(SECRET, challenge.body.nonce, challenge.digest.digest, salt=salt)
    msg = replace(captured_answer, envelope=replace(captured_answer.envelope, session_id=challenge.envelope.session_id),
                  body=replace(body, signed_response=signed), wire=b"")
    return encode_message(msg)


async def _challenged(n: Node, request: Message, captured_challenge: Message, captured_answer: Message,
                      captured_final: Message, data: bytes) -> Message:
    """Send a request the node must challenge, answer the challenge on a new connection; the final answer."""
    challenge = await tcp_exchange(n, data)
    same_shape(challenge, captured_challenge)
    assert challenge.digest is not None and challenge.digest.alg == captured_challenge.digest.alg  # type: ignore[union-attr]
    final = await tcp_exchange(n, challenge_answer(captured_answer, challenge))
    same_shape(final, captured_final)
    return final


async def test_create_and_delete_challenged_outside_a_session(node: Node) -> None:
    msgs = [c.message for c in captured("08-create-delete-auth-nosession")]
    for i in (0, 4):  # create 88.100/test3, then delete it
        request = captured("08-create-delete-auth-nosession")[i]
        challenge = await tcp_exchange(node, request.raw)
        same_shape(challenge, msgs[i + 1])
        assert challenge.digest == msgs[i + 1].digest  # the same request bytes: the same request digest
        assert challenge.envelope.session_id != 0  # a fresh id names the challenge
        final = await tcp_exchange(node, challenge_answer(msgs[i + 2], challenge))
        same_shape(final, msgs[i + 3])
        assert final.envelope.session_id == 0 and final.body == msgs[i + 3].body
    assert node.hosted.node.store.get("88.100/test3") is None


async def test_a_wrong_challenge_answer_is_refused_and_writes_nothing(node: Node) -> None:
    msgs = [c.message for c in captured("08-create-delete-auth-nosession")]
    challenge = await tcp_exchange(node, captured("08-create-delete-auth-nosession")[0].raw)
    body = msgs[2].body
    assert isinstance(body, ChallengeAnswer) and isinstance(challenge.body, Challenge)
    wrong = make_secret_response(b"Secret", challenge.body.nonce, challenge.digest.digest, salt=b"s" * 16)  # type: ignore[union-attr]
    answer = replace(msgs[2], envelope=replace(msgs[2].envelope, session_id=challenge.envelope.session_id),
                     body=replace(body, signed_response=wrong), wire=b"")
    final = await tcp_exchange(node, encode_message(answer))
    assert final.header.code == ResponseCode.AUTHENTICATION_FAILED
    assert node.hosted.node.store.get("88.100/test3") is None
    # Not answered: the challenge still waits for the right answer.
    final = await tcp_exchange(node, challenge_answer(msgs[2], challenge))
    assert final.header.code == ResponseCode.SUCCESS


def _with_session(msg: Message, session_id: int, key: bytes | None, counter: int) -> bytes:
    moved = replace(msg, envelope=replace(msg.envelope, session_id=session_id), credential=None, wire=b"")
    return encode_message(sign_for_session(moved, key, counter) if key is not None else moved)


async def _session(n: Node, setup: Message, captured_answer: Message) -> tuple[int, bytes]:
    """Set up a session as the captured request did, with our own DH key: (session id, session key)."""
    x, ours = dh.keypair(os.urandom(32))
    body = replace(setup.body, public_key=encode_dh_public(ours))
    request = replace(setup, body=body, wire=b"")
    got = decode_message(joined(await udp_exchange(n, [encode_message(request)])))
    same_shape(got, captured_answer)
    assert isinstance(got.body, SessionSetupResponse) and check_certified(got, KEY.public_key())
    _, key = dh.client_key_from_answer(x, got.body.data)
    return got.envelope.session_id, key


async def test_session_flows_create_add_and_delete(node: Node) -> None:
    create_flow = [c.message for c in captured("06-create-add-auth-session")]
    sid, key = await _session(node, create_flow[0], create_flow[1])
    final = await _challenged(node, create_flow[2], create_flow[3], create_flow[4], create_flow[5],
                              _with_session(create_flow[2], sid, key, 1))
    assert final.envelope.session_id == sid and isinstance(final.body, CreateResponse)
    # Later requests of the session: the MAC proves the authenticated session, no new challenge.
    added = await tcp_exchange(node, _with_session(create_flow[6], sid, key, 2))
    same_shape(added, create_flow[7])
    assert added.envelope.session_id == sid and isinstance(added.body, EmptyBody)
    stored = node.hosted.node.store.get("88.100/test2")
    assert stored is not None and stored.by_index(2) is not None
    # A replayed message (same MAC counter) is refused.
    again = await tcp_exchange(node, _with_session(create_flow[6], sid, key, 2))
    assert again.header.code == ResponseCode.INVALID_CREDENTIAL
    # A MAC under another key is refused.
    forged = await tcp_exchange(node, _with_session(create_flow[6], sid, bytes(32), 3))
    assert forged.header.code == ResponseCode.INVALID_CREDENTIAL

    delete_flow = [c.message for c in captured("07-delete-auth-session")]
    sid2, key2 = await _session(node, delete_flow[0], delete_flow[1])
    assert sid2 != sid
    await _challenged(node, delete_flow[2], delete_flow[3], delete_flow[4], delete_flow[5],
                      _with_session(delete_flow[2], sid2, key2, 1))
    assert node.hosted.node.store.get("88.100/test2") is None


async def test_unknown_session_and_stray_challenge_answers(node: Node) -> None:
    create = captured("06-create-add-auth-session")[2].message
    got = await tcp_exchange(node, _with_session(create, 987654, bytes(32), 1))
    assert got.header.code == ResponseCode.SESSION_TIMEOUT
    stray = captured("08-create-delete-auth-nosession")[2].message
    got = await tcp_exchange(node, encode_message(replace(stray, wire=b"")))
    assert got.header.code == ResponseCode.AUTHEN_TIMEOUT and got.header.opcode == OpCode.CHALLENGE_RESPONSE


async def test_a_node_beyond_loopback_refuses_native_writes_and_credentials_without_challenging() -> None:
    """What ``writes_over_binary`` decides for a native listener beyond loopback without --plain-writes: no
    challenge (no credentials asked for in clear), the write refused, resolutions answered."""
    from idresolve.runtime.hosted import HostSettings

    hosted = authoritative_host("t", MemoryStore(), ["88.100"], "admin-secret",
                                settings=HostSettings(binary_writes=False))
    for r in recorded_records():
        hosted.node.bootstrap_record(r)
    addrs = await hosted.start(http=None, handle="127.0.0.1:0", native=NativeOptions(KEY))
    assert addrs.handle is not None
    n = Node(hosted, *addrs.handle)
    try:
        create = await tcp_exchange(n, captured("08-create-delete-auth-nosession")[0].raw)
        assert create.header.code == ResponseCode.INVALID_ADMIN and isinstance(create.body, ErrorBody)
        assert "loopback" in create.body.message
        assert hosted.node.store.get("88.100/test3") is None
        resolved = await tcp_exchange(n, captured("02-resolve-tcp")[0].raw)
        assert resolved.header.code == ResponseCode.SUCCESS
    finally:
        await hosted.stop()


def _server_key_pem(directory: str) -> bytes:
    from pathlib import Path

    from idresolve.runtime.serverkey import key_pem, load_or_create_server_key

    return key_pem(load_or_create_server_key(Path(directory)))


def test_workers_starting_at_once_share_one_whole_server_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a node's worker processes all load or create its server key as they start: none may read the file
    # half written, and all must end with the same key (seen once: "MalformedFraming" in a starting worker)
    import multiprocessing

    dirs = [str(tmp_path / f"node{i}") for i in range(6)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pems = pool.map(_server_key_pem, [d for d in dirs for _ in range(4)], chunksize=1)
    for i, d in enumerate(dirs):
        assert len(set(pems[4 * i:4 * i + 4])) == 1, d
        assert [p.name for p in (tmp_path / f"node{i}").iterdir()] == ["server-key.pem"]  # no temporary left
