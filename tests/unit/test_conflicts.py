"""Conflict detection: overlapping offline edits become records, disjoint ones do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from crdt import branches
from crdt.conflicts import ConflictRecord, Region, Side, changes, detect, lines, overlaps
from crdt.errors import NotFound
from crdt.history import Append, Appended, DocRef, History
from crdt.kv.sqlite import SQLiteEngine
from crdt.merge3 import merge3
from crdt.textedits import apply, diff

BASE = "".join(f"line {i}\n" for i in range(20))


def edit(text: str, line: int, new: str) -> str:
    out = lines(text)
    out[line] = new
    return "".join(out)


def test_same_line_rewritten_by_both_sides_is_one_region() -> None:
    [region] = detect(BASE, edit(BASE, 5, "ours\n"), edit(BASE, 5, "theirs\n"))
    assert (region.base_start, region.base_end) == (5, 6)
    assert region.base_text == "line 5\n"
    assert region.ours_text == "ours\n"
    assert region.theirs_text == "theirs\n"


def test_distant_lines_do_not_conflict() -> None:
    assert detect(BASE, edit(BASE, 2, "ours\n"), edit(BASE, 17, "theirs\n")) == []


def test_identical_sides_or_one_side_unchanged_do_not_conflict() -> None:
    assert detect(BASE, BASE, edit(BASE, 3, "x\n")) == []
    assert detect(BASE, edit(BASE, 3, "x\n"), BASE) == []


def test_insertions_at_the_same_point_conflict() -> None:
    [region] = detect(BASE, BASE + "ours\n", BASE + "theirs\n")
    assert region.ours_text == "ours\n" and region.theirs_text == "theirs\n"


def test_overlapping_ranges_merge_into_one_region() -> None:
    ours = edit(edit(BASE, 4, "o4\n"), 5, "o5\n")
    theirs = edit(BASE, 5, "t5\n")
    [region] = detect(BASE, ours, theirs)
    assert (region.base_start, region.base_end) == (4, 6)
    assert region.ours_text == "o4\no5\n"
    assert region.theirs_text == "line 4\nt5\n"


def test_a_deletion_overlapping_an_edit_conflicts() -> None:
    ours = "".join(lines(BASE)[:5] + lines(BASE)[8:])
    [region] = detect(BASE, ours, edit(BASE, 6, "theirs\n"))
    assert region.ours_text == ""
    assert "theirs\n" in region.theirs_text


def test_a_region_holds_a_side_s_insertion_where_the_other_s_change_starts() -> None:
    # Line by line ours added x before p and deleted q; theirs rewrote both lines. The
    # insertion overlaps no change of theirs (it is at its start), yet it is ours' text
    # there: the region said ours made p of p q, and a device's whole new text (a file
    # written over a deleted document's, found by a randomized end-to-end runner) was
    # in neither the record nor the garbled merge.
    [region] = detect("p\nq\n", "x\np\n", "z\n")
    assert (region.base_start, region.base_end) == (0, 2)
    assert (region.ours_text, region.theirs_text) == ("x\np\n", "z\n")
    [region] = detect("p\nq\n", "z\n", "x\np\n")
    assert (region.ours_text, region.theirs_text) == ("z\n", "x\np\n")


def test_insertion_strictly_inside_a_change_overlaps_but_adjacent_does_not() -> None:
    [change] = changes(lines("a\nb\nc\n"), lines("a\nX\nY\nc\n"))
    inside = type(change)(2, 2, 0, 0)
    assert overlaps(change, type(change)(1, 2, 0, 0))
    assert not overlaps(change, type(change)(3, 3, 0, 0))
    assert overlaps(type(change)(1, 3, 0, 0), inside)


# --- against a real history --------------------------------------------------------


class Device:
    """A pycrdt doc that records the updates it makes."""

    def __init__(self, state: bytes) -> None:
        self.doc: Doc[Any] = Doc()
        self.doc.apply_update(state)
        self.text = self.doc.get("content", type=Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def delete_file(self, *, empty: bool = False) -> None:
        """What a folder does when the file is deleted (``weft.deleted``; ``empty``: and
        the text emptied, as clients before 2026-12-04 did)."""
        with self.doc.transaction():
            self.doc.get("weft", type=Map)["deleted"] = True
            if empty:
                del self.text[0 : len(self.text)]

    def append_line(self, new: str) -> None:
        self.text.insert(len(self.text), new)

    def rewrite_line(self, line: int, new: str) -> None:
        text = str(self.text)
        start = sum(len(x) for x in lines(text)[:line])
        old = lines(text)[line]
        del self.text[start : start + len(old)]
        self.text.insert(start, new)


async def commit(history: History, doc: DocRef, device: Device, user: str) -> list[Appended]:
    return await history.append([Append(doc, u, user, user) for u in device.updates])


async def seeded_doc(history: History, path: str) -> tuple[DocRef, Appended]:
    """A document holding ``BASE`` (one commit by "seed"), and that commit."""
    doc = await history.doc("acme", "site", path, create=True)
    seed = Device(Doc().get_update())
    seed.text.insert(0, BASE)
    [seeded] = await commit(history, doc, seed, "seed")
    return doc, seeded


async def test_three_offline_devices_make_exactly_one_conflict(tmp_path: Path) -> None:
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc, seeded = await seeded_doc(history, "notes.txt")
        base = seeded.versionstamp
        state = (await history.replay(doc)).state()

        alice, bob, carol = Device(state), Device(state), Device(state)
        alice.rewrite_line(5, "alice was here\n")
        bob.rewrite_line(5, "bob was here\n")
        carol.rewrite_line(18, "carol far away\n")

        found = []
        for user, device in (("alice", alice), ("bob", bob), ("carol", carol)):
            stamps = await commit(history, doc, device, user)
            record = await branches.detect_branch(history, doc, base, stamps)
            if record is not None:
                await branches.save(history, doc, record)
                await branches.save(history, doc, record)  # idempotent
                found.append(record)

        assert len(found) == 1
        [record] = found
        assert record.ours.users == ["bob"] and record.theirs.users == ["alice"]
        [region] = record.regions
        assert region.ours_text == "bob was here\n"
        assert region.theirs_text == "alice was here\n"
        merged = str((await history.replay(doc)).doc.get("content", type=Text))
        assert record.merged_text.replace("carol far away\n", "line 18\n") == "".join(
            lines(merged)
        ).replace("carol far away\n", "line 18\n")

        stored = (await branches.list_conflicts(history, "acme", "site")).records
        assert [r.id for r in stored] == [record.id]
        assert (
            await branches.list_conflicts(history, "acme", "site", status="resolved")
        ).records == []
        done = await branches.resolve(history, "acme", "site", record.id, user="dana")
        assert done.status == "resolved" and done.resolved_by == "dana"
        assert (
            await branches.get_conflict(history, "acme", "site", record.id)
        ).status == "resolved"
        with pytest.raises(NotFound):
            await branches.get_conflict(history, "acme", "site", "00" * 12)


async def test_a_branch_is_judged_against_commits_before_it_not_after(tmp_path: Path) -> None:
    """Detection may run late (it is off the hot path): what others committed after the
    branch's last update is not part of its 'theirs'; that commit's own branch judges it."""
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc, seeded = await seeded_doc(history, "late.txt")
        state = (await history.replay(doc)).state()
        alice, bob, carol = Device(state), Device(state), Device(state)
        alice.rewrite_line(5, "alice\n")
        bob.rewrite_line(5, "bob\n")
        carol.rewrite_line(6, "carol, next to both\n")
        await commit(history, doc, alice, "alice")
        bobs = await commit(history, doc, bob, "bob")
        await commit(history, doc, carol, "carol")  # committed before bob's check runs
        record = await branches.detect_branch(history, doc, seeded.versionstamp, bobs)
        assert record is not None
        assert record.theirs.users == ["alice"]
        assert [r.theirs_text for r in record.regions] == ["alice\n"]
        assert "carol" not in record.merged_text


def test_the_same_change_on_both_sides_is_not_a_conflict() -> None:
    """One device's update counted on both sides (re-sent after a lost ack, so stored
    once and found a duplicate) contests nothing; a different change still does."""
    base = "one\ntwo\nthree\n"
    same = "one\nTWO\nthree\n"
    assert detect(base, same, same) == []
    assert detect(base, same, "one\nzwei\nthree\n") != []
    both = detect(base, "one\nTWO\nthree\nfour\n", "one\nTWO\nthree\n")
    assert both == []  # the extra line is ours alone


def test_the_same_change_made_apart_is_a_conflict_when_the_merge_has_both() -> None:
    """Two devices that made the same change apart (two updates) are merged by the CRDT
    into text neither wrote: both fixed ``teh`` (``thhe``), both added a line (twice).
    That is recorded; a merge that has the change once (one update counted on both
    sides) is not, nor a merge whose other changes lie elsewhere (an audit)."""
    base = "one\nteh line\nthree\nfour\n"
    fixed = "one\nthe line\nthree\nfour\n"
    [region] = detect(base, fixed, fixed, "one\nthhe line\nthree\nfour\n")
    assert (region.base_text, region.ours_text, region.theirs_text) == (
        "teh line\n",
        "the line\n",
        "the line\n",
    )
    added = "one\nteh line\nnew\nthree\nfour\n"
    [region] = detect(base, added, added, "one\nteh line\nnew\nnew\nthree\nfour\n")
    assert region.ours_text == "new\n"
    assert detect(base, fixed, fixed, fixed) == []
    theirs = "one\nthe line\nthree\nFOUR\n"
    assert detect(base, fixed, theirs, theirs) == []


def test_a_merge_as_the_line_merge_has_it_is_not_taken_for_a_garbled_one() -> None:
    """Both deleted the same closing brace (two updates, deleted once in the merge), and
    each added a line two lines apart among repeated lines: difflib lined the merged
    text up otherwise than ours, and a merge with nothing wrong made a record (a review
    of the check above, 1 in 1,595 fuzz cases)."""
    body = "def f{0}(x):\n    if x:\n        return {0}\n    }}\n\n"
    base = "".join(body.format(n) for n in range(3))
    both = base.replace("return 1\n    }\n", "return 1\n")
    ours = both.replace("return 2\n", "return 2\n    O()\n")
    theirs = both.replace("def f2(x):\n", "def f2(x):\n    T()\n")
    merged = ours.replace("def f2(x):\n", "def f2(x):\n    T()\n")
    assert merged == merge3(base, ours, theirs)
    assert detect(base, ours, theirs, merged) == []


def _crdt_merge(base: str, ours: str, theirs: str, ours_first: bool) -> str:
    """The text two devices' saves of ``base`` merge into, each save made as the
    workspace makes it (minimal edits of the document); ``ours_first``: ours has the
    lower client id, which Yjs puts first where both inserted at one place."""
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("content", type=Text).insert(0, base)
    docs = []
    for client, new in ((2, ours), (3, theirs)) if ours_first else ((3, ours), (2, theirs)):
        doc: Doc[Any] = Doc(client_id=client)
        doc.apply_update(seed.get_update())
        apply(doc.get("content", type=Text), base, diff(base, new))
        docs.append(doc)
    docs[0].apply_update(docs[1].get_update())
    return str(docs[0].get("content", type=Text))


NOTES = "# Notes\n\n- one\n\n"


@pytest.mark.parametrize(
    ("base", "ours", "theirs", "span"),
    [
        # ours typed into the blank last line, theirs added a line just before it
        (NOTES, "# Notes\n\n- one\nby A\n", "# Notes\n\n- one\n- B\n\n", (3, 4)),
        # theirs deleted one of two equal lines (difflib: the first; the edit: the second)
        ("b\nx = 1\nx = 1\nb\n}\n", "b\nx = 1\nbO\nO\nb\n}\n", "b\nx = 1\nb\n}\n", (1, 4)),
    ],
)
def test_a_merge_with_a_line_nobody_wrote_is_a_conflict_whatever_the_line_diffs_say(
    base: str, ours: str, theirs: str, span: tuple[int, int]
) -> None:
    """Found in an audit: the line diffs of the two sides were disjoint (an insertion
    just before a changed line, a deletion of the other one of two equal lines), but the
    devices' edits touched the same characters, and the merge held a line nobody wrote
    (``by A- B``) with no record. A merge line that is in neither side nor the base
    makes a region, spanning the changes of both sides there."""
    merged = _crdt_merge(base, ours, theirs, ours_first=True)
    assert not set(lines(merged)) <= set(lines(base + ours + theirs))
    [region] = detect(base, ours, theirs, merged)
    assert (region.base_start, region.base_end) == span
    assert region.base_text == "".join(lines(base)[span[0] : span[1]])
    assert region.ours_text in ours and region.theirs_text in theirs
    assert region.ours_text != region.base_text != region.theirs_text


def test_the_same_edits_merged_cleanly_are_no_conflict() -> None:
    """The first case above with the CRDT's order the other way: every line of the
    merge is one somebody wrote, and the line diffs are disjoint, so no record."""
    ours, theirs = "# Notes\n\n- one\nby A\n", "# Notes\n\n- one\n- B\n\n"
    merged = _crdt_merge(NOTES, ours, theirs, ours_first=False)
    assert merged == "# Notes\n\n- one\n- B\nby A\n"
    assert detect(NOTES, ours, theirs, merged) == []


@pytest.mark.parametrize(
    ("base", "ours", "theirs", "merged", "span"),
    [
        # theirs edited and added lines where ours deleted lines: the last line lost its
        # line ending (``T``, where theirs has ``T\n``)
        ("b\na\n\n\nreturn\n", "b\n\n\n", "bT\na\n\nT\nreturn\n", "bT\n\n\nT", (3, 5)),
        # theirs deleted the copy of a line ours edited: only ours' ``O`` is left of it
        (
            "x = 1\nx = 1\n\n\nreturn\n",
            "x = 1\nO\nx = 1O\n\nreturn\n",
            "x = 1\n\n\nreturn\n",
            "x = 1\nO\nO\n\nreturn\n",
            (0, 3),
        ),
        # the same with CRLF: ``aO`` became ``O``, theirs' added blank line is gone
        ("{\r\na\r\n", "{\r\naO\r\nO\r\n", "a\r\n\r\n", "a\r\nO\r\nO\r\n", (0, 2)),
        # ours added a blank line after the last, theirs took that last line's ending off
        ("}\na\n", "}\na\n\nreturn\n}", "}T\na", "}T\na\nreturn\n}", (0, 2)),
    ],
)
def test_a_merge_that_lost_part_of_an_edit_is_a_conflict(
    base: str, ours: str, theirs: str, merged: str, span: tuple[int, int]
) -> None:
    """Found in an audit (about 3 in 10,000 random merges): the line diffs were
    disjoint, every line of the merge is one the base or a side has, yet it lost a line
    one side added (kept part of an edit, or lost a line ending), with no record. A line
    only one side added is in any line merge as often as it added it, so the merge
    holding it fewer times makes a region, spanning the changes that added it."""
    for ours_first in (True, False):
        assert _crdt_merge(base, ours, theirs, ours_first) == merged
    written = lines(base + "\n" + ours + "\n" + theirs)
    assert {line.rstrip("\r\n") for line in lines(merged)} <= {
        line.rstrip("\r\n") for line in written
    }
    [region] = detect(base, ours, theirs, merged)
    assert (region.base_start, region.base_end) == span
    assert region.base_text == "".join(lines(base)[span[0] : span[1]])
    assert region.ours_text in ours and region.theirs_text in theirs


@pytest.mark.parametrize(
    ("base", "ours", "theirs"),
    [
        # both deleted one of two equal lines (difflib: different ones), theirs edited b
        ("}\n}\nb", "}\nb", "}\nbT"),
        # both deleted the same line, ours also put a copy of it elsewhere (a move)
        ("{\nreturn\n}\n{\nx = 1\n", "{\nreturn\n}\nx = 1\n{\n", "{\nreturn\n}\nx = 1\n"),
        ("return\nx = 1\n\n}\n", "\nreturn\nx = 1\n}\n", "return\nb\nx = 1\n}\n"),
        # theirs added a copy of a line ours replaced (with the line after it)
        ("a\nb\n}", "{O\nbO\n}", "a\na\nb\n}T"),
        # adjacent lines, CRLF; an edit next to an append to a last line with no ending
        ("a\r\nb\r\nc\r\n", "aO\r\nb\r\nc\r\n", "a\r\nbT\r\nc\r\n"),
        ("a\nb\nc", "a\nbO\nc", "a\nb\ncT\nd"),
    ],
)
def test_merges_that_lost_nothing_stay_no_conflict(base: str, ours: str, theirs: str) -> None:
    """Disjoint edits where texts repeat lines: some merges differ from the line merge
    (:func:`crdt.merge3.merge3` lines the sides up its own way, e.g. drops the ``}``
    both kept in the first case), but each holds every line as a line merge of the
    edits would, so no record."""
    for ours_first in (True, False):
        assert detect(base, ours, theirs, _crdt_merge(base, ours, theirs, ours_first)) == []


async def test_each_part_of_a_device_branch_keeps_its_own_conflicts(tmp_path: Path) -> None:
    """Found in a review: a device's branch sent over two connections (same base) gave
    both parts the record id of the first, so the second part's conflict with another
    user was dropped as a repeat. Each part is its own record; the device's own first
    part is never "theirs" for its second."""
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc, seeded = await seeded_doc(history, "notes.txt")
        state = (await history.replay(doc)).state()
        alice, bob, carol = Device(state), Device(state), Device(state)
        laptop = ("alice", "laptop")

        async def alice_sends(updates: list[bytes]) -> list[Appended]:
            return await history.append([Append(doc, u, "alice", "laptop") for u in updates])

        bob.rewrite_line(5, "bob\n")
        await commit(history, doc, bob, "bob")
        alice.rewrite_line(5, "alice\n")
        sent = len(alice.updates)
        first = await alice_sends(alice.updates)
        one = await branches.detect_branch(history, doc, seeded.versionstamp, first, device=laptop)
        assert one is not None
        await branches.save(history, doc, one)
        carol.rewrite_line(15, "carol\n")
        await commit(history, doc, carol, "carol")
        alice.rewrite_line(15, "alice too\n")
        # The second connection re-sends the first part too (its acks were lost).
        second = await alice_sends(alice.updates)
        assert all(a.duplicate for a in second[:sent]) and not second[-1].duplicate
        two = await branches.detect_branch(history, doc, seeded.versionstamp, second, device=laptop)
        assert two is not None and two.id != one.id
        await branches.save(history, doc, two)
        stored = (await branches.list_conflicts(history, "acme", "site")).records
        regions = [(s.id, r.ours_text, r.theirs_text) for s in stored for r in s.regions]
        assert (one.id, "alice\n", "bob\n") in regions
        assert (two.id, "alice too\n", "carol\n") in regions
        assert all("alice" not in theirs for _, _, theirs in regions)  # never herself


async def test_theirs_keeps_edits_made_on_top_of_the_devices_own_earlier_update(
    tmp_path: Path,
) -> None:
    """Found by the 2026-12-05 end-to-end runner with running syncs: a device's base
    lagged behind an update of its own that was committed, another device rewrote the
    line on top of that update, and the device's offline branch rewrote it too. The
    others' side was replayed on the base without the device's update, so the edit made
    on top of it stayed pending: the record's ``theirs_text`` read as the base (the other
    device's text was in no record, only in the history)."""
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc, seeded = await seeded_doc(history, "notes.txt")
        laptop = Device((await history.replay(doc)).state())
        laptop.rewrite_line(3, "laptop online\n")
        await commit(history, doc, laptop, "laptop")
        laptop.updates.clear()
        bob = Device((await history.replay(doc)).state())
        bob.rewrite_line(3, "bob on top\n")
        await commit(history, doc, bob, "bob")
        laptop.rewrite_line(3, "laptop offline\n")  # offline, on the seed's base still
        branch = await commit(history, doc, laptop, "laptop")
        record = await branches.detect_branch(
            history, doc, seeded.versionstamp, branch, device=("laptop", "laptop")
        )
        assert record is not None
        assert [(r.ours_text, r.theirs_text) for r in record.regions] == [
            ("laptop offline\n", "bob on top\n")
        ]
        assert record.theirs.clients == ["bob"]


