"""What ``weft sync`` has said of the project's conflicts (client.said): a conflict
event whose id was said already (found in the list, or in an earlier run) is known as
said, so a verdict that comes live after the list said its record is not said twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from client import said as said_module
from client.device import Device
from client.events import Event, conflict_event
from client.said import LISTED, SaidConflicts
from client.state import DeviceState


class _Writer:
    """Test double of the state writer: saves at once, in a real state file."""

    def __init__(self, state: DeviceState) -> None:
        self.state = state

    def said(self, changes: dict[str, bool]) -> None:
        self.state.save_said(changes)


class _Device:
    """Test double of a device: only its state (real), writer, and conflict count's
    move (``Device.conflicts_moved``)."""

    def __init__(self, state: DeviceState) -> None:
        self.state, self.writer = state, _Writer(state)
        self.conflicts_moved = asyncio.Event()


class _Workspace:
    """Test double of a workspace: only its device."""

    def __init__(self, state: DeviceState) -> None:
        self.device = _Device(state)


def said_of(state: DeviceState) -> SaidConflicts:
    return SaidConflicts(cast(Any, _Workspace(state)))


async def test_a_conflict_said_from_the_list_is_not_said_again_live(tmp_path: Path) -> None:
    state = DeviceState(tmp_path / "state.db")
    said = said_of(state)
    listed = conflict_event("plan.txt", "aa" * 12, "1 region changed on both sides", LISTED)
    live = conflict_event("plan.txt", "aa" * 12, "1 region changed on both sides")
    other = conflict_event("plan.txt", "bb" * 12, "1 region changed on both sides")
    assert not said.said(listed)
    said.note(listed)  # said (from the list)
    assert said.said(live)  # the verdict that comes after it: not said again
    assert not said.said(other)
    assert not said.said(Event("online", "online: ws://x"))
    state.close()

    # an id said in an earlier run counts too, once loaded (weft sync loads at start)
    state = DeviceState(tmp_path / "state.db")
    said = said_of(state)
    await said.load()
    assert said.said(live) and not said.said(other)
    state.close()


async def test_a_move_of_the_conflict_count_reads_the_list_after_the_short_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running sync reads the list again after a reconnect only once LIST_GAP has
    passed; a move of the conflict count (a record made) cuts that wait to MARK_GAP
    after the last read, and moves in a burst make one read."""
    monkeypatch.setattr(said_module, "LIST_GAP", 600.0)
    monkeypatch.setattr(said_module, "MARK_GAP", 0.3)
    state = DeviceState(tmp_path / "state.db")
    said = said_of(state)
    moved = cast(Any, said.ws).device.conflicts_moved
    loop = asyncio.get_running_loop()
    reads: list[float] = []

    async def catch_up(timeout: float | None = None) -> bool:
        reads.append(loop.time())
        return True

    monkeypatch.setattr(said, "catch_up", catch_up)
    follow = asyncio.create_task(said.follow())
    try:
        await asyncio.sleep(0.05)
        assert len(reads) == 1  # the first read, at once
        said.note(Event("online", "online: ws://x"))  # a reconnect: held to LIST_GAP
        await asyncio.sleep(0.4)
        assert len(reads) == 1
        moved.set()  # the count moved: read now (MARK_GAP after the last read is past)
        await asyncio.sleep(0.05)
        assert len(reads) == 2
        for _ in range(3):  # a burst: one read, MARK_GAP after the last one
            moved.set()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        assert len(reads) == 3 and reads[2] - reads[1] >= 0.3
    finally:
        follow.cancel()
        state.close()


async def test_a_read_without_a_conflict_count_does_not_hide_a_move(tmp_path: Path) -> None:
    """Behind one address, an instance from before ``X-Weft-Conflicts`` (an upgrade under
    way) answers some reads without it: the number before it still counts, so a move
    seen across such a read reads the list (it was taken as no number, and answers of
    the two instances in turn never showed a move)."""
    device = Device(tmp_path, "ws://127.0.0.1:9/ws", "acme", "site")
    device._note_conflicts(3)  # the first read: no move
    assert not device.conflicts_moved.is_set()
    device._note_conflicts(None)  # the old instance
    device._note_conflicts(3)
    assert not device.conflicts_moved.is_set()
    device._note_conflicts(None)
    device._note_conflicts(4)  # a record made meanwhile
    assert device.conflicts_moved.is_set()
