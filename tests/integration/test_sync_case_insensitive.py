"""Folders on a case-insensitive, case-preserving file system (macOS's APFS by default,
Windows' NTFS): real ``weft sync`` processes on a real server, the folders of the
"case-insensitive" devices on :mod:`tests.caseless_fs` (a FUSE file system that treats
names as APFS does), the "linux" device's on the plain disk.

A case-only rename (``readme.md`` -> ``README.md``) ends with the file renamed on every
device, nothing deleted, whichever device made it; two documents whose paths differ
only in case reach a case-insensitive device as one file and one said not written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.testing import folder_files, get_json, get_text, start_sync, sync_once, wait_until
from server.testing import AUTH_ENV, ServerProcess, StartServer, token_for

pytestmark = [pytest.mark.functional]

TENANT = "acme"
TOKEN = token_for("reader", scope="read")
FS = Path(__file__).resolve().parents[1] / "caseless_fs.py"
INSTALL = (
    "apt-get install fuse3 and pip install -e '.[test]' (mfusepy); see the README's test command"
)


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


@pytest.fixture(scope="module")
def caseless() -> Iterator[Path]:
    """A folder on the case-insensitive test file system; fails (never skips) when it
    cannot be mounted here. (Not under pytest's own temporary folders: a mount left by a
    killed run would fail their clean-up.)"""
    base = Path(tempfile.mkdtemp(prefix="weft-caseless-"))
    backing, mount = base / "backing", base / "mount"
    backing.mkdir()
    mount.mkdir()
    with (base / "fs.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(FS), str(backing), str(mount)], stderr=log)
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mount):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"cannot mount the case-insensitive test file system ({INSTALL}):\n"
                    + (base / "fs.log").read_text(errors="replace"),
                    pytrace=False,
                )
            time.sleep(0.05)
        (mount / "probe").write_text("")
        assert (mount / "PROBE").exists() and os.listdir(mount) == ["probe"]
        (mount / "probe").unlink()
        yield mount
    finally:
        proc.terminate()  # (libfuse unmounts on SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not os.path.ismount(mount):
            shutil.rmtree(base)


def sync(server: ServerProcess, folder: Path, project: str) -> subprocess.CompletedProcess[str]:
    return sync_once(folder, server.ws_url, TENANT, project, token=token_for(folder.name))


def server_text(server: ServerProcess, project: str, path: str) -> str | None:
    return get_text(f"{server.url}/api/v1/{TENANT}/{project}/docs/{path}", TOKEN)


def deleted(server: ServerProcess, project: str, path: str) -> Any:
    """Whether the server holds ``path`` deleted."""
    url = f"{server.url}/api/v1/{TENANT}/{project}/docs/{path}?format=json"
    return get_json(url, TOKEN)["deleted"]


def names(folder: Path) -> dict[str, str]:
    """The files of ``folder`` as its listing spells them, with their text."""
    return {name: text.decode() for name, text in folder_files(folder).items()}


def synced(server: ServerProcess, project: str, *folders: Path) -> None:
    for folder in folders:
        result = sync(server, folder, project)
        assert result.returncode == 0, result.stdout


@pytest.mark.slow
def test_a_case_only_rename_on_a_case_insensitive_device_renames_the_file_everywhere(
    server: ServerProcess, caseless: Path, tmp_path: Path
) -> None:
    """``git mv readme.md README.md`` on a Mac: the old name's file is gone (a lookup of
    ``readme.md`` still finds ``README.md``), so its document is deleted and the new name
    is a new document; another case-insensitive device and a Linux one end with
    ``README.md`` alone. Before, the old document stayed (read through the new name):
    the Linux device had both files, the other Mac kept ``readme.md``."""
    project = "macrename"
    mac, win, linux = caseless / "mac", caseless / "win", tmp_path / "linux"
    for folder in (mac, win, linux):
        folder.mkdir()
    (mac / "readme.md").write_text("hello\n")
    synced(server, project, mac, win, linux)
    os.rename(mac / "readme.md", mac / "README.md")
    synced(server, project, mac, win, linux)
    for folder in (mac, win, linux):
        assert names(folder) == {"README.md": "hello\n"}, folder.name
    assert server_text(server, project, "README.md") == "hello\n"
    assert deleted(server, project, "readme.md")
    assert not deleted(server, project, "README.md")
    synced(server, project, mac, win)  # and nothing moves after
    for folder in (mac, win):
        assert names(folder) == {"README.md": "hello\n"}, folder.name


@pytest.mark.slow
def test_a_name_in_another_case_is_not_written_over_a_file_and_a_rename_lands_whole(
    server: ServerProcess, caseless: Path, tmp_path: Path
) -> None:
    """A Linux device makes ``README.md`` beside ``readme.md`` (two documents): a
    case-insensitive device keeps its ``readme.md`` as it is and says the other is not
    written (``--once`` exits 1); once ``readme.md`` is deleted (the rename done in two
    steps, the new name first, as per-document links may bring it), ``README.md`` is
    written. Before, the new document was taken for the file there (or written over
    it), and the deletion of ``readme.md`` then removed the only file: the device sent
    the deletion of ``README.md`` too, and the text was gone from every device."""
    project = "linuxrename"
    linux, win = tmp_path / "linux", caseless / "win2"
    linux.mkdir()
    win.mkdir()
    (linux / "readme.md").write_text("hello\n")
    synced(server, project, linux, win)
    (linux / "README.md").write_text("hello\nand more\n")
    synced(server, project, linux)
    result = sync(server, win, project)
    assert result.returncode == 1, result.stdout
    assert "cannot write README.md: readme.md is there" in result.stdout, result.stdout
    assert names(win) == {"readme.md": "hello\n"}
    (linux / "readme.md").unlink()
    synced(server, project, linux, win)
    assert names(win) == {"README.md": "hello\nand more\n"}
    synced(server, project, linux, win)
    assert names(linux) == names(win) == {"README.md": "hello\nand more\n"}
    assert server_text(server, project, "README.md") == "hello\nand more\n"
    assert not deleted(server, project, "README.md")


@pytest.mark.slow
def test_case_only_renames_while_syncing_run_reach_a_running_device(
    server: ServerProcess, caseless: Path, tmp_path: Path
) -> None:
    """Running ``weft sync`` on two case-insensitive devices: a file and a folder renamed
    in case only on one (seen by its watcher) are renamed on the other (the deletions
    come on the open links, the new documents from the list), and on a Linux device."""
    project = "liverename"
    mac, win, linux = caseless / "mac3", caseless / "win3", tmp_path / "linux"
    for folder in (mac, win, linux):
        folder.mkdir()
    (mac / "notes.md").write_text("notes\n")
    (mac / "Docs").mkdir()
    (mac / "Docs" / "a.md").write_text("a\n")
    synced(server, project, mac, win)
    running = [
        start_sync(folder, server.ws_url, TENANT, project, token=token_for(folder.name))
        for folder in (mac, win)
    ]
    try:
        for process in running:
            process.wait_for("in sync")
        os.rename(mac / "notes.md", mac / "NOTES.md")
        os.rename(mac / "Docs", mac / "docs")
        want = {"NOTES.md": "notes\n", "docs/a.md": "a\n"}
        wait_until(lambda: names(win) == want, 15, "the new names on win")
        wait_until(
            lambda: deleted(server, project, "notes.md") and deleted(server, project, "Docs/a.md"),
            10,
            "the old names deleted",
        )
    finally:
        for process in running:
            process.terminate()
    assert names(mac) == want
    synced(server, project, linux)
    assert names(linux) == want


def test_a_restore_writes_no_document_over_one_named_in_another_case(
    server: ServerProcess, caseless: Path, tmp_path: Path
) -> None:
    """``weft restore`` into a case-insensitive folder of a project holding ``A.md`` and
    ``a.md``: the first is written, the second is said not written (exit 1). Before,
    the second went over the first with no word."""
    project = "restorecase"
    linux = tmp_path / "linux"
    linux.mkdir()
    (linux / "A.md").write_text("upper\n")
    (linux / "a.md").write_text("lower\n")
    synced(server, project, linux)
    out = caseless / "restored"
    where = ["--server", server.url, "--tenant", TENANT, "--project", project, "--token", TOKEN]
    command = [sys.executable, "-m", "client.cli", "restore", "--at", "head", "--out", str(out)]
    result = subprocess.run(
        [*command, *where], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "1 file(s) NOT written" in result.stderr, result.stderr
    assert "cannot write a.md: A.md is there" in result.stderr, result.stderr
    assert {k: v for k, v in names(out).items() if k.endswith(".md")} == {"A.md": "upper\n"}


@pytest.mark.slow
def test_two_documents_a_weft_before_took_for_one_file_are_not_deleted(
    server: ServerProcess, caseless: Path, tmp_path: Path
) -> None:
    """Folders where an older weft synced ``readme.md`` and ``README.md`` as one file of
    a case-insensitive file system (it read the one through the other: every Mac that
    made a case-only rename left such a pair), one folder's file named one way, the
    other's the other way (made here as such folders are: synced on a case-sensitive
    disk, then moved). Neither document is taken as deleted: each device says the one
    it cannot have, and ``--once`` exits 1. Taken as deleted, each device deleted the
    other document, and the file went from every device."""
    project = "olderpair"
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    (first / "readme.md").write_text("hello\n")
    (first / "README.md").write_text("hello\n")
    synced(server, project, first, second)
    one, other = caseless / "one", caseless / "other"
    shutil.copytree(first, one, ignore=lambda _d, names: {"README.md"} & set(names))
    shutil.copytree(second, other, ignore=lambda _d, names: {"readme.md"} & set(names))
    for folder, kept, said in ((one, "readme.md", "README.md"), (other, "README.md", "readme.md")):
        result = sync(server, folder, project)
        assert result.returncode == 1, result.stdout
        assert f"not taking {said} as deleted" in result.stdout, result.stdout
        assert names(folder) == {kept: "hello\n"}
    assert not deleted(server, project, "readme.md")
    assert not deleted(server, project, "README.md")