async def test_ours_keeps_edits_made_on_top_of_what_the_device_had_seen(tmp_path: Path) -> None:
    """The same the other way (the end-to-end runner, seed 80): a device rewrote, offline,
    a line another device had rewritten and it had received, on a base from before it.
    Replayed without that update, the device's own edit stayed pending: its record's
    ``ours_text`` read as the base, its text in no record. The record itself is the
    spurious one a lagging base makes (README, Known issues)."""
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc, seeded = await seeded_doc(history, "notes.txt")
        bob = Device((await history.replay(doc)).state())
        bob.rewrite_line(3, "bob online\n")
        await commit(history, doc, bob, "bob")
        laptop = Device((await history.replay(doc)).state())  # has bob's; base: the seed
        laptop.rewrite_line(3, "laptop offline\n")
        branch = await commit(history, doc, laptop, "laptop")
        record = await branches.detect_branch(
            history, doc, seeded.versionstamp, branch, device=("laptop", "laptop")
        )
        assert record is not None
        assert [(r.ours_text, r.theirs_text) for r in record.regions] == [
            ("laptop offline\n", "bob online\n")
        ]


async def test_an_edit_against_a_deletion_is_a_conflict_either_way(tmp_path: Path) -> None:
    """Found in a walkthrough: one device appended a line offline, another deleted the
    file offline; the appended line overlaps no deleted line, so no record was made and
    the edit vanished with the file. Whichever side deleted, the branch is a conflict,
    its one region spans the whole base, and the record says who deleted."""
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        for deleting_first, empty in ((True, False), (False, False), (True, True)):
            doc, seeded = await seeded_doc(history, f"gone-{deleting_first}-{empty}.txt")
            state = (await history.replay(doc)).state()
            editor, deleter = Device(state), Device(state)
            editor.append_line("important offline work\n")
            deleter.delete_file(empty=empty)
            first, second = (deleter, editor) if deleting_first else (editor, deleter)
            names = {id(editor): "ed", id(deleter): "del"}
            await commit(history, doc, first, names[id(first)])
            branch = await commit(history, doc, second, names[id(second)])
            record = await branches.detect_branch(history, doc, seeded.versionstamp, branch)
            assert record is not None
            assert record.deleted == ("theirs" if deleting_first else "ours")
            assert record.emptied is empty
            [region] = record.regions
            assert (region.base_start, region.base_end) == (0, len(lines(BASE)))
            edited = region.ours_text if deleting_first else region.theirs_text
            gone = region.theirs_text if deleting_first else region.ours_text
            assert edited == BASE + "important offline work\n" and gone == ""
            assert "edited here while deleted" in record.summary() or not deleting_first
            assert "deleted here while edited" in record.summary() or deleting_first


