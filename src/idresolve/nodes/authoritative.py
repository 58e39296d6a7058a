"""The authoritative role: the node that holds records for its prefixes and answers for them.

Secondary and enterprise nodes are authoritative for their prefixes; the top-level registry is an
authoritative node for ``0.NA/88.*``. Every surface (REST, binary protocol) calls the same operations
here, so the rules live in one place. Operations are synchronous; a write has reached the store (and is
durable) when the method returns.

Responsibility: the node serves handle ``P/x`` when ``P`` is one of its prefixes (configured, or an
enterprise prefix it hosts), and prefix records ``0.NA/X`` when ``X`` is or derives from one of its
configured prefixes. A prefix record without HS_SITE marks a *hosted* prefix (its identifiers live here);
one with HS_SITE marks a *delegated* prefix (its identifiers live at the site it names).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple, Protocol

from ..core.admin import DEFAULT_PERMS_TEXT, AdminPerm, AdminRef, perms_from_text
from ..core.answers import Answer, select
from ..core.codes import ResponseCode
from ..core.errors import (
    AuthenticationNeeded,
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidHandle,
    InvalidValue,
    NotAuthorized,
    NotResponsible,
    PeerError,
    ValueAlreadyExists,
    ValuesNotFound,
)
from ..core.handles import (
    PREFIX_RECORDS_KEY,
    Handle,
    bare_prefix,
    check_prefix,
    derived_prefixes,
    fold,
    is_prefix_record,
    parent_prefix,
    parse_handle,
    prefix_handle,
)
from ..core.records import Record
from ..core.templates import Template, TemplateRef, check_record, is_template_record, stored_versions
from ..core.templates.storage import TEMPLATE_SUFFIX_PREFIX
from ..core.values import (
    DEFAULT_TTL_S,
    HS_ADMIN,
    HS_SITE,
    PUBLIC_READ,
    TEMPLATE_REF_INDEX,
    HandleValue,
    check_values,
)
from ..store.base import Store
from .auth import Identity, authenticate, permitted
from .templates import (
    MAX_FETCHES_PER_WRITE,
    TemplateCache,
    TemplateNeeded,
    check_template_write,
    template_use,
)

MAX_BATCH = 2_000
MAX_LIST = 10_000
MAX_PAGE = 2**31 - 1
MAX_USES_SCAN = 5_000  # records read by one template-uses call (each is a store read)
TEMPLATE_SUFFIX = "tpl-"  # folded: template records are named <prefix>/TPL-<name>
DEFAULT_ADMIN_INDEX = 100
ANSWER_CACHE_ENTRIES = 100_000
_PREFIX_REFERRAL = ResponseCode.PREFIX_REFERRAL  # read on the hot path (an enum member off its class: ~75 ns)


class ItemResult(NamedTuple):
    """One item's outcome in a batch (a named tuple: a batch builds one per identifier)."""

    handle: str
    code: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class BatchResult:
    ok: bool
    results: tuple[ItemResult, ...]


class BatchRefused(HandleError):
    """A batch in which at least one item failed: nothing was written. Carries the per-item results."""

    def __init__(self, message: str, *, code: int, results: tuple[ItemResult, ...]) -> None:
        super().__init__(message, code=code)
        self.results = results


class Generations(Protocol):
    """Write generations shared by the worker processes of one node (``runtime/workers.py``). ``counters``
    (read-only here): [0] every write, [1] writes to prefix records, [2] writes to template records; [0]
    moves last. ``bump(key)`` counts a write to ``key`` after it is durable and before it is acknowledged,
    and answers the counters just before and just after (one atomic step)."""

    @property
    def counters(self) -> Sequence[int]: ...

    def bump(self, key: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]: ...


def _snapshot(counters: Sequence[int]) -> tuple[int, int, int]:
    # [0] first: it moves last, so the other two are at least as new as the total we record
    total = counters[0]
    return (total, counters[1], counters[2])


