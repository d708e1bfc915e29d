"""What a folder workspace finds changed on disk when it starts (edits made while
``weft sync`` was not running) goes in as offline edits: an offline branch on the
document's known base, checked for conflicts, before its link sends anything."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from client import shadows, writes
from client.device import Device
from client.entry import DocEntry
from client.recorder import Recorder
from client.state import DeviceState
from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import serve_in_process

BASE = "line 1\nline 2\nline 3\n"


async def _synced_pair(tmp_path: Path, url: str, files: dict[str, str]) -> tuple[Path, Path]:
    """Folders ``a`` and ``b`` of one project, each synced once: a's ``files`` on both."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for name, text in files.items():
        (a / name).write_text(text)
    for folder in (a, b):
        async with Workspace(folder, url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)
    return a, b


def _rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


async def test_edits_made_while_down_are_an_offline_branch_even_when_recording_is_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both files were rewritten on the same line here while the sync was down, and
    elsewhere meanwhile: two conflicts. The workspace used to connect each document
    first and read its file after (once the history had recorded what came before): a
    link that opened meanwhile sent the edit live, with no base, and no conflict was
    recorded (seen 3 times in 7 runs of two files)."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        files = {name: BASE for name in ("0.txt", "one.txt", "two.txt")}
        a, b = await _synced_pair(tmp_path, server.ws_url, files)
        for name in ("one.txt", "two.txt"):  # a's sync is not running
            _rewrite(a / name, "line 2", "line 2 rewritten by a")
            _rewrite(b / name, "line 2", "line 2 rewritten by b")
        async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)

        # A third file edited while down opens first and keeps the recorder busy (a slow
        # disk) while the other two open: their links connect meanwhile.
        _rewrite(a / "0.txt", "line 3", "line 3 rewritten by a")
        record, load = Recorder._record, Device._load

        async def slowly(self: Recorder, batch: list[Any]) -> None:
            await asyncio.sleep(0.3)
            await record(self, batch)

        async def later(self: Device, path: str) -> DocEntry:
            if path != "0.txt":
                await asyncio.sleep(0.1)
            return await load(self, path)

        monkeypatch.setattr(Recorder, "_record", slowly)
        monkeypatch.setattr(Device, "_load", later)
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(20)
            assert sorted(c["path"] for c in ws.conflicts) == ["one.txt", "two.txt"]


