"""An edit against a deletion, judged on the server: the document comes back with every
edit where it was made, once, and a later deliberate delete stands. Real server app in
process (aiohttp over real sockets), real SQLite store, y-websocket peers speaking the
weft extension (``?weft=2``); the scenarios come from a review of the first version,
which re-inserted one side's text (doubled text, lost edits, edits landing outside)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Map

from crdt import branches
from crdt.codec import Base, Checked, SyncStep2, SyncUpdate
from crdt.conflicts import ConflictRecord
from crdt.history import DocRef
from crdt.versions import read_doc
from crdt.versionstamp import ZERO, Versionstamp
from server.app import create_app
from server.appkeys import HISTORY
from server.config import Settings
from server.testing import InProcessServer, YPeer, client_session, serve_in_process

pytestmark = pytest.mark.functional

BASE = "".join(f"line {i}\n" for i in range(1, 6))
# Two appends at one place: their order is the CRDT's (by client id), either is right.
BOTH = {BASE + "alpha\ngamma\n", BASE + "gamma\nalpha\n"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, InProcessServer]]:
    store = f"sqlite:///{tmp_path / 'weft.db'}"
    app = create_app(Settings(store=store, bring_back_edited=True))
    async with serve_in_process(app) as server:
        yield app, server


def _change(peer: YPeer, edit: Any) -> bytes:
    before = peer.doc.get_state()
    with peer.doc.transaction():
        edit(peer)
    return peer.doc.get_update(before)


def append(peer: YPeer, new: str) -> bytes:
    return _change(peer, lambda p: p.text.insert(len(p.text), new))


def delete(peer: YPeer, *, empty: bool = False) -> bytes:
    """What ``weft sync`` does for a deleted file (``empty``: what it did before)."""

    def edit(p: YPeer) -> None:
        p.doc.get("weft", type=Map)["deleted"] = True
        if empty:
            del p.text[0 : len(p.text)]

    return _change(peer, edit)


def replace_line(peer: YPeer, number: int, new: str) -> bytes:
    def edit(p: YPeer) -> None:
        lines = str(p.text).splitlines(keepends=True)
        start = sum(len(x) for x in lines[: number - 1])
        del p.text[start : start + len(lines[number - 1])]
        p.text.insert(start, new)

    return _change(peer, edit)


class Scene:
    """A document holding BASE and peers A, C, D that have it (D deletes)."""

    def __init__(self, app: Any, server: InProcessServer, http: aiohttp.ClientSession) -> None:
        self.app, self.server, self.http = app, server, http
        self.peers: dict[str, YPeer] = {}
        self.base = ZERO
        self.ref: DocRef | None = None

    async def open(self, name: str) -> Scene:
        url = f"{self.server.ws_url}/acme/site/{name}"
        writer = await YPeer.connect(self.http, url, weft=True, device="w")
        await writer.append(BASE)
        await writer.until(lambda: len(writer.acks) == 1)
        self.base = writer.acks[0].versionstamp
        for device in "ACD":
            peer = await YPeer.connect(self.http, f"{url}?weft=2&device={device}")
            assert str(peer) == BASE
            self.peers[device] = peer
        self.ref = await self.app[HISTORY].doc("acme", "site", name)
        return self

    async def online(self, device: str, update: bytes) -> None:
        peer = self.peers[device]
        count = len(peer.acks)
        await peer.send(SyncUpdate(update))
        await peer.until(lambda: len(peer.acks) == count + 1)

    async def branch(self, device: str, update: bytes, *, end: bool = True) -> None:
        """Send an offline edit as a branch on the shared base (and end it)."""
        peer = self.peers[device]
        await peer.send(Base(self.base))
        await self.online(device, update)
        if end:
            await peer.send(Base(ZERO))

    async def verdict(self, device: str) -> Checked:
        peer = self.peers[device]
        await peer.until(lambda: any(isinstance(m, Checked) for m in peer.received))
        return next(m for m in peer.received if isinstance(m, Checked))

    async def head(self) -> tuple[str, bool]:
        return read_doc((await self.app[HISTORY].replay(self.ref)).doc)

    async def records(self, count: int) -> list[ConflictRecord]:
        for _ in range(250):
            found = (await branches.list_conflicts(self.app[HISTORY], "acme", "site")).records
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} conflict record(s) not made")


async def test_two_offline_edits_against_one_deletion_both_stay(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    scene = await Scene(*served, http).open("two.txt")
    alpha, gamma = append(scene.peers["A"], "alpha\n"), append(scene.peers["C"], "gamma\n")
    await scene.online("D", delete(scene.peers["D"]))
    await scene.branch("A", alpha)
    first = await scene.verdict("A")
    assert "brought back" in first.summary
    await scene.branch("C", gamma)
    second = await scene.verdict("C")  # back by now: C's append meets A's, at one place
    assert second.summary == "1 region changed on both sides (base after line 5)"
    text, deleted = await scene.head()
    assert text in BOTH and not deleted
    records = await scene.records(2)
    assert [(r.deleted, r.restored) for r in records] == [("theirs", True), ("", False)]
    assert records[0].merged_text == BASE + "alpha\n"  # as of its judgement


async def test_two_branches_ending_together_bring_it_back_once(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    scene = await Scene(*served, http).open("together.txt")
    alpha, gamma = append(scene.peers["A"], "alpha\n"), append(scene.peers["C"], "gamma\n")
    await scene.online("D", delete(scene.peers["D"]))
    await scene.branch("A", alpha, end=False)
    await scene.branch("C", gamma, end=False)
    await asyncio.gather(*(scene.peers[d].send(Base(ZERO)) for d in "AC"))
    await scene.verdict("A")
    await scene.verdict("C")
    await scene.records(2)
    text, deleted = await scene.head()
    assert text in BOTH and not deleted


async def test_a_later_offline_edit_lands_where_it_was_made(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    scene = await Scene(*served, http).open("late.txt")
    alpha = append(scene.peers["A"], "alpha\n")
    three = replace_line(scene.peers["C"], 3, "LINE THREE by C\n")
    await scene.online("D", delete(scene.peers["D"]))
    await scene.branch("A", alpha)
    await scene.verdict("A")
    await scene.branch("C", three)
    await scene.verdict("C")
    expected = BASE.replace("line 3\n", "LINE THREE by C\n") + "alpha\n"
    assert await scene.head() == (expected, False)


async def test_a_delete_made_after_the_branch_stands(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    """The first branch brings the document back; the user deletes it again (online);
    a branch judged later against the first deletion leaves it deleted, and says so."""
    scene = await Scene(*served, http).open("again.txt")
    alpha, gamma = append(scene.peers["A"], "alpha\n"), append(scene.peers["C"], "gamma\n")
    await scene.online("D", delete(scene.peers["D"]))
    await scene.branch("C", gamma, end=False)  # C's branch ends later
    await scene.branch("A", alpha)
    await scene.verdict("A")
    assert (await scene.head())[1] is False
    peer = scene.peers["D"]  # has seen it back (else its delete is concurrent to that)
    await peer.until(lambda: peer.doc.get("weft", type=Map).get("deleted") is False)
    await scene.online("D", delete(scene.peers["D"]))  # deleted again, on purpose
    await scene.peers["C"].send(Base(ZERO))
    verdict = await scene.verdict("C")
    assert "stays deleted" in verdict.summary, verdict
    assert (await scene.head())[1] is True


async def test_a_deletion_that_emptied_the_text_stays_deleted(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    """Clients before this change emptied a deleted file's document: bringing it back
    would show only the edits, so it stays deleted and the record holds the text."""
    scene = await Scene(*served, http).open("emptied.txt")
    alpha = append(scene.peers["A"], "alpha\n")
    await scene.online("D", delete(scene.peers["D"], empty=True))
    await scene.branch("A", alpha)
    verdict = await scene.verdict("A")
    assert "stays deleted" in verdict.summary
    [record] = await scene.records(1)
    assert record.emptied and not record.restored
    assert record.regions[0].ours_text == BASE + "alpha\n"
    assert (await scene.head())[1] is True
    assert Versionstamp.from_hex(record.id) == scene.peers["A"].acks[-1].versionstamp


async def test_a_deletion_after_others_rewrote_every_line_did_not_empty_it(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    """Found in a second review: 'emptied' was judged from the deleting side's whole
    text, so a side where others had rewritten every line before a (text-keeping)
    deletion counted as emptied, and the edit stayed deleted."""
    scene = await Scene(*served, http).open("rewritten.txt")
    alpha = append(scene.peers["A"], "alpha\n")
    rewritten = "".join(f"LINE {i}\n" for i in range(1, 6))

    def rewrite(p: YPeer) -> None:
        del p.text[0 : len(p.text)]
        p.text.insert(0, rewritten)

    await scene.online("C", _change(scene.peers["C"], rewrite))
    peer = scene.peers["D"]
    await peer.until(lambda: str(peer) == rewritten)
    await scene.online("D", delete(peer))
    await scene.branch("A", alpha)
    assert "brought back" in (await scene.verdict("A")).summary
    [record] = await scene.records(1)
    assert not record.emptied and record.restored
    text, deleted = await scene.head()  # (alpha's place beside C's text: the CRDT's)
    assert text in (rewritten + "alpha\n", "alpha\n" + rewritten) and not deleted


async def test_another_map_entry_set_after_the_branch_is_no_later_delete(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    """Found in a second review: any map entry committed after the branch (an editor's
    own Y.Map) counted as a later delete and kept the document deleted."""
    scene = await Scene(*served, http).open("map.txt")
    alpha = append(scene.peers["A"], "alpha\n")
    await scene.online("D", delete(scene.peers["D"]))
    await scene.branch("A", alpha, end=False)
    comment = _change(scene.peers["C"], lambda p: p.doc.get("comments", type=Map).update({"x": 1}))
    await scene.online("C", comment)
    await scene.peers["A"].send(Base(ZERO))
    assert "brought back" in (await scene.verdict("A")).summary
    assert (await scene.head())[1] is False


async def test_an_offline_branch_of_deletions_only_is_judged(
    served: tuple[Any, InProcessServer], http: aiohttp.ClientSession
) -> None:
    """Found in a second review: a weft client's first send after ``Base`` is a
    SyncStep2; a branch that only deleted a line someone else rewrote since held only
    deletions the room had, and was dropped as a reconnect's no-op answer: no record,
    the deletion never stored. Inside a branch it is stored and judged."""
    scene = await Scene(*served, http).open("lines.txt")
    a = scene.peers["A"]
    lines = str(a.text).splitlines(keepends=True)
    start = sum(len(x) for x in lines[:2])
    drop = _change(a, lambda p: p.text.__delitem__(slice(start, start + len(lines[2]))))
    await scene.online("C", replace_line(scene.peers["C"], 3, "LINE THREE by C\n"))
    await a.send(Base(scene.base))
    await a.send(SyncStep2(drop))
    await a.until(lambda: len(a.acks) >= 1)
    await a.send(Base(ZERO))
    verdict = await scene.verdict("A")
    assert verdict.conflict != ZERO, verdict


async def test_by_default_an_edit_against_a_deletion_is_recorded_and_said_only(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Without ``bring_back_edited`` the deletion stands: the record holds the edited
    text, and the editing device is told it stays deleted."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        scene = await Scene(app, server, http).open("default.txt")
        alpha = append(scene.peers["A"], "alpha\n")
        await scene.online("D", delete(scene.peers["D"]))
        await scene.branch("A", alpha)
        verdict = await scene.verdict("A")
        assert verdict.summary == (
            "edited here while deleted elsewhere: the document stays deleted; "
            "the edited text is in this record"
        )
        [record] = await scene.records(1)
        assert record.deleted == "theirs" and not record.restored and not record.emptied
        assert record.regions[0].ours_text == BASE + "alpha\n"
        assert (await scene.head())[1] is True
