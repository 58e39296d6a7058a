"""A record: one identifier and its values, and its msgpack form for stores and the wire.

Encoded form: ``[handle, [[index, type, data, ttl, timestamp, perms, refs], ...]]`` with msgpack's
bin type for data. Decoding is strict and bounded; anything else raises ``DecodeError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from .errors import DecodeError, InvalidValue
from .handles import fold
from .values import HandleValue

MAX_RECORD_BYTES = 1 << 20
# One packer for every record encoded: ``msgpack.packb`` makes a Packer per call (1.20 against 0.74 us for a
# two-value record). Shared by threads safely: its ``pack`` runs in C holding the GIL from start to end (no
# ``default`` hook calls back into Python) and resets its buffer after each object, raised or not.
_pack = msgpack.Packer(use_bin_type=True).pack


@dataclass(frozen=True, slots=True, init=False)
class Record:
    handle: str  # spelled as it was created
    values: tuple[HandleValue, ...]

    # Written out, as for Handle and HandleValue: a batch builds a record per identifier, and the generated
    # frozen __init__ sets each field through object.__setattr__.
    def __init__(self, handle: str, values: tuple[HandleValue, ...]) -> None:
        _set_handle(self, handle)
        _set_values(self, values)

    @property
    def key(self) -> str:
        return fold(self.handle)

    def by_index(self, index: int) -> HandleValue | None:
        for v in self.values:
            if v.index == index:
                return v
        return None

    def of_type(self, vtype: str) -> list[HandleValue]:
        return [v for v in self.values if v.type == vtype]

    def encode(self) -> bytes:
        return _pack([self.handle, HandleValue.to_lists(self.values)])

    @classmethod
    def decode(cls, blob: bytes) -> Record:
        if len(blob) > MAX_RECORD_BYTES:
            raise DecodeError("record larger than the limit")
        try:
            # Arrays as tuples, as the wire decodes them (``HandleValue.from_lists``).
            handle, raw_values = msgpack.unpackb(blob, raw=False, use_list=False, strict_map_key=True)
            if not isinstance(handle, str) or not isinstance(raw_values, tuple):
                raise TypeError("record must be [handle, values]")
            values = tuple(HandleValue.from_lists(raw_values))
        except (ValueError, TypeError, InvalidValue, msgpack.UnpackException) as exc:
            raise DecodeError(f"record is malformed: {exc}") from exc
        return cls(handle, values)


_set_handle, _set_values = (Record.__dict__[f].__set__ for f in ("handle", "values"))
