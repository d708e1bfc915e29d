"""Memory goes back after rooms were unloaded: the reaper runs the release hooks, and
the store keeps working after its reader caches were emptied."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crdt.history import Append, History
from crdt.kv import open_engine
from server import memory, rooms
from server.metrics import Metrics
from server.rooms import Rooms


class Peer:
    id = 1

    def send(self, frame: bytes) -> None:
        pass


async def test_the_reaper_releases_memory_after_unloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rooms, "RELEASE_EVERY", 0.0)
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        history = History(kv)
        await history.init()
        reaper = Rooms(history, Metrics(), instance="a", idle_seconds=0.05)
        released: list[str] = []
        reaper.release_hooks.append(lambda: released.append("forgot"))
        reaper.start()
        try:
            ref = await history.doc("acme", "site", "a.txt", create=True)
            room = await reaper.join(ref, peer := Peer())
            reaper.leave(room, peer, ())
            for _ in range(200):
                if released:
                    break
                await asyncio.sleep(0.02)
            assert len(reaper) == 0 and released == ["forgot"]
        finally:
            await reaper.close()


async def test_release_leaves_the_store_readable_and_writable(tmp_path: Path) -> None:
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        history = History(kv)
        await history.init()
        ref = await history.doc("acme", "site", "a.txt", create=True)
        [first] = await history.append([Append(ref, b"\x00\x00")])
        await memory.release(kv)
        [second] = await history.append([Append(ref, b"\x01\x00\x00")])
        assert await history.head(ref) == second.versionstamp > first.versionstamp


async def test_release_empties_the_url_parsing_caches(tmp_path: Path) -> None:
    """yarl keeps the last 128 parsed URLs (one per document path a room was opened
    at): release drops them, the private caches included."""
    import yarl
    import yarl._url

    for n in range(20):
        yarl.URL(f"/ws/acme/site/doc{n}.txt?token=x")
    assert yarl._url.encode_url.cache_info().currsize >= 20
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        await memory.release(kv)
    assert yarl._url.encode_url.cache_info().currsize == 0
    assert len(memory._url_caches()) > 3  # the host caches and the URL caches were found


def test_sqlite_connections_make_no_cursor_per_statement(tmp_path: Path) -> None:
    """Each ``Connection.execute`` would make a cursor (and a weak reference CPython
    keeps until it prunes them every 200 cursors): the engine's connections reuse one."""
    import gc
    import weakref

    from crdt.kv.sqlite import _Connection

    def weakrefs() -> list[object]:
        return [o for o in gc.get_objects() if type(o) is weakref.ReferenceType]

    conn = _Connection(str(tmp_path / "c.db"), isolation_level=None)
    try:
        conn.execute("CREATE TABLE t (x)")
        gc.collect()
        before = len(weakrefs())
        for n in range(50):
            conn.execute("INSERT INTO t VALUES (?)", (n,))
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(50,)]
        assert len(weakrefs()) - before < 5  # a plain sqlite3.Connection: 50 more
    finally:
        conn.close()
