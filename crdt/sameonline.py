"""The same change sent online by two devices at one moment, kept once.

Two devices that are both online and make the same change to a file at the same moment
(a ``git pull``, a formatter, a generator run on each) each send it before they have the
other's: two updates that insert the same text at the same place. Yjs keeps both, so
the changed lines came out twice on every device, with no record (an offline branch's
same change is judged whole when it ends: :mod:`crdt.samechange`).

Two such updates are told apart from two edits by their items alone. A device inserts
text next to the characters it sees there: an item's ``origin`` and ``right_origin``
are the ids of its neighbours as the device saw them. The same diff made on the same
text inserts the same strings between the same neighbours; an insert made by a device
that had the other's text would name that text as a neighbour instead. So an item that
another client inserted recently, with the same text between the same neighbours, and
that is still there, is a copy of the same change: the later one (in the room's order)
is deleted by a delete-only update (no struct, no client id of its own: it can be
committed at any head and deletes nothing twice). Where the copies of one change lie
next to each other (a neighbour is the device's own new text, inserted by the same
update), the neighbour is read through the copy already matched.

"Still there" rests on every deletion the room applies being noted, and on each insert
being taken in once, new: an item the document held before its update (an update sent
again in another grouping, after the text was deleted) or that its own update deletes
(two saves merged into one send: a line added, then taken out) is neither an original
nor a copy. Either used to be remembered as an original that was not there, and a
device that made the same line meanwhile lost its own.

Only text items are compared (a map entry's copy cannot be deleted without removing
the key), only between updates :class:`SameChanges` is told to compare (a weft
device's online updates, not an editor's keystrokes: two people typing the same word
at one place both keep theirs), and only for ``KEEP_SECONDS`` after the first.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import NamedTuple

from blake3 import blake3

from crdt.samechange import delete_update
from crdt.ydecode import ID, Item, UpdateDecodeError, decode_update

KEEP_SECONDS = 60.0
MAX_KEPT = 10_000  # items remembered per document at most (the oldest go first)

Key = tuple[ID | None, ID | None, str | ID | None, bytes]  # neighbours, parent, text's hash


class _Seen(NamedTuple):
    client: int
    clock: int
    length: int
    until: float
    key: Key


class SameChanges:
    """One document's recent inserts, in the order the room applied its updates."""

    def __init__(
        self, keep_seconds: float = KEEP_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep_seconds = keep_seconds
        self.clock = clock
        self._seen: dict[Key, list[_Seen]] = {}
        # The same entries by client, in clock order (their ranges never overlap), with
        # their clocks: an update's deletions find what they touch by bisection.
        self._by_client: dict[int, tuple[list[int], list[_Seen]]] = {}
        self._order: deque[_Seen] = deque()  # (entries forgotten meanwhile included)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def note(
        self, update: bytes, *, compare: bool, known: Mapping[int, int] | None = None
    ) -> bytes | None:
        """Take in ``update``, just applied: text it deletes is no longer a candidate;
        when ``compare``, its text inserts that copy a recent insert of another client
        (see the module docstring) are the delete-only update returned (None: none),
        and its other text inserts are remembered. ``known``: the document's state
        vector (client -> clock) before ``update`` was applied; an item below it was in
        the document already (an update sent again, in another grouping), and may have
        been deleted since: neither compared nor remembered. Nor is an item ``update``
        deletes itself (two saves sent as one: a line added, then taken out)."""
        now = self.clock()
        self._expire(now)
        if not compare and not self._seen:
            return None
        try:
            structs, deletes = decode_update(update)
        except UpdateDecodeError:
            return None
        if deletes and self._seen:
            self._forget(deletes)
        if not compare:
            return None
        known = known or {}
        deleted = _by_client(deletes)
        copies: list[tuple[int, int, int]] = []
        for client, items in structs.items():
            matched: list[tuple[Item, _Seen]] = []
            new = known.get(client, 0)
            own = deleted.get(client)
            for item in items:
                if (
                    item.text is None
                    or item.deleted
                    or item.clock < new
                    or (own is not None and _touches(own, item.clock, item.clock + item.length))
                ):
                    continue
                key = self._key(item, matched)
                found = next(
                    (
                        s
                        for s in self._seen.get(key, ())
                        if s.client != client and s.length == item.length
                    ),
                    None,
                )
                if found is not None:
                    matched.append((item, found))
                    copies.append((client, item.clock, item.clock + item.length))
                else:
                    self._remember(
                        _Seen(client, item.clock, item.length, now + self.keep_seconds, key)
                    )
        return delete_update(copies) if copies else None

    @staticmethod
    def _key(item: Item, matched: list[tuple[Item, _Seen]]) -> Key:
        """The item's neighbours, parent and text (a hash of it: a new file's text may be
        megabytes, kept for ``KEEP_SECONDS``), with a neighbour that is a copy already
        matched in this update read as the text it copies."""

        def through(id_: ID | None) -> ID | None:
            if id_ is None or id_[0] != item.client:
                return id_
            for mine, theirs in matched:
                if mine.clock <= id_[1] < mine.clock + mine.length:
                    return (theirs.client, theirs.clock + id_[1] - mine.clock)
            return id_

        assert item.text is not None
        digest = blake3(item.text.encode("utf-8", "surrogatepass")).digest(16)
        return (through(item.origin), through(item.right_origin), item.parent, digest)

    def _remember(self, seen: _Seen) -> None:
        clocks, entries = self._by_client.setdefault(seen.client, ([], []))
        at = bisect.bisect_left(clocks, seen.clock)
        if (at < len(entries) and entries[at].clock < seen.clock + seen.length) or (
            at > 0 and entries[at - 1].clock + entries[at - 1].length > seen.clock
        ):
            return  # remembered already (known was not given)
        clocks.insert(at, seen.clock)
        entries.insert(at, seen)
        self._seen.setdefault(seen.key, []).append(seen)
        self._order.append(seen)
        self._count += 1
        while len(self._order) > MAX_KEPT:
            self._drop(self._order.popleft())

    def _drop(self, seen: _Seen) -> None:
        """Forget ``seen`` if it is still remembered."""
        found = self._by_client.get(seen.client)
        if found is None:
            return
        clocks, entries = found
        at = bisect.bisect_left(clocks, seen.clock)
        if at == len(entries) or entries[at] is not seen:
            return  # forgotten already
        del clocks[at], entries[at]
        if not entries:
            del self._by_client[seen.client]
        same = self._seen[seen.key]
        same.remove(seen)
        if not same:
            del self._seen[seen.key]
        self._count -= 1

    def _expire(self, now: float) -> None:
        order = self._order
        while order and order[0].until <= now:
            self._drop(order.popleft())

    def _forget(self, deletes: list[tuple[int, int, int]]) -> None:
        """Forget the remembered inserts any of ``deletes`` touches (the text is not all
        there any more: a copy of it is no longer a copy of what the document holds)."""
        for client, clock, length in deletes:
            found = self._by_client.get(client)
            if found is None:
                continue
            clocks, entries = found
            at = bisect.bisect_right(clocks, clock)
            if at > 0 and entries[at - 1].clock + entries[at - 1].length > clock:
                at -= 1
            end = clock + length
            while at < len(entries) and entries[at].clock < end:
                self._drop(entries[at])  # (the next one moves to ``at``)


_Ranges = tuple[list[int], list[int]]  # starts and ends of disjoint ranges, in order


def _by_client(deletes: list[tuple[int, int, int]]) -> dict[int, _Ranges]:
    """``deletes`` ``(client, clock, length)`` as each client's merged ranges."""
    out: dict[int, _Ranges] = {}
    for client, clock, length in sorted(deletes):
        starts, ends = out.setdefault(client, ([], []))
        if ends and clock <= ends[-1]:
            ends[-1] = max(ends[-1], clock + length)
        elif length > 0:
            starts.append(clock)
            ends.append(clock + length)
    return out


def _touches(ranges: _Ranges, start: int, end: int) -> bool:
    """Whether any of ``ranges`` overlaps ``[start, end)``."""
    starts, ends = ranges
    at = bisect.bisect_right(starts, start) - 1
    if at >= 0 and ends[at] > start:
        return True
    return at + 1 < len(starts) and starts[at + 1] < end
