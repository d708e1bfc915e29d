"""How the server writes to its peers' sockets (server.connection's Flusher): a commit's
frames are written while the writer settles it, not by each peer's sender task; what a
write leaves (a queue over ``WRITE_BYTES``) the sender task writes after, in order.
The app runs in this process, on real sockets, so the writes can be watched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from crdt import codec
from crdt.codec import SyncUpdate
from server import connection as connection_module
from server.app import create_app
from server.appkeys import CONNECTIONS
from server.config import Settings
from server.connection import WRITE_BYTES, Connection
from server.testing import YPeer, client_session, serve_in_process, until


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Connection, int, bool]]:
    """Every server write: (its connection, the bytes, whether a sender task wrote it)."""
    seen: list[tuple[Connection, int, bool]] = []
    original = Connection._write_queued

    def watched(self: Connection, transport: asyncio.Transport) -> None:
        before = self._queued_bytes
        original(self, transport)
        by_task = asyncio.current_task() is self._sender
        seen.append((self, before - self._queued_bytes, by_task))

    monkeypatch.setattr(connection_module.Connection, "_write_queued", watched)
    return seen


async def lines_and_acks(peer: YPeer, lines: int, acks: int) -> None:
    await peer.until(lambda: str(peer).count("\n") == lines and len(peer.acks) == acks)


def settings(tmp_path: Path) -> Settings:
    return Settings(store=f"sqlite:///{tmp_path / 'weft.db'}")


async def test_a_commits_frames_are_written_as_it_is_settled_not_by_sender_tasks(
    tmp_path: Path, http: aiohttp.ClientSession, writes: list[tuple[Connection, int, bool]]
) -> None:
    async with serve_in_process(create_app(settings(tmp_path))) as server:
        url = f"{server.ws_url}/acme/site/notes.txt"
        a = await YPeer.connect(http, url, weft=True)
        b = await YPeer.connect(http, url)
        c = await YPeer.connect(http, url)
        for n in range(5):
            writes.clear()
            await a.append(f"line {n}\n")
            for peer in (a, b, c):
                await lines_and_acks(peer, n + 1, n + 1 if peer is a else 0)
            assert len(writes) == 3, writes  # the two peers' updates and a's ack
            assert not any(by_task for _, _, by_task in writes), writes


async def test_a_queue_over_one_writes_worth_goes_out_whole_and_in_order(
    tmp_path: Path, http: aiohttp.ClientSession, writes: list[tuple[Connection, int, bool]]
) -> None:
    async with serve_in_process(create_app(settings(tmp_path))) as server:
        app = server.app
        url = f"{server.ws_url}/acme/site/big.txt"
        peer = await YPeer.connect(http, url)
        (conn,) = app[CONNECTIONS].open
        writes.clear()
        # Frames of 64 KiB each (y-websocket updates, as a reader would take them), more
        # than WRITE_BYTES in all, queued in one turn of the loop: the flusher writes
        # the first WRITE_BYTES, the sender task the rest.
        updates = []
        for n in range(WRITE_BYTES // (64 << 10) + 8):
            updates.append(bytes([n % 256]) * (64 << 10))
            conn.send(codec.encode(SyncUpdate(updates[-1])))
        got: list[bytes] = []
        while len(got) < len(updates):
            msg = await peer.ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            message = codec.decode(msg.data, max_size=1 << 24)
            assert isinstance(message, SyncUpdate)
            got.append(message.update)
        assert got == updates
        await until(lambda: sum(size for c, size, _ in writes if c is conn) > WRITE_BYTES)
        mine = [(size, by_task) for c, size, by_task in writes if c is conn]
        assert mine[0][1] is False and mine[0][0] >= WRITE_BYTES, mine
        assert any(by_task for _, by_task in mine[1:]), mine
