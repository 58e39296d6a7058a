"""Signing and checking whole messages: certified answers (HS_SIGNED) and session MACs (HS_MAC).

A certified answer (the request had CT) carries an HS_SIGNED credential made with the server's key, the
key its HS_SITE record publishes. Requests and answers inside a session carry HS_MAC credentials:
HMAC-SHA256 (protocol 2.7 and later) under the session key, with a counter that grows per message.
What the credential covers is ``credential.signed_bytes``.
"""

from __future__ import annotations

from dataclasses import replace

from .credential import (
    HS_DSAPUBKEY,
    HS_MAC,
    HS_SIGNED,
    Credential,
    PrivateKey,
    mac,
    sign,
    signed_bytes,
    verify_mac,
    verify_signature,
)
from .header import version_at_least
from .keys import PublicKey
from .message import Message


def certify(msg: Message, key: PrivateKey, counter: int = 0) -> Message:
    """``msg`` with an HS_SIGNED credential by ``key`` (DSA: SHA1withDSA; RSA: SHA256withRSA)."""
    alg, signature = sign(key, signed_bytes(msg.envelope, msg.header_and_body(), counter))
    return replace(msg, credential=Credential(HS_SIGNED, alg, signature, counter))


def check_certified(msg: Message, key: PublicKey) -> bool:
    cred = msg.credential
    if cred is None or cred.type not in (HS_SIGNED, HS_DSAPUBKEY):
        return False
    try:
        data = signed_bytes(msg.envelope, msg.header_and_body(), cred.counter)
    except ValueError:
        return False
    return verify_signature(key, cred.alg, cred.signature, data)


def mac_alg_for(version: tuple[int, int]) -> str:
    return "HMAC-SHA256" if version_at_least(version, (2, 7)) else "SHA1"


def sign_for_session(msg: Message, session_key: bytes, counter: int) -> Message:
    """``msg`` with an HS_MAC credential under the session key."""
    alg = mac_alg_for(msg.envelope.version)
    data = signed_bytes(msg.envelope, msg.header_and_body(), counter, mac=True)
    return replace(msg, credential=Credential(HS_MAC, alg, mac(session_key, alg, data), counter))


def check_session_mac(msg: Message, session_key: bytes) -> bool:
    cred = msg.credential
    if cred is None or cred.type != HS_MAC:
        return False
    try:
        data = signed_bytes(msg.envelope, msg.header_and_body(), cred.counter, mac=True)
    except ValueError:
        return False
    return verify_mac(session_key, cred.alg, cred.signature, data)
