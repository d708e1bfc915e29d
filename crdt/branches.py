"""Conflict records for offline branches: detect against the history, store, list, resolve.

A device's offline branch is the updates it made while it had last seen the server at
versionstamp ``base``. Once they are committed, :func:`detect_branch` rebuilds base,
applies on one side the branch's updates (ours) and on the other what everybody else
committed since base (theirs), each with what of the other it was made on top of
(:func:`_side_doc`), and compares the changed lines (:mod:`crdt.conflicts`).
Records live at ``T + (conflict, project, vs)`` where ``vs`` is the branch's first
committed versionstamp, so detecting the same branch twice writes the same record; how
they are stored (a head and a chunked body) is :mod:`crdt.conflict_store`, whose
functions are re-exported here.

A side that deleted the document (``weft.deleted``) while the other edited it is a
conflict of its own, whichever lines the edits touched (an edit next to the deleted
text overlaps no deleted line, and the edit would vanish with the file unseen): the
record says which side deleted (``deleted``) and spans the whole base.

A change both sides made alike, which the merge holds twice, is kept once when it can
be (:mod:`crdt.samechange`): :func:`judge_branch` gives the update that deletes the
branch's copy, and judges the rest on the merge without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from pycrdt import Doc, Map

from crdt import ydoc
from crdt.conflict_store import get_conflict, list_conflicts, resolve, save, save_report
from crdt.conflicts import Change, ConflictRecord, Region, Side, detect, lines
from crdt.history import Appended, DocRef, History, Record, now_ms
from crdt.records import pending_updates
from crdt.samechange import keep_once
from crdt.sameplace import same_place
from crdt.timetravel import deletion_flags
from crdt.versions import DELETED, META, read_doc
from crdt.versionstamp import Versionstamp

CONTENT = "content"
MAX_SINCE_BASE = 200_000


def _doc(state: bytes, records: Iterable[Record]) -> Doc[Any]:
    """A document of ``state`` with ``records`` applied."""
    doc: Doc[Any] = Doc()
    with doc.transaction():
        for update in [state, *(record.update for record in records)]:
            with contextlib.suppress(ydoc.UnusableUpdate):  # replay logs and skips it too
                ydoc.apply(doc, update)
    return doc


def _read(state: bytes, records: Iterable[Record]) -> tuple[str, bool]:
    """The text and the deletion flag of ``state`` with ``records`` applied."""
    return read_doc(_doc(state, records))


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


def _deleted_side(start: tuple[str, bool], ours: tuple[str, bool], theirs: tuple[str, bool]) -> str:
    """ "ours" or "theirs" when that side deleted the document (not deleted at base) and
    the other side, which did not, changed its text; "" otherwise."""
    if start[1]:
        return ""
    if ours[1] and not theirs[1] and theirs[0] != start[0]:
        return "ours"
    if theirs[1] and not ours[1] and ours[0] != start[0]:
        return "theirs"
    return ""


def _side_doc(base_state: bytes, side: list[Record], other: list[Record]) -> Doc[Any]:
    """``side`` replayed on ``base_state``, with the fewest of ``other``'s records
    committed before it (the first ones, in commit order) that its updates build on.

    A device's base can lag behind what it had seen (see README, Known issues): another
    device's update it received, or an update of its own that was committed and that
    the others then edited on top of (what it committed since its base counts on its
    side). Replayed without those, the edits made on top of them stay pending, and the
    side's text read as if they had never been made. A room sends a document's updates
    in commit order, so whoever had one of them had those before it too; adding
    records never makes an update pending again, so the shortest first run that
    integrates as much as all of them is found by halving."""
    updates = [r.update for r in side]
    earlier = [r for r in other if r.versionstamp < side[-1].versionstamp]

    def replay(run: int) -> tuple[Doc[Any], int]:
        doc = _doc(base_state, sorted([*side, *earlier[:run]], key=lambda r: r.versionstamp))
        return doc, len(pending_updates(doc, updates))

    doc, pending = replay(0)
    if not earlier or not pending:
        return doc
    whole, least = replay(len(earlier))
    if least == pending:  # what it waits for is not there (a dependency that never came)
        return doc
    low, high = 0, len(earlier)  # replay(high) leaves ``least`` pending
    while low < high:
        middle = (low + high) // 2
        if replay(middle)[1] == least:
            high = middle
        else:
            low = middle + 1
    return whole if high == len(earlier) else replay(high)[0]


def _judge(
    base_state: bytes,
    ours: list[Record],
    theirs: list[Record],
    since: list[Record],
    later: list[Record],
) -> tuple[tuple[str, bool], str, str, list[Region], bytes | None]:
    """The base's text and deletion flag, the merged text, which side deleted the
    document ("" for none), the contested regions, and the update that keeps once each
    change both sides made alike (:func:`crdt.samechange.keep_once`; ``later``: what
    was committed after the branch), None when there is none."""
    # Each whole state without the structs whose dependencies never arrived (a
    # replay's state keeps those; ``Doc.get_update`` leaves them out, as the text does).
    base_doc, merged_doc = _doc(base_state, []), _doc(base_state, since)
    start = read_doc(base_doc)
    our = read_doc(_side_doc(base_state, ours, theirs))
    their = read_doc(_side_doc(base_state, theirs, ours))
    merged = read_doc(merged_doc)[0]
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
        return start, merged, deleted, regions, None
    base_update = base_doc.get_update()
    sides = ([r.update for r in ours], [r.update for r in theirs])
    known: dict[str, list[Change]] = {}  # each side's changes, diffed once

    def judge(merge: Doc[Any]) -> list[Region]:
        return detect(
            start[0],
            our[0],
            their[0],
            read_doc(merge)[0],
            lambda: same_place(base_update, merge.get_update(), *sides),
            known,
        )

    def head() -> Doc[Any]:
        return _doc(base_state, [*since, *later]) if later else merged_doc

    regions, kept, update = keep_once(
        (base_update, start[0]), merged_doc, head, judge(merged_doc), sides, judge
    )
    return start, read_doc(kept)[0], deleted, regions, update


async def detect_branch(
    history: History,
    doc: DocRef,
    base: Versionstamp | None,
    branch: Iterable[Appended],
    *,
    device: tuple[str, str] | None = None,
) -> ConflictRecord | None:
    """The conflict record of :func:`judge_branch`."""
    return (await judge_branch(history, doc, base, branch, device=device))[0]


async def judge_branch(
    history: History,
    doc: DocRef,
    base: Versionstamp | None,
    branch: Iterable[Appended],
    *,
    device: tuple[str, str] | None = None,
) -> tuple[ConflictRecord | None, bytes | None]:
    """The conflict record for a committed offline branch, or None when its edits are
    disjoint from everything committed since ``base`` (or the same as the other side's,
    see below); and the update to commit that keeps such a same change once, or None.
    Nothing is written.

    A region where both sides made the same change (same base lines, same new text)
    that the merge holds twice (both inserted it) is kept once: the update deletes the
    branch's copy (:mod:`crdt.samechange`), and the record is judged on the merge
    without it (its ``merged_text`` too), so that region is in no record.

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
        return None, None
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
        return None, None
    later = await history.updates(doc, after=max(mine), limit=MAX_SINCE_BASE)
    # Rebuilding the texts and comparing them is CPU work (hundreds of ms for a
    # 10,000-line file): off the event loop, as blame's is.
    start, merged, deleted, regions, update = await asyncio.to_thread(
        _judge, base_state, ours, theirs, since, later
    )
    if not regions:
        return None, update
    record = ConflictRecord(
        id=min(new or (first - shared) or first).hex(),
        path=doc.path,
        base=base.hex() if base else "",
        ours=_side([r for r in ours if r.versionstamp not in shared] or ours),
        theirs=_side(theirs),
        regions=regions,
        merged_text=merged,
        created_ms=now_ms(),
        deleted=deleted,
        emptied=bool(deleted)
        and await _emptied(
            history, doc, base_state, start[0], ours if deleted == "ours" else theirs
        ),
    )
    return record, update


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


__all__ = [
    "bring_back",
    "detect_branch",
    "get_conflict",
    "list_conflicts",
    "resolve",
    "save",
    "save_report",
]
