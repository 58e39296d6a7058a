"""Identifier syntax: ``prefix/suffix``, derived prefixes, prefix records, case-insensitive matching.

Rules (docs/domain.md §1, docs/rest-contract.md):
- A handle is at most 255 characters, holds no control characters and is valid UTF-8.
- The prefix is dotted (``88``, ``88.118``, ``88.118.8``) with no empty segment and no whitespace; it is
  derived left to right. ``0.NA/<prefix>`` is the prefix record of ``<prefix>``.
- The suffix is any printable UTF-8, not empty.
- Matching folds ASCII letters only (``fold``); answers echo the client's own spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidHandle

MAX_HANDLE_CHARS = 255
NA_PREFIX = "0.NA"
#: The folded prefix under which a store keeps every prefix record (``0.na/88.118`` ...).
PREFIX_RECORDS_KEY = "0.na"

_ASCII_FOLD = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def fold(text: str) -> str:
    """Case-fold ASCII letters only (the Handle System's matching rule)."""
    if text.isascii():
        return text.lower()
    return text.translate(_ASCII_FOLD)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # C0, DEL, C1, lone surrogates


# What a prefix may not hold: the controls above, any white space (``\s`` is ``str.isspace``), a slash.
_PREFIX_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff/]|\\s")


#: Prefixes already found sound: a bulk registration names one prefix thousands of times. Bounded.
_GOOD_PREFIXES: set[str] = set()
_MAX_GOOD_PREFIXES = 4096


def check_prefix(prefix: str) -> str:
    """Validate a dotted prefix and return it unchanged; raises ``InvalidHandle``."""
    if prefix in _GOOD_PREFIXES:
        return prefix
    _check_prefix(prefix)
    if len(_GOOD_PREFIXES) < _MAX_GOOD_PREFIXES:
        _GOOD_PREFIXES.add(prefix)
    return prefix


def _check_prefix(prefix: str) -> None:
    if not prefix:
        raise InvalidHandle("Empty prefix invalid")
    if len(prefix) > MAX_HANDLE_CHARS:
        raise InvalidHandle(f"Prefix longer than {MAX_HANDLE_CHARS} characters")
    if _PREFIX_BAD.search(prefix) is not None:
        raise InvalidHandle("Prefix holds a control, space or slash character")
    if prefix[0] == "." or prefix[-1] == "." or ".." in prefix:
        raise InvalidHandle("Prefix has an empty segment")


@dataclass(frozen=True, slots=True, init=False)
class Handle:
    """A parsed identifier. ``text`` keeps the client's spelling; ``key`` is the folded match key."""

    text: str
    prefix: str
    suffix: str
    key: str

    # Written out: a bulk registration parses millions of handles, and the generated frozen __init__ sets
    # each field through object.__setattr__.
    def __init__(self, text: str, prefix: str, suffix: str, key: str) -> None:
        _set_text(self, text)
        _set_prefix(self, prefix)
        _set_suffix(self, suffix)
        _set_key(self, key)

    @property
    def is_prefix_record(self) -> bool:
        """True for ``0.NA/<prefix>``, the record that describes a prefix."""
        return self.key[:5] == _PREFIX_RECORDS_HEAD  # the key is folded: its prefix is the folded prefix

    @property
    def folded_prefix(self) -> str:
        return self.key.partition("/")[0]

    def __str__(self) -> str:
        return self.text


_set_text, _set_prefix, _set_suffix, _set_key = (Handle.__dict__[f].__set__ for f in ("text", "prefix", "suffix", "key"))
_PREFIX_RECORDS_HEAD = PREFIX_RECORDS_KEY + "/"


def parse_handle(text: str) -> Handle:
    """Parse and validate ``prefix/suffix``. Raises ``InvalidHandle`` (code 102).

    A string without a slash is not a handle of any prefix a node serves; callers that must answer 301
    for it (docs/rest-contract.md) check ``"/" in text`` first.
    """
    if not text:
        raise InvalidHandle("Empty handle invalid")
    if len(text) > MAX_HANDLE_CHARS:
        raise InvalidHandle(f"Handle longer than {MAX_HANDLE_CHARS} characters", handle=text[:64] + "...")
    if _CONTROL.search(text) is not None or "\ufffd" in text:
        raise InvalidHandle("Handle holds a control character or invalid UTF-8", handle=None)
    prefix, sep, suffix = text.partition("/")
    if not sep:
        raise InvalidHandle("Handle has no slash between prefix and suffix", handle=text)
    if not suffix:
        raise InvalidHandle("Handle has an empty suffix", handle=text)
    if prefix not in _GOOD_PREFIXES:  # ``check_prefix``'s own first look, without the call
        try:
            check_prefix(prefix)
        except InvalidHandle as exc:
            raise InvalidHandle(exc.message, handle=text) from None
    return Handle(text, prefix, suffix, text.lower() if text.isascii() else text.translate(_ASCII_FOLD))  # fold()


def is_prefix_record(text: str) -> bool:
    """True when ``text`` (a handle as spelled, or a folded key) names a prefix record ``0.NA/<prefix>``.
    The one place that knows how prefix records are spelled."""
    return text[:5].lower() == PREFIX_RECORDS_KEY + "/"


def bare_prefix(text: str) -> str:
    """``0.NA/88.100`` -> ``88.100``; a bare prefix is returned unchanged (listing accepts both)."""
    return text[5:] if is_prefix_record(text) else text


#: Chains of derived prefixes already made: every walk of a recursive node asks for its handle's. Bounded.
_DERIVED: dict[str, tuple[str, ...]] = {}


def derived_prefixes(prefix: str) -> tuple[str, ...]:
    """``88.118.8`` -> ``("88", "88.118", "88.118.8")``: every ancestor, root first, itself last."""
    chain = _DERIVED.get(prefix)
    if chain is None:
        parts = prefix.split(".")
        chain = tuple(".".join(parts[: i + 1]) for i in range(len(parts)))
        if len(_DERIVED) < _MAX_GOOD_PREFIXES:
            _DERIVED[prefix] = chain
    return chain


def parent_prefix(prefix: str) -> str | None:
    """``88.118.8`` -> ``88.118``; a one-segment prefix has no parent."""
    head, dot, _ = prefix.rpartition(".")
    return head if dot else None


def prefix_handle(prefix: str) -> str:
    """The prefix record's handle: ``0.NA/<prefix>``."""
    return f"{NA_PREFIX}/{prefix}"


def is_under(prefix: str, ancestor: str) -> bool:
    """True when folded ``prefix`` equals ``ancestor`` or derives from it (``88.118.8`` under ``88``)."""
    p, a = fold(prefix), fold(ancestor)
    return p == a or p.startswith(a + ".")


def prefix_of_record(handle: Handle) -> str:
    """The prefix a record is *about*, for routing: ``0.NA/88.118`` -> ``88.118``; ``88.118/x`` -> ``88.118``."""
    return handle.suffix if handle.is_prefix_record else handle.prefix
