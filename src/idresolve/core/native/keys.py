"""Public keys in the Handle encoding: HS_PUBKEY data, server keys in HS_SITE, Diffie-Hellman keys.

Layout (the reference's; RFC 3651 leaves it open): str key type, u16 flags (0, reserved), then the key's
numbers as u32-length-prefixed big-endian integers in Java ``BigInteger`` form (a leading zero octet
when the top bit is set):

- ``DSA_PUB_KEY``: q, p, g, y (note q first);
- ``RSA_PUB_KEY``: exponent e, modulus n, then a u32 0 that the reference always writes (read with or
  without it);
- ``DH_PUB_KEY``: y, p, g.

DSA and RSA keys become ``cryptography`` key objects; a DH key stays numbers (``DHPublic``), since
session setup does its own modular arithmetic (``session.py``). Malformed data raises ``InvalidValue``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import DecodeError, InvalidValue
from . import dsa_keys as dsa
from .primitives import Reader, java_bigint, put_octets, put_text, put_u16, put_u32

DSA_PUB_KEY, RSA_PUB_KEY, DH_PUB_KEY = "DSA_PUB_KEY", "RSA_PUB_KEY", "DH_PUB_KEY"
#: Big enough for a 16,384-bit number; the reference uses 1,024-bit DSA and 2,048-bit RSA keys.
_MAX_NUMBER_BYTES = 2049

PublicKey = dsa.DSAPublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True)
class DHPublic:
    """A Diffie-Hellman public key: ``y = g**x mod p``."""

    y: int
    p: int
    g: int


def _number(r: Reader, what: str) -> int:
    return int.from_bytes(r.octets(what, _MAX_NUMBER_BYTES), "big")


def _head(data: bytes) -> tuple[str, Reader]:
    r = Reader(data)
    key_type = r.text("key type", 64)
    r.u16("key flags")
    return key_type, r


def key_type_of(data: bytes) -> str:
    """The key type named at the start of an encoded key (``DSA_PUB_KEY``, ...). Raises ``InvalidValue``."""
    try:
        return _head(data)[0]
    except DecodeError as exc:
        raise InvalidValue(f"not a Handle key encoding: {exc.message}") from None


def encode_public_key(key: PublicKey) -> bytes:
    out = bytearray()
    if isinstance(key, dsa.DSAPublicKey):
        nums = key.public_numbers()
        params = nums.parameter_numbers
        put_text(out, DSA_PUB_KEY)
        put_u16(out, 0)
        for n in (params.q, params.p, params.g, nums.y):
            put_octets(out, java_bigint(n))
    elif isinstance(key, rsa.RSAPublicKey):
        rnums = key.public_numbers()
        put_text(out, RSA_PUB_KEY)
        put_u16(out, 0)
        put_octets(out, java_bigint(rnums.e))
        put_octets(out, java_bigint(rnums.n))
        put_u32(out, 0)
    else:
        raise TypeError(f"no Handle encoding for {type(key).__name__}")
    return bytes(out)


def decode_public_key(data: bytes) -> PublicKey:
    """A DSA or RSA public key from its Handle encoding. Raises ``InvalidValue``."""
    try:
        key_type, r = _head(data)
        if key_type == DSA_PUB_KEY:
            q, p, g, y = (_number(r, name) for name in ("q", "p", "g", "y"))
            r.done("DSA key")
            return dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
        if key_type == RSA_PUB_KEY:
            e, n = _number(r, "e"), _number(r, "n")
            if r.remaining == 4 and r.raw(4, "trailer") != bytes(4):
                raise DecodeError("RSA key ends with a nonzero trailer")
            r.done("RSA key")
            return rsa.RSAPublicNumbers(e, n).public_key()
    except DecodeError as exc:
        raise InvalidValue(f"malformed {DSA_PUB_KEY}/{RSA_PUB_KEY} data: {exc.message}") from None
    except ValueError as exc:  # numbers cryptography refuses (not a valid group, even modulus, ...)
        raise InvalidValue(f"unusable public key: {exc}") from None
    raise InvalidValue(f"unsupported public key type {key_type!r}")


def encode_dh_public(key: DHPublic) -> bytes:
    out = bytearray()
    put_text(out, DH_PUB_KEY)
    put_u16(out, 0)
    for n in (key.y, key.p, key.g):
        put_octets(out, java_bigint(n))
    return bytes(out)


def read_dh_public(r: Reader) -> DHPublic:
    """A DH public key read from ``r`` (the session setup answer has one with nothing after it)."""
    key_type = r.text("key type", 64)
    if key_type != DH_PUB_KEY:
        raise DecodeError(f"expected a {DH_PUB_KEY}, got {key_type!r}")
    r.u16("key flags")
    y, p, g = (_number(r, name) for name in ("y", "p", "g"))
    return DHPublic(y, p, g)


def decode_dh_public(data: bytes) -> DHPublic:
    """A DH public key from its Handle encoding. Raises ``DecodeError`` (it only occurs in messages)."""
    r = Reader(data)
    key = read_dh_public(r)
    r.done("DH key")
    return key
