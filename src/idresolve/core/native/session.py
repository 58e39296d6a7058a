"""Diffie-Hellman client sessions (opcode 400, key exchange mode 4), as Handle.Net opens them.

The client sends a session setup request holding its DH public key (``DH_PUB_KEY``: y, p, g; Handle.Net
uses the 1,024-bit MODP group of RFC 2409, g = 2). The server makes its own key pair in the same group
and answers with ``data`` = u32 session cipher (3 AES) + its DH public key (no length prefix), signed with
its server key (HS_SIGNED), and a fresh sessionId in the envelope. Both sides then hold the shared
secret ``g**(xy) mod p``; later requests in the session carry HS_MAC credentials (HMAC-SHA256 under the
session key) and the sessionId.

Session key (the reference's derivation): the shared secret as a big-endian number of exactly the
modulus' length; for AES, leading zero octets are skipped while more than 32 octets remain, then the
next 32 octets are the key; for DES and DESede, the first 8 or 24 octets with DES parity bits set.

Randomness is passed in (``secret_bytes``): this module never draws it. Peer keys are checked
(1 < y < p - 1, p at most 4,096 bits and in the same group as ours) so that hostile numbers cannot cost
unbounded CPU or force a trivial secret.
"""

from __future__ import annotations

from ..errors import DecodeError
from .authbodies import SessionCipher
from .keys import DHPublic, encode_dh_public, read_dh_public
from .primitives import Reader

#: RFC 2409 section 6.2, the second Oakley group (1,024-bit MODP), which Handle.Net's clients send.
OAKLEY_GROUP2_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF", 16)
OAKLEY_GROUP2_G = 2
DEFAULT_TIMEOUT_S = 24 * 3600
MAX_MODULUS_BITS = 4096
MIN_MODULUS_BITS = 1024
_KEY_SIZES = {SessionCipher.DES: 8, SessionCipher.DESEDE: 24, SessionCipher.AES: 32}


def check_group(key: DHPublic) -> None:
    """Refuse a peer key we would not compute with. Raises ``DecodeError`` (the peer sent it)."""
    if not MIN_MODULUS_BITS <= key.p.bit_length() <= MAX_MODULUS_BITS or key.p % 2 == 0:
        raise DecodeError(f"unusable Diffie-Hellman modulus of {key.p.bit_length()} bits")
    if not 1 < key.g < key.p - 1 or not 1 < key.y < key.p - 1:
        raise DecodeError("Diffie-Hellman numbers out of range")


def keypair(secret_bytes: bytes, p: int = OAKLEY_GROUP2_P, g: int = OAKLEY_GROUP2_G) -> tuple[int, DHPublic]:
    """(private x, public key) from at least 32 random octets."""
    if len(secret_bytes) < 32:
        raise ValueError("a Diffie-Hellman private value needs at least 32 random octets")
    x = int.from_bytes(secret_bytes, "big") % (p - 3) + 2
    return x, DHPublic(pow(g, x, p), p, g)


def shared_secret(x: int, peer: DHPublic) -> bytes:
    """``peer.y ** x mod p`` as exactly as many octets as the modulus (as Java's KeyAgreement gives it)."""
    check_group(peer)
    return pow(peer.y, x, peer.p).to_bytes((peer.p.bit_length() + 7) // 8, "big")


def _des_parity(key: bytes) -> bytes:
    return bytes((b & 0xFE) | ((bin(b & 0xFE).count("1") & 1) ^ 1) for b in key)


def session_key(secret: bytes, cipher: int = SessionCipher.AES) -> bytes:
    """The session key the reference derives from a DH shared secret for ``cipher``."""
    size = _KEY_SIZES[SessionCipher(cipher)]
    if cipher == SessionCipher.AES:
        i = 0
        while i + size < len(secret) and secret[i] == 0:
            i += 1
        return secret[i:i + size]
    return _des_parity(secret[:size])


def answer_data(cipher: int, server_key: DHPublic) -> bytes:
    """The ``data`` of a DH session setup answer: u32 cipher, then the server's DH public key."""
    return int(cipher).to_bytes(4, "big") + encode_dh_public(server_key)


def parse_answer_data(data: bytes) -> tuple[int, DHPublic]:
    r = Reader(data)
    cipher = r.u32("session cipher")
    key = read_dh_public(r)
    r.done("session setup data")
    return cipher, key


def server_answer(client_key: DHPublic, secret_bytes: bytes,
                  cipher: int = SessionCipher.AES) -> tuple[bytes, bytes]:
    """Server side: (session key, answer data) for a client's DH key, in the client's group."""
    check_group(client_key)
    x, ours = keypair(secret_bytes, client_key.p, client_key.g)
    return session_key(shared_secret(x, client_key), cipher), answer_data(cipher, ours)


def client_key_from_answer(x: int, data: bytes) -> tuple[int, bytes]:
    """Client side: (cipher, session key) from our private ``x`` and the server's answer data."""
    cipher, server_key = parse_answer_data(data)
    if cipher not in _KEY_SIZES:
        raise DecodeError(f"unknown session cipher {cipher}")
    return cipher, session_key(shared_secret(x, server_key), cipher)
