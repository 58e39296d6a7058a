"""Handle values (RFC 3651): the typed, indexed entries of a record, and their JSON forms.

A value is ``index`` (1..2**31-1, unique in its record), ``type`` (open-ended UTF-8), ``data`` (bytes),
``ttl_s``, ``timestamp`` (epoch seconds, set by the server), ``perms`` (admin read, admin write, public
read, public write; JSON ``"1110"``) and ``refs`` (references to other values).

JSON input accepts ``data`` as ``{"format": ..., "value": ...}`` in the formats string, base64, hex,
admin, site and vlist, or as a bare string; ``index`` as an int or a numeric string. Output writes data
in the format its type implies (admin, site, vlist), else ``string`` when the bytes are printable UTF-8,
else ``base64``.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

from .admin import AdminRef, parse_index
from .errors import InvalidValue
from .site import SiteInfo

DEFAULT_TTL_S = 86_400
MAX_TTL_S = 2**31 - 1
MAX_TYPE_CHARS = 255
MAX_DATA_BYTES = 64 * 1024

# Permission bits, in the order of the JSON string "1110".
ADMIN_READ, ADMIN_WRITE, PUBLIC_READ, PUBLIC_WRITE = 8, 4, 2, 1
DEFAULT_PERMS = ADMIN_READ | ADMIN_WRITE | PUBLIC_READ  # "1110"
SECRET_PERMS = ADMIN_READ | ADMIN_WRITE  # "1100"

HS_ADMIN, HS_SITE, HS_SECKEY, HS_VLIST, HS_PUBKEY, HS_SERV, HS_ALIAS = (
    "HS_ADMIN", "HS_SITE", "HS_SECKEY", "HS_VLIST", "HS_PUBKEY", "HS_SERV", "HS_ALIAS",
)
#: Template reference and template fields (docs/domain.md §4, metadata templates).
TEMPLATE_REF_INDEX = 1001
TEMPLATE_FIELD_MIN_INDEX = 2000
TEMPLATE_FIELD_MAX_CHARS = 255


def perms_to_text(perms: int) -> str:
    return format(perms & 0xF, "04b")


def perms_from_text(text: object) -> int:
    if not isinstance(text, str) or len(text) != 4 or any(c not in "01" for c in text):
        raise InvalidValue("permissions must be 4 characters of 0 and 1 (admin read/write, public read/write)")
    return int(text, 2)


@lru_cache(maxsize=4096)
def format_timestamp(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True, init=False)
class HandleValue:
    index: int
    type: str
    data: bytes
    ttl_s: int = DEFAULT_TTL_S
    timestamp: int = 0
    perms: int = DEFAULT_PERMS
    refs: tuple[tuple[str, int], ...] = ()

    # Written out because bulk registration builds millions of values: the generated frozen __init__
    # goes through object.__setattr__ per field, the slot setters below cost about half as much.
    def __init__(self, index: int, type: str, data: bytes, ttl_s: int = DEFAULT_TTL_S,  # noqa: A002
                 timestamp: int = 0, perms: int = DEFAULT_PERMS, refs: tuple[tuple[str, int], ...] = ()) -> None:
        _set_index(self, index)
        _set_type(self, type)
        _set_data(self, data)
        _set_ttl(self, ttl_s)
        _set_timestamp(self, timestamp)
        _set_perms(self, perms)
        _set_refs(self, refs)

    @property
    def public_read(self) -> bool:
        return bool(self.perms & PUBLIC_READ)

    @property
    def admin_read(self) -> bool:
        return bool(self.perms & ADMIN_READ)

    def stamped(self, now: float) -> HandleValue:
        """This value with the timestamp ``int(now)`` (itself when it has that stamp already)."""
        stamp = int(now)
        if self.timestamp == stamp:
            return self
        return _make(type(self), self.index, self.type, self.data, self.ttl_s, stamp, self.perms, self.refs)

    # -- compact form for storage and the wire (msgpack-able lists) ---------------------------------
    def to_list(self) -> list[Any]:
        # Every value of every answer and batch encoded comes here; most have no references, and the
        # comprehension over none is a call of its own.
        refs = self.refs
        return [self.index, self.type, self.data, self.ttl_s, self.timestamp, self.perms,
                [list(r) for r in refs] if refs else []]

    @staticmethod
    def to_lists(values: Iterable[HandleValue]) -> list[tuple[Any, ...]]:
        """The compact form of every value, as msgpack packs ``[v.to_list() for v in values]`` (a tuple packs
        as an array, references too), without a call per value: every answer encoded comes here."""
        return [(v.index, v.type, v.data, v.ttl_s, v.timestamp, v.perms, v.refs) for v in values]

    @classmethod
    def from_list(cls, raw: Sequence[Any], remember: bool = True, stamp: int | None = None) -> HandleValue:
        """Decode the compact form; raises ``InvalidValue`` on anything malformed. ``remember=False``
        leaves the memo of decoded values alone (a batch of new identifiers, whose values never repeat).
        ``stamp`` (with ``remember=False``): the timestamp to give the value instead of the one sent (a
        server stamps what it stores, so it decodes a write with its stamp, saving a copy of every value)."""
        return cls.from_lists((raw,), remember, stamp)[0]

    @classmethod
    def from_lists(cls, raws: Iterable[Any], remember: bool = True, stamp: int | None = None) -> list[HandleValue]:
        """``[from_list(raw, remember, stamp) for raw in raws]`` in one call: every answer a recursive node
        decodes comes here with a dozen values. The wire and the stores decode arrays as tuples, so a value's
        compact form is its own memo key: a value decoded before is found without unpacking it (an answer's
        values, all decoded before: 2.3 against 4.4 us with the fields unpacked into a key first)."""
        out: list[HandleValue] = []
        append, memo_get, make = out.append, _DECODED.get, _make
        for raw in raws:
            if type(raw) is list and len(raw) == 7 and raw[6] == []:
                raw = (*raw[:6], ())  # a list, as a caller may build one: the form decoders give
            if type(raw) is tuple and len(raw) == 7:
                if remember:
                    try:
                        value = memo_get(raw)
                    except TypeError:  # something unhashable in it: malformed, the general path says how
                        value = None
                    # Equal fields: a string or bytes equals only its own kind, but an int field could
                    # equal a float or a bool, which decoding refuses: those four are checked exactly.
                    if (value is not None and type(raw[0]) is int and type(raw[3]) is int
                            and type(raw[4]) is int and type(raw[5]) is int and type(value) is cls):
                        append(value)
                        continue
                index, vtype, data, ttl, ts, perms, refs = raw
                # The usual shape, checked with exact types (a bool or an int subclass takes the general
                # path): every answer a recursive node decodes is values like these.
                if (type(index) is int and type(vtype) is str and type(data) is bytes and type(ttl) is int
                        and type(ts) is int and type(perms) is int and type(refs) is tuple and not refs):
                    if not remember:
                        value = make(cls, index, vtype, data, ttl, ts if stamp is None else stamp, perms & 0xF, ())
                        check_value(value)
                        append(value)
                        continue
                    value = make(cls, index, vtype, data, ttl, ts, perms & 0xF, ())
                    check_value(value)
                    if len(data) <= DECODED_MAX_DATA:
                        if len(_DECODED) >= DECODED_ENTRIES:
                            _DECODED.clear()
                        _DECODED[raw] = value
                    append(value)
                    continue
            append(cls._from_list_general(raw, remember, stamp))
        return out

    @classmethod
    def _from_list_general(cls, raw: Any, remember: bool, stamp: int | None) -> HandleValue:
        """Any other shape: references, int subclasses, or something malformed (``InvalidValue``)."""
        try:
            index, vtype, data, ttl, ts, perms, refs = raw
            if not (isinstance(index, int) and isinstance(vtype, str) and isinstance(data, bytes)
                    and isinstance(ttl, int) and isinstance(ts, int) and isinstance(perms, int)):
                raise TypeError
            if (refs.__class__ is tuple or refs.__class__ is list) and not refs:  # the usual case: no references
                refs_t: tuple[tuple[str, int], ...] = ()
            else:
                if not isinstance(refs, list | tuple) or not all(
                        isinstance(r, list | tuple) and len(r) == 2 and isinstance(r[0], str)
                        and isinstance(r[1], int) and not isinstance(r[1], bool) for r in refs):
                    raise TypeError("references must be [[handle, index], ...]")
                refs_t = tuple((h, i) for h, i in refs)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidValue("malformed value") from exc
        value = cls(index, vtype, data, ttl, ts if stamp is None or remember else stamp, perms & 0xF, refs_t)
        check_value(value)
        return value

    # -- JSON ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "type": self.type,
            "data": data_to_json(self.type, self.data),
            "ttl": self.ttl_s,
            "timestamp": format_timestamp(self.timestamp),
        }
        # Written whenever it differs from what input would default to for this type (HS_SECKEY: 1100),
        # so that a value read back through JSON keeps its permissions.
        if self.perms != DEFAULT_PERMS or self.type == HS_SECKEY:
            out["permissions"] = perms_to_text(self.perms)
        if self.refs:
            out["references"] = [{"handle": h, "index": i} for h, i in self.refs]
        return out


# Values decoded from the compact form, by that form (exact types only, no references, small data): the
# same value arrives in many answers (a prefix's HS_ADMIN, a template's reference and its shared fields), so
# a recursive node decodes and checks it once and its cache holds one object for all of them. Values are
# immutable, so sharing one is safe. Bounded: emptied when full.
DECODED_ENTRIES = 8192
DECODED_MAX_DATA = 512
_DECODED: dict[tuple[Any, ...], HandleValue] = {}

_SLOTS = tuple(HandleValue.__dict__[f.name].__set__ for f in fields(HandleValue))  # in the fields' order
_set_index, _set_type, _set_data, _set_ttl, _set_timestamp, _set_perms, _set_refs = _SLOTS  # HandleValue.__init__
_NEW = object.__new__


def _make(cls: type[HandleValue], index: int, vtype: str, data: bytes, ttl: int, ts: int, perms: int,
          refs: tuple[tuple[str, int], ...]) -> HandleValue:
    """``cls(...)`` without the call machinery: ``HandleValue.__init__`` sets the same slots, but a call of
    the class binds its arguments through ``type.__call__`` (0.91 against 0.69 us a value here), and every
    value of every answer a recursive node decodes comes this way."""
    value = _NEW(cls)
    s_index, s_type, s_data, s_ttl, s_ts, s_perms, s_refs = _SLOTS
    s_index(value, index)
    s_type(value, vtype)
    s_data(value, data)
    s_ttl(value, ttl)
    s_ts(value, ts)
    s_perms(value, perms)
    s_refs(value, refs)
    return value


_CONTROL = re.compile(r"[\x00-\x1f]")
_check_admin = lru_cache(maxsize=4096)(AdminRef.from_bytes)  # a record's admin values repeat: decode once

#: Value types already found sound (a batch repeats a handful of types millions of times); bounded.
_GOOD_TYPES: set[str] = set()
_MAX_GOOD_TYPES = 4096
_STRUCTURED = frozenset((HS_ADMIN, HS_SITE, HS_VLIST))


def _check_type(vtype: str) -> None:
    if not vtype or len(vtype) > MAX_TYPE_CHARS or _CONTROL.search(vtype) is not None:
        raise InvalidValue("value type must be 1-255 printable characters")
    if len(_GOOD_TYPES) < _MAX_GOOD_TYPES:
        _GOOD_TYPES.add(vtype)


def check_value(value: HandleValue) -> None:
    """Validate one value's fields (not its place in a record)."""
    index, vtype, data = value.index, value.type, value.data
    if index <= 0 or index > 2**31 - 1:
        raise InvalidValue(f"value index must be between 1 and {2**31 - 1}, got {index}")
    if vtype not in _GOOD_TYPES:
        _check_type(vtype)
    if len(data) > MAX_DATA_BYTES:
        raise InvalidValue(f"value data longer than {MAX_DATA_BYTES} bytes")
    if not 0 <= value.ttl_s <= MAX_TTL_S:
        raise InvalidValue("ttl must be between 0 and 2**31-1 seconds")
    if (index >= TEMPLATE_FIELD_MIN_INDEX and len(data) > TEMPLATE_FIELD_MAX_CHARS
            and _is_text(data) and len(data.decode("utf-8")) > TEMPLATE_FIELD_MAX_CHARS):
        raise InvalidValue(f"template field {index} longer than {TEMPLATE_FIELD_MAX_CHARS} characters")
    # Structured types must hold data that decodes.
    if vtype in _STRUCTURED:
        if vtype == HS_ADMIN:
            _check_admin(data)
        elif vtype == HS_SITE:
            SiteInfo.from_bytes(data)
        else:
            decode_vlist(data)


