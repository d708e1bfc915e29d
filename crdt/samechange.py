"""The same change made on both sides of an offline branch, kept once.

Two devices that made the same change apart (the same ``git pull`` on each) made two
updates: both deleted the same base characters, which the merge deletes once, and both
inserted the same new text, which the merge keeps twice (``b`` -> ``B`` on both sides
merges to ``BB``). Where a region the line comparison contests (:func:`crdt.conflicts.
detect`) has the same text on both sides, :func:`keep_once` finds the text only the
branch's side (ours) inserted there (:func:`crdt.sameplace.inserted_within`) and, when
deleting it leaves a merge that region is no longer contested in, gives the update that
deletes it: delete-only (a delete set, no structs), so it needs no client id of its own,
deletes by item id (never the other side's copy, nothing twice: a deletion of what is
deleted already changes nothing), and can be committed at any head.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate
from typing import Any

from pycrdt import Doc

from crdt import ydoc
from crdt.codec import write_var_uint
from crdt.conflicts import Change, Region, lines, overlaps
from crdt.itemorder import ItemOrder
from crdt.sameplace import Units, inserted_within

Judge = Callable[[Doc[Any]], list[Region]]
"""The regions contested in a merge (a document holding it)."""


def keep_once(
    base: tuple[bytes, str],
    merged: Doc[Any],
    head: Callable[[], Doc[Any]],
    regions: list[Region],
    sides: tuple[list[bytes], list[bytes]],
    judge: Judge,
) -> tuple[list[Region], Doc[Any], bytes | None]:
    """The regions, the merge and the update that deletes the branch's copy of each
    change both sides made alike (None: nothing to delete).

    ``base``: the base's whole state and its text; ``merged``: the base with both
    sides' updates (``sides``: ours, theirs) applied; ``head``: the document now (the
    merge and whatever was committed after the branch), asked only when a region has
    the same text on both sides. A region is kept once when both sides' text there is
    the same, each side alone inserted text there that is still in the merge, the other
    side's is still all there at head (nobody removed any of it since: the branch's
    copy is then the one to go), and ``judge`` does not contest it in the merge without
    the branch's copy; the regions are then those of that merge. Text of the branch's
    copy that is gone at head already (an earlier check of a re-sent branch deleted it)
    is not deleted again."""
    same = [r for r in regions if r.ours_text == r.theirs_text]
    if not same:
        return regions, merged, None
    starts = [0, *accumulate(len(line) for line in lines(base[1]))]
    windows = [(starts[r.base_start], starts[r.base_end]) for r in same]
    found = inserted_within(base[0], merged.get_update(), *sides, windows)
    now = ItemOrder()
    now.apply_state(head().get_update())
    keep = [
        i
        for i, (ours, theirs) in enumerate(found)
        if ours and theirs and _size(visible(now, theirs)) == _size(theirs)
    ]
    while keep:
        fixed = _without(merged, [unit for i in keep for unit in found[i][0]])
        contested = judge(fixed)
        left = [i for i in keep if not any(_meet(same[i], r) for r in contested)]
        if len(left) == len(keep):
            units = visible(now, [unit for i in keep for unit in found[i][0]])
            return contested, fixed, delete_update(units) if units else None
        keep = left
    return regions, merged, None


def visible(order: ItemOrder, units: Units) -> Units:
    """The parts of ``units`` that are not deleted in ``order``'s document."""
    out: Units = []
    for client, start, end in units:
        at = start
        while at < end:
            item = order.find((client, at))
            if item is None:
                break
            stop = min(end, item.clock + item.length)
            if not item.deleted:
                out.append((client, at, stop))
            at = stop
    return out


def delete_update(units: Units) -> bytes:
    """A Yjs (v1) update that deletes ``units`` and carries no struct."""
    by_client: dict[int, list[tuple[int, int]]] = {}
    for client, start, end in sorted(units):
        ranges = by_client.setdefault(client, [])
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(end, ranges[-1][1]))
        elif start < end:
            ranges.append((start, end))
    out = bytearray()
    write_var_uint(out, 0)  # no structs
    write_var_uint(out, sum(1 for ranges in by_client.values() if ranges))
    for client, ranges in by_client.items():
        if ranges:
            write_var_uint(out, client)
            write_var_uint(out, len(ranges))
            for start, end in ranges:
                write_var_uint(out, start)
                write_var_uint(out, end - start)
    return bytes(out)


def _without(doc: Doc[Any], units: Units) -> Doc[Any]:
    """A copy of ``doc`` with ``units`` deleted."""
    copy: Doc[Any] = Doc()
    ydoc.apply(copy, doc.get_update())
    ydoc.apply(copy, delete_update(units))
    return copy


def _size(units: Units) -> int:
    return sum(end - start for _, start, end in units)


def _meet(a: Region, b: Region) -> bool:
    """Whether two regions touch the same base lines (or insert at the same point)."""
    return overlaps(Change(a.base_start, a.base_end, 0, 0), Change(b.base_start, b.base_end, 0, 0))
