"""Document history: the append-only, versionstamped log of every update, plus replay.

Written once against the KV protocol (:mod:`crdt.kv.base`), so the same code runs on the
SQLite and FoundationDB engines. Nothing here is ever rewritten: appends add keys,
snapshots add keys, and every read can be asked "as of versionstamp V".

- :meth:`History.append` writes a batch of updates (many docs) in one transaction: each
  new update gets its own versionstamp and an idempotency entry (blake3-16 of its
  bytes: re-sending returns the original versionstamp); each doc it touches gets one
  time-index entry, one change-index entry (:mod:`crdt.changes`: what
  :meth:`History.docs_since` reads) and its head (last versionstamp and update count). Batches too large
  for one transaction are split transparently. The transaction function and the types
  it takes (:class:`DocRef`, :class:`Append`, :class:`Appended`) live in
  :mod:`crdt.appending`; they are re-exported here.
- Replay to V: the latest snapshot at or before V, then the segments and updates in
  (snapshot, V], applied to a ``pycrdt.Doc`` (never ``merge_updates`` over long lists:
  ~30x slower). The reads, the applying and the building of the next snapshot live in
  :mod:`crdt.replaying`; :class:`Replayed` is re-exported here.
- :meth:`History.snapshot_if_due` writes a snapshot every N updates or B bytes, off
  the hot path (the caller schedules it), together with segments: one diff per
  ``segment_every`` consecutive updates of the interval it closes. Replay to V then
  applies the snapshot, at most N / segment_every segments and fewer than
  segment_every updates, so an old version costs about what head costs.
- A snapshot also keeps the updates its doc still held pending (an update can reach
  the log before one it depends on); see ``records.pending_updates``.
- A snapshot or segment too big for one transaction is written over several, with
  its part 0 (which counts the parts) last; readers skip one that is not whole yet and
  use the one before, so a crash in between, or a read during the write, costs only
  speed (see ``records.stored_parts``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import msgpack
from blake3 import blake3
from pycrdt import Doc

from crdt import keys
from crdt.appending import (
    _USER,
    MAX_BATCH_UPDATES,
    Append,
    Appended,
    Attempts,
    DocRef,
    Expect,
    Own,
    _append_checked_tr,
    _append_tr,
    doc_cost,
    update_cost,
    update_hash,
)
from crdt.changes import changed_docs, current_marker
from crdt.errors import FormatError, HeadMoved, NotFound, StoreError, TransactionTooLarge
from crdt.kv.base import (
    MAX_TRANSACTION,
    Committed,
    Engine,
    ReadTransaction,
    Transaction,
    read_counter,
)
from crdt.records import (
    CHUNK,
    Record,
    Snapshot,
    decode_records,
)
from crdt.replaying import Logged, Replayed, _next_snapshot_writes, _whole_values
from crdt.replaying import _build as _build  # re-exported: tests import these from here
from crdt.replaying import _replay_reads as _replay_reads
from crdt.versionstamp import Versionstamp, unchecked

log = logging.getLogger("weft.history")

FORMAT_MAJOR = 1
FORMAT_MINOR = 6  # 1.1: snapshots and segments count their parts; part 0 is written last
# 1.2: a doc's head is its last versionstamp and then its update count (see ``Head``)
# 1.3: idempotency entries of updates with structs are keyed (i, client, clock, hash)
# instead of (h, hash); a store raised from an older minor records "h": True and then
# looks an update up under both keys
# 1.4: a conflict record is a head and a chunked body (see crdt.conflict_store); records
# written whole before are still read
# 1.5: every append writes its project's change marker (keys.project_changed); a project
# with none (nothing appended to it since) lists its documents every time
# 1.6: every append writes the project's change index (keys.project_changes), one entry
# per document it appended to, instead of the marker: the newest entry is the marker
# (see crdt.changes). A marker written before (no entry of its own transaction holds
# it) gets the whole list, so the raise needs no mark of its own
MAX_BATCH_BYTES = 6_000_000  # per transaction, as FDB counts it (see crdt.appending.update_cost)
MAX_UPDATE_BYTES = MAX_TRANSACTION - 1_000_000
# A snapshot that would hold pending updates waits (see History.write_snapshot) until
# this many times ``snapshot_every`` records follow the previous one.
PENDING_DEFER = 8
# A snapshot build keeps its doc for the next build of the same document (a doc costs
# several times its state in memory): for at most this many documents, whose states
# add up to at most this many bytes (the least recently built go first).
BUILT_DOCS = 8
BUILT_STATE_BYTES = 8 << 20
# A build that went on from a kept doc holds the same document as a fresh build, but
# may encode it in other bytes (seen with maps whose keys were set again: a fresh load
# and the doc that integrated the updates one by one lay out the replaced items
# differently). Its writes are used only up to this size: half a transaction, so a
# fresh build of the same snapshot by anybody else fits in one transaction too and
# the two never mix parts. Bigger ones are built fresh.
KEPT_BUILD_BYTES = MAX_BATCH_BYTES // 2
# A document's deletion mark (its space's key): the versionstamp of a head at which the
# document was seen deleted (History.mark_deleted).
GONE = "gone"
# A "changed since" list reads at most this many change-index entries (one per document
# per append); past it, the whole list is the answer (it is read in about as long).
DELTA_LIMIT = 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _id(project: str, path: str) -> int:
    """A document's id: 63 bits of blake3 of its project and (normalised) path."""
    return int.from_bytes(blake3(f"{project}\0{path}".encode()).digest(8), "big") >> 1


