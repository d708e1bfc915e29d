"""The same change made on both sides of an offline branch comes out once, with no
record (:mod:`crdt.samechange`); changes that differ are recorded as before.

Each device edits as ``weft sync`` does (:mod:`crdt.textedits`), and branches are
judged against a real history on a real SQLite file (:func:`crdt.branches.judge_branch`);
the update it gives is committed as the server does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt import branches
from crdt.conflicts import ConflictRecord
from crdt.history import Append, Appended, DocRef, History
from crdt.kv.sqlite import SQLiteEngine
from crdt.textedits import apply, diff
from crdt.versionstamp import Versionstamp
from crdt.ydecode import struct_ranges


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


@dataclass
class Project:
    history: History
    doc: DocRef
    base: Versionstamp
    state: bytes

    async def commit(self, updates: list[bytes], user: str) -> list[Appended]:
        return await self.history.append([Append(self.doc, u, user, user) for u in updates])

    async def judge(
        self, branch: list[Appended], user: str
    ) -> tuple[ConflictRecord | None, bytes | None]:
        """Judge ``branch`` as the server does, and commit the update it gives."""
        record, update = await branches.judge_branch(
            self.history, self.doc, self.base, branch, device=(user, user)
        )
        if update is not None:
            await self.commit([update], "weft:conflict")
        return record, update

    async def text(self) -> str:
        return str((await self.history.replay(self.doc)).doc.get("content", type=Text))

    def device(self, client: int) -> Device:
        return Device(self.state, client)


@asynccontextmanager
async def project(tmp_path: Path, base: str) -> AsyncIterator[Project]:
    async with SQLiteEngine(tmp_path / "h.db") as kv:
        history = History(kv)
        await history.init()
        doc = await history.doc("acme", "site", "f.txt", create=True)
        seed = Device(Doc().get_update(), 1)
        seed.save(base)
        [seeded] = await history.append([Append(doc, u, "seed", "seed") for u in seed.take()])
        state = (await history.replay(doc)).state()
        yield Project(history, doc, seeded.versionstamp, state)


@dataclass
class Judged:
    project: Project
    record: ConflictRecord | None
    update: bytes | None
    branch: list[Appended]


@asynccontextmanager
async def both(
    tmp_path: Path, base: str, online: str, offline: str, *, low_first: bool
) -> AsyncIterator[Judged]:
    """``online`` saved by a device online the whole time, then ``offline`` by one
    offline since ``base``, whose branch is judged (and its update committed)."""
    a_id, b_id = (2, 3) if low_first else (3, 2)
    async with project(tmp_path, base) as p:
        a, b = p.device(a_id), p.device(b_id)
        a.save(online)
        await p.commit(a.take(), "desk")
        b.save(offline)
        branch = await p.commit(b.take(), "laptop")
        record, update = await p.judge(branch, "laptop")
        yield Judged(p, record, update, branch)


@pytest.mark.parametrize("low_first", [True, False])
async def test_a_line_changed_alike_on_both_sides_comes_out_once_with_no_record(
    tmp_path: Path, low_first: bool
) -> None:
    async with both(tmp_path, "a\nb\nc\n", "a\nB\nc\n", "a\nB\nc\n", low_first=low_first) as j:
        assert j.record is None
        assert j.update is not None
        assert struct_ranges(j.update) == []  # deletions alone: no client id of its own
        assert await j.project.text() == "a\nB\nc\n"


@pytest.mark.parametrize("low_first", [True, False])
async def test_same_changes_are_kept_once_and_a_different_one_is_recorded(
    tmp_path: Path, low_first: bool
) -> None:
    base = "".join(f"{n}\n" for n in range(1, 9))
    online = base.replace("2\n", "two\n").replace("5\n", "five\n").replace("7\n", "seven\n")
    offline = base.replace("2\n", "two\n").replace("5\n", "FIVE\n").replace("7\n", "seven\n")
    async with both(tmp_path, base, online, offline, low_first=low_first) as j:
        assert j.record is not None
        [region] = j.record.regions
        assert (region.base_start, region.base_end) == (4, 5)
        assert (region.ours_text, region.theirs_text) == ("FIVE\n", "five\n")
        text = await j.project.text()
        assert j.record.merged_text == text
        assert text.count("two\n") == 1 and text.count("seven\n") == 1
        assert text.startswith("1\ntwo\n3\n4\n") and text.endswith("6\nseven\n8\n")


@pytest.mark.parametrize("low_first", [True, False])
async def test_the_same_line_added_at_the_end_is_there_once(
    tmp_path: Path, low_first: bool
) -> None:
    async with both(tmp_path, "a\nb\n", "a\nb\nc\n", "a\nb\nc\n", low_first=low_first) as j:
        assert j.record is None
        assert await j.project.text() == "a\nb\nc\n"


async def test_the_same_deletion_needs_nothing(tmp_path: Path) -> None:
    async with both(tmp_path, "a\nb\nc\n", "a\nc\n", "a\nc\n", low_first=True) as j:
        assert (j.record, j.update) == (None, None)
        assert await j.project.text() == "a\nc\n"


async def test_judging_the_branch_again_deletes_nothing_more(tmp_path: Path) -> None:
    """A branch re-sent (its updates duplicates now) or judged again after a restart:
    the branch's copy is gone already, so no update, and still no record."""
    async with both(tmp_path, "a\nb\nc\n", "a\nB\nc\n", "a\nB\nc\n", low_first=True) as j:
        assert j.update is not None
        again = [Appended(a.versionstamp, True) for a in j.branch]
        assert await j.project.judge(again, "laptop") == (None, None)
        assert await j.project.text() == "a\nB\nc\n"


