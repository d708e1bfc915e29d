"""A synced file that grows past the size limit (4 MiB) stops syncing, and says so on
every device; back under the limit, it syncs again (README, "Syncing a folder";
:mod:`client.unsynced`). A new file still being written is taken in once it is quiet,
so one that ends over the limit is never sent in part (:mod:`client.newfiles`). Real
``weft sync`` processes on a real server, and folder workspaces on a server in this
process for the cases that need a smaller limit or a shorter wait."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from client import newfiles
from client.events import Event
from client.folder import MAX_FILE_BYTES
from client.testing import doc_text, get_text, start_sync, sync_named
from client.unsynced import OVER_LIMIT
from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import ServerProcess, StartServer, serve_in_process, until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
TEXT = "line 1\nline 2\n"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def test_a_file_grown_past_the_limit_is_not_in_sync_and_every_device_says_so(
    server: ServerProcess, tmp_path: Path
) -> None:
    """It was "skipping big.txt" on the writing device, and "in sync" on both."""
    project = "grown"
    laptop, desk = tmp_path / "laptop", tmp_path / "desk"
    laptop.mkdir()
    desk.mkdir()
    (laptop / "big.txt").write_text(TEXT)
    (laptop / "small.txt").write_text(TEXT)
    for folder in (laptop, desk):
        assert sync_named(folder, server, TENANT, project)[0] == 0
    over = TEXT + "x" * MAX_FILE_BYTES + "\n"
    (laptop / "big.txt").write_text(over)

    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 1, out
    assert "1 file(s) NOT in sync" in out and "in sync:" not in out, out
    limit = f"over the {MAX_FILE_BYTES}-byte limit"
    assert f"big.txt is {len(over)} bytes, {limit}: no longer synced" in out, out
    assert f"big.txt: {len(over)} bytes, {limit}: not synced" in out, out
    assert "skipping" not in out, out
    assert (laptop / "big.txt").read_text() == over  # never written over
    # a later run: still not in sync, said once
    code, again = sync_named(laptop, server, TENANT, project)
    assert code == 1 and again.count("no longer synced") == 1, again

    (desk / "small.txt").write_text(TEXT + "line 3 from desk\n")  # still syncs
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    assert "big.txt is over the size limit on device laptop" in out, out
    assert "this copy holds its last synced text" in out, out
    assert (desk / "big.txt").read_text() == TEXT
    (desk / "big.txt").write_text(TEXT + "line 3 from desk\n")  # edited elsewhere meanwhile
    assert sync_named(desk, server, TENANT, project)[0] == 0

    # Back under the limit: synced again, merged with the edit made elsewhere.
    (laptop / "big.txt").write_text("line 0 from laptop\n" + TEXT)
    code, out = sync_named(laptop, server, TENANT, project)
    assert code == 0 and "in sync:" in out, out
    merged = "line 0 from laptop\n" + TEXT + "line 3 from desk\n"
    assert (laptop / "big.txt").read_text() == merged
    assert doc_text(server, TENANT, project, "big.txt") == merged
    assert (laptop / "small.txt").read_text() == TEXT + "line 3 from desk\n"
    code, out = sync_named(desk, server, TENANT, project)
    assert code == 0 and "over the size limit" not in out, out
    assert (desk / "big.txt").read_text() == merged


def test_a_running_sync_says_once_and_syncs_the_file_again_once_under_the_limit(
    server: ServerProcess, tmp_path: Path
) -> None:
    project = "running"
    laptop, desk = tmp_path / "laptop", tmp_path / "desk"
    laptop.mkdir()
    desk.mkdir()
    (laptop / "big.txt").write_text(TEXT)
    assert sync_named(laptop, server, TENANT, project)[0] == 0
    args = ["--device-id", "laptop", "--poll", "0.2"]
    running = start_sync(laptop, server.ws_url, TENANT, project, args=args)
    other = start_sync(desk, server.ws_url, TENANT, project, args=["--device-id", "desk"])
    try:
        running.wait_for("in sync")
        other.wait_for("in sync")
        # saved past the limit at once (a temporary file renamed over it: a growth in
        # steps is synced up to the limit, as any edit)
        (tmp_path / "saved").write_text(TEXT + "y" * MAX_FILE_BYTES + "\n")
        (tmp_path / "saved").rename(laptop / "big.txt")
        running.wait_for("no longer synced")
        other.wait_for("big.txt is over the size limit on device laptop")
        assert doc_text(server, TENANT, project, "big.txt") == TEXT
        (laptop / "big.txt").write_text(TEXT + "line 3\n")
        running.wait_for("big.txt is back under")
        deadline = time.monotonic() + 10
        while (desk / "big.txt").read_text() != TEXT + "line 3\n":
            assert time.monotonic() < deadline, other.output()
            time.sleep(0.05)
        assert running.output().count("no longer synced") == 1, running.output()
        assert "not writing" not in running.output()
    finally:
        running.terminate()
        other.terminate()


def _write_slowly(path: Path, chunks: list[str], pause: float) -> threading.Thread:
    """Write ``chunks`` to a new file ``path``, ``pause`` seconds apart (a download)."""

    def write() -> None:
        with path.open("w") as out:
            for chunk in chunks:
                out.write(chunk)
                out.flush()
                time.sleep(pause)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


async def test_a_new_file_still_being_written_is_sent_whole_or_not_at_all(tmp_path: Path) -> None:
    """Files written in steps (a download, a slow ``cp``) are taken in once quiet: those
    that end under the limit go out whole, in one piece (a small one, written 0.02 s
    apart; a large one, 0.3 s apart); one that ends over it is never sent. Each was
    sent as it was at the first look, the rest as edits, until it passed the limit."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    said: list[Event] = []
    folder = tmp_path / "f"
    folder.mkdir()
    limit = 1 << 20
    async with serve_in_process(app) as srv:
        ws = Workspace(folder, srv.ws_url, TENANT, "p", on_event=said.append, max_file_bytes=limit)
        async with ws:
            await ws.sync(10)
            watching = asyncio.create_task(ws.watch())
            await asyncio.sleep(0.3)  # (the watcher is up)
            texts = {
                "small.txt": ([f"line {n}\n" for n in range(30)], 0.02),
                "large.txt": ([f"{n}" * (100 << 10) + "\n" for n in range(5)], 0.3),
                "over.txt": ([f"{n}" * (300 << 10) + "\n" for n in range(4)], 0.3),
            }
            writers = [_write_slowly(folder / name, *how) for name, how in texts.items()]
            for writer in writers:
                await asyncio.to_thread(writer.join)
            await asyncio.sleep(0.2)
            await ws.sync(10)
            watching.cancel()
            docs = f"{srv.url}/api/v1/{TENANT}/p/docs"
            for name in ("small.txt", "large.txt"):
                whole = "".join(texts[name][0])
                assert await asyncio.to_thread(get_text, f"{docs}/{name}") == whole
                assert f"{name}: new (+{len(whole)} chars)" in [e.message for e in said]
            assert len([e for e in said if e.kind == "local"]) == 2, said
            assert await asyncio.to_thread(get_text, f"{docs}/over.txt") is None
            assert "over.txt" not in ws.device.entries and "over.txt" not in ws.tracked
            over = len("".join(texts["over.txt"][0]))
            warnings = [e.message for e in said if e.kind == "warning"]
            assert warnings == [f"skipping over.txt: {over} bytes, over {limit}"]


