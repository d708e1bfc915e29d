"""A folder kept in step with a project: text files <-> documents (``weft sync DIR``).

Each synced file is a document whose root ``Y.Text`` named ``content`` holds its text.
The folder's state lives in ``DIR/.weft/`` (the device's local history and state).

- A file edit becomes the minimal insert/delete operations between the text last seen
  on disk (the *shadow*) and the new text (:mod:`client.textdiff`); if the document
  moved meanwhile (remote updates not written yet), the edit is merged three-way.
- Remote changes are written atomically (a temporary file in ``.weft/tmp`` renamed over
  the file), only once they are in the local history, and only after any unsaved local
  edit of that file was taken in first (:mod:`client.writes`). Writing is never echoed
  back: a file whose text equals its shadow is not an edit.
- A file being saved in place (``cmd > file``, ``cp`` over it, an editor that writes the
  file itself instead of renaming a new one over it) is neither taken in nor written over
  mid-save: such a save empties the file first and writes the text later, and a remote
  change renamed over it then left the rest of the save in the unlinked file (lost
  everywhere, with the old text: the empty file had been sent as "delete every line").
  A tracked file found empty (its shadow is not) is taken as emptied only once it stayed
  so, unchanged (size, modification time, inode), for ``EMPTIED_SETTLE_SECONDS``; until
  then remote changes of it wait, and are merged with what the save writes. A file
  modified here by something else less than ``SAVE_SETTLE_SECONDS`` ago (its
  modification time) is not written over or removed until then (:mod:`client.writes`).
- A deleted file sets ``weft.deleted`` to True in its document and leaves its text (an
  edit made elsewhere meanwhile merges into that text, and a server with
  ``WEFT_BRING_BACK_EDITED`` can bring the document back whole when it judges such an
  edit, see :mod:`crdt.branches` and :mod:`crdt.editdelete`); a file
  that appears where a document was deleted sets it back to False (the project's
  deletion convention; documents deleted by earlier versions were emptied too). A
  rename is a delete and a create. Such a file is decided as a new local file is
  (:mod:`client.newfiles`), with the server's version at hand: its changed lines
  replace the deleted ones whole, unless another device brought the document back
  first, when the file's text goes into a conflict report and a copy. Taken in
  offline as an edit of the deleted text, a restore of that text (only the flag
  changed) silently became the other device's text, and two new texts were
  interleaved. Only when this device's own deletion still waits for the server is the
  file taken in at once, as an edit of the text (it undoes that deletion; others'
  edits since merge with it).
- A remote deletion removes the file, but first keeps a copy of it in
  ``.weft/conflicts/`` (as a conflict's copy is kept) when the document was deleted
  while local edits of it waited for the server's ack (unsent, in flight, or taken in
  from the file just before the deletion was applied): the deletion cannot have seen
  them. Where the copy is goes into the deletion line, and into the line of a
  conflict the server then records for the edit. A file whose edits were all
  acknowledged before the deletion arrived is removed with no copy: the deletion may
  well have seen them (its update says nothing of what its author had), and the text
  stays in the document's history.
- A local file with no history on this device (a first sync, or a file created while
  offline) is checked against the server first, once it is quiet (no longer being
  written: :mod:`client.newfiles`): adopted when the texts are the same, created when
  the server has no such document, else recorded as a conflict while the server's
  version stays.
- ``.git/``, ``.weft/``, the restore's ``.weft-manifest.json`` at the top and
  ``.weftignore`` patterns are ignored; binary, undecodable, oversized files and
  symlinks are skipped with one warning each (a synced file that grows over the size
  limit, is no longer UTF-8 text or is replaced by a symlink stops syncing, and every
  device says so: :mod:`client.unsynced`; a document whose path holds such a file that
  was never synced here is not written: said once, and counted as not in sync,
  ``unwritable``), and so are the changes of a file whose document's
  ``content`` is not a text (another editor's ``Y.Array`` or ``Y.XmlFragment``:
  :class:`client.textdiff.NotText`).
- Nothing is read, written or removed through a symbolic link (:mod:`client.folder`): a
  document whose path goes through a link to a folder, or meets a file where its folder
  should be (or a folder where the file should be), is not written: it is said once and
  counted as not in sync (``unwritable``), and tried again when its path changes on disk
  (or at the next rescan).
- A folder moved, deleted or replaced while it syncs (or its ``.weft/``) stops the
  device (:class:`FolderGone`): its files are then missing, and taking that as their
  deletion deleted them on every other device. A file found missing is checked against
  this first, and a watch event that says files are gone waits ``DELETE_SETTLE_SECONDS``
  (a ``rm -r`` of the whole folder is then over; :mod:`client.watcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from client.device import Device
from client.events import DeviceClosed, DeviceFailed, Event, Listener
from client.folder import MAX_FILE_BYTES, FileStat, Folder, Skip, Unfit
from client.ignore import IGNORE_FILE
from client.newfiles import NewFiles
from client.remote import ServerURL
from client.shadows import start_state
from client.state import Ahead, FileState
from client.textdiff import NotText, apply, check_text, diff, merge3_both
from client.unsynced import Unsynced
from client.watcher import Watcher
from client.writes import Writes

log = logging.getLogger("weft.workspace")

EMPTIED_SETTLE_SECONDS = 2.0
OPEN_CONCURRENCY = 32


def _within(path: str, names: set[str]) -> bool:
    """Whether ``path`` or one of its folders is in ``names``: one lookup per folder on
    its way (a rescan names every file: matching each known file against each name
    took 0.5 s of the event loop every 10 s with 2,000 files, 12 s with 10,000)."""
    while True:
        if path in names:
            return True
        cut = path.rfind("/")
        if cut < 0:
            return False
        path = path[:cut]


class FolderGone(DeviceFailed):
    """The synced folder (or its ``.weft/``) was moved, deleted or replaced while syncing:
    the workspace stops, and its missing files are not taken as deleted."""


class Workspace(Listener):
    """See the module docstring. ``async with``, then :meth:`sync` or :meth:`watch`."""

    def __init__(
        self,
        root: Path | str,
        server: str | ServerURL,
        tenant: str,
        project: str,
        *,
        token: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        max_backoff: float = 10.0,
        poll_seconds: float = 1.0,
        idle_seconds: float | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
        device_id: str | None = None,
        quota_patience: float | None = None,
        offline_patience: float | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.on_event = on_event or (lambda event: None)
        self.folder = Folder(
            self.root,
            warn=self._warn,
            max_file_bytes=max_file_bytes,
            synced=lambda path: path in self.tracked and self.disk.get(path) is not None,
        )
        self.state_dir = self.folder.state_dir
        self.device = Device(
            self.state_dir,
            server,
            tenant,
            project,
            token=token,
            device_id=device_id,
            listener=self,
            max_backoff=max_backoff,
            poll_seconds=poll_seconds,
            idle_seconds=idle_seconds,
            quota_patience=quota_patience,
            offline_patience=offline_patience,
        )
        self.disk: dict[str, str | None] = {}  # the text last seen on disk (shadow)
        self.tracked: set[str] = set()
        self.new_files = NewFiles(self)
        self.unsynced = Unsynced(self)
        self.watcher = Watcher(self)
        self.conflicts: list[dict[str, Any]] = []
        self.writes = Writes(self)
        # Files found emptied, waiting for their re-check (see the module docstring): the
        # file as seen empty, and whether it stayed so for EMPTIED_SETTLE_SECONDS.
        self.emptied: dict[str, tuple[FileStat | None, bool]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Until start has taken in what changed on disk while the device was down, the
        # documents the server lists are opened only then (see start).
        self._started = False
        self._listed: set[str] = set()

    @property
    def creating(self) -> set[str]:
        """Local files waiting for the server's version (:mod:`client.newfiles`)."""
        return self.new_files.creating

    @property
    def failed(self) -> dict[str, tuple[str, str]]:
        """Files the server would not record a conflict for: (their text, why)."""
        return self.new_files.failed

    @property
    def unwritable(self) -> dict[str, str]:
        """Documents whose file cannot be written, and why (:mod:`client.writes`)."""
        return self.writes.unwritable

    @property
    def kept(self) -> dict[str, Path]:
        """Copies kept of files removed for a deletion that had not seen edits made
        here, per document while it stays deleted (:mod:`client.writes`)."""
        return self.writes.kept

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Workspace:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the device, take in what changed on disk, start syncing."""
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a directory")
        self.folder.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.folder.pin()
        await self.device.start()
        saved = dict(self.device.files)
        aheads = await self.device.aheads()
        self.disk = {p: s.shadow for p, s in saved.items()}
        # Documents with local history but no file state (a run cut short between the
        # two, or a conflict report the server refused): what is on disk was never
        # compared with the server's. Taken in as local edits, it went over the server's
        # version (kept only in history). Tracked if the document has local updates (the
        # file was made or edited here: client.shadows), or if the file is absent or is
        # what the local history holds; else it is decided like a new local file
        # (_decide).
        unsure = set(await self.device.known_paths()) - set(saved)
        self.tracked = set(saved) - self._set_aside(saved, aheads)
        slots = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def reopen(path: str) -> None:
            async with slots:
                # Not connected yet: what changed on disk while the device was down is
                # taken in first, as local edits (an offline branch on the known base,
                # checked for conflicts); connected first, its link could send them as
                # live edits, with no check.
                entry = await self.device.open(path, connect=False)
                state = await start_state(self.device, entry, saved.get(path), aheads.get(path, []))
                if state is not None and state != saved.get(path):
                    self.disk[path] = state.shadow  # (the saved one lagged: client.shadows)
                    self.tracked.add(path)
                    self.device.save_file_state(path, state)
                elif path in unsure:  # (compared before any server update can arrive)
                    on_disk = self.folder.read(path)
                    if on_disk is None or on_disk == str(entry.text):
                        self.tracked.add(path)
                        if on_disk is not None:
                            self.disk[path] = on_disk
                if path in self.tracked:
                    await self._emptied_before_start(path)
                    self.ingest(path)
                await self.device.open(path)
                if self.unsynced.elsewhere(entry):  # said once the server's state is here
                    self.spawn(self.unsynced.heard_when_synced(entry))
            self.schedule_write(path)

        # (a file synced before goes on syncing whatever .weftignore says: Folder.ignored)
        known = sorted(p for p in self.tracked | unsure if not self.folder.ignored(p))
        await asyncio.gather(*(reopen(p) for p in known))
        for path in self.folder.scan():
            if path not in self.tracked:
                self.new_files.maybe_create(path)
        self._started = True
        # (named by a heads read before the documents set aside were: not opened)
        self.remote_docs(sorted(p for p in self._listed if not self.device.listed_deleted(p)))
        self._listed.clear()
        for path, entry in list(self.device.entries.items()):
            if entry.deleted:  # (a link that closed before now did not let it go)
                self.link_closed(path)

    def _set_aside(self, saved: dict[str, FileState], aheads: dict[str, list[Ahead]]) -> set[str]:
        """The files known deleted here, with no file at their path and nothing of
        their documents waiting to be sent: not reopened at start, nor tracked, but left
        to the document list as documents never synced are (``Device.set_aside``). Each
        was opened at every start (a connection and a server load each: a folder whose
        renames left 1,268 such documents took 8 s to sync instead of 2.4 s). A file
        written at such a path later is decided as a new one (see the module docstring),
        as it was when the document was open."""
        return {
            path
            for path, state in saved.items()
            if state.shadow is None
            and path not in aheads
            and not self.folder.exists(path)
            and self.device.set_aside(path, state.local)
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.device.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, DeviceClosed):  # (the workspace is closing)
                return
            log.error("workspace task failed", exc_info=exc)
            self.emit(Event("error", f"internal error: {exc!r}"))
        self.device.changed()

    # --- waiting ------------------------------------------------------------------------

    def idle(self) -> bool:
        """The folder and the project agree (as far as this device can tell). Not while
        a task runs: an emptied file waiting for its re-check, a write waiting for a
        save to end (see the module docstring)."""
        device = self.device
        if self.creating or self.writes.pending or self._tasks or not device.heads_read.is_set():
            return False
        wanted = [
            p for p in device.heads if not self.folder.ignored(p) and not device.listed_deleted(p)
        ]
        return all(p in device.entries for p in wanted) and device.idle()

    async def sync(self, timeout: float | None = None) -> None:
        """Wait until :meth:`idle` (raises TimeoutError, or DeviceFailed)."""
        async with asyncio.timeout(timeout):
            await self.device.wait_until(self.idle)

    def progress(self) -> tuple[int, int]:
        """(documents done, documents known) for a progress bar; a document listed
        deleted that is not opened (``Device.listed_deleted``) is neither."""
        device = self.device
        done = sum(1 for e in device.entries.values() if e.done() and e.path not in self.creating)
        total = len(device.entries) + sum(1 for p in self.creating if p not in device.entries)
        listed = sum(1 for p in device.heads if not device.listed_deleted(p))
        return done, max(total, listed)

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        """Follow file changes until ``stop`` is set (or cancelled); a rescan every
        ``RESCAN_SECONDS`` catches what the watcher missed (:mod:`client.watcher`).
        Returns early once the folder was moved or deleted (the device failed:
        FolderGone)."""
        await self.watcher.run(stop)

    def changed(self, paths: set[str], *, rescan: bool = False) -> None:
        """Files or folders changed on disk: take the changes in. A ``rescan`` skips
        files whose size and modification time have not changed."""
        if IGNORE_FILE in paths:
            self.folder.ignore.reload()
        files: set[str] = set()
        for rel in paths:
            full = self.root / rel
            if full.is_dir() and not full.is_symlink():
                files |= set(self.folder.scan(rel))
            if not full.is_dir():
                files.add(rel)
        # the known files named, or in a folder named (moved or deleted: gone from disk);
        # documents are named in NFC
        named = {unicodedata.normalize("NFC", rel) for rel in paths}
        files |= {p for p in self.tracked | self.unwritable.keys() if _within(p, named)}
        for rel in sorted(files):
            path = self.folder.document_path(rel)
            if path is None:
                continue
            if path in self.unwritable:  # what was in the way may be gone
                self.schedule_write(path)
            elif path in self.tracked:
                unchanged = self.folder.unchanged(path) and self.disk.get(path) is not None
                if not (rescan and unchanged):
                    self.ingest(path)
            elif not (rescan and self.folder.unchanged(path)):
                self.new_files.maybe_create(path)

    # --- local changes --------------------------------------------------------------------

    def ingest(self, path: str) -> bool:
        """Take in the file's current text as local edits of its document; False when
        the file is there but not synced (binary, too big...): it must not be written."""
        entry = self.device.entries.get(path)
        if entry is None or path in self.creating:
            return True
        text = self.folder.read(path)
        shadow = self.disk.get(path)
        if text == "" and shadow and self._settling(path):
            return True  # maybe a save in place under way: not taken in, not written over
        self.emptied.pop(path, None)
        if isinstance(text, Unfit) and shadow is not None:  # over the limit, not text, a link
            self.unsynced.stopped(entry, text)  # (client.unsynced)
            return False
        if isinstance(text, Skip):
            return False
        if text == shadow and not self.unsynced.flagged(entry):
            return True
        if text is None and (entry.deleted or shadow is None):
            # No file, and none to delete: the document is deleted already (elsewhere,
            # while this device's file was unfit and so not removed), or this device had
            # no file of it. A flag naming this device is stale: cleared, never taken for
            # a deletion (a document brought back elsewhere was deleted again by it).
            if self.unsynced.flagged(entry) and self.folder_ok():
                queued = entry.unrecorded_local
                with entry.doc.transaction():
                    self.unsynced.clear(entry, deleted=True)
                if entry.unrecorded_local > queued:
                    self.device.file_read(entry, None)
            self.remember(path, None)
            return True
        if text is None:
            if not entry.deleted:
                if not self.folder_ok():  # missing with the whole folder: not deleted
                    return False
                if self._one_file_with(path):
                    return True  # (written to its file then: not, and said so)
                with entry.doc.transaction():
                    entry.meta["deleted"] = True  # the text stays: see the module docstring
                    self.unsynced.clear(entry, deleted=True)
                self.device.file_read(entry, None)
                self.emit(Event("deleted", f"deleted {path}", path))
            self.remember(path, None)
            return True
        if shadow is None and not entry.waiting:
            # A file where this device had none (its document deleted, as far as the
            # server knows: no deletion of this device's waits): decided with the
            # server's version at hand, as a new file is (see the module docstring).
            self.new_files.start(path)
            return True
        current = str(entry.text)
        try:
            check_text(entry.text, current)
        except NotText as exc:  # (its characters would land among another editor's values)
            self.folder.warn(path, f"not syncing {path}: {exc}")
            return False
        both: list[int] = []
        if entry.deleted or shadow is None or current == shadow:
            target = text
        else:
            target, both = merge3_both(shadow, text, current)
        queued = entry.unrecorded_local
        with entry.doc.transaction():
            if entry.deleted or shadow is None:
                entry.meta["deleted"] = False
                self.kept.pop(path, None)  # back: a copy kept at its deletion is old news
            self.unsynced.clear(entry)
            inserted, deleted = apply(entry.text, current, diff(current, target))
        if entry.unrecorded_local > queued:  # (saved before the edit: client.shadows)
            self.device.file_read(entry, text)
        self.remember(path, text)
        if inserted or deleted:
            self.emit(Event("local", f"{path}: +{inserted} -{deleted} chars", path))
        if both:  # (no conflict record: the server saw two live edits, not a branch)
            self._kept_both(path, both)
        if target != text:
            self.schedule_write(path)
        return True

    def _one_file_with(self, path: str) -> bool:
        """Whether the file ``path`` is missing only because a lookup of it finds the
        file of another document this folder syncs, in another case, on a
        case-insensitive file system: a weft before 2026-12-06 took that file for both
        documents' (every case-only rename made on a Mac left such a pair). The
        document is then not taken as deleted, and said: a device whose file has the
        one name deleted the other document, and one whose file has the other name the
        first, so the file went from every device."""
        found = self.folder.spelled_as(self.folder.disk_name(path))
        other = None if found is None else self.folder.document_path(found)
        if other is None or other == path or other not in self.tracked:
            return False
        if self.disk.get(other) is None:
            return False
        self.folder.warn(
            path,
            f"not taking {path} as deleted: {found} is here, and this file system takes "
            f"the two names for one file; {path} is not written either. Delete or rename "
            "one of the two documents (on a case-sensitive device, or in an editor)",
        )
        return True

    def _kept_both(self, path: str, lines: list[int]) -> None:
        """Say that merging the file's save with the document's change kept both
        versions of lines both had changed, one after the other, with no conflict record:
        the user should look (see "Known issues" in the README)."""
        where = f"line {lines[0]}" if len(lines) == 1 else f"lines {', '.join(map(str, lines))}"
        self.emit(
            Event(
                "warning",
                f"{path}: {where}: changed here and elsewhere at once; both versions kept, "
                "the other device's first (no conflict record): check the file",
                path,
                {"kept_both": lines},
            )
        )

    def _settling(self, path: str) -> bool:
        """Whether the file, found empty, must wait before it is taken as emptied: it
        was not seen empty as it is now (size, modification time, inode) for
        ``EMPTIED_SETTLE_SECONDS`` yet, nor was it modified that long ago. A save in
        place (``cmd > file``, ``cp`` over it, an editor that does not save by rename)
        empties the file first and writes the text later: taken in then, the emptying
        went to every device, and a remote change written meanwhile replaced the file
        the save was still writing."""
        seen = self.folder.seen(path)
        if self.emptied.get(path) == (seen, True):
            return False
        if not self.folder.settling(path, EMPTIED_SETTLE_SECONDS):
            return False  # unchanged since it was modified that long ago
        if path not in self.emptied or self.emptied[path][0] != seen:
            self.emptied[path] = (seen, False)
            self.spawn(self._settle(path, seen))
        return True

    async def _emptied_before_start(self, path: str) -> None:
        """At start, a file found emptied while the device was down waits, its document
        not connected yet, until it was modified ``EMPTIED_SETTLE_SECONDS`` ago: then it
        is taken in as an edit of the offline branch (checked for conflicts). Taken in
        after its document connected (the re-check of :meth:`_settling`), it was merged
        with the server's changes as a live edit: an offline emptying met another
        device's offline edit of the same lines with no conflict record."""
        if self.disk.get(path) and self.folder.read(path) == "":
            await asyncio.sleep(self.folder.settling(path, EMPTIED_SETTLE_SECONDS))

    async def _settle(self, path: str, seen: FileStat | None) -> None:
        await asyncio.sleep(EMPTIED_SETTLE_SECONDS)
        if self.emptied.get(path) != (seen, False):
            return  # changed meanwhile: taken in, or waiting again
        self.emptied[path] = (seen, True)
        self.ingest(path)  # emptied; or what the save wrote, or waiting again
        self.schedule_write(path)  # what arrived meanwhile (see client.writes)

    def remember(self, path: str, text: str | None) -> None:
        """``text`` is on disk now; store it as the shadow once the doc's history has it."""
        self.disk[path] = text
        self.tracked.add(path)
        state = FileState(text, deleted=text is None)
        self.device.after_recorded(lambda: self.device.save_file_state(path, state))

    # --- remote changes -------------------------------------------------------------------

    def before_remote(self, path: str) -> None:
        if path in self.tracked and path not in self.creating:
            self.ingest(path)

    def after_remote(self, path: str) -> None:
        entry = self.device.entries.get(path)
        if entry is not None:
            self.unsynced.heard(entry)  # another device's file stopped syncing
            if entry.deleted and entry.waiting:
                self.writes.unseen.add(path)  # noted now: acks may come before the file goes
        self.schedule_write(path)

    def busy(self, path: str) -> bool:
        return path in self.creating or path in self.writes.pending or path in self.emptied

    def link_closed(self, path: str) -> None:
        """Once every change made so far is recorded (and the file states queued with
        them saved), a deleted document may be let go (see :meth:`_let_go`); not while
        the workspace starts (:meth:`start` tries each when it ends)."""
        if self._started and not self.device.stopping:
            self.device.after_recorded(lambda: self._let_go(path))

    def _let_go(self, path: str) -> None:
        """Have the device drop the document ``path`` from memory (``Device.let_go``:
        its link closed, every local update acknowledged) when it is deleted, with no
        file at its path and no work of this workspace under way for it (a write, a
        decision, an emptied file), and forget it here, as a start does with such a
        document (:meth:`_set_aside`): a running weft sync kept every deleted document
        loaded until it stopped. A file written at its path later is decided as a new
        one, as it was when the document was open; a change from elsewhere reopens it
        (``Device.listed_deleted``)."""
        entry = self.device.entries.get(path)
        if (
            entry is None
            or not entry.deleted
            or self.busy(path)
            or path in self.unwritable
            or path in self.writes.unseen
            or self.disk.get(path) is not None
            or self.folder.exists(path)
        ):
            return
        if self.device.let_go(path):
            self.tracked.discard(path)
            self.disk.pop(path, None)

    def remote_docs(self, paths: list[str]) -> None:
        for path in paths:
            if not self._started:  # opened connected, a document could send what changed
                self._listed.add(path)  # on disk meanwhile as live edits (see start)
                continue
            if path in self.creating or self.folder.ignored(path):
                continue
            self.spawn(self._open_remote(path))

    async def _open_remote(self, path: str) -> None:
        await self.device.open(path)

    def schedule_write(self, path: str) -> None:
        """Write the file once its document is recorded (:mod:`client.writes`)."""
        self.writes.schedule(path)

    def folder_ok(self) -> bool:
        """Whether the folder is still the one this workspace syncs; if not, the device
        stops for good (see :class:`FolderGone`)."""
        why = self.folder.moved()
        if why is None:
            return True
        self.device.halt(
            FolderGone(
                f"{why}: stopped, and its missing files were not taken as deleted; run "
                "weft sync again on the folder where it is now"
            )
        )
        return False

    # --- events ---------------------------------------------------------------------------

    def event(self, event: Event) -> None:
        if event.kind == "conflict":  # recorded by the server (a branch's, an online edit's)
            kept = self.kept.get(event.path or "")
            if kept is not None:  # (the file was removed, its text kept: say where)
                event = Event(
                    event.kind,
                    f"{event.message}; your text is kept in {kept}",
                    event.path,
                    {**event.data, "kept": str(kept)},
                )
            self.conflicts.append({"path": event.path, **event.data})
        self.emit(event)

    def emit(self, event: Event) -> None:
        self.on_event(event)

    def _warn(self, path: str, message: str) -> None:
        self.emit(Event("warning", message, path))