class AuthoritativeNode:
    """Holds records for ``prefixes`` in ``store`` and applies the Handle authority rules.

    ``answers`` caches the Answer to every plain resolution (anonymous, no filter: the hot path of every
    surface) and every referral, by folded handle; every write replaces or drops what it changes, here
    and nowhere else (a change to a prefix record drops all: it can change what this node serves).

    Every write (create, replace, add or modify values, remove values, batch) is checked against the
    template its record names at index 1001, after authority and before anything is stored; writes to
    template records follow ``nodes.templates.check_template_write``. ``templates`` caches parsed
    template versions; a write needing one held elsewhere raises ``TemplateNeeded`` (``nodes.templates``)."""

    def __init__(self, store: Store, prefixes: Iterable[str], *, name: str = "node",
                 answer_entries: int = ANSWER_CACHE_ENTRIES) -> None:
        self.store = store
        self.name = name
        self.configured: set[str] = {fold(check_prefix(p)) for p in prefixes}
        self.hosted: set[str] = set()
        # folded handle -> Answer, at most answer_entries, the oldest going first (in O(1): see wire.ResponseMemo)
        self.answers: OrderedDict[str, Answer] = OrderedDict()
        self.answer_entries = answer_entries
        self._change_listeners: list[Callable[[str], None]] = []
        self.templates = TemplateCache()
        #: set when several processes serve this store: before answering from ``answers`` the node compares
        #: the shared generations with those it last saw and drops what another process may have changed
        self.generations: Generations | None = None
        self._counters: Sequence[int] = (0,)  # the hot path reads [0] only: one load, one compare
        self._seen = (0, 0, 0)
        self._seen_total = 0
        self._load_hosted()

    def share_writes(self, generations: Generations) -> None:
        """Serve this store together with other processes that write to it (see ``Generations``)."""
        self.generations = generations
        self._counters = generations.counters
        self._seen = _snapshot(self._counters)
        self._seen_total = self._seen[0]

    def _resync(self) -> None:
        # Another process wrote. Which keys is not known here, so every cached answer goes; the prefix and
        # template generations say whether the hosted prefixes and parsed templates must go too.
        seen, now_seen = self._seen, _snapshot(self._counters)
        self._seen, self._seen_total = now_seen, now_seen[0]
        self.answers.clear()
        if now_seen[1] != seen[1]:
            self.hosted = set()
            self._load_hosted()
        if now_seen[2] != seen[2]:
            self.templates = TemplateCache()

    # -- responsibility -------------------------------------------------------------------------------
    def _load_hosted(self) -> None:
        for handle in self.store.list_handles(PREFIX_RECORDS_KEY):
            record = self.store.get(fold(handle))
            if record is not None:
                self._note_prefix_record(record)

    def _note_prefix_record(self, record: Record | None, deleted_key: str | None = None) -> None:
        if deleted_key is not None:
            self.hosted.discard(deleted_key.split("/", 1)[1])
            return
        if record is None:
            return
        prefix = fold(record.handle.split("/", 1)[1])
        if prefix in self.configured or not self._under_configured(prefix):
            return
        if record.of_type(HS_SITE):
            self.hosted.discard(prefix)
        else:
            self.hosted.add(prefix)

    def _under_configured(self, prefix: str) -> bool:
        """True when ``prefix`` is a configured prefix or derives from one (``88.118.8`` under ``88``): its
        ancestors are looked up, no configured prefix compared (a top-level node asks this of every
        identifier of a prefix nobody registered)."""
        configured = self.configured
        p = fold(prefix)
        while p not in configured:
            p, dot, _ = p.rpartition(".")
            if not dot:
                return False
        return True

    @property
    def prefixes(self) -> list[str]:
        return sorted(self.configured | self.hosted)

    def responsible(self, handle: Handle) -> bool:
        if handle.is_prefix_record:
            return self._under_configured(handle.suffix)
        p = handle.folded_prefix
        return p in self.configured or p in self.hosted

    def covers(self, prefix: str) -> bool:
        """True when ``prefix`` is one of the configured prefixes or derives from one."""
        return self._under_configured(fold(prefix))

    def serves_prefix(self, prefix: str) -> bool:
        p = fold(prefix)
        return p in self.configured or p in self.hosted

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(key)`` after every write to a record (registry replication uses it)."""
        self._change_listeners.append(listener)

    def _changed(self, key: str) -> None:
        if is_prefix_record(key):
            self.answers.clear()
        else:
            self.answers.pop(key, None)
            self.templates.forget(key)
        if self.generations is not None:
            before, after = self.generations.bump(key)
            if before == self._seen:  # nobody else wrote since we last looked: our own write is handled
                self._seen, self._seen_total = after, after[0]
        for listener in self._change_listeners:
            listener(key)

    def _changed_many(self, keys: Sequence[str]) -> None:
        """``_changed`` for the keys of one committed batch (no prefix records: a batch refuses them). The
        shared generations move once for the batch, not once per key: other processes drop every cached
        answer on any move, so one move says as much as two thousand; a template key still moves its own
        generation (``Generations.bump`` decides that from the key)."""
        answers_pop, forget, listeners = self.answers.pop, self.templates.forget, self._change_listeners
        for key in keys:  # _changed's local work, inline: a batch runs it for every key
            answers_pop(key, None)
            forget(key)
            for listener in listeners:
                listener(key)
        generations = self.generations
        if generations is None or not keys:
            return
        marked = [k for k in keys if _TEMPLATE_KEY in k]
        for key in marked or keys[:1]:
            before, after = generations.bump(key)
            if before == self._seen:
                self._seen, self._seen_total = after, after[0]

    def parse(self, text: str) -> Handle:
        """Parse ``text`` and check this node serves it (301 otherwise)."""
        if self._counters[0] != self._seen_total:
            self._resync()  # another process may have added or removed a hosted prefix
        if text and "/" not in text and len(text) <= 255:
            raise NotResponsible("That prefix doesn't live here", handle=text)
        h = parse_handle(text)
        if not self.responsible(h):
            raise NotResponsible("That prefix doesn't live here", handle=text)
        return h

    def authenticate(self, identity: Identity, secret: bytes) -> Identity:
        return authenticate(self.store, identity, secret)

    # -- authority --------------------------------------------------------------------------------------
    def _require(self, caller: Identity | None, admin_record: Record | None, perm: AdminPerm, handle: str) -> None:
        if caller is None:
            raise AuthenticationNeeded("Authentication needed", handle=handle)
        if not permitted(self.store, admin_record, caller, perm):
            raise NotAuthorized(f"{caller} may not do this to {handle}", handle=handle)

    def _creation_authority(self, h: Handle) -> tuple[Record | None, AdminPerm]:
        if h.is_prefix_record:
            parent = parent_prefix(h.suffix)
            if parent is None:
                return None, AdminPerm.ADD_DERIVED_PREFIX
            return self.store.get(fold(prefix_handle(parent))), AdminPerm.ADD_DERIVED_PREFIX
        return self.store.get(fold(prefix_handle(h.prefix))), AdminPerm.ADD_HANDLE

    def _check_changes(self, caller: Identity | None, existing: Record, new_values: Sequence[HandleValue],
                       removed: Iterable[HandleValue], handle: str) -> None:
        """Permission for turning ``existing`` into a record holding ``new_values`` minus ``removed``."""
        for v in new_values:
            old = existing.by_index(v.index)
            admin = v.type == HS_ADMIN or (old is not None and old.type == HS_ADMIN)
            if old is None:
                perm = AdminPerm.ADD_ADMIN if admin else AdminPerm.ADD_VALUE
            elif _same(old, v):
                continue
            else:
                perm = AdminPerm.MODIFY_ADMIN if admin else AdminPerm.MODIFY_VALUE
            self._require(caller, existing, perm, handle)
        for v in removed:
            self._require(caller, existing, AdminPerm.REMOVE_ADMIN if v.type == HS_ADMIN else AdminPerm.REMOVE_VALUE,
                          existing.handle if handle is None else handle)

    # -- reads ------------------------------------------------------------------------------------------
    def visible_values(self, record: Record, caller: Identity | None) -> tuple[HandleValue, ...]:
        for v in record.values:  # the usual record is public: one pass, no property calls
            if not v.perms & PUBLIC_READ:
                break
        else:
            return record.values
        may_read = permitted(self.store, record, caller, AdminPerm.READ_VALUE)
        return tuple(v for v in record.values if v.public_read or (may_read and v.admin_read))

    def get_record(self, text: str) -> Record:
        h = self.parse(text)
        record = self.store.get(h.key)
        if record is None:
            raise HandleNotFound("Handle not found", handle=text)
        return record

    def cached(self, text: str) -> Answer | None:
        """The cached Answer to a plain resolution of ``text``, if there is one (the hot path)."""
        if self._counters[0] != self._seen_total:
            self._resync()
        return self.answers.get(fold(text))

    def query(self, text: str, *, indexes: Sequence[int] = (), types: Sequence[str] = (),
              caller: Identity | None = None, refer: bool = True) -> Answer:
        """Resolve ``text``: its visible values after the filters, or with ``refer`` a PREFIX_REFERRAL to the
        node that holds its prefix when this one does not. Plain resolutions are answered from and kept in
        ``answers``. Raises ``HandleError`` (not found, invalid, not responsible)."""
        if self._counters[0] != self._seen_total:
            self._resync()  # before the store is read: a write racing this read counts after we looked
        if caller is not None or indexes or types:
            return self._answer(text, indexes, types, caller, refer)
        key = fold(text)
        answers = self.answers
        hit = answers.get(key)
        if hit is None:
            hit = self._answer(text, (), (), None, refer)
            if len(answers) >= self.answer_entries:
                answers.popitem(last=False)
            answers[key] = hit
        elif hit.code == _PREFIX_REFERRAL and not refer:
            raise NotResponsible("That prefix doesn't live here", handle=text)
        return hit

    def _answer(self, text: str, indexes: Sequence[int], types: Sequence[str], caller: Identity | None,
                refer: bool) -> Answer:
        try:
            record = self.get_record(text)
        except HandleNotFound:
            # A prefix record we cover but do not hold (``0.NA/88.118.8`` at a top-level node) lives with the
            # holder of its parent prefix: refer there.
            if refer and is_prefix_record(text) and (ref := self.referral(text)) is not None:
                return ref
            raise
        except NotResponsible:
            if not refer:
                raise
            # Not ours: refer to whoever holds the prefix, if we know. (A handle we serve but do not hold is
            # an authoritative "not found", never a referral.)
            if (ref := self.referral(text)) is not None:
                return ref
            if "/" in text and self.covers(text.split("/", 1)[0]):
                raise HandleNotFound("Prefix not allocated", handle=text) from None
            raise
        code, values = select(self.visible_values(record, caller), indexes, types)
        return Answer(code, values)

    def referral(self, text: str) -> Answer | None:
        """A PREFIX_REFERRAL for ``text`` if this node holds the prefix record (with HS_SITE) of the nearest
        derived prefix of the handle's prefix; None when the nearest holder is this node or unknown."""
        prefix = text.split("/", 1)[0] if "/" in text else text
        if is_prefix_record(text):  # resolving a prefix record: refer for the prefix itself
            prefix = text.split("/", 1)[1]
        for p in reversed(derived_prefixes(prefix)):
            if self.serves_prefix(p):
                return None
            record = self.store.get(fold(prefix_handle(p)))
            if record is None:
                continue
            sites = record.of_type(HS_SITE)
            if sites:
                return Answer(ResponseCode.PREFIX_REFERRAL, tuple(sites), referrer=record.handle)
        return None

    def own_sites(self) -> tuple[HandleValue, ...]:
        """The HS_SITE values of this node's own prefix records (what GET_SITEINFO answers)."""
        sites: list[HandleValue] = []
        for p in sorted(self.configured):
            record = self.store.get(fold(prefix_handle(p)))
            if record is not None:
                sites.extend(record.of_type(HS_SITE))
        return tuple(sites)

    def list_handles(self, prefix: str, *, caller: Identity | None, page: int | None = None,
                     page_size: int | None = None) -> tuple[int, list[str]]:
        """(total count, handles of this page). ``page`` counts from 0; ``page_size=0`` counts only."""
        prefix = self._listable(prefix, caller)
        if (page is not None and not 0 <= page <= MAX_PAGE) or (page_size is not None and not 0 <= page_size <= MAX_PAGE):
            raise PeerError(f"page and pageSize must be between 0 and {MAX_PAGE}", handle=prefix)
        folded = fold(prefix)
        total = self.store.count(folded)
        if page_size == 0:
            return total, []
        size = MAX_LIST if page_size is None else min(page_size, MAX_LIST)
        offset = (page or 0) * size
        if offset >= total:
            return total, []
        return total, self.store.list_handles(folded, offset, size)

    def _served_prefix(self, prefix: str) -> str:
        """``prefix`` (``0.NA/`` stripped), checked and served here."""
        prefix = bare_prefix(prefix)
        try:
            check_prefix(prefix)
        except InvalidHandle as exc:
            raise InvalidHandle(exc.message, handle=prefix) from None
        if not self.serves_prefix(prefix):
            raise NotResponsible("That prefix doesn't live here", handle=prefix)
        return prefix

    def _listable(self, prefix: str, caller: Identity | None) -> str:
        """``prefix``, served here, whose handles ``caller`` may list (LIST_HANDLES in its prefix record)."""
        if caller is None:
            raise AuthenticationNeeded("Authentication needed", handle=bare_prefix(prefix))
        prefix = self._served_prefix(prefix)
        self._require(caller, self.store.get(fold(prefix_handle(prefix))), AdminPerm.LIST_HANDLES, prefix)
        return prefix

    def templates_under(self, prefix: str, *, now: float) -> list[tuple[str, tuple[int, ...], Template]]:
        """The templates this node publishes under ``prefix``: (handle, versions, latest version) for every
        record named ``<prefix>/TPL-...`` whose definitions anyone may read (anonymous, like resolution).
        Looks at the first ``MAX_LIST`` identifiers of the prefix (templates live at secondary prefixes,
        which hold few identifiers of their own)."""
        folded = fold(self._served_prefix(prefix))
        out = []
        for handle in self.store.list_handles(folded, 0, MAX_LIST):
            if not fold(handle.split("/", 1)[1]).startswith(TEMPLATE_SUFFIX):
                continue
            record = self.store.get(fold(handle))
            if record is None or not is_template_record(record.values):
                continue
            try:
                versions = stored_versions(v for v in record.values if v.public_read)
                if versions:
                    latest = self._template(TemplateRef(record.handle, max(versions)), now)
                    out.append((record.handle, tuple(sorted(versions)), latest))
            except (InvalidValue, TemplateNeeded):
                continue  # a record that does not hold a readable template is not listed
        return out

    def template_uses(self, prefix: str, template: str, *, caller: Identity | None, version: int | None = None,
                      start: int = 0, scan: int = 1_000) -> tuple[int, list[tuple[str, int]], int | None]:
        """The identifiers of ``prefix`` whose value 1001 names template ``template`` (any version, or
        ``version``), among the ``scan`` identifiers from position ``start`` (in handle order): (identifiers
        under the prefix, [(handle, version)], where to go on, None at the end). Bounded per call, each
        identifier being one store read; needs LIST_HANDLES, like listing."""
        prefix = self._listable(prefix, caller)
        if not 0 <= start <= MAX_PAGE or not 1 <= scan <= MAX_USES_SCAN:
            raise PeerError(f"from must be between 0 and {MAX_PAGE}, scan between 1 and {MAX_USES_SCAN}",
                            handle=prefix)
        folded, wanted = fold(prefix), fold(template)
        total = self.store.count(folded)
        names = self.store.list_handles(folded, start, scan) if start < total else []
        hits = []
        for handle in names:
            record = self.store.get(fold(handle))
            value = record.by_index(TEMPLATE_REF_INDEX) if record is not None else None
            if value is None:
                continue
            try:
                ref = TemplateRef.from_value(value)
            except InvalidValue:
                continue
            if fold(ref.handle) == wanted and (version is None or ref.version == version):
                hits.append((handle, ref.version))
        end = start + len(names)
        return total, hits, (end if names and end < total else None)

    def list_prefixes(self, *, caller: Identity | None) -> list[str]:
        if caller is None:
            raise AuthenticationNeeded("Authentication needed")
        return [prefix_handle(p) for p in self.prefixes]

    # -- writes -----------------------------------------------------------------------------------------
    def _store(self, record: Record) -> None:
        self.store.put(record)
        if is_prefix_record(record.handle):
            self._note_prefix_record(record)
        self._changed(record.key)

    def _prepare_new(self, h: Handle, values: Sequence[HandleValue], caller: Identity | None,
                     now: float, allowed: set[str] | None = None,
                     admins: dict[int, HandleValue] | None = None) -> Record:
        """Check authority to create ``h`` and build its record (stamped, with a default HS_ADMIN).

        Batches pass ``allowed``, the prefixes whose authority was already granted to ``caller``, and
        ``admins``, the default HS_ADMIN values made so far by index (one caller, one stamp)."""
        if caller is None:
            raise AuthenticationNeeded("Authentication needed", handle=h.text)
        cache_key = h.folded_prefix
        if allowed is None or cache_key not in allowed or h.is_prefix_record:
            admin_record, perm = self._creation_authority(h)
            self._require(caller, admin_record, perm, h.text)
            if allowed is not None and not h.is_prefix_record:
                allowed.add(cache_key)
        values = check_values(values)
        stamp = int(now)
        out = []
        has_admin = high = False
        for v in values:  # one pass: bulk registration runs this for every value it stores
            out.append(v if v.timestamp == stamp else v.stamped(stamp))
            if v.type == HS_ADMIN:
                has_admin = True
            if v.index >= DEFAULT_ADMIN_INDEX:
                high = True
        if not has_admin:
            index = DEFAULT_ADMIN_INDEX
            if high:  # the default administrator takes the first free index from 100
                taken = {v.index for v in values}
                while index in taken:
                    index += 1
            admin = admins.get(index) if admins is not None else None
            if admin is None:
                admin = _default_admin(caller, index, stamp)
                if admins is not None:
                    admins[index] = admin
            out.append(admin)
        return Record(h.text, tuple(out))

    def put_record(self, text: str, values: Sequence[HandleValue], *, caller: Identity | None, now: float,
                   overwrite: bool = True) -> bool:
        """Create ``text`` or replace its whole record. Returns True when it was created."""
        h = self.parse(text)
        if caller is None:
            raise AuthenticationNeeded("Authentication needed", handle=text)
        values = check_values(values)
        existing = self.store.get(h.key)
        if existing is None:
            record = self._prepare_new(h, values, caller, now)
            self._check_templates(text, (), record.values, now)
            self._store(record)
            return True
        if not overwrite:
            raise HandleAlreadyExists("Handle already exists", handle=text)
        values = _keep_admins(existing, values)
        new_idx = {v.index for v in values}
        removed = [v for v in existing.values if v.index not in new_idx]
        self._check_changes(caller, existing, values, removed, text)
        stamp = int(now)
        merged = tuple(
            old if (old := existing.by_index(v.index)) is not None and _same(old, v) else replace(v, timestamp=stamp)
            for v in values
        )
        self._check_templates(text, existing.values, merged, now)
        self._store(Record(existing.handle, merged))
        return False

    def put_values(self, text: str, values: Sequence[HandleValue], *, indexes: Sequence[int],
                   caller: Identity | None, now: float, overwrite: bool = True) -> bool:
        """Add or modify just the values at ``indexes``. Returns True when any value was added."""
        h = self.parse(text)
        if caller is None:
            raise AuthenticationNeeded("Authentication needed", handle=text)
        values = check_values(values)
        if sorted(set(indexes)) != sorted(v.index for v in values):
            raise InvalidValue("The indexes in the query must match the values in the body", handle=text)
        existing = self.store.get(h.key)
        if existing is None:
            raise HandleNotFound("Handle not found", handle=text)
        if not overwrite:
            for v in values:
                if existing.by_index(v.index) is not None:
                    raise ValueAlreadyExists(f"Index conflict for {v.index}", handle=text)
        self._check_changes(caller, existing, values, (), text)
        stamp = int(now)
        by_index = {v.index: v for v in existing.values}
        added = any(v.index not in by_index for v in values)
        for v in values:
            old = by_index.get(v.index)
            by_index[v.index] = old if old is not None and _same(old, v) else replace(v, timestamp=stamp)
        merged = tuple(sorted(by_index.values(), key=lambda v: v.index))
        self._check_templates(text, existing.values, merged, now)
        self._store(Record(existing.handle, merged))
        return added

    def _existing(self, text: str, caller: Identity | None) -> tuple[Handle, Record]:
        """The handle and stored record a change to ``text`` applies to: served here, caller known, present."""
        h = self.parse(text)
        if caller is None:
            raise AuthenticationNeeded("Authentication needed", handle=text)
        existing = self.store.get(h.key)
        if existing is None:
            raise HandleNotFound("Handle not found", handle=text)
        return h, existing

    def delete_values(self, text: str, indexes: Sequence[int], *, caller: Identity | None, now: float) -> None:
        _, existing = self._existing(text, caller)
        removed = [v for v in existing.values if v.index in set(indexes)]
        if len(removed) != len(set(indexes)):
            raise ValuesNotFound("Values not found", handle=text)
        self._check_changes(caller, existing, (), removed, text)
        keep = tuple(v for v in existing.values if v.index not in set(indexes))
        self._check_templates(text, existing.values, keep, now)
        self._store(Record(existing.handle, keep))

    def delete_record(self, text: str, *, caller: Identity | None) -> None:
        h, existing = self._existing(text, caller)
        allowed = permitted(self.store, existing, caller, AdminPerm.DELETE_HANDLE)
        if not allowed and h.is_prefix_record and (parent := parent_prefix(h.suffix)) is not None:
            parent_record = self.store.get(fold(prefix_handle(parent)))
            allowed = permitted(self.store, parent_record, caller, AdminPerm.DELETE_DERIVED_PREFIX)
        if not allowed:
            raise NotAuthorized(f"{caller} may not delete {text}", handle=text)
        if h.is_prefix_record and self.store.count(fold(h.suffix)) > 0:
            # Revoking a prefix that still has identifiers would hand them to whoever gets it next.
            raise NotAuthorized(f"{text} still has identifiers under it: delete them first", handle=text)
        self.store.delete(h.key)
        if h.is_prefix_record:
            self._note_prefix_record(None, deleted_key=h.key)
        self._changed(h.key)

    def batch_create(self, items: Sequence[tuple[str, Sequence[HandleValue]]], *, caller: Identity | None,
                     now: float, overwrite: bool = False) -> BatchResult:
        """Register up to ``MAX_BATCH`` identifiers in one transaction: all or nothing.

        Raises ``BatchRefused`` (with a result per item) when any item fails; nothing is written then.
        """
        if len(items) > MAX_BATCH:
            raise PeerError(f"A batch holds at most {MAX_BATCH} identifiers; this one has {len(items)}")
        if caller is None:
            raise AuthenticationNeeded("Authentication needed")
        allowed: set[str] = set()
        admins: dict[int, HandleValue] = {}
        records: list[Record] = []
        results: list[ItemResult] = []
        seen: set[str] = set()
        failed: HandleError | None = None
        parsed: list[tuple[str, Sequence[HandleValue], Handle | HandleError]] = []
        for text, values in items:
            try:
                parsed.append((text, values, self.parse(text)))
            except HandleError as exc:
                parsed.append((text, values, exc))
        existing_keys = self.store.existing([p.key for _, _, p in parsed if isinstance(p, Handle)])
        stamp = int(now)
        needed: dict[tuple[str, int], TemplateRef] = {}  # templates held elsewhere, fetched before a retry
        keys: list[str] = []
        success = ResponseCode.SUCCESS
        for text, values, h in parsed:
            try:
                if isinstance(h, HandleError):
                    raise h
                key = h.key
                if key in seen:
                    raise HandleAlreadyExists("Handle appears twice in this batch", handle=text)
                seen.add(key)
                if h.is_prefix_record:
                    raise InvalidHandle("Prefix records cannot be created in a batch", handle=text)
                existing = self.store.get(key) if key in existing_keys else None
                if existing is not None and not overwrite:
                    raise HandleAlreadyExists("Handle already exists", handle=text)
                if existing is not None:
                    values = _keep_admins(existing, check_values(values))
                    new_idx = {v.index for v in values}
                    removed = [v for v in existing.values if v.index not in new_idx]
                    self._check_changes(caller, existing, values, removed, text)
                    record = Record(existing.handle, tuple(v.stamped(stamp) for v in values))
                else:
                    record = self._prepare_new(h, values, caller, now, allowed, admins)
                self._check_templates(text, existing.values if existing is not None else (), record.values, now,
                                      needed)
                records.append(record)
                keys.append(key)
                results.append(ItemResult(text, success))
            except HandleError as exc:
                failed = failed or exc
                results.append(ItemResult(text, exc.code, exc.message))
        if len(needed) > MAX_FETCHES_PER_WRITE:
            raise InvalidValue(f"this batch names {len(needed)} templates held by other nodes; a write may name at "
                               f"most {MAX_FETCHES_PER_WRITE}")
        if needed:  # the items are checked once the templates are here: the retry reports every item
            raise TemplateNeeded(tuple(needed.values()))
        if failed is not None:
            bad = sum(1 for r in results if r.code != ResponseCode.SUCCESS)
            raise BatchRefused(
                f"Batch refused: {bad} of {len(items)} items failed; nothing was registered",
                code=failed.code, results=tuple(results),
            )
        self.store.put_many(records)
        self._changed_many(keys)
        return BatchResult(True, tuple(results))

    # -- templates --------------------------------------------------------------------------------------
    def _check_templates(self, text: str, old: Sequence[HandleValue], new: Sequence[HandleValue], now: float,
                         needed: dict[tuple[str, int], TemplateRef] | None = None) -> None:
        """Refuse turning a record holding ``old`` into one holding ``new`` when it breaks a template rule:
        a record naming a template must fit that version (``TemplateViolation``, code 202, every failing
        field named); a template record keeps its published versions. ``needed`` (batches) collects the
        templates to fetch instead of raising ``TemplateNeeded`` at the first."""
        try:
            use = template_use(new)
            if use.defines or (old and is_template_record(old)):
                check_template_write(old, new)
            if use.ref is not None:
                template = self._template(use.ref, now, needed)
                if template is not None:
                    check_record(template, new, handle=text)
        except HandleError as exc:
            exc.handle = exc.handle or text
            raise

    def _template(self, ref: TemplateRef, now: float,
                  needed: dict[tuple[str, int], TemplateRef] | None = None) -> Template | None:
        """The version ``ref`` names: cached, or read from this node's store when it holds the template;
        otherwise ``TemplateNeeded`` (or, with ``needed``, noted there and None)."""
        hit = self.templates.get(ref, now)  # raises InvalidValue for a cached "no such template"
        if hit is not None:
            return hit
        try:
            h = parse_handle(ref.handle)
        except HandleError as exc:
            raise InvalidValue(f"template reference {ref}: {exc.message}") from None
        if self.responsible(h):
            record = self.store.get(h.key)
            return self.templates.learn(ref, record.values if record is not None else None, now, local=True)
        if needed is None:
            raise TemplateNeeded((ref,))
        needed[ref.key] = ref
        return None

    # -- records a node writes for itself --------------------------------------------------------------
    def bootstrap_record(self, record: Record) -> None:
        """Write a record with no authority check: a node's own start-up records, or a replicated write
        already authorised by the peer that took it."""
        self._store(record)

    def bootstrap_delete(self, key: str) -> None:
        """Forget a record with no authority check (a replicated deletion)."""
        self.store.delete(key)
        if is_prefix_record(key):
            self._note_prefix_record(None, deleted_key=key)
        self._changed(key)


