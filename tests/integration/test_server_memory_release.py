"""Once a server's last room was unloaded, it gives SQLite's page caches back at once.

Found with the fan-out bench's idle check (1,000 documents opened, then unloaded): the
writer connection kept ~2 MB of cached pages, and the release ran only every 5 s, so
the memory of the last rooms unloaded was still held seconds after the last unload.
This runs a real server (in process, real sockets, a real SQLite file) and reads
SQLite's own allocation counter, shared by every connection of this process.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from pathlib import Path

import pytest

from server.app import create_app
from server.appkeys import ROOMS
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process


def _sqlite_memory_used() -> Callable[[], int]:
    """``sqlite3_memory_used`` of the SQLite library the ``sqlite3`` module uses."""
    import sqlite3

    sqlite3.connect(":memory:").close()  # loads the library
    name = ctypes.util.find_library("sqlite3")
    try:
        function = ctypes.CDLL(name or "libsqlite3.so.0").sqlite3_memory_used
    except (OSError, AttributeError) as exc:  # SQLite linked statically into _sqlite3
        pytest.skip(f"cannot reach sqlite3_memory_used: {exc}")
    function.restype = ctypes.c_int64
    used: Callable[[], int] = function
    return used


async def test_sqlite_caches_are_given_back_when_the_last_room_unloads(tmp_path: Path) -> None:
    memory_used = _sqlite_memory_used()
    settings = Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", room_idle_seconds=0.3)
    app = create_app(settings)
    async with serve_in_process(app) as server, client_session() as http:
        before = memory_used()
        for n in range(40):
            writer = await YPeer.connect(http, f"{server.ws_url}/acme/site/doc{n}.txt", weft=True)
            await writer.edit(0, f"{n}\n" * 10_000)
            await writer.until(lambda w=writer: bool(w.acks))  # type: ignore[misc]  # stored
            await writer.close()
        written = memory_used()
        assert written - before > 1_000_000, "the writer cached the pages it wrote"
        for _ in range(100):
            if len(app[ROOMS]) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(app[ROOMS]) == 0
        # The release runs in the reaper's tick that unloaded the last room (it used to
        # wait up to RELEASE_EVERY, 5 s, after an earlier release).
        for _ in range(40):
            if memory_used() - before < (written - before) / 4:
                break
            await asyncio.sleep(0.05)
        after = memory_used()
        assert after - before < (written - before) / 4, (before, written, after)
        # and the server still works: a room loads again with its text
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/doc7.txt")
        await peer.wait_text("7\n" * 10_000)
        await peer.close()
