"""A re-sent update that is in the log but not in the room (its first commit's outcome was
lost) is applied and broadcast when it comes again, not dropped as a duplicate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from crdt.codec import SyncUpdate
from crdt.history import Append
from server.app import create_app
from server.appkeys import HISTORY
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


async def test_a_resent_update_missing_from_the_room_reaches_the_peers(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", instance="one")
    app = create_app(settings)
    async with serve_in_process(app) as server:
        url = f"{server.ws_url}/acme/site/lost.txt"
        sender = await YPeer.connect(http, url, weft=True)
        other = await YPeer.connect(http, url)
        doc: Doc[Any] = Doc()
        doc.get("content", type=Text).insert(0, "committed, ack lost")
        update = doc.get_update()
        # As if this instance committed it and then lost the outcome: in the log, written
        # by this instance (so its room watcher skips it), never applied to the room.
        history = app[HISTORY]
        ref = await history.doc("acme", "site", "lost.txt")
        session = f"{settings.instance}/999"
        await history.append([Append(ref, update, "anonymous", "c", session)])
        await sender.send(SyncUpdate(update))  # the client re-sends it
        await sender.until(lambda: len(sender.acks) == 1)
        assert sender.acks[0].versionstamp == await history.head(ref)
        await other.wait_text("committed, ack lost")
        # A true duplicate (already in the room) is not broadcast again.
        before = len(other.received)
        await sender.send(SyncUpdate(update))
        await sender.until(lambda: len(sender.acks) == 2)
        sender.doc.apply_update(update)
        await sender.edit(0, "new: ")  # a marker that must reach ``other`` right after
        await other.wait_text("new: committed, ack lost")
        assert len(other.received) == before + 1
