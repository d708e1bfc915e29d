"""A synced file that is no longer UTF-8 text (an image saved over it, a save in Latin-1)
stops syncing, and says so on every device, as one grown past the size limit does
(test_sync_over_limit.py); text again, it syncs again (README, "Syncing a folder";
:mod:`client.unsynced`). Real ``weft sync`` processes on a real server, and a folder
workspace on a server in this process for the status line and a smaller limit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from client.events import Event
from client.sync_cli import _Ui
from client.testing import doc_flags, doc_text, start_sync, sync_named, synced_pair, wait_until
from client.unsynced import NOT_TEXT, OVER_LIMIT
from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import ServerProcess, StartServer, serve_in_process

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
TEXT = "line 1\nline 2\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"  # its first NUL: offset 8
KEPT = "the other devices keep its last synced text"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def test_a_file_turned_binary_is_not_in_sync_and_every_device_says_so(
    server: ServerProcess, tmp_path: Path
) -> None:
    """It was "skipping notes.md: binary file" on the device it turned binary on, once
    a run, and "in sync" (exit 0) on both, while the file and the server differed."""
    project = "turned"
    laptop, desk = synced_pair(tmp_path, server, TENANT, project, {"notes.md": TEXT})
    (laptop / "notes.md").write_bytes(PNG)

    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 1, out
    assert "1 file(s) NOT in sync" in out and "in sync:" not in out, out
    binary = "binary (a NUL byte at offset 8)"
    assert f"notes.md is {binary}: no longer synced; {KEPT}" in out, out
    assert f"notes.md: {binary}: not synced ({KEPT})" in out, out
    assert "skipping" not in out, out
    assert doc_flags(server, TENANT, project, "notes.md").get(NOT_TEXT) == "laptop"
    code, again = sync_named(laptop, server, TENANT, project)  # still not in sync, said once
    assert code == 1 and again.count("no longer synced") == 1, again

    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    assert (
        "notes.md is not text on device laptop: not synced from there until it is text "
        "again; this copy holds its last synced text"
    ) in out, out
    assert (desk / "notes.md").read_text() == TEXT
    (desk / "notes.md").write_text(TEXT + "line 3 from desk\n")  # edited elsewhere meanwhile
    assert sync_named(desk, server, TENANT, project)[0] == 0

    assert sync_named(laptop, server, TENANT, project)[0] == 1
    assert (laptop / "notes.md").read_bytes() == PNG  # never written over
    latin1 = (TEXT + "café\n").encode("latin-1")  # saved in another encoding: not text either
    (laptop / "notes.md").write_bytes(latin1)
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 1, out
    assert f"notes.md: not valid UTF-8 (byte 0xe9 at offset {len(TEXT) + 3}): not synced" in out
    assert (laptop / "notes.md").read_bytes() == latin1
    assert doc_text(server, TENANT, project, "notes.md") == TEXT + "line 3 from desk\n"

    # Text again: synced again, merged with the edit made elsewhere; the flag is gone.
    (laptop / "notes.md").write_text("line 0 from laptop\n" + TEXT)
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    merged = "line 0 from laptop\n" + TEXT + "line 3 from desk\n"
    assert (laptop / "notes.md").read_text() == merged
    assert doc_text(server, TENANT, project, "notes.md") == merged
    assert NOT_TEXT not in doc_flags(server, TENANT, project, "notes.md")
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "not text" not in out, out
    assert (desk / "notes.md").read_text() == merged


def test_a_running_sync_says_once_and_syncs_the_file_again_once_it_is_text(
    server: ServerProcess, tmp_path: Path
) -> None:
    project = "running"
    laptop, desk = synced_pair(tmp_path, server, TENANT, project, {"notes.md": TEXT})
    args = ["--device-id", "laptop", "--poll", "0.2"]
    running = start_sync(laptop, server.ws_url, TENANT, project, args=args)
    other = start_sync(desk, server.ws_url, TENANT, project, args=["--device-id", "desk"])
    try:
        running.wait_for("in sync")
        other.wait_for("in sync")
        (tmp_path / "saved").write_bytes(PNG)  # saved as an editor does: renamed over it
        (tmp_path / "saved").rename(laptop / "notes.md")
        running.wait_for("notes.md is binary (a NUL byte at offset 8): no longer synced")
        other.wait_for("notes.md is not text on device laptop")
        (desk / "notes.md").write_text(TEXT + "line 3 from desk\n")
        wait_until(
            lambda: doc_text(server, TENANT, project, "notes.md") == TEXT + "line 3 from desk\n",
            10,
            "the desk's edit on the server",
        )
        (laptop / "notes.md").write_text("line 0 from laptop\n" + TEXT)
        running.wait_for("notes.md is text again: synced again")
        merged = "line 0 from laptop\n" + TEXT + "line 3 from desk\n"
        wait_until(lambda: (desk / "notes.md").read_text() == merged, 10, "merged on the desk")
        wait_until(lambda: (laptop / "notes.md").read_text() == merged, 10, "merged here")
        assert running.output().count("no longer synced") == 1, running.output()
        assert "not writing" not in running.output()
        assert "skipping" not in running.output()
    finally:
        running.terminate()
        other.terminate()


def test_deleting_a_file_that_is_not_text_clears_the_flag(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The flag (``weft.not_text``) names the device; deleting its file clears it, so the
    document, brought back later, is not said to be not text anywhere."""
    project = "deleted"
    laptop, desk = synced_pair(tmp_path, server, TENANT, project, {"notes.md": TEXT})
    (laptop / "notes.md").write_bytes(b"\0")
    assert sync_named(laptop, server, TENANT, project)[0] == 1
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "notes.md is not text on device laptop" in out, out

    (laptop / "notes.md").unlink()
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    assert NOT_TEXT not in doc_flags(server, TENANT, project, "notes.md")
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "not text" not in out, out
    assert not (desk / "notes.md").exists()


