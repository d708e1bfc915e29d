"""The same change sent online by two devices at one moment is kept once
(:mod:`crdt.sameonline`): each device edits as ``weft sync`` does (:mod:`crdt.textedits`)
on its own pycrdt document, and the updates reach one document in the room's order."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from crdt.sameonline import SameChanges
from crdt.textedits import apply, diff

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