async def test_a_new_file_written_for_ever_is_taken_as_it_stands_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for a quiet file is bounded (``NEW_FILE_PATIENCE``, here 0.5 s): a log
    written to every 0.02 s syncs, said once."""
    monkeypatch.setattr(newfiles, "NEW_FILE_PATIENCE", 0.5)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    said: list[Event] = []
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "app.log").write_text("start\n")
    stop = threading.Event()

    def log() -> None:
        with (folder / "app.log").open("a") as out:
            while not stop.is_set():
                out.write("tick\n")
                out.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=log)
    writer.start()
    try:
        async with serve_in_process(app) as srv:
            started = time.monotonic()
            ws = Workspace(folder, srv.ws_url, TENANT, "p", on_event=said.append)
            async with ws:
                await ws.sync(10)
                assert 0.5 <= time.monotonic() - started < 5
                assert "app.log" in ws.tracked
                assert str(ws.device.entries["app.log"].text).startswith("start\ntick\n")
    finally:
        stop.set()
        writer.join()
    warnings = [e.message for e in said if e.kind == "warning"]
    assert warnings == [
        "app.log is still being written after 0.5 s: synced as it is now (what is written "
        "next follows as edits)"
    ]


async def test_deleting_a_file_over_the_limit_clears_the_flag(tmp_path: Path) -> None:
    """The flag (``weft.over_limit``) names the device; deleting its file clears it, so
    the document, brought back later, is not said to be over the limit anywhere."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f.txt").write_text(TEXT)
    said: list[Event] = []
    async with serve_in_process(app) as srv:
        url = srv.ws_url
        ws_a = Workspace(a, url, TENANT, "p", device_id="a", max_file_bytes=100)
        ws_b = Workspace(b, url, TENANT, "p", device_id="b", on_event=said.append)
        async with ws_a, ws_b:
            await ws_a.sync(10)
            await ws_b.sync(10)
            (a / "f.txt").write_text("x" * 200)
            ws_a.changed({"f.txt"})
            await ws_a.sync(10)
            assert ws_a.device.entries["f.txt"].meta.get(OVER_LIMIT) == "a"
            await ws_b.sync(10)
            await until(lambda: any("on device a" in e.message for e in said))
            (a / "f.txt").unlink()
            ws_a.changed({"f.txt"})
            await ws_a.sync(10)
            assert OVER_LIMIT not in ws_a.device.entries["f.txt"].meta
            assert ws_a.unsynced.files == {}
            await until(lambda: not (b / "f.txt").exists())
            assert OVER_LIMIT not in ws_b.device.entries["f.txt"].meta