async def test_the_status_line_counts_it_and_a_file_over_the_limit_then_binary_moves_its_flag(
    tmp_path: Path,
) -> None:
    """One flag a reason: a file over the size limit (here 100 bytes) that then turns
    binary under it moves its device's flag from ``over_limit`` to ``not_text`` in one
    update, and is said again, with the new reason; the status line counts it."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "f.txt").write_text(TEXT)
    said: list[Event] = []
    ui = _Ui(Console(file=io.StringIO()), quiet=False, verbose=False)
    async with serve_in_process(app) as srv:
        ws = Workspace(
            folder, srv.ws_url, TENANT, "p", device_id="a", on_event=said.append, max_file_bytes=100
        )
        async with ws:
            await ws.sync(10)
            (folder / "f.txt").write_text("x" * 200)
            ws.changed({"f.txt"})
            await ws.sync(10)
            meta = ws.device.entries["f.txt"].meta
            assert meta.get(OVER_LIMIT) == "a" and NOT_TEXT not in meta
            assert "1 over the size limit" in str(ui.status(ws))
            (folder / "f.txt").write_bytes(b"text, then a NUL\0")
            ws.changed({"f.txt"})
            await ws.sync(10)
            assert meta.get(NOT_TEXT) == "a" and OVER_LIMIT not in meta
            status = str(ui.status(ws))
            assert "1 not text" in status and "size limit" not in status, status
            assert ws.device.pending() == 0  # (the flag went out)
    warnings = [e.message for e in said if e.kind == "warning"]
    assert warnings == [
        f"f.txt is 200 bytes, over the 100-byte limit: no longer synced; {KEPT} (it syncs "
        "again once it is back under the limit)",
        f"f.txt is binary (a NUL byte at offset 16): no longer synced; {KEPT} (it syncs "
        "again once it is UTF-8 text again)",
    ]


def test_a_flagged_file_deleted_after_its_document_was_deleted_elsewhere_clears_the_flag(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The laptop's file turns binary (flagged ``not_text``: laptop), the desk deletes
    the document (the laptop's binary file is not removed: never written over), then the
    laptop's file is deleted too: its flag went nowhere, and the document, brought back
    by the desk with a new text, was deleted again by the laptop (a flag naming it, and no
    file: taken as its file deleted) and the desk said the laptop's file was not text."""
    project = "gone-both"
    laptop, desk = synced_pair(tmp_path, server, TENANT, project, {"notes.md": TEXT})
    (laptop / "notes.md").write_bytes(PNG)
    assert sync_named(laptop, server, TENANT, project)[0] == 1
    (desk / "notes.md").unlink()
    assert sync_named(desk, server, TENANT, project)[0] == 0
    code, out = sync_named(laptop, server, TENANT, project)
    assert (laptop / "notes.md").read_bytes() == PNG, out  # not removed: not what was synced

    (laptop / "notes.md").unlink()
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    assert NOT_TEXT not in doc_flags(server, TENANT, project, "notes.md")

    (desk / "notes.md").write_text("brought back\n")
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "not text" not in out, out
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0, out
    assert doc_text(server, TENANT, project, "notes.md") == "brought back\n"
    assert doc_flags(server, TENANT, project, "notes.md").get("deleted") is False
    assert (laptop / "notes.md").read_text() == "brought back\n"
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and (desk / "notes.md").read_text() == "brought back\n", out
