"""Synced files over the size limit (part of :mod:`client.workspace`).

A file that syncs stops syncing once it grows past the limit (``max_file_bytes``, 4 MiB:
:data:`client.folder.MAX_FILE_BYTES`): it is neither taken in nor written over, and the
other devices keep its last synced text. Before, only "skipping FILE" said so, once, and
``weft sync --once`` said "in sync" on every device while they held a part of the file
(a 10 MB file being written when it was first read went out in part, the rest as
edits, until it passed the limit). Now:

- the device whose file is over the limit says so once ("FILE is N bytes, over the
  L-byte limit: no longer synced; the other devices keep its last synced text"), and
  counts it as not in sync (``weft sync --once`` names it and exits 1);
- it sets ``weft.over_limit`` in the document to its device id, so every other device
  says, once a run, that its copy is the last synced text ("FILE is over the size
  limit on device D: ..."); the flag is an update as any other, sent with the file's
  edits, offline ones included (a document flagged already keeps the device it names);
- the file back under the limit is taken in again (merged three ways with what came
  from elsewhere meanwhile, as any save), the flag is cleared in the same update, and
  that is said ("FILE is back under the L-byte limit: synced again"). A deletion of the
  file clears it too. Only the device the flag names clears it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from client.events import Event

if TYPE_CHECKING:
    from client.entry import DocEntry
    from client.workspace import Workspace

OVER_LIMIT = "over_limit"
"""The key of the ``weft`` map naming the device whose file is over the size limit."""


class OverLimit:
    """The workspace's synced files over the size limit (see the module docstring)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.files: dict[str, int] = {}  # synced files over the limit here: their size
        self._heard: dict[str, str] = {}  # flags of other devices said: the device named

    @property
    def limit(self) -> int:
        return self.ws.folder.max_file_bytes

    def flagged(self, entry: DocEntry) -> bool:
        """Whether the file of ``entry`` is over the limit here, as last seen or as the
        document's flag says (set in an earlier run)."""
        return entry.path in self.files or self._mine(entry)

    def _mine(self, entry: DocEntry) -> bool:
        return entry.meta.get(OVER_LIMIT) == self.ws.device.device_id

    def over(self, entry: DocEntry, size: int) -> None:
        """The synced file of ``entry`` is ``size`` bytes, over the limit: flag the
        document (unless it is flagged already: two devices over the limit would take
        the flag from each other at each update) and say so, once."""
        path = entry.path
        said = path in self.files
        self.files[path] = size
        if OVER_LIMIT not in entry.meta:
            shadow = self.ws.disk.get(path)
            entry.meta[OVER_LIMIT] = self.ws.device.device_id
            # the file's text as taken in: unchanged (see client.shadows)
            self.ws.device.file_read(entry, shadow)
            self.ws.remember(path, shadow)
        if not said:
            message = (
                f"{path} is {size} bytes, over the {self.limit}-byte limit: no longer "
                "synced; the other devices keep its last synced text (it syncs again "
                "once it is back under the limit)"
            )
            self.ws.emit(Event("warning", message, path))

    def clear(self, entry: DocEntry, *, deleted: bool = False) -> None:
        """The file of ``entry`` is synced text again (or ``deleted``): unflag the
        document if it names this device, and say that the file syncs again. Called in
        the transaction of the edit that takes the file in."""
        path = entry.path
        if self._mine(entry):
            del entry.meta[OVER_LIMIT]
        if self.files.pop(path, None) is not None and not deleted:
            message = f"{path} is back under the {self.limit}-byte limit: synced again"
            self.ws.emit(Event("local", message, path))

    def elsewhere(self, entry: DocEntry) -> str | None:
        """The device the document's flag names, when it is another one."""
        who = entry.meta.get(OVER_LIMIT)
        mine = self.ws.device.device_id
        return who if isinstance(who, str) and who != mine and not entry.deleted else None

    def heard(self, entry: DocEntry) -> None:
        """Say once that another device's file of ``entry`` is over the limit, when the
        document's flag names another device."""
        path = entry.path
        who = self.elsewhere(entry)
        if who is None:
            self._heard.pop(path, None)
            return
        if self._heard.get(path) == who:
            return
        self._heard[path] = who
        self.ws.emit(
            Event(
                "warning",
                f"{path} is over the size limit on device {who}: not synced from there "
                "until it is back under it; this copy holds its last synced text",
                path,
            )
        )

    async def heard_when_synced(self, entry: DocEntry) -> None:
        """:meth:`heard`, once the server's state is here: the flag as this device
        last saw it may be gone already (the file is back under the limit)."""
        if await entry.wait_synced():
            self.heard(entry)

    def failed(self) -> dict[str, str]:
        """The files over the limit here, and why they are not in sync."""
        return {
            path: f"{size} bytes, over the {self.limit}-byte limit: not synced (the other "
            "devices keep its last synced text)"
            for path, size in self.files.items()
        }
