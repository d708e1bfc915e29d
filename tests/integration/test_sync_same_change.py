"""The same change made on two devices, one of them offline (the same ``git pull`` on
a desktop that syncs and on a laptop that did not): real ``weft sync`` processes on a
real server. The change comes out once on every device, with no conflict record;
changes that differ are recorded as before (README, "Conflicts")."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest

from client.testing import get_json, get_text, start_sync, sync_once, wait_until
from server.testing import AUTH_ENV, ServerProcess, StartServer, token_for

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
TOKEN = token_for("reader", scope="read")
BASE = "l1\nl2\nl3\nl4\nl5\n"
PULLED = "l1\nL2 from upstream\nl3\nl4\nl5\nl6 from upstream\n"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


def synced(server: ServerProcess, tmp_path: Path, project: str, *names: str) -> list[Path]:
    """Folders ``names``, each synced with f.txt and g.txt (BASE)."""
    folders = [tmp_path / name for name in names]
    for folder in folders:
        folder.mkdir()
    for name in ("f.txt", "g.txt"):
        (folders[0] / name).write_text(BASE)
    for folder in folders:
        result = sync(server, folder, project)
        assert result.returncode == 0, result.stdout
    return folders


def sync(server: ServerProcess, folder: Path, project: str) -> subprocess.CompletedProcess[str]:
    """``weft sync --once`` of ``folder`` as the user named as the folder."""
    return sync_once(folder, server.ws_url, TENANT, project, token=token_for(folder.name))


def all_read(folder: Path, names: list[str], text: str) -> bool:
    return all((folder / name).read_text() == text for name in names)


def server_text(server: ServerProcess, project: str, path: str) -> str | None:
    return get_text(f"{server.url}/api/v1/{TENANT}/{project}/docs/{path}", TOKEN)


def api(server: ServerProcess, project: str, route: str) -> Any:
    return get_json(f"{server.url}/api/v1/{TENANT}/{project}/{route}", TOKEN)


def test_a_pull_made_online_and_offline_comes_out_once_and_a_different_edit_is_recorded(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The desktop runs ``weft sync`` and pulls; the laptop pulled the same while it was
    offline, and also edited g.txt's line 2 otherwise than the desktop did."""
    project = "samepull"
    desk, laptop = synced(server, tmp_path, project, "desk", "laptop")
    running = start_sync(desk, server.ws_url, TENANT, project, token=token_for("desk"))
    try:
        running.wait_for("in sync")
        (desk / "f.txt").write_text(PULLED)
        (desk / "g.txt").write_text(BASE.replace("l2", "l2 by desk"))
        wait_until(
            lambda: (
                server_text(server, project, "g.txt") == BASE.replace("l2", "l2 by desk")
                and server_text(server, project, "f.txt") == PULLED
            ),
            10,
            "the desk's edits on the server",
        )
        (laptop / "f.txt").write_text(PULLED)
        (laptop / "g.txt").write_text(BASE.replace("l2", "l2 by laptop"))
        result = sync(server, laptop, project)
        assert result.returncode == 0, result.stdout
        assert "1 conflict(s) recorded" in result.stdout, result.stdout
        assert "f.txt" not in result.stdout.replace("g.txt", ""), result.stdout
        assert (laptop / "f.txt").read_text() == PULLED
        assert server_text(server, project, "f.txt") == PULLED
        wait_until(lambda: (desk / "f.txt").read_text() == PULLED, 10, "the desk's f.txt")
    finally:
        running.terminate()
    records = api(server, project, "conflicts")["conflicts"]
    assert [r["path"] for r in records] == ["g.txt"], records
    [region] = records[0]["regions"]
    assert (region["ours_text"], region["theirs_text"]) == ("l2 by laptop\n", "l2 by desk\n")
    # The deletion of the laptop's copy: in history as the laptop's user's, by weft:conflict
    newest = api(server, project, "history/f.txt")["versions"][0]
    assert (newest["user"], newest["device"]) == ("laptop", "weft:conflict")
    assert (newest["deleted"], newest["revert"]) == (None, False)


def test_the_same_change_on_two_offline_devices_comes_out_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The desktop syncs its pull; two laptops that made it offline sync one after the
    other; then everybody syncs again: one copy everywhere, no record."""
    project = "sametwice"
    folders = synced(server, tmp_path, project, "desk", "laptop", "tablet")
    for folder in folders:
        (folder / "f.txt").write_text(PULLED)
        result = sync(server, folder, project)
        assert result.returncode == 0, result.stdout
        assert "conflict" not in result.stdout, result.stdout
    for folder in folders:
        assert sync(server, folder, project).returncode == 0
        assert (folder / "f.txt").read_text() == PULLED, folder.name
    assert server_text(server, project, "f.txt") == PULLED
    assert api(server, project, "conflicts")["conflicts"] == []


def test_a_pull_made_on_two_running_devices_at_once_comes_out_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Both devices run ``weft sync`` and pull at the same moment: files written on both
    within a few milliseconds, so each device sends changes before it has the other's.
    Every file comes out with the change once, on both devices and on the server (the
    server deletes the later copy of each: crdt.sameonline), with no conflict record."""
    project = "samerunning"
    names = [f"f{n:02d}.txt" for n in range(12)]
    desk, laptop = (tmp_path / name for name in ("desk", "laptop"))
    for folder in (desk, laptop):
        folder.mkdir()
    for name in names:
        (desk / name).write_text(BASE)
    for folder in (desk, laptop):
        assert sync(server, folder, project).returncode == 0
    runs = [
        start_sync(folder, server.ws_url, TENANT, project, token=token_for(folder.name))
        for folder in (desk, laptop)
    ]
    try:
        for run in runs:
            run.wait_for("in sync")
        for name in names:
            for folder in (desk, laptop):
                (folder / name).write_text(PULLED)
        wait_until(
            lambda: all(server_text(server, project, name) == PULLED for name in names),
            15,
            "every file pulled once on the server",
        )
        for folder in (desk, laptop):
            wait_until(
                functools.partial(all_read, folder, names, PULLED),
                10,
                f"every file pulled once in {folder.name}",
            )
    finally:
        for run in runs:
            run.terminate()
    assert api(server, project, "conflicts")["conflicts"] == []
