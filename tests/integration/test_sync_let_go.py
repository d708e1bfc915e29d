"""A running folder sync lets go of a deleted document (its doc, entry and link) once its
deletion is acknowledged, nothing of it waits and no file is at its path, as a start
leaves such a document closed: it kept every document it had opened loaded until it
stopped (the 2026-12-06 soak run: 62 -> 97 MB over 25 rounds that created and deleted
1,000 documents). Whatever can bring the document back still does: a file written at
its path (decided as a new file), a revival or an edit from elsewhere (the document list
shows it at another head), an offline edit made elsewhere before the deletion.

Real in-process servers, real folders and workspaces; the documents a device holds are
counted, not timed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from client.device import Device
from client.entry import DocEntry
from client.events import Event
from client.said import SaidConflicts
from client.testing import folder_files, get_json
from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import InProcessServer, serve_in_process, until

pytestmark = [pytest.mark.functional]

LIVE = {"keep.md": "kept\n"}


@contextlib.asynccontextmanager
async def server_at(tmp_path: Path, **settings: object) -> AsyncIterator[InProcessServer]:
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", **settings))  # type: ignore[arg-type]
    async with serve_in_process(app) as server:
        yield server


def workspace(server: InProcessServer, folder: Path, device_id: str | None = None) -> Workspace:
    folder.mkdir(exist_ok=True)
    return Workspace(
        folder,
        server.ws_url,
        "acme",
        "p",
        poll_seconds=0.1,
        idle_seconds=0.2,
        device_id=device_id,
    )


def write(folder: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)


async def on_disk(folder: Path, paths: Iterable[str], there: bool) -> None:
    """Wait until every file of ``paths`` is in ``folder`` (``there``), or none is."""
    names = [folder / path for path in paths]
    await until(lambda: all(name.exists() is there for name in names), 10)


async def delete_here(ws: Workspace, folder: Path, path: str) -> None:
    """Delete the file ``path`` of ``folder`` (``ws``'s) and sync the deletion."""
    (folder / path).unlink()
    ws.changed({path})
    await ws.sync(30)


async def let_go(ws: Workspace, *paths: str) -> None:
    """Wait until the device has let ``paths`` go (their links close once idle)."""
    await until(lambda: not set(paths) & set(ws.device.entries), 10)


async def server_text(server: InProcessServer, path: str) -> tuple[str, bool]:
    doc = await asyncio.to_thread(get_json, f"{server.url}/api/v1/acme/p/docs/{path}?format=json")
    return doc["text"], doc["deleted"]


async def test_documents_created_and_deleted_in_rounds_do_not_pile_up(tmp_path: Path) -> None:
    """Three rounds of 10 files created and deleted here, and 10 created and deleted on
    another device: the running device ends each round holding the live document
    only; and a restart opens only that one."""
    async with server_at(tmp_path, room_idle_seconds=0) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        write(a, LIVE)
        async with workspace(server, a) as ws, workspace(server, b) as other:
            await ws.sync(30)
            held: list[int] = []
            loaded: list[weakref.ref[Doc[Any]]] = []
            for round_ in range(3):
                mine = {f"build/{round_}/{i}.o": f"{round_} {i}\n" for i in range(10)}
                theirs = {f"gen/{round_}/{i}.txt": f"{round_} {i}\n" for i in range(10)}
                write(a, mine)
                ws.changed(set(mine))
                write(b, theirs)
                other.changed(set(theirs))
                await other.sync(30)
                await on_disk(a, theirs, True)
                await ws.sync(30)
                loaded += [weakref.ref(ws.device.entries[path].doc) for path in (*mine, *theirs)]
                for path in mine:
                    (a / path).unlink()
                ws.changed(set(mine))
                for path in theirs:
                    (b / path).unlink()
                other.changed(set(theirs))
                await other.sync(30)
                await on_disk(a, theirs, False)
                await ws.sync(30)
                await let_go(ws, *mine, *theirs)
                held.append(len(ws.device.entries))
                assert ws.tracked == set(LIVE)
                assert ws.progress() == (1, 1)
            assert held == [len(LIVE)] * 3
            await asyncio.sleep(0.3)  # a few polls: nothing deleted is opened again
            assert set(ws.device.entries) == set(LIVE)
            await ws.sync(30)  # (in sync with the documents let go)
            (a / "keep.md").write_text("kept, edited\n")  # (the recorder holds its last
            ws.changed({"keep.md"})  # batch until the next one)
            await ws.sync(30)
            gc.collect()
            assert [ref() for ref in loaded if ref() is not None] == []  # (memory freed)
            await until(lambda: (b / "keep.md").read_text() == "kept, edited\n", 10)
        url = f"{server.url}/api/v1/acme/p/docs"
        for _ in range(100):  # marked deleted in the list once their rooms unloaded
            docs = (await asyncio.to_thread(get_json, url))["docs"]
            if all(d.get("deleted") for d in docs if d["path"] not in LIVE):
                break
            await asyncio.sleep(0.05)
        async with workspace(server, a) as ws:  # a restart leaves them closed too
            await ws.sync(30)
            assert set(ws.device.entries) == set(LIVE)
        assert folder_files(a) == folder_files(b) == {"keep.md": b"kept, edited\n"}


async def test_a_file_written_again_at_the_path_brings_the_document_back(tmp_path: Path) -> None:
    async with server_at(tmp_path) as server:
        a = tmp_path / "a"
        write(a, {**LIVE, "old.md": "old text\n"})
        said: list[str] = []
        async with workspace(server, a) as ws:
            ws.on_event = lambda event: said.append(event.message)
            await ws.sync(30)
            held = weakref.ref(ws.device.entries["old.md"])
            held_doc = weakref.ref(ws.device.entries["old.md"].doc)
            await delete_here(ws, a, "old.md")
            await let_go(ws, "old.md")
            assert "old.md" not in ws.tracked and "old.md" not in ws.disk
            (a / "keep.md").write_text("kept, edited\n")  # (the recorder holds its last
            ws.changed({"keep.md"})  # batch, the deletion's, until the next one)
            await ws.sync(30)
            gc.collect()
            assert held() is None and held_doc() is None  # (nothing holds on to them)
            (a / "old.md").write_text("new text\n")
            ws.changed({"old.md"})
            await ws.sync(30)
            assert "old.md" in ws.device.entries and ws.disk["old.md"] == "new text\n"
        assert "old.md: brought back (+9 chars)" in said, said
        assert await server_text(server, "old.md") == ("new text\n", False)


async def test_a_document_brought_back_elsewhere_comes_back_here(tmp_path: Path) -> None:
    """Synced in an earlier run, deleted and let go in this one: brought back elsewhere,
    it is opened again in the state it was let go in (its deletion acknowledged, its
    base where it was), not as it was at start: with that state, the deletion went out
    again as an offline branch on the old base, after the revival."""
    async with server_at(tmp_path) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        write(a, {**LIVE, "old.md": "old text\n"})
        async with workspace(server, a) as ws:
            await ws.sync(30)
        async with workspace(server, b) as other:
            await other.sync(30)
        async with workspace(server, a) as ws:
            await ws.sync(30)
            await delete_here(ws, a, "old.md")
            await let_go(ws, "old.md")
            (b / "old.md").unlink()
            async with workspace(server, b) as other:  # (took the deletion in, and has
                await other.sync(30)  # no file: now brings it back)
                write(b, {"old.md": "back again\n"})
                other.changed({"old.md"})
                await other.sync(30)
            await until(lambda: (a / "old.md").exists(), 10)
            await ws.sync(30)
            assert (a / "old.md").read_text() == "back again\n"
            assert ws.disk["old.md"] == "back again\n"
            assert ws.device.updates_acked == 1  # (the deletion's, once)
            # edited here once back: sent as any edit
            (a / "old.md").write_text("back again\nand edited\n")
            ws.changed({"old.md"})
            await ws.sync(30)
        assert await server_text(server, "old.md") == ("back again\nand edited\n", False)
        conflicts = await asyncio.to_thread(get_json, f"{server.url}/api/v1/acme/p/conflicts")
        assert conflicts["conflicts"] == []


async def test_a_remote_edit_of_a_document_let_go_opens_it_again(tmp_path: Path) -> None:
    """An edit from elsewhere of the deleted text (a library device's; the document
    stays deleted) moves its head: the device opens it again, takes the edit in (no
    file: it stays deleted), and lets it go again."""
    async with server_at(tmp_path) as server:
        a = tmp_path / "a"
        write(a, {**LIVE, "old.md": "old text\n"})
        async with workspace(server, a) as ws:
            await ws.sync(30)
            async with Device(tmp_path / "lib", server.ws_url, "acme", "p") as other:
                doc = await other.doc("old.md")
                await other.sync(30)
                await delete_here(ws, a, "old.md")
                await let_go(ws, "old.md")
                await until(lambda: other.entries["old.md"].deleted, 10)
                head = ws.device.heads["old.md"]
                doc.get("content", type=Text).insert(0, "more ")
                await other.sync(30)
            await until(lambda: ws.device.heads["old.md"] != head, 10)
            await until(lambda: "old.md" in ws.device.entries, 10)
            await ws.sync(30)
            assert str(ws.device.entries["old.md"].text) == "more old text\n"
            await let_go(ws, "old.md")
            assert not (a / "old.md").exists()
        assert await server_text(server, "old.md") == ("more old text\n", True)


async def test_an_offline_edit_made_before_the_deletion_brings_it_back(tmp_path: Path) -> None:
    """Another device edits the file offline before this one deletes it; the server
    (``WEFT_BRING_BACK_EDITED``) brings the document back with that edit when the
    branch arrives: the device that let it go writes the file again."""
    async with server_at(tmp_path, bring_back_edited=True) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        write(a, {**LIVE, "old.md": "old text\n"})
        async with workspace(server, a) as ws:
            await ws.sync(30)
            async with workspace(server, b) as other:
                await other.sync(30)
            (b / "old.md").write_text("old text\nedited offline\n")  # b not running
            await delete_here(ws, a, "old.md")
            await let_go(ws, "old.md")
            async with workspace(server, b) as other:
                await other.sync(30)
            await until(lambda: (a / "old.md").exists(), 10)
            await ws.sync(30)
            assert (a / "old.md").read_text() == "old text\nedited offline\n"
        assert await server_text(server, "old.md") == ("old text\nedited offline\n", False)


async def test_a_conflict_record_about_a_document_let_go_is_said(tmp_path: Path) -> None:
    """desk deletes a file and lets its document go; laptop, offline, had edited it:
    laptop's branch makes an edit/delete record, and the running desk is told of it
    from the project's conflict list (``weft sync``'s ``SaidConflicts``), as when the
    document was loaded (the record holds the edit: the document stays deleted, at the
    head desk had seen, and closed)."""
    async with server_at(tmp_path) as server:
        desk, laptop = tmp_path / "desk", tmp_path / "laptop"
        write(desk, {**LIVE, "notes.md": "one\ntwo\n"})
        async with workspace(server, desk, "desk") as ws:
            await ws.sync(30)
        async with workspace(server, laptop, "laptop") as other:
            await other.sync(30)
        (laptop / "notes.md").write_text("one\ntwo edited offline\n")
        said: list[Event] = []
        async with workspace(server, desk, "desk") as ws:
            conflicts = SaidConflicts(ws)
            ws.on_event = said.append
            await ws.sync(30)
            following = asyncio.create_task(conflicts.follow())
            try:
                await delete_here(ws, desk, "notes.md")
                await let_go(ws, "notes.md")
                async with workspace(server, laptop, "laptop") as other:
                    await other.sync(30)
                await until(lambda: any(e.kind == "conflict" for e in said), 10)
            finally:
                following.cancel()
            [line] = [e.message for e in said if e.kind == "conflict"]
            assert "conflict: notes.md: deleted here while edited on laptop" in line, line
            await ws.sync(30)  # (the record holds the edit: the head did not move)
            assert "notes.md" not in ws.device.entries and not (desk / "notes.md").exists()


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_file_written_as_the_document_is_let_go_brings_it_back(
    tmp_path: Path, when: str
) -> None:
    """A file written at the path just before the device would let the document go (its
    link just closed, the watcher not heard from yet), or just after: either way the
    file is decided with the server's version at hand and brings the document back."""
    async with server_at(tmp_path) as server:
        a = tmp_path / "a"
        write(a, {**LIVE, "old.md": "old text\n"})
        async with workspace(server, a) as ws:
            await ws.sync(30)
            await delete_here(ws, a, "old.md")
            let_go_now = ws._let_go

            def racing(path: str) -> None:
                if path != "old.md":
                    return let_go_now(path)
                if when == "after":
                    let_go_now(path)
                (a / path).write_text("written meanwhile\n")
                if when == "before":
                    let_go_now(path)

            ws._let_go = racing  # type: ignore[method-assign]
            await until(lambda: (a / "old.md").exists(), 10)
            assert ("old.md" in ws.device.entries) is (when == "before")
            ws._let_go = let_go_now  # type: ignore[method-assign]
            ws.changed({"old.md"})  # (the watcher's word)
            await ws.sync(30)
            assert ws.disk["old.md"] == "written meanwhile\n"
        assert await server_text(server, "old.md") == ("written meanwhile\n", False)


async def test_a_deletion_not_sent_yet_keeps_its_document(tmp_path: Path) -> None:
    """Deleted while offline, the document is not let go (its deletion waits to be
    sent: ``Device.let_go`` refuses too); back online, the deletion is sent, and then
    the document is let go."""
    async with server_at(tmp_path) as server:
        a = tmp_path / "a"
        write(a, {**LIVE, "old.md": "old text\n"})
        async with workspace(server, a) as ws:
            await ws.sync(30)
            await ws.device.pause()
            (a / "old.md").unlink()
            ws.changed({"old.md"})
            await until(lambda: ws.device.pending() == 1, 5)
            await asyncio.sleep(0.4)  # (twice the idle time)
            assert "old.md" in ws.device.entries and not ws.device.let_go("old.md")
            ws.device.resume()
            await ws.sync(30)
            await let_go(ws, "old.md")
        assert await server_text(server, "old.md") == ("old text\n", True)


async def test_a_deletion_found_at_start_is_let_go_once_sent(tmp_path: Path) -> None:
    """A file deleted while the sync was down: the start opens its document, takes the
    deletion in and sends it; the document is let go once that is acknowledged, also
    when its link closed before the start ended (another document's opening took
    longer)."""
    async with server_at(tmp_path) as server:
        a = tmp_path / "a"
        write(a, {**LIVE, "old.md": "old text\n"})
        async with workspace(server, a) as ws:
            await ws.sync(30)
        (a / "old.md").unlink()
        ws = workspace(server, a)
        device = ws.device
        open_now = device.open

        def old_done() -> bool:  # (its deletion acknowledged, its link closed for good)
            entry = device.entries.get("old.md")
            return entry is not None and entry.deleted and device._quiet(entry)

        async def slow_open(path: str, *, connect: bool = True) -> DocEntry:
            if path in LIVE and connect:
                await until(old_done, 10)
            return await open_now(path, connect=connect)

        device.open = slow_open  # type: ignore[method-assign]
        async with ws:
            await let_go(ws, "old.md")
            await ws.sync(30)
        assert await server_text(server, "old.md") == ("old text\n", True)


async def test_a_link_wanted_again_as_the_document_is_let_go_keeps_it(tmp_path: Path) -> None:
    """The document's link wanted again just as the device would let it go (a heads
    read found its head moved, say): it is kept, loaded and connected (a remote update
    may be on its way), and let go once that link closed in its turn."""
    async with server_at(tmp_path) as server:
        a = tmp_path / "a"
        write(a, {**LIVE, "old.md": "old text\n"})
        async with workspace(server, a) as ws:
            await ws.sync(30)
            await delete_here(ws, a, "old.md")
            let_go_now = ws._let_go
            kept: list[bool] = []

            def racing(path: str) -> None:
                if path != "old.md":
                    return let_go_now(path)
                ws.device.entries[path].link.want()
                let_go_now(path)
                kept.append(path in ws.device.entries)
                ws._let_go = let_go_now  # type: ignore[method-assign]

            ws._let_go = racing  # type: ignore[method-assign]
            await until(lambda: bool(kept), 10)
            assert kept == [True]
            await let_go(ws, "old.md")
