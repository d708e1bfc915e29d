"""A device's small mutable state, beside its local history: one SQLite file.

The history (``history.db``, :class:`crdt.history.History`) holds every update the device
made or received; it is append-only. What changes in place lives here, in ``state.db``:

- ``meta``: the on-disk format, the device id, and what the data directory is bound to
  (server, tenant, project): one data directory syncs one project;
- ``docs``: per document, the last server versionstamp seen (``base``) and the local
  versionstamp of the last local update the server acknowledged (``acked``, the outbox
  cursor: local updates after it are re-sent);
- ``files``: per file of a folder workspace, the text last written or read (``shadow``),
  which tells a user's edit from a remote change not yet written, and the local-history
  versionstamp of the document's last local update when it was taken (``local``);
- ``ahead``: per local edit made from a file, the text read from it, written before the
  edit reaches the history: the document's last local update before the edit's batch
  (``after``) and how many local updates of the document that batch holds up to the
  edit (``nth``) tell a restart whether the history has the edit. A file state that
  names a later local update drops the rows before it (they are only read at start);
- ``said``: the ids of the conflict records ``weft sync`` has said (live, or found in the
  project's conflict list), so a record is said once across runs; an id is forgotten
  once its record is no longer in the list of open ones (:mod:`client.said`).

Changes are buffered and written every ``FLUSH_SECONDS``, after the local history has
what they follow from, so a device killed in between (``kill -9``, a power cut) loses
the latest writes here but never the history's. For ``docs`` that is harmless: an
older ``acked`` re-sends updates the server already has (appends are idempotent), an
older ``base`` only widens conflict detection. For ``files`` it is not: a shadow older
than the document's last local edit made a restart merge that edit back in, as if it
came from elsewhere (an undo made while the sync was down was undone again; a line
rewritten twice came back as both lines). ``local`` lets a restart tell such a shadow,
and ``ahead`` gives it the file's text for that edit (:mod:`client.shadows`). ``ahead``
alone is written at once, before the history append it goes with (and synchronously to
disk, as the history is): the document's text is not the file's when the edit was
merged with a server update not written to the file yet. Calls are synchronous; the
device runs them off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from crdt.errors import FormatError, WeftError
from crdt.keys import DEVICE_ID, DEVICE_ID_RULE
from crdt.versionstamp import Versionstamp

log = logging.getLogger("weft.client")
_T = TypeVar("_T")

FORMAT_MAJOR = 1
FORMAT_MINOR = 3  # 1.1: files.local; 1.2: ahead; 1.3: said
FLUSH_SECONDS = 0.2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    path TEXT PRIMARY KEY NOT NULL, base BLOB, acked BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY NOT NULL, shadow TEXT, deleted INTEGER NOT NULL DEFAULT 0,
    local BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ahead (
    path TEXT NOT NULL, after BLOB NOT NULL, nth INTEGER NOT NULL, text TEXT,
    PRIMARY KEY (path, after, nth)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS said (id TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
"""


class DataDirBusy(WeftError):
    """Another process is using this data directory (one device, one process)."""


class BindingMismatch(FormatError):
    """The data directory already syncs another server, tenant or project."""


@dataclass(frozen=True, slots=True)
class DocState:
    base: Versionstamp | None = None
    acked: Versionstamp | None = None


@dataclass(frozen=True, slots=True)
class FileState:
    """``shadow`` is None for a file known to be deleted. ``local`` is the local-history
    versionstamp of the document's last local update when the shadow was taken (``ZERO``:
    it had none; None: not known, a state saved before format 1.1)."""

    shadow: str | None
    deleted: bool = False
    local: Versionstamp | None = None


@dataclass(frozen=True, slots=True)
class Ahead:
    """A file's text (None: the file was gone) as read for a local edit of its document,
    saved before the edit reached the local history. ``after`` is the document's last
    local update before the batch that records the edit (``ZERO``: none), and the edit is
    the ``nth`` local update of the document in that batch: the history holding ``nth``
    local updates after ``after`` tells that the edit was recorded (a batch too big for
    one transaction is appended in parts, see :mod:`client.shadows`)."""

    text: str | None
    after: Versionstamp
    nth: int


