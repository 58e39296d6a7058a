"""The credential section of a message and the signatures and MACs it carries (RFC 3652 2.2.5).

Section: u32 length (0: no credential), then u8 version, u8 reserved, u16 options, str signer handle
(empty in practice), i32 signer index (the reference puts a session counter there), str type
(``HS_SIGNED``: a public-key signature; ``HS_MAC``: a MAC with the session key), u32 length of the
signed section, which is str digest algorithm and bytes signature.

What is signed (protocol 2.7 and later; checked against the reference's certified answers): the
envelope's major and minor version, (2.8+) the suggested major and minor version, sessionId, requestId
and the credential's counter, then the message's header and body as sent. Before 2.6 (signatures) or
2.5 (MACs) only header and body were covered; the 2.5/2.6 in-between forms are not supported.

Signature algorithms: DSA with SHA-1 (alg ``SHA1``), RSA PKCS#1 v1.5 with SHA-256 (``SHA-256``) when we
sign; SHA-1 and SHA-256 accepted when verifying. MACs: ``HMAC-SHA256`` (2.7+), ``HMAC-SHA1``, and the
old hash forms ``SHA1``/``SHA-256``/``MD5`` over key + data + key.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import DecodeError
from . import dsa_keys as dsa
from .header import Envelope, version_at_least
from .keys import PublicKey
from .primitives import Reader, put_i32, put_octets, put_text, put_u8, put_u16

HS_SIGNED, HS_MAC, HS_DSAPUBKEY = "HS_SIGNED", "HS_MAC", "HS_DSAPUBKEY"
_IDS = struct.Struct(">III")

PrivateKey = dsa.DSAPrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class Credential:
    type: str  # HS_SIGNED or HS_MAC
    alg: str  # digest algorithm: SHA1, SHA-256, HMAC-SHA256, ...
    signature: bytes
    counter: int = 0  # the signer index field; the reference's session counter
    signer_handle: str = ""
    version: int = 0
    reserved: int = 0
    options: int = 0

    def encode(self) -> bytes:
        """The whole credential section, length prefix included."""
        signed = bytearray()
        put_text(signed, self.alg)
        put_octets(signed, self.signature)
        body = bytearray()
        put_u8(body, self.version)
        put_u8(body, self.reserved)
        put_u16(body, self.options)
        put_text(body, self.signer_handle)
        put_i32(body, self.counter)
        put_text(body, self.type)
        put_octets(body, bytes(signed))
        out = bytearray()
        put_octets(out, bytes(body))
        return bytes(out)


def read_credential(r: Reader) -> Credential | None:
    """The credential section at ``r``; it must end exactly where ``r`` ends."""
    length = r.u32("credential length")
    if length == 0:
        r.done("credential section")
        return None
    if length != r.remaining:
        raise DecodeError(f"credential of {length} bytes where {r.remaining} are left")
    version, reserved, options = r.u8(), r.u8(), r.u16()
    signer = r.handle("signer handle")
    counter = r.i32("signer index")
    ctype = r.text("credential type", 64)
    section = r.u32("signed section length")
    if section != r.remaining:
        raise DecodeError(f"signed section of {section} bytes where {r.remaining} are left")
    alg = r.text("digest algorithm", 64)
    signature = r.octets("signature", 64 * 1024)
    r.done("credential section")
    return Credential(ctype, alg, signature, counter, signer, version, reserved, options)


def signed_bytes(envelope: Envelope, header_body: bytes, counter: int, *, mac: bool = False) -> bytes:
    """The bytes a credential covers, for the message's protocol version (see the module docstring)."""
    v = envelope.version
    if version_at_least(v, (2, 7)):
        prefix = bytes((envelope.major, envelope.minor))
        if version_at_least(v, (2, 8)):
            prefix += bytes(envelope.suggested)
        return prefix + _IDS.pack(envelope.session_id, envelope.request_id, counter & 0xFFFFFFFF) + header_body
    if not version_at_least(v, (2, 5) if mac else (2, 6)):
        return header_body
    raise ValueError(f"credentials of protocol {v[0]}.{v[1]} are not supported")


def _norm(alg: str) -> str:
    """The reference compares algorithm names ignoring case and punctuation (HMAC-SHA256 == hmacsha256)."""
    return "".join(c for c in alg.upper() if c.isalnum())


_SIG_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256}
_MAC_ALGS = {"HMACSHA256": "sha256", "HMACSHA1": "sha1", "\x13": "sha256", "\x12": "sha1"}
_KEYED_HASHES = {"SHA1": "sha1", "SHA256": "sha256", "MD5": "md5", "\x02": "sha1", "\x03": "sha256",
                 "\x01": "md5", "\x00": "md5"}


def sign(key: PrivateKey, data: bytes) -> tuple[str, bytes]:
    """(algorithm name, signature) over ``data``: SHA1withDSA or SHA256withRSA, as the reference signs."""
    if isinstance(key, dsa.DSAPrivateKey):
        return "SHA1", key.sign(data, hashes.SHA1())
    return "SHA-256", key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def verify_signature(key: PublicKey, alg: str, signature: bytes, data: bytes) -> bool:
    hash_cls = _SIG_HASHES.get(_norm(alg))
    if hash_cls is None:
        return False
    try:
        if isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, data, hash_cls())
        else:
            key.verify(signature, data, padding.PKCS1v15(), hash_cls())
    except (InvalidSignature, ValueError):
        return False
    return True


def mac(key: bytes, alg: str, data: bytes) -> bytes:
    """The MAC of ``data`` under the session ``key`` by the reference's algorithm name. Raises ValueError."""
    name = alg if len(alg) == 1 else _norm(alg)
    if name in _MAC_ALGS:
        return hmac.new(key, data, _MAC_ALGS[name]).digest()
    if name in _KEYED_HASHES:
        return hashlib.new(_KEYED_HASHES[name], key + data + key).digest()
    raise ValueError(f"unknown MAC algorithm {alg!r}")


def verify_mac(key: bytes, alg: str, signature: bytes, data: bytes) -> bool:
    try:
        expected = mac(key, alg, data)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)
