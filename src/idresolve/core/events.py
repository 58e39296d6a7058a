"""What a sans-I/O server connection gives its shell, and the interface every wire format offers.

A wire format (msgpack in ``core.wire_connection``, the native Handle protocol) plugs into the servers by
providing connection objects with these methods; the asyncio shells in ``net.server`` (and the
virtual-time simulator) only move bytes, ask the service and apply load shedding. Events:

- a ``Request``: decoded; answer it with ``service.handle`` and ``send`` (or ``start``/``finish`` when the
  answer is awaited);
- ``PlainResolution``: ``(request_id, handle)``, an anonymous, unfiltered resolution recognised without
  decoding it; ask ``service.cached(handle)`` and answer with ``answer_cached``, else turn it into its
  ``Request`` (``plain_request``);
- ``Reply``: bytes the connection made itself (a protocol-error answer to garbage): write them;
- ``Close``: write its bytes, then close: the stream cannot be read any further.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from .answers import Answer
from .codes import OpCode
from .messages import Request, Response

#: A plain resolution, ``(request_id, handle)``: a bare tuple, the only event that is one (tell it with
#: ``type(event) is tuple``). One is made for every hot request, so it must cost nothing to make.
PlainResolution = tuple[int, str]


def plain_request(event: PlainResolution) -> Request:
    """The request a plain resolution stands for (what decoding it would have given)."""
    return Request(event[0], OpCode.RESOLUTION, event[1])


class Reply(NamedTuple):
    data: bytes


class Close(NamedTuple):
    data: bytes


Event = Request | PlainResolution | Reply | Close


class StreamConnection(Protocol):
    """One stream (TCP) connection, server side."""

    inflight: int  # awaited answers in flight (``start``/``finish``)

    @property
    def waiting(self) -> int:
        """Whole requests received and not yet taken with ``next_event``."""

    @property
    def buffered(self) -> int:
        """Bytes of a request received in part (bounded by the connection's limit)."""

    def receive_data(self, data: bytes) -> bool:
        """Take bytes from the peer; True when at least one whole request arrived."""

    def next_event(self, stamp: int | None = None) -> Event | None:
        """The next event, or None when more bytes are needed. ``stamp``: the server's timestamp now, for a
        wire format that can decode a write's values with it (msgpack batches); others ignore it."""

    def busy_answer_for_next(self) -> bytes | None:
        """Load shedding: take the next waiting request and return a cheap SERVER_TOO_BUSY answer to it,
        or None (taking nothing) when it cannot be answered without decoding it."""

    def answer_cached(self, request_id: int, handle: str, answer: Answer) -> bytes:
        """The bytes answering a plain resolution from the node's cached ``answer``."""

    def send(self, response: Response) -> bytes:
        """The bytes of ``response``."""

    def refuse(self, request_id: int, opcode: int, message: str) -> bytes:
        """The bytes of a SERVER_TOO_BUSY answer."""

    def start(self) -> bool:
        """Count one awaited answer in flight; False (nothing counted) when the connection's limit is reached."""

    def finish(self, response: Response) -> bytes:
        """An awaited answer is ready: uncount it and return its bytes."""


class DatagramEndpoint(Protocol):
    """A datagram (UDP) listener, server side (one for all peers)."""

    def receive(self, data: bytes, peer: tuple[str, int]) -> list[Event]:
        """The events of one datagram (none while a split message is incomplete, or for an answer)."""

    def answer_cached(self, request_id: int, handle: str, answer: Answer, peer: tuple[str, int]) -> list[bytes]:
        """The datagrams answering a plain resolution from the node's cached ``answer``."""

    def send(self, response: Response, peer: tuple[str, int]) -> list[bytes]:
        """The datagrams of ``response``."""
