"""Two offline branches that inserted at one place of the base make a record even when the
line diffs read one of them as the end (or start) of a block it rewrote.

Each device edits as ``weft sync`` does (a file's new text becomes minimal edits of its
document, :mod:`crdt.textedits`), and branches are judged against a real history on a
real SQLite file (:func:`crdt.branches.detect_branch`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt import branches
from crdt.conflicts import ConflictRecord, detect
from crdt.history import Append, Appended, DocRef, History
from crdt.itemorder import ItemOrder
from crdt.kv.sqlite import SQLiteEngine
from crdt.sameplace import same_place
from crdt.textedits import apply, diff


class Device:
    """A document that records each save of its file as one update."""

    def __init__(self, state: bytes, client: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client)
        self.doc.apply_update(state)
        self.text = self.doc.get("content", type=Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def save(self, new: str) -> None:
        old = str(self.text)
        apply(self.text, old, diff(old, new))

    def take(self) -> list[bytes]:
        out, self.updates = self.updates, []
        return out


async def judge(
    tmp_path: Path,
    base: str | list[str],
    first: list[str],
    second: list[str],
    *,
    low_first: bool,
    typed_by_first: bool = False,
) -> tuple[ConflictRecord | None, str]:
    """``first`` saves go out one sync each (a device online the whole time), then the
    ``second`` device, offline since ``base``, syncs all its saves: its record (or None)
    and the merged text. ``low_first``: the first device has the lower client id (Yjs
    puts it first where both inserted at one place). ``base``: the text, or the saves
    that made it (so the base holds deleted characters). ``typed_by_first``: the first
    device made the base (its client id)."""
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc = await history.doc("acme", "site", "f.txt", create=True)
        a_id, b_id = (2, 3) if low_first else (3, 2)
        seed = Device(Doc().get_update(), a_id if typed_by_first else 1)
        for text in [base] if isinstance(base, str) else base:
            seed.save(text)
        [*_, seeded] = await commit(history, doc, seed.take(), "seed")
        state = (await history.replay(doc)).state()
        a, b = Device(state, a_id), Device(state, b_id)
        for text in first:
            a.save(text)
            await commit(history, doc, a.take(), "alice")
        for text in second:
            b.save(text)
        branch = await commit(history, doc, b.take(), "bob")
        record = await branches.detect_branch(history, doc, seeded.versionstamp, branch)
        merged = str((await history.replay(doc)).doc.get("content", type=Text))
        return record, merged


async def commit(history: History, doc: DocRef, updates: list[bytes], user: str) -> list[Appended]:
    return await history.append([Append(doc, u, user, user) for u in updates])


@pytest.mark.parametrize("low_first", [True, False])
async def test_insertions_at_the_end_of_a_block_the_other_side_rewrote_conflict(
    tmp_path: Path, low_first: bool
) -> None:
    """The README's case: base ``x``; A appends ``z`` and syncs, then rewrites ``x`` to
    ``y`` and syncs; B, offline since before both, appends ``w``. Line by line A's side
    is one block ``x`` -> ``y z`` ending where B inserted; both appended after ``x``."""
    record, merged = await judge(
        tmp_path, "x\n", ["x\nz\n", "y\nz\n"], ["x\nw\n"], low_first=low_first
    )
    assert merged in ("y\nz\nw\n", "y\nw\nz\n")
    assert record is not None
    [region] = record.regions
    assert (region.base_start, region.base_end) == (0, 1)
    assert (region.ours_text, region.theirs_text) == ("x\nw\n", "y\nz\n")


@pytest.mark.parametrize("low_first", [True, False])
async def test_insertions_at_the_start_of_a_block_the_other_side_rewrote_conflict(
    tmp_path: Path, low_first: bool
) -> None:
    """The mirror case: A adds ``z`` before ``b`` and then rewrites ``b``; B adds ``w``
    before ``b``. A's side reads as one block ``b`` -> ``z c`` starting there."""
    record, _ = await judge(
        tmp_path, "a\nb\n", ["a\nz\nb\n", "a\nz\nc\n"], ["a\nw\nb\n"], low_first=low_first
    )
    assert record is not None
    [region] = record.regions
    assert (region.base_start, region.base_end) == (1, 2)
    assert (region.ours_text, region.theirs_text) == ("w\nb\n", "z\nc\n")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # A split a line in two (a newline typed inside it); B added a line after it
        (["head\nfoo bar\nbaz\n"], ["head\nfoo bar baz\nw\n"]),
        # A rewrote the line; B added one after it: no place both inserted at
        (["head\nFOO BAR BAZ\n"], ["head\nfoo bar baz\nw\n"]),
        # A rewrote the line and added one before it; B added one after it
        (["head\nz\nfoo bar baz\n", "head\nz\nFOO\n"], ["head\nfoo bar baz\nw\n"]),
    ],
)
async def test_neighbouring_edits_in_different_places_make_no_record(
    tmp_path: Path, first: list[str], second: list[str]
) -> None:
    for low_first in (True, False):
        folder = tmp_path / str(low_first)
        folder.mkdir()
        record, _ = await judge(folder, "head\nfoo bar baz\n", first, second, low_first=low_first)
        assert record is None


