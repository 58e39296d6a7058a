"""The reference captures of tests/data/handle-wire/ (Handle.Net 9.0.0's tools against its server), loaded
as whole messages: TCP entries are one message each, UDP datagrams of a split message are reassembled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from idresolve.core.native import Message, Reassembler, decode_message

DATA = Path(__file__).resolve().parent / "data" / "handle-wire"


@dataclass(frozen=True)
class Captured:
    name: str  # e.g. "08-create-delete-auth-nosession"
    position: int  # index of its (last) entry in the file's messages
    direction: str  # "client->server" or "server->client"
    transport: str
    raw: bytes  # the whole message, envelope included
    datagrams: tuple[bytes, ...]  # UDP: the datagrams that carried it

    @property
    def message(self) -> Message:
        return decode_message(self.raw)

    @property
    def from_client(self) -> bool:
        return self.direction == "client->server"


@cache
def capture_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in DATA.glob("*.json")))


@cache
def captured(name: str) -> tuple[Captured, ...]:
    doc = json.loads((DATA / f"{name}.json").read_text())
    out: list[Captured] = []
    pending: list[bytes] = []
    reassembler = Reassembler()
    for pos, entry in enumerate(doc["messages"]):
        raw = bytes.fromhex(entry["hex"])
        if entry["transport"] == "udp":
            pending.append(raw)
            whole = reassembler.feed(raw, entry["dir"], 0.0)
            if whole is None:
                continue
            out.append(Captured(name, pos, entry["dir"], "udp", whole, tuple(pending)))
            pending = []
        else:
            out.append(Captured(name, pos, entry["dir"], "tcp", raw, (raw,)))
    assert not pending, f"{name}: datagrams left over"
    return tuple(out)


def all_captured() -> list[Captured]:
    return [c for name in capture_names() for c in captured(name)]


def exchanges(name: str) -> list[tuple[Captured, Captured]]:
    """(request, answer) pairs of a capture, in order."""
    msgs = captured(name)
    return [(msgs[i], msgs[i + 1]) for i in range(0, len(msgs), 2)]


def site_key_bytes() -> bytes:
    """The server's public key (DSA) from capture 05's site info."""
    from idresolve.core.native import SiteInfoBody

    body = captured("05-get-siteinfo")[1].message.body
    assert isinstance(body, SiteInfoBody)
    return body.site.servers[0].public_key
