"""The fan-out benchmark's idle-memory check: do documents left idle give memory back?

:func:`idle_rss` takes a server's RSS at baseline (after a warm-up), with ``documents``
opened one after another (each left as soon as it has synced and written ~2 kB of
text, so all are loaded at once and idle), and once the server has unloaded them: weft
after its room idle timeout (``WEFT_ROOM_IDLE_SECONDS``, :data:`IDLE_SECONDS` here),
the peers whenever they do (measured after the same wait); the reference Node server
keeps every document while it runs without persistence (as here), so its "after" is
with all of them still loaded.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from bench.peers import servers
from crdt import codec
from crdt.codec import SyncStep1, SyncStep2, SyncUpdate

CONNECT_CONCURRENCY = 32
IDLE_SECONDS = 15.0  # weft's room idle timeout here: longer than opening the documents takes


async def open_documents(
    url: str, paths: Sequence[str], *, hold: bool = False, text_bytes: int = 2048
) -> None:
    """Open every document (sync, write ``text_bytes`` of text) and leave it: at once
    (``hold=False``, ``CONNECT_CONCURRENCY`` at a time) or after all are open."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(index: int, path: str) -> aiohttp.ClientWebSocketResponse:
            doc: Doc[Any] = Doc(client_id=10_000 + index)
            doc.get("content", type=Text).insert(0, (path + "\n") * (text_bytes // (len(path) + 1)))
            async with gate:
                ws = await session.ws_connect(f"{url}/{path}", max_msg_size=0)
                await ws.send_bytes(codec.encode(SyncStep1(b"\x00")))
                await ws.send_bytes(codec.encode(SyncUpdate(doc.get_update())))
                # The update is applied once stored; a second round trip lets it land.
                await ws.send_bytes(codec.encode(SyncStep1(b"\x00")))
                answers = 0
                while answers < 2:
                    msg = await ws.receive(timeout=30)
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        raise RuntimeError(f"{path}: connection ended ({msg.type})")
                    answers += isinstance(codec.decode(msg.data), SyncStep2)
                if not hold:
                    await ws.close()
                return ws

        sockets = await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
        for ws in sockets:
            await ws.close()


def rooms_loaded(port: int) -> int | None:
    """weft's ``weft_rooms_loaded`` gauge."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("weft_rooms_loaded "):
                    return int(float(line.split()[1]))
    except OSError:
        return None
    return None


def idle_rss(kind: str, documents: int, workdir: Path) -> dict[str, Any]:
    """RSS at baseline, with ``documents`` opened one after another (each left as soon as
    it has synced and written its text, so all are loaded at once and idle), and after
    the server unloaded them (weft: its idle timeout; the peers drop a document when
    its last client leaves)."""
    env = {"WEFT_ROOM_IDLE_SECONDS": str(IDLE_SECONDS)} if kind == "weft" else {}
    with servers.running(kind, workdir / f"{kind}-idle", env) as server:

        def settle() -> int | None:
            deadline = time.monotonic() + IDLE_SECONDS + 60
            while kind == "weft" and time.monotonic() < deadline:
                if rooms_loaded(server.port) == 0:
                    break
                time.sleep(0.25)
            time.sleep(2.0)
            return rooms_loaded(server.port) if kind == "weft" else None

        warm = [f"bench/idle/warm{i}.txt" for i in range(20)]
        asyncio.run(open_documents(server.ws_base, warm))
        settle()
        baseline = server.rss_bytes()
        paths = [f"bench/idle/doc{i}.txt" for i in range(documents)]
        started = time.monotonic()
        asyncio.run(open_documents(server.ws_base, paths))
        opened_s = time.monotonic() - started
        loaded = server.rss_bytes()
        loaded_rooms = rooms_loaded(server.port) if kind == "weft" else None
        left = settle()
        after = server.rss_bytes()
    ratio = after / baseline
    return {
        "documents": documents,
        "open_seconds": round(opened_s, 2),
        "baseline_mb": round(baseline / 2**20, 1),
        "opened_mb": round(loaded / 2**20, 1),
        "after_unload_mb": round(after / 2**20, 1),
        "after_over_baseline": round(ratio, 3),
        "rooms_loaded_when_opened": loaded_rooms,
        "rooms_loaded_after": left,
        "within_20_percent": ratio <= 1.2,
    }