def _vs(raw: bytes | None) -> Versionstamp | None:
    return None if raw is None else Versionstamp(bytes(raw))


def _raw(vs: Versionstamp | None) -> bytes | None:
    return None if vs is None else vs.raw


class DeviceState:
    """The ``state.db`` of one data directory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL, as the history is: an ``ahead`` row must survive whatever the history
        # append after it survives (a power cut too).
        self._conn.execute("PRAGMA synchronous=FULL")
        try:
            self._conn.executescript(_SCHEMA)
            self._check_format()
            self._upgrade()
        except BaseException:
            self._conn.close()
            raise

    def _upgrade(self) -> None:
        """Add what an older minor format lacks (1.0: ``files.local``, read as unknown;
        1.1: the ``ahead`` table, 1.2: the ``said`` table, both made by the schema
        script; an empty ``said`` makes the next ``weft sync`` say every open record of
        this device once). An ``ahead`` table of one
        row per file (a development build of 1.2, which never tells the edit its text
        goes with) is made anew, empty: a restart then takes the older rule
        (client.shadows) for the edits it held."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(files)")}
        if "local" not in columns:
            self._conn.execute("ALTER TABLE files ADD COLUMN local BLOB")
        ahead = {row[1] for row in self._conn.execute("PRAGMA table_info(ahead)")}
        if "nth" not in ahead:
            self._conn.execute("DROP TABLE ahead")
            self._conn.executescript(_SCHEMA)

    def _check_format(self) -> None:
        raw = self.meta("format")
        current = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
        if raw is None:
            self.set_meta("format", current)
            return
        major, _, minor = raw.partition(".")
        if int(major) > FORMAT_MAJOR:
            raise FormatError(
                f"{self.path} is device state format {raw}, newer than this weft understands "
                f"({current}); upgrade weft"
            )
        if int(major) == FORMAT_MAJOR and int(minor or 0) < FORMAT_MINOR:
            # (an older weft of the same major still opens it; the files it saves keep
            # an older ``local``, which only makes a restart rebuild their shadow from
            # the history, see client.shadows)
            self.set_meta("format", current)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- meta -------------------------------------------------------------------------

    def meta(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def device_id(self, wanted: str | None = None) -> str:
        """This device's id: ``wanted`` if given, else the stored one, else a new one.
        The server is told it (``?device=``): it must match ``DEVICE_ID``."""
        if wanted and not DEVICE_ID.fullmatch(wanted):
            raise ValueError(f"device id {wanted!r}: use {DEVICE_ID_RULE}")
        current = self.meta("device")
        if wanted and wanted != current:
            self.set_meta("device", wanted)
            return wanted
        if current:
            return current
        new = f"dev-{secrets.token_hex(4)}"
        self.set_meta("device", new)
        return new

    def bind(self, server: str, tenant: str, project: str) -> None:
        """Bind the directory to one project; :class:`BindingMismatch` if it has another."""
        wanted = {"server": server, "tenant": tenant, "project": project}
        stored = {name: self.meta(name) for name in wanted}
        if all(v is None for v in stored.values()):
            for name, value in wanted.items():
                self.set_meta(name, value)
            return
        if stored["tenant"] != tenant or stored["project"] != project:
            if not self._ever_synced():
                # e.g. a first run with a mistyped --project, refused by the server: the
                # folder held nothing of that project, so it is no one's yet
                log.warning(
                    "%s: bound to %s/%s, which it never synced with: now %s/%s",
                    self.path.parent, stored["tenant"], stored["project"], tenant, project,
                )  # fmt: skip
                for name, value in wanted.items():
                    self.set_meta(name, value)
                return
            raise BindingMismatch(
                f"{self.path.parent} already syncs project {stored['tenant']}/"
                f"{stored['project']}, not {tenant}/{project}: use another folder or data "
                "directory"
            )
        if stored["server"] != server:
            # Same project reached by another address (a new port, a proxy): allowed.
            self.set_meta("server", server)

    def _ever_synced(self) -> bool:
        """Whether the server of the binding ever acknowledged or sent this directory
        anything (a document with a base or an acked cursor)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM docs WHERE base IS NOT NULL OR acked IS NOT NULL LIMIT 1"
            ).fetchall()
        return bool(row)

    # --- docs -------------------------------------------------------------------------

    def docs(self) -> dict[str, DocState]:
        with self._lock:
            rows = self._conn.execute("SELECT path, base, acked FROM docs").fetchall()
        return {str(path): DocState(_vs(base), _vs(acked)) for path, base, acked in rows}

    def save_docs(self, changes: dict[str, DocState]) -> None:
        self._write_many(
            "INSERT INTO docs (path, base, acked) VALUES (?, ?, ?) ON CONFLICT(path) "
            "DO UPDATE SET base = excluded.base, acked = excluded.acked",
            [(p, _raw(s.base), _raw(s.acked)) for p, s in changes.items()],
        )

    def _write_many(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        """``sql`` for each of ``rows``, in one transaction."""
        if not rows:
            return
        with self._lock, self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(sql, rows)

    # --- files ------------------------------------------------------------------------

    def files(self) -> dict[str, FileState]:
        with self._lock:
            rows = self._conn.execute("SELECT path, shadow, deleted, local FROM files").fetchall()
        return {
            str(path): FileState(None if shadow is None else str(shadow), bool(deleted), _vs(local))
            for path, shadow, deleted, local in rows
        }

    def save_files(self, changes: dict[str, FileState | None]) -> None:
        """Store file states; ``None`` forgets the file."""
        if not changes:
            return
        with self._lock, self._conn:
            self._conn.execute("BEGIN")
            for path, state in changes.items():
                if state is None:
                    self._conn.execute("DELETE FROM files WHERE path = ?", (path,))
                    self._conn.execute("DELETE FROM ahead WHERE path = ?", (path,))
                    continue
                if state.local is not None:  # texts of edits this state accounts for
                    self._conn.execute(
                        "DELETE FROM ahead WHERE path = ? AND after < ?", (path, state.local.raw)
                    )
                self._conn.execute(
                    "INSERT INTO files (path, shadow, deleted, local) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET shadow = excluded.shadow, "
                    "deleted = excluded.deleted, local = excluded.local",
                    (path, state.shadow, int(state.deleted), _raw(state.local)),
                )

    def aheads(self) -> dict[str, list[Ahead]]:
        """Each file's ``ahead`` texts, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT path, after, nth, text FROM ahead ORDER BY path, after, nth"
            ).fetchall()
        found: dict[str, list[Ahead]] = {}
        for path, after, nth, text in rows:
            ahead = Ahead(None if text is None else str(text), Versionstamp(bytes(after)), nth)
            found.setdefault(str(path), []).append(ahead)
        return found

    def save_aheads(self, rows: list[tuple[str, Ahead]]) -> None:
        self._write_many(
            "INSERT INTO ahead (path, after, nth, text) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path, after, nth) DO UPDATE SET text = excluded.text",
            [(p, a.after.raw, a.nth, a.text) for p, a in rows],
        )

    # --- said -------------------------------------------------------------------------

    def said(self) -> set[str]:
        """The ids of the conflict records said on this device."""
        with self._lock:
            rows = self._conn.execute("SELECT id FROM said").fetchall()
        return {str(cid) for (cid,) in rows}

    def save_said(self, changes: dict[str, bool]) -> None:
        """Remember (True) or forget (False) conflict ids, in one transaction."""
        if not changes:
            return
        with self._lock, self._conn:
            self._conn.execute("BEGIN")
            for cid, said in changes.items():
                if said:
                    self._conn.execute("INSERT OR IGNORE INTO said (id) VALUES (?)", (cid,))
                else:
                    self._conn.execute("DELETE FROM said WHERE id = ?", (cid,))


