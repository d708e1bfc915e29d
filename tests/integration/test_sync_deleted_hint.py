"""A new device does not open the deleted documents of a project (a rename leaves one):
the document list says ``"deleted": true`` for a document a server's room saw deleted at
the head listed (``server.rooms``), and a device that has neither a file nor a history of
such a document leaves it closed, until the list shows it at another head (brought back
elsewhere) or a file is written at its path (decided as before). Before, a new device's
first sync opened every one (the server loading each: snapshot and tail) only to learn
that it was deleted, and counted them as files in its progress line. A device that
synced such a document and knows it deleted, none of its edits waiting, leaves it closed
too (it opened every one at every start).

Real servers (in process, and a ``python -m server`` process with real ``weft sync
--once`` processes), real folders; the documents loaded recorded from the server's rooms
(in process) or counted by its metrics (a process)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.testing import folder_files, get_json, sync_once, wait_until
from client.workspace import Workspace
from crdt.history import DocRef
from server.app import create_app
from server.appkeys import METRICS, ROOMS
from server.config import Settings
from server.metrics import Metrics
from server.rooms import Room
from server.testing import (
    InProcessServer,
    StartServer,
    call_api,
    free_port,
    serve_in_process,
    until,
)

pytestmark = [pytest.mark.functional]

LIVE = {"keep.md": "kept\n", "notes/plan.md": "plan\n"}
GONE = ("old.md", "notes/draft.md", "renamed-from.md")


@contextlib.asynccontextmanager
async def project_with_deletions(tmp_path: Path) -> AsyncIterator[tuple[InProcessServer, Path]]:
    """An in-process server whose rooms unload as soon as their last peer leaves, and
    folder ``a`` that synced LIVE and GONE, then deleted GONE; the server has marked
    them deleted (its rooms unloaded)."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", room_idle_seconds=0))
    async with serve_in_process(app) as server:
        a = tmp_path / "a"
        for path, text in {**LIVE, **dict.fromkeys(GONE, "gone\n")}.items():
            (a / path).parent.mkdir(parents=True, exist_ok=True)
            (a / path).write_text(text)
        async with workspace(server, a) as ws:
            await ws.sync(30)
            for path in GONE:
                (a / path).unlink()
            ws.changed(set(GONE))
            await ws.sync(30)
        await until(lambda: metrics(server).deleted_marks.get() == len(GONE), 5)
        yield server, a


def workspace(server: InProcessServer, folder: Path) -> Workspace:
    folder.mkdir(exist_ok=True)
    return Workspace(folder, server.ws_url, "acme", "p", poll_seconds=0.1, idle_seconds=0.2)


def metrics(server: InProcessServer) -> Metrics:
    return server.app[METRICS]


def record_loads(server: InProcessServer) -> list[str]:
    """The paths of the documents the server loads from now on (its rooms unload as soon
    as their last peer leaves, so a document whose link closed and opened again, a slow
    machine's reconnect, is loaded again: the paths, not how many loads, are the test)."""
    rooms = server.app[ROOMS]
    paths: list[str] = []
    load = rooms._load

    async def recorded(ref: DocRef) -> Room:
        paths.append(ref.path)
        return await load(ref)

    rooms._load = recorded  # type: ignore[method-assign]
    return paths


async def listed(server: InProcessServer) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        status, body = await call_api(http, "GET", f"{server.url}/api/v1/acme/p/docs")
    assert status == 200
    return {doc["path"]: doc for doc in body["docs"]}


async def test_a_new_device_opens_no_deleted_document(tmp_path: Path) -> None:
    async with project_with_deletions(tmp_path) as (server, a):
        docs = await listed(server)
        assert {path for path, doc in docs.items() if doc.get("deleted") is True} == set(GONE)
        assert all("deleted" not in docs[path] for path in LIVE)  # absent: not known deleted
        loads = record_loads(server)
        async with workspace(server, tmp_path / "b") as ws:
            await ws.sync(30)
            assert ws.progress() == (len(LIVE), len(LIVE))
            assert set(ws.device.entries) == set(LIVE) and ws.tracked == set(LIVE)
            await asyncio.sleep(0.3)  # a few polls (304s): still not opened
            assert set(ws.device.entries) == set(LIVE)
        assert sorted(set(loads)) == sorted(LIVE)
        assert folder_files(tmp_path / "b") == folder_files(a)


async def test_a_document_brought_back_elsewhere_reaches_a_device_that_left_it_closed(
    tmp_path: Path,
) -> None:
    async with project_with_deletions(tmp_path) as (server, a):
        b = tmp_path / "b"
        async with workspace(server, b) as ws_b:
            await ws_b.sync(30)
            assert not (b / "old.md").exists() and "old.md" not in ws_b.device.entries
            (a / "old.md").write_text("back again\n")
            async with workspace(server, a) as ws_a:
                await ws_a.sync(30)
            assert "deleted" not in (await listed(server))["old.md"]  # another head now
            await until(lambda: (b / "old.md").exists(), 10)
            await ws_b.sync(30)
            assert (b / "old.md").read_text() == "back again\n"
            assert "notes/draft.md" not in ws_b.device.entries  # the others stay closed


