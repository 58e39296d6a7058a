"""The pure model: identifiers, values and their JSON forms, HS_ADMIN, HS_SITE and the record codec.

Table-driven unit tests plus hypothesis properties. The decoder rule (docs/architecture.md, "Habits") is checked on
arbitrary bytes: a decoder returns a value or raises its own error, nothing else, ever.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import re

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from idresolve.core.admin import (
    ALL_PERMS,
    DEFAULT_PERMS_TEXT,
    AdminPerm,
    AdminRef,
    parse_index,
    perms_from_text,
    perms_to_text,
)
from idresolve.core.codes import ResponseCode, http_status
from idresolve.core.errors import (
    DecodeError,
    HandleError,
    InvalidHandle,
    InvalidValue,
    PeerError,
)
from idresolve.core.handles import (
    MAX_HANDLE_CHARS,
    check_prefix,
    derived_prefixes,
    fold,
    is_under,
    parent_prefix,
    parse_handle,
    prefix_handle,
    prefix_of_record,
)
from idresolve.core.records import MAX_RECORD_BYTES, Record
from idresolve.core.site import Interface, Server, SiteInfo
from idresolve.core.values import (
    DEFAULT_PERMS,
    DEFAULT_TTL_S,
    SECRET_PERMS,
    HandleValue,
    check_value,
    data_to_json,
    decode_vlist,
    encode_vlist,
    format_timestamp,
    value_from_json,
    values_from_json,
)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -------------------------------------------------------------------------------------------

# Printable text without the characters handles refuse (C0, DEL, C1, surrogates, U+FFFD).
_printable = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffd")
segment = st.text(st.sampled_from("0123456789abcdefXYZ-_"), min_size=1, max_size=6)
prefixes = st.lists(segment, min_size=1, max_size=4).map(".".join)
suffixes = st.text(_printable, min_size=1, max_size=40)
indexes = st.integers(1, 2**31 - 1)
small_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)

admin_refs = st.builds(
    AdminRef,
    handle=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    index=indexes,
    perms=st.integers(0, 0xFFF).map(AdminPerm),
)

# HS_SITE writes IPv4 as the reference does (12 zero octets + 4), so IPv6 addresses in ::/96 other than :: and
# ::1 read back as IPv4, and 0.0.0.0 / 0.0.0.1 as :: / ::1: the format cannot tell them apart.
ipv4 = st.ip_addresses(v=4).filter(lambda a: int(a) > 1).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None and (int(a) >> 32 or int(a) <= 1)).map(str)
interfaces = st.builds(Interface, protocol=st.sampled_from(["UDP", "TCP", "HTTP", "HTTPS"]),
                       port=st.integers(1, 65535), query=st.booleans(), admin=st.booleans())


@st.composite
def sites(draw: st.DrawFn) -> SiteInfo:
    ids = draw(st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=4))
    servers = tuple(
        Server(server_id=i, address=draw(ipv4 | ipv6), interfaces=tuple(draw(st.lists(interfaces, max_size=3))),
               host=draw(st.none() | st.text(min_size=1, max_size=20)), public_key=draw(st.binary(max_size=16)))
        for i in ids
    )
    attrs = tuple(draw(st.lists(st.tuples(small_text.filter(lambda k: not k.startswith("host.")), small_text),
                                max_size=3)))
    return SiteInfo(servers=servers, serial=draw(st.integers(0, 65535)), version=draw(st.integers(0, 65535)),
                    protocol_version=(draw(st.integers(0, 255)), draw(st.integers(0, 255))),
                    primary=draw(st.booleans()), multi_primary=draw(st.booleans()), attributes=attrs)


vlists = st.lists(st.tuples(small_text, indexes), max_size=4)
plain_types = st.sampled_from(["URL", "EMAIL", "DESC", "HS_SECKEY", "HS_PUBKEY", "HS_SERV", "HS_ALIAS", "产品"]) | \
    st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
        lambda t: t not in ("HS_ADMIN", "HS_SITE", "HS_VLIST"))


@st.composite
def handle_values(draw: st.DrawFn, *, timestamp: bool = True) -> HandleValue:
    kind = draw(st.sampled_from(["plain", "plain", "plain", "admin", "site", "vlist"]))
    if kind == "admin":
        vtype, data = "HS_ADMIN", draw(admin_refs).to_bytes()
    elif kind == "site":
        vtype, data = "HS_SITE", draw(sites()).to_bytes()
    elif kind == "vlist":
        vtype, data = "HS_VLIST", encode_vlist(draw(vlists))
    else:
        vtype, data = draw(plain_types), draw(st.binary(max_size=200) | st.text(max_size=60).map(str.encode))
    return HandleValue(
        index=draw(indexes), type=vtype, data=data, ttl_s=draw(st.integers(0, 2**31 - 1)),
        timestamp=draw(st.integers(0, 4_000_000_000)) if timestamp else 0, perms=draw(st.integers(0, 15)),
        refs=tuple(draw(st.lists(st.tuples(small_text, indexes), max_size=2))),
    )


def unique_values(**kw: bool) -> st.SearchStrategy[tuple[HandleValue, ...]]:
    return st.lists(handle_values(**kw), max_size=5, unique_by=lambda v: v.index).map(tuple)


# -- codes and errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "status"), [
    (ResponseCode.SUCCESS, 200), (ResponseCode.ERROR, 500), (ResponseCode.SERVER_TOO_BUSY, 503),
    (ResponseCode.PROTOCOL_ERROR, 400), (ResponseCode.HANDLE_NOT_FOUND, 404),
    (ResponseCode.HANDLE_ALREADY_EXISTS, 409), (ResponseCode.INVALID_HANDLE, 400),
    (ResponseCode.VALUES_NOT_FOUND, 400), (ResponseCode.VALUE_ALREADY_EXISTS, 409),
    (ResponseCode.INVALID_VALUE, 400), (ResponseCode.SERVER_NOT_RESP, 400),
    (ResponseCode.AUTHENTICATION_NEEDED, 401), (ResponseCode.INVALID_ADMIN, 403),
    (ResponseCode.INSUFFICIENT_PERMISSIONS, 403), (12345, 400),
])
def test_http_status_of_codes(code: int, status: int) -> None:
    assert http_status(code) == status


def test_unknown_code_numbers_decode_safely() -> None:
    assert ResponseCode.of(100) is ResponseCode.HANDLE_NOT_FOUND
    assert ResponseCode.of(999) == 999


@pytest.mark.parametrize(("exc", "code"), [
    (InvalidHandle("x"), 102), (InvalidValue("x"), 202), (DecodeError("x"), 4), (PeerError("x"), 4),
])
def test_error_classes_carry_their_codes(exc: HandleError, code: int) -> None:
    assert exc.code == code
    assert isinstance(exc, HandleError)


# -- handles ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "prefix", "suffix", "key", "is_prefix_record"), [
    ("88.100/x", "88.100", "x", "88.100/x", False),
    ("88.118.8/JXDY2106023", "88.118.8", "JXDY2106023", "88.118.8/jxdy2106023", False),
    ("88.100/a/b", "88.100", "a/b", "88.100/a/b", False),
    ("88.100/产品-Ä1", "88.100", "产品-Ä1", "88.100/产品-Ä1", False),
    ("88.100/with space", "88.100", "with space", "88.100/with space", False),
    ("0.NA/88.100", "0.NA", "88.100", "0.na/88.100", True),
    ("0.na/88.100", "0.na", "88.100", "0.na/88.100", True),
    ("88/" + "x" * (MAX_HANDLE_CHARS - 3), "88", "x" * (MAX_HANDLE_CHARS - 3), "88/" + "x" * 252, False),
])
def test_parse_handle_valid(text: str, prefix: str, suffix: str, key: str, is_prefix_record: bool) -> None:
    h = parse_handle(text)
    assert (h.text, h.prefix, h.suffix, h.key, h.is_prefix_record) == (text, prefix, suffix, key, is_prefix_record)
    assert str(h) == text
    assert h.folded_prefix == fold(prefix)


@pytest.mark.parametrize("text", [
    "", "noslash", "88.100/", "/x", "88..100/x", ".88/x", "88./x", "88 100/x", "88\t100/x",
    "88.100/a\x01", "88.100/a\x7f", "88.100/\x85", "88.100/\ufffd", "88.100/\ud800", "88.100/a\nb",
    "88/" + "x" * (MAX_HANDLE_CHARS - 2),
])
def test_parse_handle_invalid(text: str) -> None:
    with pytest.raises(InvalidHandle) as info:
        parse_handle(text)
    assert info.value.code == ResponseCode.INVALID_HANDLE


def test_parse_handle_messages() -> None:
    with pytest.raises(InvalidHandle, match="Empty handle invalid"):
        parse_handle("")
    with pytest.raises(InvalidHandle) as info:
        parse_handle("88..1/x")
    assert info.value.handle == "88..1/x"


@given(prefixes, suffixes)
@FAST
def test_parse_handle_property(prefix: str, suffix: str) -> None:
    text = f"{prefix}/{suffix}"
    assume(len(text) <= MAX_HANDLE_CHARS)
    h = parse_handle(text)
    assert (h.text, h.prefix, h.suffix) == (text, prefix, suffix)
    assert h.key == fold(text)
    assert parse_handle(text.upper()).key == parse_handle(text.lower()).key == fold(text.upper()) or not text.isascii()


@given(st.text(max_size=300))
@FAST
def test_parse_handle_arbitrary_text_never_raises_anything_else(text: str) -> None:
    try:
        h = parse_handle(text)
    except InvalidHandle:
        return
    assert h.text == text and "/" in text and len(text) <= MAX_HANDLE_CHARS


@pytest.mark.parametrize(("text", "folded"), [
    ("ABC", "abc"), ("88.100/JXDY", "88.100/jxdy"), ("ÄÖÜ", "ÄÖÜ"), ("Straße", "straße"),
    ("İ", "İ"), ("产品ABC", "产品abc"), ("", ""),
])
def test_fold_folds_ascii_letters_only(text: str, folded: str) -> None:
    assert fold(text) == folded


@given(st.text(max_size=60))
@FAST
def test_fold_property(text: str) -> None:
    expected = "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)
    assert fold(text) == expected
    assert fold(fold(text)) == fold(text)
    assert len(fold(text)) == len(text)


@pytest.mark.parametrize(("prefix", "derived"), [
    ("88", ("88",)), ("88.118", ("88", "88.118")), ("88.118.8", ("88", "88.118", "88.118.8")),
])
def test_derived_prefixes(prefix: str, derived: tuple[str, ...]) -> None:
    assert derived_prefixes(prefix) == derived
    assert derived_prefixes(prefix) is derived_prefixes(prefix)  # made once


@given(prefixes)
@FAST
def test_derived_prefixes_property(prefix: str) -> None:
    chain = derived_prefixes(prefix)
    assert chain[-1] == prefix
    assert len(chain) == prefix.count(".") + 1
    for parent, child in zip(chain, chain[1:], strict=False):
        assert child.startswith(parent + ".")
        assert parent_prefix(child) == parent
        assert is_under(child, parent) and not is_under(parent, child)
    assert parent_prefix(chain[0]) is None


@pytest.mark.parametrize(("prefix", "ancestor", "under"), [
    ("88.118.8", "88", True), ("88.118", "88.118", True), ("88.1180", "88.118", False),
    ("88.118", "88.118.8", False), ("88.ABC", "88.abc", True), ("89", "88", False),
])
def test_is_under(prefix: str, ancestor: str, under: bool) -> None:
    assert is_under(prefix, ancestor) is under


def test_prefix_helpers() -> None:
    assert prefix_handle("88.100") == "0.NA/88.100"
    assert prefix_of_record(parse_handle("0.NA/88.100.1")) == "88.100.1"
    assert prefix_of_record(parse_handle("88.100.1/x")) == "88.100.1"
    assert check_prefix("88.100") == "88.100"
    for bad in ("", "88..1", "88 1", "88/1", ".88", "88.", "\x0188", "x" * 256):
        with pytest.raises(InvalidHandle):
            check_prefix(bad)


# -- admin ------------------------------------------------------------------------------------------------

def test_admin_permission_bits_match_the_domain_table() -> None:
    names = ["ADD_HANDLE", "DELETE_HANDLE", "ADD_DERIVED_PREFIX", "DELETE_DERIVED_PREFIX", "MODIFY_VALUE",
             "REMOVE_VALUE", "ADD_VALUE", "MODIFY_ADMIN", "REMOVE_ADMIN", "ADD_ADMIN", "READ_VALUE", "LIST_HANDLES"]
    for bit, name in enumerate(names):
        assert AdminPerm[name] == 1 << bit
        # In JSON bit 11 is written first: the bit's character is at position 11 - bit.
        text = perms_to_text(AdminPerm[name])
        assert text.index("1") == 11 - bit and text.count("1") == 1
    assert perms_to_text(ALL_PERMS) == "1" * 12


def test_default_admin_permissions() -> None:
    perms = perms_from_text(DEFAULT_PERMS_TEXT)
    assert not perms & AdminPerm.LIST_HANDLES
    assert not perms & (AdminPerm.ADD_DERIVED_PREFIX | AdminPerm.DELETE_DERIVED_PREFIX)
    for p in (AdminPerm.ADD_HANDLE, AdminPerm.DELETE_HANDLE, AdminPerm.READ_VALUE, AdminPerm.ADD_VALUE,
              AdminPerm.MODIFY_VALUE, AdminPerm.REMOVE_VALUE, AdminPerm.ADD_ADMIN, AdminPerm.MODIFY_ADMIN,
              AdminPerm.REMOVE_ADMIN):
        assert perms & p


@given(st.integers(0, 0xFFF))
@FAST
def test_admin_perms_text_round_trip(bits: int) -> None:
    text = perms_to_text(bits)
    assert len(text) == 12 and set(text) <= {"0", "1"}
    assert perms_from_text(text) == bits


@pytest.mark.parametrize("text", ["", "1" * 11, "1" * 13, "01111111001x", "０１１１１１１１００１１"])
def test_admin_perms_text_invalid(text: str) -> None:
    with pytest.raises(InvalidValue):
        perms_from_text(text)


@given(admin_refs)
@FAST
def test_admin_ref_bytes_and_json_round_trip(ref: AdminRef) -> None:
    assert AdminRef.from_bytes(ref.to_bytes()) == ref
    assert AdminRef.from_json(orjson.loads(orjson.dumps(ref.to_json()))) == ref


def test_admin_ref_json_shape_and_defaults() -> None:
    ref = AdminRef.from_json({"handle": "88.100/ADMIN", "index": "200"})
    assert ref == AdminRef("88.100/ADMIN", 200, perms_from_text(DEFAULT_PERMS_TEXT))
    assert ref.to_json() == {"handle": "88.100/ADMIN", "index": 200, "permissions": DEFAULT_PERMS_TEXT}
    assert AdminRef.from_json({"handle": "88.100/ADMIN"}).index == 300


@pytest.mark.parametrize("value", [
    None, "88.100/ADMIN", [], {}, {"handle": ""}, {"handle": 5}, {"handle": "h", "index": 0},
    {"handle": "h", "index": "x"}, {"handle": "h", "permissions": 111}, {"handle": "h", "permissions": "11"},
])
def test_admin_ref_from_json_invalid(value: object) -> None:
    with pytest.raises(InvalidValue):
        AdminRef.from_json(value)


def test_admin_ref_from_bytes_refuses_trailing_and_truncated() -> None:
    blob = AdminRef("88.100/A", 300, ALL_PERMS).to_bytes()
    for bad in (blob + b"\0", blob[:-1], b"", blob[:5]):
        with pytest.raises(InvalidValue):
            AdminRef.from_bytes(bad)


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_admin_ref_from_arbitrary_bytes(blob: bytes) -> None:
    try:
        ref = AdminRef.from_bytes(blob)
    except InvalidValue:
        return
    assert ref.to_bytes()[6:] == blob[6:]  # same handle and index; perms are masked to 12 bits


@pytest.mark.parametrize(("raw", "expected"), [
    (1, 1), ("200", 200), (" 7 ", 7), (2**31 - 1, 2**31 - 1), ("2147483647", 2**31 - 1),
])
def test_parse_index_valid(raw: object, expected: int) -> None:
    assert parse_index(raw) == expected


@pytest.mark.parametrize("raw", [
    0, -1, 2**31, "0", "-5", "--5", "abc", "", "1.5", 1.5, True, None, "²", "١٢", "9" * 12, [1],
])
def test_parse_index_invalid(raw: object) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_index(raw)
    assert info.value.code == ResponseCode.INVALID_VALUE


# -- site -------------------------------------------------------------------------------------------------

@given(sites())
@FAST
def test_site_bytes_round_trip(site: SiteInfo) -> None:
    assert SiteInfo.from_bytes(site.to_bytes()) == site


@given(sites())
@FAST
def test_site_json_round_trip(site: SiteInfo) -> None:
    assert SiteInfo.from_json(orjson.loads(orjson.dumps(site.to_json()))) == site


@given(st.binary(max_size=200))
@settings(max_examples=400, deadline=None)
def test_site_from_arbitrary_bytes_raises_invalid_value_only(blob: bytes) -> None:
    try:
        site = SiteInfo.from_bytes(blob)
    except InvalidValue:
        return
    assert isinstance(site, SiteInfo)


@given(sites(), st.data())
@FAST
def test_site_from_damaged_encodings(site: SiteInfo, data: st.DataObject) -> None:
    blob = bytearray(site.to_bytes())
    cut = data.draw(st.integers(0, len(blob)))
    for i in data.draw(st.lists(st.integers(0, max(len(blob) - 1, 0)), max_size=4)):
        if blob:
            blob[i] = data.draw(st.integers(0, 255))
    for candidate in (bytes(blob), bytes(blob[:cut]), bytes(blob) + b"\0"):
        with contextlib.suppress(InvalidValue):  # anything else escapes and fails the test
            SiteInfo.from_bytes(candidate)


def test_site_json_shape_and_endpoint() -> None:
    site = SiteInfo.from_json({
        "servers": [{"serverId": 1, "address": "127.0.0.1", "host": "sec-1",
                     "interfaces": [{"protocol": "tcp", "port": 2641}, {"protocol": "HTTP", "port": 8000}]}],
    })
    assert site.endpoint("TCP") == ("sec-1", 2641)
    assert site.endpoint("HTTP") == ("sec-1", 8000)
    assert site.endpoint("UDP") is None
    j = site.to_json()
    assert j["servers"][0]["interfaces"][0] == {"query": True, "admin": True, "protocol": "TCP", "port": 2641}
    assert j["protocolVersion"] == "2.10" and j["primarySite"] is True


@pytest.mark.parametrize("value", [
    None, [], {"servers": 5}, {"servers": [{"interfaces": []}]}, {"servers": [{"address": "not-an-ip"}]},
    {"servers": [{"address": "1.2.3.4", "interfaces": [{"protocol": "FTP", "port": 21}]}]},
    {"servers": [{"address": "1.2.3.4", "interfaces": [{"protocol": "TCP", "port": 0}]}]},
    {"servers": [{"address": "1.2.3.4", "interfaces": [{"protocol": "TCP", "port": 70000}]}]},
    {"servers": [{"address": "1.2.3.4", "interfaces": [{"protocol": "TCP", "port": "x"}]}]},
    {"servers": [{"address": "1.2.3.4", "interfaces": [{"protocol": "TCP", "port": "²"}]}]},
    {"servers": [{"address": "1.2.3.4", "interfaces": [5]}]},
    # Fields the binary form cannot hold must be refused, not crash the encoder later.
    {"servers": [{"serverId": 2**32, "address": "1.2.3.4"}]},
    {"servers": [{"serverId": -1, "address": "1.2.3.4"}]},
    {"servers": [{"address": "1.2.3.4", "host": 5}]},
    {"servers": [{"address": "1.2.3.4", "publicKey": {"format": "base64", "value": "!!"}}]},
    {"serialNumber": 65536}, {"version": -1}, {"protocolVersion": "2.300"}, {"protocolVersion": "x"},
    {"attributes": [{"name": "host.1", "value": "evil"}]}, {"attributes": [{"value": "x"}]},
])
def test_site_from_json_invalid(value: object) -> None:
    with pytest.raises(InvalidValue):
        SiteInfo.from_json(value).to_bytes()


# -- values -----------------------------------------------------------------------------------------------

ADMIN_JSON = {"handle": "88.100/ADMIN", "index": 300, "permissions": "011111110011"}
SITE_JSON = {"servers": [{"serverId": 1, "address": "10.0.0.1", "interfaces": [{"protocol": "TCP", "port": 2641}]}]}


@pytest.mark.parametrize(("vtype", "data", "expected_bytes", "out_format"), [
    ("URL", "https://example.com", b"https://example.com", "string"),
    ("URL", {"format": "string", "value": "https://e.com"}, b"https://e.com", "string"),
    ("URL", {"value": "no format means string"}, b"no format means string", "string"),
    ("DESC", {"format": "string", "value": "产品"}, "产品".encode(), "string"),
    ("BIN", {"format": "base64", "value": base64.b64encode(b"\x00\xff").decode()}, b"\x00\xff", "base64"),
    ("BIN", {"format": "hex", "value": "00ff10"}, b"\x00\xff\x10", "base64"),
    ("DESC", {"format": "hex", "value": "6869"}, b"hi", "string"),
    ("HS_ADMIN", {"format": "admin", "value": ADMIN_JSON}, AdminRef.from_json(ADMIN_JSON).to_bytes(), "admin"),
    ("HS_SITE", {"format": "site", "value": SITE_JSON}, SiteInfo.from_json(SITE_JSON).to_bytes(), "site"),
    ("HS_VLIST", {"format": "vlist", "value": [{"handle": "88.100/a", "index": "300"}]},
     encode_vlist([("88.100/a", 300)]), "vlist"),
])
def test_value_from_json_every_format(vtype: str, data: object, expected_bytes: bytes, out_format: str) -> None:
    v = value_from_json({"index": 1, "type": vtype, "data": data})
    assert v.data == expected_bytes
    assert (v.ttl_s, v.timestamp, v.perms) == (DEFAULT_TTL_S, 0, DEFAULT_PERMS)
    out = v.to_json()
    assert out["data"]["format"] == out_format
    assert value_from_json(out).data == expected_bytes


def test_value_from_json_details() -> None:
    v = value_from_json({"index": "200", "type": "HS_ADMIN", "ttl": "60",
                         "data": {"format": "admin", "value": {"handle": "0.NA/88.100", "index": "200"}},
                         "timestamp": "2001-01-01T00:00:00Z"})
    assert (v.index, v.ttl_s, v.timestamp) == (200, 60, 0)  # client timestamps are ignored
    assert AdminRef.from_bytes(v.data).index == 200
    seckey = value_from_json({"index": 300, "type": "HS_SECKEY", "data": "s"})
    assert seckey.perms == SECRET_PERMS and not seckey.public_read
    assert seckey.to_json()["permissions"] == "1100"
    public = value_from_json({"index": 2, "type": "URL", "data": "x", "permissions": "1111"})
    assert public.perms == 15 and public.to_json()["permissions"] == "1111"
    refs = value_from_json({"index": 2, "type": "URL", "data": "x", "references": [{"handle": "88.1/a", "index": 1}]})
    assert refs.refs == (("88.1/a", 1),)
    assert refs.to_json()["references"] == [{"handle": "88.1/a", "index": 1}]


def test_value_to_json_shape() -> None:
    v = HandleValue(1, "URL", b"https://e.com", 86400, 1_700_000_000)
    assert v.to_json() == {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://e.com"},
                           "ttl": 86400, "timestamp": "2023-11-14T22:13:20Z"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", format_timestamp(0))
    assert data_to_json("URL", b"\xff\xfe") == {"format": "base64", "value": "//4="}
    assert data_to_json("URL", b"a\x00b")["format"] == "base64"
    # Structured types whose bytes do not decode are shown raw, never crash the answer.
    assert data_to_json("HS_ADMIN", b"junk") == {"format": "string", "value": "junk"}


def _bad(**changes: object) -> dict[str, object]:
    value: dict[str, object] = {"index": 1, "type": "URL", "data": "x"}
    for k, v in changes.items():
        if v is _DROP:
            value.pop(k)
        else:
            value[k] = v
    return value


_DROP = object()


@pytest.mark.parametrize("raw", [
    "not an object", [1], None,
    _bad(index=_DROP), _bad(index=0), _bad(index=-1), _bad(index=2**31), _bad(index="abc"), _bad(index="--5"),
    _bad(index="²"), _bad(index=True), _bad(index=1.5), _bad(index=None),
    _bad(type=_DROP), _bad(type=""), _bad(type=5), _bad(type="A\x01B"), _bad(type="T" * 256),
    _bad(data=_DROP), _bad(data=5), _bad(data=None), _bad(data=["x"]),
    _bad(data={"format": "string", "value": 5}), _bad(data={"format": "base64", "value": "!!!"}),
    _bad(data={"format": "base64", "value": 5}), _bad(data={"format": "hex", "value": "zz"}),
    _bad(data={"format": "hex", "value": "abc"}), _bad(data={"format": "nope", "value": "x"}),
    _bad(data={"format": ["list"], "value": "x"}),
    _bad(data={"format": "admin", "value": {"index": 300}}), _bad(data={"format": "admin", "value": "x"}),
    _bad(data={"format": "site", "value": {"servers": [{"address": "bad"}]}}),
    _bad(data={"format": "site", "value": {"servers": [{"serverId": 2**40, "address": "1.2.3.4"}]}}),
    _bad(data={"format": "vlist", "value": "x"}), _bad(data={"format": "vlist", "value": [{"index": 1}]}),
    _bad(data={"format": "vlist", "value": [{"handle": "a", "index": 0}]}),
    _bad(ttl=-1), _bad(ttl=2**31), _bad(ttl="x"), _bad(ttl=1.5), _bad(ttl=True), _bad(ttl="²"), _bad(ttl="9" * 5000),
    _bad(permissions="11"), _bad(permissions="abcd"), _bad(permissions=1110),
    _bad(references="x"), _bad(references=[{"index": 1}]), _bad(references=[{"handle": "a", "index": -1}]),
    _bad(data="x" * (64 * 1024 + 1)),
    _bad(index=2000, data="y" * 256),  # metadata-template fields hold at most 255 characters
    _bad(type="HS_ADMIN", data="not an admin reference"),
    _bad(type="HS_SITE", data="not a site"), _bad(type="HS_VLIST", data="x"),
])
def test_value_from_json_invalid(raw: object) -> None:
    with pytest.raises(InvalidValue) as info:
        value_from_json(raw)
    assert info.value.code == ResponseCode.INVALID_VALUE


def test_values_from_json_record_rules() -> None:
    ok = values_from_json([{"index": 1, "type": "URL", "data": "a"}, {"index": 2, "type": "URL", "data": "b"}])
    assert [v.index for v in ok] == [1, 2]
    assert values_from_json([]) == ()
    for bad in ("x", {"values": []}, None,
                [{"index": 1, "type": "URL", "data": "a"}, {"index": "1", "type": "EMAIL", "data": "b"}]):
        with pytest.raises(InvalidValue):
            values_from_json(bad)


@given(handle_values(timestamp=False))
@FAST
def test_value_json_round_trip(value: HandleValue) -> None:
    wire = orjson.loads(orjson.dumps(value.to_json()))
    assert value_from_json(wire) == value


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                        ["index", "type", "data", "format", "value", "ttl", "permissions", "references", "handle",
                         "servers", "address", "interfaces", "port", "protocol"]), c, max_size=5), max_leaves=20))
@settings(max_examples=300, deadline=None)
def test_value_from_arbitrary_json_raises_invalid_value_only(raw: object) -> None:
    try:
        value = value_from_json(raw)
    except InvalidValue:
        return
    check_value(value)


@given(st.binary(max_size=100))
@FAST
def test_decode_vlist_arbitrary_bytes(blob: bytes) -> None:
    try:
        refs = decode_vlist(blob)
    except InvalidValue:
        return
    assert encode_vlist(refs) == blob


@given(vlists)
@FAST
def test_vlist_round_trip(refs: list[tuple[str, int]]) -> None:
    assert decode_vlist(encode_vlist(refs)) == refs


def test_value_from_list_invalid() -> None:
    good = HandleValue(1, "URL", b"x").to_list()
    assert HandleValue.from_list(good) == HandleValue(1, "URL", b"x")
    for bad in ([], good[:6], [*good, 1], ["1", *good[1:]], [1, "URL", "str-not-bytes", *good[3:]],
                [0, *good[1:]], [1, "URL", b"x", 1, 1, 1, 5], None, 5):
        with pytest.raises(InvalidValue):
            HandleValue.from_list(bad)


# -- records ----------------------------------------------------------------------------------------------

@given(st.text(max_size=40), unique_values())
@FAST
def test_record_round_trip(handle: str, values: tuple[HandleValue, ...]) -> None:
    record = Record(handle, values)
    decoded = Record.decode(record.encode())
    assert decoded == record
    assert decoded.key == fold(handle)


@given(st.text(max_size=40), unique_values())
@FAST
def test_record_encoding_is_the_documented_lists(handle: str, values: tuple[HandleValue, ...]) -> None:
    # encode packs references as the tuples they are: the same bytes as the list form every store holds
    assert Record(handle, values).encode() == msgpack.packb([handle, [v.to_list() for v in values]], use_bin_type=True)


def test_record_helpers() -> None:
    r = Record("88.100/ABC", (HandleValue(1, "URL", b"a"), HandleValue(2, "EMAIL", b"b"), HandleValue(3, "URL", b"c")))
    assert r.key == "88.100/abc"
    assert r.by_index(2) == HandleValue(2, "EMAIL", b"b") and r.by_index(9) is None
    assert [v.index for v in r.of_type("URL")] == [1, 3]


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_record_decode_arbitrary_bytes_raises_decode_error_only(blob: bytes) -> None:
    try:
        record = Record.decode(blob)
    except DecodeError:
        return
    assert isinstance(record, Record)


_msgpack_any = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)


@given(st.one_of(
    _msgpack_any,
    st.tuples(st.text(max_size=8), st.lists(st.lists(_msgpack_any, min_size=7, max_size=7), max_size=3)).map(list),
    st.tuples(st.text(max_size=8), st.lists(st.tuples(
        st.integers(-3, 3), st.sampled_from(["URL", "HS_ADMIN", "HS_SITE", "HS_VLIST"]), st.binary(max_size=12),
        st.integers(-3, 3), st.integers(-3, 3), st.integers(-3, 20), _msgpack_any).map(list), max_size=3)).map(list),
))
@settings(max_examples=200, deadline=None)
def test_record_decode_structured_garbage(obj: object) -> None:
    blob = msgpack.packb(obj, use_bin_type=True)
    try:
        record = Record.decode(blob)
    except DecodeError:
        return
    assert Record.decode(record.encode()) == record


def test_record_decode_limits_and_errors() -> None:
    with pytest.raises(DecodeError):
        Record.decode(b"\x00" * (MAX_RECORD_BYTES + 1))
    for bad in (b"", b"\xc1", msgpack.packb(["h", [[1]]]), msgpack.packb(["h"]), msgpack.packb([1, []]),
                msgpack.packb(["h", []]) + b"\x00", msgpack.packb({"h": 1}), b"\xdd\xff\xff\xff\xff"):
        with pytest.raises(DecodeError):
            Record.decode(bad)


def test_site_ipv4_mapped_addresses_decode_as_ipv4() -> None:
    site = SiteInfo((Server(1, "10.1.2.3", (Interface("TCP", 2641),)),))
    decoded = SiteInfo.from_bytes(site.to_bytes())
    assert decoded.servers[0].address == "10.1.2.3"
    assert ipaddress.ip_address(decoded.servers[0].address).version == 4


def test_decoded_values_are_shared_and_still_checked() -> None:
    from idresolve.core.errors import InvalidValue
    from idresolve.core.values import HandleValue

    raw = [2001, "batchNumber", b"2106023", 86400, 1700000000, 14, []]
    a, b = HandleValue.from_list(list(raw)), HandleValue.from_list(list(raw))
    assert a is b and a == HandleValue(2001, "batchNumber", b"2106023", 86400, 1700000000, 14)
    # A float or a bool where an int belongs is not the same key: the general rules answer for it.
    with pytest.raises(InvalidValue):
        HandleValue.from_list([2001.0, "batchNumber", b"2106023", 86400, 1700000000, 14, []])
    assert HandleValue.from_list([True, "URL", b"x", 86400, 0, 14, []]).index == 1
    # A bad value is refused every time, never remembered.
    for _ in range(2):
        with pytest.raises(InvalidValue):
            HandleValue.from_list([0, "URL", b"x", 86400, 0, 14, []])


def test_values_decoded_and_encoded_a_list_at_a_time_are_those_of_one_at_a_time() -> None:
    from idresolve.core.errors import InvalidValue
    from idresolve.core.values import HandleValue

    raws = [[1, "URL", b"https://example.cn/a", 86400, 1700000000, 14, []],  # the usual shape
            [2, "VLIST", b"", 3600, 0, 14, [["88.118/x", 1]]],  # references: the general path
            [3, "EMAIL", b"a@example.cn", 60, 5, 0x1F, []],  # permissions masked to four bits
            [2001, "batchNumber", b"2106023", 86400, 1700000000, 14, []]]
    many = HandleValue.from_lists([list(r) for r in raws])
    assert many == [HandleValue.from_list(list(r)) for r in raws]
    assert many[1].refs == (("88.118/x", 1),) and many[2].perms == 0xF
    stamped = HandleValue.from_lists([list(r) for r in raws], False, 42)
    assert [v.timestamp for v in stamped] == [42] * len(raws)
    with pytest.raises(InvalidValue):  # one bad value refuses the list, wherever it is
        HandleValue.from_lists([raws[0], [0, "URL", b"x", 86400, 0, 14, []]])
    assert (msgpack.packb(HandleValue.to_lists(many), use_bin_type=True)
            == msgpack.packb([v.to_list() for v in many], use_bin_type=True))
    assert HandleValue.from_lists(msgpack.unpackb(msgpack.packb(HandleValue.to_lists(many), use_bin_type=True))) == many


def test_values_found_in_the_decoded_memo_keep_exact_types() -> None:
    """Decoders give arrays as tuples, and a value decoded before is found by its compact form: but 1.0 and
    True equal 1, so a float or a bool where an int belongs is refused even when the value it equals is in
    the memo; a list is decoded as the tuple it equals."""
    from idresolve.core.errors import InvalidValue
    from idresolve.core.values import HandleValue

    good = (7, "URL", b"https://example.cn/memo", 86400, 1700000000, 14, ())
    first = HandleValue.from_lists([good])[0]
    assert HandleValue.from_lists([good])[0] is first  # the memo's
    assert HandleValue.from_lists([list(good[:6]) + [[]]])[0] is first  # a list: the same value
    for i, bad in ((3, 86400.0), (4, 1700000000.0), (5, 14.0), (0, 7.0)):
        raw = good[:i] + (bad,) + good[i + 1:]
        assert raw == good and hash(raw) == hash(good)
        with pytest.raises(InvalidValue):
            HandleValue.from_lists([raw])
    for unhashable in ((7, "URL", b"x", 86400, 0, 14, {}), (7, "URL", b"x", {}, 0, 14, ())):
        with pytest.raises(InvalidValue):  # malformed, not a TypeError from the memo
            HandleValue.from_lists([unhashable])
    refs = HandleValue.from_lists([(8, "VLIST", b"", 60, 0, 14, (("88.1/x", 1),))])[0]
    assert refs.refs == (("88.1/x", 1),)  # references as tuples, as the wire decodes them
