"""A file written where a document was deleted brings the document back, decided with
the server's version at hand, as a new file at a path that never held one is: while the
server still has it deleted, the file's text goes in whole, in place of the deletion's;
once another device brought it back first, the server's version stays and the file's
text goes into a conflict report and a copy in ``DIR/.weft/conflicts/`` (also when
both decide at once: the server stores the first revival and refuses the other, see
``client.newfiles``). Real server process, real ``weft sync`` processes, two folders
(the race of two devices deciding at once: an in-process server and two workspaces).

Found by the 2026-12-05 end-to-end offline runner: the revival was taken in offline, as
an edit of the deleted text. A restore of the old text (no text changed, only the
deletion flag) then silently became another device's revived text; two new texts were
interleaved character by character (``hello world`` and ``hello there`` became
``hhello lloworered``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from client.connection import DocLink
from client.remote import Api
from client.testing import folder_files, get_json, start_sync, sync_once
from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import ServerProcess, StartServer, serve_in_process

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT, PROJECT = "acme", "site"
OLD = "old text\nsecond line\n"


@contextlib.asynccontextmanager
async def deleted_in_two_folders(
    tmp_path: Path,
) -> AsyncIterator[tuple[Path, Path, Callable[[Path], Workspace]]]:
    """An in-process server and two folders, a and b, that both synced ``notes.md``
    and then its deletion; yields them and how to open a workspace on either."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()

        def workspace(folder: Path) -> Workspace:
            return Workspace(folder, server.ws_url, "acme", "p", poll_seconds=0.1)

        for step in (lambda: (a / "notes.md").write_text(OLD), lambda: (a / "notes.md").unlink()):
            step()
            for folder in (a, b):
                async with workspace(folder) as ws:
                    await ws.sync(30)
        assert folder_files(a) == folder_files(b) == {}
        yield a, b, workspace


def _sync(folder: Path, server: ServerProcess, *args: str) -> str:
    result = sync_once(folder, server.ws_url, TENANT, PROJECT, args=args)
    assert result.returncode == 0, result.stdout
    return result.stdout


def _deleted_everywhere(server: ServerProcess, tmp_path: Path) -> tuple[Path, Path]:
    """Folders a and b that both synced notes.md (text OLD), then its deletion by a."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    (a / "notes.md").write_text(OLD)
    for folder in (a, b):
        _sync(folder, server)
    (a / "notes.md").unlink()
    for folder in (a, b):
        _sync(folder, server)
    assert folder_files(a) == folder_files(b) == {}
    return a, b


def _server_doc(server: ServerProcess) -> dict[str, Any]:
    url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs/notes.md?format=json"
    doc: dict[str, Any] = get_json(url)
    return doc


def _records(server: ServerProcess) -> list[dict[str, Any]]:
    url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts"
    records: list[dict[str, Any]] = get_json(url)["conflicts"]
    return records


def _copies(folder: Path) -> list[Path]:
    return sorted((folder / ".weft" / "conflicts").glob("notes.md.*"))


def test_a_restore_that_meets_another_devices_revival_is_kept_in_a_copy(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory()
    a, b = _deleted_everywhere(server, tmp_path)
    (a / "notes.md").write_text(OLD)  # a restores the old text, offline
    (b / "notes.md").write_text("new text\n")  # b brings it back with another, offline

    first = _sync(b, server, "-v")
    second = _sync(a, server)

    assert (a / "notes.md").read_text() == "new text\n"  # the first to the server wins
    [copy] = _copies(a)
    assert copy.read_text() == OLD
    assert "conflict: notes.md differs from the server's version, which stays" in second
    assert f"and in {copy}" in second, second
    assert "1 conflict(s) recorded" in second, second
    [record] = _records(server)
    assert record["base"] == "" and record["path"] == "notes.md"
    [region] = record["regions"]
    assert (region["ours_text"], region["theirs_text"]) == (OLD, "new text\n")
    doc = _server_doc(server)
    assert doc["text"] == "new text\n" and not doc["deleted"]
    assert _copies(b) == [] and folder_files(b) == folder_files(a)
    assert "notes.md: brought back (+" in first and "conflict" not in first, first


def test_two_files_written_where_a_document_was_deleted_are_not_interleaved(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory()
    a, b = _deleted_everywhere(server, tmp_path)
    (a / "notes.md").write_text("hello world\n")
    (b / "notes.md").write_text("hello there\n")

    _sync(b, server)
    second = _sync(a, server)

    doc = _server_doc(server)
    assert doc["text"] == "hello there\n" and not doc["deleted"]
    assert folder_files(a) == folder_files(b) == {"notes.md": b"hello there\n"}
    [copy] = _copies(a)
    assert copy.read_text() == "hello world\n"
    assert f"and in {copy}" in second, second
    [record] = _records(server)  # the report: no branch record of interleaved texts
    [region] = record["regions"]
    assert (region["ours_text"], region["theirs_text"]) == ("hello world\n", "hello there\n")


def test_a_file_restored_while_syncing_brings_its_document_back_everywhere(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Nobody else brought it back: the restore is the document's text again, no
    record, and the other device writes the file."""
    server = weft_server_factory()
    a, b = _deleted_everywhere(server, tmp_path)
    args = ["--poll", "0.2"]
    devices = [start_sync(f, server.ws_url, TENANT, PROJECT, args=args) for f in (a, b)]
    try:
        for device in devices:
            device.wait_for("in sync")
        (a / "notes.md").write_text(OLD)
        devices[0].wait_for("notes.md: brought back (its text as it was)")
        devices[1].wait_for("notes.md new (remote)")
        assert (b / "notes.md").read_text() == OLD
        assert _server_doc(server)["text"] == OLD and _records(server) == []
    finally:
        for device in devices:
            device.terminate()


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(OLD, "new text\n"), ("hello world\n", "hello there\n"), ("same\n", "same\n")],
)
async def test_two_devices_bringing_a_document_back_at_once_the_first_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ours: str, theirs: str
) -> None:
    """Both decide while the server still has the document deleted (each one's revival
    held here until both have decided, as two devices within one round trip): the first
    stored wins, the other is refused (the document changed since the version it
    decided on) and decides again: its text, unless the same, goes into a copy (and a
    record). Before, both were stored: the document held both texts' new lines, one
    after the other, with no record and no copy (and, edited into the deletion's text,
    a restore had become the other's text, and two new texts were interleaved)."""
    async with deleted_in_two_folders(tmp_path) as (a, b, workspace):
        (a / "notes.md").write_text(ours)
        (b / "notes.md").write_text(theirs)

        create = DocLink.create
        decided: list[str] = []
        both = asyncio.Event()

        async def at_once(self: DocLink, state_vector: bytes, update: bytes) -> Any:
            decided.append(self.entry.path)
            if len(decided) == 2:
                both.set()
            await both.wait()
            return await create(self, state_vector, update)

        monkeypatch.setattr(DocLink, "create", at_once)
        async with workspace(a) as first, workspace(b) as second:
            await asyncio.gather(first.sync(30), second.sync(30))
            assert decided == ["notes.md", "notes.md"]
            async with asyncio.timeout(10):
                while len({(a / "notes.md").read_text(), (b / "notes.md").read_text()}) > 1:
                    await asyncio.sleep(0.05)
            await asyncio.gather(first.sync(30), second.sync(30))
    won = (a / "notes.md").read_text()
    assert won in (ours, theirs)
    for folder, text in ((a, ours), (b, theirs)):
        if text == won:
            assert _copies(folder) == []
        else:
            assert [copy.read_text() for copy in _copies(folder)] == [text]


