"""HS_SITE: where a prefix's records are served (RFC 3651 section 3.2), binary and JSON forms.

Binary layout (big-endian): version u16, protocol version u8.u8, serial u16, primary mask u8, hash option
u8, hash filter (u32 length + UTF-8), attributes (u32 count, each key and value as u32 length + UTF-8),
servers (u32 count, each: server id u32, 16-byte address, public key (u32 length + bytes), interfaces
(u32 count, each: type u8, protocol u8, port u32)).

Addresses: an IPv4 address is written as the reference writes it, 12 zero octets and the 4 address
octets; reading accepts that and the IPv4-mapped form (``::ffff:a.b.c.d``). So 16 octets whose first 12
are zero read as IPv4, except ``::`` and ``::1``, which the reference cannot mean as IPv4 (0.0.0.0,
0.0.0.1) and which stay IPv6.

idresolve also needs host names (containers): an attribute ``host`` on a server is kept in the site's
attribute list as ``host.<serverId>``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import struct
from dataclasses import dataclass, field

from .errors import InvalidValue

PROTOCOLS = {0: "UDP", 1: "TCP", 2: "HTTP", 3: "HTTPS"}
PROTOCOL_NUMBERS = {v: k for k, v in PROTOCOLS.items()}
# Service type: 1 admin only, 2 query only, 3 both (RFC 3651).
_SERVICE_ADMIN, _SERVICE_QUERY = 1, 2


@dataclass(frozen=True, slots=True)
class Interface:
    protocol: str  # UDP, TCP, HTTP, HTTPS
    port: int
    query: bool = True
    admin: bool = True


@dataclass(frozen=True, slots=True)
class Server:
    server_id: int
    address: str  # an IP address
    interfaces: tuple[Interface, ...]
    host: str | None = None  # a DNS name to dial instead of the address, when set
    public_key: bytes = b""

    def endpoint(self, protocol: str) -> tuple[str, int] | None:
        for itf in self.interfaces:
            if itf.protocol == protocol:
                return (self.host or self.address, itf.port)
        return None


@dataclass(frozen=True, slots=True)
class SiteInfo:
    servers: tuple[Server, ...]
    serial: int = 1
    version: int = 1
    protocol_version: tuple[int, int] = (2, 10)
    primary: bool = True
    multi_primary: bool = False
    attributes: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    hash_option: int = 0  # how a client picks the server of a multi-server site (0 prefix, 1 suffix, 2 all)
    hash_filter: str = ""

    def endpoint(self, protocol: str) -> tuple[str, int] | None:
        for server in self.servers:
            ep = server.endpoint(protocol)
            if ep is not None:
                return ep
        return None

    # -- binary -------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        out = bytearray()
        mask = (0x80 if self.primary else 0) | (0x40 if self.multi_primary else 0)
        out += struct.pack(">HBBHBB", self.version, *self.protocol_version, self.serial, mask, self.hash_option)
        _put_str(out, self.hash_filter)
        attrs = list(self.attributes) + [(f"host.{s.server_id}", s.host) for s in self.servers if s.host]
        out += struct.pack(">I", len(attrs))
        for k, v in attrs:
            _put_str(out, k)
            _put_str(out, v)
        out += struct.pack(">I", len(self.servers))
        for s in self.servers:
            out += struct.pack(">I", s.server_id)
            out += ipaddress.ip_address(s.address).packed.rjust(16, b"\0")
            out += struct.pack(">I", len(s.public_key)) + s.public_key
            out += struct.pack(">I", len(s.interfaces))
            for itf in s.interfaces:
                stype = (_SERVICE_ADMIN if itf.admin else 0) | (_SERVICE_QUERY if itf.query else 0)
                out += struct.pack(">BBI", stype, PROTOCOL_NUMBERS[itf.protocol], itf.port)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> SiteInfo:
        try:
            return _decode_site(memoryview(data))
        except (struct.error, UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
            raise InvalidValue("HS_SITE data is not a valid site record") from exc

    # -- JSON (the Handle REST API's "site" format) -------------------------------------------------
    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "protocolVersion": f"{self.protocol_version[0]}.{self.protocol_version[1]}",
            "serialNumber": self.serial,
            "primarySite": self.primary,
            "multiPrimary": self.multi_primary,
            "attributes": [{"name": k, "value": v} for k, v in self.attributes],
            "servers": [
                {
                    "serverId": s.server_id,
                    "address": s.address,
                    **({"host": s.host} if s.host else {}),
                    "publicKey": {"format": "base64", "value": base64.b64encode(s.public_key).decode("ascii")},
                    "interfaces": [
                        {"query": i.query, "admin": i.admin, "protocol": i.protocol, "port": i.port}
                        for i in s.interfaces
                    ],
                }
                for s in self.servers
            ],
        }

    @classmethod
    def from_json(cls, value: object) -> SiteInfo:
        if not isinstance(value, dict):
            raise InvalidValue("site data value must be an object")
        try:
            servers: list[Server] = []
            for raw in value.get("servers", []):
                itfs = tuple(
                    Interface(
                        protocol=str(i["protocol"]).upper(),
                        port=_port(i["port"]),
                        query=bool(i.get("query", True)),
                        admin=bool(i.get("admin", True)),
                    )
                    for i in raw.get("interfaces", [])
                )
                for itf in itfs:
                    if itf.protocol not in PROTOCOL_NUMBERS:
                        raise InvalidValue(f"unknown interface protocol {itf.protocol!r}")
                addr = str(raw["address"])
                ipaddress.ip_address(addr)
                host = raw.get("host") or None
                if host is not None and not isinstance(host, str):
                    raise InvalidValue("server host must be a string")
                servers.append(
                    Server(server_id=_uint(raw.get("serverId", len(servers) + 1), 32, "serverId"), address=addr,
                           interfaces=itfs, host=host, public_key=_key(raw.get("publicKey")))
                )
            pv = str(value.get("protocolVersion", "2.10")).split(".")
            attrs = tuple((str(a["name"]), str(a["value"])) for a in value.get("attributes", []))
            if any(k.startswith("host.") for k, _ in attrs):
                # The binary form keeps server host names as attributes "host.<serverId>".
                raise InvalidValue("site attribute names starting with 'host.' are reserved")
            return cls(
                servers=tuple(servers),
                serial=_uint(value.get("serialNumber", 1), 16, "serialNumber"),
                version=_uint(value.get("version", 1), 16, "version"),
                protocol_version=(_uint(pv[0], 8, "protocolVersion"),
                                  _uint(pv[1], 8, "protocolVersion") if len(pv) > 1 else 0),
                primary=bool(value.get("primarySite", True)),
                multi_primary=bool(value.get("multiPrimary", False)),
                attributes=attrs,
            )
        except InvalidValue:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise InvalidValue(f"site data is malformed: {exc}") from None


def _uint(raw: object, bits: int, what: str) -> int:
    """An unsigned field of the binary form: refuse what would not fit rather than fail when encoding."""
    n: int = int(raw)  # type: ignore[call-overload]
    if not 0 <= n < (1 << bits):
        raise InvalidValue(f"{what} out of range: {n}")
    return n


def _key(raw: object) -> bytes:
    """A server's public key, ``{"format": "base64"|"hex", "value": ...}``; absent or empty is no key."""
    if raw is None or raw == "":
        return b""
    if not isinstance(raw, dict) or not isinstance(raw.get("value", ""), str):
        raise InvalidValue("publicKey must be {format, value}")
    fmt, text = raw.get("format", "base64"), raw.get("value", "")
    try:
        if fmt == "base64":
            return base64.b64decode(text, validate=True)
        if fmt == "hex":
            return bytes.fromhex(text)
    except (binascii.Error, ValueError):
        raise InvalidValue("publicKey value does not decode") from None
    raise InvalidValue(f"unknown publicKey format {fmt!r}")


