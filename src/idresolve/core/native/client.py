"""The client side of the native protocol, sans-I/O: requests out, answers in, challenges answered.

``ClientConnection`` turns protocol-neutral ``Request``s into native messages (the flags Handle.Net's
tools send: REC, CA, PO; AT for ``FLAG_AUTHORITATIVE``, OVERWRITE for ``FLAG_OVERWRITE``, CT when a
certified answer is wanted), with request ids of its own, and matches answers to them by request id (a
token per request, whatever the shell needs). When a server challenges a request (402) and the
connection holds credentials (``ClientAuth``: a secret for HS_SECKEY, a private key for HS_PUBKEY), it
answers the challenge itself: the challenge answer goes into ``outgoing`` for the shell to write, and the
request's token waits for the final answer under the new request id. The request digest the server
sends is checked against the request we sent, so a challenge for another request is not answered.

Over UDP, requests longer than a datagram go out split (``split_message``, TC set) and answers are
reassembled (``datagrams``/``receive_datagram``). Time (``clock``) and randomness (``random``) are passed in.
``to_response`` gives the protocol-neutral ``Response`` of an answer; ``referral_endpoints`` where a
referral (303) points, for a client that walks the hierarchy itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..codes import OpCode, ResponseCode
from ..errors import DecodeError, InvalidValue
from ..messages import FLAG_AUTHORITATIVE, FLAG_OVERWRITE, Request, Response
from ..proofs import HS_PUBKEY_AUTH, HS_SECKEY_AUTH
from ..site import SiteInfo
from ..values import HS_SITE, HandleValue
from .authbodies import Challenge, ChallengeAnswer, RequestDigest
from .bodies import (
    CreateResponse,
    ErrorBody,
    HandleBody,
    HandleList,
    HandleValues,
    Referral,
    RemoveValues,
    ResolutionRequest,
    SiteInfoBody,
)
from .challenge import digest_alg_for, make_pubkey_response, make_secret_response, request_digest
from .credential import PrivateKey
from .header import Envelope, Header, OpFlag
from .message import EXPIRATION_S, Body, Message, StreamFramer, decode_message, encode_message
from .primitives import DEFAULT_LIMITS, Limits
from .udp import Reassembler, split_message

T = TypeVar("T")
#: What Handle.Net's tools set on every request: recursion wanted, cache-certify, public values only.
DEFAULT_FLAGS = int(OpFlag.REC | OpFlag.CA | OpFlag.PO)
UNKNOWN_SERIAL = 0xFFFF
_SALT = 16


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """An identity ``index:handle`` and what proves it: a secret (HS_SECKEY) or a private key (HS_PUBKEY)."""

    handle: str
    index: int
    secret: bytes | None = field(default=None, repr=False)
    key: PrivateKey | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.key is None):
            raise ValueError("an identity is proved by a secret or by a private key, exactly one")

    @property
    def auth_type(self) -> str:
        return HS_SECKEY_AUTH if self.secret is not None else HS_PUBKEY_AUTH

    @classmethod
    def parse(cls, identity: str, *, secret: bytes | None = None, key: PrivateKey | None = None) -> ClientAuth:
        """``300:88.100/ADMIN`` and a secret or a key. Raises ``ValueError``."""
        index_text, sep, handle = identity.partition(":")
        if not sep or not index_text.isdigit() or not handle:
            raise ValueError(f"an identity is index:handle, not {identity!r}")
        return cls(handle, int(index_text), secret, key)


def _body(request: Request) -> Body:
    op = request.opcode
    if op == OpCode.RESOLUTION:
        return ResolutionRequest(request.handle, tuple(request.indexes), tuple(request.types))
    if op in (OpCode.CREATE_HANDLE, OpCode.ADD_VALUE, OpCode.MODIFY_VALUE):
        return HandleValues(request.handle, request.values)
    if op == OpCode.REMOVE_VALUE:
        return RemoveValues(request.handle, tuple(request.indexes))
    if op == OpCode.GET_SITEINFO:
        return HandleBody(request.handle or "/")
    if op in (OpCode.DELETE_HANDLE, OpCode.LIST_HANDLES, OpCode.LIST_PREFIXES, OpCode.SESSION_TERMINATE):
        return HandleBody(request.handle)
    raise ValueError(f"opcode {op} has no native request form")


def request_message(request: Request, request_id: int, *, now: float, certify: bool = False,
                    session_id: int = 0) -> Message:
    """The native message of ``request`` (see the module docstring for the flags)."""
    flags = DEFAULT_FLAGS
    if request.flags & FLAG_AUTHORITATIVE:
        flags |= OpFlag.AT
    if request.flags & FLAG_OVERWRITE:
        flags |= OpFlag.OVERWRITE
    if certify:
        flags |= OpFlag.CT
    header = Header(request.opcode, 0, int(flags), UNKNOWN_SERIAL, min(request.hops, 255), int(now) + EXPIRATION_S)
    return Message(Envelope(session_id=session_id, request_id=request_id), header, _body(request))


def to_response(msg: Message) -> Response:
    """The protocol-neutral Response of a native answer."""
    h, body = msg.header, msg.body
    rid = msg.envelope.request_id
    if isinstance(body, HandleValues | Referral):
        return Response(rid, h.opcode, h.code, body.handle, values=tuple(body.values or ()))
    if isinstance(body, HandleList):
        return Response(rid, h.opcode, h.code, handles=body.handles, total=len(body.handles))
    if isinstance(body, CreateResponse):
        return Response(rid, h.opcode, h.code, body.handle or "")
    if isinstance(body, SiteInfoBody):
        return Response(rid, h.opcode, h.code, values=(HandleValue(1, HS_SITE, body.site.to_bytes()),))
    if isinstance(body, ErrorBody):
        return Response(rid, h.opcode, h.code, message=body.message)
    return Response(rid, h.opcode, h.code)


def referral_endpoints(values: tuple[HandleValue, ...], protocol: str = "TCP") -> list[tuple[str, int]]:
    """Where a referral's HS_SITE values point, over ``protocol`` (the native interfaces), in order."""
    out: list[tuple[str, int]] = []
    for v in values:
        if v.type != HS_SITE:
            continue
        try:
            site = SiteInfo.from_bytes(v.data)
        except InvalidValue:
            continue
        for server in site.servers:
            ep = server.endpoint(protocol)
            if ep is not None:
                out.append(ep)
    return out


