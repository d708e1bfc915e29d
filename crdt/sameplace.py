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

from bisect import bisect_right
from collections.abc import Iterable

from crdt.itemorder import ItemOrder
from crdt.ydecode import Item, split_units, struct_ranges

OURS, THEIRS = 1, 2


class _Runs:
    """Visible base text by struct id: each run ``(clock, end, offset, text)`` of one
    client holds the base's characters from ``offset`` (a str index of the base text)."""

    def __init__(self, order: ItemOrder, root: str) -> None:
        self.by_client: dict[int, list[tuple[int, int, int, str]]] = {}
        offset = 0
        for client, clock, text in order.text_runs(root):
            units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
            self.by_client.setdefault(client, []).append((clock, clock + units, offset, text))
            offset += len(text)
        self.text_length = offset
        for runs in self.by_client.values():
            runs.sort()
        self.starts = {c: [run[0] for run in runs] for c, runs in self.by_client.items()}

    def after(self, item: Item) -> int | None:
        """The base text offset just after ``item``'s last unit when that unit was a
        visible base character, else None."""
        runs = self.by_client.get(item.client)
        if not runs:
            return None
        last = item.clock + item.length - 1
        i = bisect_right(self.starts[item.client], last) - 1
        if i < 0:
            return None
        clock, end, offset, text = runs[i]
        if last >= end:
            return None
        return offset + len(split_units(text, last + 1 - clock)[0])


class _Owners:
    """Which side made a struct: ranges ``(clock, end)`` per client for each side."""

    def __init__(self, ours: Iterable[bytes], theirs: Iterable[bytes]) -> None:
        self.ranges: dict[int, list[tuple[int, int, int]]] = {}
        for side, updates in ((OURS, ours), (THEIRS, theirs)):
            for update in updates:
                for client, clock, end in struct_ranges(update):
                    self.ranges.setdefault(client, []).append((clock, end, side))

    def side(self, item: Item) -> int:
        """OURS, THEIRS, both (an update counted on both sides) or 0 (neither)."""
        found = 0
        for clock, end, side in self.ranges.get(item.client, ()):
            if clock <= item.clock < end:
                found |= side
        return found


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
    base_order = ItemOrder()
    base_order.apply_state(base_state)
    runs = _Runs(base_order, root)
    owners = _Owners(ours, theirs)
    merged = ItemOrder()
    merged.apply_state(merged_state)
    place = 0
    sides: dict[int, int] = {}
    for item in merged.sequence(root):
        after = runs.after(item)
        if after is not None:
            place = after
        elif not item.deleted and item.sub is None:
            side = owners.side(item)
            if side in (OURS, THEIRS):
                sides[place] = sides.get(place, 0) | side
    return sorted(p for p, found in sides.items() if found == OURS | THEIRS)
