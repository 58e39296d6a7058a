"""Secret-key challenge-response (HS_SECKEY): request digests, and the signed responses clients send.

A server challenges a request with a 402 answer carrying a digest of the request (its header and body,
no credential) and a nonce. The client answers (opcode 200) with a *signed response* over
``nonce || digest``, made with the secret of its identity's HS_SECKEY value. Its first octet names the
algorithm (the reference's codes):

- ``0x22`` PBKDF2-HMAC-SHA1 (protocol 2.7 and later, what Handle.Net 9 sends): then bytes salt, u32
  iterations, u32 key length in bits, bytes mac, where
  ``mac = HMAC-SHA1(PBKDF2-HMAC-SHA1(secret, salt, iterations, bits / 8), nonce || digest)``;
- ``0x13`` HMAC-SHA256 and ``0x12`` HMAC-SHA1, keyed with the secret, then the MAC;
- ``0x03`` SHA-256, ``0x02`` SHA-1 (2.1 to 2.6), ``0x01`` MD5: ``H(secret || nonce || digest || secret)``;
- before 2.1 there is no algorithm octet: ``MD5(secret || nonce || digest || secret)`` (``legacy``).

The reference derives PBKDF2 keys from the secret's octets read as Latin-1 characters and encoded as
UTF-8 (Java's PBKDF2 takes characters); that is only visible for secrets with octets above 0x7F.
Checking bounds PBKDF2 work (iterations, key length), since a hostile client chooses them.

Public-key identities (HS_PUBKEY, auth type ``HS_PUBKEY``) answer with str hash algorithm (``SHA1``
for DSA, ``SHA-256`` for RSA) and bytes signature of ``nonce || digest``.

Digests: MD5 before 2.1 (old format), SHA-256 from 2.7, SHA-1 between, as the reference chooses.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum

from ..errors import DecodeError
from .authbodies import DigestAlg, RequestDigest
from .credential import PrivateKey, sign, verify_signature
from .header import version_at_least
from .keys import PublicKey
from .primitives import Reader, put_octets, put_text, put_u32

_DIGEST_NAMES = {DigestAlg.MD5_OLD: "md5", DigestAlg.MD5: "md5", DigestAlg.SHA1: "sha1", DigestAlg.SHA256: "sha256"}
MAX_PBKDF2_ITERATIONS = 200_000
MAX_PBKDF2_KEY_BITS = 512
DEFAULT_PBKDF2_ITERATIONS = 10_000
DEFAULT_PBKDF2_KEY_BITS = 160


class ResponseAlg(IntEnum):
    MD5 = 0x01
    SHA1 = 0x02
    SHA256 = 0x03
    HMAC_SHA1 = 0x12
    HMAC_SHA256 = 0x13
    PBKDF2_HMAC_SHA1 = 0x22


_KEYED = {ResponseAlg.MD5: "md5", ResponseAlg.SHA1: "sha1", ResponseAlg.SHA256: "sha256"}
_HMAC = {ResponseAlg.HMAC_SHA1: "sha1", ResponseAlg.HMAC_SHA256: "sha256"}


def digest_alg_for(version: tuple[int, int]) -> DigestAlg:
    if not version_at_least(version, (2, 1)):
        return DigestAlg.MD5_OLD
    return DigestAlg.SHA256 if version_at_least(version, (2, 7)) else DigestAlg.SHA1


def request_digest(header_body: bytes, alg: int = DigestAlg.SHA256) -> RequestDigest:
    """The digest of a request (its header and body as sent) that answers with RD start with."""
    return RequestDigest(alg, hashlib.new(_DIGEST_NAMES[DigestAlg(alg)], header_body).digest())


def response_alg_for(version: tuple[int, int]) -> int | None:
    """The signed-response algorithm the reference client uses for a challenge of ``version``
    (None: the pre-2.1 form without an algorithm octet)."""
    if not version_at_least(version, (2, 1)):
        return None
    return ResponseAlg.PBKDF2_HMAC_SHA1 if version_at_least(version, (2, 7)) else ResponseAlg.SHA1


def _pbkdf2_password(secret: bytes) -> bytes:
    return secret.decode("latin-1").encode("utf-8")


def _pbkdf2_mac(secret: bytes, salt: bytes, iterations: int, key_bits: int, payload: bytes) -> bytes:
    key = hashlib.pbkdf2_hmac("sha1", _pbkdf2_password(secret), salt, iterations, key_bits // 8)
    return hmac.new(key, payload, "sha1").digest()


def make_secret_response(secret: bytes, nonce: bytes, digest: bytes, alg: int | None = ResponseAlg.PBKDF2_HMAC_SHA1,
                         *, salt: bytes = b"", iterations: int = DEFAULT_PBKDF2_ITERATIONS,
                         key_bits: int = DEFAULT_PBKDF2_KEY_BITS) -> bytes:
    """The signed response a client sends for ``secret``. PBKDF2 needs a fresh random ``salt`` (the
    reference uses 16 octets); ``alg=None`` makes the pre-2.1 form."""
    payload = nonce + digest
    if alg is None:
        return hashlib.md5(secret + payload + secret).digest()
    alg = ResponseAlg(alg)
    if alg == ResponseAlg.PBKDF2_HMAC_SHA1:
        if not salt or key_bits % 8 or not 0 < key_bits <= MAX_PBKDF2_KEY_BITS:
            raise ValueError("PBKDF2 needs a salt and a key length that is a positive multiple of 8 bits")
        out = bytearray([alg])
        put_octets(out, salt)
        put_u32(out, iterations)
        put_u32(out, key_bits)
        put_octets(out, _pbkdf2_mac(secret, salt, iterations, key_bits, payload))
        return bytes(out)
    if alg in _HMAC:
        return bytes([alg]) + hmac.new(secret, payload, _HMAC[alg]).digest()
    return bytes([alg]) + hashlib.new(_KEYED[alg], secret + payload + secret).digest()


def check_secret_response(secret: bytes, nonce: bytes, digest: bytes, signed_response: bytes,
                          *, legacy: bool = False) -> bool:
    """True when ``signed_response`` was made from ``secret`` for this nonce and request digest.
    Never raises: a malformed or over-expensive response is simply wrong."""
    payload = nonce + digest
    if legacy:
        return hmac.compare_digest(hashlib.md5(secret + payload + secret).digest(), signed_response)
    if not signed_response:
        return False
    code, rest = signed_response[0], signed_response[1:]
    if code == ResponseAlg.PBKDF2_HMAC_SHA1:
        try:
            r = Reader(rest)
            salt = r.octets("salt", 1024)
            iterations, key_bits = r.u32(), r.u32()
            mac = r.octets("mac", 1024)
            r.done("PBKDF2 response")
        except DecodeError:
            return False
        if not (0 < iterations <= MAX_PBKDF2_ITERATIONS and 0 < key_bits <= MAX_PBKDF2_KEY_BITS
                and key_bits % 8 == 0 and salt):
            return False
        return hmac.compare_digest(_pbkdf2_mac(secret, salt, iterations, key_bits, payload), mac)
    if code in _HMAC:
        return hmac.compare_digest(hmac.new(secret, payload, _HMAC[ResponseAlg(code)]).digest(), rest)
    if code in _KEYED:
        return hmac.compare_digest(hashlib.new(_KEYED[ResponseAlg(code)], secret + payload + secret).digest(), rest)
    return False


def make_pubkey_response(key: PrivateKey, nonce: bytes, digest: bytes) -> bytes:
    """The signed response of a public-key identity (auth type HS_PUBKEY)."""
    alg, signature = sign(key, nonce + digest)
    out = bytearray()
    put_text(out, alg)
    put_octets(out, signature)
    return bytes(out)


def check_pubkey_response(key: PublicKey, nonce: bytes, digest: bytes, signed_response: bytes) -> bool:
    """True when ``signed_response`` is a signature of ``nonce || digest`` by the holder of ``key``."""
    try:
        r = Reader(signed_response)
        alg = r.text("hash algorithm", 64)
        signature = r.octets("signature", 64 * 1024)
        r.done("public-key response")
    except DecodeError:
        return False
    return verify_signature(key, alg, signature, nonce + digest)