@dataclass(frozen=True, slots=True)
class Head:
    """A doc's head value: its last versionstamp and, from format 1.2, how many updates
    the doc holds up to it (``None`` for a head written before). Both are written in the
    same transaction, so a watcher that knows which updates up to ``versionstamp`` it
    wrote itself can tell, without reading the log, whether anybody else wrote any."""

    versionstamp: Versionstamp
    count: int | None

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        count = int.from_bytes(raw[12:20], "little") if len(raw) >= 20 else None
        return cls(Versionstamp(raw[:12]), count)


@dataclass(frozen=True, slots=True)
class DocInfo:
    """A document as the list says it. ``deleted``: known to be deleted at ``head`` (its
    deletion mark names that head, see :meth:`History.mark_deleted`); False says only
    that it is not known so, never that the document is alive."""

    path: str
    head: Versionstamp | None
    count: int
    size: int
    updated_ms: int
    deleted: bool = False


class DocList(NamedTuple):
    """A project's document list as :meth:`History.docs_since` reads it: its change
    marker (None: nothing appended since the store's format 1.5) and ``infos``, None
    when the marker is one the caller knows (nothing changed), else every document
    (``complete``) or only those changed after the caller's marker; and ``conflicts``,
    the project's count of conflict head writes (``keys.conflicts_bump``: not part of
    the marker, which only appends move)."""

    marker: bytes | None
    infos: list[DocInfo] | None
    complete: bool
    conflicts: int = 0


class Loaded(NamedTuple):
    """A document at head as :meth:`History.load` gives it: ``snapshot`` is the one
    the load wrote (``None``: none was due, or it waits for pending updates), and
    ``records`` and ``size`` count the log's updates and bytes after the latest
    snapshot now (0 once the load wrote one)."""

    replayed: Replayed
    snapshot: Snapshot | None
    records: int
    size: int


