"""For each captured request, the answer our conversion builds from the matching protocol-neutral Response
(built by hand here from the captured values: the server comes later) has the captured answer's shape.

Shape is checked as strictly as the fresh fields allow: with ``now`` set to the captured answer's
expiration minus 12 hours, the same nonce and the same server DH key, every answer encodes to exactly the
captured bytes; signed answers match except for the signature (DSA signatures are randomised), which is
checked by verifying ours.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.messages import FLAG_AUTHORITATIVE, Request, Response
from idresolve.core.native import (
    EXPIRATION_S,
    AbsoluteTTLValue,
    Challenge,
    ErrorBody,
    HandleBody,
    HandleList,
    HandleValues,
    Message,
    OpFlag,
    Referral,
    SessionSetupResponse,
    SiteInfoBody,
    answer_to,
    certify,
    challenge_for,
    check_certified,
    decode_message,
    encode_message,
    error_for_bytes,
    request_digest,
    split_message,
    to_native_response,
    to_request,
)
from idresolve.core.native import dsa_keys as dsa
from idresolve.core.native.valuecodec import stamp_absolute
from idresolve.core.values import HandleValue
from nativeutil import captured, exchanges

SERVER_KEY = dsa.generate_private_key(1024)


def _now(answer: Message) -> float:
    return answer.header.expiration - EXPIRATION_S


def _answer(request: Message, response: Response, answer: Message, **kw: object) -> bytes:
    built = to_native_response(request, response, now=_now(answer), site_serial=1, **kw)  # type: ignore[arg-type]
    return encode_message(built)


@pytest.mark.parametrize("name", ["01-resolve-udp", "02-resolve-tcp", "03-resolve-type-filter",
                                  "10-resolve-restricted-value", "11-resolve-index-filter"])
def test_resolution_answers_are_byte_identical(name: str) -> None:
    request_cap, answer_cap = exchanges(name)[0]
    request, answer = request_cap.message, answer_cap.message
    assert isinstance(answer.body, HandleValues)
    req = to_request(request, now=_now(answer))
    response = Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, values=answer.body.values)
    built = _answer(request, response, answer)
    assert built == answer_cap.raw
    if answer_cap.transport == "udp":
        assert split_message(built) == list(answer_cap.datagrams)


@pytest.mark.parametrize(("name", "code", "text"), [
    ("04-resolve-not-found", ResponseCode.HANDLE_NOT_FOUND, ""),
    ("09-resolve-prefix-not-here", ResponseCode.SERVER_NOT_RESP, "That prefix doesn't live here"),
])
def test_error_answers_are_byte_identical(name: str, code: int, text: str) -> None:
    request_cap, answer_cap = exchanges(name)[0]
    request = request_cap.message
    response = Response(request.envelope.request_id, OpCode.RESOLUTION, code, message=text)
    assert _answer(request, response, answer_cap.message) == answer_cap.raw


def test_site_info_answer_is_byte_identical() -> None:
    request_cap, answer_cap = exchanges("05-get-siteinfo")[0]
    answer = answer_cap.message
    assert isinstance(answer.body, SiteInfoBody)
    req = to_request(request_cap.message, now=_now(answer))
    site_value = HandleValue(1, "HS_SITE", answer.body.site.to_bytes())
    response = Response(req.request_id, OpCode.GET_SITEINFO, ResponseCode.SUCCESS, values=(site_value,))
    assert _answer(request_cap.message, response, answer) == answer_cap.raw


def _same_but_signature(ours: Message, theirs: Message, theirs_raw: bytes) -> None:
    assert ours.credential is not None and theirs.credential is not None
    assert check_certified(ours, SERVER_KEY.public_key())
    assert (ours.credential.type, ours.credential.alg, ours.credential.counter) == (
        theirs.credential.type, theirs.credential.alg, theirs.credential.counter)
    assert encode_message(replace(ours, credential=None))[20:] == encode_message(replace(theirs, credential=None))[20:]
    assert encode_message(ours)[:4] == theirs_raw[:4]


def test_certified_answer_has_the_reference_shape() -> None:
    request_cap, answer_cap = exchanges("12-resolve-certified")[0]
    request, answer = request_cap.message, answer_cap.message
    req = to_request(request, now=_now(answer))
    response = Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle, values=answer.body.values)  # type: ignore[union-attr]
    built = to_native_response(request, response, now=_now(answer), site_serial=1)
    _same_but_signature(certify(built, SERVER_KEY), answer, answer_cap.raw)


@pytest.mark.parametrize("name", ["06-create-add-auth-session", "07-delete-auth-session"])
def test_session_setup_answer_has_the_reference_shape(name: str) -> None:
    request_cap, answer_cap = exchanges(name)[0]
    request, answer = request_cap.message, answer_cap.message
    assert isinstance(answer.body, SessionSetupResponse)
    built = answer_to(request, SessionSetupResponse(answer.body.mode, answer.body.data), opcode=OpCode.SESSION_SETUP,
                      code=ResponseCode.SUCCESS, now=_now(answer), site_serial=1,
                      session_id=answer.envelope.session_id)
    _same_but_signature(certify(built, SERVER_KEY), answer, answer_cap.raw)


_ADMIN_FLOWS = {
    # name: how many leading exchanges (session setup) the flow starts after
    "06-create-add-auth-session": 1,
    "07-delete-auth-session": 1,
    "08-create-delete-auth-nosession": 0,
}


@pytest.mark.parametrize("name", sorted(_ADMIN_FLOWS))
def test_administration_answers_are_byte_identical(name: str) -> None:
    """Challenges (402), the answers to challenge answers (200), and the session's later requests."""
    pairs = exchanges(name)[_ADMIN_FLOWS[name]:]
    original: Request | None = None
    for request_cap, answer_cap in pairs:
        request, answer = request_cap.message, answer_cap.message
        now = _now(answer)
        if answer.header.code == ResponseCode.AUTHENTICATION_NEEDED:
            original = to_request(request, now=now)
            assert isinstance(answer.body, Challenge)
            built = challenge_for(request, answer.body.nonce, now=now, site_serial=1,
                                  session_id=answer.envelope.session_id)
            assert encode_message(built) == answer_cap.raw
            continue
        if request.header.opcode == OpCode.CHALLENGE_RESPONSE:
            assert original is not None  # the final answer is the original request's, in the answer's envelope
            req, session_id = original, answer.envelope.session_id
        else:
            req, session_id = to_request(request, now=now), None
        response = Response(req.request_id, req.opcode, ResponseCode.SUCCESS, req.handle)
        assert _answer(request, response, answer, session_id=session_id) == answer_cap.raw


