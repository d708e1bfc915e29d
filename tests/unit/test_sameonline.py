"""The same change sent online by two devices at one moment is kept once
(:mod:`crdt.sameonline`): each device edits as ``weft sync`` does (:mod:`crdt.textedits`)
on its own pycrdt document, and the updates reach one document in the room's order."""

from __future__ import annotations

import time
from typing import Any

from pycrdt import Doc, Text, merge_updates

from crdt.records import state_vector_clocks
from crdt.samechange import delete_update
from crdt.sameonline import SameChanges
from crdt.textedits import apply, diff
from crdt.ydecode import decode_update

BASE = "".join(f"line {n}\n" for n in range(8))


def device(base: bytes, client: int) -> Doc[Any]:
    doc: Doc[Any] = Doc(client_id=client)
    doc.apply_update(base)
    return doc


def save(doc: Doc[Any], new: str) -> bytes:
    """The update of one save of the file as ``new`` (what ``weft sync`` sends)."""
    text = doc.get("content", type=Text)
    before = doc.get_state()
    old = str(text)
    apply(text, old, diff(old, new))
    return doc.get_update(before)


def base_update() -> bytes:
    doc: Doc[Any] = Doc(client_id=1)
    doc.get("content", type=Text).insert(0, BASE)
    return doc.get_update()


def text_of(*updates: bytes) -> str:
    doc: Doc[Any] = Doc(client_id=99)
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("content", type=Text))


def room(base: bytes) -> SameChanges:
    changes = SameChanges()
    assert changes.note(base, compare=False) is None
    return changes


def test_the_same_change_from_two_devices_is_kept_once() -> None:
    base = base_update()
    new = BASE.replace("line 2\n", "line two\n").replace("line 5\n", "line 5\nadded\n")
    a, b = device(base, 2), device(base, 3)
    ours, theirs = save(a, new), save(b, new)
    assert text_of(base, ours, theirs) != new  # what Yjs alone makes of them
    changes = room(base)
    assert changes.note(ours, compare=True) is None
    fix = changes.note(theirs, compare=True)
    assert fix is not None
    assert text_of(base, ours, theirs, fix) == new
    assert text_of(base, theirs, ours, fix) == new  # in any order


def test_different_changes_are_both_kept() -> None:
    base = base_update()
    a, b = device(base, 2), device(base, 3)
    ours = save(a, BASE.replace("line 2\n", "line two\n"))
    theirs = save(b, BASE.replace("line 2\n", "line deux\n"))
    changes = room(base)
    assert changes.note(ours, compare=True) is None
    assert changes.note(theirs, compare=True) is None


def test_a_change_made_after_the_other_was_seen_is_kept() -> None:
    """b had a's update, then added the same line again: two lines, as meant."""
    base = base_update()
    a = device(base, 2)
    first = save(a, BASE + "again\n")
    b = device(base, 3)
    b.apply_update(first)
    second = save(b, BASE + "again\nagain\n")
    changes = room(base)
    assert changes.note(first, compare=True) is None
    assert changes.note(second, compare=True) is None


def test_part_of_a_change_made_alike_is_kept_once_and_the_rest_stays() -> None:
    base = base_update()
    a, b = device(base, 2), device(base, 3)
    both = BASE.replace("line 1\n", "line one\n")
    ours = save(a, both.replace("line 6\n", "line six\n"))
    theirs = save(b, both)
    changes = room(base)
    assert changes.note(ours, compare=True) is None
    fix = changes.note(theirs, compare=True)
    assert fix is not None
    assert text_of(base, ours, theirs, fix) == both.replace("line 6\n", "line six\n")


def test_text_deleted_meanwhile_is_no_longer_copied() -> None:
    base = base_update()
    a, b = device(base, 2), device(base, 3)
    new = BASE + "tail\n"
    ours, theirs = save(a, new), save(b, new)
    gone = save(a, BASE)  # a takes its line out again
    changes = room(base)
    assert changes.note(ours, compare=True) is None
    assert changes.note(gone, compare=True) is None
    assert changes.note(theirs, compare=True) is None


def test_only_updates_told_to_compare_are_compared_and_remembered() -> None:
    base = base_update()
    a, b, c = device(base, 2), device(base, 3), device(base, 4)
    new = BASE + "tail\n"
    ours, theirs, third = save(a, new), save(b, new), save(c, new)
    changes = room(base)
    assert changes.note(ours, compare=False) is None  # an editor's: not remembered
    assert len(changes) == 0
    assert changes.note(theirs, compare=True) is None
    assert changes.note(third, compare=False) is None  # not compared
    fix = SameChanges()
    fix.note(theirs, compare=True)
    assert fix.note(ours, compare=True) is not None


def test_a_change_is_kept_once_only_for_a_while() -> None:
    now = [0.0]
    base = base_update()
    a, b = device(base, 2), device(base, 3)
    new = BASE + "tail\n"
    ours, theirs = save(a, new), save(b, new)
    changes = SameChanges(keep_seconds=60, clock=lambda: now[0])
    changes.note(base, compare=False)
    assert changes.note(ours, compare=True) is None
    now[0] = 61.0
    assert changes.note(theirs, compare=True) is None and len(changes) == 1