@pytest.mark.parametrize("low_first", [True, False])
async def test_a_base_character_deleted_since_still_marks_its_place(
    tmp_path: Path, low_first: bool
) -> None:
    """A base whose line ``cd`` had a typo typed after ``c`` and deleted: A writes ``C``
    for ``c`` (typed after it), B adds a line before it. yrs joins the deleted ``c`` and
    the typo into one struct in the merge; the struct's last unit was no visible base
    character, so ``c`` was not counted and A's ``C`` seemed to sit where B's line is."""
    record, merged = await judge(
        tmp_path,
        ["ab\ncx\n", "ab\nc\n", "ab\ncd\n"],
        ["ab\nCd\n"],
        ["ab\nw\ncd\n"],
        low_first=low_first,
    )
    assert merged == "ab\nw\nCd\n"
    assert record is None


@pytest.mark.parametrize("low_first", [True, False])
async def test_text_a_device_added_to_its_own_base_text_is_where_it_typed_it(
    tmp_path: Path, low_first: bool
) -> None:
    """A typed the base ``z``, then added ``x`` after it and made it ``y``; B, offline,
    added ``w`` before ``z`` and deleted ``z``. yrs joins A's ``x`` line to the base's
    line (one client, typed one after the other) in the merge: the base's newline was
    not counted, and A's ``y`` seemed to sit before ``z``, where B's ``w`` is."""
    record, merged = await judge(
        tmp_path,
        "z\n",
        ["z\nx\n", "z\ny\n"],
        ["w\nz\n", "w\n"],
        low_first=low_first,
        typed_by_first=True,
    )
    assert merged == "w\ny\n"
    assert record is None


async def test_a_base_holding_an_update_pending_is_read_without_it(tmp_path: Path) -> None:
    """A's second update reached the log before its first (the first went over a
    connection that was cut): the base, between the two, holds it pending (a replay's
    state keeps it). Its structs depend on one the base does not have, and reading the
    base's items raised, so the branch got no verdict; both sides added a line after
    ``x``, a record."""
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc = await history.doc("acme", "site", "f.txt", create=True)
        seed = Device(Doc().get_update(), 1)
        seed.save("x\n")
        await commit(history, doc, seed.take(), "seed")
        state = (await history.replay(doc)).state()
        a, b = Device(state, 2), Device(state, 3)
        a.save("x\nz\n")
        first = a.take()
        a.save("x\nz\nq\n")
        [base] = await commit(history, doc, a.take(), "alice")
        await commit(history, doc, first, "alice")
        b.save("x\nw\n")
        branch = await commit(history, doc, b.take(), "bob")
        record = await branches.detect_branch(history, doc, base.versionstamp, branch)
    assert record is not None
    [region] = record.regions
    assert (region.base_start, region.base_end) == (1, 1)
    assert (region.ours_text, region.theirs_text) == ("w\n", "z\nq\n")


def _both(
    base: str, ours: list[str], theirs: list[str]
) -> tuple[Doc[Any], list[bytes], list[bytes]]:
    """The merge of two devices' saves of ``base``, and each side's updates."""
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("content", type=Text).insert(0, base)
    a, b = Device(seed.get_update(), 2), Device(seed.get_update(), 3)
    for text in ours:
        a.save(text)
    for text in theirs:
        b.save(text)
    merged: Doc[Any] = Doc()
    merged.apply_update(seed.get_update())
    for update in a.updates + b.updates:
        merged.apply_update(update)
    return merged, a.updates, b.updates


def test_same_place_gives_base_offsets_where_both_sides_text_sits() -> None:
    base = "x\n"
    merged, ours, theirs = _both(base, ["x\nw\n"], ["x\nz\n", "y\nz\n"])
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("content", type=Text).insert(0, base)
    state = seed.get_update()
    assert same_place(state, merged.get_update(), ours, theirs) == [2]
    # text a side typed and deleted again, or text of an update on both sides, is not there
    merged, ours, theirs = _both(base, ["x\nw\n", "x\n"], ["x\nz\n"])
    assert same_place(state, merged.get_update(), ours, theirs) == []
    merged, ours, _ = _both(base, ["x\nw\n"], [])
    assert same_place(state, merged.get_update(), ours, ours) == []
    # at the very start, and within a line
    merged, ours, theirs = _both(base, ["a\nx\n"], ["b\nx\n"])
    assert same_place(state, merged.get_update(), ours, theirs) == [0]
    merged, ours, theirs = _both(base, ["xa\n"], ["xb\n"])
    assert same_place(state, merged.get_update(), ours, theirs) == [1]