class CheckedValues(tuple[HandleValue, ...]):
    """Values already checked as a record (each value sound, indexes unique): what ``check_values`` and
    ``values_from_json`` return. Values are immutable and so is a tuple, so a checked set stays checked
    and ``check_values`` hands it back at once: a batch parsed and checked at the surface is not checked
    again by the node. Build one only through those functions."""

    __slots__ = ()


def check_values(values: Iterable[HandleValue]) -> CheckedValues:
    """Validate a set of values as a record: each value sound, indexes unique."""
    if values.__class__ is CheckedValues:
        return values  # type: ignore[return-value]
    seen: set[int] = set()
    out = []
    for v in values:
        check_value(v)
        if v.index in seen:
            raise InvalidValue(f"duplicate value index {v.index}")
        seen.add(v.index)
        out.append(v)
    return CheckedValues(out)


_INDEX = attrgetter("index")


def checked_decoded(values: list[HandleValue]) -> CheckedValues | tuple[HandleValue, ...]:
    """Values each checked as they were decoded (``HandleValue.from_list``) as a record's values: checked
    when their indexes are unique; a plain tuple otherwise, which ``check_values`` will refuse and name."""
    if len(set(map(_INDEX, values))) == len(values):  # no comprehension: every decoded answer comes here
        return CheckedValues(values)
    return tuple(values)


