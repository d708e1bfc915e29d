"""``ydoc.apply`` (its cheap native path, which rooms use for every update) leaves a
document exactly as pycrdt's ``Doc.apply_update`` does: same state bytes after every
update, pending updates included; the errors of an update that does not decode or makes
pycrdt panic, and a document that is still usable afterwards."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from crdt import ydoc

# The fuzzed update of tests/integration/test_poison_update.py: it decodes, applies to an
# empty Doc, and makes pycrdt panic after the 30 edits of ``history_of_edits``.
POISON = bytes.fromhex("0101071d2801046d65742d0961036b3134017c41600000010704010206040c031201")


def history_of_edits() -> Doc[Any]:
    doc: Doc[Any] = Doc(client_id=7)
    text = doc.get("content", type=Text)
    meta = doc.get("meta", type=Map)
    for i in range(30):
        if i % 3 == 0:
            text.insert(len(text) // 2, "hello")
        elif i % 3 == 1 and len(text) > 2:
            del text[1:3]
        else:
            meta[f"k{i}"] = i
    return doc


def edits(seed: int, n: int = 300) -> list[bytes]:
    """Updates of three editors typing and deleting, each also seeing the others'."""
    rng = random.Random(seed)
    docs: list[Doc[Any]] = [Doc(client_id=100 + i) for i in range(3)]
    updates = []
    for _ in range(n):
        doc = rng.choice(docs)
        text = doc.get("content", type=Text)
        before = doc.get_state()
        if len(text) > 3 and rng.random() < 0.3:
            start = rng.randrange(len(text) - 2)
            del text[start : start + 2]
        elif rng.random() < 0.1:
            doc.get("meta", type=Map)["k"] = rng.random()
        else:
            text.insert(rng.randrange(len(text) + 1), rng.choice("abc\n"))
        update = doc.get_update(before)
        updates.append(update)
        for other in docs:
            if other is not doc and rng.random() < 0.7:
                other.apply_update(update)
        for other in docs:  # catch up now and then
            if rng.random() < 0.05:
                other.apply_update(doc.get_update(other.get_state()))
    return updates


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_state_as_apply_update_after_every_update(seed: int) -> None:
    updates = edits(seed)
    random.Random(seed).shuffle(updates)  # out of order: some wait pending for a while
    fast: Doc[Any] = Doc()
    slow: Doc[Any] = Doc()
    for update in updates:
        vector = ydoc.apply_with_state(fast, update)
        slow.apply_update(update)
        assert fast.get_state() == slow.get_state() == vector  # read in its transaction
    assert fast.get_update() == slow.get_update()
    assert str(fast.get("content", type=Text)) == str(slow.get("content", type=Text))


def test_errors_are_those_of_ydoc_apply_and_the_doc_stays_usable() -> None:
    source = history_of_edits()
    doc: Doc[Any] = Doc()
    ydoc.apply(doc, source.get_update())
    with pytest.raises(ydoc.UnusableUpdate, match="cannot be integrated"):
        ydoc.apply(doc, POISON)
    with pytest.raises(ydoc.UnusableUpdate, match="does not decode"):
        ydoc.apply(doc, b"\x07\x07")
    assert str(doc.get("content", type=Text)) == str(source.get("content", type=Text))
    more: Doc[Any] = Doc()
    more.apply_update(doc.get_update())
    before = more.get_state()
    more.get("content", type=Text).insert(0, "still works ")
    ydoc.apply(doc, more.get_update(before))
    assert str(doc.get("content", type=Text)).startswith("still works ")


def test_inside_an_open_transaction_it_applies_through_pycrdt() -> None:
    doc: Doc[Any] = Doc()
    source: Doc[Any] = Doc()
    source.get("content", type=Text).insert(0, "abc")
    with doc.transaction():
        assert ydoc.apply_with_state(doc, source.get_update()) is None  # pycrdt's path
    assert str(doc.get("content", type=Text)) == "abc"


