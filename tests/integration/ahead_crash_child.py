"""The device of ``test_sync_ahead_crash``, killed (``os._exit``, as ``kill -9``) at the
moment a test names; not a test itself.

    python ahead_crash_child.py MODE FOLDER_A FOLDER_B WS_URL

- ``next_batch``: b's update reaches a while a save in place holds a's write back; the
  user saves (merged with b's update, recorded: its file state not written yet), then
  saves again, and the kill lands between that save's ``ahead`` text and its append.
- ``split``: two saves in one recorder batch, whose append is split in two transactions
  (as a batch over the history's limits is); the kill lands after the first committed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import crdt.history as history_module
from client import writes
from client.state import DeviceState
from client.workspace import Workspace
from crdt.history import History


def rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def killed(*_: Any) -> Any:
    sys.stdout.flush()
    os._exit(9)


async def next_batch(a: Path, b: Path, url: str) -> None:
    writes.SAVE_SETTLE_SECONDS = 600  # a's file was just saved: b's update waits
    DeviceState.save_files = lambda self, changes: None  # type: ignore[method-assign]
    ws = Workspace(a, url, "acme", "p", poll_seconds=0.1)
    await ws.start()
    rewrite(b / "f.txt", "line 3", "line 3 by b")
    async with Workspace(b, url, "acme", "p", poll_seconds=0.1) as other:
        await other.sync(10)
    entry = ws.device.entries["f.txt"]
    await ws.device.wait_until(lambda: "by b" in str(entry.text))
    rewrite(a / "f.txt", "line 1", "line 1 by a")
    ws.changed({"f.txt"})  # merged with b's update, which the file does not have
    await ws.device.recorded()
    History.append = killed  # type: ignore[method-assign,assignment]
    rewrite(a / "f.txt", "line 2", "line 2 by a")
    ws.changed({"f.txt"})
    await asyncio.sleep(30)


async def split(a: Path, url: str) -> None:
    ws = Workspace(a, url, "acme", "p", poll_seconds=0.1)
    await ws.start()
    await ws.sync(10)
    history_module.MAX_BATCH_UPDATES = 1  # (stands for a batch over the limits)
    one = History._append_one
    committed = asyncio.Event()
    calls = 0

    async def parts(self: History, items: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:  # the second part: killed once the first has committed
            await committed.wait()
            killed()
        appended = await one(self, items)
        committed.set()
        return appended

    History._append_one = parts  # type: ignore[method-assign]
    rewrite(a / "f.txt", "line 1", "line 1 by a")
    ws.ingest("f.txt")
    rewrite(a / "f.txt", "line 2", "line 2 by a")  # saved again before the batch is appended
    ws.ingest("f.txt")
    await asyncio.sleep(30)


if __name__ == "__main__":
    mode, a, b, url = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    asyncio.run(next_batch(a, b, url) if mode == "next_batch" else split(a, url))
    sys.exit("not killed")