class History:
    """The versioned log of every document of every tenant, on one KV engine."""

    def __init__(
        self,
        kv: Engine,
        *,
        snapshot_every: int = 1000,
        snapshot_bytes: int = 1 << 22,
        segment_every: int = 32,
    ) -> None:
        self.kv = kv
        self.snapshot_every = snapshot_every
        self.snapshot_bytes = snapshot_bytes
        self.segment_every = segment_every
        self.delta_limit = DELTA_LIMIT
        self._tenants: dict[str, bytes] = {}
        # Per document, the doc its latest snapshot was built in (holding exactly that
        # snapshot), for the next build to go on from: the few busiest documents only.
        self._built: dict[bytes, tuple[Versionstamp, Doc[Any], int]] = {}  # and state size
        self.built_reused = 0  # snapshot builds that went on from a kept doc
        # Whether idempotency entries may also be under their pre-1.3 key (set by init)
        self.legacy_idempotency = False
        # Called with each committed batch and its results, right after the commit,
        # before anything else can run: e.g. rooms note their own commits before their
        # head watchers wake up. A listener must not raise (it is logged if it does).
        self.listeners: list[Callable[[Sequence[Append], Sequence[Appended]], None]] = []
        self._appending: set[asyncio.Task[list[Appended | None]]] = set()  # see append_then

    # --- format, tenants, docs -------------------------------------------------------

    async def init(self) -> None:
        """Record (or check) the layer's on-disk format; refuse a newer major. An older
        minor of the same major is still read as it is and the record is raised to this
        minor, since what this weft writes from now on is in it."""

        def fn(tr: Transaction) -> tuple[int, int, bool]:
            raw = tr.get(keys.FORMAT)
            record = {"major": FORMAT_MAJOR, "minor": FORMAT_MINOR}
            if raw is not None:
                data = msgpack.unpackb(raw)
                major, minor = int(data["major"]), int(data["minor"])
                legacy = bool(data.get("h", minor < 3))
                if major != FORMAT_MAJOR or minor >= FORMAT_MINOR:
                    return major, minor, legacy
                if legacy:
                    record["h"] = True  # entries written before 1.3 stay where they are
            tr.set(keys.FORMAT, msgpack.packb(record))
            return FORMAT_MAJOR, FORMAT_MINOR, "h" in record

        major, minor, self.legacy_idempotency = (await self.kv.transact(fn)).result
        if major > FORMAT_MAJOR:
            raise FormatError(
                f"store {self.kv.url} holds history format {major}.{minor}, newer than this "
                f"weft understands ({FORMAT_MAJOR}.{FORMAT_MINOR}); upgrade weft"
            )

    async def create_tenant(self, name: str) -> bytes:
        """Allocate (idempotently) the tenant's short key prefix in the directory."""
        dir_key = keys.directory(name)

        def fn(tr: Transaction) -> int:
            raw = tr.get(dir_key)
            if raw is not None:
                return int(msgpack.unpackb(raw)["n"])
            number = read_counter(tr.get(keys.DIR_SEQ)) + 1
            tr.set(keys.DIR_SEQ, number.to_bytes(8, "little"))
            tr.set(dir_key, msgpack.packb({"n": number, "created": now_ms()}))
            return number

        prefix = keys.tenant_prefix((await self.kv.transact(fn)).result)
        self._tenants[name] = prefix
        return prefix

    async def tenant(self, name: str, *, create: bool = False) -> bytes:
        """The tenant's key prefix; :class:`NotFound` for an unknown tenant unless ``create``."""
        if name in self._tenants:
            return self._tenants[name]
        dir_key = keys.directory(name)
        raw = await self.kv.read(lambda tr: tr.get(dir_key))
        if raw is None:
            if create:
                return await self.create_tenant(name)
            raise NotFound(f"unknown tenant {name!r}")
        prefix = keys.tenant_prefix(int(msgpack.unpackb(raw)["n"]))
        self._tenants[name] = prefix
        return prefix

    async def tenant_created(self, name: str) -> None:
        """Return once the tenant is in the directory (at once if it is): a reader of
        an unborn reference (:meth:`unborn_doc`) waits for it."""
        await self.kv.watch(keys.directory(name), None)

    async def tenants(self) -> list[str]:
        begin, end = keys.directory_range()
        rows = await self.kv.read(lambda tr: tr.get_range(begin, end))
        return [str(keys.unpack(k)[1]) for k, _ in rows]

    async def doc(self, tenant: str, project: str, path: str, *, create: bool = False) -> DocRef:
        """A reference to a document; the path is validated before any key is built.

        The document id is derived from the project and path, so a reference needs no
        read; the doc's meta record is written by its first append.
        """
        path = keys.normalise_path(path)
        keys.check_name("project", project)
        prefix = await self.tenant(tenant, create=create)
        space = keys.doc_space(prefix, project, _id(project, path))
        return DocRef(tenant, project, path, prefix, space)

    async def doc_to_read(self, tenant: str, project: str, path: str) -> DocRef:
        """A reference for a reader, which writes nothing: the document's (see
        :meth:`doc`), or for a tenant that is not in the directory an unborn one
        (:meth:`unborn_doc`) rather than :class:`NotFound`, so a reader of a new tenant
        reads an empty document, as it does a new project's or a new path's."""
        try:
            return await self.doc(tenant, project, path)
        except NotFound:
            return self.unborn_doc(tenant, project, path)

    def unborn_doc(self, tenant: str, project: str, path: str) -> DocRef:
        """A reference under ``keys.unborn_prefix(tenant)`` (``DocRef.unborn``): the key
        space of a tenant not in the directory, which holds nothing and is never written
        (an append refuses such a reference). Its document reads as empty; once the
        tenant is created, its documents are elsewhere (``(t, n)``): a reader holding
        an unborn reference must take a new one (``server.ws`` closes its connection
        when the directory entry appears)."""
        path = keys.normalise_path(path)
        keys.check_name("project", project)
        prefix = keys.unborn_prefix(tenant)
        space = keys.doc_space(prefix, project, _id(project, path))
        return DocRef(tenant, project, path, prefix, space, unborn=True)

    # --- append ----------------------------------------------------------------------

    async def append(self, items: Sequence[Append]) -> list[Appended]:
        """Append updates durably, exactly once each; the result lines up with ``items``
        (none of them conditional: see :meth:`append_if`)."""
        if any(item.expect is not None for item in items):
            raise ValueError("a conditional append goes through append_if or append_then")
        return [r for r in await self._append_all(items) if r is not None]

    async def _append_all(self, items: Sequence[Append]) -> list[Appended | None]:
        """:meth:`append`, and of conditional items (``Append.expect``) those whose
        condition holds: ``None`` in the result for each of the others."""
        sizes = [len(item.update) for item in items]
        if sizes and max(sizes) > MAX_UPDATE_BYTES:
            raise TransactionTooLarge(
                f"update of {max(sizes)} bytes is over the {MAX_UPDATE_BYTES}-byte limit"
            )
        batches = _batches(items)
        if len(batches) == 1:  # the usual case
            return await self._append_one(batches[0])
        # One after the other: the log keeps the updates in the order given (a device's
        # updates in the order it made them; the writer's tails in log order).
        out = [r for batch in batches for r in await self._append_one(batch)]
        # A repeat of an update that an earlier part of this append stored is not a
        # duplicate (as inside one part): it found that part's entry, new here too.
        new = {r.versionstamp for r in out if r is not None and not r.duplicate}
        return [
            Appended(r.versionstamp, False) if r is not None and r.versionstamp in new else r
            for r in out
        ]

    async def append_if(self, item: Append, head: Versionstamp | None) -> Appended:
        """Append ``item`` only if its document's head is still ``head`` (``None``: the
        document holds no update), checked in the append's own transaction: a commit
        of another instance in between makes it fail (SQLite: one writer at a time;
        FoundationDB: the head's read conflicts). Raises :class:`HeadMoved` if not.
        The group-commit writer takes such items too (``Append.expect``)."""
        (appended,) = await self._append_all([item._replace(expect=Expect(head))])
        if appended is None:
            raise HeadMoved(f"{item.doc.path}: the head moved past {head}")
        return appended

    def append_then(
        self,
        items: Sequence[Append],
        done: Callable[[list[Appended | None] | None, BaseException | None], None],
    ) -> None:
        """:meth:`append` (conditional items too: ``None`` in the results for each whose
        condition did not hold, see ``appending._append_checked_tr``), for a caller that
        goes on from a callback: ``done(results, None)`` once the updates are durable,
        or ``done(None, error)``, called in the event loop's thread (maybe before this
        returns, if it fails at once). On an engine that has ``transact_then`` (SQLite)
        and for updates that fit one transaction (the usual case), with no task: the
        group-commit writer's hot path, one turn of the event loop shorter. Otherwise
        through a task running :meth:`append`'s body."""
        transact_then = getattr(self.kv, "transact_then", None)
        batches = _batches(items) if transact_then is not None else []
        if (
            transact_then is None
            or len(batches) != 1
            or max(len(i.update) for i in items) > MAX_UPDATE_BYTES
        ):
            task = asyncio.ensure_future(self._append_all(items))
            self._appending.add(task)
            task.add_done_callback(functools.partial(self._appended_by_task, done))
            return
        batch = batches[0]

        def landed(outcome: Committed[list[Any]] | Exception) -> None:
            if isinstance(outcome, Exception):
                done(None, outcome)
                return
            try:  # as append would raise it: done must be called whatever happens
                results = self._landed(batch, outcome)
            except Exception as exc:
                done(None, exc)
                return
            done(results, None)

        try:
            transact_then(self._append_fn(batch), landed)
        except Exception as exc:
            done(None, exc)

    def _appended_by_task(
        self,
        done: Callable[[list[Appended | None] | None, BaseException | None], None],
        task: asyncio.Task[list[Appended | None]],
    ) -> None:
        self._appending.discard(task)
        if task.cancelled():
            done(None, StoreError("the append was cancelled"))
        elif (error := task.exception()) is not None:
            done(None, error)
        else:
            done(task.result(), None)

    async def _append_one(self, items: list[Append]) -> list[Appended | None]:
        return self._landed(items, await self.kv.transact(self._append_fn(items)))

    def _append_fn(self, items: list[Append]) -> Callable[[Transaction], list[Any]]:
        ms = now_ms()
        attempts = Attempts()
        legacy = self.legacy_idempotency
        if any(item.expect is not None for item in items):
            return lambda tr: _append_checked_tr(tr, items, ms, legacy, attempts)
        return lambda tr: _append_tr(tr, items, ms, legacy, attempts)

    def _landed(
        self, items: list[Append], committed: Committed[list[Any]]
    ) -> list[Appended | None]:
        """The results of an append transaction (``None``: a conditional item not
        appended), told to the listeners (the appended items only)."""
        tr_version = committed.versionstamp or b""  # none only when all were duplicates
        # Built without Appended's and Versionstamp's __init__ (one of each per update).
        new, user_bytes = tuple.__new__, _USER
        out: list[Appended | None] = [
            new(Appended, (unchecked(tr_version + user_bytes[marker]), False))
            if type(marker) is int
            else new(Appended, (marker.versionstamp, False))
            if type(marker) is Own
            else None
            if marker is None
            else new(Appended, (marker, True))
            for marker in committed.result
        ]
        told, results = items, cast(list[Appended], out)
        if None in out:  # conditional items refused
            told = [item for item, r in zip(items, out, strict=True) if r is not None]
            results = [r for r in out if r is not None]
        for listener in self.listeners:
            try:
                listener(told, results)
            except Exception:  # the batch is durable whatever a listener does
                log.exception("an append listener failed")
        return out

    # --- reads -----------------------------------------------------------------------

    async def head(self, doc: DocRef) -> Versionstamp | None:
        raw = await self.kv.read(lambda tr: tr.get(doc.key("head")))
        return None if raw is None else Head.decode(raw).versionstamp

    async def replay(self, doc: DocRef, at: Versionstamp | None = None) -> Replayed:
        """The document as of ``at`` (inclusive; ``None``: head)."""
        snapshot, segments, records = await self.kv.read(
            lambda tr: _replay_reads(tr, doc, at, with_segments=True)
        )
        return await asyncio.to_thread(_build, snapshot, records, segments)

    async def mark_deleted(self, marks: Sequence[tuple[DocRef, Versionstamp]]) -> int:
        """Mark each document of ``marks`` deleted at its versionstamp, if that is still
        the document's head, in one transaction; how many marks were written (a mark
        already there is not written again). The caller must have seen the document
        flagged deleted holding exactly the log up to that versionstamp (a room at its
        cursor: see ``server.rooms``). A mark never needs clearing: once the document
        changes, its head names another versionstamp, and the list no longer says it
        deleted (:class:`DocInfo`)."""
        marks = [(ref, vs) for ref, vs in marks if not ref.unborn]  # (never written)
        wanted = [ref.key(name) for ref, _ in marks for name in ("head", GONE)]

        def fn(tr: Transaction) -> int:
            values = tr.get_many(wanted)
            written = 0
            for i, (ref, vs) in enumerate(marks):
                head, gone = values[2 * i], values[2 * i + 1]
                if head is not None and head[:12] == vs.raw and gone != vs.raw:
                    tr.set(ref.key(GONE), vs.raw)
                    written += 1
            return written

        return (await self.kv.transact(fn)).result if marks else 0

    async def version_at_time(self, doc: DocRef, ms: int) -> Versionstamp | None:
        """The last versionstamp of ``doc`` committed at or before wall-clock ``ms``."""
        begin = doc.key("t")
        end = keys.pack(("t", ms + 1), doc.space)

        def fn(tr: ReadTransaction) -> Versionstamp | None:
            rows = tr.get_range(begin, end, limit=1, reverse=True)
            return keys.unpack(rows[0][0], doc.space)[2] if rows else None

        result: Versionstamp | None = await self.kv.read(fn)
        return result

    async def replay_at_time(self, doc: DocRef, ms: int) -> Replayed:
        vs = await self.version_at_time(doc, ms)
        if vs is None:
            return Replayed(Doc(), None, 0)
        return await self.replay(doc, vs)

    async def updates(
        self,
        doc: DocRef,
        after: Versionstamp | None = None,
        until: Versionstamp | None = None,
        limit: int = 1000,
        reverse: bool = False,
    ) -> list[Record]:
        """Updates with ``after < vs <= until`` in log order (newest first if ``reverse``)."""
        prefix = doc.key("u")
        begin = keys.pack(("u", after), doc.space) + b"\xff" if after else prefix + b"\x00"
        end = keys.pack(("u", until), doc.space) + b"\xff" if until else prefix + b"\xff"

        def fn(tr: ReadTransaction) -> list[Record]:
            pairs = _whole_values(tr, begin, end, prefix, limit, reverse)
            return decode_records(pairs, prefix)

        return await self.kv.read(fn)

    async def snapshot_if_due(self, doc: DocRef) -> Snapshot | None:
        """Write a snapshot at head when N updates or B bytes arrived since the last one,
        and segments (diffs of ``segment_every`` updates) that make replaying any version
        in between cost about as much as replaying head."""
        snapshot, _, records = await self.kv.read(lambda tr: _replay_reads(tr, doc, None))
        if not self.due(records):
            return None
        return await self.write_snapshot(doc, snapshot, records)

    def due(self, records: Sequence[Logged]) -> bool:
        """Whether a snapshot is due after ``records`` (the log after the latest one):
        ``snapshot_every`` of them, or ``snapshot_bytes`` of updates."""
        return bool(records) and (
            len(records) >= self.snapshot_every
            or sum(r.size for r in records) >= self.snapshot_bytes
        )

    async def load(self, doc: DocRef) -> Loaded:
        """The document at head, as :meth:`replay` gives it, for a writer that keeps it
        open and edits it (a device); when a snapshot is due there, that replay is the
        snapshot's build and the snapshot is written as :meth:`write_snapshot` writes
        it (same bytes: a fresh build), so the next load starts from it.

        A device scheduled its snapshots by counting the updates it recorded in one run,
        so a document edited less than ``snapshot_every`` times per run, or in a few big
        updates, never got one: every start replayed its whole history (a 4 MB file
        edited 3 times: ~25 s per start, all of a ``weft sync --once`` with nothing
        to do). The returned counts say how far the next snapshot is."""
        snapshot, _, records = await self.kv.read(lambda tr: _replay_reads(tr, doc, None))
        added = sum(r.size for r in records)
        if not self.due(records):
            replayed = await asyncio.to_thread(_build, snapshot, records)
            return Loaded(replayed, None, len(records), added)
        self._built.pop(doc.space, None)  # older than the snapshot written below
        new, writes, built = await asyncio.to_thread(
            _next_snapshot_writes, doc, snapshot, records, self.segment_every, None
        )
        pending = snapshot.pending if snapshot is not None else ()
        applied = (*pending, *(r.update for r in records))
        replayed = Replayed(built, records[-1].versionstamp, len(records), applied)
        if new.pending and len(records) < PENDING_DEFER * self.snapshot_every:
            return Loaded(replayed, None, len(records), added)  # deferred: see write_snapshot
        await self._write(writes)
        return Loaded(replayed, new, 0, 0)

    async def write_snapshot(
        self, doc: DocRef, snapshot: Snapshot | None, records: Sequence[Logged]
    ) -> Snapshot | None:
        """Build the snapshot after ``records`` (every log record after ``snapshot``, in
        log order: read from the log, or known to their writer) and write it with its
        segments, in transactions well under the size limit.

        ``None`` (nothing written) while the document holds pending updates (ones that
        arrived before an update they depend on), until ``PENDING_DEFER`` times
        ``snapshot_every`` records follow ``snapshot``. Such a snapshot keeps them apart
        from its state, and replaying from it is not always replaying the log in order:
        yrs integrates some out-of-order histories differently depending on when the
        missing update comes (seen in a review: the text at the snapshot's version
        differed from the log's in 22 of 300 random out-of-order histories). Deferred,
        the snapshot usually comes once the missing update has arrived; replays read
        the log from the previous snapshot meanwhile."""
        cached = self._built.pop(doc.space, None)  # taken: it is changed by the build
        start = cached[1] if cached and snapshot and cached[0] == snapshot.versionstamp else None
        self.built_reused += start is not None
        new, writes, built = await asyncio.to_thread(
            _next_snapshot_writes, doc, snapshot, records, self.segment_every, start
        )
        if start is not None and sum(len(k) + len(v) for k, v in writes) > KEPT_BUILD_BYTES:
            # Written over several transactions, each part must be the bytes any other
            # build of this snapshot writes (another instance's, or a retry after a
            # crash), or parts of two encodings could mix: built fresh.
            new, writes, built = await asyncio.to_thread(
                _next_snapshot_writes, doc, snapshot, records, self.segment_every, None
            )
        if new.pending and len(records) < PENDING_DEFER * self.snapshot_every:
            return None
        await self._write(writes)
        built_docs = self._built
        if not new.pending:
            built_docs[doc.space] = (new.versionstamp, built, len(new.state))
        while len(built_docs) > BUILT_DOCS or (
            sum(size for _, _, size in built_docs.values()) > BUILT_STATE_BYTES
        ):
            del built_docs[next(iter(built_docs))]  # the least recently built
        return new

    async def _write(self, writes: list[tuple[bytes, bytes]]) -> None:
        """A snapshot's and its segments' writes, in commit order, in transactions
        well under the size limit."""
        for batch in _under_limit(writes):  # each value whole once its part 0 is in

            def fn(tr: Transaction, batch: list[tuple[bytes, bytes]] = batch) -> None:
                for key, chunk in batch:
                    tr.set(key, chunk)

            await self.kv.transact(fn)

    def forget_built(self) -> None:
        """Drop the docs kept from the latest snapshot builds (see ``_built``)."""
        self._built = {}

    async def docs(self, tenant: str, project: str) -> list[DocInfo]:
        """Every document of a project that has at least one update, by path."""
        prefix = await self.tenant(tenant)
        return await self.kv.read(lambda tr: _doc_infos(tr, prefix, project))

    async def docs_unless(
        self, tenant: str, project: str, known: Container[bytes]
    ) -> tuple[bytes | None, list[DocInfo] | None]:
        """The project's change marker (the versionstamp of the last append to any of its
        documents and 8 random bytes; None if nothing was appended since the store's format 1.5) and its
        document list (:meth:`docs`), or None for the list when the marker is in
        ``known``: the list is then the one read at that marker. One read, so the two
        agree."""
        listed = await self.docs_since(tenant, project, None, known)
        return listed.marker, listed.infos

    async def docs_since(
        self, tenant: str, project: str, since: bytes | None, known: Container[bytes] = ()
    ) -> DocList:
        """:meth:`docs_unless`, and when ``since`` (a change marker the caller read
        before) is one the project's change index covers and at most ``delta_limit``
        entries follow it, only the documents appended to after it (``complete``
        False; none when it is the current marker). Otherwise the whole list. One
        read, so the marker, the list and the conflict count agree."""
        prefix = await self.tenant(tenant)
        limit = self.delta_limit

        def fn(tr: ReadTransaction) -> DocList:
            marker = current_marker(tr, prefix, project)
            conflicts = read_counter(tr.get(keys.conflicts_bump(prefix, project)))
            if marker is not None and marker in known:
                return DocList(marker, None, True, conflicts)
            if marker is not None and since == marker:
                return DocList(marker, [], False, conflicts)
            if marker is not None and since is not None:
                changed = changed_docs(tr, prefix, project, since, limit)
                if changed is not None:
                    paths = [path for path, _ in changed]
                    infos = _infos(tr, paths, [s for _, s in changed])
                    return DocList(marker, infos, False, conflicts)
            return DocList(marker, _doc_infos(tr, prefix, project), True, conflicts)

        return await self.kv.read(fn)

    async def project_cut(self, tenant: str, project: str, ms: int) -> Versionstamp | None:
        """The project-wide cut for wall-clock ``ms``: the newest versionstamp any of its
        documents committed at or before ``ms``. Replaying every doc at it gives a
        consistent picture of the project."""
        infos = await self.docs(tenant, project)
        found = [
            await self.version_at_time(await self.doc(tenant, project, info.path), ms)
            for info in infos
        ]
        stamps = [vs for vs in found if vs is not None]
        return max(stamps) if stamps else None

    async def replay_project(
        self, tenant: str, project: str, at: Versionstamp | None = None
    ) -> dict[str, Replayed]:
        """Every document of a project as of ``at``; docs created after ``at`` are left out."""
        out: dict[str, Replayed] = {}
        for info in await self.docs(tenant, project):
            replayed = await self.replay(await self.doc(tenant, project, info.path), at)
            if replayed.versionstamp is not None:
                out[info.path] = replayed
        return out