async def test_a_file_at_a_deleted_documents_path_is_decided_as_before(tmp_path: Path) -> None:
    """On a new device, a file found at start where a deleted document was, and one
    written there after the first sync, bring their documents back as they did (the
    document is opened for the decision); the other deleted documents stay closed."""
    async with project_with_deletions(tmp_path) as (server, _):
        c = tmp_path / "c"
        c.mkdir()
        (c / "old.md").write_text("mine\n")
        said: list[str] = []
        loads = record_loads(server)
        async with workspace(server, c) as ws:
            ws.on_event = lambda event: said.append(event.message)
            await ws.sync(30)
            (c / "notes" / "draft.md").write_text("draft again\n")
            ws.changed({"notes/draft.md"})
            await ws.sync(30)
            assert set(ws.device.entries) == {*LIVE, "old.md", "notes/draft.md"}
        assert "old.md: brought back (+5 chars)" in said, said
        assert "notes/draft.md: brought back (+12 chars)" in said, said
        assert sorted(set(loads)) == sorted({*LIVE, "old.md", "notes/draft.md"})
        for path, text in {"old.md": "mine\n", "notes/draft.md": "draft again\n"}.items():
            url = f"{server.url}/api/v1/acme/p/docs/{path}?format=json"
            doc = await asyncio.to_thread(get_json, url)
            assert (doc["text"], doc["deleted"]) == (text, False)


async def test_a_device_that_synced_the_deletions_leaves_them_closed_at_its_next_start(
    tmp_path: Path,
) -> None:
    """The folder that deleted them (its deletions acknowledged, no file there) opens
    only the live documents when started again, as a new device does: it opened every
    deleted one at every start. A file written at one's path later is decided as
    before (brought back)."""
    async with project_with_deletions(tmp_path) as (server, a):
        loads = record_loads(server)
        said: list[str] = []
        async with workspace(server, a) as ws:
            ws.on_event = lambda event: said.append(event.message)
            await ws.sync(30)
            assert set(ws.device.entries) == set(LIVE) and ws.tracked == set(LIVE)
            assert ws.progress() == (len(LIVE), len(LIVE))
            await asyncio.sleep(0.3)  # a few polls (304s): still not opened
            assert set(ws.device.entries) == set(LIVE)
            (a / "old.md").write_text("back\n")
            ws.changed({"old.md"})
            await ws.sync(30)
            assert set(ws.device.entries) == {*LIVE, "old.md"}
        assert "old.md: brought back (+5 chars)" in said, said
        assert sorted(set(loads)) == sorted({*LIVE, "old.md"})
        url = f"{server.url}/api/v1/acme/p/docs/old.md?format=json"
        doc = await asyncio.to_thread(get_json, url)
        assert (doc["text"], doc["deleted"]) == ("back\n", False)


async def test_a_deletion_made_while_the_sync_was_down_is_sent_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A file deleted here whose deletion the server has not had yet (found at a start
    with the server unreachable) is still sent by the next start: the list does not say
    it is deleted, so it is opened (and its file state is stamped after the acknowledged
    update: not set aside either)."""
    async with project_with_deletions(tmp_path) as (server, a):
        (a / "keep.md").unlink()
        offline = Workspace(a, f"ws://127.0.0.1:{free_port()}", "acme", "p", poll_seconds=0.1)
        async with offline:  # (nothing listening: the deletion is recorded, not sent)
            await until(lambda: offline.disk.get("keep.md", "") is None, 5)
        async with workspace(server, a) as ws:
            await ws.sync(30)
            assert "keep.md" in ws.device.entries
        url = f"{server.url}/api/v1/acme/p/docs/keep.md?format=json"
        doc = await asyncio.to_thread(get_json, url)
        assert doc["deleted"] is True


@pytest.mark.slow
def test_weft_sync_on_a_new_folder_opens_no_deleted_document(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Real processes: ``weft sync --once`` deletes two files (a rename and a delete);
    a new folder's ``weft sync --once`` then loads only the live documents' rooms, and
    its summary counts the live files."""
    server = weft_server_factory(env={"WEFT_ROOM_IDLE_SECONDS": "0"})
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for name in ("one.md", "two.md", "three.md"):
        (a / name).write_text(f"{name}\n")

    def sync(folder: Path) -> str:
        result = sync_once(folder, server.ws_url, "acme", "p")
        assert result.returncode == 0, result.stdout
        return result.stdout

    sync(a)
    (a / "one.md").rename(a / "uno.md")
    (a / "two.md").unlink()
    sync(a)
    url = f"{server.url}/api/v1/acme/p/docs"

    def marked() -> bool:
        return {d["path"] for d in get_json(url)["docs"] if d.get("deleted")} == {
            "one.md",
            "two.md",
        }

    wait_until(marked, 5, "the deleted documents marked")
    before = len(server.log())
    out = sync(b)
    # Which rooms b's connections asked for, from the server's access lines (one per
    # connection, once closed): a count of room loads also counted a live document's
    # room loaded again when a link reconnected (3 loads, seen under load).
    asked: set[str] = set()

    def logged() -> bool:
        asked.update(re.findall(r" GET /ws/acme/p/(\S+) 101 ", server.log()[before:]))
        return {"three.md", "uno.md"} <= asked

    wait_until(logged, 10, "b's connections logged")
    assert asked == {"three.md", "uno.md"}, asked
    assert "in sync: 2 files" in out, out
    assert folder_files(b) == folder_files(a)
