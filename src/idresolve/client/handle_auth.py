"""Authenticating a REST session the Handle way (no secret on the wire): open a session, sign its nonce
and a client nonce, send ``Authorization: Handle sessionId=..., id=..., type=..., cnonce=..., alg=...,
signature=...`` once (``PUT /api/sessions/this``), then use ``Handle sessionId=...`` alone.

An HS_PUBKEY identity signs with its private key (RSA: SHA256withRSA, alg ``SHA256``; DSA: SHA1withDSA,
alg ``SHA1``); an HS_SECKEY identity sends HMAC-SHA256 of the two nonces keyed with its secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..core.native import dsa_keys as dsa
from .rest import ClientError, RestClient

PrivateKey = rsa.RSAPrivateKey | dsa.DSAPrivateKey


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def authorization(session_id: str, nonce: bytes, identity: str, *, key: PrivateKey | None = None,
                  secret: bytes | None = None, cnonce: bytes | None = None) -> str:
    """The authenticating header for a session whose server nonce is ``nonce``."""
    cnonce = cnonce if cnonce is not None else os.urandom(16)
    payload = nonce + cnonce
    if key is not None:
        if isinstance(key, rsa.RSAPrivateKey):
            auth_type, alg, sig = "HS_PUBKEY", "SHA256", key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            auth_type, alg, sig = "HS_PUBKEY", "SHA1", key.sign(payload, hashes.SHA1())
    elif secret is not None:
        auth_type, alg, sig = "HS_SECKEY", "HMAC-SHA256", hmac.new(secret, payload, hashlib.sha256).digest()
    else:
        raise ValueError("a key or a secret is needed")
    return (f'Handle sessionId="{session_id}", id="{quote(identity, safe="")}", type="{auth_type}", '
            f'cnonce="{_b64(cnonce)}", alg="{alg}", signature="{_b64(sig)}"')


def authenticate_session(client: RestClient, identity: str, *, key: PrivateKey | None = None,
                         secret: bytes | None = None) -> str:
    """Open and authenticate a session on ``client``'s node; the client then sends its id. Returns it.
    Raises ``ClientError`` when the node refuses."""
    opened = client.request("POST", "/api/sessions", auth=False)
    sid, nonce_text = opened.body.get("sessionId"), opened.body.get("nonce")
    if opened.status != 201 or not isinstance(sid, str) or not isinstance(nonce_text, str):
        raise ClientError(f"{client.base_url} did not open a session (HTTP {opened.status})")
    client.auth = authorization(sid, base64.b64decode(nonce_text), identity, key=key, secret=secret)
    answer = client.request("PUT", "/api/sessions/this")
    if answer.status != 200 or not answer.body.get("authenticated"):
        raise ClientError(f"{client.base_url} refused the identity {identity}: HTTP {answer.status} "
                          f"{answer.body.get('message', '')}".rstrip())
    client.auth = f'Handle sessionId="{sid}"'
    return sid
