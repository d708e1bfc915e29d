"""kill -9 of a ``weft sync`` in the middle of a sync: after a restart nothing is lost
and nothing is duplicated (real processes, real sockets)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.testing import folder_files, get_json, get_text, start_sync, sync_once, wait_until
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT, PROJECT = "acme", "crash"
FILES = 250


def server_docs(server: ServerProcess) -> int:
    try:
        return len(get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs")["docs"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the tenant has no document yet
            return 0
        raise


def server_text(server: ServerProcess, path: str) -> str | None:
    return get_text(f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs/{urllib.parse.quote(path)}")


def assert_server_matches(server: ServerProcess, folder: Path) -> None:
    files = folder_files(folder)
    assert len(files) == FILES + 1
    with ThreadPoolExecutor(8) as pool:
        texts = dict(zip(files, pool.map(lambda p: server_text(server, p), files), strict=True))
    for path, data in files.items():
        assert texts[path] == data.decode(), path


def test_kill_9_mid_sync_loses_nothing_and_duplicates_nothing(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory()
    a = tmp_path / "a"
    a.mkdir()
    for i in range(FILES):
        (a / f"f{i:03}.txt").write_text("".join(f"file {i} line {n}\n" for n in range(20)))
    args = ["--poll", "0.2"]

    devices = []
    try:
        # 1. killed during the first sync
        device = start_sync(a, server.ws_url, TENANT, PROJECT, args=args)
        devices.append(device)
        wait_until(lambda: server_docs(server) >= 1, 30, "first documents on the server")
        device.kill()
        assert server_docs(server) < FILES, "the first sync finished before the kill"
        for i in range(0, FILES, 7):  # edited while the device was dead
            with (a / f"f{i:03}.txt").open("a") as f:
                f.write("edited while the device was down\n")
        (a / "new.txt").write_text("created while the device was down\n")
        result = sync_once(a, server.ws_url, TENANT, PROJECT)
        assert result.returncode == 0, result.stdout
        assert_server_matches(server, a)

        # 2. killed while a burst of edits is being sent
        device = start_sync(a, server.ws_url, TENANT, PROJECT, args=args)
        devices.append(device)
        device.wait_for("in sync")
        for i in range(FILES):
            path = a / f"f{i:03}.txt"
            text = path.read_text()
            path.write_text(text.replace("line 10\n", f"line 10 (burst {i})\n"))
        wait_until(lambda: "burst" in (server_text(server, "f000.txt") or ""), 20, "first edit")
        device.kill()
    finally:
        for started in devices:
            started.kill()
    result = sync_once(a, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert_server_matches(server, a)

    # a fresh device gets exactly the same folder
    b = tmp_path / "b"
    b.mkdir()
    result = sync_once(b, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert folder_files(b) == folder_files(a)


def _save_state(folder: Path, into: Path) -> None:
    """Copy the device's ``state.db`` (not running: nothing is half-written)."""
    into.mkdir()
    for part in (folder / ".weft").glob("state.db*"):
        shutil.copy2(part, into / part.name)


def _roll_back_state(folder: Path, saved: Path) -> None:
    """Put back the ``state.db`` saved earlier: what a ``kill -9`` leaves when it lands
    after the edits since then reached the local history (and the server), before the
    device state that goes with them was written (``FLUSH_SECONDS`` later)."""
    for part in (folder / ".weft").glob("state.db*"):
        part.unlink()
    for part in saved.iterdir():
        shutil.copy2(part, folder / ".weft" / part.name)


def _conflicts(server: ServerProcess) -> list[object]:
    records: list[object] = get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts")[
        "conflicts"
    ]
    return records


ORIGINAL = "alpha\nbeta\ngamma\n"


