"""The fan-out benchmark's load generator: y-websocket clients in their own process.

``generator_main(pipe, spec)`` runs the clients of one :class:`GenSpec` (spawned by
``bench/fanout.py``, one process per spec) and talks to the orchestrator over ``pipe``:

- it generates every client's updates (one-character appends, each its own update, by a
  fixed client id), connects and syncs each room's first client, says ``leaders``, waits
  for ``join``, connects the others (pycrdt-websocket fails concurrent joins to a room it
  has not started yet), says ``ready``;
- on ``("go", phase, start_ns)`` every client sends its updates of that phase, at full
  speed or paced (``spec.paced_period`` apart, random phase) from ``start_ns`` on, and
  records what it receives from the others: sender and clock of the update (read from
  the update's header, so servers that re-encode updates are measured too) and the
  ``time.monotonic_ns()`` of arrival; it answers ``("done", records)`` once every
  client has sent everything and received everything the others sent;
- on ``finish`` every client applies what it sent and received to a fresh document and
  the process answers ``("hashes", ...)`` (room, client, hash of its text).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing.connection
import os
import random
import time
from array import array
from dataclasses import dataclass
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from crdt import codec
from crdt.codec import SyncStep1, SyncStep2, SyncUpdate

PHASE_TIMEOUT = float(os.environ.get("FANOUT_PHASE_TIMEOUT", "180"))
CONNECT_CONCURRENCY = 32
SYNC_STEP2_EMPTY = codec.encode(SyncStep2(b"\x00\x00"))
FIRST_CLIENT_ID = 1000


@dataclass(frozen=True)
class GenSpec:
    """What one generator process runs: its clients (room index, client id)."""

    url: str
    rooms: tuple[str, ...]
    clients: tuple[tuple[int, int], ...]
    per_room: int
    updates: int
    paced_updates: int
    paced_period: float
    seed: int


def read_uint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def update_id(frame: bytes) -> tuple[int, int] | None:
    """(client, clock) of the first struct of the update in a sync frame, if any."""
    _, pos = read_uint(frame, 2)  # skip the update's length
    clients, pos = read_uint(frame, pos)
    if clients == 0:
        return None
    _, pos = read_uint(frame, pos)  # number of structs
    client, pos = read_uint(frame, pos)
    clock, _ = read_uint(frame, pos)
    return client, clock


def make_updates(client_id: int, count: int, doc: Doc[Any]) -> list[bytes]:
    """``count`` one-character appends by ``client_id`` to ``doc``, as update bytes."""
    text = doc.get("content", type=Text)
    out = []
    for i in range(count):
        before = doc.get_state()
        text.insert(len(text), chr(ord("a") + i % 26))
        out.append(doc.get_update(before))
    return out


class Client:
    """One y-websocket connection of a generator: sends frames, records receptions."""

    def __init__(self, room: int, cid: int, full: list[bytes], paced: list[bytes]) -> None:
        self.room, self.cid = room, cid
        self.updates = {"full": full, "paced": paced}
        self.frames = {
            p: [codec.encode(SyncUpdate(u)) for u in us] for p, us in self.updates.items()
        }
        self.clocks = {
            p: array("q", [update_id(f)[1] for f in frames])  # type: ignore[index]
            for p, frames in self.frames.items()
        }
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sent: dict[str, array[int]] = {}
        self.received: list[bytes] = []
        self.recv = (array("q"), array("q"), array("q"))  # sender, clock, ns
        self.from_others = self.echoes = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.synced = asyncio.Event()
        self.closed: str | None = None

    def expect(self, count: int) -> None:
        self.recv = (array("q"), array("q"), array("q"))
        self.from_others, self.target = 0, count
        self.reached.clear()
        if count == 0:
            self.reached.set()

    async def read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            now = time.monotonic_ns()
            data: bytes = msg.data
            if data[0] != 0:
                continue  # awareness and the like
            if data[1] == 0:  # the server's SyncStep1: we have nothing it lacks
                await self.ws.send_bytes(SYNC_STEP2_EMPTY)
                continue
            self.received.append(data)
            if data[1] == 1:
                self.synced.set()
                continue
            ident = update_id(data)
            if ident is None:
                continue
            if ident[0] == self.cid:
                self.echoes += 1
                continue
            sender, clock, at = self.recv
            sender.append(ident[0])
            clock.append(ident[1])
            at.append(now)
            self.from_others += 1
            if self.from_others >= self.target:
                self.reached.set()
        self.closed = f"closed {self.ws.close_code}"
        self.reached.set()
        self.synced.set()

    async def send(self, phase: str, start_ns: int, period: float, offset: float) -> None:
        assert self.ws is not None
        frames = self.frames[phase]
        sent = self.sent[phase] = array("q", bytes(8 * len(frames)))
        for i, frame in enumerate(frames):
            due = (start_ns - time.monotonic_ns()) / 1e9 + offset + i * period
            if due > 0:
                await asyncio.sleep(due)
            elif i % 16 == 0:
                await asyncio.sleep(0)  # full speed, but let the readers run
            sent[i] = time.monotonic_ns()
            if self.closed:
                return
            try:
                await self.ws.send_bytes(frame)
            except (ConnectionError, aiohttp.ClientError) as exc:
                self.closed = f"send failed: {exc!r}"
                return

    def text_hash(self) -> str:
        doc: Doc[Any] = Doc()
        for phase in ("full", "paced"):
            for update in self.updates[phase]:
                doc.apply_update(update)
        for frame in self.received:
            doc.apply_update(codec.decode(frame).update)  # type: ignore[union-attr]
        return hashlib.sha256(str(doc.get("content", type=Text)).encode()).hexdigest()


def generator_main(conn: multiprocessing.connection.Connection, spec: GenSpec) -> None:
    asyncio.run(_generate(conn, spec))


async def _generate(conn: multiprocessing.connection.Connection, spec: GenSpec) -> None:
    clients = []
    for room, cid in spec.clients:
        doc: Doc[Any] = Doc(client_id=cid)
        full = make_updates(cid, spec.updates, doc)
        clients.append(Client(room, cid, full, make_updates(cid, spec.paced_updates, doc)))
    rng = random.Random(spec.seed)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0)  # one connection per client, however many
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        readers: list[asyncio.Task[None]] = []

        async def join(client: Client) -> None:
            async with gate:
                url = f"{spec.url}/{spec.rooms[client.room]}"
                client.ws = await session.ws_connect(url, max_msg_size=0, autoping=True)
                readers.append(asyncio.create_task(client.read()))
                await client.ws.send_bytes(codec.encode(SyncStep1(b"\x00")))
                await asyncio.wait_for(client.synced.wait(), 30)

        # Each room's first client joins alone: pycrdt-websocket fails concurrent joins to
        # a room it has not started yet ("YRoom already running").
        leaders = [c for c in clients if (c.cid - FIRST_CLIENT_ID) % spec.per_room == 0]
        await asyncio.gather(*(join(c) for c in leaders))
        conn.send(("leaders", len(leaders)))
        await asyncio.to_thread(conn.recv)
        await asyncio.gather(*(join(c) for c in clients if c not in leaders))
        conn.send(("ready", len(clients)))
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "finish":
                break
            _, phase, start_ns = command
            conn.send(("done", await _phase(clients, spec, phase, start_ns, rng)))
        hashes = [(c.room, c.cid, c.text_hash(), c.closed) for c in clients]
        for c in clients:
            if c.ws is not None:
                await c.ws.close()
        for task in readers:
            task.cancel()
        conn.send(("hashes", hashes))


async def _phase(
    clients: list[Client], spec: GenSpec, phase: str, start_ns: int, rng: random.Random
) -> dict[str, Any]:
    count = spec.updates if phase == "full" else spec.paced_updates
    for c in clients:
        c.expect((spec.per_room - 1) * count)
    paced = phase == "paced"
    period = spec.paced_period if paced else 0.0
    senders = [
        asyncio.create_task(c.send(phase, start_ns, period, rng.random() * period)) for c in clients
    ]
    # Done when every client has sent all of its updates and received all of the others'.
    waiting = asyncio.gather(*senders, *(c.reached.wait() for c in clients))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiting, PHASE_TIMEOUT)
    for task in senders:
        task.cancel()
    return {
        "clients": [
            {
                "cid": c.cid,
                "sent": c.sent.get(phase, array("q")).tobytes(),
                "clocks": c.clocks[phase].tobytes(),
                "recv": [a.tobytes() for a in c.recv],
                "from_others": c.from_others,
                "target": c.target,
                "echoes": c.echoes,
                "closed": c.closed,
            }
            for c in clients
        ],
    }
