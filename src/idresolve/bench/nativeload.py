"""The native Handle protocol's load client: the binary load connection (``binload.BinaryLoadConnection``:
pipelined, open or closed loop, timeouts, late answers) with native messages on the wire.

Requests are encoded once per identifier (``core.native.client.request_message``, request id 0, the
flags Handle.Net's tools send); a send splices a fresh request id into octets 8..12 of the envelope.
Answers are read only as far as their request id (envelope octets 8..12) and response code (header
octets 4..8), framed by ``StreamFramer`` (bounded); their bodies are never decoded on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..core.codes import OpCode
from ..core.messages import Request
from ..core.native import StreamFramer, encode_message
from ..core.native.client import request_message
from .binload import BinaryLoadConnection

if TYPE_CHECKING:
    from .loadgen import Recorder

_MISSING: object = object()


class NativeWorkload:
    """Pre-encoded RESOLUTION requests for ``handles``; ``frame(i, rid)`` is ready to write."""

    __slots__ = ("handles", "parts")

    def __init__(self, handles: Sequence[str], flags: int = 0) -> None:
        if not handles:
            raise ValueError("a workload needs at least one identifier")
        self.handles = list(handles)
        now = time.time()
        self.parts: list[tuple[bytes, bytes]] = []
        for h in self.handles:
            data = encode_message(request_message(Request(0, OpCode.RESOLUTION, h, flags), 0, now=now))
            self.parts.append((data[:8], data[12:]))

    def __len__(self) -> int:
        return len(self.parts)

    def frame(self, i: int, rid: int) -> bytes:
        head, tail = self.parts[i % len(self.parts)]
        return head + rid.to_bytes(4, "big") + tail


class NativeHeads:
    """Request ids and answer heads for a load connection (what ``ClientConnection`` is to msgpack):
    ``next_id(token)``, ``pending`` (request id -> token, in send order), ``receive_heads``."""

    __slots__ = ("_framer", "_rid", "pending", "stray", "garbage")

    def __init__(self) -> None:
        self._framer = StreamFramer()
        self._rid = 0
        self.pending: dict[int, int] = {}
        self.stray = 0
        self.garbage = 0

    def next_id(self, token: int) -> int:
        rid = self._rid = self._rid % 0x7FFFFFFF + 1
        while rid in self.pending:
            rid = self._rid = self._rid % 0x7FFFFFFF + 1
        self.pending[rid] = token
        return rid

    def receive_heads(self, data: bytes) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        pending = self.pending
        for frame in self._framer.feed(data):
            if len(frame) < 28:
                self.garbage += 1
                continue
            token = pending.pop(int.from_bytes(frame[8:12], "big"), _MISSING)
            if token is _MISSING:
                self.stray += 1
                continue
            out.append((token, int.from_bytes(frame[24:28], "big")))  # type: ignore[arg-type]
        return out


class NativeLoadConnection(BinaryLoadConnection):
    def __init__(self, rec: Recorder, workload: NativeWorkload,  # type: ignore[override]
                 on_answer: Callable[[BinaryLoadConnection], None] | None = None) -> None:
        super().__init__(rec, workload, on_answer)  # type: ignore[arg-type]
        self.wire = NativeHeads()  # type: ignore[assignment]


async def connect_native(host: str, port: int, rec: Recorder, workload: NativeWorkload, *,
                         on_answer: Callable[[BinaryLoadConnection], None] | None = None,
                         timeout_s: float = 5.0) -> NativeLoadConnection:
    from .httpload import LoadError, check_loopback

    check_loopback(host)
    loop = asyncio.get_running_loop()
    try:
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: NativeLoadConnection(rec, workload, on_answer), host, port), timeout_s)
    except (OSError, TimeoutError) as exc:
        raise LoadError(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from None
    return proto

