"""Conflict records for offline branches: detect against the history, store, list, resolve.

A device's offline branch is the updates it made while it had last seen the server at
versionstamp ``base``. Once they are committed, :func:`detect_branch` rebuilds base,
applies on one side the branch's updates (ours) and on the other what everybody else
committed since base (theirs), and compares the changed lines (:mod:`crdt.conflicts`).
Records live at ``T + (conflict, project, vs)`` where ``vs`` is the branch's first
committed versionstamp, so detecting the same branch twice writes the same record.

A side that deleted the document (``weft.deleted``) while the other edited it is a
conflict of its own, whichever lines the edits touched (an edit next to the deleted
text overlaps no deleted line, and the edit would vanish with the file unseen): the
record says which side deleted (``deleted``) and spans the whole base.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
from blake3 import blake3
from pycrdt import Doc, Map

from crdt import keys, ydoc
from crdt.conflicts import ConflictRecord, Region, Side, detect, lines
from crdt.errors import NotFound, ProtocolError
from crdt.history import Appended, DocRef, History, Record, now_ms
from crdt.kv.base import Transaction
from crdt.timetravel import deletion_flags
from crdt.versions import DELETED, META, read_doc
from crdt.versionstamp import Versionstamp

CONTENT = "content"
MAX_SINCE_BASE = 200_000


def _read(state: bytes, records: Iterable[Record]) -> tuple[str, bool]:
    """The text and the deletion flag of ``state`` with ``records`` applied."""
    doc: Doc[Any] = Doc()
    with doc.transaction():
        for update in [state, *(record.update for record in records)]:
            with contextlib.suppress(ydoc.UnusableUpdate):  # replay logs and skips it too
                ydoc.apply(doc, update)
    return read_doc(doc)


def _text(state: bytes, records: Iterable[Record]) -> str:
    return _read(state, records)[0]


async def _emptied(
    history: History, doc: DocRef, base_state: bytes, base_text: str, side: list[Record]
) -> bool:
    """Whether the deletion on ``side`` emptied the text (as ``weft sync`` did before
    2026-12-04, and a revert to a deleted version does): replayed from base up to the
    last of the side's records that set ``weft.deleted``, the text is gone (what else
    the side did, edits before or after it, does not count)."""
    flags = await deletion_flags(history, doc, [r.update for r in side])
    setting = [i for i, flag in enumerate(flags) if flag is True]
    if not setting or not base_text:
        return False
    return _read(base_state, side[: setting[-1] + 1])[0] == ""


def _deleted_side(
    start: tuple[str, bool], ours: tuple[str, bool], theirs: tuple[str, bool]
) -> str:
    """"ours" or "theirs" when that side deleted the document (not deleted at base) and
    the other side, which did not, changed its text; "" otherwise."""
    if start[1]:
        return ""
    if ours[1] and not theirs[1] and theirs[0] != start[0]:
        return "ours"
    if theirs[1] and not ours[1] and ours[0] != start[0]:
        return "theirs"
    return ""


async def detect_branch(
    history: History,
    doc: DocRef,
    base: Versionstamp | None,
    branch: Iterable[Appended],
    *,
    device: tuple[str, str] | None = None,
) -> ConflictRecord | None:
    """The conflict record for a committed offline branch, or None when its edits are
    disjoint from everything committed since ``base``. Nothing is written.

    ``branch`` is what :meth:`History.append` returned for the branch's updates. An
    update that was already in the log (``duplicate``: another device made the
    byte-identical change, e.g. the same deletion) belongs to both sides.

    ``device``: (user, client) of the device that made the branch, when it says who it
    is. What it committed since ``base`` is its own side too, never "theirs": an offline
    branch can go out over several connections (the first cut off before its acks
    arrived, the rest sent on the same base with edits made since), and a device does
    not conflict with itself. The record's id is the first of ``branch``'s new updates
    (not the device's earlier ones, nor its own re-sent ones): a later part is its own
    record (a region an earlier part was found to contest may be listed again in it),
    never dropped as a repeat of the earlier one.
    """
    appended = list(branch)
    mine = {a.versionstamp for a in appended}
    shared = {a.versionstamp for a in appended if a.duplicate}
    if not mine:
        return None
    first = set(mine)
    # The record's id: the first of this part's new updates (a part that only re-sends
    # updates already in the log keeps the id judging them first gave).
    new = {a.versionstamp for a in appended if not a.duplicate}
    base_state = (await history.replay(doc, base)).state() if base else Doc().get_update()
    # What others committed after base and before the branch's last update: a later
    # commit is judged when its own branch ends, against this one.
    since = await history.updates(doc, after=base, until=max(mine), limit=MAX_SINCE_BASE)
    if device is not None:
        own = {r.versionstamp for r in since if (r.user, r.client) == device}
        mine |= own
        shared -= own  # a repeat of its own update is not another device's change
    ours = [r for r in since if r.versionstamp in mine]
    theirs = [r for r in since if r.versionstamp not in mine or r.versionstamp in shared]
    if not ours or not theirs:
        return None
    start = _read(base_state, [])
    our, their = _read(base_state, ours), _read(base_state, theirs)
    deleted = _deleted_side(start, our, their)
    if deleted:
        regions = [
            Region(
                0,
                len(lines(start[0])),
                start[0],
                "" if deleted == "ours" else our[0],
                "" if deleted == "theirs" else their[0],
            )
        ]
    else:
        regions = detect(start[0], our[0], their[0])
    if not regions:
        return None
    return ConflictRecord(
        id=min(new or (first - shared) or first).hex(),
        path=doc.path,
        base=base.hex() if base else "",
        ours=_side([r for r in ours if r.versionstamp not in shared] or ours),
        theirs=_side(theirs),
        regions=regions,
        merged_text=_text(base_state, since),
        created_ms=now_ms(),
        deleted=deleted,
        emptied=bool(deleted)
        and await _emptied(
            history, doc, base_state, start[0], ours if deleted == "ours" else theirs
        ),
    )


async def bring_back(
    history: History, doc: DocRef, record: ConflictRecord
) -> tuple[bool, bytes | None]:
    """For a record of an edit against a deletion: whether the document is (to be)
    back, and the update that brings it back (``weft.deleted`` unset at head; its text,
    which a deletion now leaves, is untouched, so every edit merged into it stays where
    it was made). No update when it is back already (not deleted at head), or when it
    stays deleted: the deletion emptied the text (``record.emptied``), or something
    committed after the branch set ``weft.deleted`` again (a later delete stands)."""
    if not record.deleted or record.emptied:
        return False, None
    stamps = [Versionstamp.from_hex(v) for v in record.ours.versionstamps]
    stamps += [Versionstamp.from_hex(v) for v in record.theirs.versionstamps]
    head = await history.replay(doc)
    if not read_doc(head.doc)[1]:
        return True, None
    later = await history.updates(doc, after=max(stamps), limit=MAX_SINCE_BASE)
    if any(flag is True for flag in await deletion_flags(history, doc, [r.update for r in later])):
        return False, None  # deleted again after the branch: that stands
    before = head.doc.get_state()
    head.doc.get(META, type=Map)[DELETED] = False
    return True, head.doc.get_update(before)


def _side(records: list[Record]) -> Side:
    return Side(
        users=sorted({r.user for r in records}),
        clients=sorted({r.client for r in records}),
        versionstamps=[r.versionstamp.hex() for r in records],
    )


async def save(history: History, doc: DocRef, record: ConflictRecord) -> None:
    """Store a record (idempotent: the same branch maps to the same key)."""
    key = keys.conflict(doc.tenant_prefix, doc.project, Versionstamp.from_hex(record.id))
    value = msgpack.packb(record.to_dict())

    def fn(tr: Transaction) -> None:
        if tr.get(key) is None:
            tr.set(key, value)

    await history.kv.transact(fn)


REPORT_TRIES = 100  # resolved records of one same report before refusing another


async def save_report(
    history: History, doc: DocRef, record: ConflictRecord, seed: Sequence[str]
) -> ConflictRecord:
    """Store a conflict a client reported, under an id derived from ``seed`` (what
    makes it the same report: path, device, text, and the document's head it was made
    against), and return the stored record. A retry of a report finds the record its
    first try stored; once that record is resolved, the same report again (the user
    resolved it, yet the situation came back) is a new record, not the old one."""
    base = msgpack.packb(list(seed))

    def fn(tr: Transaction) -> ConflictRecord:
        for n in range(REPORT_TRIES):
            cid = blake3(base + n.to_bytes(4, "big")).hexdigest()[:24]
            key = keys.conflict(doc.tenant_prefix, doc.project, Versionstamp.from_hex(cid))
            raw = tr.get(key)
            if raw is None:
                new = dataclasses.replace(record, id=cid)
                tr.set(key, msgpack.packb(new.to_dict()))
                return new
            found = ConflictRecord.from_dict(msgpack.unpackb(raw))
            if found.status != "resolved":
                return found  # a retry of this report
        raise ProtocolError(f"this conflict was reported and resolved {REPORT_TRIES} times")

    result: ConflictRecord = (await history.kv.transact(fn)).result
    return result


async def list_conflicts(
    history: History,
    tenant: str,
    project: str,
    *,
    path: str | None = None,
    status: str | None = None,
) -> list[ConflictRecord]:
    """Conflict records of a project, oldest first, optionally for one doc or status."""
    prefix = await history.tenant(tenant)
    begin, end = keys.conflicts(prefix, project)
    wanted = keys.normalise_path(path) if path is not None else None
    rows = await history.kv.read(lambda tr: tr.get_range(begin, end))
    records = [ConflictRecord.from_dict(msgpack.unpackb(v)) for _, v in rows]
    return [
        r
        for r in records
        if (wanted is None or r.path == wanted) and (status is None or r.status == status)
    ]


async def get_conflict(history: History, tenant: str, project: str, cid: str) -> ConflictRecord:
    key = keys.conflict(await history.tenant(tenant), project, Versionstamp.from_hex(cid))
    raw = await history.kv.read(lambda tr: tr.get(key))
    if raw is None:
        raise NotFound(f"no conflict {cid} in project {project!r}")
    return ConflictRecord.from_dict(msgpack.unpackb(raw))


async def resolve(
    history: History, tenant: str, project: str, cid: str, *, user: str, resolution: str = ""
) -> ConflictRecord:
    """Mark a conflict resolved (the record stays, with who resolved it and when)."""
    key = keys.conflict(await history.tenant(tenant), project, Versionstamp.from_hex(cid))

    def fn(tr: Transaction) -> ConflictRecord:
        raw = tr.get(key)
        if raw is None:
            raise NotFound(f"no conflict {cid} in project {project!r}")
        record = ConflictRecord.from_dict(msgpack.unpackb(raw))
        if record.status != "resolved":
            record.status = "resolved"
            record.resolved_by = user
            record.resolved_ms = now_ms()
            record.resolution = resolution
            tr.set(key, msgpack.packb(record.to_dict()))
        return record

    return (await history.kv.transact(fn)).result


__all__ = [
    "bring_back",
    "detect_branch",
    "get_conflict",
    "list_conflicts",
    "resolve",
    "save",
    "save_report",
]
