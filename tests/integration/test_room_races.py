"""Races around commits in flight: a room's unload and load, the writer shutting down.
The server, its SQLite store and the sockets are real; only the timing is arranged
(``History.append`` and ``History.replay`` held at chosen points, the writer marked
closing)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from crdt.codec import Base, SyncUpdate
from crdt.history import Append, DocRef
from crdt.replaying import Replayed
from crdt.versionstamp import Versionstamp
from server.app import create_app
from server.appkeys import HISTORY, ON_BRANCH, ROOMS, WRITER
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_commit_landing_while_its_room_reloads_reaches_the_new_room(
    tmp_path: Path,
) -> None:
    """A's update is in the writer when A leaves and the room unloads; B's join starts
    a load that reads the head before the commit lands, and the commit lands before the
    load ends: the new room must still get it (from the log), and so must B and C."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", room_idle_seconds=0))
    history = app[HISTORY]
    commit_gate, replay_gate = asyncio.Event(), asyncio.Event()
    in_append, in_replay = asyncio.Event(), asyncio.Event()
    hold = False
    append_then, replay = history.append_then, history.replay
    held: list[asyncio.Task[None]] = []

    def held_append_then(items: Sequence[Append], done: Callable[..., None]) -> None:
        if not hold:
            append_then(items, done)
            return

        async def later() -> None:
            await commit_gate.wait()
            append_then(items, done)

        in_append.set()
        held.append(asyncio.ensure_future(later()))

    async def held_replay(doc: DocRef, at: Versionstamp | None = None) -> Replayed:
        if hold:
            in_replay.set()
            await replay_gate.wait()
        return await replay(doc, at)

    history.append_then = held_append_then  # type: ignore[method-assign]
    history.replay = held_replay  # type: ignore[method-assign]
    async with serve_in_process(app) as server, client_session() as http:
        url = f"{server.ws_url}/acme/site/race.txt"
        a = await YPeer.connect(http, url)
        await a.append("base ")
        watcher = await YPeer.connect(http, url)
        await watcher.wait_text("base ")  # committed and applied
        await watcher.close()
        hold = True
        await a.append("late")  # taken by the writer, held before its commit
        await asyncio.wait_for(in_append.wait(), 5)
        await a.close()
        await eventually(lambda: len(app[ROOMS]) == 0)  # the room unloaded
        joining = asyncio.create_task(YPeer.connect(http, url))
        await asyncio.wait_for(in_replay.wait(), 5)  # the load has read the head
        commit_gate.set()  # the commit lands while the room loads
        await asyncio.sleep(0.2)
        hold = False
        replay_gate.set()
        b = await joining
        await b.wait_text("base late")
        c = await YPeer.connect(http, url)
        assert str(c) == "base late"


async def test_a_branch_is_reported_when_the_writer_closes_before_its_last_update(
    tmp_path: Path,
) -> None:
    """A weft client's offline branch is reported (for conflict detection) once all its
    updates are settled; one the writer refused at shutdown, before storing it, must
    not keep the committed rest of the branch from being reported."""
    reports: list[object] = []

    async def on_branch(
        doc: DocRef, base: Versionstamp, appended: object, who: object, device: object
    ) -> None:
        reports.append(appended)

    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    app[ON_BRANCH] = on_branch
    async with serve_in_process(app) as server, client_session() as http:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/branch.txt", weft=True)
        await peer.edit(0, "base")
        await peer.until(lambda: len(peer.acks) == 1)
        await peer.send(Base(peer.acks[0].versionstamp))
        await peer.append(" one")  # committed, in the branch
        await peer.until(lambda: len(peer.acks) == 2)
        app[WRITER]._closing = True  # as Writer.close() does first: submits now fail
        try:
            await peer.append(" two")
            code, _ = await peer.closed()
            assert code == 1001
            await eventually(lambda: len(reports) == 1)
        finally:
            app[WRITER]._closing = False


async def test_a_commit_seen_in_the_log_before_its_sender_hears_of_it_is_sent_once(
    tmp_path: Path,
) -> None:
    """The store tells the room's head watcher about a commit before the writer's caller
    resumes (the room's tail reader can read the record first): it must still reach the
    other peers once, through apply_local, not a second time from the tail."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    history = app[HISTORY]
    kv: Any = history.kv  # SQLite: it has transact_then
    transact_then, late = kv.transact_then, [0]

    def late_to_hear(fn: Any, callback: Callable[[Any], None]) -> None:
        def hears(outcome: Any) -> None:
            late[0] += 1  # the loop runs the watcher (and its tail read) first
            asyncio.get_running_loop().call_later(0.2, callback, outcome)

        transact_then(fn, hears)

    kv.transact_then = late_to_hear
    async with serve_in_process(app) as server, client_session() as http:
        url = f"{server.ws_url}/acme/site/once.txt"
        a = await YPeer.connect(http, url)
        b = await YPeer.connect(http, url)
        update = await a.append("x")
        await b.wait_text("x")
        await asyncio.sleep(0.5)  # a second copy, if any, has come by now
        with contextlib.suppress(TimeoutError):
            await b.next(0.2)
        assert [m for m in b.received if m == SyncUpdate(update)] == [SyncUpdate(update)]
        assert late[0] >= 1  # its commit was heard of late