class StateWriter:
    """Buffers state changes and writes them off the event loop: file states at once
    (each follows a change the local history has just recorded: the sooner it is saved,
    the less a crash leaves to :mod:`client.shadows`), and so are conflict ids said; the
    rest every ``FLUSH_SECONDS``
    (and on :meth:`flush`). Acks and shadows come in bursts, one write takes them all."""

    def __init__(self, state: DeviceState) -> None:
        self.state = state
        self.files = state.files()
        self._docs: dict[str, DocState] = {}
        self._files: dict[str, FileState | None] = {}
        self._said: dict[str, bool] = {}
        self._files_due = asyncio.Event()
        self._writing: asyncio.Future[None] | None = None

    def doc(self, path: str, state: DocState) -> None:
        self._docs[path] = state

    def file(self, path: str, state: FileState | None) -> None:
        """Remember a workspace file's shadow (None forgets the file)."""
        if state is None:
            self.files.pop(path, None)
        else:
            self.files[path] = state
        self._files[path] = state
        self._files_due.set()

    def said(self, changes: dict[str, bool]) -> None:
        """Remember (True) or forget (False) conflict ids said; written at once, as a file
        state is (a crash right after a conflict was said then says it again, at most)."""
        self._said.update(changes)
        self._files_due.set()

    async def ahead(self, rows: list[tuple[str, Ahead]]) -> None:
        """Save ``rows`` now (not buffered): the recorder awaits it before it appends the
        edits they go with."""
        await self._write(self.state.save_aheads, rows)

    async def _write(self, save: Callable[[_T], None], changes: _T) -> None:
        """Run ``save(changes)`` in a thread once the write before it has ended. A
        cancelled caller leaves its write running: the next one waits for it, so a
        state taken back for a retry (:meth:`flush`) never lands before, and under, a
        newer one (a file state under its successor, its ``ahead`` rows pruned)."""
        while self._writing is not None and not self._writing.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        self._writing = asyncio.ensure_future(asyncio.to_thread(save, changes))
        await asyncio.shield(self._writing)

    async def flush(self) -> None:
        """Write what is buffered; what a failed write held is kept for the next one
        (under anything newer buffered meanwhile)."""
        docs, self._docs = self._docs, {}
        files, self._files = self._files, {}
        said, self._said = self._said, {}
        try:
            if docs:
                await self._write(self.state.save_docs, docs)
                docs = {}
            if files:
                await self._write(self.state.save_files, files)
                files = {}
            if said:
                await self._write(self.state.save_said, said)
        except BaseException:
            self._docs = {**docs, **self._docs}
            self._files = {**files, **self._files}
            self._said = {**said, **self._said}
            raise

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._files_due.wait()
            self._files_due.clear()
            try:
                await self.flush()
            except Exception:  # a task boundary: state writes are retried on the next tick
                log.error("saving device state failed", exc_info=True)
                await asyncio.sleep(FLUSH_SECONDS)


_HELD: set[Path] = set()  # the lock files this process holds (see lock_data_dir)


class DataDirLock:
    """The lock :func:`lock_data_dir` took; ``close()`` releases it."""

    def __init__(self, handle: IO[bytes], key: Path) -> None:
        self._handle = handle
        self._key = key

    def close(self) -> None:
        if not self._handle.closed:
            _HELD.discard(self._key)
            self._handle.close()


def lock_data_dir(path: Path) -> DataDirLock:
    """Hold an exclusive lock on ``path`` while the device runs (released by ``close()``
    or when the process dies); DataDirBusy if another process, or another Device of
    this one, holds it. (The lock is ``flock``'s, which two opens of one file conflict
    on in one process too: the message said "another weft process" for a second
    Device in the same program.)"""
    key = path.resolve()
    if key in _HELD:
        raise DataDirBusy(
            f"{path.parent} is in use by another Device of this process "
            "(one device per data directory: close the other first)"
        )
    handle = path.open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirBusy(
            f"{path.parent} is in use by another weft process (one device, one process)"
        ) from None
    _HELD.add(key)
    return DataDirLock(handle, key)
