"""Unloaded rooms and closed connections are freed at once, by reference counting.

Regression (found by the fan-out bench's idle-memory check): a cancelled task keeps its
CancelledError, whose traceback holds the task's frames, which hold the object that
holds the task. A room kept its cancelled watcher task and a connection its reader and
sender tasks, so every unloaded room (with its whole document) and every closed
connection waited for the next full garbage collection, which a server busy with large
documents may not run for a long time.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from server.app import create_app
from server.appkeys import CONNECTIONS, HISTORY, ROOMS
from server.config import Settings
from server.connection import WebSocket
from server.testing import YPeer, client_session, serve_in_process


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees anything while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_an_unloaded_room_and_a_closed_connection_are_freed_without_gc(
    tmp_path: Path, http: aiohttp.ClientSession, no_gc: None
) -> None:
    settings = Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", room_idle_seconds=0)
    app = create_app(settings)
    async with serve_in_process(app) as server:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/big.txt")
        await peer.edit(0, "x" * 100_000)
        ref = await app[HISTORY].doc("acme", "site", "big.txt")
        room = app[ROOMS].get(ref)
        assert room is not None
        await asyncio.sleep(0.2)  # the edit is stored and applied to the room
        (connection,) = app[CONNECTIONS].open
        room_ref, doc_ref = weakref.ref(room), weakref.ref(room.doc)
        conn_ref = weakref.ref(connection)
        del room, connection
        await peer.close()
        for _ in range(100):  # idle timeout 0: unloaded as the last peer leaves
            if app[ROOMS].get(ref) is None and not app[CONNECTIONS].open:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the cancelled tasks finish
        assert app[ROOMS].get(ref) is None
        assert room_ref() is None, "the unloaded room is still alive (a reference cycle?)"
        assert doc_ref() is None, "the unloaded room's document is still alive"
        assert conn_ref() is None, "the closed connection is still alive"


async def test_a_closed_connections_aiohttp_objects_are_freed_without_gc(
    tmp_path: Path, http: aiohttp.ClientSession, no_gc: None
) -> None:
    """aiohttp keeps a WebSocket's heartbeat callback on the connection's protocol after
    the connection ended, a cycle through the response and its reader: weft drops it."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/notes.txt")
        await peer.edit(0, "hello")
        (connection,) = app[CONNECTIONS].open
        ws_ref = weakref.ref(connection.ws)
        del connection
        await peer.close()
        for _ in range(100):
            if not app[CONNECTIONS].open:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # aiohttp finishes the request once the handler returned
        assert ws_ref() is None, "the closed connection's WebSocket is still alive"


def _server_websockets() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is WebSocket)


@pytest.mark.parametrize("refusal", ["at the handshake", "for what it sent"])
async def test_a_refused_connections_aiohttp_objects_are_freed_without_gc(
    tmp_path: Path, http: aiohttp.ClientSession, no_gc: None, refusal: str
) -> None:
    """The client's answer to the server's close frame re-armed aiohttp's heartbeat timer
    (heartbeat_seconds, 30 s), which held the closed WebSocket, its request and its
    handler, and the protocol's data callback then held them in a cycle until a full
    garbage collection: every connection the server closed (a refusal, a slow reader, a
    drain) stayed in memory at least that long (a soak refusing 300 a round held ~600)."""
    settings = Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", refusal_hold_seconds=0)
    app = create_app(settings)
    async with serve_in_process(app) as server:
        for i in range(3):
            if refusal == "at the handshake":
                peer = await YPeer.connect(
                    http, f"{server.ws_url}/acme/site/.git/x{i}", handshake=False
                )
            else:
                peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/notes.txt")
                await peer.ws.send_str("not a y-websocket frame")
            code, _ = await peer.closed()
            assert code == (4400 if refusal == "at the handshake" else 1003)
            await peer.close()
        for _ in range(100):
            if not app[CONNECTIONS].open and _server_websockets() == 0:
                break
            await asyncio.sleep(0.02)
        assert _server_websockets() == 0, "a refused connection's WebSocket is still alive"
