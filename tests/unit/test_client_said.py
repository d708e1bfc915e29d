"""What ``weft sync`` has said of the project's conflicts (client.said): a conflict
event whose id was said already (found in the list, or in an earlier run) is known as
said, so a verdict that comes live after the list said its record is not said twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

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
    """Test double of a device: only its state (real) and writer."""

    def __init__(self, state: DeviceState) -> None:
        self.state, self.writer = state, _Writer(state)


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
