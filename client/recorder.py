"""The recorder: every change to an open document goes to the local history first.

Local edits (seen through each document's observer) and remote updates (applied by the
links) are queued and appended in batches, many documents per transaction, to the
device's :class:`crdt.history.History`. Only then does a local update enter its
document's outbox and wake its link: nothing is sent before it is durable. Callbacks
queued with :meth:`Recorder.after_recorded` run once everything queued before them is in
the history (a folder workspace writes a file, or remembers its shadow, only then). A
file's text read for a local edit (:meth:`Recorder.file_read`) is saved as that edit's
``ahead`` text before the batch that holds the edit is appended (see
:mod:`client.shadows`). A local update the server stored before it was made here (a new
file's ``Create``, :meth:`Recorder.stored`) is recorded as a local one, and is
acknowledged rather than sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from client.state import Ahead
from crdt.history import MAX_UPDATE_BYTES, Append, History
from crdt.versionstamp import ZERO, Versionstamp

if TYPE_CHECKING:
    from client.entry import DocEntry

log = logging.getLogger("weft.client")

LOCAL = "local"
REMOTE = "remote"
STORED = "stored"  # a local update the server stored first (a Create): recorded as local
RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class FileRead:
    """The file text a local edit of ``entry`` was made from (None: the file was gone)."""

    entry: DocEntry
    text: str | None


Item = tuple["DocEntry", bytes, str] | FileRead | Callable[[], None]


class Recorder:
    """See the module docstring; :meth:`run` is the device's recording task."""

    def __init__(
        self,
        history: History,
        device_id: str,
        on_batch: Callable[[], None],
        ahead: Callable[[list[tuple[str, Ahead]]], Awaitable[None]] | None = None,
    ) -> None:
        self.history = history
        self.device_id = device_id
        self.on_batch = on_batch
        self.ahead = ahead
        self.snapshots: set[asyncio.Task[Any]] = set()
        self._queue: list[Item] = []
        self._wake = asyncio.Event()
        self._recording = False

    @property
    def idle(self) -> bool:
        return not self._queue and not self._recording

    def local(self, entry: DocEntry, update: bytes) -> None:
        entry.unrecorded += 1
        entry.unrecorded_local += 1
        self._queue.append((entry, update, LOCAL))
        self._wake.set()

    def stored(self, entry: DocEntry, update: bytes, versionstamp: Versionstamp) -> None:
        """A local update the server stored at ``versionstamp`` before it was made here
        (a new file's ``Create``): recorded as a local update (a restart takes the file
        state from it, see client.shadows), but not sent again, and acknowledged."""
        entry.unrecorded += 1
        entry.unrecorded_local += 1
        self._queue.append((entry, update, STORED))
        self._queue.append(lambda: entry.acked(versionstamp))
        self._wake.set()

    def remote(self, entry: DocEntry, update: bytes) -> None:
        entry.unrecorded += 1
        self._queue.append((entry, update, REMOTE))
        self._wake.set()

    def file_read(self, entry: DocEntry, text: str | None) -> None:
        """The local edit just queued for ``entry`` was made from the file's ``text``."""
        self._queue.append(FileRead(entry, text))

    def after_recorded(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything queued so far is in the local history."""
        if self.idle and not self._wake.is_set():
            asyncio.get_running_loop().call_soon(callback)
            return
        self._queue.append(callback)
        self._wake.set()

    async def recorded(self) -> None:
        """Wait until every change queued so far is in the local history."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        self.after_recorded(finish)
        await done

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                self._recording = True
                try:
                    await self._record(batch)
                except asyncio.CancelledError:
                    self._queue = batch + self._queue
                    raise
                except Exception:  # a task boundary: keep the batch and try again
                    log.error("recording %d changes failed; retrying", len(batch), exc_info=True)
                    self._queue = batch + self._queue
                    await asyncio.sleep(RETRY_SECONDS)
                finally:
                    self._recording = False
                # A batch of callbacks alone awaits nothing, and a callback may queue
                # another (a file write tried again): without this a chain of them held
                # the event loop, with Ctrl-C and timeouts, for as long as it went on.
                await asyncio.sleep(0)
            self.on_batch()

    def snapshot_due(self, entry: DocEntry, size: int) -> bool:
        """Count one recorded update of ``size`` bytes; True (and the counts start
        over) when ``snapshot_every`` updates or ``snapshot_bytes`` bytes follow the
        document's latest snapshot: time to check for one (``snapshot_if_due``, which
        reads the log). Counted from what the document's load found after its latest
        snapshot (``History.load``): counted from 0 in each run, and in updates only, a
        document edited a few times per run, or in a few big updates, never got one."""
        entry.since_snapshot += 1
        entry.since_snapshot_bytes += size
        history = self.history
        if (
            entry.since_snapshot < history.snapshot_every
            and entry.since_snapshot_bytes < history.snapshot_bytes
        ):
            return False
        entry.since_snapshot = entry.since_snapshot_bytes = 0
        return True

    async def _save_ahead(self, batch: list[Item]) -> None:
        """Save what each file held for the local edits of ``batch`` (its ``FileRead``
        items) before the batch is appended: a restart that finds an edit in the history
        takes that text as its file's state (client.shadows). Each is numbered among the
        local updates of its document in the batch, as they will be recorded (one over
        the size limit is not). Failing that, the batch is appended all the same: a
        crash before its file states are saved then leaves its edits with no text, and a
        restart takes an older edit's text, if one is still kept (the file is compared
        with it: the edits after it come out once, as the document and the file both
        have them), else the document's text (client.shadows' older rule)."""
        if self.ahead is None:
            return
        counts: dict[str, int] = {}
        rows: list[tuple[str, Ahead]] = []
        for item in batch:
            if isinstance(item, tuple):
                entry, update, origin = item
                if origin != REMOTE and len(update) <= MAX_UPDATE_BYTES:
                    counts[entry.path] = counts.get(entry.path, 0) + 1
            elif isinstance(item, FileRead) and counts.get(item.entry.path):
                after = item.entry.outbox.last or ZERO
                rows.append((item.entry.path, Ahead(item.text, after, counts[item.entry.path])))
        if not rows:
            return
        try:
            await self.ahead(rows)
        except Exception:  # (state.db unwritable: recording must go on)
            log.warning(
                "saving the texts of %d files ahead of their edits failed", len(rows), exc_info=True
            )

    async def _record(self, batch: list[Item]) -> None:
        items = [b for b in batch if isinstance(b, tuple)]
        for entry, update, origin in [i for i in items if len(i[1]) > MAX_UPDATE_BYTES]:
            # One transaction cannot hold it, now or on any retry: kept in the queue, it
            # stopped every later change of every document from being recorded.
            log.error(
                "%s: a %s change of %d bytes is over the %d-byte limit of one update; it "
                "is not recorded or sent (a local file keeps its text on disk)",
                entry.path,
                origin,
                len(update),
                MAX_UPDATE_BYTES,
            )
            entry.unrecorded -= 1
            if origin != REMOTE:
                entry.unrecorded_local -= 1
        items = [i for i in items if len(i[1]) <= MAX_UPDATE_BYTES]
        await self._save_ahead(batch)
        if items:
            results = await self.history.append(
                [
                    Append(
                        e.ref, u, self.device_id, self.device_id, REMOTE if o == REMOTE else LOCAL
                    )
                    for e, u, o in items
                ]
            )
            for (entry, update, origin), appended in zip(items, results, strict=True):
                entry.unrecorded -= 1
                if origin == LOCAL:
                    # A duplicate was appended by an earlier, partly failed attempt.
                    entry.unrecorded_local -= 1
                    entry.outbox.add(appended.versionstamp, update)
                    entry.link.wake()
                elif origin == STORED:
                    entry.unrecorded_local -= 1
                    entry.outbox.add_stored(appended.versionstamp, update)
                if self.snapshot_due(entry, len(update)):
                    task = asyncio.create_task(self.history.snapshot_if_due(entry.ref))
                    self.snapshots.add(task)
                    task.add_done_callback(self.snapshots.discard)
        for callback in batch:
            if not isinstance(callback, tuple | FileRead):
                callback()
