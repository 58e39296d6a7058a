"""Messages over UDP: splitting one message into datagrams, and a bounded reassembler (pure).

A message longer than one datagram's payload (492 octets: 512 minus the envelope) goes out as
datagrams of at most 512 octets. All carry the same envelope except sequenceNumber (0..n-1), and all
repeat the *whole* messageLength, from which the receiver knows n. Every datagram but the last carries
exactly 492 octets. The reference server splits its answers this way without setting TC; its client
sets TC on the datagrams of a split request (``truncated=True``).

``Reassembler`` collects datagrams per (source, requestId). It is bounded: at most ``max_partial``
messages in progress and ``max_pending_bytes`` octets held (the oldest partial messages are dropped to
make room), each message at most ``Limits.max_message``; a partial message not completed within
``timeout_s`` of its first datagram is dropped. Time is passed in (``now``). Duplicates are ignored.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace

from ..errors import DecodeError, FrameTooLarge
from .header import ENVELOPE_SIZE, Envelope, EnvelopeFlag, decode_envelope
from .primitives import DEFAULT_LIMITS, Limits

MAX_DATAGRAM = 512
MAX_PAYLOAD = MAX_DATAGRAM - ENVELOPE_SIZE  # 492


def split_message(message: bytes, *, truncated: bool = False, payload_size: int = MAX_PAYLOAD) -> list[bytes]:
    """The datagrams that carry ``message`` (an encoded message, envelope included). A message that fits
    is returned whole; ``truncated`` sets TC on the datagrams of a split message (clients do)."""
    _, length = decode_envelope(message)
    if len(message) - ENVELOPE_SIZE != length:
        raise ValueError("message length does not match its envelope")
    if length <= payload_size:
        return [message]
    head = bytearray(message[:ENVELOPE_SIZE])
    if truncated:
        head[2] |= EnvelopeFlag.TC
    out = []
    for i, off in enumerate(range(ENVELOPE_SIZE, len(message), payload_size)):
        head[12:16] = i.to_bytes(4, "big")
        out.append(bytes(head) + message[off:off + payload_size])
    return out


@dataclass(slots=True)
class _Partial:
    envelope: Envelope
    length: int
    count: int
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    held: int = 0


class Reassembler:
    """Turns datagrams into whole messages' bytes (decode those with ``decode_message``)."""

    def __init__(self, *, max_partial: int = 256, max_pending_bytes: int = 4 * 1024 * 1024,
                 timeout_s: float = 5.0, limits: Limits = DEFAULT_LIMITS, payload_size: int = MAX_PAYLOAD) -> None:
        if max_partial < 1 or max_pending_bytes < payload_size:
            raise ValueError("a reassembler must hold at least one partial message of one datagram")
        self.max_partial = max_partial
        self.max_pending_bytes = max_pending_bytes
        self.timeout_s = timeout_s
        self.limits = limits
        self.payload_size = payload_size
        self._partials: dict[tuple[Hashable, int], _Partial] = {}  # insertion order = age
        self.pending_bytes = 0
        self.dropped = 0  # partial messages given up (expired or evicted)

    @property
    def partial_count(self) -> int:
        return len(self._partials)

    def feed(self, datagram: bytes, source: Hashable, now: float) -> bytes | None:
        """A whole message when ``datagram`` completes one (or is one), else None. Raises ``DecodeError``
        for a datagram that cannot belong to any message (the caller may answer or drop it)."""
        envelope, length = decode_envelope(datagram)
        if length > self.limits.max_message:
            raise FrameTooLarge(f"message of {length} bytes exceeds the limit of {self.limits.max_message}")
        chunk = datagram[ENVELOPE_SIZE:]
        if envelope.sequence == 0 and len(chunk) == length:
            return datagram
        size = self.payload_size
        count = -(-length // size)
        if envelope.sequence >= count:
            raise DecodeError(f"datagram {envelope.sequence} of a message in {count} datagrams")
        expected = size if envelope.sequence < count - 1 else length - size * (count - 1)
        if len(chunk) != expected:
            raise DecodeError(f"datagram {envelope.sequence} carries {len(chunk)} octets, {expected} expected")
        self.expire(now)
        key = (source, envelope.request_id)
        partial = self._partials.get(key)
        base = replace(envelope, sequence=0, flags=envelope.flags & ~EnvelopeFlag.TC)
        if partial is None:
            self._make_room(len(chunk), new_partial=True)
            partial = self._partials[key] = _Partial(base, length, count, now)
        elif partial.length != length or partial.envelope != base:
            raise DecodeError("datagram disagrees with the others of its message")
        elif envelope.sequence in partial.chunks:
            return None
        if self.pending_bytes + len(chunk) > self.max_pending_bytes:
            self._make_room(len(chunk), keep=key)
            if self.pending_bytes + len(chunk) > self.max_pending_bytes:
                self._drop(key)  # this message alone would exceed the bound
                return None
        partial.chunks[envelope.sequence] = chunk
        partial.held += len(chunk)
        self.pending_bytes += len(chunk)
        if len(partial.chunks) < partial.count:
            return None
        self._drop(key, given_up=False)
        return partial.envelope.encode(length) + b"".join(partial.chunks[i] for i in range(partial.count))

    def expire(self, now: float) -> int:
        """Drop partial messages older than ``timeout_s``; returns how many."""
        stale = [k for k, p in self._partials.items() if now - p.started > self.timeout_s]
        for k in stale:
            self._drop(k)
        return len(stale)

    def _drop(self, key: tuple[Hashable, int], given_up: bool = True) -> None:
        partial = self._partials.pop(key)
        self.pending_bytes -= partial.held
        if given_up:
            self.dropped += 1

    def _make_room(self, incoming: int, *, keep: tuple[Hashable, int] | None = None,
                   new_partial: bool = False) -> None:
        """Drop the oldest partial messages (never ``keep``) until ``incoming`` octets, and one more
        partial message when ``new_partial``, fit within the bounds."""
        for k in list(self._partials):
            if (len(self._partials) + new_partial <= self.max_partial
                    and self.pending_bytes + incoming <= self.max_pending_bytes):
                return
            if k != keep:
                self._drop(k)
