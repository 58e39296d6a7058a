"""Answers to resolutions as nodes cache them, the one value filter, and what surfaces may keep of them.

- ``Answer``: what a node answers to a resolution: a response code, the values, and for a referral the
  prefix record that refers (``referrer``). Immutable. The node layer keeps the Answers of plain
  resolutions (anonymous, no filter) in its own caches and *replaces or drops* them on every change and
  expiry (``nodes.authoritative``, ``nodes.recursive``), so an Answer object's identity is its version:
  the same object, the same answer.
- ``select(values, indexes, types)``: RFC 3652's index and type filter (a type matches exactly or as a
  dotted prefix: ``HS_SITE`` matches ``HS_SITE.PREFIX``; ASCII case folded), with VALUES_NOT_FOUND when
  a filter matched nothing. Every surface and role filters through it.
- ``EncodedAnswers``: all a surface may keep: the bytes it encoded for an Answer, by the spelling the
  client used, served only while the node still holds that very Answer object. Surfaces never invalidate
  anything: when the node replaces or drops an Answer, every encoding of it becomes unreachable.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .codes import OpCode, ResponseCode
from .handles import fold
from .messages import Response, slot_setters
from .values import HandleValue

ENCODED_ANSWERS = 100_000


@dataclass(frozen=True, slots=True, eq=False, init=False)
class Answer:
    """A node's answer to a resolution. Compared by identity (``eq=False``): two equal-looking Answers made
    at different times are different versions."""

    code: int
    values: tuple[HandleValue, ...] = ()
    referrer: str | None = None  # a referral's prefix record (``0.NA/88.118``); None: the handle asked
    expires_at: float = math.inf  # when a cached copy stops being valid (recursive nodes: the TTL)

    # Written out (as ``core.messages.Request``'s): every walk makes two, the authoritative node's and the
    # recursive node's cached copy.
    def __init__(self, code: int, values: tuple[HandleValue, ...] = (), referrer: str | None = None,
                 expires_at: float = math.inf) -> None:
        s = _ANSWER_SLOTS
        s[0](self, code)
        s[1](self, values)
        s[2](self, referrer)
        s[3](self, expires_at)


_ANSWER_SLOTS = slot_setters(Answer)


def answer_response(request_id: int, handle: str, answer: Answer) -> Response:
    """The Response to a plain resolution of ``handle`` whose Answer is ``answer``: what every surface sends
    (and encodes once) on its fast path. The handle echoes the client's spelling; a referral names its
    prefix record."""
    return Response(request_id, _RESOLUTION, answer.code, answer.referrer or handle, answer.values)


_SUCCESS = ResponseCode.SUCCESS  # an enum member's class attribute costs a lookup per read on 3.11
_RESOLUTION = OpCode.RESOLUTION


def select(values: tuple[HandleValue, ...], indexes: Sequence[int], types: Sequence[str]) -> tuple[int, tuple[HandleValue, ...]]:
    """(code, values) after the index and type filters: a value is kept when its index is asked for or its
    type matches an asked type. No filter: everything, SUCCESS. Nothing matched: VALUES_NOT_FOUND."""
    if not indexes and not types:
        return _SUCCESS, values
    wanted = [fold(t) for t in types]
    kept = tuple(v for v in values if v.index in indexes or (wanted and _type_matches(v.type, wanted)))
    return (ResponseCode.SUCCESS, kept) if kept else (ResponseCode.VALUES_NOT_FOUND, ())


def _type_matches(vtype: str, wanted: Sequence[str]) -> bool:
    t = fold(vtype)
    return any(t == w or t.startswith(w + ".") for w in wanted)


class EncodedAnswers:
    """Encoded bytes of Answers, by the client's spelling, bounded (the oldest entry goes first)."""

    __slots__ = ("entries", "max_entries")

    def __init__(self, max_entries: int = ENCODED_ANSWERS) -> None:
        self.max_entries = max_entries
        # spelling -> (answer, bytes), read by hot paths; ordered so that the oldest goes in O(1) (see
        # ``wire.ResponseMemo``: a dict's ``next(iter(...))`` walks the slots its deletions left)
        self.entries: OrderedDict[str, tuple[Answer, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, spelling: str, answer: Answer) -> bytes | None:
        """The bytes kept for ``answer`` under ``spelling``; None when they were made for another one."""
        hit = self.entries.get(spelling)
        return hit[1] if hit is not None and hit[0] is answer else None

    def put(self, spelling: str, answer: Answer, data: bytes) -> None:
        entries = self.entries
        if spelling not in entries and len(entries) >= self.max_entries:
            entries.popitem(last=False)
        entries[spelling] = (answer, data)