def test_copies_next_to_each_other_are_read_through_the_first() -> None:
    """An update whose second insert lies against its own first (a neighbour that is the
    device's own new text): matched through the copy of the first."""
    base = base_update()
    updates = []
    for client in (2, 3):
        doc = device(base, client)
        text = doc.get("content", type=Text)
        before = doc.get_state()
        with doc.transaction():
            text.insert(0, "second\n")
            text.insert(0, "first\n")  # its right neighbour: "second", the same update's
        updates.append(doc.get_update(before))
    changes = room(base)
    assert changes.note(updates[0], compare=True) is None
    fix = changes.note(updates[1], compare=True)
    assert fix is not None
    assert text_of(base, *updates, fix) == "first\nsecond\n" + BASE


def test_a_line_added_and_taken_out_in_one_update_is_no_original() -> None:
    """a's two saves (a line added, then taken out) sent as one update, merged (the weft
    client's outbox merges the saves waiting to go): the line is not in the document,
    so b's same line, made meanwhile, copies nothing and stays."""
    base = base_update()
    a, b = device(base, 2), device(base, 3)
    both = merge_updates(save(a, BASE + "tail\n"), save(a, BASE))
    theirs = save(b, BASE + "tail\n")
    changes = room(base)
    assert changes.note(both, compare=True) is None
    assert changes.note(theirs, compare=True) is None
    assert text_of(base, both, theirs) == BASE + "tail\n"


def test_an_insert_sent_again_is_not_remembered_again() -> None:
    """a's line, taken out since, comes again in another grouping of a's updates (not
    acknowledged, regrouped after a reconnect): below the document's state vector
    (``known``), it is not new; b's same line, made meanwhile, stays."""
    base = base_update()
    a, b = device(base, 2), device(base, 3)
    added = save(a, BASE + "tail\n")
    taken_out = save(a, BASE)
    again = merge_updates(added, save(a, BASE.replace("line 1", "line one")))
    theirs = save(b, BASE + "tail\n")
    changes = room(base)
    doc = device(base, 99)
    for update in (added, taken_out, again):
        known = state_vector_clocks(doc.get_state())
        doc.apply_update(update)
        assert changes.note(update, compare=True, known=known) is None
    known = state_vector_clocks(doc.get_state())
    assert changes.note(theirs, compare=True, known=known) is None


def test_a_deletion_forgets_exactly_the_inserts_it_touches() -> None:
    """a's insert that one character was deleted from is forgotten, its other insert
    is not: of b's same two, only the second is a copy. A deletion right after it, or
    of another client's, forgets nothing."""
    base = base_update()
    a, b = device(base, 2), device(base, 3)
    new = "one\n" + BASE + "four\n"
    ours, theirs = save(a, new), save(b, new)

    def clock_of(update: bytes, text: str) -> int:
        return next(
            i.clock for items in decode_update(update)[0].values() for i in items if i.text == text
        )

    one = clock_of(ours, "one\n")
    changes = room(base)
    assert changes.note(ours, compare=True) is None
    for deleted in ((2, one + 4, one + 5), (3, 0, 100)):  # after a's "one\n", b's
        assert changes.note(delete_update([deleted]), compare=False) is None
    changes.note(delete_update([(2, one + 1, one + 2)]), compare=False)  # "n" of "one"
    fix = changes.note(theirs, compare=True)
    assert fix is not None
    assert decode_update(fix)[1] == [(3, clock_of(theirs, "four\n"), 5)]
    assert text_of(base, ours, theirs, fix).count("four\n") == 1


def test_many_remembered_inserts_are_forgotten_in_time() -> None:
    """A device's update that changes every other line of a long file (an insert per
    line), then one that deletes part of each again (5,000 ranges): each range was
    compared with every insert remembered (1.3 s here against 0.06 s to remember them,
    with the server's event loop waiting; and a room compares every update's deletions
    for a minute); now a lookup. Timed against remembering them, in the same
    conditions."""
    line = "line 0000\n"
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("content", type=Text).insert(0, line * 10_000)
    base = seed.get_update()
    a = device(base, 2)
    text = a.get("content", type=Text)
    ends = [n * len(line) + len(line) - 1 for n in range(0, 10_000, 2)]
    before = a.get_state()
    with a.transaction():
        for end in reversed(ends):
            text.insert(end, "!?")
    inserts = a.get_update(before)
    before = a.get_state()
    with a.transaction():  # each "!": 5,000 ranges of a's clocks, not one
        for k, end in reversed(list(enumerate(ends))):
            del text[end + 2 * k]  # (after the k marks before it)
    deletes = a.get_update(before)
    assert str(text) == (line[:-1] + "?\n" + line) * 5_000
    changes = room(base)
    started = time.perf_counter()
    changes.note(inserts, compare=True)
    floor = time.perf_counter() - started
    started = time.perf_counter()
    changes.note(deletes, compare=False)
    took = time.perf_counter() - started
    assert took < 3 * floor, (took, floor)
    assert len(changes) == 0