def _copy_state(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for part in target.glob("state.db*"):
        part.unlink()
    for part in source.glob("state.db*"):
        shutil.copy2(part, target / part.name)


async def test_a_shadow_that_lags_an_edit_followed_by_a_server_update_is_rebuilt(
    tmp_path: Path,
) -> None:
    """The file states of a's edit, and of b's update written after it, were lost (a
    kill before they were saved: the state put back here is the one from before); the
    user undoes a's edit while the sync is down. The shadow is the text as of a's edit,
    rebuilt from the local history (b's update came after it): the undo stands, and
    b's line is there once."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    lines = "".join(f"line {i}\n" for i in range(1, 6))
    async with serve_in_process(app) as server:
        a, b = await _synced_pair(tmp_path, server.ws_url, {"f.txt": lines})
        _copy_state(a / ".weft", tmp_path / "saved")
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            _rewrite(a / "f.txt", "line 1", "line 1 by a")
            ws.ingest("f.txt")
            await ws.sync(10)
            async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as other:
                await other.sync(10)
                _rewrite(b / "f.txt", "line 5", "line 5 by b")
                other.ingest("f.txt")
                await other.sync(10)
            await ws.device.wait_until(lambda: "by b" in (a / "f.txt").read_text())
            await ws.sync(10)
        _copy_state(tmp_path / "saved", a / ".weft")
        _rewrite(a / "f.txt", "line 1 by a", "line 1")  # while the sync is down
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)
            assert str(ws.device.entries["f.txt"].text) == lines.replace("5", "5 by b")
        assert (a / "f.txt").read_text() == lines.replace("5", "5 by b")


async def test_a_save_merged_with_a_server_update_not_written_yet_survives_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b's update reached a while a save in place was under way (its write waits, see
    SAVE_SETTLE_SECONDS); the user saves again, and the save is merged with b's update
    and recorded; a is killed before its file state follows (no file state is written
    here). The restart took the document's text, b's update in it, for what the file
    held: the file then read as b's update undone, and that went to every device. The
    file's text saved ahead of the edit (client.shadows) is the shadow now."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    merged = "line 1 by a\nline 2\nline 3 by b\n"
    async with serve_in_process(app) as server:
        a, b = await _synced_pair(tmp_path, server.ws_url, {"f.txt": BASE})
        with monkeypatch.context() as killed:
            killed.setattr(writes, "SAVE_SETTLE_SECONDS", 600)  # a's file was just saved
            killed.setattr(DeviceState, "save_files", lambda self, changes: None)
            async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
                _rewrite(b / "f.txt", "line 3", "line 3 by b")
                async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as other:
                    await other.sync(10)
                entry = ws.device.entries["f.txt"]
                await ws.device.wait_until(lambda: "by b" in str(entry.text))
                assert (a / "f.txt").read_text() == BASE  # not written yet
                _rewrite(a / "f.txt", "line 1", "line 1 by a")
                ws.changed({"f.txt"})
                assert str(entry.text) == merged
                await ws.device.recorded()
                assert "by b" not in (a / "f.txt").read_text()
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)
            assert str(ws.device.entries["f.txt"].text) == merged
        assert (a / "f.txt").read_text() == merged
        async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as other:
            await other.sync(10)
        assert (b / "f.txt").read_text() == merged


async def test_a_heads_read_during_start_does_not_connect_a_document_before_its_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device's heads poller starts with the device, before the workspace has
    listed its documents: a heads read that came back then opened the file's document
    connected (``remote_docs``), so the edit made while down could go out live, with no
    conflict check (a review found it with a slow history listing)."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a = tmp_path / "a"
        a.mkdir()
        (a / "f.txt").write_text(BASE)
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)
        _rewrite(a / "f.txt", "line 2", "line 2 edited while down")
        known_paths = Device.known_paths

        async def slowly(self: Device) -> list[str]:
            await asyncio.sleep(0.5)  # a big history, a slow disk: the heads come first
            return await known_paths(self)

        monkeypatch.setattr(Device, "known_paths", slowly)
        connected_at_ingest: list[bool] = []
        ingest = Workspace.ingest

        def watching(self: Workspace, path: str) -> bool:
            entry = self.device.entries.get(path)
            if entry is not None and not connected_at_ingest:
                connected_at_ingest.append(entry.link.wanted)  # asked to connect
            return ingest(self, path)

        monkeypatch.setattr(Workspace, "ingest", watching)
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)
        assert connected_at_ingest == [False]
        assert "edited while down" in (a / "f.txt").read_text()


async def test_a_heads_read_during_a_slow_start_does_not_connect_an_opened_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start opens each document unconnected, then reads its file; a heads read that
    came back in between (the head moved: another device edited meanwhile) connected it
    all the same (``Device._follow``), and the edit made while down merged live into
    the other device's line, with no conflict recorded (second review)."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = await _synced_pair(tmp_path, server.ws_url, {"f.txt": BASE})
        _rewrite(a / "f.txt", "line 2", "line 2 by a while down")
        _rewrite(b / "f.txt", "line 2", "line 2 by b")
        async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)

        async def slowly(device: Device, entry: DocEntry, saved: Any, ahead: Any) -> Any:
            await asyncio.sleep(0.5)  # a slow history read: a heads read lands meanwhile
            return await shadows.start_state(device, entry, saved, ahead)

        monkeypatch.setattr("client.workspace.start_state", slowly)  # as start calls it
        wanted_at_ingest: list[bool] = []
        ingest = Workspace.ingest

        def watching(self: Workspace, path: str) -> bool:
            entry = self.device.entries.get(path)
            if entry is not None and not wanted_at_ingest:
                wanted_at_ingest.append(entry.link.wanted)
            return ingest(self, path)

        monkeypatch.setattr(Workspace, "ingest", watching)
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)
            conflicts = list(ws.conflicts)
        assert wanted_at_ingest == [False]
        assert [c.get("path") for c in conflicts] == ["f.txt"]
