"""``weft sync`` keeps to its folder: nothing read, written or deleted through a symbolic
link, a moved or deleted folder is not a folder of deleted files, and a document that
cannot be written (a folder where its file should be, a file where its folder should be)
is said once and counted, while the rest syncs. Real server, real ``weft`` processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from client.testing import REPO, folder_files, get_json, start_sync, sync_once, wait_until
from server.testing import ServerProcess, StartServer

pytestmark = pytest.mark.functional

TENANT = "acme"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def once(server: ServerProcess, folder: Path, project: str, *args: str, code: int = 0) -> str:
    result = sync_once(folder, server.ws_url, TENANT, project, args=args, timeout=40)
    assert result.returncode == code, result.stdout
    return result.stdout


def docs(server: ServerProcess, project: str) -> dict[str, bool]:
    """The project's documents: path -> deleted."""
    base = f"{server.url}/api/v1/{TENANT}/{project}/docs"
    paths = [d["path"] for d in get_json(base)["docs"]]
    return {p: get_json(f"{base}/{urllib.parse.quote(p)}?format=json")["deleted"] for p in paths}


def test_nothing_is_read_written_or_deleted_through_a_symlinked_folder(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Found in a walkthrough: alice's ``notes`` links to a folder outside hers; bob's
    ``notes/secret.md`` was written over her file out there, her text went into a
    conflict record bob could read, and bob's delete removed it."""
    alice, bob, outside = tmp_path / "alice", tmp_path / "bob", tmp_path / "outside"
    for folder in (alice, bob / "notes", outside):
        folder.mkdir(parents=True)
    (outside / "secret.md").write_text("my private file\n")
    (alice / "notes").symlink_to(outside)
    (bob / "notes" / "secret.md").write_text("hello from bob\n")
    (bob / "plain.md").write_text("plain\n")
    once(server, bob, "links")

    out = once(server, alice, "links", code=1)

    assert (outside / "secret.md").read_text() == "my private file\n"
    assert out.count("cannot write notes/secret.md: notes is a symbolic link") == 1, out
    assert "1 file(s) NOT in sync" in out and "skipping notes:" in out, out
    assert (alice / "plain.md").read_text() == "plain\n"  # the rest syncs
    conflicts = get_json(f"{server.url}/api/v1/{TENANT}/links/conflicts")["conflicts"]
    assert conflicts == []

    (bob / "notes" / "secret.md").unlink()
    once(server, bob, "links")
    once(server, alice, "links")  # nothing left to write there: in sync
    assert (outside / "secret.md").read_text() == "my private file\n"
    assert docs(server, "links")["notes/secret.md"] is True


@pytest.mark.parametrize("how", ["moved", "deleted", "replaced", "state folder deleted"])
def test_a_running_sync_stops_and_deletes_nothing_when_its_folder_goes(
    server: ServerProcess, tmp_path: Path, how: str
) -> None:
    """Found in a walkthrough: ``mv`` of the folder a running sync keeps in step, and
    10-16 s later its next rescan found every file missing and deleted them all, on
    every device."""
    project = "gone-" + how.replace(" ", "-")
    folder = tmp_path / "a"
    folder.mkdir()
    for n in range(3):
        (folder / f"t{n}.md").write_text(f"text {n}\n")
    once(server, folder, project)
    sync = start_sync(folder, server.ws_url, TENANT, project, args=["--max-backoff", "1"])
    try:
        sync.wait_for("in sync")
        if how == "moved":
            folder.rename(tmp_path / "moved")
        elif how == "deleted":
            shutil.rmtree(folder)
        elif how == "replaced":
            folder.rename(tmp_path / "moved")
            folder.mkdir()
        else:
            shutil.rmtree(folder / ".weft")
        assert sync.proc.wait(timeout=15) == 1, sync.output()
    finally:
        sync.terminate()
    assert "stopped, and its missing files were not taken as deleted" in sync.output()
    assert "deleted t" not in sync.output()
    assert docs(server, project) == {f"t{n}.md": False for n in range(3)}


def test_a_file_and_a_folder_of_one_name_are_said_once_and_the_rest_syncs(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Found in a walkthrough: a document ``coll`` (a file on one device) meeting a folder
    ``coll/`` on another spun that device's sync at 100% CPU for good, deaf to Ctrl-C and
    --timeout; the other device said "cannot write coll/in.md" and then "in sync"."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "coll").mkdir(parents=True)
    b.mkdir()
    (a / "coll" / "in.md").write_text("inside\n")
    (a / "from-a.md").write_text("a\n")
    (b / "coll").write_text("I am a file\n")
    (b / "from-b.md").write_text("b\n")
    once(server, b, "collide")

    out = once(server, a, "collide", "--timeout", "20", code=1)
    assert out.count("cannot write coll: coll is a folder") == 1, out
    assert "1 file(s) NOT in sync" in out, out
    assert (a / "from-b.md").read_text() == "b\n"

    out = once(server, b, "collide", "--timeout", "20", code=1)
    assert out.count("cannot write coll/in.md: coll is a file") == 1, out
    assert "1 file(s) NOT in sync" in out, out
    assert (b / "from-a.md").read_text() == "a\n" and (b / "coll").read_text() == "I am a file\n"

    # Kept running, it writes the file once the folder in its way is gone.
    sync = start_sync(a, server.ws_url, TENANT, "collide")
    try:
        sync.wait_for("cannot write coll: coll is a folder")
        shutil.rmtree(a / "coll")
        wait_until(lambda: (a / "coll").is_file(), 15, "coll written")
        assert (a / "coll").read_text() == "I am a file\n"
    finally:
        assert sync.terminate() == 0, sync.output()


def test_restore_writes_what_it_can_when_a_file_and_a_folder_share_a_name(
    server: ServerProcess, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "coll").mkdir(parents=True)
    b.mkdir()
    (a / "coll" / "in.md").write_text("inside\n")
    (b / "coll").write_text("I am a file\n")
    for n in range(3):
        (b / f"t{n}.md").write_text(f"{n}\n")
    once(server, b, "restore-collide")
    once(server, a, "restore-collide", code=1)
    out = tmp_path / "out"
    where = ["--server", server.url, "--tenant", TENANT, "--project", "restore-collide"]
    command = [sys.executable, "-m", "client.cli", "restore", "--at", "head", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    result = subprocess.run(
        [*command, *where], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "restored 4 files" in result.stderr and "1 file(s) NOT written" in result.stderr
    assert "cannot write coll/in.md" in result.stderr, result.stderr
    written = set(folder_files(out))
    assert written == {"coll", "t0.md", "t1.md", "t2.md", ".weft-manifest.json"}
