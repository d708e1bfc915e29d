"""The file state a folder workspace starts from (part of :mod:`client.workspace`).

A file's state (its *shadow*, the text last read from or written to the file, in
``state.db``) is saved a moment after the history (``history.db``) has the edit it goes
with (:class:`client.state.StateWriter` buffers it). A device killed in between starts
with a shadow older than the document's last local edit, and merging the file three ways
with it (shadow, file, document) merged that edit back in as if it came from elsewhere:
a line deleted, then put back while the sync was down, was deleted again; a line
rewritten twice came back as both lines. A file created here had no state at all, and
met its own document as a different file: the server's (older) text went over it.

So each file state names the document's last local update when it was taken
(``FileState.local``). When the local history holds a later one, the edit it recorded
was read from the file: the shadow is the document's text as of that update (its
current text when no server update came after it, else rebuilt from the local history).
A document with local updates and no file state is taken the same way. The edit is then
neither lost (it is in the history, and re-sent until acknowledged) nor merged in twice.

The document's text is not always the file's, though: a save merged with a server update
not written to the file yet gave an edit whose document text holds that update and whose
file does not. Taken as the shadow, the file then read as the update undone, and that
went to every device. So the text read for each local edit is saved before the edit is
appended to the history (an ``ahead`` text, :class:`client.state.Ahead`, numbered among
the local updates of its batch: a batch too big for one transaction is appended in
parts). The shadow is then the latest such text whose edit the history holds, of those
the saved state does not account for; whatever the document has beyond it is written
to the file, as a change from elsewhere. Texts whose edit the history lacks (the crash
came before the append) are passed over: the file is read against an older state, and
its edit is taken in again.

Whether the history holds an edit is told by counting: the edit is the ``nth`` local
update of its document in its batch, so the history holds it once it holds ``nth``
local updates after the batch's ``after``. That takes every local update to have its
text (the workspace's ingest and a new file's adoption are the only local edits, and
both save one; a failed save is said, see the recorder) and a batch's parts to be
stored in order (the SQLite engine commits them first in, first out; when one part
fails, the whole batch is appended again: only a crash between that failure and the
retry could leave a later part stored without an earlier one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, Text

from client.entry import CONTENT, META
from client.state import Ahead, FileState
from crdt.versionstamp import Versionstamp

if TYPE_CHECKING:
    from client.device import Device
    from client.entry import DocEntry


async def start_state(
    device: Device, entry: DocEntry, saved: FileState | None, aheads: list[Ahead]
) -> FileState | None:
    """The state the file of ``entry`` is compared with at start: ``saved`` (None: none
    was saved), unless the local history holds a local update of the document that
    ``saved`` does not account for: then the latest of ``aheads`` (the file's texts
    saved ahead of its edits) whose edit the history holds, else the document's text as
    of its last local update (see the module docstring). A state saved by an older weft
    (``local`` unknown) is taken as it is."""
    last = entry.outbox.last
    if last is None:
        return saved  # no local update to lag behind
    if saved is not None and (saved.local is None or saved.local >= last):
        return saved
    taken = None if saved is None else saved.local  # (an older one than last)
    newer = [a for a in aheads if a.after < last and (taken is None or a.after >= taken)]
    ahead = await _recorded(device, entry, newer)
    if ahead is not None:
        return FileState(ahead.text, deleted=ahead.text is None, local=last)
    later = await device.history.updates(entry.ref, after=last, limit=1)
    if later:  # server updates came after it: the text as of that update
        text, deleted = _text((await device.history.replay(entry.ref, last)).doc)
    else:
        text, deleted = str(entry.text), entry.deleted
    return FileState(None if deleted else text, deleted=deleted, local=last)


async def _recorded(device: Device, entry: DocEntry, aheads: list[Ahead]) -> Ahead | None:
    """The latest of ``aheads`` whose edit the local history holds: as many local
    updates after its ``after`` as its ``nth``."""
    counted: dict[Versionstamp, int] = {}
    for ahead in sorted(aheads, key=lambda a: (a.after, a.nth), reverse=True):
        if ahead.after not in counted:  # (the largest nth of that batch comes first)
            counted[ahead.after] = len(await device.local_updates(entry.ref, ahead.after))
        if counted[ahead.after] >= ahead.nth:
            return ahead
    return None


def _text(doc: Doc[Any]) -> tuple[str, bool]:
    return str(doc.get(CONTENT, type=Text)), bool(doc.get(META, type=Map).get("deleted", False))
