"""HTTP authentication for the Handle REST API: Basic credentials and sessions.

``Authorization: Basic base64(<identity>:<secret>)`` where the identity ``index:handle`` may be
percent-encoded (so the first *unencoded* colon separates it from the secret), or
``Authorization: Handle sessionId="..."`` for a session opened with ``POST /api/sessions``.
Sessions are bounded in number and expire; secrets are never logged or echoed.

A session is authenticated the way the reference server does it, with a challenge instead of a secret:
``Authorization: Handle sessionId="S", id="300:88.100/ADMIN", type="HS_PUBKEY", cnonce="<base64>",
alg="SHA256", signature="<base64>"`` (on any request, ``POST /api/sessions`` or ``PUT /api/sessions/this``
included), where the signature is over the session's nonce followed by the client nonce: by the private
key of an HS_PUBKEY identity (``alg`` SHA1 or SHA256), or for an HS_SECKEY identity the secret-key forms
of the native protocol (``alg`` SHA256, SHA1, MD5: a hash of secret, nonces, secret; HMAC-SHA256,
HMAC-SHA1; PBKDF2-HMAC-SHA1 with ``salt``, ``iterations`` and ``length`` in bits). The node checks the
proof (``nodes.auth``); the session then carries the identity and ``Handle sessionId="S"`` alone suffices.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from ..core.errors import AuthenticationFailed
from ..core.native.challenge import ResponseAlg
from ..core.native.primitives import put_octets, put_text, put_u32
from ..core.proofs import HS_PUBKEY_AUTH, HS_SECKEY_AUTH, ChallengeProof, Credential
from ..nodes.auth import Identity, parse_identity

SESSION_TTL_S = 3600.0
MAX_SESSIONS = 10_000


def parse_basic(header: str) -> tuple[Identity, bytes]:
    """Split a Basic header into identity and secret. Raises ``AuthenticationFailed``."""
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise AuthenticationFailed("malformed credentials") from None
    # "300%3A0.NA%2Fx:secret" (encoded identity, first colon ends it) or "300:0.NA/x:secret" (plain
    # identity: the index, a colon, the handle up to the next colon).
    head, sep, rest = text.partition(":")
    if head.isdigit():
        handle, sep2, secret = rest.partition(":")
        username, sep = f"{head}:{handle}", sep and sep2
    else:
        username, secret = head, rest
    if not sep:
        raise AuthenticationFailed("malformed credentials")
    try:
        return parse_identity(username), secret.encode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise AuthenticationFailed("malformed credentials") from None


@dataclass(slots=True)
class Session:
    session_id: str
    nonce: str
    identity: Identity | None
    expires_at: float


class SessionTable:
    """Open sessions, bounded: the oldest is dropped when the table is full."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s, self.max_sessions = ttl_s, max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, identity: Identity | None) -> Session:
        now = time.monotonic()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        s = Session(secrets.token_hex(16), base64.b64encode(secrets.token_bytes(16)).decode(), identity,
                    now + self.ttl_s)
        self._sessions[s.session_id] = s
        return s

    def get(self, session_id: str) -> Session | None:
        s = self._sessions.get(session_id)
        if s is None:
            return None
        if s.expires_at < time.monotonic():
            del self._sessions[session_id]
            return None
        return s

    def close(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None


def session_id_from_header(header: str) -> str | None:
    """``Handle sessionId="abc", ...`` -> ``abc``."""
    params = handle_params(header)
    return params.get("sessionid") if params is not None else None


_TOKEN = r"[-A-Za-z0-9!#$%&'*+.`^_|~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*(,|$)")
MAX_HEADER = 16 * 1024
_SECKEY_ALGS = {"MD5": ResponseAlg.MD5, "SHA": ResponseAlg.SHA1, "SHA1": ResponseAlg.SHA1, "SHA-1": ResponseAlg.SHA1,
                "SHA256": ResponseAlg.SHA256, "SHA-256": ResponseAlg.SHA256, "SHA2": ResponseAlg.SHA256,
                "SHA-2": ResponseAlg.SHA256, "HMACSHA1": ResponseAlg.HMAC_SHA1, "HMACSHA256": ResponseAlg.HMAC_SHA256,
                "PBKDF2HMACSHA1": ResponseAlg.PBKDF2_HMAC_SHA1}