async def test_two_offline_branches_with_the_same_change_come_out_once(tmp_path: Path) -> None:
    async with project(tmp_path, "a\nb\nc\n") as p:
        desk, laptop, tablet = p.device(2), p.device(3), p.device(4)
        for device, user in ((desk, "desk"), (laptop, "laptop"), (tablet, "tablet")):
            device.save("a\nB\nc\n")
            branch = await p.commit(device.take(), user)
            if user != "desk":
                record, _ = await p.judge(branch, user)
                assert record is None
        assert await p.text() == "a\nB\nc\n"


async def test_a_same_change_the_other_side_edited_further_is_recorded(tmp_path: Path) -> None:
    """Both changed ``b`` to ``B``, and a third device then made it ``Bx``: the sides
    differ there, so the region is judged as before (recorded, nothing deleted)."""
    async with project(tmp_path, "a\nb\nc\n") as p:
        desk, phone, laptop = p.device(2), p.device(3), p.device(4)
        desk.save("a\nB\nc\n")
        update = desk.take()
        await p.commit(update, "desk")
        phone.doc.apply_update(update[0])
        phone.save("a\nBx\nc\n")
        await p.commit(phone.take(), "phone")
        laptop.save("a\nB\nc\n")
        record, fix = await p.judge(await p.commit(laptop.take(), "laptop"), "laptop")
        assert fix is None
        assert record is not None
        [region] = record.regions
        assert (region.ours_text, region.theirs_text) == ("B\n", "Bx\n")


async def test_nothing_is_deleted_when_the_other_copy_went_since(tmp_path: Path) -> None:
    """Someone removed the other side's copy after the branch was committed and before
    it was judged: deleting the branch's copy would lose the change, so it stays."""
    async with project(tmp_path, "a\nb\nc\n") as p:
        desk, laptop = p.device(2), p.device(3)
        desk.save("a\nB\nc\n")
        await p.commit(desk.take(), "desk")
        laptop.save("a\nB\nc\n")
        branch = await p.commit(laptop.take(), "laptop")
        fixer = Device((await p.history.replay(p.doc)).state(), 9)
        assert str(fixer.text).count("B") == 2
        with fixer.doc.transaction():  # every character goes, the desk's copy too
            fixer.text.clear()
            fixer.text += "a\nB\nc\n"
        await p.commit(fixer.take(), "phone")
        _, fix = await p.judge(branch, "laptop")
        assert fix is None


@pytest.mark.parametrize("low_first", [True, False])
async def test_the_same_change_made_by_different_edits(tmp_path: Path, low_first: bool) -> None:
    """Both made ``b`` into ``B``, one by replacing ``b``, the other ``b`` and its line
    ending. When the branch's edit is the narrower one, deleting its ``B`` leaves the
    change once; when it is the wider one, it would join ``B`` and ``c`` (its line
    ending went with it), so the region is recorded as before and nothing deleted."""

    def whole(device: Device) -> None:
        del device.text[2:4]
        device.text.insert(2, "B\n")

    def part(device: Device) -> None:
        del device.text[2:3]
        device.text.insert(2, "B")

    for branch_edit, other_edit, kept in ((part, whole, True), (whole, part, False)):
        folder = tmp_path / branch_edit.__name__
        folder.mkdir()
        async with project(folder, "a\nb\nc\n") as p:
            desk, laptop = p.device(2 if low_first else 3), p.device(3 if low_first else 2)
            other_edit(desk)
            await p.commit(desk.take(), "desk")
            branch_edit(laptop)
            record, update = await p.judge(await p.commit(laptop.take(), "laptop"), "laptop")
            if kept:
                assert (record, await p.text()) == (None, "a\nB\nc\n")
            else:
                assert update is None
                assert record is not None
                assert [(r.ours_text, r.theirs_text) for r in record.regions] == [("B\n", "B\n")]
                assert await p.text() == "a\nBB\nc\n"
