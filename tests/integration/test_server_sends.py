"""How the server writes to its peers' sockets (server.connection's Flusher): a commit's
frames are written while the writer settles it, not by each peer's sender task; what a
write leaves (a queue over ``WRITE_BYTES``, a peer that does not read) the sender task
writes after, in order; one peer's broken socket stops nobody else's writes.
The app runs in this process, on real sockets, so the writes can be watched."""

from __future__ import annotations

import asyncio
import base64
import os
import select
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from pycrdt import Doc, Text

from crdt import codec
from crdt.codec import SyncUpdate
from server import connection as connection_module
from server.app import create_app
from server.appkeys import CONNECTIONS
from server.config import Settings
from server.connection import TRANSPORT_HIGH, WRITE_BYTES, Connection
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


async def raw_peer(port: int, path: str, rcvbuf: int = 0) -> socket.socket:
    """A WebSocket client on a plain non-blocking socket, past its handshake, that reads
    only when the test does (``rcvbuf``: its receive buffer, set before it connects)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        (
            f"GET /ws/acme/site/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    response = b""
    while b"\r\n\r\n" not in response:  # byte by byte: the frames that follow stay unread
        response += await loop.sock_recv(sock, 1)
    assert b" 101 " in response.split(b"\r\n", 1)[0], response
    return sock


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = await asyncio.wait_for(
            asyncio.get_running_loop().sock_recv(sock, size - len(data)), 5
        )
        assert more, "the server closed the connection"
        data += more
    return data


async def read_binary(sock: socket.socket) -> bytes:
    """The payload of the next binary frame the server sent ``sock`` (control frames
    skipped; the server's frames are unmasked)."""
    while True:
        head = await read_exactly(sock, 2)
        size = head[1] & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await read_exactly(sock, 2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await read_exactly(sock, 8))
        payload = await read_exactly(sock, size)
        if head[0] & 0x0F == 0x2:
            return payload


async def test_frames_queued_while_a_peer_does_not_read_arrive_in_order_across_handoffs(
    tmp_path: Path, writes: list[tuple[Connection, int, bool]]
) -> None:
    """The flusher writes while the transport has room; once the peer stops reading and
    the transport holds more than TRANSPORT_HIGH, frames wait in the queue for the
    sender task (polling for room, so the flusher leaves them); once it caught up and
    waits again, the flusher writes again. Every frame arrives once, in order."""
    async with serve_in_process(create_app(settings(tmp_path))) as server:
        app = server.app
        peer = await raw_peer(server.port, "stalled.txt", rcvbuf=4096)
        try:
            await until(lambda: len(app[CONNECTIONS].open) == 1)
            (conn,) = app[CONNECTIONS].open
            await until(lambda: conn._idle)  # its opening frames are written
            transport = conn.request.transport
            assert transport is not None
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            writes.clear()
            sent: list[bytes] = []

            def send_one() -> None:
                sent.append(b"frame %6d " % len(sent) + b"x" * (16 << 10))
                conn.send(sent[-1])

            while transport.get_write_buffer_size() <= TRANSPORT_HIGH:  # one frame a turn
                send_one()
                await asyncio.sleep(0)
                assert len(sent) < 1000, "the transport never filled"
            for _ in range(8):  # the sender polls for room: these wait in the queue
                send_one()
                await asyncio.sleep(0)
            assert conn._queue and not conn._idle
            got: list[bytes] = []
            while len(got) < len(sent):
                payload = await read_binary(peer)
                if payload.startswith(b"frame "):
                    got.append(payload)
            await until(lambda: conn._idle)  # caught up: the flusher writes again
            for _ in range(4):
                send_one()
                await asyncio.sleep(0)
            while len(got) < len(sent):
                got.append(await read_binary(peer))
            assert got == sent
            mine = [by_task for c, _, by_task in writes if c is conn]
            assert mine[0] is False and True in mine and mine[-1] is False, mine
        finally:
            peer.close()


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a client killed mid-session does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _a_reset_peer_stops_no_other_write(tmp_path: Path) -> None:
    failures: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: failures.append(context))
    async with (
        serve_in_process(create_app(settings(tmp_path))) as server,
        client_session() as http,
    ):
        app = server.app
        gone = await raw_peer(server.port, "notes.txt")
        await until(lambda: len(app[CONNECTIONS].open) == 1)
        (gone_conn,) = app[CONNECTIONS].open
        await until(lambda: gone_conn._idle)
        url = f"{server.ws_url}/acme/site/notes.txt"
        peers = [await YPeer.connect(http, url) for _ in range(2)]
        others = [c for c in app[CONNECTIONS].open if c is not gone_conn]
        doc: Doc[Text] = Doc()
        doc.get("content", type=Text).insert(0, "after the reset\n")
        frame = codec.encode(SyncUpdate(doc.get_update()))
        server_side = gone_conn.request.transport
        assert server_side is not None
        reset(gone)
        # The RST is in the server's socket (it is readable), and the loop has not run
        # since: the server writes to it in the same flush as to the others (as the
        # writer's flush after a commit would), the broken peer marked first.
        readable, _, _ = select.select([server_side.get_extra_info("socket")], [], [], 5)
        assert readable
        for conn in (gone_conn, *others):
            conn.send(frame)
        app[CONNECTIONS].flusher.flush()
        assert server_side.is_closing()  # its write failed, and closed the transport
        for peer in peers:
            await peer.wait_text("after the reset\n")
        await peers[0].append("and on\n")  # a commit: its frames are flushed as ever
        await peers[1].wait_text("after the reset\nand on\n")
        await until(lambda: gone_conn not in app[CONNECTIONS].open)
    assert failures == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_peer_whose_socket_was_reset_stops_no_other_peers_writes(
    tmp_path: Path, loop: str
) -> None:
    """One flush writes every marked peer: a write to a socket the peer reset raises
    nothing (the transport closes itself), so the peers after it in that flush, and
    every later flush, are written (on each event loop the server runs on)."""
    run = uvloop.run if loop == "uvloop" else asyncio.run
    run(_a_reset_peer_stops_no_other_write(tmp_path))
