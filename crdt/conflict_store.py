"""Conflict records in the store: a small head per record, its body chunked.

A record holds whole texts (an edit against a deletion holds the document about three
times), so it can be far over the 100 kB value limit, and over what one transaction
should write. It is stored as (format 1.4, see ``crdt.keys``):

- its body, the whole record as written (:meth:`ConflictRecord.to_dict`), split by
  :func:`crdt.records.stored_parts` (the machinery of snapshots: a part count, a sum,
  parts of at most ``CHUNK`` bytes) under ``T + (conflictbody, project, vs, tag, part)``,
  where ``tag`` is 8 bytes of blake3 of the parts. Two writers of the same record (the
  same branch judged twice) write different bytes (``created_ms``) to different tags,
  so their parts never mix;
- then, last, in the last transaction and only if it is not there yet, its head at
  ``T + (conflict, project, vs)``: ``{body: tag, path, status, resolved_by,
  resolved_ms, resolution, ours_clients, theirs_clients}`` (the devices of the
  record's ``ours`` and ``theirs`` sides, for ``?device=`` and ``?side=``; a head
  written before one of them lacks it, and its body is read to filter it). The head
  is the record's commit marker: a record whose body takes several transactions is
  not listed until all of it is in, and a write cut short leaves only parts no head
  names. Listing reads the heads, a page at a time in
  key order (:func:`list_conflicts`), and filters on them before it reads any body;
  resolving rewrites only the head.

Each write of a head (a record made, a record resolved) adds 1, in its transaction, to
the project's counter ``T + (conflictv, project)``: the document list says it
(``X-Weft-Conflicts``), so a running ``weft sync`` polling that list learns that the
conflict list changed without reading it.

A head without ``body`` is a whole record written before 1.4, as one value: still read,
and rewritten in the new form when it is resolved.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import msgpack
from blake3 import blake3

from crdt import keys
from crdt.conflicts import MAX_PAGE, PAGE, ConflictRecord
from crdt.errors import NotFound, ProtocolError, StoreError
from crdt.history import DocRef, History, _under_limit, now_ms
from crdt.kv.base import ReadTransaction, Transaction
from crdt.records import load_parts, stored_parts
from crdt.versionstamp import Versionstamp

HEAD_FIELDS = ("path", "status", "resolved_by", "resolved_ms", "resolution")
# In a head: each side's devices (not read back as fields). A head written before
# ``ours_clients`` lacks both; one written before ``theirs_clients``, that one.
OURS_CLIENTS = "ours_clients"
THEIRS_CLIENTS = "theirs_clients"
SIDES = ("ours", "theirs", "either")
"""Which side of a record ``device`` filters the list on: ``either`` is both."""
MAX_RESOLUTION_BYTES = 60_000  # a resolution note lives in the head, one value
REPORT_TRIES = 100  # resolved records of one same report before refusing another


@dataclasses.dataclass(frozen=True, slots=True)
class _Where:
    """Where one record lives: its tenant prefix, project and id."""

    tenant: bytes
    project: str
    vs: Versionstamp

    @property
    def head(self) -> bytes:
        return keys.conflict(self.tenant, self.project, self.vs)

    def body(self, tag: bytes) -> bytes:
        return keys.conflict_body(self.tenant, self.project, self.vs, tag)


def _head(fields: dict[str, Any], tag: bytes) -> bytes:
    return msgpack.packb(
        {
            "body": tag,
            **{name: fields[name] for name in HEAD_FIELDS},
            OURS_CLIENTS: list(fields["ours"]["clients"]),
            THEIRS_CLIENTS: list(fields["theirs"]["clients"]),
        }
    )


def _sides(side: str) -> tuple[str, ...]:
    """The sides ``side`` (one of ``SIDES``) names."""
    return ("ours", "theirs") if side == "either" else (side,)


def _side_names(head: dict[str, Any], device: str, side: str) -> bool | None:
    """Whether ``side`` ("ours" or "theirs") of the record of ``head`` names ``device``
    among its clients, from the head alone; None when the head cannot tell (written
    before heads held that side's clients: its body says)."""
    clients = head.get(OURS_CLIENTS if side == "ours" else THEIRS_CLIENTS)
    if clients is None and "body" not in head:  # written whole, before 1.4
        part = head.get(side)
        clients = part.get("clients") if isinstance(part, dict) else None
    if not isinstance(clients, list):
        return None
    return device in clients


def _head_names(head: dict[str, Any], device: str, side: str) -> bool | None:
    """Whether the record of ``head`` names ``device`` on ``side`` (one of ``SIDES``),
    from the head alone; None when the head cannot tell."""
    named = [_side_names(head, device, one) for one in _sides(side)]
    if True in named:
        return True
    return None if None in named else False


def _record_names(record: ConflictRecord, device: str, side: str) -> bool:
    """:func:`_head_names` from the record itself."""
    return any(device in getattr(record, one).clients for one in _sides(side))


def _load(tr: ReadTransaction, where: _Where, head: bytes) -> ConflictRecord:
    """The record whose head is ``head``: its body with the head's fields over it."""
    return _load_sized(tr, where, head)[0]


def _load_sized(tr: ReadTransaction, where: _Where, head: bytes) -> tuple[ConflictRecord, int]:
    """:func:`_load`, and the bytes of its body's parts (0 for a record written whole)."""
    data = msgpack.unpackb(head)
    if "body" not in data:
        return ConflictRecord.from_dict(data), 0  # written whole, before 1.4
    body = where.body(bytes(data["body"]))
    lo, hi = keys.prefix_range(body)
    parts = {keys.unpack(k, body)[0]: v for k, v in tr.get_range(lo, hi)}
    fields = load_parts(parts)
    if fields is None:
        raise StoreError(f"conflict {where.vs.hex()}: its head names a body not in the store")
    fields.update({name: data[name] for name in HEAD_FIELDS if name in data})
    return ConflictRecord.from_dict(fields), sum(map(len, parts.values()))


def _count(tr: Transaction, where: _Where) -> None:
    """Count a write of a record's head (made, or resolved) in the project's counter,
    in the transaction that writes it (an atomic add: writers never conflict on it)."""
    tr.add(keys.conflicts_bump(where.tenant, where.project), 1)


def _read_head(tr: ReadTransaction, where: _Where) -> dict[str, Any] | None:
    raw = tr.get(where.head)
    return None if raw is None else dict(msgpack.unpackb(raw))


async def _put(history: History, where: _Where, record: ConflictRecord) -> ConflictRecord:
    """Store ``record`` unless a record with its id is there already; the stored one.

    The body's parts go first (part 0, which counts them, last), over as many
    transactions as their size needs, each well under the transaction limit; the head
    goes in the last one. Each transaction first checks the head: once another writer's
    is in, this write stops, clears what it wrote, and that record is the answer."""
    fields = record.to_dict()
    parts = stored_parts(fields)
    tag = blake3(b"".join(parts)).digest(8)
    body = where.body(tag)
    writes = [(keys.conflict_part(body, n), parts[n]) for n in [*range(1, len(parts)), 0]]
    batches = _under_limit(writes)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1

        def fn(
            tr: Transaction, batch: list[tuple[bytes, bytes]] = batch, last: bool = last
        ) -> bytes | None:
            found = tr.get(where.head)
            if found is not None:
                if msgpack.unpackb(found).get("body") != tag:
                    tr.clear_range(*keys.prefix_range(body))  # another writer's is in
                return found
            for key, value in batch:
                tr.set(key, value)
            if last:
                lo, hi = keys.conflict_bodies(where.tenant, where.project, where.vs)
                body_lo, body_hi = keys.prefix_range(body)
                tr.clear_range(lo, body_lo)  # bodies of writes cut short before this one
                tr.clear_range(body_hi, hi)
                tr.set(where.head, _head(fields, tag))
                _count(tr, where)
            return None

        found = (await history.kv.transact(fn)).result
        if found is not None:
            return await _get(history, where)
    return record


async def save(history: History, doc: DocRef, record: ConflictRecord) -> None:
    """Store a record (idempotent: the same branch maps to the same key)."""
    where = _Where(doc.tenant_prefix, doc.project, Versionstamp.from_hex(record.id))
    await _put(history, where, record)


async def save_report(
    history: History, doc: DocRef, record: ConflictRecord, seed: Sequence[str]
) -> ConflictRecord:
    """Store a conflict a client reported, under an id derived from ``seed`` (what
    makes it the same report: path, device, text, and the document's head it was made
    against), and return the stored record. A retry of a report finds the record its
    first try stored; once that record is resolved, the same report again (the user
    resolved it, yet the situation came back) is a new record, not the old one."""
    base = msgpack.packb(list(seed))
    for n in range(REPORT_TRIES):
        cid = blake3(base + n.to_bytes(4, "big")).hexdigest()[:24]
        where = _Where(doc.tenant_prefix, doc.project, Versionstamp.from_hex(cid))
        head = await history.kv.read(functools.partial(_read_head, where=where))
        if head is None:
            stored = await _put(history, where, dataclasses.replace(record, id=cid))
        elif head.get("status", "open") != "resolved":
            stored = await _get(history, where)  # a retry of this report
        else:
            continue
        if stored.status != "resolved":
            return stored
    raise ProtocolError(f"this conflict was reported and resolved {REPORT_TRIES} times")


async def save_once(
    history: History, doc: DocRef, record: ConflictRecord, seed: Sequence[str]
) -> tuple[ConflictRecord, bool]:
    """Store ``record`` under the id derived from ``seed`` unless a record has that id
    already, resolved or not; the stored record and whether it is this one (new). For
    a conflict that is one record however often it is seen again: an edit of a deleted
    document, one per deletion and device, however many updates the device sends."""
    cid = conflict_id(seed)
    where = _Where(doc.tenant_prefix, doc.project, Versionstamp.from_hex(cid))
    mine = dataclasses.replace(record, id=cid)
    stored = await _put(history, where, mine)
    return stored, stored is mine


def conflict_id(seed: Sequence[str]) -> str:
    """The id :func:`save_once` stores a record of ``seed`` under."""
    return blake3(msgpack.packb(list(seed))).hexdigest()[:24]


PAGE_HEADS = 10_000
"""The most heads one page reads: a filter that passes few records ends a page early
(with fewer records than asked, even none) rather than read the whole project."""
PAGE_BYTES = 16 << 20
"""About the most bytes one page reads from the store (heads and the bodies of the
records it holds; a page holds at least one record, however big, when one passes)."""
CHUNK = 200
"""Heads read per read transaction (a page takes as many as it needs)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ConflictPage:
    """One page of a project's conflict list: its records in id order (the store's key
    order), and the id to list after for the next page (None: no more)."""

    records: list[ConflictRecord]
    next_after: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Filter:
    """What a listed record must be: for one document, of one status, naming one device
    on one side (``ours``: the records said to it as their own side; see ``SIDES``)."""

    path: str | None
    status: str | None
    device: str | None
    side: str = "ours"

    def load(
        self, tr: ReadTransaction, where: _Where, raw: bytes
    ) -> tuple[ConflictRecord | None, int]:
        """The record of head ``raw`` (None when it does not pass) and the bytes of its
        body read. The head decides first: a body is read only for a record that passes
        (or, for ``device``, a record whose head was written before heads named the
        devices of its sides)."""
        head = msgpack.unpackb(raw)
        if self.path is not None and head.get("path") != self.path:
            return None, 0
        if self.status is not None and head.get("status", "open") != self.status:
            return None, 0
        named = None if self.device is None else _head_names(head, self.device, self.side)
        if named is False:
            return None, 0
        record, size = _load_sized(tr, where, raw)
        if (
            named is None
            and self.device is not None
            and not _record_names(record, self.device, self.side)
        ):
            return None, size
        return record, size


@dataclasses.dataclass(frozen=True, slots=True)
class _Chunk:
    """What one read transaction of a page read: the records that passed, the last key
    read (None: none), the heads and bytes read, and whether the range has no more keys."""

    records: list[ConflictRecord]
    last: bytes | None
    heads: int
    size: int
    ended: bool


def _read_chunk(
    tr: ReadTransaction,
    begin: bytes,
    end: bytes,
    prefix: bytes,
    project: str,
    wanted: _Filter,
    room: tuple[int, int, int],
) -> _Chunk:
    """Heads from ``begin`` (up to ``CHUNK``) and the records among them that pass,
    stopping once ``room`` (records, heads, bytes the page has left) is used up."""
    records_left, heads_left, bytes_left = room
    asked = min(CHUNK, heads_left)
    rows = tr.get_range(begin, end, limit=asked)
    records: list[ConflictRecord] = []
    size = 0
    for n, (key, raw) in enumerate(rows, 1):
        size += len(raw)
        vs = keys.unpack(key, prefix)[-1]
        record, body = wanted.load(tr, _Where(prefix, project, vs), raw)
        size += body
        if record is not None:
            records.append(record)
        if len(records) >= records_left or size >= bytes_left:
            return _Chunk(records, key, n, size, ended=n == len(rows) and n < asked)
    return _Chunk(records, rows[-1][0] if rows else None, len(rows), size, len(rows) < asked)


async def list_conflicts(
    history: History,
    tenant: str,
    project: str,
    *,
    path: str | None = None,
    status: str | None = None,
    device: str | None = None,
    side: str = "ours",
    after: str | None = None,
    limit: int = PAGE,
) -> ConflictPage:
    """One page of a project's conflict records, in id order (the store's key order:
    ids are hashes, so not the order they were made in), from the first id after
    ``after``; optionally for one doc, status, or device (``side``, one of ``SIDES``,
    names it among its clients: ``ours``, the records made for that device's own
    edits; ``theirs``, those its edits were the other side of). The filters apply
    before ``limit`` (1 to ``MAX_PAGE``): a page holds up to ``limit`` records that
    pass them. A page reads at most ``PAGE_HEADS`` heads and about ``PAGE_BYTES``
    bytes, in read transactions of ``CHUNK`` heads, so it may end with fewer records
    (even none) while more follow: ``next_after`` says where, None once the list has no
    more. Only the records that pass the filters have their bodies read (see
    :class:`_Filter`)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"a page holds 1 to {MAX_PAGE} records, not {limit}")
    if side not in SIDES:
        raise ValueError(f"a side is one of {', '.join(SIDES)}, not {side!r}")
    prefix = await history.tenant(tenant)
    begin, end = keys.conflicts(prefix, project)
    if after is not None:
        begin = keys.key_after(keys.conflict(prefix, project, Versionstamp.from_hex(after)))
    wanted = _Filter(keys.normalise_path(path) if path is not None else None, status, device, side)
    records: list[ConflictRecord] = []
    heads = size = 0
    while True:
        room = (limit - len(records), PAGE_HEADS - heads, PAGE_BYTES - size)
        chunk = await history.kv.read(
            functools.partial(
                _read_chunk,
                begin=begin,
                end=end,
                prefix=prefix,
                project=project,
                wanted=wanted,
                room=room,
            )
        )
        records += chunk.records
        heads, size = heads + chunk.heads, size + chunk.size
        if chunk.ended or chunk.last is None:
            return ConflictPage(records, None)
        if len(records) >= limit or heads >= PAGE_HEADS or size >= PAGE_BYTES:
            return ConflictPage(records, keys.unpack(chunk.last, prefix)[-1].hex())
        begin = keys.key_after(chunk.last)


