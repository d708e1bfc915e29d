"""The append transaction: what :meth:`crdt.history.History.append` runs per batch.

- :class:`DocRef` (where one document's history lives), with its :class:`AppendKeys`
  (the keys every append to it writes or reads, packed once), :class:`Append` (one
  update to append, with who made it) and :class:`Appended` (where it landed).
- :func:`_append_tr`, the transaction function: per new update, its record (chunked) and
  its idempotency entry (blake3-16 of its bytes, filed under the update's first struct
  id: see :func:`_idempotency_keys`); per touched doc, one time-index entry, its head
  and its counters. It runs once per update of every append, so it keeps per-update
  work to a few operations; ``bench.store`` measures it against raw SQLite.

Split from :mod:`crdt.history`, which re-exports the public names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgpack
from blake3 import blake3

from crdt import keys
from crdt.errors import PermissionDenied
from crdt.kv.base import Transaction, read_counter
from crdt.records import (
    CHUNK,
    SMALL_RECORD_HEADERS,
    chunks,
    first_struct,
    record_header,
    record_tail,
)
from crdt.versionstamp import INCOMPLETE_TR, TR_LEN, Versionstamp

MAX_BATCH_UPDATES = 4_000  # updates per transaction (History.append splits bigger batches)


def update_hash(update: bytes) -> bytes:
    """The idempotency key of an update: blake3 of its bytes, 16 bytes."""
    return blake3(update).digest(16)


class AppendKeys:
    """The keys every append to one doc writes or reads, packed once per :class:`DocRef`.

    A one-update append (what a live edit is) packed each of them again: ~10 tuple
    packs (cache lookups at best) and one real pack of the time-index key, whose ms is
    new every time (it also pushed the doc's hot keys out of the pack cache). That was
    about half the CPU of a one-update append (measured: 75 µs of ``_append_tr`` back
    to back, 150 µs when appends came 10 ms apart)."""

    __slots__ = (
        "bytes",
        "changes",
        "h",
        "head",
        "i",
        "meta",
        "ms",
        "n",
        "path",
        "records",
        "t",
    )

    def __init__(self, ref: DocRef) -> None:
        if ref.unborn:  # built once per document: the guard costs an append nothing
            raise PermissionDenied(
                f"{ref.tenant}/{ref.project}/{ref.path}: the tenant does not exist, and a "
                "reader's reference never creates it"
            )
        space = ref.space
        self.meta = keys.pack(("doc", ref.project, ref.path), ref.tenant_prefix)
        # T + (changes, project, <vs>): the doc's change-index entry, before its stamp
        self.changes = keys.project_changes(ref.tenant_prefix, ref.project) + keys.VS_CODE
        self.path = ref.path.encode()  # the entry's value, after the marker's random bytes
        self.head, self.n, self.bytes, self.ms = (
            keys.pack((name,), space) for name in ("head", "n", "bytes", "ms")
        )
        self.i, self.h, self.t = (keys.pack((name,), space) for name in ("i", "h", "t"))
        self.records = keys.IncompleteKeys(("u",), space)  # D + (u, <vs>, part)

    def time_key(self, ms: int, user: int) -> tuple[bytes, int]:
        """``keys.pack_incomplete(("t", ms), user, (), space)``, without the tuple layer
        (a tuple is the concatenation of its packed elements; tests check it)."""
        head = self.t + keys.pack_uint(ms) + keys.VS_CODE
        return head + INCOMPLETE_TR + user.to_bytes(2, "big"), len(head)


@dataclass(frozen=True, slots=True)
class DocRef:
    """Where one document's history lives. Build with :meth:`History.doc`.

    ``unborn``: its tenant is not in the directory, and ``tenant_prefix`` is
    ``keys.unborn_prefix`` (:meth:`History.unborn_doc`, for a read-only reader): there
    is nothing to read under it, and nothing may be written (an append refuses it)."""

    tenant: str
    project: str
    path: str
    tenant_prefix: bytes
    space: bytes
    unborn: bool = False
    _append_keys: AppendKeys | None = field(default=None, init=False, repr=False, compare=False)

    def key(self, *items: keys.Element) -> bytes:
        return keys.pack(items, self.space)

    @property
    def meta_key(self) -> bytes:
        """``keys.doc_meta`` of this doc (its project and path were checked when built)."""
        return self.append_keys.meta

    @property
    def append_keys(self) -> AppendKeys:
        found = self._append_keys
        if found is None:
            found = AppendKeys(self)
            object.__setattr__(self, "_append_keys", found)  # a cache: frozen otherwise
        return found


class Expect(NamedTuple):
    """The condition of a conditional append: its document's head must still be
    ``head`` (``None``: the document holds no update)."""

    head: Versionstamp | None


class Append(NamedTuple):
    """One update to append, with who made it. (A named tuple, not a frozen dataclass:
    one is built per update, and a frozen dataclass's ``__init__`` cost 3x as much.)
    ``expect``: append it only if its document's head is still that one (see
    :func:`_append_checked_tr`)."""

    doc: DocRef
    update: bytes
    user: str = ""
    client: str = ""
    session: str = ""
    digest: bytes | None = None  # update_hash(update), when the caller has it already
    expect: Expect | None = None


class Appended(NamedTuple):
    """Where an update landed; ``duplicate`` when it was in the log before this append
    (a repeat inside one append gets the first copy's versionstamp, not ``duplicate``)."""

    versionstamp: Versionstamp
    duplicate: bool


# --- the transaction function (synchronous, retryable) ------------------------------


_PART_0 = keys.pack((0,))


class Attempts:
    """One append's runs of :func:`_append_tr`: the 8 random bytes its change-index
    entries carry (drawn once, so every run writes the same), and how many runs began.

    A store may run the function again after a commit whose result it does not know
    (FoundationDB's 1021 commit_unknown_result): when that commit did happen, the next
    run finds the updates logged. Found by a run after the first, an update whose
    commit's change-index entry holds these random bytes was stored by this append (its
    earlier run), so it is new, not a repeat (:class:`Own`)."""

    __slots__ = ("nonce", "runs")

    def __init__(self) -> None:
        self.nonce = os.urandom(8)
        self.runs = 0


class Own(NamedTuple):
    """An update an earlier run of the same append stored (see :class:`Attempts`)."""

    versionstamp: Versionstamp


def _stored_by(tr: Transaction, item: Append, found: bytes, nonce: bytes) -> bool:
    """Whether the commit of versionstamp ``found`` wrote ``item``'s document's
    change-index entry with ``nonce`` (one range read)."""
    index = keys.project_changes(item.doc.tenant_prefix, item.doc.project)
    entry = tr.get_range(*keys.changes_of_commit(index, found[:TR_LEN]), limit=1)
    return bool(entry) and entry[0][1][: len(nonce)] == nonce


def _stored_before(tr: Transaction, item: Append, attempts: Attempts) -> bool:
    """Whether an earlier run of this append (``attempts``) stored ``item``."""
    (key,), _ = _idempotency_keys([item])
    found = tr.get(key)
    return found is not None and _stored_by(tr, item, found, attempts.nonce)


def _append_tr(
    tr: Transaction,
    items: list[Append],
    ms: int,
    legacy: bool = False,
    attempts: Attempts | None = None,
) -> list[int | Versionstamp | Own]:
    """Append ``items``; per item the user version of a new entry, an existing vs, or
    (a run after the first, see :class:`Attempts`) the vs an earlier run stored.

    Per new update: its record (chunked) and its idempotency entry. Per touched doc,
    once: the time-index entry, the change-index entry (``keys.project_changes``, whose
    newest entry is the project's change marker) and head (all three at its last new
    update), the counters and the time.
    ``legacy``: entries may also be under their pre-1.3 key.

    This runs once per update of every append: the loop below keeps per-update work to
    a few operations (a record tail and a doc's state are looked up again only when
    they change from one update to the next, as they rarely do in one device's batch).
    """
    attempts = attempts or Attempts()
    again = attempts.runs > 0  # the first run stored nothing that the store kept
    attempts.runs += 1
    markers: list[int | Versionstamp | Own] = []
    hash_keys, groups = _idempotency_keys(items)
    docs = {item.doc.space: item.doc for item in items}
    touch_keys = [k for doc in docs.values() for k in _touch_keys(doc)]
    stored, touch_values = _existing(tr, hash_keys, groups, touch_keys)
    doc_values = {space: touch_values[4 * n : 4 * n + 4] for n, space in enumerate(docs)}
    if legacy:
        old_keys = [
            (n, _h_key(item, item.digest or update_hash(item.update)))
            for n, item in enumerate(items)
        ]
        old_keys = [(n, key) for n, key in old_keys if key != hash_keys[n]]
        for (n, _), old in zip(old_keys, tr.get_many([key for _, key in old_keys]), strict=True):
            if stored[n] is None:
                stored[n] = old
    touched: dict[bytes, _Touched] = {}
    in_batch: dict[bytes, int] = {}  # idempotency key -> user version, for repeats
    # The loop runs once per update: methods and constants are looked up once.
    set_key, set_value = tr.set_versionstamped_key, tr.set_versionstamped_value
    stamps, record_ends = _STAMPS, _STAMP_ENDS
    doc: DocRef | None = None
    state: _Touched | None = None
    record_head = b""  # the doc's D + (u, <placeholder>
    offset = 0
    by: str | None = None  # the user, client and session ``tail`` was made for
    client = session = ""
    tail = b""
    user = 0
    for item, hash_key, existing in zip(items, hash_keys, stored, strict=True):
        if existing is not None:
            if again and _stored_by(tr, item, existing, attempts.nonce):
                markers.append(Own(Versionstamp(existing)))
            else:
                markers.append(Versionstamp(existing))
            continue
        if hash_key in in_batch:
            markers.append(in_batch[hash_key])
            continue
        if item.doc is not doc or state is None:
            doc = item.doc
            found = touched.get(doc.space)
            if found is None:
                found = touched[doc.space] = _touch(tr, doc, ms, doc_values[doc.space])
            state = found
            record_head = state.records.head
            offset = len(record_head)
            by = None  # the tail holds the doc's ms
        # One device's updates carry the very same strings: ``is`` finds them cheaply
        # (equal strings that are other objects only make the tail again).
        if item.user is not by or item.client is not client or item.session is not session:
            by, client, session = item.user, item.client, item.session
            tail = record_tail(by, client, session, state.ms)
        update = item.update
        size = len(update)
        header = SMALL_RECORD_HEADERS[size] if size < 0x100 else record_header(size)
        record = header + update + tail
        if len(record) <= CHUNK:  # D + (u, <stamp>, 0): the usual one-part record
            set_key(record_head + record_ends[user], offset, record)
        else:
            for part, chunk in enumerate(chunks(record)):
                key, at = state.records.key(user, part)
                set_key(key, at, chunk)
        set_value(hash_key, stamps[user], 0)  # this update's stamp, to be completed
        state.last = user
        state.count += 1
        state.size += size
        in_batch[hash_key] = user
        markers.append(user)
        user += 1
    # The commit's change marker is its versionstamp, then 8 random bytes: a store restored
    # from a backup (or copied) makes commits again that earlier ones' versionstamps name,
    # and a marker of the lost ones must never name the list of the new ones (a device
    # polling with it got a 304 and kept its stale list until the project's next append).
    nonce = attempts.nonce
    for state in touched.values():
        doc = state.doc
        if state.count:
            # One time-index entry per doc and transaction, at its last new update: every
            # update of a doc in one transaction has the same ms, so "the last update at
            # or before a time" is always the last of some transaction.
            ak = doc.append_keys
            key, at = ak.time_key(state.ms, state.last)
            tr.set_versionstamped_key(key, at, b"")
            # Its change-index entry: the project's marker is the newest one, and "which
            # docs changed after a marker" a range read (crdt.changes). A blind write:
            # appends to one project never conflict on it.
            entry = ak.changes + stamps[state.last]
            tr.set_versionstamped_key(entry, len(ak.changes), nonce + ak.path)
            total = state.before + state.count
            tr.set_versionstamped_value(
                ak.head,
                INCOMPLETE_TR + state.last.to_bytes(2, "big") + total.to_bytes(8, "little"),
                0,
            )
            tr.set(ak.n, total.to_bytes(8, "little"))
            tr.set(ak.bytes, (state.bytes_before + state.size).to_bytes(8, "little"))
        tr.set(doc.append_keys.ms, state.ms.to_bytes(8, "little"))
    return markers


def _append_checked_tr(
    tr: Transaction,
    items: list[Append],
    ms: int,
    legacy: bool = False,
    attempts: Attempts | None = None,
) -> list[int | Versionstamp | Own | None]:
    """:func:`_append_tr` of ``items`` but those whose ``expect`` does not hold: their
    document's head, read in ``tr``, is not the one expected, or an earlier item of
    ``items`` for the same document is appended before them (it moves the head).
    Nothing of such an item is written; its marker is ``None``. The head's read is
    what refuses one when another instance committed in between (SQLite: one writer
    at a time; FoundationDB: the read conflicts).

    A run after the first (FoundationDB's 1021, see :class:`Attempts`) keeps an item
    whose head moved when the earlier run stored it: its condition held then, and the
    head moved by its own commit (it comes back as :class:`Own`, not refused)."""
    attempts = attempts or Attempts()
    again = attempts.runs > 0
    checked = [n for n, item in enumerate(items) if item.expect is not None]
    heads = tr.get_many([items[n].doc.append_keys.head for n in checked])
    found = dict(zip(checked, heads, strict=True))
    kept: list[Append] = []
    refused: set[int] = set()
    docs: set[bytes] = set()  # the documents of the items kept so far
    for n, item in enumerate(items):
        space = item.doc.space
        if item.expect is not None:
            raw = found[n]
            head = None if raw is None else Versionstamp(raw[:12])
            moved = space in docs or head != item.expect.head
            if moved and not (again and _stored_before(tr, item, attempts)):
                refused.add(n)
                continue
        kept.append(item)
        docs.add(space)
    markers = iter(_append_tr(tr, kept, ms, legacy, attempts) if kept else [])
    return [None if n in refused else next(markers) for n in range(len(items))]


# The 2 user bytes of each update of a transaction (append gives one at most
# MAX_BATCH_UPDATES: History.append splits bigger batches); its incomplete stamp; and
# the end of its one-part record's key: the stamp, then part 0.
_USER = [n.to_bytes(2, "big") for n in range(MAX_BATCH_UPDATES)]
_STAMPS = [INCOMPLETE_TR + user for user in _USER]
_STAMP_ENDS = [stamp + _PART_0 for stamp in _STAMPS]


def _idempotency_keys(items: list[Append]) -> tuple[list[bytes], dict[bytes, list[int]]]:
    """Each update's idempotency key: D + (i, client, clock, hash) for an update with
    structs (its first struct's id: a client's entries are inserted in order, next to
    each other, instead of at random places in the index), else D + (h, hash). And the
    (i, client) keys' groups: per D + (i, client) prefix, the indexes of its updates.

    Built without the tuple layer (one per update); tests check them against it."""
    groups: dict[bytes, list[int]] = {}  # D + (i, client) -> its updates' indexes
    out: list[bytes] = []
    doc: DocRef | None = None  # the (doc, client) whose prefix and group are at hand
    client: bytes | None = None
    head = b""
    members: list[int] = []
    for n, item in enumerate(items):
        update = item.update
        digest = item.digest or blake3(update).digest(16)  # update_hash, inlined
        # the tuple layer's bytes element: 0x01, 0x00 escaped as 0x00 0xff, 0x00
        packed_digest = b"\x01" + digest.replace(b"\x00", b"\x00\xff") + b"\x00"
        first = first_struct(update)
        if first is None:
            out.append(item.doc.append_keys.h + packed_digest)
            continue
        if first[0] != client or item.doc is not doc:  # rare in one device's run
            doc, client = item.doc, first[0]
            head = keys.pack_bytes_after(doc.append_keys.i, client)
            members = groups.setdefault(head, [])
        clock = first[1]
        # keys.pack_uint, inlined: (0).bit_length() is 0, which packs as b"\x14"
        size = (clock.bit_length() + 7) // 8
        if size > 7:
            out.append(head + keys.pack_uint(clock) + packed_digest)
        else:
            out.append(head + _INT_CODES[size] + clock.to_bytes(size, "big") + packed_digest)
        members.append(n)
    return out, groups


_INT_CODES = [bytes((0x14 + size,)) for size in range(8)]  # the tuple layer's int codes


# --- what an append costs FoundationDB ------------------------------------------------
#
# FoundationDB's 10 MB transaction limit counts more than the bytes written: every key of
# a write again, and every read and write conflict range (a key's range is the key twice,
# plus one byte). An append reads and writes a handful of keys per update and per
# document, so a group commit of one small update in each of thousands of documents
# weighs several times its updates' bytes (measured on the FDB double: about 3.2 kB per
# such document with a 64-character project name; 4,000 of them, 13 MB). History.append
# splits a batch by these estimates, which are upper bounds (tests check them against
# the double's accounting).

_STAMPED_KEY = 40  # what a D + (u, vs, part) or D + (t, ms, vs) key adds to D, and more
_INDEX_KEY = 80  # what an idempotency key adds to D: client, clock, digest (escaped)
_DOC_KEY = 8  # what D + (head,), (n,), (bytes,), (ms,) add to D


def update_cost(item: Append) -> int:
    """An upper bound of what FoundationDB counts for ``item``'s own writes and reads
    in its append transaction: its record (chunked), and its idempotency entry (read,
    written and its write conflict range, under its pre-1.3 key too)."""
    space = len(item.doc.space)
    strings = len(item.user.encode()) + len(item.client.encode()) + len(item.session.encode())
    parts = len(item.update) // CHUNK + 1
    index = space + _INDEX_KEY
    return len(item.update) + strings + 64 + parts * (space + _STAMPED_KEY) + 8 * index


def doc_cost(doc: DocRef) -> int:
    """An upper bound of what FoundationDB counts for the writes and reads an append
    transaction makes once per document it touches: its meta record (read, and written
    by its first append), its clock and counters (read and written), its head, and its
    time-index and change-index entries (the latter's key and value hold less than its
    meta key, and 24 bytes)."""
    meta = len(doc.meta_key)
    key = len(doc.space) + _DOC_KEY
    return 12 * meta + 2 * len(doc.space) + 24 * key + 352


RANGE_GROUP = 8  # a client's updates in one append looked up with one range read from here


def _existing(
    tr: Transaction, hash_keys: list[bytes], groups: dict[bytes, list[int]], other: list[bytes]
) -> tuple[list[bytes | None], list[bytes | None]]:
    """The stored values of ``hash_keys`` and of ``other``, in two or so queries.

    A client's new updates are filed next to each other, after its earlier ones: the
    idempotency keys of a run of them (one (doc, client) prefix, at least RANGE_GROUP)
    are checked with one range read from their smallest to their largest, which finds
    nothing or the few already there, instead of one index lookup each. A range that
    holds more than a few other entries (clocks far apart) falls back to lookups. The
    rest, and ``other``, are read with one ``get_many``."""
    found: dict[bytes, bytes] = {}
    ranged: set[int] = set()
    for members in groups.values():
        if len(members) < RANGE_GROUP:
            continue
        group = [hash_keys[n] for n in members]
        limit = 2 * len(members) + 16
        rows = tr.get_range(min(group), max(group) + b"\x00", limit=limit)
        if len(rows) < limit:
            found.update(rows)
            ranged.update(members)
    if not ranged:
        values = tr.get_many([*hash_keys, *other])
        return values[: len(hash_keys)], values[len(hash_keys) :]
    if len(ranged) == len(hash_keys):  # the usual: one device's run
        return [found.get(key) for key in hash_keys], tr.get_many(other)
    point = [n for n in range(len(hash_keys)) if n not in ranged]
    values = tr.get_many([*(hash_keys[n] for n in point), *other])
    stored = [found.get(key) for key in hash_keys]
    for n, value in zip(point, values, strict=False):
        stored[n] = value
    return stored, values[len(point) :]


def _h_key(item: Append, digest: bytes) -> bytes:
    """An update's idempotency key before format 1.3: D + (h, hash)."""
    return keys.pack_bytes_after(item.doc.append_keys.h, digest)


@dataclass(slots=True)
class _Touched:
    """What one append transaction does to one doc's head, counters and clock."""

    doc: DocRef
    ms: int
    before: int  # updates the doc held before this transaction
    bytes_before: int
    records: keys.IncompleteKeys  # D + (u, vs, part)
    last: int = 0
    count: int = 0
    size: int = 0


def _touch_keys(doc: DocRef) -> tuple[bytes, bytes, bytes, bytes]:
    """What :func:`_touch` reads of a doc: its meta, clock, update and byte counters."""
    ak = doc.append_keys
    return ak.meta, ak.ms, ak.n, ak.bytes


def _touch(tr: Transaction, doc: DocRef, ms: int, values: Sequence[bytes | None]) -> _Touched:
    """A doc's state for its first new update in ``tr``, from the values of its
    :func:`_touch_keys`: its new updates' wall-clock ms is never before its previous
    ones', and its first update writes its meta record. (The counters are read rather
    than atomically added: the head records the count, and the clock is read anyway.)"""
    meta, last_ms, count, size = values
    if meta is None:
        tr.set(doc.meta_key, msgpack.packb({"space": doc.space, "created": ms}))
    return _Touched(
        doc,
        max(ms, read_counter(last_ms)),
        read_counter(count),
        read_counter(size),
        doc.append_keys.records,
    )


__all__ = [
    "MAX_BATCH_UPDATES",
    "RANGE_GROUP",
    "Append",
    "AppendKeys",
    "Appended",
    "DocRef",
    "doc_cost",
    "update_cost",
    "update_hash",
]
