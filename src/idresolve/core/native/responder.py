"""The server side of the native protocol between whole messages and the pipeline: which event a message
is, and the bytes that answer it. ``connection.py`` wraps it for TCP streams and UDP datagrams.

- A plain resolution (opcode 1, no filter, no AT/CT/RD/ENC, no credential, not compressed) is recognised
  from its first 48 octets without decoding the message and becomes a ``PlainResolution``. Its answer is
  the node's cached ``Answer`` encoded once (the body, kept in ``EncodedAnswers`` per spelling) behind a
  44-octet envelope and header packed per request (request id, session id, version, flags, expiration).
- Any other request is decoded and becomes a ``Request`` (``convert.to_request``), remembered with its
  native message (``_Ctx``) until its answer is encoded (``convert.to_native_response``, signed when it
  asked for CT).
- Authentication: the node answers AUTHENTICATION_NEEDED; the answer becomes a challenge (402, a nonce
  from ``ListenerState``) remembered under a session id. The challenge answer (opcode 200, on any
  connection of the listener) turns the remembered request into a ``Request`` carrying the identity and
  a ``ChallengeProof``, which the node checks. Sessions (opcode 400, Diffie-Hellman): later requests that
  carry a valid HS_MAC go to the pipeline with the proof the session was authenticated with.
- Session setup and terminate and get site info are answered here (``Reply``): the listener's own site
  and key. Garbage gets a PROTOCOL_ERROR answer when its envelope decodes; an answer sent to a server
  gets one on TCP and nothing on UDP.

Encoding never raises: a failure costs one ERROR answer.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from dataclasses import dataclass, replace

from ..answers import Answer, EncodedAnswers, answer_response
from ..codes import OpCode, ResponseCode
from ..errors import DecodeError
from ..events import Event, Reply
from ..messages import Request, Response, error_response
from ..proofs import ChallengeProof
from . import session as dh
from .authbodies import ChallengeAnswer, KeyExchange, SessionSetupRequest, SessionSetupResponse
from .bodies import EmptyBody, ErrorBody, SiteInfoBody
from .convert import (
    NATIVE_OPCODES,
    answer_flags,
    answer_to,
    body_for,
    challenge_for,
    error_for_bytes,
    to_native_response,
    to_request,
)
from .credential import HS_MAC
from .header import ENVELOPE_SIZE, PROTOCOL_VERSION, Envelope, Header, OpFlag, version_at_least
from .keys import decode_dh_public
from .message import EXPIRATION_S, Body, Message, decode_message, encode_message
from .primitives import DEFAULT_LIMITS, Limits
from .signing import certify, check_session_mac
from .state import NONCE_SIZE, ListenerState, PendingChallenge, Session

log = logging.getLogger("idresolve.native")

# Envelope, header and the handle's length of a resolution request: 48 octets.
_PLAIN_HEAD = struct.Struct(">BBBBIIIIIIIHBBIII")
# Envelope and header of an answer: 44 octets.
_ANSWER_HEAD = struct.Struct(">BBBBIIIIIIIHBBII")
_NOT_PLAIN = int(OpFlag.AT | OpFlag.CT | OpFlag.RD | OpFlag.ENC)
_ECHOED = int(OpFlag.CT | OpFlag.CA | OpFlag.PO | OpFlag.RD | OpFlag.DNRF)
_REC, _AT, _CT = int(OpFlag.REC), int(OpFlag.AT), int(OpFlag.CT)
_TAIL_ZEROS = bytes(12)  # no index, no type, no credential
_NO_CREDENTIAL = b"\0\0\0\0"
#: Answers after which a challenge answer may be sent again: the proof failed, or was never looked at.
_NOT_ACCEPTED = frozenset({ResponseCode.AUTHENTICATION_FAILED, ResponseCode.INVALID_CREDENTIAL,
                           ResponseCode.UNABLE_TO_AUTHENTICATE, ResponseCode.SERVER_TOO_BUSY, ResponseCode.ERROR,
                           ResponseCode.INVALID_ADMIN})
_DH_RANDOM = 64

#: A plain resolution's context: (request id, session id, answer major, answer minor, its opFlags, its
#: recursion count, the message's bytes). A bare tuple: one is made for every hot request.
Plain = tuple[int, int, int, int, int, int, bytes]


@dataclass(slots=True)
class _Ctx:
    """A decoded request waiting for its answer."""

    msg: Message
    request: Request
    session: Session | None = None  # the request came with a valid MAC of this session
    challenge: tuple[int, PendingChallenge] | None = None  # it is the answer to this challenge


Ctx = Plain | _Ctx


def plain_of(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Plain, str] | None:
    """(context, handle) when ``frame`` is a plain resolution, else None (decode it)."""
    if len(frame) < 60:
        return None
    (major, minor, eflags, sminor, session, rid, _seq, _length, op, code, op_flags, _serial, recursion, _res, _exp,
     body_len, handle_len) = _PLAIN_HEAD.unpack_from(frame)
    if (op != 1 or code or eflags & 0xC0 or op_flags & _NOT_PLAIN or body_len != handle_len + 12
            or len(frame) != 48 + body_len or handle_len > limits.max_handle_bytes or frame[-12:] != _TAIL_ZEROS):
        return None
    try:
        handle = frame[48:48 + handle_len].decode("utf-8")
    except UnicodeDecodeError:
        return None
    suggested_major = eflags & 0x03
    if suggested_major == 2 and sminor >= 10:  # what every current client suggests
        vmaj, vmin = PROTOCOL_VERSION
    else:
        suggested = (suggested_major, sminor) if suggested_major else (major, minor)
        vmaj, vmin = PROTOCOL_VERSION if version_at_least(suggested, PROTOCOL_VERSION) else suggested
    return (rid, session, vmaj, vmin, op_flags, recursion, frame), handle


class Responder:
    """Events and answers of one listener's native traffic (shared by its TCP connections and UDP side)."""

    def __init__(self, state: ListenerState, encoded: EncodedAnswers | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.state = state
        self.encoded = encoded if encoded is not None else EncodedAnswers()
        self.entries = self.encoded.entries
        self.limits = limits
        self._at = _AT if state.authoritative else 0

    # -- what a message is ------------------------------------------------------------------------------
    def event(self, frame: bytes, *, stream: bool) -> tuple[Event, Ctx | None] | list[Reply]:
        """The event of one whole message with its context, or the replies made here (none for an answer
        sent over UDP)."""
        plain = plain_of(frame, self.limits)
        if plain is not None:
            ctx, handle = plain
            return (ctx[0], handle), ctx
        try:
            msg = decode_message(frame, self.limits)
        except DecodeError as exc:
            return self.garbage(frame, exc.message)
        if not msg.is_request:
            if not stream:
                return []  # never answer an answer over UDP (reflection loops)
            return self._replies(msg, error_response(msg.envelope.request_id, msg.header.opcode,
                                                     ResponseCode.PROTOCOL_ERROR, "expected a request"))
        try:
            return self._request(msg)
        except Exception:  # a bug costs one answer
            log.exception("native request with opcode %s", msg.header.opcode)
            return self._replies(msg, error_response(msg.envelope.request_id, msg.header.opcode, ResponseCode.ERROR,
                                                     "internal error"))

    def garbage(self, frame: bytes, message: str) -> list[Reply]:
        state = self.state
        answer = error_for_bytes(frame, ResponseCode.PROTOCOL_ERROR, message, now=state.clock(),
                                 site_serial=state.site_serial)
        return [] if answer is None else [Reply(encode_message(answer))]

    def _request(self, msg: Message) -> tuple[Event, Ctx | None] | list[Reply]:
        op = msg.header.opcode
        if op in NATIVE_OPCODES:
            return self._native(msg)
        if op == OpCode.GET_SITEINFO and self.state.site is not None:
            return [Reply(self._sign(msg, answer_to(msg, SiteInfoBody(self.state.site), opcode=op,
                                                    code=ResponseCode.SUCCESS, now=self.state.clock(),
                                                    site_serial=self.state.site_serial,
                                                    authoritative=self.state.authoritative)))]
        session = None
        cred = msg.credential
        if cred is not None and cred.type == HS_MAC:
            session = self.state.session(msg.envelope.session_id)
            if session is None:
                return self._replies(msg, self._error(msg, ResponseCode.SESSION_TIMEOUT, "unknown or expired session"))
            if not check_session_mac(msg, session.key) or not session.fresh_counter(cred.counter):
                return self._replies(msg, self._error(msg, ResponseCode.INVALID_CREDENTIAL,
                                                      "the session MAC does not verify (or was seen before)"))
        request = to_request(msg, now=self.state.clock())
        if session is not None and session.proof is not None:
            request = replace(request, auth=session.proof)
        return request, _Ctx(msg, request, session)

    def _native(self, msg: Message) -> tuple[Event, Ctx | None] | list[Reply]:
        op, body, state = msg.header.opcode, msg.body, self.state
        if op == OpCode.CHALLENGE_RESPONSE and isinstance(body, ChallengeAnswer):
            return self._challenge_answer(msg, body)
        if op == OpCode.SESSION_SETUP and isinstance(body, SessionSetupRequest):
            return self._session_setup(msg, body)
        if op == OpCode.SESSION_TERMINATE:
            state.close_session(msg.envelope.session_id)
            return [Reply(encode_message(answer_to(msg, EmptyBody(), opcode=op, code=ResponseCode.SUCCESS,
                                                   now=state.clock(), site_serial=state.site_serial,
                                                   authoritative=state.authoritative)))]
        return self._replies(msg, self._error(msg, ResponseCode.OPERATION_NOT_SUPPORTED,
                                              f"opcode {op} is not supported by this server"))

    def _challenge_answer(self, msg: Message, body: ChallengeAnswer) -> tuple[Event, Ctx | None] | list[Reply]:
        sid = msg.envelope.session_id
        pending = self.state.pending(sid)
        if pending is None:
            return self._replies(msg, self._error(msg, ResponseCode.AUTHEN_TIMEOUT,
                                                  "no challenge is waiting for this session id (expired?)"))
        if pending.answering:
            return self._replies(msg, self._error(msg, ResponseCode.AUTHENTICATION_FAILED,
                                                  "this challenge is already being answered"))
        legacy = not version_at_least(msg.envelope.version, (2, 1))
        proof = ChallengeProof(body.auth_type, pending.nonce, pending.digest, body.signed_response, legacy)
        request = replace(pending.request, request_id=msg.envelope.request_id,
                          auth=(f"{body.index}:{body.handle}", proof))
        pending.answering = True
        return request, _Ctx(msg, request, challenge=(sid, pending))

    def _session_setup(self, msg: Message, body: SessionSetupRequest) -> list[Reply]:
        state = self.state
        if body.mode != KeyExchange.DH:
            return self._replies(msg, self._error(msg, ResponseCode.OPERATION_NOT_SUPPORTED,
                                                  "only Diffie-Hellman session setup (key exchange mode 4)"))
        try:
            key, data = dh.server_answer(decode_dh_public(body.public_key), state.random(_DH_RANDOM))
        except DecodeError as exc:
            return self._replies(msg, self._error(msg, ResponseCode.PROTOCOL_ERROR, exc.message))
        session = state.open_session(key, (body.identity_handle, body.identity_index), body.timeout_s)
        answer = answer_to(msg, SessionSetupResponse(KeyExchange.DH, data), opcode=OpCode.SESSION_SETUP,
                           code=ResponseCode.SUCCESS, now=state.clock(), site_serial=state.site_serial,
                           authoritative=state.authoritative, session_id=session.session_id)
        return [Reply(self._sign(msg, answer))]

    @staticmethod
    def _error(msg: Message, code: int, message: str) -> Response:
        return error_response(msg.envelope.request_id, msg.header.opcode, code, message)

    def _replies(self, msg: Message, response: Response) -> list[Reply]:
        return [Reply(self.encode(_Ctx(msg, Request(response.request_id, response.opcode)), response))]

    # -- answers ------------------------------------------------------------------------------------------
    def cached(self, ctx: Ctx | None, request_id: int, handle: str, answer: Answer) -> bytes:
        """The answer to a plain resolution from the node's cached ``answer``."""
        if type(ctx) is tuple:
            hit = self.entries.get(handle)
            if hit is not None and hit[0] is answer:
                body = hit[1]
            else:
                body = self._body(handle, answer)
                self.encoded.put(handle, answer, body)
            rid, session, vmaj, vmin, op_flags, recursion, _ = ctx
            state = self.state
            return _ANSWER_HEAD.pack(vmaj, vmin, 2, 10, session, rid, 0, 28 + len(body), 1, answer.code,
                                     _REC | (op_flags & _ECHOED) | self._at, state.site_serial, recursion, 0,
                                     int(state.clock()) + EXPIRATION_S, len(body)) + body + _NO_CREDENTIAL
        return self.encode(ctx, answer_response(request_id, handle, answer))

    def _body(self, handle: str, answer: Answer) -> bytes:
        out = bytearray()
        body_for(answer_response(0, handle, answer)).write(out)
        return bytes(out)

    def encode(self, ctx: Ctx | None, response: Response) -> bytes:
        """The bytes answering the request of ``ctx`` with ``response``. Never raises."""
        try:
            if ctx is None:
                return self._bare(response)
            if type(ctx) is tuple:
                ctx = _Ctx(decode_message(ctx[6], self.limits), Request(ctx[0], OpCode.RESOLUTION))
            assert isinstance(ctx, _Ctx)
            return self._encode(ctx, response)
        except Exception:
            log.exception("encoding a native answer (opcode %s, code %s)", response.opcode, response.code)
            return self._bare(error_response(response.request_id, response.opcode, ResponseCode.ERROR,
                                             "internal error"))

    def _encode(self, ctx: _Ctx, response: Response) -> bytes:
        state, msg = self.state, ctx.msg
        now = state.clock()
        session_id: int | None = None
        if ctx.challenge is not None:
            sid, pending = ctx.challenge
            pending.answering = False
            if response.code not in _NOT_ACCEPTED:
                state.answered(sid, pending)
                if pending.in_session:
                    live = state.session(sid)
                    if live is not None and ctx.request.auth is not None:
                        proof = ctx.request.auth[1]
                        if isinstance(proof, ChallengeProof):
                            live.proof = (ctx.request.auth[0], proof)
            session_id = sid if pending.in_session else 0
        elif response.code == ResponseCode.AUTHENTICATION_NEEDED:
            return self._challenge(ctx, now)
        answer = to_native_response(msg, response, now=now, site_serial=state.site_serial,
                                    authoritative=state.authoritative, session_id=session_id)
        return self._sign(msg, answer)

    def _challenge(self, ctx: _Ctx, now: float) -> bytes:
        state, msg = self.state, ctx.msg
        in_session = ctx.session is not None
        sid = ctx.session.session_id if ctx.session is not None else state.new_id()
        nonce = state.random(NONCE_SIZE)
        answer = challenge_for(msg, nonce, now=now, site_serial=state.site_serial, session_id=sid)
        assert answer.digest is not None  # challenges always carry the request digest
        state.challenge(sid, ctx.request, nonce, answer.digest.digest, in_session=in_session)
        return encode_message(answer)

    def _sign(self, request: Message, answer: Message) -> bytes:
        if request.header.op_flags & _CT and self.state.key is not None:
            answer = certify(answer, self.state.key)
        return encode_message(answer)

    def _bare(self, response: Response) -> bytes:
        """An answer with no request to shape it from (the request is unknown or could not be used)."""
        state = self.state
        body: Body = ErrorBody(response.message)
        if response.code == ResponseCode.SUCCESS:
            with contextlib.suppress(ValueError):
                body = body_for(response)
        answer = Message(Envelope(request_id=response.request_id & 0xFFFFFFFF),
                         Header(response.opcode & 0xFFFFFFFF, response.code & 0xFFFFFFFF,
                                answer_flags(0, authoritative=state.authoritative), state.site_serial, 0,
                                int(state.clock()) + EXPIRATION_S), body)
        return encode_message(answer)

    def busy(self, frame: bytes) -> bytes | None:
        """A cheap SERVER_TOO_BUSY answer to ``frame`` (found from its envelope and header only)."""
        if len(frame) < ENVELOPE_SIZE:
            return None
        answer = error_for_bytes(frame, ResponseCode.SERVER_TOO_BUSY, "server too busy", now=self.state.clock(),
                                 site_serial=self.state.site_serial)
        return None if answer is None else encode_message(answer)
