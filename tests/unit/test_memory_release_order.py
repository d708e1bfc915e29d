"""What :func:`server.memory.release` does first: let cancelled tasks end, then forget
caches, then collect; and the reaper releases as soon as the last room is gone."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

from crdt import records
from crdt.history import History
from crdt.kv import open_engine
from server import memory
from server.metrics import Metrics
from server.rooms import RELEASE_EVERY, Rooms


class Peer:
    id = 1

    def send(self, frame: bytes) -> None:
        pass


async def test_release_lets_cancelled_tasks_end_first(tmp_path: Path) -> None:
    """An unloaded room's watcher is cancelled, not finished: its frames and futures
    (and the free-list objects they return) must be gone before the collection."""
    unwound: list[str] = []

    async def watcher() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.3)  # a cancellation that takes a few loop turns
            unwound.append("done")

    task = asyncio.create_task(watcher())
    await asyncio.sleep(0)
    task.cancel()
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        await memory.release(kv)
        assert unwound == ["done"] and task.done()


async def test_release_forgets_the_record_tails_of_gone_connections(tmp_path: Path) -> None:
    for n in range(10):
        records.encode_record(b"\x00\x00", "u", str(n), f"instance/{n}", 1)
    assert records.record_tail.cache_info().currsize >= 10
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        await memory.release(kv)
    assert records.record_tail.cache_info().currsize == 0


async def test_the_reaper_releases_at_once_when_the_last_room_is_gone(tmp_path: Path) -> None:
    """Not RELEASE_EVERY seconds after the previous release: the server is idle now."""
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        history = History(kv)
        await history.init()
        reaper = Rooms(history, Metrics(), instance="a", idle_seconds=0.05)
        released: list[float] = []
        reaper.release_hooks.append(lambda: released.append(time.monotonic()))
        reaper.start()
        try:
            for n in range(2):
                ref = await history.doc("acme", "site", f"{n}.txt", create=True)
                room = await reaper.join(ref, peer := Peer())
                left = time.monotonic()
                reaper.leave(room, peer, ())
                while len(released) <= n and time.monotonic() - left < RELEASE_EVERY + 1:
                    await asyncio.sleep(0.02)
                assert len(released) == n + 1
                assert released[n] - left < 1.0, "released long after the last unload"
        finally:
            await reaper.close()


async def test_rooms_unloaded_in_leave_are_released_too(tmp_path: Path) -> None:
    """With idle_seconds 0 a room unloads inside leave(), and over max_idle the oldest
    idle one does: the reaper never unloaded those itself, and must still release."""
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        history = History(kv)
        await history.init()
        for rooms in (
            Rooms(history, Metrics(), instance="a", idle_seconds=0),
            Rooms(history, Metrics(), instance="b", idle_seconds=0.4, max_idle=0),
        ):
            released: list[float] = []
            rooms.release_hooks.append(functools.partial(released.append, 1.0))
            rooms.start()
            try:
                ref = await history.doc("acme", "site", "a.txt", create=True)
                room = await rooms.join(ref, peer := Peer())
                rooms.leave(room, peer, ())
                assert not rooms._rooms  # unloaded by leave() itself
                deadline = time.monotonic() + 2.0
                while not released and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert released, "no release after a room unloaded in leave()"
            finally:
                await rooms.close()
