"""HTTP authentication for the Handle REST API: Basic credentials and sessions.

``Authorization: Basic base64(<identity>:<secret>)`` where the identity ``index:handle`` may be
percent-encoded (so the first *unencoded* colon separates it from the secret), or
``Authorization: Handle sessionId="..."`` for a session opened with ``POST /api/sessions``.
Sessions are bounded in number and expire; secrets are never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..core.errors import AuthenticationFailed
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
    for part in header[6:].split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == "sessionId":
            return value.strip().strip('"')
    return None