def _doc_infos(tr: ReadTransaction, prefix: bytes, project: str) -> list[DocInfo]:
    """``History.docs``, read in ``tr``."""
    paths, spaces = [], []
    for key, raw in tr.get_range(*keys.project_docs(prefix, project)):
        paths.append(str(keys.unpack(key, prefix)[2]))
        spaces.append(bytes(msgpack.unpackb(raw)["space"]))
    return _infos(tr, paths, spaces)


def _infos(tr: ReadTransaction, paths: list[str], spaces: list[bytes]) -> list[DocInfo]:
    """The infos of the documents at ``paths``, whose spaces are ``spaces``."""
    names = ("head", "n", "bytes", "ms", GONE)
    wanted = [keys.pack((name,), space) for space in spaces for name in names]
    # One get_many, not five serial gets per document: on FoundationDB every get is a
    # round trip, and the whole read must finish within its 5-second limit.
    values = tr.get_many(wanted)
    out = []
    for i, path in enumerate(paths):
        head, n, size, ms, gone = values[5 * i : 5 * i + 5]
        out.append(
            DocInfo(
                path,
                Head.decode(head).versionstamp if head else None,
                read_counter(n),
                read_counter(size),
                read_counter(ms),
                head is not None and gone is not None and head[:12] == gone,
            )
        )
    return out