async def _get(history: History, where: _Where) -> ConflictRecord:
    def fn(tr: ReadTransaction) -> ConflictRecord:
        raw = tr.get(where.head)
        if raw is None:
            raise NotFound(f"no conflict {where.vs.hex()} in project {where.project!r}")
        return _load(tr, where, raw)

    return await history.kv.read(fn)


async def get_conflict(history: History, tenant: str, project: str, cid: str) -> ConflictRecord:
    where = _Where(await history.tenant(tenant), project, Versionstamp.from_hex(cid))
    return await _get(history, where)


async def resolve(
    history: History, tenant: str, project: str, cid: str, *, user: str, resolution: str = ""
) -> ConflictRecord:
    """Mark a conflict resolved (the record stays, with who resolved it and when): its
    head is rewritten, its body stays as it is. A record already resolved keeps its
    first resolution."""
    if len(resolution.encode("utf-8", "surrogatepass")) > MAX_RESOLUTION_BYTES:
        raise ProtocolError(f"a resolution note is at most {MAX_RESOLUTION_BYTES} bytes")
    where = _Where(await history.tenant(tenant), project, Versionstamp.from_hex(cid))
    resolved = {"status": "resolved", "resolved_by": user, "resolution": resolution}

    def fn(tr: Transaction) -> bytes:
        head = _read_head(tr, where)
        if head is None:
            raise NotFound(f"no conflict {cid} in project {project!r}")
        if head.get("status") == "resolved":
            return msgpack.packb(head)
        if "body" not in head:  # written whole before 1.4: now a head and a body
            fields = {**head, **resolved, "resolved_ms": now_ms()}
            fields = ConflictRecord.from_dict(fields).to_dict()
            parts = stored_parts(fields)
            tag = blake3(b"".join(parts)).digest(8)
            body = where.body(tag)
            for n, part in enumerate(parts):
                tr.set(keys.conflict_part(body, n), part)
            raw = _head(fields, tag)
        else:
            raw = msgpack.packb({**head, **resolved, "resolved_ms": now_ms()})
        tr.set(where.head, raw)
        _count(tr, where)
        return raw

    raw = (await history.kv.transact(fn)).result
    # The body is never rewritten (only written, before its head): read after.
    return await history.kv.read(lambda tr: _load(tr, where, raw))


__all__ = [
    "SIDES",
    "ConflictPage",
    "conflict_id",
    "get_conflict",
    "list_conflicts",
    "resolve",
    "save",
    "save_once",
    "save_report",
]
