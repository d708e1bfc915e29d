"""Documents written to their files: the remote side of a folder workspace (part of
:mod:`client.workspace`, whose docstring gives the rules).

A file is made to hold its document's text (or removed, for a deleted document) only
once the document is in the local history, after any unsaved local edit of the file was
taken in (:meth:`~client.workspace.Workspace.ingest`), and atomically (a temporary file
in ``.weft/tmp`` renamed over it, not over a save made since it was read). Kept here,
with the state only the writing side uses:

- ``pending``: files with a write scheduled (the workspace is not idle meanwhile);
- the wait for a save in place: a file modified here by something else less than
  ``SAVE_SETTLE_SECONDS`` ago is not written over or removed until then (what the save
  writes next would go into the unlinked file);
- ``unwritable``: documents whose file cannot be written (a link or a file on the way, a
  folder where the file should be, a file there that this device never synced and that
  cannot be synced: binary, not UTF-8, over the size limit, a symbolic link), said once
  and tried again when the path changes;
- ``unseen`` and ``kept``: a document deleted elsewhere while edits made here waited for
  the server's ack has its file copied to ``.weft/conflicts/`` before it is removed (the
  deletion cannot have seen them), and where the copy is goes into the deletion line
  and into a conflict's line recorded for it later.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from client.events import Event
from client.folder import FileChanged, Skip, Unfit
from client.ignore import IGNORE_FILE

if TYPE_CHECKING:
    from client.entry import DocEntry
    from client.workspace import Workspace

SAVE_SETTLE_SECONDS = 1.0


class Writes:
    """The workspace's writes to its files (see the module docstring): :meth:`schedule`
    once a document changed, and the file is written when its history has it."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.pending: set[str] = set()
        # Documents that could not be written to their file, and why (a link or a file on
        # the way, a folder in the file's place...): not in sync.
        self.unwritable: dict[str, str] = {}
        # Documents deleted by a remote update while local edits of them waited for the
        # server's ack (see the module docstring), until their file is removed; and the
        # copy kept when it was, per document while it stays deleted.
        self.unseen: set[str] = set()
        self.kept: dict[str, Path] = {}

    def schedule(self, path: str) -> None:
        if path in self.pending:
            return
        self.pending.add(path)
        self.ws.device.after_recorded(lambda: self._write(path))

    def _write(self, path: str) -> None:
        """Make the file hold its document's text (or be gone), once it is recorded."""
        ws = self.ws
        entry = ws.device.entries.get(path)
        if entry is None or path in ws.creating:
            self.pending.discard(path)
            return
        if entry.unrecorded:
            ws.device.after_recorded(lambda: self._write(path))
            return
        self.pending.discard(path)
        if not ws.folder_ok():
            return
        blocked = ws.folder.blocked(path)  # a link or a file on the way
        if blocked is not None:
            if entry.exists and not entry.deleted:
                self._cannot_write(path, blocked)
            else:
                self._written(path)  # no file to have
            ws.device.changed()
            return
        if path not in ws.tracked or ws.disk.get(path) is None:  # no file of it here
            local = ws.folder.read(path)
            if isinstance(local, Skip):  # one that cannot be synced is in the way
                self._in_the_way(entry, local)
                ws.device.changed()
                return
            if local is not None:  # (what was in the way, if anything, is a text now)
                self._written(path)
            if path not in ws.tracked:  # the server's document meets a local file
                if local is not None:
                    ws.new_files.start(path)
                    return
                ws.tracked.add(path)
        if not ws.ingest(path):
            if path not in ws.unsynced.files:  # (said: client.unsynced)
                ws.folder.warn(path, f"not writing {path}: the file there is not synced text")
            return
        if path in ws.emptied or path in ws.creating:  # written once it settled
            return  # (Workspace._settle), or once it is decided (client.newfiles)
        if entry.unrecorded:  # the local edit just taken in goes to the history first
            self.schedule(path)
            return
        try:
            self._materialise(entry)
        except OSError as exc:  # PathBlocked: a folder, a link... where the file should be
            self._cannot_write(path, str(exc))
        ws.device.changed()

    def _save_under_way(self, path: str) -> bool:
        """Whether the file was modified elsewhere less than ``SAVE_SETTLE_SECONDS`` ago
        (as last read): a save in place may still be writing it, and a file renamed over
        it (or removed) would take what it writes next. The write waits until then."""
        wait = self.ws.folder.settling(path, SAVE_SETTLE_SECONDS)
        if wait <= 0:
            return False
        self.pending.add(path)  # (idle() is False meanwhile; schedule waits)
        self.ws.spawn(self._write_later(path, wait))
        return True

    async def _write_later(self, path: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self.pending.discard(path)
        self.schedule(path)

    def _in_the_way(self, entry: DocEntry, local: Skip) -> None:
        """The document's path holds ``local``, a file that cannot be synced (binary, not
        UTF-8, too big, a symbolic link...), and no file of it was synced here: when the
        document has a text to write, it is not written (never over that file), and is
        not in sync until the file goes. Before, it was said once ("not writing FILE")
        and counted as in sync: ``--once`` exited 0 while the folder lacked the text."""
        if not entry.exists or entry.deleted:
            self._written(entry.path)  # no file to have
            return
        what = local.why if isinstance(local, Unfit) else "not synced text"
        self._cannot_write(
            entry.path,
            f"the file there is {what} and was never synced: it is left as it is (move it "
            "away to get the project's version)",
        )

    def _cannot_write(self, path: str, why: str) -> None:
        self.unwritable[path] = why
        self.ws.folder.warn(path, f"cannot write {path}: {why}")

    def _written(self, path: str) -> None:
        """The file is as its document says (or needs not be there)."""
        if self.unwritable.pop(path, None) is not None:
            self.ws.folder.unwarn(path, "cannot write ")

    def _materialise(self, entry: DocEntry) -> None:
        ws = self.ws
        path = entry.path
        if entry.deleted or not entry.exists:
            if entry.deleted:
                if self._save_under_way(path):
                    return
                self._remove(path, unseen=path in self.unseen or entry.waiting)
            self.unseen.discard(path)
            if ws.disk.get(path, "") is not None:
                ws.remember(path, None)
            self._written(path)
            return
        self.unseen.discard(path)
        self.kept.pop(path, None)
        text = str(entry.text)
        if ws.disk.get(path) == text and ws.folder.is_file(path):
            self._written(path)
            return
        if self._save_under_way(path):
            return
        new = ws.disk.get(path) is None
        try:
            # Not over a save made since the file was taken in (a line typed then was
            # lost, seen in a walkthrough appending every 0.1 s on two devices): that
            # save is taken in first, then the file written.
            ws.folder.write(path, text, if_unchanged=True)
        except FileChanged:
            self.schedule(path)
            return
        ws.remember(path, text)
        self._written(path)
        if path == IGNORE_FILE:
            ws.folder.ignore.reload()
        ws.emit(Event("remote", f"{path} {'new' if new else 'updated'} (remote)", path))

    def _remove(self, path: str, *, unseen: bool) -> None:
        """Remove the file of a document deleted elsewhere; when it holds edits made here
        that the deletion had not seen (``unseen``, see the module docstring), keep a copy
        of its text first (failing to, an OSError, leaves the file where it is)."""
        ws = self.ws
        text = ws.folder.read(path) if unseen else None
        kept = ws.new_files.backup(path, text) if isinstance(text, str) else None
        if not ws.folder.remove(path):
            return
        for other in list(self.unwritable):  # (it may have been in their way)
            self.schedule(other)
        # a change from elsewhere ("remote"), not one found here ("deleted")
        if kept is None:
            ws.emit(Event("remote", f"{path} deleted (remote)", path))
            return
        self.kept[path] = kept
        message = (
            f"{path} deleted (remote), with edits made here that the deletion may not "
            f"have seen: your text is kept in {kept}"
        )
        ws.emit(Event("remote", message, path, {"kept": str(kept)}))
