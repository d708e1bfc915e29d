"""A room follows its document's head on a real SQLite store: its own commits move its
cursor without reading the log; anything written by somebody else is read and applied,
also when it lands just before one of the room's own commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt.history import Append, DocRef, Head, History
from crdt.kv import Engine
from server.metrics import Metrics
from server.rooms import Room, Rooms

INSTANCE = "inst-a"


class Peer:
    def __init__(self, peer_id: int) -> None:
        self.id = peer_id
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


class Editor:
    """One device's doc handing out an update per edit."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)

    def type(self, s: str) -> bytes:
        before = self.doc.get_state()
        self.text += s
        return self.doc.get_update(before)


@pytest.fixture
async def setup(kv: Engine) -> AsyncIterator[tuple[History, Rooms, DocRef, Metrics]]:
    history = History(kv)
    await history.init()
    metrics = Metrics()
    rooms = Rooms(history, metrics, instance=INSTANCE)
    ref = await history.doc("acme", "site", "a.txt", create=True)
    yield history, rooms, ref, metrics
    await rooms.close()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def local(history: History, room: Room, ref: DocRef, update: bytes) -> None:
    """What a connection does: commit under this instance's session, then apply_local."""
    [appended] = await history.append([Append(ref, update, session=f"{INSTANCE}/1")])
    room.apply_local(update, appended, sender=1)


async def head_of(history: History, ref: DocRef) -> Head:
    raw = await history.kv.read(lambda tr: tr.get(ref.key("head")))
    assert raw is not None
    return Head.decode(raw)


async def test_own_commits_move_the_cursor_without_reading_the_log(
    setup: tuple[History, Rooms, DocRef, Metrics],
) -> None:
    history, rooms, ref, metrics = setup
    await history.append([Append(ref, Editor().type("x"), session="other/1")])  # before load
    room = await rooms.join(ref, Peer(7))
    await asyncio.sleep(0.1)  # the watcher's first look at the head
    before = metrics.tail_reads.get()
    editor = Editor()
    for ch in "hello":
        await local(history, room, ref, editor.type(ch))
    head = await head_of(history, ref)
    await until(lambda: room.cursor == head.versionstamp)
    assert head.count == 6 and room.count == 6
    assert metrics.tail_reads.get() == before  # nothing read: every update was the room's
    assert room.own == set()


async def test_a_foreign_commit_just_before_an_own_one_is_read_and_applied(
    setup: tuple[History, Rooms, DocRef, Metrics],
) -> None:
    history, rooms, ref, metrics = setup
    room = await rooms.join(ref, peer := Peer(7))
    mine, theirs = Editor(), Editor()
    await local(history, room, ref, mine.type("a"))
    # Another instance commits, then this one, with no chance for the watcher to run
    # in between: the head it wakes up to is the room's own commit.
    foreign = theirs.type("B")
    await history.append([Append(ref, foreign, session="inst-b/9")])
    await local(history, room, ref, mine.type("c"))
    head = await head_of(history, ref)
    await until(lambda: room.cursor == head.versionstamp)
    assert room.count == head.count == 3
    assert metrics.remote_updates.get() == 1 and metrics.tail_reads.get() >= 1
    text = str(room.doc.get("content", type=Text))
    assert sorted(text) == ["B", "a", "c"]
    assert any(foreign in frame for frame in peer.frames)  # broadcast to the room's peer


async def test_a_head_without_a_count_is_followed_by_reading_the_log(
    setup: tuple[History, Rooms, DocRef, Metrics],
) -> None:
    """Heads written before format 1.2 carry no count: the room reads the tail."""
    history, rooms, ref, metrics = setup
    room = await rooms.join(ref, Peer(7))
    room.count = None  # as loaded from an older head
    editor = Editor()
    await local(history, room, ref, editor.type("z"))
    head = await head_of(history, ref)
    await until(lambda: room.cursor == head.versionstamp)
    assert metrics.tail_reads.get() >= 1 and metrics.remote_updates.get() == 0
    assert str(room.doc.get("content", type=Text)) == "z"
