"""Native messages <-> idresolve's protocol-neutral ``Request`` and ``Response``.

``to_request`` gives the pipeline what it needs from a native request; what only the native protocol
knows (session id, credential, CT/REC/PO flags, nonces) stays on the native message. ``to_native_response``
builds the native answer to a native request from the pipeline's ``Response``, the way the reference
server answers (checked against its captured answers):

- envelope: the request's requestId; its sessionId unless told otherwise; the version is the lower of
  ours (2.10) and the one the request suggests; we suggest 2.10;
- header: the Response's opcode and code (after a challenge the final answer carries the original
  opcode); opFlags = REC, plus the request's CT, CA, PO, RD and DNRF, plus AT when the answer comes from
  the authoritative data (not from a cache), plus RD on every challenge; siteInfoSerialNumber = this
  node's site serial; recursionCount echoed; expirationTime = now + 12 h;
- body by code: success -> by opcode; 302/303 -> referral (handle and the Response's values); 402 ->
  challenge (needs the nonce); anything else -> the Response's message;
- RD set -> the body starts with a digest of the request (SHA-256 for 2.7 and later).

A certified answer (CT) must then be signed by the caller (``signing.certify``).
Flags mapped into ``Request.flags``: AT -> FLAG_AUTHORITATIVE, OVERWRITE -> FLAG_OVERWRITE. MINT has no
protocol-neutral counterpart yet; it stays on the native message.
"""

from __future__ import annotations

from ..codes import OpCode, ResponseCode
from ..errors import DecodeError
from ..messages import FLAG_AUTHORITATIVE, FLAG_OVERWRITE, Request, Response
from ..site import SiteInfo
from ..values import HS_SITE
from .authbodies import Challenge
from .bodies import (
    CreateResponse,
    EmptyBody,
    ErrorBody,
    HandleBody,
    HandleList,
    HandleValues,
    RawBody,
    Referral,
    RemoveValues,
    ResolutionRequest,
    SiteInfoBody,
)
from .challenge import digest_alg_for, request_digest
from .header import (
    ENVELOPE_SIZE,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Envelope,
    Header,
    OpFlag,
    answer_version,
    decode_envelope,
    decode_header,
)
from .message import EXPIRATION_S, Body, Message
from .valuecodec import relative_ttl

#: Opcodes the protocol-neutral pipeline answers; the others (challenge answers, verification, sessions)
#: belong to the native layer.
NEUTRAL_OPCODES = frozenset({OpCode.RESOLUTION, OpCode.GET_SITEINFO, OpCode.CREATE_HANDLE, OpCode.DELETE_HANDLE,
                             OpCode.ADD_VALUE, OpCode.REMOVE_VALUE, OpCode.MODIFY_VALUE, OpCode.LIST_HANDLES,
                             OpCode.LIST_PREFIXES})
NATIVE_OPCODES = frozenset({OpCode.CHALLENGE_RESPONSE, OpCode.VERIFY_RESPONSE, OpCode.SESSION_SETUP,
                            OpCode.SESSION_TERMINATE, OpCode.SESSION_EXCHANGEKEY})
_ECHOED = int(OpFlag.CT | OpFlag.CA | OpFlag.PO | OpFlag.RD | OpFlag.DNRF)
_AT, _REC, _RD, _OVERWRITE = int(OpFlag.AT), int(OpFlag.REC), int(OpFlag.RD), int(OpFlag.OVERWRITE)


def is_native_only(msg: Message) -> bool:
    return msg.header.opcode in NATIVE_OPCODES


def to_request(msg: Message, *, now: float) -> Request:
    """The protocol-neutral request of a native one. Raises ``DecodeError`` for an answer (a peer that
    sends answers to a server is broken) and ``ValueError`` for a native-only opcode. An opcode neither
    knows becomes a Request with that opcode and no handle, to be refused as unsupported."""
    if not msg.is_request:
        raise DecodeError("expected a request, got an answer")
    op = msg.header.opcode
    if op in NATIVE_OPCODES:
        raise ValueError(f"opcode {op} is handled by the native layer")
    flags = ((FLAG_AUTHORITATIVE if msg.header.op_flags & _AT else 0)
             | (FLAG_OVERWRITE if msg.header.op_flags & _OVERWRITE else 0))
    body = msg.body
    rid, hops = msg.envelope.request_id, msg.header.recursion
    if isinstance(body, ResolutionRequest):
        return Request(rid, op, body.handle, flags, indexes=body.indexes, types=body.types, hops=hops)
    if isinstance(body, HandleValues):
        values = tuple(relative_ttl(v, now) for v in body.values)
        return Request(rid, op, body.handle, flags, values=values, hops=hops)
    if isinstance(body, RemoveValues):
        return Request(rid, op, body.handle, flags, indexes=body.indexes, hops=hops)
    if isinstance(body, HandleBody):
        return Request(rid, op, body.handle, flags, hops=hops)
    return Request(rid, op, "", flags, hops=hops)