# -- data formats ------------------------------------------------------------------------------------

def _is_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def data_to_json(vtype: str, data: bytes) -> dict[str, Any]:
    try:
        if vtype == HS_ADMIN:
            return {"format": "admin", "value": AdminRef.from_bytes(data).to_json()}
        if vtype == HS_SITE:
            return {"format": "site", "value": SiteInfo.from_bytes(data).to_json()}
        if vtype == HS_VLIST:
            return {"format": "vlist", "value": [{"handle": h, "index": i} for h, i in decode_vlist(data)]}
    except InvalidValue:
        pass  # stored before validation existed, or foreign: show the raw bytes
    if _is_text(data):
        return {"format": "string", "value": data.decode("utf-8")}
    return {"format": "base64", "value": base64.b64encode(data).decode("ascii")}


def data_from_json(vtype: str, raw: object) -> bytes:
    """Decode the ``data`` member of a JSON value into bytes. Raises ``InvalidValue``."""
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if not isinstance(raw, dict):
        raise InvalidValue("value data must be a string or an object with format and value")
    fmt = raw.get("format", "string")
    value = raw.get("value")
    if fmt == "string":
        if not isinstance(value, str):
            raise InvalidValue("string data needs a string value")
        return value.encode("utf-8")
    if fmt == "base64":
        if not isinstance(value, str):
            raise InvalidValue("base64 data needs a string value")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValue("base64 data is not valid base64") from None
    if fmt == "hex":
        if not isinstance(value, str):
            raise InvalidValue("hex data needs a string value")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise InvalidValue("hex data is not valid hexadecimal") from None
    if fmt == "admin":
        return AdminRef.from_json(value).to_bytes()
    if fmt == "site":
        return SiteInfo.from_json(value).to_bytes()
    if fmt == "vlist":
        if not isinstance(value, list):
            raise InvalidValue("vlist data needs a list of {handle, index}")
        refs = []
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("handle"), str):
                raise InvalidValue("vlist entries need handle and index")
            refs.append((item["handle"], parse_index(item.get("index"), what="vlist index")))
        return encode_vlist(refs)
    raise InvalidValue(f"unknown data format {fmt!r}")