_PUBKEY_ALGS = {"SHA": "SHA1", "SHA1": "SHA1", "SHA-1": "SHA1", "SHA256": "SHA-256", "SHA-256": "SHA-256",
                "SHA2": "SHA-256", "SHA-2": "SHA-256"}


def handle_params(header: str) -> dict[str, str] | None:
    """The parameters of ``Handle k=v, k="v", ...`` (keys lower-cased; ``id`` percent-decoded), or None when
    the header does not parse."""
    if len(header) > MAX_HEADER or header[:6].lower() != "handle" or not header[6:7].isspace():
        return None
    rest, pos, out = header[7:], 0, {}
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            return None
        key, value = m.group(1).lower(), m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = unquote(value) if key == "id" else value
        pos = m.end()
    return out


def _b64(params: dict[str, str], key: str) -> bytes:
    try:
        return base64.b64decode(params[key], validate=True)
    except (KeyError, binascii.Error, ValueError):
        raise AuthenticationFailed(f"{key} is missing or not base64") from None


def _norm(alg: str) -> str:
    return "".join(c for c in alg.upper() if c.isalnum() or c == "-")


def signed_response(params: dict[str, str]) -> tuple[str, bytes]:
    """(auth type, the native protocol's signed response) of an authenticating Handle header."""
    auth_type, alg = params.get("type", ""), _norm(params.get("alg", ""))
    signature = _b64(params, "signature")
    if auth_type == HS_PUBKEY_AUTH:
        name = _PUBKEY_ALGS.get(alg)
        if name is None:
            raise AuthenticationFailed(f"unsupported signature algorithm {params.get('alg')!r}")
        out = bytearray()
        put_text(out, name)
        put_octets(out, signature)
        return auth_type, bytes(out)
    if auth_type == HS_SECKEY_AUTH:
        code = _SECKEY_ALGS.get(alg) or _SECKEY_ALGS.get(alg.replace("-", ""))
        if code is None:
            raise AuthenticationFailed(f"unsupported secret key algorithm {params.get('alg')!r}")
        if code == ResponseAlg.PBKDF2_HMAC_SHA1:
            try:
                iterations, bits = int(params["iterations"]), int(params["length"])
            except (KeyError, ValueError):
                raise AuthenticationFailed("PBKDF2 needs salt, iterations and length") from None
            out = bytearray([code])
            put_octets(out, _b64(params, "salt"))
            put_u32(out, iterations & 0xFFFFFFFF)
            put_u32(out, bits & 0xFFFFFFFF)
            put_octets(out, signature)
            return auth_type, bytes(out)
        return auth_type, bytes([code]) + signature
    raise AuthenticationFailed(f"unsupported authentication type {auth_type!r}")


def handle_caller(header: str, sessions: SessionTable,
                  authenticate: Callable[[Identity, Credential], Identity]) -> Identity | None:
    """The caller of a request with ``Authorization: Handle ...``: the session's identity, after checking
    the proof when the header carries one (the session then holds it). Raises ``AuthenticationFailed``."""
    params = handle_params(header)
    session = sessions.get(params.get("sessionid", "")) if params is not None else None
    if params is None or session is None:
        raise AuthenticationFailed("unknown or expired session")
    if not any(k in params for k in ("id", "type", "alg", "signature")):
        return session.identity
    if not all(k in params for k in ("id", "cnonce", "type", "alg", "signature")):
        raise AuthenticationFailed("missing fields in the Handle authorization")
    auth_type, signed = signed_response(params)
    try:
        nonce = base64.b64decode(session.nonce)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("session nonce unusable") from None
    proof = ChallengeProof(auth_type, nonce, _b64(params, "cnonce"), signed)
    session.identity = authenticate(parse_identity(params["id"]), proof)
    return session.identity
