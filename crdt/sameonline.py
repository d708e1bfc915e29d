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

Only text items are compared (a map entry's copy cannot be deleted without removing
the key), only between updates :class:`SameChanges` is told to compare (a weft
device's online updates, not an editor's keystrokes: two people typing the same word
at one place both keep theirs), and only for ``KEEP_SECONDS`` after the first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
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


class SameChanges:
    """One document's recent inserts, in the order the room applied its updates."""

    def __init__(
        self, keep_seconds: float = KEEP_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep_seconds = keep_seconds
        self.clock = clock
        self._seen: dict[Key, list[_Seen]] = {}
        self._order: deque[tuple[Key, _Seen]] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def note(self, update: bytes, *, compare: bool) -> bytes | None:
        """Take in ``update``, just applied: text it deletes is no longer a candidate;
        when ``compare``, its text inserts that copy a recent insert of another client
        (see the module docstring) are the delete-only update returned (None: none),
        and its other text inserts are remembered."""
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
        copies: list[tuple[int, int, int]] = []
        for client, items in structs.items():
            matched: list[tuple[Item, _Seen]] = []
            for item in items:
                if item.text is None or item.deleted:
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
                        key, _Seen(client, item.clock, item.length, now + self.keep_seconds)
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

    def _remember(self, key: Key, seen: _Seen) -> None:
        self._seen.setdefault(key, []).append(seen)
        self._order.append((key, seen))
        while len(self._order) > MAX_KEPT:
            self._drop(*self._order.popleft())

    def _drop(self, key: Key, seen: _Seen) -> None:
        entries = self._seen.get(key)
        if entries is not None and seen in entries:
            entries.remove(seen)
            if not entries:
                del self._seen[key]

    def _expire(self, now: float) -> None:
        order = self._order
        while order and order[0][1].until <= now:
            self._drop(*order.popleft())

    def _forget(self, deletes: list[tuple[int, int, int]]) -> None:
        """Forget the remembered inserts any of ``deletes`` touches (the text is not all
        there any more: a copy of it is no longer a copy of what the document holds)."""
        by_client: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in deletes:
            by_client.setdefault(client, []).append((clock, clock + length))
        for key in list(self._seen):
            kept = [
                s
                for s in self._seen[key]
                if not any(
                    start < s.clock + s.length and s.clock < end
                    for start, end in by_client.get(s.client, ())
                )
            ]
            if len(kept) != len(self._seen[key]):
                if kept:
                    self._seen[key] = kept
                else:
                    del self._seen[key]
