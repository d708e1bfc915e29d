"""A room that unloads holding its document flagged deleted marks the document deleted at
its cursor, and the document list says so (``DocInfo.deleted``), only when the room's
document is exactly the log up to the head: never for a document another instance
changed since (the room behind the head), nor while a commit of this instance that the
room's cursor passed has not reached the room yet, nor after an update the room could
not apply. A real SQLite store, real rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from crdt.history import Append, DocRef, History
from crdt.kv import Engine
from crdt.records import Record
from server.metrics import Metrics
from server.rooms import Room, Rooms

INSTANCE = "inst-a"


class Peer:
    def __init__(self, peer_id: int) -> None:
        self.id = peer_id

    def send(self, frame: bytes) -> None:
        pass


class Editor:
    """One device's doc handing out an update per change."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()

    def _change(self, change: Any) -> bytes:
        before = self.doc.get_state()
        change()
        return self.doc.get_update(before)

    def type(self, s: str) -> bytes:
        return self._change(lambda: self.doc.get("content", type=Text).insert(0, s))

    def flag(self, deleted: bool) -> bytes:
        return self._change(lambda: self.doc.get("weft", type=Map).__setitem__("deleted", deleted))


@pytest.fixture
async def setup(kv: Engine) -> AsyncIterator[tuple[History, Rooms, Metrics]]:
    history = History(kv)
    await history.init()
    metrics = Metrics()
    rooms = Rooms(history, metrics, instance=INSTANCE, idle_seconds=0)  # unload on leave
    yield history, rooms, metrics
    await rooms.close()


async def deleted_doc(history: History, path: str = "a.md") -> tuple[DocRef, Editor]:
    """A document written and then deleted by another instance's connection."""
    ref = await history.doc("acme", "p", path, create=True)
    editor = Editor()
    for update in (editor.type("text"), editor.flag(True)):
        await history.append([Append(ref, update, session="inst-b/1")])
    return ref, editor


async def listed(history: History) -> dict[str, bool]:
    return {info.path: info.deleted for info in await history.docs("acme", "p")}


async def unload(rooms: Rooms, room: Room, peer: Peer) -> None:
    rooms.leave(room, peer, ())  # (idle_seconds 0: unloaded at once)
    assert rooms.get(room.ref) is None
    await rooms.write_marks()


async def test_a_room_unloading_a_deleted_document_marks_it_at_its_head(
    setup: tuple[History, Rooms, Metrics],
) -> None:
    history, rooms, metrics = setup
    ref, _ = await deleted_doc(history)
    live = await history.doc("acme", "p", "live.md", create=True)
    await history.append([Append(live, Editor().type("alive"), session="inst-b/1")])
    assert await listed(history) == {"a.md": False, "live.md": False}  # not known yet
    for doc in (ref, live):
        room = await rooms.join(doc, peer := Peer(1))
        await unload(rooms, room, peer)
    assert await listed(history) == {"a.md": True, "live.md": False}
    assert metrics.deleted_marks.get() == 1
    room = await rooms.join(ref, peer)  # unloaded again, unchanged: not written again
    await unload(rooms, room, peer)
    assert metrics.deleted_marks.get() == 1


async def test_no_mark_when_another_instance_changed_the_document_past_the_room(
    engines: tuple[Engine, Engine],
) -> None:
    """Two instances on one SQLite file: the other one brings the document back; this
    room never read it (its watcher stopped, as if it had not woken yet) and unloads
    holding it deleted. The mark would name the room's cursor, which is no longer the
    head: none is written."""
    history, other = History(engines[0]), History(engines[1])
    metrics = Metrics()
    rooms = Rooms(history, metrics, instance=INSTANCE, idle_seconds=0)
    try:
        ref, editor = await deleted_doc(other)
        room = await rooms.join(ref, peer := Peer(1))
        assert room.watcher is not None
        room.watcher.cancel()
        await other.append([Append(ref, editor.flag(False), session="inst-b/1")])
        assert room.deleted and room.deleted_at() == room.cursor  # what the room knows
        await unload(rooms, room, peer)
        assert await listed(history) == {"a.md": False}
        assert metrics.deleted_marks.get() == 0
    finally:
        await rooms.close()


