"""A ``weft sync`` killed between a save's text being saved ahead of its edit and the
file state that follows the edit (``client.shadows``): the restart compares the file
with the text the history's edits were made from, no other. A real process killed
(``ahead_crash_child.py``) against a server in this process, over a real socket."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import serve_in_process

pytestmark = [pytest.mark.functional]

BASE = "line 1\nline 2\nline 3\n"
CHILD = Path(__file__).with_name("ahead_crash_child.py")


async def _killed(mode: str, a: Path, b: Path, url: str) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), mode, str(a), str(b), url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 9, out.decode()


async def _synced_pair(tmp_path: Path, url: str) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f.txt").write_text(BASE)
    for folder in (a, b):
        async with Workspace(folder, url, "acme", "p", poll_seconds=0.1) as ws:
            await ws.sync(10)
    return a, b


async def _killed_and_restarted(tmp_path: Path, mode: str) -> tuple[str, str]:
    """a and b synced; a killed as ``mode`` says, with both its saves in its file; then
    a, b and a again synced: f.txt on a and on b."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = await _synced_pair(tmp_path, server.ws_url)
        await _killed(mode, a, b, server.ws_url)
        assert (a / "f.txt").read_text() == "line 1 by a\nline 2 by a\nline 3\n"
        for folder in (a, b, a):
            async with Workspace(folder, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
                await ws.sync(10)
    return (a / "f.txt").read_text(), (b / "f.txt").read_text()


async def test_a_kill_before_the_next_save_is_appended_keeps_the_merged_server_update(
    tmp_path: Path,
) -> None:
    """The first save was merged with b's update (not in the file) and recorded, its file
    state not written; the second save's text was saved ahead, and the kill came before
    its append. That text replaced the first's, whose edit the history holds: the
    restart fell back to the document's text as the shadow, and b's update was undone
    on every device (second review)."""
    merged = "line 1 by a\nline 2 by a\nline 3 by b\n"
    assert await _killed_and_restarted(tmp_path, "next_batch") == (merged, merged)


async def test_a_kill_between_the_parts_of_a_split_batch_keeps_the_second_save(
    tmp_path: Path,
) -> None:
    """Two saves in one batch, appended in two transactions; the kill came after the
    first. The second save's text was taken as the shadow although its edit never
    reached the history: the file matched it, nothing was taken in, and the document's
    text went over the file (second review)."""
    both = "line 1 by a\nline 2 by a\nline 3\n"
    assert await _killed_and_restarted(tmp_path, "split") == (both, both)
