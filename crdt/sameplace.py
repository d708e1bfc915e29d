"""Where two offline branches both put new text at one place of their base text.

Line diffs cannot always tell where a side inserted: base ``x``, a side that appended
``z`` and rewrote ``x`` to ``y`` reads, line by line, as one block ``x`` -> ``y z``,
and another side's line appended after ``x`` falls at that block's end, which counts as
disjoint. The CRDT knows: every character a side typed sits between two characters of
the base in the merged document, and when visible text of both sides sits between the
same two base characters, both inserted at that place and the CRDT ordered the two
insertions by client id, not by what either device saw. That is what
:func:`same_place` finds, from the documents' items (:mod:`crdt.itemorder`); the line
diffs (:func:`crdt.conflicts.detect`) turn each place into a region.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from itertools import pairwise

from crdt.itemorder import ItemOrder
from crdt.ydecode import struct_ranges

OURS, THEIRS = 1, 2
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
Units = list[tuple[int, int, int]]
"""Clock ranges ``(client, start, end)`` of a document's text."""


class _Runs:
    """Visible base text by struct id: each run ``(clock, end, offset, astral)`` of one
    client holds the base's characters from ``offset`` (a str index of the base text);
    ``astral`` lists the units (counted from ``clock``) where its characters outside
    the BMP start, two UTF-16 units each, so that a unit maps to a character without
    reading the run (a run is up to 16,384 characters, and the merge may split one into
    thousands of structs: reading it up to each took seconds)."""

    def __init__(self, order: ItemOrder, root: str) -> None:
        self.by_client: dict[int, list[tuple[int, int, int, list[int]]]] = {}
        offset = 0
        for client, clock, text in order.text_runs(root):
            astral = [m.start() + n for n, m in enumerate(_ASTRAL.finditer(text))]
            units = len(text) + len(astral)
            self.by_client.setdefault(client, []).append((clock, clock + units, offset, astral))
            offset += len(text)
        for runs in self.by_client.values():
            runs.sort()
        self.starts = {c: [run[0] for run in runs] for c, runs in self.by_client.items()}

    def within(self, client: int, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """``(low, high, offset)``, in clock order: the parts ``[low, high)`` of units
        ``[start, end)`` of ``client`` that were visible base characters, each with the
        base text offset just after its last unit. A struct of the merge can hold more
        than such a part: yrs joins neighbouring structs of one client that are both
        deleted (a base character deleted since and the deleted one typed after it) or
        both new in one transaction."""
        runs = self.by_client.get(client)
        if not runs:
            return
        for i in range(max(bisect_right(self.starts[client], start) - 1, 0), len(runs)):
            clock, run_end, offset, astral = runs[i]
            if clock >= end:
                return
            low, high = max(clock, start), min(run_end, end)
            if low < high:
                yield low, high, offset + _characters(high - clock, astral)


class _Owners:
    """Which side made each unit: per client, disjoint clock ranges ``(start, end,
    sides)`` in order (``sides``: OURS, THEIRS or both, for an update on both sides)."""

    def __init__(self, ours: Iterable[bytes], theirs: Iterable[bytes]) -> None:
        marks: dict[int, list[tuple[int, int]]] = {}
        for side, updates in ((OURS, ours), (THEIRS, theirs)):
            for update in updates:
                for client, clock, end in struct_ranges(update):
                    marks.setdefault(client, []).extend([(clock, side), (end, -side)])
        self.ranges = {client: _disjoint(found) for client, found in marks.items()}
        self.starts = {c: [r[0] for r in ranges] for c, ranges in self.ranges.items()}

    def one_side(self, client: int, start: int, end: int) -> int:
        """OURS, THEIRS, both or 0: the sides that alone made a unit of ``[start, end)``
        of ``client`` (a unit of an update on both sides belongs to neither)."""
        ranges = self.ranges.get(client)
        if not ranges:
            return 0
        found = 0
        for i in range(max(bisect_right(self.starts[client], start) - 1, 0), len(ranges)):
            low, high, sides = ranges[i]
            if low >= end:
                break
            if high > start and sides != OURS | THEIRS:
                found |= sides
        return found

    def only(self, side: int, client: int, start: int, end: int) -> Units:
        """The parts of units ``[start, end)`` of ``client`` that ``side`` alone made."""
        ranges = self.ranges.get(client, [])
        first = max(bisect_right(self.starts.get(client, []), start) - 1, 0)
        return [
            (client, max(low, start), min(high, end))
            for low, high, sides in ranges[first:]
            if sides == side and low < end and high > start
        ]


def _characters(units: int, astral: list[int]) -> int:
    """How many characters the first ``units`` units of a run hold (one split in two
    counted: as :func:`crdt.ydecode.split_units`), ``astral`` the units where its
    characters outside the BMP start: each that ends within them is one unit less."""
    return units - bisect_left(astral, units - 1)


def _disjoint(marks: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Clock ranges ``(start, end, sides)`` in order, from marks ``(clock, side)`` where
    a range of that side starts and ``(clock, -side)`` where one ends."""
    ranges: list[tuple[int, int, int]] = []
    count = {OURS: 0, THEIRS: 0}
    marks.sort()
    for (at, change), (to, _) in pairwise(marks):
        count[abs(change)] += 1 if change > 0 else -1
        sides = (OURS if count[OURS] else 0) | (THEIRS if count[THEIRS] else 0)
        if sides and at < to:
            ranges.append((at, to, sides))
    return ranges


def same_place(
    base_state: bytes,
    merged_state: bytes,
    ours: Iterable[bytes],
    theirs: Iterable[bytes],
    root: str = "content",
) -> list[int]:
    """Base text offsets (str indexes into the base's ``root`` text) where both sides'
    text, still there in the merge, was inserted between the same two characters of the
    base (0: before its first, its length: after its last).

    ``base_state`` and ``merged_state`` are whole-document updates (the base, and the
    base with both sides' updates applied); ``ours`` and ``theirs`` the updates of each
    side. Text of an update counted on both sides (a repeat) belongs to neither. Base
    characters deleted since still mark their place: a side that rewrote a line typed
    its text next to the old one, not at the line's end."""
    owners = _Owners(ours, theirs)
    sides: dict[int, int] = {}
    for place, client, start, end in _inserted(base_state, merged_state, root):
        sides[place] = sides.get(place, 0) | owners.one_side(client, start, end)
    return sorted(p for p, found in sides.items() if found == OURS | THEIRS)


def inserted_within(
    base_state: bytes,
    merged_state: bytes,
    ours: Iterable[bytes],
    theirs: Iterable[bytes],
    windows: list[tuple[int, int]],
    root: str = "content",
) -> list[tuple[Units, Units]]:
    """For each window ``(low, high)`` of base text offsets: the units of the text that
    only ``ours`` inserted, and those only ``theirs`` inserted, still there in the merge
    and placed at an offset from ``low`` to ``high`` (both included; see
    :func:`same_place` for the arguments and what an offset is)."""
    owners = _Owners(ours, theirs)
    found: list[tuple[Units, Units]] = [([], []) for _ in windows]
    order = sorted(range(len(windows)), key=lambda i: windows[i])
    lows = [windows[i][0] for i in order]
    for place, client, start, end in _inserted(base_state, merged_state, root):
        # Windows are a contested region's base text each: apart, or sharing an end.
        at = bisect_right(lows, place)
        for i in order[max(at - 2, 0) : at]:
            if place <= windows[i][1]:
                for side, units in ((OURS, found[i][0]), (THEIRS, found[i][1])):
                    units.extend(owners.only(side, client, start, end))
    return found


def _inserted(
    base_state: bytes, merged_state: bytes, root: str
) -> Iterator[tuple[int, int, int, int]]:
    """``(place, client, start, end)``: each visible part of the merge's ``root`` text
    that the base did not hold, with the base text offset it was inserted at."""
    base_order = ItemOrder()
    base_order.apply_state(base_state)
    runs = _Runs(base_order, root)
    merged = ItemOrder()
    merged.apply_state(merged_state)
    place = 0
    for item in merged.sequence(root):
        start, end = item.clock, item.clock + item.length
        shown = not item.deleted and item.text is not None
        for low, high, after in runs.within(item.client, start, end):
            if shown and start < low:
                yield place, item.client, start, low
            place, start = after, high
        if shown and start < end:
            yield place, item.client, start, end
