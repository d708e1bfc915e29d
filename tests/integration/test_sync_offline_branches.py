"""Offline branches of real ``weft sync --once`` processes meeting on a real server: the
cases a randomized scenario runner (three folders, random file operations, syncs in
random order) found recorded otherwise than "Conflicts" in the README says."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from client.testing import get_json, get_text, sync_once
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
BASE = "l1\nl2\nl3\n"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def synced_folders(server: ServerProcess, tmp_path: Path, project: str) -> tuple[Path, Path]:
    """Folders ``a`` and ``c``, both synced with f.txt (BASE)."""
    a, c = tmp_path / "a", tmp_path / "c"
    for folder in (a, c):
        folder.mkdir()
    (a / "f.txt").write_text(BASE)
    for folder in (a, c):
        result = sync_once(folder, server.ws_url, TENANT, project)
        assert result.returncode == 0, result.stdout
    return a, c


@pytest.mark.parametrize("age", [5.0, 0.0], ids=["emptied-long-ago", "emptied-just-now"])
def test_an_offline_emptying_meeting_an_offline_edit_is_a_conflict(
    server: ServerProcess, tmp_path: Path, age: float
) -> None:
    """Found by the scenario runner: a file emptied while ``weft sync`` was not running
    waited for its 2 s re-check (a save in place?) with its document already connected,
    so the server's changes came in first and the emptying went out as a live edit,
    merged three ways: another device's offline edit of a line the emptying deleted
    made no conflict record (the file came out as that line alone)."""
    project = f"emptied{int(age)}"
    a, c = synced_folders(server, tmp_path, project)
    (a / "f.txt").write_text("")
    then = time.time() - age
    os.utime(a / "f.txt", (then, then))
    (c / "f.txt").write_text("l1\nl2 edited by C\nl3\n")
    assert sync_once(c, server.ws_url, TENANT, project).returncode == 0
    result = sync_once(a, server.ws_url, TENANT, project)
    assert result.returncode == 0, result.stdout
    assert "1 conflict(s) recorded" in result.stdout, result.stdout
    records = get_json(f"{server.url}/api/v1/{TENANT}/{project}/conflicts")["conflicts"]
    assert len(records) == 1, records
    [region] = records[0]["regions"]
    assert (region["base_text"], region["ours_text"]) == (BASE, "")
    assert "l2 edited by C" in region["theirs_text"]
    text = get_text(f"{server.url}/api/v1/{TENANT}/{project}/docs/f.txt")
    assert (a / "f.txt").read_text() == text
