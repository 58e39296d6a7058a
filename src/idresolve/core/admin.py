"""HS_ADMIN permissions and admin references (RFC 3651 section 3.6, docs/domain.md §4).

In JSON the 12 permission bits are written as a string from bit 11 down to bit 0, so the last character
is ADD_HANDLE. The binary form is RFC 3651's: 2-byte permission mask, admin handle as a 4-byte length and
UTF-8, 4-byte admin index.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntFlag

from .errors import InvalidValue


class AdminPerm(IntFlag):
    ADD_HANDLE = 1 << 0
    DELETE_HANDLE = 1 << 1
    ADD_DERIVED_PREFIX = 1 << 2
    DELETE_DERIVED_PREFIX = 1 << 3
    MODIFY_VALUE = 1 << 4
    REMOVE_VALUE = 1 << 5
    ADD_VALUE = 1 << 6
    MODIFY_ADMIN = 1 << 7
    REMOVE_ADMIN = 1 << 8
    ADD_ADMIN = 1 << 9
    READ_VALUE = 1 << 10
    LIST_HANDLES = 1 << 11


ALL_PERMS = AdminPerm((1 << 12) - 1)
#: The usual default of real clients: everything but LIST_HANDLES and the derived-prefix bits.
DEFAULT_PERMS_TEXT = "011111110011"


def perms_from_text(text: str) -> AdminPerm:
    if len(text) != 12 or any(c not in "01" for c in text):
        raise InvalidValue("HS_ADMIN permissions must be 12 characters of 0 and 1")
    return AdminPerm(int(text, 2))


def perms_to_text(perms: int) -> str:
    return format(int(perms) & 0xFFF, "012b")


@dataclass(frozen=True, slots=True)
class AdminRef:
    """One HS_ADMIN value: the identity ``index:handle`` and what it may do."""

    handle: str
    index: int
    perms: AdminPerm

    def to_bytes(self) -> bytes:
        h = self.handle.encode("utf-8")
        return struct.pack(">HI", int(self.perms) & 0xFFFF, len(h)) + h + struct.pack(">I", self.index)

    @classmethod
    def from_bytes(cls, data: bytes) -> AdminRef:
        try:
            perms, n = struct.unpack_from(">HI", data, 0)
            handle = data[6 : 6 + n].decode("utf-8")
            (index,) = struct.unpack_from(">I", data, 6 + n)
        except (struct.error, UnicodeDecodeError) as exc:
            raise InvalidValue("HS_ADMIN data is not a valid admin reference") from exc
        if len(data) != 10 + n:
            raise InvalidValue("HS_ADMIN data has trailing bytes")
        return cls(handle=handle, index=index, perms=AdminPerm(perms & 0xFFF))

    def to_json(self) -> dict[str, object]:
        return {"handle": self.handle, "index": self.index, "permissions": perms_to_text(self.perms)}

    @classmethod
    def from_json(cls, value: object) -> AdminRef:
        if not isinstance(value, dict):
            raise InvalidValue("admin data value must be an object with handle, index and permissions")
        handle = value.get("handle")
        if not isinstance(handle, str) or not handle:
            raise InvalidValue("admin data needs a handle")
        index = parse_index(value.get("index", 300), what="admin index")
        perms_text = value.get("permissions", DEFAULT_PERMS_TEXT)
        if not isinstance(perms_text, str):
            raise InvalidValue("admin permissions must be a string of 12 bits")
        return cls(handle=handle, index=index, perms=perms_from_text(perms_text))


MAX_INDEX = 2**31 - 1
_INT_TEXT = re.compile(r"-?[0-9]+")


def parse_index(raw: object, *, what: str = "index") -> int:
    """An index given as an int or a numeric string (clients send ``"200"``); must be 1..2**31-1."""
    if isinstance(raw, bool):
        raise InvalidValue(f"{what} must be an integer")
    if isinstance(raw, str):
        s = raw.strip()
        # ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses.
        if len(s) > 11 or _INT_TEXT.fullmatch(s) is None:
            raise InvalidValue(f"{what} must be an integer")
        raw = int(s)
    if not isinstance(raw, int):
        raise InvalidValue(f"{what} must be an integer")
    if raw <= 0 or raw > MAX_INDEX:
        raise InvalidValue(f"{what} must be between 1 and {MAX_INDEX}, got {raw}")
    return raw