def test_a_room_keeps_its_pending_updates_and_drops_those_integrated_since() -> None:
    """Every update that goes pending is kept for joiners; past PENDING_PRUNE of them,
    the ones that integrated since (their dependency came) are dropped."""
    from crdt.history import DocRef
    from server.rooms import PENDING_PRUNE, Room

    writer: Doc[Any] = Doc(client_id=5)
    text = writer.get("content", type=Text)
    updates = []
    for n in range(PENDING_PRUNE + 3):
        before = writer.get_state()
        text += str(n % 10)
        updates.append(writer.get_update(before))
    room = Room(DocRef("t", "p", "a.txt", b"t", b"s"), Doc(), None, 0)
    for update in updates[1 : PENDING_PRUNE + 1]:  # all wait for updates[0]
        room._apply(update)
    assert room.pending == updates[1 : PENDING_PRUNE + 1]
    room._apply(updates[0])  # they all integrate: nothing new is pending
    assert len(room.pending) == PENDING_PRUNE
    room._apply(updates[PENDING_PRUNE + 2])  # waits for the one before it
    assert room.pending == [updates[PENDING_PRUNE + 2]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_apply_all_is_apply_one_by_one_in_one_transaction(seed: int) -> None:
    """``ydoc.apply_all`` (replays and snapshot builds) against pycrdt's own path: the
    same state, the same updates refused with the same errors, the rest applied."""
    updates = edits(seed)
    random.Random(seed).shuffle(updates)
    updates[50:50] = [POISON, b"\x07\x07"]
    updates.insert(0, history_of_edits().get_update())  # what POISON panics on
    fast: Doc[Any] = Doc()
    slow: Doc[Any] = Doc()
    refused: list[tuple[bytes, str]] = []
    ydoc.apply_all(fast, updates, lambda update, exc: refused.append((update, str(exc))))
    expected: list[tuple[bytes, str]] = []
    with slow.transaction():
        for update in updates:
            try:
                slow.apply_update(update)
            except ValueError as exc:
                expected.append((update, f"update does not decode: {exc}"))
            except BaseException as exc:
                assert ydoc.is_panic(exc)
                expected.append((update, f"update cannot be integrated into the document: {exc}"))
    assert [u for u, _ in refused] == [POISON, b"\x07\x07"]
    assert refused == expected
    assert fast.get_update() == slow.get_update()
    assert str(fast.get("content", type=Text)) == str(slow.get("content", type=Text))
    with fast.transaction():  # a transaction open: through pycrdt, same result
        ydoc.apply_all(fast, updates[-5:], lambda update, exc: refused.append((update, str(exc))))
    assert fast.get_update() == slow.get_update()


def test_a_room_watches_the_deletion_flag_only_once_the_document_has_a_weft_map() -> None:
    """Observers cost ~2 kB per room (bench.fanout's idle check: 1,000 idle rooms left
    ~2 MB more behind once unloaded), so a plain document's room has none; the room
    starts watching when the `weft` map appears (an update that makes it names it), also
    when that update waits (pending) for one it depends on, and a room loaded with the
    map watches at once. In every case it knows the flag and says an edit of the deleted text."""
    from crdt.history import Appended, DocRef
    from crdt.versionstamp import ZERO
    from server.rooms import Room

    ref = DocRef("t", "p", "a.txt", b"t", b"s")
    writer: Doc[Any] = Doc(client_id=7)
    text, meta = writer.get("content", type=Text), writer.get("weft", type=Map)

    def change(edit: Any) -> bytes:
        before = writer.get_state()
        edit()
        return writer.get_update(before)

    typed = change(lambda: text.insert(0, "one\n"))
    more = change(lambda: text.insert(4, "two\n"))
    deleted = change(lambda: meta.__setitem__("deleted", True))
    edited = change(lambda: text.insert(0, "x"))

    plain = Room(ref, Doc(), None, 0)
    assert not plain._apply(typed) and plain._meta_watch is None  # no observer
    assert not plain._apply(more) and plain._meta_watch is None
    assert not plain._apply(deleted) and plain.deleted and plain._meta_watch is not None
    assert plain._apply(edited)  # the text changed while deleted

    late = Room(ref, Doc(), None, 0)
    late._apply(typed)
    assert not late._apply(deleted)  # pending (it waits for `more`), kept for joiners
    assert late.pending == [deleted] and late._weft_seen
    late._apply(more)
    assert late.deleted and late._meta_watch is not None and late._apply(edited)

    loaded: Doc[Any] = Doc()
    for update in (typed, more, deleted):
        loaded.apply_update(update)
    room = Room(ref, loaded, None, 0)
    assert room.deleted and room._meta_watch is not None and room._apply(edited)
    assert room.apply_local(edited, Appended(ZERO, True), 0) is False  # (a duplicate)