def test_detect_asks_where_both_inserted_only_when_changes_border_each_other() -> None:
    asked: list[bool] = []

    def places() -> list[int]:
        asked.append(True)
        return [2]

    [region] = detect("x\n", "x\nw\n", "y\nz\n", None, places)
    assert (region.base_start, region.base_end, region.ours_text) == (0, 1, "x\nw\n")
    assert asked
    asked.clear()
    base = "".join(f"{n}\n" for n in range(10))
    assert detect(base, base + "w\n", base.replace("2\n", "two\n"), None, places) == []
    assert not asked  # far apart: nothing to ask


def test_text_of_one_side_joined_to_a_repeat_is_that_side_s() -> None:
    """B's first save went out (its ack lost) and again in its branch: on both sides, so
    its text is neither's. yrs joins B's next save, typed just after it, to it in the
    merge; that text is B's alone, next to A's, and was taken for the repeat's."""
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("content", type=Text).insert(0, "x\n")
    state = seed.get_update()
    a, b = Device(state, 2), Device(state, 3)
    a.save("x\nz\n")
    b.save("x\nw\n")
    b.save("x\nw\nv\n")
    merged: Doc[Any] = Doc()
    with merged.transaction():
        for update in [state, *a.updates, *b.updates]:
            merged.apply_update(update)
    assert str(merged.get("content", type=Text)) == "x\nz\nw\nv\n"
    assert same_place(state, merged.get_update(), b.updates, [b.updates[0], *a.updates]) == [2]


def test_a_base_split_into_thousands_of_structs_is_read_in_time() -> None:
    """A base text that came in whole (one struct: a Yjs editor's paste; weft sync
    inserts runs of up to 16,384 characters) and an edit of every other line (a search
    and replace) split into thousands of structs in the merge. Each struct's place was
    found by reading its run from the start, in Python, when the text is not ASCII:
    seconds (7 s for a 10,000-line file in runs of 16,384), with the server's event
    loop waiting; now a lookup."""
    lines = [f"é{n}\n" for n in range(5000)]
    base = "".join(lines)
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("content", type=Text).insert(0, base)
    state = seed.get_update()
    a, b = Device(state, 2), Device(state, 3)
    a.save(base + "z\n")
    b.save("".join(line if n % 2 else line.upper() for n, line in enumerate(lines)) + "w\n")
    merged: Doc[Any] = Doc()
    with merged.transaction():
        for update in [state, *a.updates, *b.updates]:
            merged.apply_update(update)
    merged_state = merged.get_update()
    # Timed against what same_place must do anyway, rebuilding the merge's item order,
    # in the same conditions: a machine's load slows both alike. Here same_place takes
    # about 2-3 times as long as that; reading runs from their start took over 100.
    started = time.perf_counter()
    ItemOrder().apply_state(merged_state)
    floor = time.perf_counter() - started
    started = time.perf_counter()
    places = same_place(state, merged_state, a.updates, b.updates)
    took = time.perf_counter() - started
    assert took < 20 * floor, (took, floor)
    assert places == [len(base)]


@pytest.mark.parametrize("low_first", [True, False])
def test_formatting_is_no_text(low_first: bool) -> None:
    """A rich-text editor's bold over a line puts a format struct after its newline,
    where another side appended a line: it is no text, and B's rewrite of the line
    borders A's line without both inserting at one place (the merge is the same in
    either order)."""
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("content", type=Text).insert(0, "x\n")
    state = seed.get_update()
    a, b = Device(state, 2 if low_first else 3), Device(state, 3 if low_first else 2)
    a.save("x\nz\n")
    with b.doc.transaction():
        b.save("y\n")
        b.text.format(0, 2, {"bold": True})
    merged: Doc[Any] = Doc()
    with merged.transaction():
        for update in [state, *a.updates, *b.updates]:
            merged.apply_update(update)
    text, merged_state = str(merged.get("content", type=Text)), merged.get_update()
    assert text == "y\nz\n"

    def places() -> list[int]:
        return same_place(state, merged_state, a.updates, b.updates)

    assert places() == []
    assert detect("x\n", "x\nz\n", "y\n", text, places) == []


async def test_a_branch_is_judged_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebuilding the texts and comparing them takes hundreds of ms on a big file: the
    server's event loop must not wait on it (it ran on the loop's thread)."""
    threads: list[threading.Thread] = []
    real = branches._judge

    def judging(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(branches, "_judge", judging)
    record, _ = await judge(tmp_path, "x\n", ["x\nz\n", "y\nz\n"], ["x\nw\n"], low_first=True)
    assert record is not None
    assert threads and threads[0] is not threading.current_thread()
