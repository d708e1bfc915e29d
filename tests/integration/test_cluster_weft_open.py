"""Two instances on one SQLite file: the state vector a weft client gets on connecting
holds every update committed anywhere before it connected.

A weft client compares that vector with its own to tell a server restored from an older
backup (it then sends what the server lacks as one update, not as an offline branch). A
room that had not yet applied another instance's commit sent a vector without it, and a
device reconnecting through the other instance with offline edits took that path: no
``Base``, no conflict check of its branch, and a warning about a restored server (found
in a review, 3 runs of 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from client.outbox import Outbox
from crdt.codec import SyncStep1, SyncUpdate
from crdt.versionstamp import Versionstamp
from server.testing import StartServer, YPeer, client_session


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def typed(doc: Doc[Any], text: str) -> bytes:
    before = doc.get_state()
    content = doc.get("content", type=Text)
    content.insert(len(content), text)
    return doc.get_update(before)


async def test_a_weft_client_gets_a_state_vector_with_the_other_instances_commits(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = weft_server_factory(store=store), weft_server_factory(store=store)
    room = "/acme/site/n.md?weft=3"
    keeper = await YPeer.connect(http, f"{one.ws_url}{room}&device=keeper")  # room loaded
    await keeper.send(SyncUpdate(typed(keeper.doc, "base\n")))
    await keeper.until(lambda: len(keeper.acks) == 1)
    # Device X, online on instance two: its edit is acknowledged there.
    x = await YPeer.connect(http, f"{two.ws_url}{room}&device=X")
    await x.send(SyncUpdate(typed(x.doc, "acked on two\n")))
    await x.until(lambda: len(x.acks) == 1)
    await x.close()
    # X edits offline, then reconnects through instance one at once.
    outbox = Outbox()
    outbox.add(Versionstamp(bytes(11) + b"\x09"), typed(x.doc, "offline\n"))
    again = await YPeer.connect(http, f"{one.ws_url}{room}&device=X", handshake=False)
    vector = None
    while vector is None:
        message = await again.next()
        if isinstance(message, SyncStep1):
            vector = message.state_vector
    # What the server lacks is the offline edit alone: an ordinary offline branch.
    assert outbox.covers(x.doc.get_update(vector))
    await again.close()
    await keeper.close()