def _batches(items: Sequence[Append]) -> list[list[Append]]:
    """``items`` in order, in batches of at most MAX_BATCH_UPDATES whose transactions
    FoundationDB counts at most MAX_BATCH_BYTES (estimated: ``update_cost`` of each
    update, ``doc_cost`` of each document it touches) or that hold one update."""
    batches: list[list[Append]] = []
    batch: list[Append] = []
    docs: set[bytes] = set()
    size = 0
    for item in items:
        space = item.doc.space
        cost = update_cost(item) + (0 if space in docs else doc_cost(item.doc))
        if batch and (len(batch) >= MAX_BATCH_UPDATES or size + cost > MAX_BATCH_BYTES):
            batches.append(batch)
            batch, docs, size = [], set(), 0
            cost = update_cost(item) + doc_cost(item.doc)
        batch.append(item)
        docs.add(space)
        size += cost
    if batch:
        batches.append(batch)
    return batches


def _under_limit(writes: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
    """``writes`` in batches that stay well under the transaction size limit."""
    batches: list[list[tuple[bytes, bytes]]] = [[]]
    size = 0
    for key, value in writes:
        if batches[-1] and size + len(key) + len(value) > MAX_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append((key, value))
        size += len(key) + len(value)
    return batches


__all__ = [
    "CHUNK",
    "MAX_BATCH_UPDATES",
    "Append",
    "Appended",
    "DocInfo",
    "DocList",
    "DocRef",
    "Expect",
    "History",
    "Loaded",
    "Record",
    "Replayed",
    "Snapshot",
    "update_hash",
]