#: What a folded template record key holds (``<prefix>/tpl-<name>``): such keys move the shared template
#: generation (``_changed_many``).
_TEMPLATE_KEY = "/" + TEMPLATE_SUFFIX_PREFIX.lower()


@lru_cache(maxsize=256)
def _default_admin_data(caller: Identity) -> bytes:
    """HS_ADMIN data naming ``caller`` with the usual default rights (built once per identity)."""
    return AdminRef(caller.handle, caller.index, perms_from_text(DEFAULT_PERMS_TEXT)).to_bytes()


@lru_cache(maxsize=256)
def _default_admin(caller: Identity, index: int, stamp: int) -> HandleValue:
    """The default HS_ADMIN value (immutable, so one object serves every record of a batch)."""
    return HandleValue(index, HS_ADMIN, _default_admin_data(caller), DEFAULT_TTL_S, stamp)


def _keep_admins(existing: Record, values: Sequence[HandleValue]) -> tuple[HandleValue, ...]:
    """A replacement that names no HS_ADMIN keeps the record's administrators (as creation adds one):
    otherwise replacing a record's data would leave nobody able to change or delete it."""
    if any(v.type == HS_ADMIN for v in values):
        return tuple(values)
    taken = {v.index for v in values}
    kept = [v for v in existing.values if v.type == HS_ADMIN and v.index not in taken]
    return tuple(sorted((*values, *kept), key=lambda v: v.index))


def _same(a: HandleValue, b: HandleValue) -> bool:
    return (a.type, a.data, a.ttl_s, a.perms, a.refs) == (b.type, b.data, b.ttl_s, b.perms, b.refs)
