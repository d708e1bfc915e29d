"""A room can hold an update whose dependency never reached the server (the log keeps
arrival order). ``Doc.get_update`` leaves such an update out; a joiner's first state
must still carry it, as Yjs's own server does, or the joiner never gets it: when the
dependency arrives, only the dependency is broadcast."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

import crdt.history as history_module
from crdt.codec import SyncUpdate
from crdt.history import Append, History
from crdt.kv.sqlite import SQLiteEngine
from server import rooms
from server.app import create_app
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def two_edits() -> tuple[bytes, bytes]:
    """ "hello", then " world" built on it."""
    doc: Doc[Any] = Doc(client_id=41)
    text = doc.get("content", type=Text)
    updates = []
    for part in ("hello", " world"):
        before = doc.get_state()
        text.insert(len(text), part)
        updates.append(doc.get_update(before))
    return updates[0], updates[1]


@pytest.mark.parametrize(("snapshot", "threaded"), [(False, False), (True, False), (False, True)])
async def test_a_joiner_gets_what_the_room_holds_pending(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    snapshot: bool,
    threaded: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if threaded:  # a long tail is checked in a thread: here, any
        monkeypatch.setattr(rooms, "PENDING_INLINE", 0)
    monkeypatch.setattr(history_module, "PENDING_DEFER", 1)  # snapshot it all the same
    first, second = two_edits()
    store = tmp_path / "weft.db"
    async with SQLiteEngine(store) as kv:
        history = History(kv, snapshot_every=3)
        await history.init()
        ref = await history.doc("acme", "site", "a.md", create=True)
        await history.append([Append(ref, second)])  # before what it builds on
        if snapshot:  # the pending update kept in a snapshot rather than in the tail
            other: Doc[Any] = Doc(client_id=42)
            before = other.get_state()
            other.get("notes", type=Text).insert(0, "x")
            await history.append([Append(ref, other.get_update(before))])
            await history.append([Append(ref, b"\x00\x00")])
            assert await history.snapshot_if_due(ref) is not None
    async with serve_in_process(create_app(Settings(store=f"sqlite:///{store}"))) as server:
        url = f"{server.ws_url}/acme/site/a.md"
        early = await YPeer.connect(http, url)  # joins while " world" is pending
        assert str(early) == ""
        writer = await YPeer.connect(http, url)
        await writer.send(SyncUpdate(first))  # the dependency arrives at last
        await early.wait_text("hello world")
        late = await YPeer.connect(http, url)
        assert str(late) == "hello world"


async def test_a_joiner_gets_an_update_that_went_pending_while_the_room_was_loaded(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    first, second = two_edits()
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        url = f"{server.ws_url}/acme/site/a.md"
        writer = await YPeer.connect(http, url)
        watcher = await YPeer.connect(http, url)
        await writer.send(SyncUpdate(second))  # before what it builds on: held pending
        await watcher.until(lambda: SyncUpdate(second) in watcher.received)  # applied
        late = await YPeer.connect(http, url)  # joins while " world" is pending
        assert str(late) == ""
        await writer.send(SyncUpdate(first))  # the dependency: only it is broadcast
        await late.wait_text("hello world")
        await watcher.wait_text("hello world")