def encode_vlist(refs: Sequence[tuple[str, int]]) -> bytes:
    out = bytearray(struct.pack(">I", len(refs)))
    for handle, index in refs:
        h = handle.encode("utf-8")
        out += struct.pack(">I", len(h)) + h + struct.pack(">I", index)
    return bytes(out)


def decode_vlist(data: bytes) -> list[tuple[str, int]]:
    try:
        (n,) = struct.unpack_from(">I", data, 0)
        pos, out = 4, []
        for _ in range(n):
            (hl,) = struct.unpack_from(">I", data, pos)
            if pos + 4 + hl > len(data):
                raise ValueError
            handle = data[pos + 4 : pos + 4 + hl].decode("utf-8")
            (index,) = struct.unpack_from(">I", data, pos + 4 + hl)
            out.append((handle, index))
            pos += 8 + hl
        if pos != len(data):
            raise ValueError
        return out
    except (struct.error, ValueError, UnicodeDecodeError):
        raise InvalidValue("HS_VLIST data is not a valid value list") from None


def value_from_json(raw: object, timestamp: int = 0) -> HandleValue:
    """One value from its JSON form. Client timestamps are ignored; the server stamps values (a server
    that knows its stamp already passes it as ``timestamp``, saving a copy of every value)."""
    if not isinstance(raw, dict):
        raise InvalidValue("each value must be a JSON object")
    # The usual cases (an integer index, string data) are tested first: bulk registration parses
    # millions of values, and every other spelling takes the general path below.
    get = raw.get
    index = get("index")
    if index.__class__ is not int:
        if "index" not in raw:
            raise InvalidValue("value has no index")
        index = parse_index(index, what="value index")
    vtype = get("type")
    if vtype.__class__ is not str or not vtype:
        raise InvalidValue(f"value {index} has no type")
    data = get("data")
    if data.__class__ is str and vtype not in _STRUCTURED:
        data = data.encode("utf-8")  # type: ignore[union-attr]
    elif data.__class__ is dict and data.get("format") == "string" and len(data) == 2 \
            and (text := data.get("value")).__class__ is str:  # type: ignore[union-attr]
        data = text.encode("utf-8")  # type: ignore[union-attr]
    else:
        if "data" not in raw:
            raise InvalidValue(f"value {index} has no data")
        data = data_from_json(vtype, data)
    ttl = get("ttl", DEFAULT_TTL_S)
    if ttl.__class__ is not int:
        if isinstance(ttl, str) and ttl.isascii() and ttl.isdigit() and len(ttl) <= 10:
            ttl = int(ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise InvalidValue(f"value {index} ttl must be an integer")
    perms = get("permissions")
    if perms is not None or "permissions" in raw:
        perms = perms_from_text(perms)
    else:
        perms = SECRET_PERMS if vtype == HS_SECKEY else DEFAULT_PERMS
    refs: tuple[tuple[str, int], ...] = ()
    if get("references"):
        rl = raw["references"]
        if not isinstance(rl, list) or not all(isinstance(r, dict) and isinstance(r.get("handle"), str) for r in rl):
            raise InvalidValue("references must be a list of {handle, index}")
        refs = tuple((r["handle"], parse_index(r.get("index"), what="reference index")) for r in rl)
    value = _make(HandleValue, index, vtype, data, ttl, timestamp, perms, refs)
    check_value(value)
    return value


def values_from_json(raw: object, timestamp: int = 0) -> CheckedValues:
    """A record's values from JSON: each value checked (``value_from_json``), indexes unique."""
    if not isinstance(raw, list):
        raise InvalidValue("values must be a JSON list")
    out = [value_from_json(v, timestamp) for v in raw]
    if len({v.index for v in out}) != len(out):
        check_values(out)  # names the duplicate index
    return CheckedValues(out)


# -- convenience constructors ----------------------------------------------------------------------

def admin_value(index: int, admin_handle: str, admin_index: int, perms: int, *, ttl_s: int = DEFAULT_TTL_S) -> HandleValue:
    from .admin import AdminPerm

    return HandleValue(index, HS_ADMIN, AdminRef(admin_handle, admin_index, AdminPerm(perms)).to_bytes(), ttl_s)


def seckey_value(index: int, secret: str) -> HandleValue:
    return HandleValue(index, HS_SECKEY, secret.encode("utf-8"), DEFAULT_TTL_S, 0, SECRET_PERMS)


def string_value(index: int, vtype: str, text: str, *, ttl_s: int = DEFAULT_TTL_S) -> HandleValue:
    return HandleValue(index, vtype, text.encode("utf-8"), ttl_s)


def site_value(index: int, site: SiteInfo, *, ttl_s: int = DEFAULT_TTL_S) -> HandleValue:
    return HandleValue(index, HS_SITE, site.to_bytes(), ttl_s)
