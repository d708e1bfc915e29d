"""A document's state can be bigger than a connection's send queue (the document limit
is 8x the queue's by default): a joiner still gets it, as one frame."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from crdt import codec
from crdt.codec import Awareness, AwarenessEntry, SyncStep1
from server.app import create_app
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process

PARTS = [letter * (150 << 10) for letter in "abc"]  # 450 kB in all: over the 256 kB queue


@contextlib.asynccontextmanager
async def big_room(tmp_path: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, str, YPeer]]:
    """A server whose send queues hold 256 kB, and a document of 450 kB written by a
    writer and seen whole by a watcher: the session, the room's URL and the watcher."""
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'weft.db'}",
        commit_max_bytes=256 << 10,
        send_queue_bytes=256 << 10,
        max_update_bytes=200 << 10,
    )
    async with serve_in_process(create_app(settings)) as server, client_session() as http:
        url = f"{server.ws_url}/acme/site/big.txt"
        writer = await YPeer.connect(http, url)
        watcher = await YPeer.connect(http, url)
        for part in PARTS:
            await writer.append(part)
        await watcher.wait_text("".join(PARTS))  # all stored and in the room
        await writer.close()
        yield http, url, watcher


async def test_a_joiner_gets_a_state_bigger_than_its_send_queue(tmp_path: Path) -> None:
    async with big_room(tmp_path) as (http, url, _):
        joiner = await YPeer.connect(http, url)  # its SyncStep2: one ~450 kB frame
        assert str(joiner) == "".join(PARTS)


async def test_a_joiner_gets_a_big_state_while_smaller_frames_wait_in_its_queue(
    tmp_path: Path,
) -> None:
    """In a busy room a joiner's queue often holds a broadcast when its state (one frame
    bigger than the whole queue) is queued: it used to be cut off as a slow reader
    (1013) before it read anything. Here the frame waiting is the joiner's own awareness
    state, which the room relays to every peer, the sender included, sent with its
    SyncStep1 in one burst (the server reads both before its sender runs). A second
    such frame while the first still waits is refused: memory stays bounded."""
    async with big_room(tmp_path) as (http, url, watcher):
        await watcher.close()

        joiner = await YPeer.connect(http, url, handshake=False)
        presence = Awareness(codec.encode_awareness([AwarenessEntry(42, 1, '{"user":"j"}')]))
        await joiner.send(presence)  # (no await in send yields: one burst, one read)
        await joiner.send(SyncStep1(b"\x00"))
        await joiner.until(lambda: joiner.synced)
        assert str(joiner) == "".join(PARTS)
        assert joiner.awareness  # the small frame came too

        greedy = await YPeer.connect(http, url, handshake=False)
        await greedy.send(SyncStep1(b"\x00"))
        await greedy.send(SyncStep1(b"\x00"))  # a second 450 kB frame while one waits
        code, reason = await greedy.closed()
        assert (code, reason) == (1013, "send queue full: client too slow")
