"""Following a synced folder's changes on disk (part of :mod:`client.workspace`).

Two loops run side by side until one ends: the file watcher (``watchfiles``: changes
come debounced, ``WATCH_DEBOUNCE_MS``) and a rescan every ``RESCAN_SECONDS`` (a stat per
file) that catches what the watcher missed. Both hand what changed to
:meth:`~client.workspace.Workspace.changed`. Both check first that the folder is still
the one the workspace syncs (:class:`~client.workspace.FolderGone`), the rescan loop
every ``FOLDER_CHECK_SECONDS``; and a watch event that says files are gone waits
``DELETE_SETTLE_SECONDS`` before that check (a ``rm -r`` of the whole folder is then
over, and its files are not taken as deleted one by one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

if TYPE_CHECKING:
    from client.workspace import Workspace

WATCH_DEBOUNCE_MS = 50
RESCAN_SECONDS = 10.0
DELETE_SETTLE_SECONDS = 0.5
FOLDER_CHECK_SECONDS = 0.5


class Watcher:
    """The workspace's watch on its folder (see the module docstring): :meth:`run`."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow file changes until ``stop`` is set (or cancelled); returns early once
        the folder was moved or deleted (the device failed: FolderGone)."""
        tasks = (
            asyncio.create_task(self._rescan_forever()),
            asyncio.create_task(self._watch(stop)),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _rescan_forever(self) -> None:
        ws = self.ws
        await asyncio.sleep(0.5)  # what changed between the first scan and the watcher
        loop = asyncio.get_running_loop()
        due = loop.time()
        while ws.folder_ok():  # checked often: cheap (two stats), and it stops early
            if loop.time() >= due:
                paths = set(ws.folder.scan()) | ws.tracked | set(ws.unwritable)
                ws.changed(paths, rescan=True)
                due = loop.time() + RESCAN_SECONDS
            await asyncio.sleep(FOLDER_CHECK_SECONDS)

    async def _watch(self, stop: asyncio.Event | None) -> None:
        ws = self.ws
        async for changes in watchfiles.awatch(
            ws.root,
            watch_filter=self._watch_filter,
            debounce=WATCH_DEBOUNCE_MS,
            step=WATCH_DEBOUNCE_MS,
            stop_event=stop,
            recursive=True,
        ):
            paths = set()
            for _change, raw in changes:
                rel = ws.folder.rel(Path(raw))
                if rel is not None:
                    paths.add(rel)
            if any(not os.path.lexists(ws.root / rel) for rel in paths):
                await asyncio.sleep(DELETE_SETTLE_SECONDS)  # see the module docstring
            if not ws.folder_ok():
                return
            ws.changed(paths)

    def _watch_filter(self, _change: watchfiles.Change, raw: str) -> bool:
        rel = self.ws.folder.rel(Path(raw))
        return rel is not None and not self.ws.folder.is_state(rel)
