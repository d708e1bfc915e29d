"""Synced files that stopped syncing (part of :mod:`client.workspace`): grown past the
size limit, no longer UTF-8 text, or replaced by a symbolic link.

A file that syncs stops syncing once it grows past the limit (``max_file_bytes``, 4 MiB:
:data:`client.folder.MAX_FILE_BYTES`), once it is no longer UTF-8 text (an image saved
over it, a save in Latin-1 with a non-ASCII character), or once a symbolic link takes
its place (``ln -sf other.md notes.md``; to a file, a folder or nothing): see
:class:`client.folder.Unfit`. It is neither taken in nor written over (a link is not
followed either), and the other devices keep its last synced text. Before, only
"skipping FILE" said so, once, and ``weft sync --once`` said "in sync" on every device
while they held another text than the file (over the limit: a part of a 10 MB file
being written when it was first read went out, the rest as edits, until it passed the
limit). Now:

- the device whose file it is says so once a run, with what is wrong with it ("FILE is
  N bytes, over the L-byte limit: no longer synced; the other devices keep its last
  synced text"; "FILE is binary (a NUL byte at offset N): ..."; "FILE is not valid
  UTF-8 (byte 0xe9 at offset N): ..."; "FILE is now a symbolic link: ..."), and counts
  it as not in sync (``weft sync --once`` names it, with that reason, and exits 1; the
  status line counts it);
- it sets the flag of that reason in the document's ``weft`` map, ``over_limit``,
  ``not_text`` or ``symlink`` (:data:`REASONS`), to its device id, so every other
  device says, once a run, that its copy is the last synced text ("FILE is over the
  size limit on device D: ..."; "FILE is not text on device D: ..."; "FILE is a
  symbolic link on device D: ..."); the flag is an update as any other,
  sent with the file's edits, offline ones included (a document flagged already keeps
  the device it names; a file that goes from one reason to another moves this
  device's flag to the other one in one update);
- the file fit again (back under the limit, text again, a regular text file in the
  link's place) is taken in again (merged three ways with what came from elsewhere
  meanwhile, as any save), the flag is cleared in the same update, and that is said
  ("FILE is back under the L-byte limit: synced again"; "FILE is text again: synced
  again"; "FILE is a regular file again: synced again"). A deletion of the file (or of
  the link) clears it too. Only the device the flag names clears it.

One flag a reason, of one shape (a device id), rather than one flag with a reason in
it: ``over_limit`` was written by weft before ``not_text`` was, and ``not_text`` before
``symlink``; each is part of the documented convention once written. A weft that knows
only the older keys ignores a newer one (it says nothing, as it did before), where a
reason added to an older key (or a new shape for it) would have it say something false:
that a binary file is over the size limit, that a link is not text ("until it is text
again": it may hold text, it is a link), or read a device id that is not one. A device
whose file is over the limit and another whose file is a link are both named, too. A
link is a reason of its own, not a kind of ``not_text``, for the same reason: what each
device says (and what makes the file sync again) differs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from client.events import Event
from client.folder import NotTextFile, Symlink, TooBig, Unfit

if TYPE_CHECKING:
    from client.entry import DocEntry
    from client.workspace import Workspace

OVER_LIMIT = "over_limit"
"""The key of the ``weft`` map naming the device whose file is over the size limit."""

NOT_TEXT = "not_text"
"""The key of the ``weft`` map naming the device whose file is not UTF-8 text."""

SYMLINK = "symlink"
"""The key of the ``weft`` map naming the device where a symbolic link replaced the file."""


@dataclass(frozen=True)
class Reason:
    """Why a synced file stopped syncing, and how each device says it."""

    flag: str  # its key in the document's ``weft`` map
    state: str  # "FILE is STATE on device D"
    again: str  # "it syncs again once AGAIN"
    until: str  # "not synced from there until UNTIL"
    back: str  # "FILE is BACK: synced again" ({limit}: the size limit)
    counted: str  # the status line: "N COUNTED"
    became: str = "is"  # "FILE BECAME WHY: no longer synced" (WHY: Unfit.why)


REASONS: dict[type[Unfit], Reason] = {
    TooBig: Reason(
        OVER_LIMIT,
        "over the size limit",
        again="it is back under the limit",
        until="it is back under it",
        back="back under the {limit}-byte limit",
        counted="over the size limit",
    ),
    NotTextFile: Reason(
        NOT_TEXT,
        "not text",
        again="it is UTF-8 text again",
        until="it is text again",
        back="text again",
        counted="not text",
    ),
    Symlink: Reason(
        SYMLINK,
        "a symbolic link",
        again="it is a regular text file again",
        until="it is a regular file again",
        back="a regular file again",
        counted="replaced by a link",
        became="is now",
    ),
}


class Unsynced:
    """The workspace's synced files that stopped syncing (see the module docstring)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.files: dict[str, Unfit] = {}  # synced files unfit here: what is wrong
        # flags of other devices said, by (path, flag): the device named
        self._heard: dict[tuple[str, str], str] = {}

    def flagged(self, entry: DocEntry) -> bool:
        """Whether the file of ``entry`` stopped syncing here, as last seen or as the
        document's flags say (set in an earlier run)."""
        return entry.path in self.files or bool(self._mine(entry))

    def _mine(self, entry: DocEntry) -> list[str]:
        """The flags of the document that name this device."""
        mine = self.ws.device.device_id
        return [r.flag for r in REASONS.values() if entry.meta.get(r.flag) == mine]

    def stopped(self, entry: DocEntry, unfit: Unfit) -> None:
        """The synced file of ``entry`` is ``unfit`` (over the limit, not text, a link):
        flag the document (unless it is flagged for that reason already: two devices whose
        files are unfit would take the flag from each other at each update) and say so,
        once (and again when the reason changes)."""
        path = entry.path
        before = self.files.get(path)
        self.files[path] = unfit
        reason = REASONS[type(unfit)]
        moved = [flag for flag in self._mine(entry) if flag != reason.flag]  # other reasons
        if reason.flag not in entry.meta or moved:
            shadow = self.ws.disk.get(path)
            with entry.doc.transaction():
                for flag in moved:
                    del entry.meta[flag]
                if reason.flag not in entry.meta:
                    entry.meta[reason.flag] = self.ws.device.device_id
            # the file's text as taken in: unchanged (see client.shadows)
            self.ws.device.file_read(entry, shadow)
            self.ws.remember(path, shadow)
        if before is None or type(before) is not type(unfit):
            message = (
                f"{path} {reason.became} {unfit.why}: no longer synced; the other devices "
                f"keep its last synced text (it syncs again once {reason.again})"
            )
            self.ws.emit(Event("warning", message, path))

    def clear(self, entry: DocEntry, *, deleted: bool = False) -> None:
        """The file of ``entry`` is synced text again (or ``deleted``): unflag the
        document where it names this device, and say that the file syncs again. Called
        in the transaction of the edit that takes the file in."""
        path = entry.path
        for flag in self._mine(entry):
            del entry.meta[flag]
        unfit = self.files.pop(path, None)
        if unfit is not None and not deleted:
            back = REASONS[type(unfit)].back.format(limit=self.ws.folder.max_file_bytes)
            self.ws.emit(Event("local", f"{path} is {back}: synced again", path))

    def elsewhere(self, entry: DocEntry) -> dict[Reason, str]:
        """The devices the document's flags name, when another one: by reason."""
        if entry.deleted:
            return {}
        mine = self.ws.device.device_id
        named = {reason: entry.meta.get(reason.flag) for reason in REASONS.values()}
        return {r: who for r, who in named.items() if isinstance(who, str) and who != mine}

    def heard(self, entry: DocEntry) -> None:
        """Say once that another device's file of ``entry`` stopped syncing, for each of
        the document's flags that names another device."""
        path = entry.path
        named = self.elsewhere(entry)
        for reason in REASONS.values():
            key, who = (path, reason.flag), named.get(reason)
            if who is None:
                self._heard.pop(key, None)
                continue
            if self._heard.get(key) == who:
                continue
            self._heard[key] = who
            self.ws.emit(
                Event(
                    "warning",
                    f"{path} is {reason.state} on device {who}: not synced from there "
                    f"until {reason.until}; this copy holds its last synced text",
                    path,
                )
            )

    async def heard_when_synced(self, entry: DocEntry) -> None:
        """:meth:`heard`, once the server's state is here: the flags as this device
        last saw them may be gone already (the file is fit again)."""
        if await entry.wait_synced():
            self.heard(entry)

    def failed(self) -> dict[str, str]:
        """The files that stopped syncing here, and why they are not in sync."""
        return {
            path: f"{unfit.why}: not synced (the other devices keep its last synced text)"
            for path, unfit in self.files.items()
        }

    def counts(self) -> list[str]:
        """For the status line: "N over the size limit", "N not text", "N replaced by a
        link"."""
        counted = Counter(REASONS[type(unfit)] for unfit in self.files.values())
        return [f"{counted[r]} {r.counted}" for r in REASONS.values() if counted[r]]
