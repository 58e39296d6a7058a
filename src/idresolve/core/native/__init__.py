"""The native Handle protocol (RFC 3651 data model, RFC 3652 messages), as Handle.Net 9 speaks it: a pure
codec. No sockets, no asyncio, no clock, no randomness of its own: time (``now``) and random octets are
passed in. See docs/native-protocol.md for the layout, the limits and the authentication schemes.

Modules: ``header`` (envelope, header, flags), ``valuecodec`` (values), ``bodies`` and ``authbodies``
(one dataclass per body layout), ``message`` (whole messages, TCP framing), ``credential`` and
``signing`` (HS_SIGNED / HS_MAC), ``keys`` (HS_PUBKEY and DH key encodings), ``challenge`` (secret-key
and public-key challenge-response), ``session`` (Diffie-Hellman sessions), ``udp`` (splitting and
reassembly), ``convert`` (to and from the protocol-neutral Request/Response).
"""

from .authbodies import (
    Challenge,
    ChallengeAnswer,
    DigestAlg,
    KeyExchange,
    RequestDigest,
    SessionCipher,
    SessionExchangeKey,
    SessionSetupRequest,
    SessionSetupResponse,
    VerifyRequest,
    VerifyResponse,
)
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
from .challenge import (
    ResponseAlg,
    check_pubkey_response,
    check_secret_response,
    digest_alg_for,
    make_pubkey_response,
    make_secret_response,
    request_digest,
    response_alg_for,
)
from .convert import (
    NATIVE_OPCODES,
    NEUTRAL_OPCODES,
    answer_flags,
    answer_to,
    challenge_for,
    error_for_bytes,
    is_native_only,
    to_native_response,
    to_request,
)
from .credential import HS_MAC, HS_SIGNED, Credential, signed_bytes
from .header import (
    ENVELOPE_SIZE,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Envelope,
    EnvelopeFlag,
    Header,
    OpFlag,
    answer_version,
    decode_envelope,
    version_at_least,
)
from .keys import DHPublic, decode_dh_public, decode_public_key, encode_dh_public, encode_public_key
from .message import EXPIRATION_S, Body, Message, StreamFramer, decode_message, encode_message, frame_length
from .primitives import DEFAULT_LIMITS, Limits
from .signing import certify, check_certified, check_session_mac, sign_for_session
from .udp import MAX_DATAGRAM, MAX_PAYLOAD, Reassembler, split_message
from .valuecodec import AbsoluteTTLValue, relative_ttl

__all__ = [
    "DEFAULT_LIMITS", "ENVELOPE_SIZE", "EXPIRATION_S", "HEADER_SIZE", "HS_MAC", "HS_SIGNED", "MAX_DATAGRAM",
    "MAX_PAYLOAD", "NATIVE_OPCODES", "NEUTRAL_OPCODES", "PROTOCOL_VERSION", "AbsoluteTTLValue", "Body",
    "Challenge", "ChallengeAnswer", "CreateResponse", "Credential", "DHPublic", "DigestAlg", "EmptyBody",
    "Envelope", "EnvelopeFlag", "ErrorBody", "HandleBody", "HandleList", "HandleValues", "Header",
    "KeyExchange", "Limits", "Message", "OpFlag", "RawBody", "Reassembler", "Referral", "RemoveValues",
    "RequestDigest", "ResolutionRequest", "ResponseAlg", "SessionCipher", "SessionExchangeKey",
    "SessionSetupRequest", "SessionSetupResponse", "SiteInfoBody", "StreamFramer", "VerifyRequest",
    "VerifyResponse", "answer_flags", "answer_to", "answer_version", "certify", "challenge_for", "check_certified",
    "check_pubkey_response", "check_secret_response", "check_session_mac", "decode_dh_public",
    "decode_envelope", "decode_message", "decode_public_key", "digest_alg_for", "encode_dh_public",
    "encode_message", "encode_public_key", "error_for_bytes", "frame_length", "is_native_only",
    "make_pubkey_response", "make_secret_response", "relative_ttl", "request_digest", "response_alg_for",
    "sign_for_session", "signed_bytes", "split_message", "to_native_response", "to_request",
    "version_at_least",
]