def test_to_request_fields() -> None:
    create = captured("08-create-delete-auth-nosession")[0].message
    req = to_request(create, now=0)
    assert (req.request_id, req.opcode, req.handle, req.flags, req.hops) == (
        create.envelope.request_id, OpCode.CREATE_HANDLE, "88.100/test3", 0, 0)
    assert [v.type for v in req.values] == ["HS_ADMIN", "URL"]
    filt = to_request(captured("11-resolve-index-filter")[0].message, now=0)
    assert (filt.indexes, filt.types) == ((2, 100), ())
    typed = to_request(captured("03-resolve-type-filter")[0].message, now=0)
    assert typed.types == ("URL",)
    authoritative = replace(create, header=replace(create.header, op_flags=create.header.op_flags | 0x80000000,
                                                   recursion=3))
    req = to_request(authoritative, now=0)
    assert req.flags & FLAG_AUTHORITATIVE and req.hops == 3


def test_to_request_refuses_answers_and_native_only_opcodes() -> None:
    from idresolve.core.errors import DecodeError

    with pytest.raises(DecodeError):
        to_request(captured("01-resolve-udp")[1].message, now=0)
    with pytest.raises(ValueError, match="native layer"):
        to_request(captured("06-create-add-auth-session")[0].message, now=0)


def test_referral_answers_carry_the_handle_and_site_values() -> None:
    request = captured("09-resolve-prefix-not-here")[0].message
    site = captured("05-get-siteinfo")[1].message.body.site  # type: ignore[union-attr]
    values = (HandleValue(1, "HS_SITE", site.to_bytes()),)
    for code in (ResponseCode.PREFIX_REFERRAL, ResponseCode.SERVICE_REFERRAL):
        response = Response(request.envelope.request_id, OpCode.RESOLUTION, code, "0.NA/88", values=values)
        built = to_native_response(request, response, now=1000, site_serial=7, authoritative=False)
        msg = decode_message_of(built)
        assert msg.header.code == code and not msg.header.has(OpFlag.AT) and msg.header.site_serial == 7
        assert msg.body == Referral("0.NA/88", values)
        assert msg.header.expiration == 1000 + EXPIRATION_S


def test_list_handles_and_rd_digest_on_request() -> None:
    request = captured("08-create-delete-auth-nosession")[4].message  # a delete: reuse its envelope
    asked = replace(request, header=replace(request.header, opcode=OpCode.LIST_HANDLES,
                                            op_flags=request.header.op_flags | OpFlag.RD),
                    body=HandleBody("0.NA/88.100"), wire=b"")
    req = to_request(asked, now=0)
    assert (req.opcode, req.handle) == (OpCode.LIST_HANDLES, "0.NA/88.100")
    response = Response(req.request_id, OpCode.LIST_HANDLES, ResponseCode.SUCCESS, req.handle,
                        handles=("88.100/a", "88.100/b"))
    msg = decode_message_of(to_native_response(asked, response, now=0, site_serial=1))
    assert msg.body == HandleList(("88.100/a", "88.100/b"))
    assert msg.header.has(OpFlag.RD) and msg.digest == request_digest(asked.header_and_body())


def test_absolute_ttls_become_relative_in_requests() -> None:
    create = captured("08-create-delete-auth-nosession")[0].message
    assert isinstance(create.body, HandleValues)
    url = create.body.values[1]
    absolute = stamp_absolute(replace(url, ttl_s=5000))
    msg = replace(create, body=HandleValues(create.body.handle, (create.body.values[0], absolute)), wire=b"")
    again = decode_message_of(msg)
    assert isinstance(again.body.values[1], AbsoluteTTLValue)  # type: ignore[union-attr]
    req = to_request(again, now=4000)
    assert req.values[1].ttl_s == 1000 and type(req.values[1]) is HandleValue
    assert to_request(again, now=9000).values[1].ttl_s == 0


def test_error_answer_for_undecodable_bytes() -> None:
    raw = captured("02-resolve-tcp")[0].raw
    broken = raw[:-6]  # truncated: does not decode
    answer = error_for_bytes(broken, ResponseCode.PROTOCOL_ERROR, "bad message", now=0, site_serial=1)
    assert answer is not None
    msg = decode_message_of(answer)
    assert (msg.envelope.request_id, msg.header.opcode, msg.header.code, msg.body) == (
        decode_message(raw).envelope.request_id, OpCode.RESOLUTION, ResponseCode.PROTOCOL_ERROR,
        ErrorBody("bad message"))
    assert error_for_bytes(b"\x02\x0a", ResponseCode.PROTOCOL_ERROR, "", now=0, site_serial=1) is None


def decode_message_of(msg: Message) -> Message:
    return decode_message(encode_message(msg))