async def test_both_sides_deleting_or_an_unedited_side_is_no_conflict(tmp_path: Path) -> None:
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc, seeded = await seeded_doc(history, "both.txt")
        state = (await history.replay(doc)).state()
        one, two = Device(state), Device(state)
        one.delete_file()
        two.delete_file()
        await commit(history, doc, one, "one")
        branch = await commit(history, doc, two, "two")
        assert await branches.detect_branch(history, doc, seeded.versionstamp, branch) is None


def test_the_other_sides_summary_names_the_device_it_met_and_where_the_text_is() -> None:
    """The line said to a device of a record's ``theirs`` side speaks for that side:
    which device the record's own side was, what met, and where the text is."""
    region = Region(1, 2, "line 1\n", "ours\n", "theirs\n")

    def record(ours: Side, deleted: str = "", restored: bool = False) -> ConflictRecord:
        return ConflictRecord(
            id="aa" * 12,
            path="notes.md",
            base="00" * 12,
            ours=ours,
            theirs=Side(users=["ada"], clients=["desk"]),
            regions=[region],
            merged_text="",
            created_ms=1,
            deleted=deleted,
            restored=restored,
        )

    laptop = Side(users=["bob"], clients=["laptop"])
    assert record(laptop).their_summary() == (
        "edits made here met laptop's offline changes: 1 region changed on both sides "
        "(base line 2); both sides' text is in this record"
    )
    assert record(laptop, "theirs").their_summary("desk") == (
        "deleted here while edited on laptop: the document stays deleted; the edited text "
        "is in this record"
    )
    # Another device on the deleting side: the record does not say which one deleted
    # (the other edited): said to either, it names both, never "deleted here" alone.
    two = record(laptop, "theirs")
    two.theirs = Side(users=["ada", "cy"], clients=["desk", "tablet"])
    assert two.their_summary("tablet").startswith(
        "deleted here or on desk while edited on laptop: "
    )
    assert two.their_summary("desk").startswith("deleted here or on tablet while edited on ")
    assert record(laptop, "ours", restored=True).their_summary() == (
        "edited here while deleted on laptop: the document was brought back with the edits"
    )
    named_by_user = record(Side(users=["bob"]), "ours").their_summary()  # (no device name)
    assert named_by_user.startswith("edited here while deleted on bob: ")
    assert record(Side()).their_summary().startswith("edits made here met another device's ")
    # the record's own side's summary is as it was
    assert record(laptop, "theirs").summary().startswith("edited here while deleted elsewhere: ")
    # a report (no base, nothing deleted) is told apart from the records of branches and edits
    report = record(laptop)
    report.base = ""
    assert report.report and not record(laptop).report
    report.deleted = "theirs"  # (an online edit whose deletion was not found: no base either)
    assert not report.report


