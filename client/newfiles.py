"""Local files this device has no history for (a first sync, or a file created while
offline), or none synced (a file written where its document was deleted), decided with
the server's version at hand (part of :mod:`client.workspace`), once the file is quiet:
last modified ``SMALL_FILE_QUIET_SECONDS`` (0.1 s) ago while it holds at most
``SMALL_FILE_BYTES`` (64 KiB), ``NEW_FILE_QUIET_SECONDS`` (1 s) ago when larger; or, when
it is not after ``NEW_FILE_PATIENCE`` seconds (30), as it stands then (said). A file
still being written (a ``cp``, a download) was taken in as it stood, the rest following
as edits: one that then grew past the size limit left a part of it on every other
device. The bound between the two waits is under ``cp``'s first write (128 KiB): a
``cp`` looked at after it wrote anything waits the longer one, so a small file (a note,
a source file: written at once) waits 0.1 s, and a large one 1 s.

- same text as the server's document → adopted;
- the server has no such document (or a deleted one) → created from the file (a
  deleted one is brought back, its changed lines replacing the deletion's whole), unless
  no new document may have its name (``crdt.keys.check_new_path``: a character that
  disguises a name, say): then it is skipped with a warning. Against a server of
  extension version 4 (a ``Create``, see :meth:`client.connection.DocLink.create`)
  the new document is stored only if the server's still holds nothing past the state
  it was decided on, so two devices that decide at the same moment (both read
  "none", or "deleted") no longer both create it: the first is stored; the other is
  refused, and decides again with the first one's version at hand (same text:
  adopted; different: a conflict, as below). Until the server stored it, the
  document here does not hold it (it is made on a copy, and taken in once stored):
  a refused one leaves nothing behind. Against an older server the file's text is
  edited into the document at once, as before, and two devices in that race both
  bring it in;
- different text → the server's version stays, the local text is recorded as a conflict
  (``POST .../conflicts``) and kept in ``.weft/conflicts/`` (one copy per text, however
  many tries the report takes), and the file gets the server's text. A report the
  server refuses for good (a 4xx, or ``REPORT_SERVER_ERRORS`` server errors in a row)
  fails that file: it stays as it is, unsynced (``failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, Text

from client.entry import CONTENT, META, DocEntry
from client.events import Event
from client.folder import Skip, left
from client.remote import ApiError
from client.textdiff import NotText, apply, check_text, line_diff
from crdt.codec import CREATED_MEANWHILE, Refused
from crdt.errors import BadPath
from crdt.keys import check_new_path

if TYPE_CHECKING:
    from client.workspace import Workspace

# A conflict report the server answered with an error this many times in a row fails
# its file; these 4xx statuses are retried like server errors (404: the document went
# away meanwhile, and the next try creates it from the file).
REPORT_SERVER_ERRORS = 5
RETRIED_STATUSES = frozenset({404, 408, 425, 429})
CREATE_RETRY_SECONDS = 1.0
SMALL_FILE_BYTES = 64 << 10
SMALL_FILE_QUIET_SECONDS = 0.1
NEW_FILE_QUIET_SECONDS = 1.0  # (as client.writes.SAVE_SETTLE_SECONDS)
NEW_FILE_PATIENCE = 30.0
DECISIONS = 3  # decisions in a row when the server refuses a Create (then: retried later)


def _creation(entry: DocEntry, text: str) -> tuple[bytes, int]:
    """The update that makes ``entry``'s document hold ``text`` as
    :meth:`NewFiles._adopt_local` would, made on a copy (with a client id of its own),
    and the characters it inserts."""
    aside: Doc[Any] = Doc()
    aside.apply_update(entry.doc.get_update())
    current = str(entry.text)
    updates: list[bytes] = []
    subscription = aside.observe(lambda event: updates.append(event.update))
    with aside.transaction():
        aside.get(META, type=Map)["deleted"] = False
        inserted, _ = apply(aside.get(CONTENT, type=Text), current, line_diff(current, text))
    aside.unobserve(subscription)
    return updates[0], inserted


def _refused_name(path: str) -> str | None:
    """Why no new document may have the path ``path`` (see ``crdt.keys.check_new_path``:
    one that exists already syncs as any other), or None."""
    try:
        check_new_path(path)
    except BadPath as exc:
        return str(exc)
    return None


class NewFiles:
    """The workspace's files with no document on this device yet (see the module
    docstring): :meth:`maybe_create` when one is found, :meth:`start` when a server
    document meets a local file."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.creating: set[str] = set()  # local files waiting for the server's version
        # Files the server would not record a conflict for: (their text, why).
        self.failed: dict[str, tuple[str, str]] = {}
        self._report_errors: dict[str, int] = {}  # server errors in a row, per file

    def maybe_create(self, path: str) -> None:
        """A file with no document here: start creating one if it is synced text."""
        if path in self.creating:
            return
        text = self.ws.folder.read(path)
        if text is not None and not isinstance(text, Skip):
            self.start(path)

    def start(self, path: str) -> None:
        if path in self.creating:
            return
        self.creating.add(path)
        self.ws.spawn(self._create(path))

    async def _create(self, path: str) -> None:
        """Decide, with the server's version at hand, what a new local file becomes."""
        settled = False
        try:
            settled = await self._decide(path)
        finally:
            self.creating.discard(path)
            device = self.ws.device
            if not settled and device.failure is None and not device.stopping:
                self.ws.spawn(self._create_later(path))
            device.changed()

    async def _decide(self, path: str) -> bool:
        """True once the file is settled (adopted, created, in conflict, or skipped),
        once it is quiet; decided again at once when the server refused its creation
        because another device created the document meanwhile (up to ``DECISIONS``
        times)."""
        await self._quiet(path)
        if isinstance(self.ws.folder.read(path), Skip):  # (over the limit now, say)
            return True
        for _ in range(DECISIONS):
            settled = await self._decide_once(path)
            if settled is not None:
                return settled
        return False

    async def _decide_once(self, path: str) -> bool | None:
        """:meth:`_decide`, once: None when the server refused the creation."""
        await self.ws.device.wait_online()
        entry = await self.ws.device.open(path)
        if not await entry.wait_synced():
            return entry.link.error is not None
        text = self.ws.folder.read(path)
        if isinstance(text, Skip):
            return True
        if text is None:  # gone meanwhile: the server's version (if any) is written
            self.ws.tracked.add(path)
            self.creating.discard(path)
            self.ws.schedule_write(path)
        elif not entry.exists and (refused := _refused_name(path)) is not None:
            # (a server refuses it too, before this: this is for an older one)
            self.ws.folder.warn(path, f"skipping {path}: {refused}")
        elif not entry.exists or entry.deleted:
            try:
                check_text(entry.text, str(entry.text))
            except NotText as exc:  # (see Workspace.ingest)
                self.ws.folder.warn(path, f"not syncing {path}: {exc}")
                return True
            if entry.link.speaks_create and not entry.waiting and not self.ws.device.read_only:
                return await self._create_on_server(entry, text)
            self._adopt_local(entry, text)
        elif str(entry.text) == text:
            self.ws.remember(path, text)
        else:
            return await self._conflict(entry, text)
        return True

    async def _quiet(self, path: str) -> None:
        """Until the file is quiet, for at most ``NEW_FILE_PATIENCE`` seconds (see the
        module docstring)."""
        folder = self.ws.folder
        loop = asyncio.get_running_loop()
        end = loop.time() + NEW_FILE_PATIENCE
        while (wait := self._quiet_in(path)) > 0:
            if loop.time() >= end:
                folder.warn(
                    path,
                    f"{path} is still being written after {NEW_FILE_PATIENCE:g} s: "
                    "synced as it is now (what is written next follows as edits)",
                )
                return
            await asyncio.sleep(min(wait, end - loop.time()))

    def _quiet_in(self, path: str) -> float:
        """How much longer until the file is quiet, as it is now (0: it is, or gone)."""
        info = self.ws.folder.look(path)
        if info is None:
            return 0.0
        small = info.st_size <= SMALL_FILE_BYTES
        return left(info.st_mtime_ns, SMALL_FILE_QUIET_SECONDS if small else NEW_FILE_QUIET_SECONDS)

    async def _create_later(self, path: str) -> None:
        await asyncio.sleep(CREATE_RETRY_SECONDS)
        if path not in self.ws.tracked:
            self.maybe_create(path)
        elif self.ws.disk.get(path) is None:  # a file where a deleted document was: its
            self.ws.schedule_write(path)  # write takes it in (decided again, if there)

    def _adopt_local(self, entry: DocEntry, text: str) -> None:
        """Make the document hold the file's text: a new one, or a deleted one brought
        back. The lines it shares with the text the deletion left stay as they are (a
        restore of that text changes only the flag), and each run of other lines is
        replaced whole (``line_diff``): a device that brought the document back at the
        same moment with other lines (both decided while the server had it deleted)
        then has them next to these, never interleaved character by character (as they
        were, edited into the deleted text by a character diff). Replacing the whole
        text instead put an offline edit made before the deletion (kept in a record) at
        the start of the document, the characters it was made next to being deleted."""
        current = str(entry.text)
        queued = entry.unrecorded_local
        revived = entry.deleted
        with entry.doc.transaction():
            entry.meta["deleted"] = False
            inserted, _ = apply(entry.text, current, line_diff(current, text))
        if entry.unrecorded_local > queued:  # (saved before the edit: client.shadows)
            self.ws.device.file_read(entry, text)
        self._adopted(entry, text, revived, inserted)

    async def _create_on_server(self, entry: DocEntry, text: str) -> bool | None:
        """:meth:`_adopt_local` as a ``Create``: the update is made on a copy of the
        document and sent; once the server stored it, it is taken in here (recorded as
        a local update, as :meth:`_adopt_local`'s, but not sent again). None when the
        server refused it (the document changed meanwhile; what changed it is here
        now, see ``DocLink.create``); False when it did not get there (tried again
        later)."""
        revived = entry.deleted
        state = entry.doc.get_state()
        update, inserted = _creation(entry, text)
        try:
            answer = await entry.link.create(state, update)
        except ConnectionError:
            return False
        if isinstance(answer, Refused):
            return None if answer.code == CREATED_MEANWHILE else False  # (said by the link)
        self.ws.device.apply_stored(entry, update, answer)
        self.ws.device.file_read(entry, text)  # (saved before the edit: client.shadows)
        self._adopted(entry, text, revived, inserted)
        self.ws.ingest(entry.path)  # saved again while the creation was on its way
        return True

    def _adopted(self, entry: DocEntry, text: str, revived: bool, inserted: int) -> None:
        """The document holds the file's ``text`` now (``revived``: it was deleted)."""
        self.creating.discard(entry.path)
        self.ws.kept.pop(entry.path, None)  # back: a copy kept at its deletion is old news
        self.ws.remember(entry.path, text)
        if revived and not inserted:
            said = f"{entry.path}: brought back (its text as it was)"
        else:
            said = f"{entry.path}: {'brought back' if revived else 'new'} (+{inserted} chars)"
        self.ws.emit(Event("local", said, entry.path))

    async def _conflict(self, entry: DocEntry, text: str) -> bool:
        """The server has a different file at this path: keep it, record ours."""
        path = entry.path
        device = self.ws.device
        if device.read_only:
            self.ws.folder.warn(
                path,
                f"{path} differs from the server's and the token is read-only: "
                "the local file is kept and not synced",
            )
            return True
        if self.failed.get(path, (None,))[0] == text:
            return True  # the server would not record it: not tried again for this text
        backup = self.backup(path, text)
        try:
            record = await device.api.report_conflict(path, text, device.device_id)
        except ApiError as exc:
            return self._report_refused(path, text, backup, exc)
        except (OSError, TimeoutError) as exc:
            self.ws.folder.warn(path, f"{path}: cannot record a conflict yet ({exc}); will retry")
            return False
        self._report_errors.pop(path, None)
        self.failed.pop(path, None)
        self.creating.discard(path)
        self.ws.conflicts.append(record)
        self.ws.tracked.add(path)
        self.ws.kept.pop(path, None)  # (the document is not deleted: see client.writes)
        server_text = str(entry.text)
        # Saved again while the report was on its way? Keep that text too: the file is
        # about to hold the server's.
        later = self.ws.folder.read(path)
        if isinstance(later, str) and later not in (text, server_text):
            backup = self.backup(path, later)
        if not isinstance(later, Skip):  # (binary, a link...: no text to keep, see below)
            self.ws.folder.write(path, server_text)
            self.ws.remember(path, server_text)
            # (a write from elsewhere, counted as one: the summary said "0 file(s) written")
            self.ws.emit(Event("remote", f"{path} updated (remote)", path))
        # A change that came while the report was on its way was not written (the file
        # was being decided: client.writes), and the document may be deleted again since:
        # written now, the file goes with it. A file saved meanwhile that cannot be
        # synced (binary, not UTF-8, too big, a link) has no text to back up: it was
        # written over, and lost; it is left as it is, not written, and not in sync
        # until it goes (tracked with no shadow: client.writes).
        self.ws.schedule_write(path)
        cid = str(record.get("id", ""))
        self.ws.emit(
            Event(
                "conflict",
                f"conflict: {path} differs from the server's version, which stays; your text "
                f"is in conflict {cid} ({device.api.conflict_url(cid)}) and in {backup}",
                path,
                {"id": cid, "backup": str(backup)},
            )
        )
        return True

    def _report_refused(self, path: str, text: str, backup: Path, exc: ApiError) -> bool:
        """The server answered a conflict report with an error: False to try again
        later; True once retrying will not help (a 4xx other than 404, 408, 425 and 429,
        or ``REPORT_SERVER_ERRORS`` server errors in a row), when the file fails: it is
        left as it is, unsynced (``failed``), and not reported again with this text."""
        errors = self._report_errors[path] = self._report_errors.get(path, 0) + 1
        client_error = 400 <= exc.status < 500 and exc.status not in RETRIED_STATUSES
        if not client_error and errors < REPORT_SERVER_ERRORS:
            self.ws.folder.warn(path, f"{path}: cannot record a conflict yet ({exc}); will retry")
            return False
        self._report_errors.pop(path, None)
        tries = "" if client_error else f" ({errors} tries)"
        message = (
            f"the server could not record its conflict with the server's version{tries}: "
            f"{exc}; the local file is left as it is, not synced (a copy is in {backup})"
        )
        self.failed[path] = (text, message)
        self.creating.discard(path)
        self.ws.emit(Event("error", f"{path}: {message}", path))
        return True

    def backup(self, path: str, text: str) -> Path:
        """The copy of ``text`` kept for a conflict of ``path``: one made already (by
        an earlier try of the same report, or an earlier run), else a new one."""
        first = self.ws.folder.copy_base(path)
        copies = re.compile(re.escape(first.name) + r"\.\d{8}T\d{6}(\.\d+)?")
        with contextlib.suppress(OSError):
            for copy in sorted(first.parent.iterdir()):
                if not copies.fullmatch(copy.name) or not copy.is_file():
                    continue
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    if copy.read_text(encoding="utf-8") == text:
                        return copy
        return self.ws.folder.backup(path, text)