def answer_flags(request_flags: int, *, authoritative: bool, challenge: bool = False) -> int:
    flags = _REC | (request_flags & _ECHOED)
    if authoritative:
        flags |= _AT
    if challenge:
        flags |= _RD
    return flags


def _request_handle(request: Message) -> str:
    body = request.body
    if isinstance(body, HandleBody | ResolutionRequest | HandleValues | RemoveValues):
        return body.handle
    return ""  # a challenge answer names the identity, not the handle the answer is about


def _answer_body(request: Message, response: Response, nonce: bytes | None) -> Body:
    return body_for(response, handle=response.handle or _request_handle(request), nonce=nonce)


def body_for(response: Response, *, handle: str = "", nonce: bytes | None = None) -> Body:
    """The native body that carries ``response`` (its handle, else ``handle``). Raises ``ValueError`` when
    the Response cannot be one: a site info answer without HS_SITE, a challenge without a nonce."""
    code, op = response.code, response.opcode
    handle = response.handle or handle
    if code == ResponseCode.SUCCESS:
        if op == OpCode.RESOLUTION:
            return HandleValues(handle, response.values)
        if op == OpCode.GET_SITEINFO:
            site = next((v for v in response.values if v.type == HS_SITE), None)
            if site is None:
                raise ValueError("a get site info answer needs an HS_SITE value")
            return SiteInfoBody(SiteInfo.from_bytes(site.data))
        if op == OpCode.CREATE_HANDLE:
            return CreateResponse(handle)
        if op in (OpCode.LIST_HANDLES, OpCode.LIST_PREFIXES):
            return HandleList(response.handles)
        return EmptyBody()
    if code in (ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL):
        return Referral(handle, response.values)
    if code == ResponseCode.AUTHENTICATION_NEEDED:
        if nonce is None:
            raise ValueError("a challenge needs a nonce")
        return Challenge(nonce)
    return ErrorBody(response.message)


def answer_to(request: Message, body: Body, *, opcode: int, code: int, now: float, site_serial: int,
              authoritative: bool = True, session_id: int | None = None) -> Message:
    """A native answer to ``request`` with ``body``: envelope, header flags and request digest as the
    reference sets them (see the module docstring). For answers the pipeline does not make, such as
    session setup."""
    version = answer_version(request.envelope)
    envelope = Envelope(version[0], version[1], 0, PROTOCOL_VERSION[0], PROTOCOL_VERSION[1],
                        request.envelope.session_id if session_id is None else session_id,
                        request.envelope.request_id)
    flags = answer_flags(request.header.op_flags, authoritative=authoritative,
                         challenge=code == ResponseCode.AUTHENTICATION_NEEDED)
    header = Header(opcode, code, flags, site_serial, request.header.recursion, int(now) + EXPIRATION_S)
    digest = request_digest(request.header_and_body(), digest_alg_for(version)) if flags & _RD else None
    return Message(envelope, header, body, None, digest)


def to_native_response(request: Message, response: Response, *, now: float, site_serial: int,
                       authoritative: bool = True, session_id: int | None = None,
                       nonce: bytes | None = None) -> Message:
    """The native answer to ``request`` that carries ``response`` (see the module docstring)."""
    return answer_to(request, _answer_body(request, response, nonce), opcode=response.opcode, code=response.code,
                     now=now, site_serial=site_serial, authoritative=authoritative, session_id=session_id)


def challenge_for(request: Message, nonce: bytes, *, now: float, site_serial: int, session_id: int) -> Message:
    """The 402 answer that challenges ``request``: the digest of the request and ``nonce``. The reference
    gives each challenge a fresh sessionId, which the client echoes in its answer (opcode 200)."""
    response = Response(request.envelope.request_id, request.header.opcode, ResponseCode.AUTHENTICATION_NEEDED)
    return to_native_response(request, response, now=now, site_serial=site_serial, session_id=session_id,
                              nonce=nonce)


def error_for_bytes(data: bytes, code: int, message: str, *, now: float, site_serial: int) -> Message | None:
    """An error answer to a message that did not decode, when at least its envelope did: the answer
    carries its requestId (and opcode, when the header is there). None when there is no envelope."""
    try:
        envelope, _ = decode_envelope(data)
    except DecodeError:
        return None
    opcode, flags, recursion = 0, 0, 0
    if len(data) >= ENVELOPE_SIZE + HEADER_SIZE:
        header, _ = decode_header(data, ENVELOPE_SIZE)
        opcode, flags, recursion = header.opcode, header.op_flags & ~OpFlag.RD, header.recursion
    request = Message(envelope, Header(opcode, 0, flags, 0, recursion), RawBody())
    return to_native_response(request, Response(envelope.request_id, opcode, code, message=message),
                              now=now, site_serial=site_serial)
