"""Bodies of authentication and sessions: challenges, answers to them, verification, session setup.

- 402 answer (challenge): bytes nonce; the request digest in front of it is the message's RD digest.
- 200 request (challenge answer): str auth type (``HS_SECKEY``, ``HS_PUBKEY``), str identity handle,
  i32 identity index, bytes signed response.
- 201 request (verify response, server to the identity's server): str handle, i32 index, bytes nonce,
  a request digest, bytes signed response; its success answer is one octet, bit 0 set when valid.
- 400 request (session setup): u16 key exchange mode, u32 timeout (s), str identity handle, i32 identity
  index, then by mode: bytes public key (1 client cipher, 4 Diffie-Hellman), str handle + i32 index of
  an exchange key (3), nothing (2). 400 success answer: u16 mode, bytes data (Diffie-Hellman: u32
  cipher + the server's DH key). The reference sizes both bodies as if the mode took 4 octets and so
  sends 2 zero octets after them, inside bodyLength: kept here as ``padding``.
- 402 request (session exchange key): bytes encrypted session key, or no body.

A request digest is a hash-type octet (1 MD5, 2 SHA-1, 3 SHA-256) and the digest; type 0 is the 2.0
form, a u32 length and the digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ..codes import OpCode
from ..errors import DecodeError
from .primitives import Reader, put_i32, put_octets, put_text, put_u8, put_u16, put_u32


class DigestAlg(IntEnum):
    MD5_OLD = 0
    MD5 = 1
    SHA1 = 2
    SHA256 = 3


DIGEST_SIZES = {DigestAlg.MD5: 16, DigestAlg.SHA1: 20, DigestAlg.SHA256: 32}


class KeyExchange(IntEnum):
    NONE = 0
    CIPHER_CLIENT = 1  # the server encrypts a session key with the client's public key
    CIPHER_SERVER = 2  # the client encrypts one with the server's public key (then opcode 402)
    CIPHER_HDL = 3  # as 1, with the key found at a handle value
    DH = 4  # Diffie-Hellman


class SessionCipher(IntEnum):
    DES = 1
    DESEDE = 2
    AES = 3


_MAX_PADDING = 4


@dataclass(frozen=True, slots=True)
class RequestDigest:
    alg: int  # DigestAlg
    digest: bytes

    def write(self, out: bytearray) -> None:
        if self.alg == DigestAlg.MD5_OLD:
            put_octets(out, self.digest)
        else:
            put_u8(out, self.alg)
            out += self.digest


def read_request_digest(r: Reader) -> RequestDigest:
    alg = r.u8("digest type")
    if alg == DigestAlg.MD5_OLD:
        r.pos -= 1  # the octet was the top of a u32 length
        return RequestDigest(alg, r.octets("request digest", 64))
    size = DIGEST_SIZES.get(alg)  # type: ignore[call-overload]
    if size is None:
        raise DecodeError(f"unknown request digest type {alg}")
    return RequestDigest(alg, r.raw(size, "request digest"))


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes

    def write(self, out: bytearray) -> None:
        put_octets(out, self.nonce)


@dataclass(frozen=True, slots=True)
class ChallengeAnswer:
    auth_type: str
    handle: str
    index: int
    signed_response: bytes

    def write(self, out: bytearray) -> None:
        put_text(out, self.auth_type)
        put_text(out, self.handle)
        put_i32(out, self.index)
        put_octets(out, self.signed_response)


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    handle: str
    index: int
    nonce: bytes
    digest: RequestDigest
    signed_response: bytes

    def write(self, out: bytearray) -> None:
        put_text(out, self.handle)
        put_i32(out, self.index)
        put_octets(out, self.nonce)
        self.digest.write(out)
        put_octets(out, self.signed_response)


@dataclass(frozen=True, slots=True)
class VerifyResponse:
    valid: bool

    def write(self, out: bytearray) -> None:
        put_u8(out, 1 if self.valid else 0)


@dataclass(frozen=True, slots=True)
class SessionSetupRequest:
    mode: int  # KeyExchange
    timeout_s: int
    identity_handle: str = ""
    identity_index: int = 0
    public_key: bytes = b""  # modes 1 and 4 (DH: a DH_PUB_KEY encoding)
    exchange_handle: str = ""  # mode 3
    exchange_index: int = 0
    padding: bytes = b"\0\0"

    def write(self, out: bytearray) -> None:
        put_u16(out, self.mode)
        put_u32(out, self.timeout_s)
        put_text(out, self.identity_handle)
        put_i32(out, self.identity_index)
        if self.mode in (KeyExchange.CIPHER_CLIENT, KeyExchange.DH):
            put_octets(out, self.public_key)
        elif self.mode == KeyExchange.CIPHER_HDL:
            put_text(out, self.exchange_handle)
            put_i32(out, self.exchange_index)
        out += self.padding


@dataclass(frozen=True, slots=True)
class SessionSetupResponse:
    mode: int
    data: bytes  # DH: u32 cipher + DH_PUB_KEY (see session.dh_answer_data); 1, 3: encrypted key; 2: a key
    padding: bytes = b"\0\0"

    def write(self, out: bytearray) -> None:
        put_u16(out, self.mode)
        put_octets(out, self.data)
        out += self.padding


@dataclass(frozen=True, slots=True)
class SessionExchangeKey:
    encrypted_key: bytes | None = None

    def write(self, out: bytearray) -> None:
        if self.encrypted_key is not None:
            put_octets(out, self.encrypted_key)


def _padding(r: Reader) -> bytes:
    if r.remaining > _MAX_PADDING:
        raise DecodeError(f"{r.remaining} unexpected bytes after the session setup body")
    return r.raw(r.remaining)


def read_challenge(r: Reader) -> Challenge:
    return Challenge(r.octets("nonce", 1024))


def read_challenge_answer(r: Reader) -> ChallengeAnswer:
    return ChallengeAnswer(r.text("auth type", 64), r.handle("identity handle"), r.i32("identity index"),
                           r.octets("signed response", 64 * 1024))


def read_verify_request(r: Reader) -> VerifyRequest:
    return VerifyRequest(r.handle(), r.i32("index"), r.octets("nonce", 1024), read_request_digest(r),
                         r.octets("signed response", 64 * 1024))


def read_verify_response(r: Reader) -> VerifyResponse:
    return VerifyResponse(bool(r.u8("verify result") & 1))


def read_session_setup_request(r: Reader) -> SessionSetupRequest:
    mode = r.u16("key exchange mode")
    timeout = r.u32("session timeout")
    ident = r.handle("identity handle")
    index = r.i32("identity index")
    key, ex_handle, ex_index = b"", "", 0
    if mode in (KeyExchange.CIPHER_CLIENT, KeyExchange.DH):
        key = r.octets("exchange key", 64 * 1024)
    elif mode == KeyExchange.CIPHER_HDL:
        ex_handle, ex_index = r.handle("exchange key handle"), r.i32("exchange key index")
    return SessionSetupRequest(mode, timeout, ident, index, key, ex_handle, ex_index, _padding(r))


def read_session_setup_response(r: Reader) -> SessionSetupResponse:
    mode = r.u16("key exchange mode")
    data = r.octets("key exchange data", 64 * 1024)
    return SessionSetupResponse(mode, data, _padding(r))


def read_session_exchange_key(r: Reader) -> SessionExchangeKey:
    return SessionExchangeKey(r.octets("encrypted key", 64 * 1024) if r.remaining else None)


AUTH_REQUEST_READERS: dict[int, Callable[[Reader], object]] = {
    OpCode.CHALLENGE_RESPONSE: read_challenge_answer,
    OpCode.VERIFY_RESPONSE: read_verify_request,
    OpCode.SESSION_SETUP: read_session_setup_request,
    OpCode.SESSION_EXCHANGEKEY: read_session_exchange_key,
}

AUTH_SUCCESS_READERS: dict[int, Callable[[Reader], object]] = {
    OpCode.VERIFY_RESPONSE: read_verify_response,
    OpCode.SESSION_SETUP: read_session_setup_response,
}