async def test_no_mark_while_an_own_commit_the_cursor_passed_waits_to_be_applied(
    setup: tuple[History, Rooms, Metrics],
) -> None:
    """This instance's connection brings the document back: committed, its head read by
    the room (which skips its own records, as apply_local brings them), and the room
    unloads before apply_local ran. The cursor is the head, yet the room's document
    lacks the revival: no mark."""
    history, rooms, metrics = setup
    ref, editor = await deleted_doc(history)
    room = await rooms.join(ref, peer := Peer(1))
    [appended] = await history.append([Append(ref, editor.flag(False), session=f"{INSTANCE}/7")])
    assert await rooms.catch_up_to_head(room)
    assert room.cursor == appended.versionstamp and room.deleted  # at head, still deleted
    assert room.deleted_at() is None
    await unload(rooms, room, peer)
    assert await listed(history) == {"a.md": False}
    assert metrics.deleted_marks.get() == 0


async def test_an_own_commit_applied_lets_the_room_mark_again(
    setup: tuple[History, Rooms, Metrics],
) -> None:
    """The same, deleted again by this instance and applied: the room is at head with
    nothing waiting, and marks it."""
    history, rooms, _ = setup
    ref, editor = await deleted_doc(history)
    room = await rooms.join(ref, peer := Peer(1))
    for update in (editor.flag(False), editor.flag(True)):
        [appended] = await history.append([Append(ref, update, session=f"{INSTANCE}/7")])
        room.apply_local(update, appended, sender=1)
    assert await rooms.catch_up_to_head(room)
    assert room.cursor == appended.versionstamp and room.deleted_at() == room.cursor
    await unload(rooms, room, peer)
    assert await listed(history) == {"a.md": True}


async def test_no_mark_after_an_update_the_room_could_not_apply(
    setup: tuple[History, Rooms, Metrics],
) -> None:
    history, rooms, _ = setup
    ref, _ = await deleted_doc(history)
    room = await rooms.join(ref, Peer(1))
    assert room.cursor is not None
    record = Record(room.cursor, b"\x07\x07", "u", "c", "inst-b/1", 0)  # does not decode
    assert room.apply_remote([record]) == 0
    assert room.deleted and room.deleted_at() is None


async def test_no_mark_when_the_room_applied_an_own_commit_before_earlier_ones(
    setup: tuple[History, Rooms, Metrics],
) -> None:
    """One client's updates reach the store out of order: its second and third through
    another instance (pending: they wait for its first), then its first through this
    one, which the room applies at once, before the tail reader brings the other two.
    In the room's order every update integrates and the flag reads true; a replay, in
    the log's order, leaves the third pending (yrs does not retry it) and reads the
    document alive. The room applied the log in another order: no mark."""
    history, rooms, metrics = setup
    ref = await history.doc("acme", "p", "a.md", create=True)
    await history.append([Append(ref, Editor().type("hello "), session="inst-b/1")])
    room = await rooms.join(ref, peer := Peer(1))
    assert room.watcher is not None
    room.watcher.cancel()  # the tail is read below, once the own commit is applied
    client = Editor()
    client.doc = Doc(client_id=100)
    first, *later = client.flag(False), client.type("ab"), client.flag(True)
    await history.append([Append(ref, update, session="inst-b/1") for update in later])
    [appended] = await history.append([Append(ref, first, session=f"{INSTANCE}/7")])
    room.apply_local(first, appended, sender=1)
    assert await rooms.catch_up_to_head(room)
    assert room.cursor == appended.versionstamp and room.deleted and not room.pending
    replayed = await history.replay(ref, appended.versionstamp)
    assert replayed.doc.get("weft", type=Map).get("deleted") is not True  # the log's order
    assert room.deleted_at() is None
    await unload(rooms, room, peer)
    assert await listed(history) == {"a.md": False}
    assert metrics.deleted_marks.get() == 0
