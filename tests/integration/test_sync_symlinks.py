"""A synced file replaced by a symbolic link (``ln -sf other.md notes.md``, a link to a
folder too) stops syncing, and says so on every device, as a file that turned binary
does (test_sync_not_text.py); the link is never followed, written through or written
over, and a regular text file back in its place syncs again (README, "Syncing a
folder"; :mod:`client.unsynced`). Real ``weft sync`` processes on a real server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from client.testing import doc_flags, doc_text, start_sync, sync_named, synced_pair, wait_until
from client.unsynced import NOT_TEXT, SYMLINK
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
TEXT = "line 1\nline 2\n"
OTHER = "the other file\n"
KEPT = "the other devices keep its last synced text"
NOW_A_LINK = (
    f"notes.md is now a symbolic link: no longer synced; {KEPT} (it syncs again once it "
    "is a regular text file again)"
)
HEARD = (
    "notes.md is a symbolic link on device laptop: not synced from there until it is a "
    "regular file again; this copy holds its last synced text"
)


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def link(folder: Path, target: str, name: str = "notes.md") -> None:
    """``ln -sfn TARGET NAME`` in ``folder``: ``name`` (a file, or a link) replaced by a
    symbolic link to ``target``."""
    subprocess.run(["ln", "-sfn", target, name], cwd=folder, check=True)


def test_a_file_replaced_by_a_link_is_not_in_sync_and_every_device_says_so(
    server: ServerProcess, tmp_path: Path
) -> None:
    """It was "skipping notes.md: symbolic links are not synced" and "not writing
    notes.md: the file there is not synced text" on the device it happened on, once a
    run, and "in sync" (exit 0) on both, while the file and the server differed."""
    project = "linked"
    files = {"notes.md": TEXT, "other.md": OTHER}
    laptop, desk = synced_pair(tmp_path, server, TENANT, project, files)
    link(laptop, "other.md")

    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 1, out
    assert "1 file(s) NOT in sync" in out and "in sync:" not in out, out
    assert NOW_A_LINK in out, out
    assert f"notes.md: a symbolic link: not synced ({KEPT})" in out, out
    assert "skipping" not in out and "not writing" not in out, out
    assert doc_flags(server, TENANT, project, "notes.md").get(SYMLINK) == "laptop"
    assert doc_text(server, TENANT, project, "notes.md") == TEXT
    code, again = sync_named(laptop, server, TENANT, project)  # still not in sync, said once
    assert code == 1 and again.count("no longer synced") == 1, again

    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    assert HEARD in out, out
    assert (desk / "notes.md").read_text() == TEXT and not (desk / "notes.md").is_symlink()
    (desk / "notes.md").write_text(TEXT + "line 3 from desk\n")  # edited elsewhere meanwhile
    assert sync_named(desk, server, TENANT, project)[0] == 0

    # Neither followed nor written over: the link stays, and what it points to too.
    assert sync_named(laptop, server, TENANT, project)[0] == 1
    assert (laptop / "notes.md").readlink() == Path("other.md")
    assert (laptop / "other.md").read_text() == OTHER
    assert doc_text(server, TENANT, project, "other.md") == OTHER
    # A link to a folder now: the same, said once (no "skipping" a link to a folder
    # either); nothing written in it.
    (laptop / "folder").mkdir()
    link(laptop, "folder")
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 1 and "notes.md: a symbolic link: not synced" in out, out
    assert out.count("no longer synced") == 1 and "skipping" not in out, out
    assert list((laptop / "folder").iterdir()) == []
    assert doc_flags(server, TENANT, project, "notes.md").get(SYMLINK) == "laptop"

    # A regular text file again: synced again, merged with the edit made elsewhere.
    (laptop / "notes.md").unlink()
    (laptop / "notes.md").write_text("line 0 from laptop\n" + TEXT)
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    merged = "line 0 from laptop\n" + TEXT + "line 3 from desk\n"
    assert (laptop / "notes.md").read_text() == merged
    assert doc_text(server, TENANT, project, "notes.md") == merged
    assert SYMLINK not in doc_flags(server, TENANT, project, "notes.md")
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "symbolic link" not in out, out
    assert (desk / "notes.md").read_text() == merged


def test_a_running_sync_says_once_and_syncs_the_file_again_once_it_is_a_file(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Replaced by a link to a folder outside, with ``ln -sf``: said once on each side;
    the edit made elsewhere meanwhile goes neither into the folder nor over the link."""
    project = "running"
    laptop, desk = synced_pair(tmp_path, server, TENANT, project, {"notes.md": TEXT})
    outside = tmp_path / "outside"
    outside.mkdir()
    args = ["--device-id", "laptop", "--poll", "0.2"]
    running = start_sync(laptop, server.ws_url, TENANT, project, args=args)
    other = start_sync(desk, server.ws_url, TENANT, project, args=["--device-id", "desk"])
    try:
        running.wait_for("in sync")
        other.wait_for("in sync")
        link(laptop, str(outside))
        running.wait_for(NOW_A_LINK)
        other.wait_for(HEARD)
        (desk / "notes.md").write_text(TEXT + "line 3 from desk\n")
        wait_until(
            lambda: doc_text(server, TENANT, project, "notes.md") == TEXT + "line 3 from desk\n",
            10,
            "the desk's edit on the server",
        )
        (tmp_path / "saved").write_text("line 0 from laptop\n" + TEXT)  # saved by rename
        (tmp_path / "saved").rename(laptop / "notes.md")
        running.wait_for("notes.md is a regular file again: synced again")
        merged = "line 0 from laptop\n" + TEXT + "line 3 from desk\n"
        wait_until(lambda: (desk / "notes.md").read_text() == merged, 10, "merged on the desk")
        wait_until(lambda: (laptop / "notes.md").read_text() == merged, 10, "merged here")
        assert list(outside.iterdir()) == []
        assert running.output().count("no longer synced") == 1, running.output()
        assert other.output().count(HEARD) == 1, other.output()
        assert "not writing" not in running.output()
        assert "skipping" not in running.output()
    finally:
        running.terminate()
        other.terminate()


def test_deleting_the_link_clears_the_flag_and_a_binary_file_then_moves_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The flag (``weft.symlink``) names the device; a link replaced by a binary file
    moves its flag to ``not_text``, and deleting the file clears it, so the document is
    not said to be a link (or not text) anywhere."""
    project = "deleted"
    laptop, desk = synced_pair(tmp_path, server, TENANT, project, {"notes.md": TEXT})
    link(laptop, "nowhere")  # (dangling: still a link)
    assert sync_named(laptop, server, TENANT, project)[0] == 1
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and HEARD in out, out

    (laptop / "notes.md").unlink()
    (laptop / "notes.md").write_bytes(b"\0")
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 1 and "notes.md is binary (a NUL byte at offset 0)" in out, out
    flags = doc_flags(server, TENANT, project, "notes.md")
    assert flags.get(NOT_TEXT) == "laptop" and SYMLINK not in flags, flags

    (laptop / "notes.md").unlink()
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    flags = doc_flags(server, TENANT, project, "notes.md")
    assert SYMLINK not in flags and NOT_TEXT not in flags, flags
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "symbolic link" not in out and "not text" not in out, out
    assert not (desk / "notes.md").exists()
