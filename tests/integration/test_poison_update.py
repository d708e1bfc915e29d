"""A decodable update that makes pycrdt panic against existing state (found by fuzzing):
it must neither escape as a BaseException nor make a stored document unreadable; the
server closes its sender with 1007 and every joiner and REST read still work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Map, Text

from crdt import ydoc
from crdt.codec import SyncUpdate
from crdt.history import Append, History
from crdt.kv.sqlite import SQLiteEngine
from server.app import create_app
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process

# Mutated from the 30 updates below; decodes, applies to an empty Doc, panics after them.
POISON = bytes.fromhex("0101071d2801046d65742d0961036b3134017c41600000010704010206040c031201")


def history_of_edits() -> tuple[Doc[Any], list[bytes]]:
    doc: Doc[Any] = Doc(client_id=7)
    text = doc.get("content", type=Text)
    meta = doc.get("meta", type=Map)
    updates = []
    for i in range(30):
        before = doc.get_state()
        if i % 3 == 0:
            text.insert(len(text) // 2, "hello")
        elif i % 3 == 1 and len(text) > 2:
            del text[1:3]
        else:
            meta[f"k{i}"] = i
        updates.append(doc.get_update(before))
    return doc, updates


def test_the_poison_really_panics_pycrdt_and_apply_turns_that_into_a_value_error() -> None:
    source, _ = history_of_edits()
    raw: Doc[Any] = Doc()
    raw.apply_update(source.get_update())
    with pytest.raises(BaseException) as info:
        raw.apply_update(POISON)
    assert ydoc.is_panic(info.value) and not isinstance(info.value, Exception)

    doc: Doc[Any] = Doc()
    doc.apply_update(source.get_update())
    with pytest.raises(ydoc.UnusableUpdate, match="cannot be integrated"):
        ydoc.apply(doc, POISON)
    assert str(doc.get("content", type=Text)) == str(source.get("content", type=Text))
    with pytest.raises(ydoc.UnusableUpdate, match="does not decode"):
        ydoc.apply(doc, b"\x07\x07")


async def test_a_stored_poison_update_is_skipped_by_replay(tmp_path: Path) -> None:
    source, updates = history_of_edits()
    expected = str(source.get("content", type=Text))
    async with SQLiteEngine(tmp_path / "p.db") as kv:
        history = History(kv, snapshot_every=10)
        await history.init()
        ref = await history.doc("acme", "site", "victim.txt", create=True)
        await history.append([Append(ref, u) for u in updates[:20]])
        await history.append([Append(ref, POISON)])
        await history.append([Append(ref, u) for u in updates[20:]])
        await history.snapshot_if_due(ref)
        replayed = await history.replay(ref)
        assert str(replayed.doc.get("content", type=Text)) == expected
        assert replayed.versionstamp == await history.head(ref)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


async def test_poisonous_update_closes_its_sender_and_breaks_nothing(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    source, updates = history_of_edits()
    expected = str(source.get("content", type=Text))
    settings = Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", room_idle_seconds=0.05)
    async with serve_in_process(create_app(settings)) as server:
        url = f"{server.ws_url}/acme/site/victim.txt"
        writer = await YPeer.connect(http, url, weft=True)
        watcher = await YPeer.connect(http, url)
        for update in updates:
            await writer.send(SyncUpdate(update))
        await writer.until(lambda: len(writer.acks) == len(updates))
        await writer.send(SyncUpdate(POISON))
        code, reason = await writer.closed()
        assert (code, reason) == (1007, "update cannot be integrated into the document")
        assert len(writer.acks) == len(updates)  # the poison was never acknowledged
        await watcher.wait_text(expected)
        await watcher.close()

        # Unloaded and reloaded from the log (which holds the poison): still readable.
        for _ in range(100):
            async with http.get(f"{server.url}/metrics") as r:
                if "weft_rooms_loaded 0" in await r.text():
                    break
            await asyncio.sleep(0.02)
        joiner = await YPeer.connect(http, url)
        assert str(joiner) == expected
        async with http.get(f"{server.url}/api/v1/acme/site/docs/victim.txt") as r:
            assert (r.status, await r.text()) == (200, expected)
        async with http.get(f"{server.url}/metrics") as r:
            assert 'weft_refusals_total{reason="unusable_update"} 1' in await r.text()