def _port(raw: object) -> int:
    port: int = int(raw)  # type: ignore[call-overload]
    if not 0 < port < 65536:
        raise InvalidValue(f"port out of range: {port}")
    return port


def _put_str(out: bytearray, text: str) -> None:
    b = text.encode("utf-8")
    out += struct.pack(">I", len(b)) + b


class _Reader:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> tuple[int, ...]:
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals

    def raw(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise ValueError("truncated")
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def string(self) -> str:
        (n,) = self.unpack(">I")
        return self.raw(n).decode("utf-8")


def _decode_site(buf: memoryview) -> SiteInfo:
    r = _Reader(buf)
    version, major, minor, serial, mask, hash_option = r.unpack(">HBBHBB")
    hash_filter = r.string()
    (nattr,) = r.unpack(">I")
    if nattr > 10_000:
        raise ValueError("too many attributes")
    attrs = [(r.string(), r.string()) for _ in range(nattr)]
    hosts = {k[5:]: v for k, v in attrs if k.startswith("host.")}
    attrs = [(k, v) for k, v in attrs if not k.startswith("host.")]
    (nserv,) = r.unpack(">I")
    if nserv > 10_000:
        raise ValueError("too many servers")
    servers = []
    for _ in range(nserv):
        (sid,) = r.unpack(">I")
        addr = _address(r.raw(16))
        (klen,) = r.unpack(">I")
        key = r.raw(klen)
        (nitf,) = r.unpack(">I")
        if nitf > 1000:
            raise ValueError("too many interfaces")
        itfs = []
        for _ in range(nitf):
            stype, proto, port = r.unpack(">BBI")
            itfs.append(Interface(PROTOCOLS[proto], port, bool(stype & _SERVICE_QUERY), bool(stype & _SERVICE_ADMIN)))
        servers.append(Server(sid, addr, tuple(itfs), hosts.get(str(sid)), key))
    if r.pos != len(buf):
        raise ValueError("trailing bytes")
    return SiteInfo(tuple(servers), serial, version, (major, minor), bool(mask & 0x80), bool(mask & 0x40), tuple(attrs),
                    hash_option, hash_filter)


def _address(packed: bytes) -> str:
    ip = ipaddress.IPv6Address(packed)
    if ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if packed[:12] == bytes(12) and packed[12:] not in (bytes(4), b"\0\0\0\1"):
        return str(ipaddress.IPv4Address(packed[12:]))
    return str(ip)