@dataclass(slots=True)
class _Sent(Generic[T]):
    token: T
    message: Message  # as sent (its header and body are what a challenge's digest covers)
    challenged: bool = False


class ClientConnection(Generic[T]):
    """One native client connection (TCP, or the UDP socket of one server). See the module docstring."""

    def __init__(self, *, clock: Callable[[], float], random: Callable[[int], bytes], auth: ClientAuth | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.clock, self.random, self.auth, self.limits = clock, random, auth, limits
        self._framer = StreamFramer(limits)
        self._reassembler = Reassembler(limits=limits)
        self._rid = int.from_bytes(random(4), "big") & 0x3FFFFFFF
        self.pending: dict[int, _Sent[T]] = {}
        self.outgoing: list[Message] = []  # challenge answers the shell must send
        self.stray = 0  # answers to no pending request
        self.garbage = 0  # answers that did not decode

    def _next_id(self) -> int:
        rid = self._rid = self._rid % 0x7FFFFFFF + 1
        while rid in self.pending:
            rid = self._rid = self._rid % 0x7FFFFFFF + 1
        return rid

    def send(self, request: Request, token: T, *, certify: bool = False) -> tuple[int, bytes]:
        """(request id, the encoded message) for ``request``, now pending with ``token``."""
        rid = self._next_id()
        msg = request_message(request, rid, now=self.clock(), certify=certify)
        data = encode_message(msg)
        self.pending[rid] = _Sent(token, decode_message(data, self.limits))  # keeps the bytes digests cover
        return rid, data

    def forget(self, request_id: int) -> T | None:
        sent = self.pending.pop(request_id, None)
        return sent.token if sent is not None else None

    def take_outgoing(self) -> list[bytes]:
        out, self.outgoing = self.outgoing, []
        return [encode_message(m) for m in out]

    def receive_data(self, data: bytes) -> list[tuple[T, Message]]:
        """Answers in stream ``data`` (TCP). Raises ``DecodeError`` when the stream is broken."""
        out: list[tuple[T, Message]] = []
        for frame in self._framer.feed(data):
            self._receive(frame, out)
        return out

    def receive_datagram(self, data: bytes, source: Hashable = None) -> list[tuple[T, Message]]:
        """The answer a datagram completes, if any (UDP)."""
        out: list[tuple[T, Message]] = []
        try:
            whole = self._reassembler.feed(data, source, self.clock())
        except DecodeError:
            self.garbage += 1
            return out
        if whole is not None:
            self._receive(whole, out)
        return out

    @staticmethod
    def datagrams(data: bytes) -> list[bytes]:
        """The datagrams that carry a request (split as Handle.Net's client splits, with TC)."""
        return split_message(data, truncated=True)

    def _receive(self, frame: bytes, out: list[tuple[T, Message]]) -> None:
        try:
            msg = decode_message(frame, self.limits)
        except DecodeError:
            self.garbage += 1
            return
        if msg.is_request:
            self.garbage += 1
            return
        sent = self.pending.pop(msg.envelope.request_id, None)
        if sent is None:
            self.stray += 1
            return
        if msg.header.code == ResponseCode.AUTHENTICATION_NEEDED and self._answer(msg, sent):
            return
        out.append((sent.token, msg))

    def _answer(self, challenge: Message, sent: _Sent[T]) -> bool:
        """Answer ``challenge`` for ``sent`` when we can; True when the answer is on its way."""
        auth, body = self.auth, challenge.body
        if auth is None or sent.challenged or not isinstance(body, Challenge) or challenge.digest is None:
            return False
        version = challenge.envelope.version
        ours = request_digest(sent.message.header_and_body(), digest_alg_for(version))
        if challenge.digest != RequestDigest(ours.alg, ours.digest):
            return False  # a challenge about some other request: not ours to answer
        digest = challenge.digest.digest
        if auth.secret is not None:
            signed = make_secret_response(auth.secret, body.nonce, digest, salt=self.random(_SALT))
        else:
            assert auth.key is not None
            signed = make_pubkey_response(auth.key, body.nonce, digest)
        rid = self._next_id()
        header = Header(OpCode.CHALLENGE_RESPONSE, 0, DEFAULT_FLAGS, UNKNOWN_SERIAL, 0,
                        int(self.clock()) + EXPIRATION_S)
        answer = Message(Envelope(session_id=challenge.envelope.session_id, request_id=rid), header,
                         ChallengeAnswer(auth.auth_type, auth.handle, auth.index, signed))
        self.pending[rid] = _Sent(sent.token, answer, challenged=True)
        self.outgoing.append(answer)
        return True