def test_an_offline_edit_from_before_a_deletion_lands_in_place_after_a_restore(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """c edits line 3 offline, from before b's deletion and a's restore of the same
    text: the edit lands on line 3. With the restore replacing the whole text, it was
    put at the start of the document ("TOKx one"), the characters it was made next to
    being deleted (found by the 2026-12-05 end-to-end runner)."""
    server = weft_server_factory()
    a, b, c = (tmp_path / name for name in "abc")
    for folder in (a, b, c):
        folder.mkdir()
    text = "x one\ny two\nz three"
    (a / "c.txt").write_text(text)
    for folder in (a, b, c):
        _sync(folder, server)
    (c / "c.txt").write_text(text + "\n")
    _sync(c, server)
    (b / "c.txt").unlink()  # its base is from before c's edit
    _sync(b, server)
    _sync(a, server)
    assert folder_files(a) == {}
    (a / "c.txt").write_text(text + "\n")  # the text it was deleted with, back
    said = _sync(a, server, "-v")
    assert "c.txt: brought back (its text as it was)" in said, said
    (c / "c.txt").write_text("x one\ny two\nz threeTOK\n")  # offline since its edit
    _sync(c, server)
    for folder in (a, b, c):
        _sync(folder, server)
    url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs/c.txt?format=json"
    final = get_json(url)["text"]
    assert final == "x one\ny two\nz threeTOK\n", final
    assert folder_files(a) == folder_files(b) == folder_files(c)


async def test_a_document_deleted_again_while_the_report_is_on_its_way_goes_from_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b brought the document back first; while a's report of its own text is on its
    way, b deletes it again. a's file then goes (a's text is in the record and the
    copy): it was left holding b's text, the deleted document's, as if it were synced,
    until a's next run (the deletion that came meanwhile was not written: the file was
    being decided)."""
    async with deleted_in_two_folders(tmp_path) as (a, b, workspace):

        async def sync(folder: Path) -> None:
            async with workspace(folder) as ws:
                await ws.sync(30)

        (b / "notes.md").write_text("b's text\n")
        await sync(b)
        (a / "notes.md").write_text("a's text\n")

        report = Api.report_conflict
        deciding: list[Workspace] = []

        async def deleted_meanwhile(self: Api, *args: Any) -> dict[str, Any]:
            record = await report(self, *args)
            (b / "notes.md").unlink()
            await sync(b)
            entry = deciding[0].device.entries["notes.md"]
            async with asyncio.timeout(10):
                while not entry.deleted:  # (the deletion has reached a)
                    await asyncio.sleep(0.05)
            return record

        monkeypatch.setattr(Api, "report_conflict", deleted_meanwhile)
        async with workspace(a) as ws:
            deciding.append(ws)
            await ws.sync(30)
        assert len(ws.conflicts) == 1
    assert folder_files(a) == folder_files(b) == {}
    [copy] = _copies(a)
    assert copy.read_text() == "a's text\n"