def test_weft_conflicts_names_a_region_by_its_base_lines() -> None:
    from client.conflicts_cli import _lines

    def lines(base: str, start: int, end: int) -> str:
        return _lines({"base": base}, {"base_start": start, "base_end": end})

    assert lines("00" * 12, 2, 3) == "base line 3"
    assert lines("00" * 12, 2, 5) == "base lines 3-5"
    assert lines("00" * 12, 4, 4) == "after base line 4"
    assert lines("00" * 12, 0, 0) == "before base line 1"
    assert lines("", 0, 0) == "no shared history"


def test_weft_conflicts_show_tells_no_text_from_a_blank_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A side that deleted the lines (or an insertion point's base) has no text: it was
    printed as one ``| ``, as a blank line is."""
    import argparse

    from client.conflicts_cli import _print

    side = {"users": ["ann"], "clients": ["dev-a"]}
    region = {"base_start": 1, "base_end": 2, "base_text": "two\n", "ours_text": ""}
    record = {
        "id": "ab" * 12,
        "path": "a.md",
        "status": "open",
        "base": "00" * 12,
        "ours": side,
        "theirs": side,
        "regions": [{**region, "theirs_text": "\n"}],
        "merged_text": "one\n\n",
    }
    _print(argparse.Namespace(json=False, action="show"), record)
    out = capsys.readouterr().out
    assert (
        "  base line 2:\n  --- base\n  | two\n  --- ours\n  (nothing)\n  --- theirs\n  | \n" in out
    )
