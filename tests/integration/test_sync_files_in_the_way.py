"""A document of the project whose path holds, on this device, a file that was never
synced and cannot be (binary, not UTF-8, over 4 MiB, a symbolic link) is not written
over it: said once, and not in sync (``--once`` names it and exits 1, the status line
counts it), as a document a folder or a file in another case is in the way of; written
once the file is gone (README, "Syncing a folder"; :mod:`client.writes`). Real ``weft
sync`` processes on a real server, and folder workspaces on a server in this process
for the status line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from client.folder import MAX_FILE_BYTES
from client.sync_cli import _Ui
from client.testing import doc_text, start_sync, sync_named, wait_until
from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import ServerProcess, StartServer, serve_in_process

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
TEXT = "line 1\nline 2\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"  # its first NUL: offset 8
LEFT = "and was never synced: it is left as it is (move it away to get the project's version)"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def project_of(tmp_path: Path, server: ServerProcess, project: str, paths: list[str]) -> None:
    """The project holds a document for each of ``paths`` (``TEXT``), made by a device
    ``desk``; and ``gone.md``, deleted."""
    desk = tmp_path / "desk"
    desk.mkdir()
    for path in [*paths, "gone.md"]:
        (desk / path).write_text(TEXT)
    assert sync_named(desk, server, TENANT, project)[0] == 0
    (desk / "gone.md").unlink()
    assert sync_named(desk, server, TENANT, project)[0] == 0


def test_files_that_cannot_be_synced_in_documents_ways_are_not_in_sync(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Each was "not writing FILE: the file there is not synced text", once a run, and
    "in sync" (exit 0), while the folder lacked the project's text of four documents."""
    project = "in-the-way"
    project_of(tmp_path, server, project, ["notes.md", "latin.md", "big.txt", "link.md", "ok.md"])
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    big = "x" * MAX_FILE_BYTES + "\n"
    latin = "café\n".encode("latin-1")
    (laptop / "notes.md").write_bytes(PNG)
    (laptop / "latin.md").write_bytes(latin)
    (laptop / "big.txt").write_text(big)
    (tmp_path / "private.md").write_text("my own file\n")
    (laptop / "link.md").symlink_to(tmp_path / "private.md")
    (laptop / "gone.md").write_bytes(PNG)  # a deleted document's path: nothing to write

    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 1, out
    assert "4 file(s) NOT in sync" in out and "in sync:" not in out, out
    said = {
        "notes.md": "binary (a NUL byte at offset 8)",
        "latin.md": "not valid UTF-8 (byte 0xe9 at offset 3)",
        "big.txt": f"{len(big)} bytes, over the {MAX_FILE_BYTES}-byte limit",
        "link.md": "a symbolic link",
    }
    for path, why in said.items():
        assert out.count(f"cannot write {path}: the file there is {why} {LEFT}") == 1, out
        assert f"  {path}: not written: the file there is {why} {LEFT}" in out, out
    assert "gone.md" not in out.replace("skipping gone.md: binary file", ""), out
    assert "not writing" not in out, out
    assert (laptop / "ok.md").read_text() == TEXT  # the rest syncs
    assert (laptop / "notes.md").read_bytes() == PNG and (laptop / "latin.md").read_bytes() == latin
    assert (laptop / "big.txt").read_text() == big
    assert (laptop / "link.md").is_symlink() and (tmp_path / "private.md").read_text() == (
        "my own file\n"
    )
    assert doc_text(server, TENANT, project, "notes.md") == TEXT  # nothing sent either

    # Moved away, or the project's text: in sync, nothing written over anything.
    for path in ("notes.md", "big.txt", "link.md"):
        (laptop / path).rename(tmp_path / f"{path}.mine")
    (laptop / "latin.md").write_text(TEXT)
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    for path in ("notes.md", "latin.md", "big.txt", "link.md"):
        assert (laptop / path).read_text() == TEXT and not (laptop / path).is_symlink()
    assert (tmp_path / "notes.md.mine").read_bytes() == PNG
    assert (tmp_path / "private.md").read_text() == "my own file\n"


def test_a_running_sync_writes_the_document_once_the_file_in_its_way_is_gone(
    server: ServerProcess, tmp_path: Path
) -> None:
    project = "running"
    project_of(tmp_path, server, project, ["notes.md"])
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    (laptop / "notes.md").write_bytes(PNG)
    running = start_sync(laptop, server.ws_url, TENANT, project, args=["--poll", "0.2"])
    try:
        running.wait_for("1 file(s) NOT in sync")
        assert "  notes.md: not written: the file there is binary" in running.output()
        assert (laptop / "notes.md").read_bytes() == PNG
        (laptop / "notes.md").unlink()
        wait_until(lambda: (laptop / "notes.md").is_file(), 10, "notes.md written")
        assert (laptop / "notes.md").read_text() == TEXT
        assert running.output().count("cannot write notes.md") == 1, running.output()
    finally:
        assert running.terminate() == 0, running.output()


async def test_the_status_line_counts_files_in_the_way_and_files_replaced_by_a_link(
    tmp_path: Path,
) -> None:
    """Device ``a`` makes ``f.txt`` and ``g.txt``; device ``b`` has a binary ``f.txt``
    of its own (never synced): "1 not written"; then ``a``'s ``g.txt`` is replaced by a
    link: "1 replaced by a link"."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f.txt").write_text(TEXT)
    (a / "g.txt").write_text(TEXT)
    (b / "f.txt").write_bytes(PNG)
    ui = _Ui(Console(file=io.StringIO()), quiet=False, verbose=False)
    async with (
        serve_in_process(app) as srv,
        Workspace(a, srv.ws_url, TENANT, "p", device_id="a") as ws_a,
    ):
        await ws_a.sync(10)
        async with Workspace(b, srv.ws_url, TENANT, "p", device_id="b") as ws_b:
            await ws_b.sync(10)
            assert set(ws_b.unwritable) == {"f.txt"}
            status = str(ui.status(ws_b))
            assert "1 not written" in status, status
            (b / "f.txt").unlink()
            ws_b.changed({"f.txt"})
            await ws_b.sync(10)
            assert (b / "f.txt").read_text() == TEXT
            status = str(ui.status(ws_b))
            assert not ws_b.unwritable and "not written" not in status, status

        (a / "g.txt").unlink()
        (a / "g.txt").symlink_to("f.txt")
        ws_a.changed({"g.txt"})
        await ws_a.sync(10)
        status = str(ui.status(ws_a))
        assert "1 replaced by a link" in status and "not written" not in status, status
        assert (a / "f.txt").read_text() == TEXT
