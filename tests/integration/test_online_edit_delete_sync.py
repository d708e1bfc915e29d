"""The walkthrough race with two running ``weft sync`` processes (real processes, real
sockets, two folders and local stores): A deletes a file while B, online, saves an edit
of it. B's link to the server is slow on the way up (a TCP proxy holds what B sends for
a few seconds), so B's edit is on its way while A's deletion commits: an edit made
without seeing the deletion, every time. Before, the file was gone from both folders,
the edit only in history, with no record and no word said to B."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.testing import (
    SyncProcess,
    folder_files,
    get_json,
    start_sync,
    sync_once,
    wait_until,
)
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT, PROJECT = "acme", "site"
BASE = "".join(f"line {i}\n" for i in range(1, 11))
UPLINK_DELAY = 3.0


class SlowUplink:
    """A TCP proxy to ``127.0.0.1:target``: what clients send waits ``delay`` seconds
    (in order) before it goes on; what the server sends goes straight back."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.delay = 0.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self.loop
        ).result()
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, slow=True),
            self._pipe(up_reader, writer, slow=False),
            return_exceptions=True,
        )
        self.tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(forward())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + (self.delay if slow else 0.0), data))
            queue.put_nowait((0.0, b""))
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def racing_devices(server: ServerProcess, a: Path, b: Path) -> Iterator[list[SyncProcess]]:
    """Folders ``a`` and ``b`` synced with notes.md (BASE), then a running ``weft sync``
    on each, b's through a :class:`SlowUplink` that, once both are in sync, holds b's
    messages back ``UPLINK_DELAY`` seconds (b's edit waits while a's deletion comes)."""
    for folder in (a, b):
        folder.mkdir()
    (a / "notes.md").write_text(BASE)
    for folder in (a, b):
        assert sync_once(folder, server.ws_url, TENANT, PROJECT).returncode == 0
    uplink = SlowUplink(server.port)
    args = ["--max-backoff", "0.5", "--poll", "0.2"]
    devices = [
        start_sync(a, server.ws_url, TENANT, PROJECT, args=args),
        start_sync(b, uplink.ws_url, TENANT, PROJECT, args=args),
    ]
    try:
        for device in devices:
            device.wait_for("in sync")
        uplink.delay = UPLINK_DELAY
        yield devices
    finally:
        for device in devices:
            device.terminate()
        uplink.close()


@pytest.mark.parametrize("bring_back", [False, True], ids=["default", "bring-back"])
def test_an_edit_saved_while_another_device_deletes_the_file_is_recorded_and_said(
    weft_server_factory: StartServer, tmp_path: Path, bring_back: bool
) -> None:
    env = {"WEFT_BRING_BACK_EDITED": "1"} if bring_back else {}
    server = weft_server_factory(env=env)
    a, b = tmp_path / "a", tmp_path / "b"
    with racing_devices(server, a, b) as devices:
        with (b / "notes.md").open("a") as f:
            f.write("B saved this at the same moment\n")
        (a / "notes.md").unlink()
        devices[0].wait_for("deleted notes.md")

        url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts"
        wait_until(lambda: len(get_json(url)["conflicts"]) >= 1, 20, "a conflict record")
        [record] = get_json(url)["conflicts"]
        edited = BASE + "B saved this at the same moment\n"
        assert record["path"] == "notes.md" and record["deleted"] == "theirs"
        assert record["regions"][0]["ours_text"] == edited
        assert record["restored"] is bring_back
        said = "conflict: notes.md: edited here while deleted elsewhere: the document "
        devices[1].wait_for(said, 20)
        devices[1].wait_for(f"weft conflicts show {record['id']}")
        # The deleter is the record's other side: told from the conflict list once its poll
        # sees the project's conflict count move (it stays connected), never as the editor.
        devices[0].wait_for(
            f"conflict: notes.md: deleted here while edited on {record['ours']['clients'][0]}", 20
        )
        said_to_deleter = [line for line in devices[0].output().splitlines() if "conflict" in line]
        assert len(said_to_deleter) == 1 and record["id"] in said_to_deleter[0], said_to_deleter
        doc = get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs/notes.md?format=json")
        assert doc["text"] == edited and doc["deleted"] is not bring_back
        if bring_back:  # back in both folders, with B's edit
            wait_until(
                lambda: all(folder_files(f).get("notes.md") == edited.encode() for f in (a, b)),
                20,
                "the file back in both folders",
            )
            assert "brought back with the edits" in devices[1].output()
        else:  # the deletion stands in both folders; the edit is in the record
            wait_until(
                lambda: all("notes.md" not in folder_files(f) for f in (a, b)),
                20,
                "the file gone from both folders",
            )
            assert "the document stays deleted" in devices[1].output()


def test_an_edit_saved_while_another_device_deletes_the_file_is_kept_in_a_copy(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """The same race seen from B's folder: the deletion reaches B while B's edit waits
    for its ack (it cannot have seen it), so B keeps a copy of its text in
    ``.weft/conflicts/`` before removing the file, and says where. Before, the file was
    simply gone from B's folder. A, whose file was deleted by its own user, keeps none."""
    server = weft_server_factory()
    a, b = tmp_path / "a", tmp_path / "b"
    with racing_devices(server, a, b) as devices:
        with (b / "notes.md").open("a") as f:
            f.write("B saved this at the same moment\n")
        devices[1].wait_for("notes.md: +")
        (a / "notes.md").unlink()
        devices[0].wait_for("deleted notes.md")

        devices[1].wait_for("notes.md deleted (remote)", 20)
        assert "notes.md" not in folder_files(b)
        [copy] = sorted((b / ".weft" / "conflicts").glob("notes.md.*"))
        assert copy.read_text() == BASE + "B saved this at the same moment\n"
        devices[1].wait_for(f"your text is kept in {copy}")
        devices[1].wait_for("conflict: notes.md: edited here while deleted elsewhere", 20)
        assert not (a / ".weft" / "conflicts").exists()
