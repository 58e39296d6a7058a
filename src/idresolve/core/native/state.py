"""What a native listener remembers between messages: pending challenges, client sessions, its own key and
site. One ``ListenerState`` is shared by every TCP connection and the UDP endpoint of a listener, because
the protocol spreads one exchange over several of them: a challenge answer arrives on a new TCP
connection, a session set up over UDP is used over TCP.

Pure: time and randomness are passed in at construction (``clock() -> seconds since the epoch``,
``random(n) -> n octets``), and nothing here does I/O. Everything is bounded: at most ``max_challenges``
pending challenges (``challenge_ttl_s`` each) and ``max_sessions`` sessions (their own timeout, at most
``max_session_s``), the oldest dropped first; a session remembers the MAC counters it saw in a bounded
window, so a replayed message is refused.

Session and challenge ids come from one counter, so a challenge outside a session never takes the id of
a session. Ids are not secrets: a session is proved by its MAC key, a challenge by its answer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..messages import Request
from ..proofs import ChallengeProof
from ..site import SiteInfo
from .credential import PrivateKey

DEFAULT_CHALLENGE_TTL_S = 120.0
DEFAULT_MAX_CHALLENGES = 10_000
DEFAULT_MAX_SESSIONS = 10_000
MAX_SESSION_S = 24 * 3600.0
NONCE_SIZE = 16
_COUNTER_WINDOW = 1024


@dataclass(slots=True)
class PendingChallenge:
    """A request the node refused with AUTHENTICATION_NEEDED, waiting for its challenge answer."""

    request: Request  # the request to run again with the caller's proof
    nonce: bytes
    digest: bytes  # the request digest the 402 carried
    expires_at: float
    in_session: bool  # issued inside a client session (the final answer stays in it)
    answering: bool = False  # an answer to it is being checked (a second one is refused meanwhile)


@dataclass(slots=True)
class Session:
    session_id: int
    key: bytes  # the session key (HMAC-SHA256 under it proves a message)
    identity: tuple[str, int]  # (handle, index) the client named at set-up
    expires_at: float
    proof: tuple[str, ChallengeProof] | None = None  # (identity text, proof) once a challenge was answered
    seen: set[int] = field(default_factory=set)  # MAC counters seen (a bounded window)
    floor: int = -(2**31) - 1  # counters at or below it are too old to tell: refused

    def fresh_counter(self, counter: int) -> bool:
        """True (and remembered) the first time ``counter`` is seen; False for a replay."""
        if counter <= self.floor or counter in self.seen:
            return False
        self.seen.add(counter)
        if len(self.seen) > _COUNTER_WINDOW:
            self.floor = min(self.seen)
            self.seen.discard(self.floor)
        return True


class ListenerState:
    """The shared state of one native listener (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float], random: Callable[[int], bytes], key: PrivateKey | None,
                 site: SiteInfo | None, authoritative: bool = True,
                 challenge_ttl_s: float = DEFAULT_CHALLENGE_TTL_S, max_challenges: int = DEFAULT_MAX_CHALLENGES,
                 max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.clock, self.random = clock, random
        self.key, self.site = key, site
        self.site_serial = site.serial if site is not None else 1
        self.authoritative = authoritative
        self.challenge_ttl_s = challenge_ttl_s
        self.max_challenges, self.max_sessions = max_challenges, max_sessions
        self.challenges: OrderedDict[int, PendingChallenge] = OrderedDict()
        self.sessions: OrderedDict[int, Session] = OrderedDict()
        self._next_id = 0

    def new_id(self) -> int:
        """A session id (1 .. 2**31-1) that no session or pending challenge holds."""
        for _ in range(4):
            self._next_id = self._next_id % (2**31 - 1) + 1
            if self._next_id not in self.sessions and self._next_id not in self.challenges:
                return self._next_id
        self._drop_oldest()  # only when ids wrapped onto live entries: make room and take the next one
        self._next_id = self._next_id % (2**31 - 1) + 1
        return self._next_id

    def _drop_oldest(self) -> None:
        if self.challenges:
            self.challenges.popitem(last=False)
        if self.sessions:
            self.sessions.popitem(last=False)

    # -- challenges --------------------------------------------------------------------------------------
    def challenge(self, session_id: int, request: Request, nonce: bytes, digest: bytes, *,
                  in_session: bool) -> PendingChallenge:
        """Remember a challenge under ``session_id`` (the session's own, or a fresh one)."""
        now = self.clock()
        self._expire_challenges(now)
        while len(self.challenges) >= self.max_challenges:
            self.challenges.popitem(last=False)
        self.challenges.pop(session_id, None)  # a new challenge in a session replaces the one before
        pending = PendingChallenge(request, nonce, digest, now + self.challenge_ttl_s, in_session)
        self.challenges[session_id] = pending
        return pending

    def pending(self, session_id: int) -> PendingChallenge | None:
        """The live challenge under ``session_id``, if any (it stays until answered or expired)."""
        self._expire_challenges(self.clock())
        return self.challenges.get(session_id)

    def answered(self, session_id: int, pending: PendingChallenge) -> None:
        """The challenge was answered with a proof the node accepted: it cannot be answered again."""
        if self.challenges.get(session_id) is pending:
            del self.challenges[session_id]

    def _expire_challenges(self, now: float) -> None:
        challenges = self.challenges
        while challenges:
            first = next(iter(challenges.values()))
            if first.expires_at > now:
                return
            challenges.popitem(last=False)

    # -- sessions ----------------------------------------------------------------------------------------
    def open_session(self, key: bytes, identity: tuple[str, int], timeout_s: float) -> Session:
        now = self.clock()
        self._expire_sessions(now)
        while len(self.sessions) >= self.max_sessions:
            self.sessions.popitem(last=False)
        ttl = min(max(timeout_s, 1.0), MAX_SESSION_S)
        session = Session(self.new_id(), key, identity, now + ttl)
        self.sessions[session.session_id] = session
        return session

    def session(self, session_id: int) -> Session | None:
        session = self.sessions.get(session_id)
        if session is not None and session.expires_at <= self.clock():
            del self.sessions[session_id]
            return None
        return session

    def close_session(self, session_id: int) -> bool:
        return self.sessions.pop(session_id, None) is not None

    def _expire_sessions(self, now: float) -> None:
        for sid in [s.session_id for s in self.sessions.values() if s.expires_at <= now][:64]:
            del self.sessions[sid]