def _synced_originals(server: ServerProcess, tmp_path: Path) -> Path:
    """Folder ``a`` with undo.txt and twice.txt (ORIGINAL), synced once."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "undo.txt").write_text(ORIGINAL)
    (a / "twice.txt").write_text(ORIGINAL)
    assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0
    return a


def _edit_once(a: Path) -> None:
    """The user deletes beta in undo.txt and rewrites it in twice.txt."""
    (a / "undo.txt").write_text("alpha\ngamma\n")
    (a / "twice.txt").write_text("alpha\nbeta EDIT1\ngamma\n")


def _edit_again(a: Path) -> None:
    """...then puts beta back in undo.txt and rewrites it once more in twice.txt."""
    (a / "undo.txt").write_text(ORIGINAL)
    (a / "twice.txt").write_text("alpha\nbeta EDIT2\ngamma\n")


def test_an_edit_recorded_just_before_a_kill_is_not_merged_in_again(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Killed after an edit reached the history and the server, before its file state
    was saved; the user edits the file again while the sync is down. The restart used to
    merge the first edit back in as if it came from elsewhere (the stale shadow): an
    undo was undone, a line rewritten twice came back twice."""
    server = weft_server_factory()
    a = _synced_originals(server, tmp_path)
    _save_state(a, tmp_path / "state-before")
    _edit_once(a)
    result = sync_once(a, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert server_text(server, "undo.txt") == "alpha\ngamma\n"
    _roll_back_state(a, tmp_path / "state-before")

    _edit_again(a)  # while the sync is down
    result = sync_once(a, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert (a / "undo.txt").read_text() == ORIGINAL
    assert (a / "twice.txt").read_text() == "alpha\nbeta EDIT2\ngamma\n"
    assert server_text(server, "undo.txt") == ORIGINAL
    assert server_text(server, "twice.txt") == "alpha\nbeta EDIT2\ngamma\n"
    assert _conflicts(server) == []


def test_a_file_created_just_before_a_kill_keeps_an_edit_made_while_down(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Killed once the server has a new file, before its file state was saved; a line is
    added while the sync is down. The restart used to take the file for a different one
    meeting the server's document: the server's (older) text went over it, the edit into
    a conflict record of the device against itself."""
    server = weft_server_factory()
    a = tmp_path / "a"
    a.mkdir()
    (a / "seed.txt").write_text("seed\n")
    assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0
    _save_state(a, tmp_path / "state-before")
    (a / "new.txt").write_text("first text\n")
    result = sync_once(a, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert server_text(server, "new.txt") == "first text\n"
    _roll_back_state(a, tmp_path / "state-before")

    with (a / "new.txt").open("a") as file:  # while the sync is down
        file.write("added while down\n")
    result = sync_once(a, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert (a / "new.txt").read_text() == "first text\nadded while down\n"
    assert server_text(server, "new.txt") == "first text\nadded while down\n"
    assert _conflicts(server) == []
    assert not (a / ".weft" / "conflicts").exists() or not any(
        (a / ".weft" / "conflicts").iterdir()
    )


def test_a_kill_right_after_the_server_has_an_edit_keeps_the_next_one(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """The same with a real kill -9 of a running ``weft sync``, as soon as the server
    has the edits. (Before file states were saved at once, this kill usually came
    before them; now it usually comes after: the tests above put back the state such a
    kill leaves.)"""
    server = weft_server_factory()
    a = _synced_originals(server, tmp_path)
    device = start_sync(a, server.ws_url, TENANT, PROJECT, args=["--poll", "0.3"])
    try:
        device.wait_for("in sync")
        _edit_once(a)
        wait_until(
            lambda: (
                server_text(server, "undo.txt") == "alpha\ngamma\n"
                and server_text(server, "twice.txt") == "alpha\nbeta EDIT1\ngamma\n"
            ),
            20,
            "both edits on the server",
        )
    finally:
        device.kill()
    _edit_again(a)  # while the sync is down
    result = sync_once(a, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert (a / "undo.txt").read_text() == ORIGINAL
    assert (a / "twice.txt").read_text() == "alpha\nbeta EDIT2\ngamma\n"
    assert server_text(server, "twice.txt") == "alpha\nbeta EDIT2\ngamma\n"
