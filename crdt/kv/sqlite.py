"""The embedded engine: one SQLite file in WAL mode, FDB semantics.

- One writer thread owns the only write connection. It drains every transaction function
  queued since its last commit into one SQLite transaction (one fsync): each function gets
  its own batch order, which is exactly how FoundationDB batches commits, and a function
  that raises is rolled back alone (its buffered sets are dropped; one that wrote to
  SQLite early runs in a SAVEPOINT).
- Versionstamps are FDB's 10 bytes: an 8-byte commit counter kept in the same database
  (read and bumped under the write lock, so several processes on one file stay ordered)
  plus the 2-byte batch order.
- Readers use their own connections in a small thread pool: WAL snapshots never block
  the writer.
- ``watch`` is served in-process right after each commit, and across processes by a
  poller that checks ``PRAGMA data_version`` while anybody is watching: every
  ``poll_interval`` (10 ms) while the file changes, slowing down to every
  ``poll_idle_interval`` (50 ms) once it has not for a while (a server with 50 idle
  rooms x 4 clients used 1.9 % of a core polling every 10 ms, 0.5 % so). The poller
  re-reads watched keys only when a commit it has not seen came from another process
  (each commit bumps the commit counter; this engine knows which numbers are its own).
  The engine remembers the value it last offered for each watched key, and for
  ``WATCH_MEMORY`` seconds after its last watch ended: a watcher that comes back with
  the value it was woken with (a room does, after each commit) is compared with that,
  with no read. Reading it instead cost a reader-thread round trip per commit and per
  watching room: a quarter of the server's CPU in the 50 rooms x 4 clients fan-out.
- Nothing a caller does (cancelling a transaction, closing a watcher's event loop) can
  stop the writer thread; if it stops anyway, every pending and later transaction fails
  with :class:`StoreError` instead of waiting forever.
- Keys are BLOBs in a ``WITHOUT ROWID`` table: SQLite compares BLOBs with memcmp, the
  order FDB uses.
- Checkpoints (copying the WAL back into the database file, with its own fsync) run in
  a background thread on their own connection, once commits pause (or every
  ``checkpoint_commits`` commits or ``checkpoint_every`` seconds while they do not), in
  SQLite's PASSIVE mode, which never blocks the writer or readers. Left to the
  committing connection (SQLite's default), every few hundred commits one commit would
  pay for the copy and the extra fsync: the slowest percent of commits was that.
- The WAL file stays bounded (``wal_limit``). It only starts over from its beginning
  when a checkpoint has copied all of it before the next commit; under steady traffic
  a commit kept landing during the background checkpoint and the WAL grew without end
  (179 MB against an 8.8 MB database after 30 s of 300 commits/s). Once it is over the
  limit, the writer thread checkpoints it itself right after a commit, at most once a
  second (nothing can commit meanwhile, so that checkpoint finishes), the next commit
  starts it over, and SQLite truncates it back to the limit (``journal_size_limit``).
- The database file and its WAL must stay the files it opened: one deleted, or replaced
  by another (a restore copied over it, a rename), while the engine is open takes every
  later commit to a file no longer at its path, which a restart would not find. The
  writer looks (device and inode) right after a commit and before it is reported, at
  most once per ``file_check_every`` seconds (0.1 s; no look while no commits come);
  once they are not, it fails that batch and every later transaction
  (:class:`FilesMoved`) instead of reporting commits that are lost. A file copied into
  (same inode) is not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

from crdt.errors import FormatError, StoreError, StoreStopped, TransactionTooLarge
from crdt.kv.base import (
    MAX_KEY,
    MAX_STAMPED_KEY,
    MAX_STAMPED_VALUE,
    MAX_TRANSACTION,
    MAX_VALUE,
    PLACEHOLDER_LEN,
    Committed,
    ReadTransaction,
    Transaction,
    add_le,
    check_key,
    check_stamped,
    check_value,
)

T = TypeVar("T")
log = logging.getLogger("weft.store")

FORMAT_MAJOR = 1
FORMAT_MINOR = 0
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
WAL_SIZE_EVERY = 0.1  # seconds between two looks at the WAL file's size by the writer
FILE_CHECK_EVERY = 0.1  # seconds between two looks at whether the files are still there
COMMIT_SETTLE_SECONDS = 0.05  # the poller waits so long at most for a commit's record
POLL_SLOWDOWN = 1.25  # the watch poller's interval grows so much per quiet poll
WATCH_MEMORY = 5.0  # seconds a key's last offered value is remembered after its last watch
_UNKNOWN = object()  # a watched key no commit offered a value for yet: watch() reads it
_IN_LIMIT = 512  # keys per "IN (...)" query, under SQLite's parameter limit (999 before 3.32)
_IN_QUERIES = {
    1 << n: f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * (1 << n))})" for n in range(10)
}
# Rows per multi-row INSERT (512 parameters: under SQLite's 999 before 3.32), and one
# statement per power of two from _INSERT_PAD to it: a batch is written with a few
# statements, each compiled once per connection.
_INSERT_ROWS = 256
_INSERT_PAD = 8
_INSERTS = {
    1 << n: "INSERT OR REPLACE INTO kv (k, v) VALUES " + ", ".join(["(?, ?)"] * (1 << n))
    for n in range(_INSERT_PAD.bit_length() - 1, _INSERT_ROWS.bit_length())
}


def _insert_rows(conn: sqlite3.Connection, rows: dict[bytes, bytes]) -> None:
    """Write ``rows`` with multi-row INSERTs, not ``executemany``: that steps the
    statement once per row, and CPython releases and retakes the GIL around every step.
    While the event loop thread is busy, retaking it waits for the loop: the writer's
    inserts took twice as long (wall) as alone, against no change for multi-row
    statements, which were also ~25 % faster alone (4.1 vs 5.8 µs per row, measured
    here with weft-like keys). Chunks of a power of two rows; the last few rows (under
    ``_INSERT_PAD``) go in one statement padded with copies of the last row (writing a
    row again with the same value changes nothing): a one-update commit (~7 rows) is
    one statement, not three."""
    flat = [part for row in rows.items() for part in row]
    at, total = 0, len(rows)
    while at < total:
        left = total - at
        if left < _INSERT_PAD:
            conn.execute(_INSERTS[_INSERT_PAD], flat[2 * at :] + flat[-2:] * (_INSERT_PAD - left))
            return
        size = min(_INSERT_ROWS, 1 << (left.bit_length() - 1))
        conn.execute(_INSERTS[size], flat[2 * at : 2 * (at + size)])
        at += size


_BUMP_COUNTER = "UPDATE engine SET value = value + 1 WHERE name = 'commit' RETURNING value"
# RETURNING is SQLite 3.35 (2021) and later; before it, the bump and then a read.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_BUMP_ONLY = "UPDATE engine SET value = value + 1 WHERE name = 'commit'"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS engine (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
"""


class FilesMoved(StoreStopped):
    """The database file or its WAL was deleted or replaced while the engine was open:
    it writes nothing more (a restart opens whatever is at the path now)."""


def _identity(path: Path) -> tuple[int, int]:
    """The file at ``path`` (device, inode): another one if it was replaced."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


class _Connection(sqlite3.Connection):
    """A connection that runs every statement on one cursor of its own.

    ``Connection.execute`` makes a new cursor per call, and CPython keeps a weak
    reference to each one in a list it prunes only every 200 cursors: under load that is
    a stream of small objects allocated all through the busy period, some of which
    survive it, scattered over the allocator's arenas (seen: ~350 dead weak references
    left after 1,000 documents were unloaded). One cursor per connection makes none,
    and no cursor object per statement either. Every statement is stepped to its end
    (``fetchall``), so none is left open holding a read snapshot between calls.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shared = self.cursor()

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self._shared.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self._shared.executemany(sql, parameters)


class _Reader:
    """Reads on one connection; the base of the write transaction too."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: bytes) -> bytes | None:
        rows = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchall()
        return bytes(rows[0][0]) if rows else None

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        found: dict[bytes, bytes] = {}
        for at in range(0, len(keys), _IN_LIMIT):
            part = list(keys[at : at + _IN_LIMIT])
            # Padded to a power of two with its last key: one compiled statement per
            # size class instead of one per length (SQLite compiles each new text).
            part += part[-1:] * ((1 << (len(part) - 1).bit_length()) - len(part))
            rows = self._conn.execute(_IN_QUERIES[len(part)], part)
            found.update((bytes(k), bytes(v)) for k, v in rows)
        return [found.get(key) for key in keys]

    def get_range(
        self, begin: bytes, end: bytes, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        order = "DESC" if reverse else "ASC"
        rows = self._conn.execute(
            f"SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k {order} LIMIT ?",
            (begin, end, limit if limit > 0 else -1),
        ).fetchall()
        return [(bytes(k), bytes(v)) for k, v in rows]

    def read_version(self) -> int:
        """The commit counter as of this snapshot."""
        return _commit_counter(self._conn)


class _Writer(_Reader):
    """A write transaction inside the writer's SQLite transaction (one SAVEPOINT).

    Sets are buffered and written with one ``executemany`` (at the end, or before a read
    the buffer cannot answer): most of an append's writes are a few rows per update, and
    per-statement overhead would otherwise dominate. Reads see the buffer first.

    The SAVEPOINT that lets one failing function roll back alone is opened only when the
    function writes to SQLite before it returns (a clear, or a range read that flushes
    the buffer). A function that only sets, like every append, writes nothing until it
    has returned, so a failure leaves nothing to undo, and the savepoint (whose
    sub-journal cost about as much as the rows themselves) is skipped.
    """

    def __init__(self, conn: sqlite3.Connection, tr_version: bytes) -> None:
        super().__init__(conn)
        self._tr_version = tr_version
        self.size = 0
        self.keys: set[bytes] = set()
        self.ranges: list[tuple[bytes, bytes]] = []
        self._pending: dict[bytes, bytes] = {}
        self.flushed: list[dict[bytes, bytes]] = []  # what flush wrote, oldest first
        self.deleted = False  # a clear or clear_range: ``flushed`` may not be the last word
        self.savepoint = False  # opened by the first write that reaches SQLite early
        # Written by versionstamped mutations, so unreadable until the commit, as on FDB
        # (see _unreadable): keys from set_versionstamped_value, and (key, offset) of
        # each set_versionstamped_key (its range is worked out only if a read comes).
        self._stamped_values: set[bytes] = set()
        self._stamped_keys: list[tuple[bytes, int]] = []

    def read_version(self) -> int:
        """The last commit before this one's batch (which bumped the counter first)."""
        return int.from_bytes(self._tr_version[:8], "big") - 1

    def _write_now(self) -> None:
        """Open the savepoint before the first write that happens while ``fn`` runs."""
        if not self.savepoint:
            self._conn.execute("SAVEPOINT tr")
            self.savepoint = True

    def _count(self, key: bytes, value: bytes = b"") -> None:
        check_key(key)
        check_value(value)
        self.size += len(key) + len(value)
        if self.size > MAX_TRANSACTION:
            raise TransactionTooLarge(f"transaction writes more than {MAX_TRANSACTION} bytes")
        self.keys.add(key)

    def flush(self) -> None:
        """Write the buffered sets (the engine calls this once the function returned)."""
        if self._pending:
            _insert_rows(self._conn, self._pending)
            self.keys.update(self._pending)
            self.flushed.append(self._pending)
            self._pending = {}

    def _unreadable(self, begin: bytes, end: bytes) -> None:
        """Refuse a read of ``[begin, end)`` that meets a key written by a versionstamped
        mutation in this transaction, as FoundationDB does (1036 ``accessed_unreadable``:
        it learns the versionstamp only at commit). This engine knows it already and
        could answer, but code that relied on that would fail on FDB only."""
        hit = any(begin <= key < end for key in self._stamped_values)
        for key, offset in self._stamped_keys:
            if hit:
                break
            # Every key this mutation can make: this commit's stamp or a later one (all
            # stored keys carry earlier ones), as FDB's read version bounds it.
            low = key[:offset] + self._tr_version[:8] + b"\0\0" + key[offset + 10 :]
            high = key[:offset] + b"\xff" * 10 + key[offset + 10 :] + b"\0"
            hit = begin < high and low < end
        if hit:
            raise StoreError(
                "read of a key this transaction wrote with a versionstamp: it is unknown "
                "until the commit (FoundationDB error 1036, accessed_unreadable)"
            )

    def get(self, key: bytes) -> bytes | None:
        if self._stamped_values or self._stamped_keys:
            self._unreadable(key, key + b"\0")
        return self._get_unchecked(key)

    def _get_unchecked(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return super().get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self._stamped_values or self._stamped_keys:
            for key in keys:
                self._unreadable(key, key + b"\0")
        stored = iter(super().get_many([k for k in keys if k not in self._pending]))
        return [self._pending[k] if k in self._pending else next(stored) for k in keys]

    def get_range(
        self, begin: bytes, end: bytes, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        if self._pending:
            self._write_now()
            self.flush()
        rows = super().get_range(begin, end, limit, reverse)
        if self._stamped_values or self._stamped_keys:
            if 0 < limit <= len(rows):  # FDB checks only what the read went through
                last = rows[-1][0]
                begin, end = (last, end) if reverse else (begin, last + b"\0")
            self._unreadable(begin, end)
        return rows

    def set(self, key: bytes, value: bytes) -> None:
        # _count inlined: this is the hot path of every append.
        if len(key) > MAX_KEY or len(value) > MAX_VALUE:
            check_key(key)
            check_value(value)
        self.size += len(key) + len(value)
        if self.size > MAX_TRANSACTION:
            raise TransactionTooLarge(f"transaction writes more than {MAX_TRANSACTION} bytes")
        self._pending[key] = value

    def clear(self, key: bytes) -> None:
        self._count(key)
        self.deleted = True
        self._stamped_values.discard(key)
        self._pending.pop(key, None)
        self._write_now()
        self._conn.execute("DELETE FROM kv WHERE k = ?", (key,))

    def clear_range(self, begin: bytes, end: bytes) -> None:
        check_key(begin)
        check_key(end)
        if begin >= end:  # an empty range writes nothing (FDB drops it too)
            return
        self.size += len(begin) + len(end)
        self.deleted = True
        self._stamped_values = {k for k in self._stamped_values if not begin <= k < end}
        self.ranges.append((begin, end))
        self._write_now()
        self.flush()
        self._conn.execute("DELETE FROM kv WHERE k >= ? AND k < ?", (begin, end))

    def set_versionstamped_key(self, key: bytes, offset: int, value: bytes) -> None:
        # check_stamped, fill and set inlined: an append sets one of these per update
        if offset < 0 or offset + PLACEHOLDER_LEN > len(key) or len(key) > MAX_STAMPED_KEY:
            check_stamped(key, offset, MAX_STAMPED_KEY)
        if len(value) > MAX_VALUE:
            check_value(value)
        key = key[:offset] + self._tr_version + key[offset + PLACEHOLDER_LEN :]
        self.size += len(key) + len(value)
        if self.size > MAX_TRANSACTION:
            raise TransactionTooLarge(f"transaction writes more than {MAX_TRANSACTION} bytes")
        self._pending[key] = value
        self._stamped_keys.append((key, offset))

    def set_versionstamped_value(self, key: bytes, value: bytes, offset: int) -> None:
        # as set_versionstamped_key: one per update
        if offset < 0 or offset + PLACEHOLDER_LEN > len(value) or len(value) > MAX_STAMPED_VALUE:
            check_stamped(value, offset, MAX_STAMPED_VALUE)
        if len(key) > MAX_KEY:
            check_key(key)
        value = value[:offset] + self._tr_version + value[offset + PLACEHOLDER_LEN :]
        self.size += len(key) + len(value)
        if self.size > MAX_TRANSACTION:
            raise TransactionTooLarge(f"transaction writes more than {MAX_TRANSACTION} bytes")
        self._pending[key] = value
        self._stamped_values.add(key)

    def add(self, key: bytes, delta: int) -> None:
        # Not self.get: an atomic add reads nothing the caller sees, so it also works on
        # a key whose value a versionstamped mutation wrote (as FDB's ADD does).
        self.set(key, add_le(self._get_unchecked(key), delta))


class _Request:
    """One transaction function waiting for the writer, and how to hand its outcome back.

    From an event loop (``transact``) the outcome goes straight to an asyncio future,
    set in the loop's thread through one ``call_soon_threadsafe``; from other threads
    (``transact_sync``) to a ``concurrent.futures.Future``. The asyncio path used to be a
    concurrent future wrapped with ``asyncio.wrap_future``: a lock and a condition per
    transaction and two chained callbacks, most of an empty transaction's round trip.
    ``transact_then`` has no future: its callback is called in the loop's thread, in
    that same ``call_soon_threadsafe``, so its caller goes on without waiting for the
    loop to resume a task.
    """

    __slots__ = ("callback", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[Transaction], Any],
        future: asyncio.Future[Any] | Future[Any] | None,
        loop: asyncio.AbstractEventLoop | None = None,
        callback: Callable[[Any], None] | None = None,
    ) -> None:
        self.fn = fn
        self.future = future  # an asyncio future of ``loop``, a concurrent one, or none
        self.loop = loop
        self.callback = callback  # with ``loop`` and no future: see transact_then

    def claim(self) -> bool:
        """Whether the caller still waits (``False``: cancelled while queued; the writer
        skips it). Once claimed, a cancel no longer stops the transaction."""
        if self.future is None:
            return True  # a callback cannot be cancelled
        if self.loop is None:
            assert isinstance(self.future, Future)
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()  # one flag read: safe from the writer thread


def _settle(outcomes: list[tuple[_Request, Any]]) -> None:
    """Hand outcomes (results, or exceptions to raise) to their callers: directly for
    threads, in one ``call_soon_threadsafe`` per event loop for the asyncio ones."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any]]] = {}
    for request, outcome in outcomes:
        if request.loop is None:
            _resolve(request, outcome)
        else:
            by_loop.setdefault(request.loop, []).append((request, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle_in_loop, settled)


def _settle_in_loop(settled: list[tuple[_Request, Any]]) -> None:
    for request, outcome in settled:
        _resolve(request, outcome)


def _resolve(request: _Request, outcome: Any) -> None:
    """Set the request's result (or exception), unless it was settled or cancelled; or
    call its callback with it, unless it was called already (one that raises is logged:
    the others still get theirs)."""
    if request.future is None:
        # Called once, as a future is set once: a writer thread that dies after
        # settling a batch fails it again (see _write_loop), and only the first counts.
        callback, request.callback = request.callback, None
        if callback is None:
            return
        try:
            callback(outcome)
        except Exception:
            log.exception("a transaction's callback failed")
        return
    if request.future.done():
        return
    if isinstance(outcome, BaseException):
        request.future.set_exception(outcome)
    else:
        request.future.set_result(outcome)


@dataclass
class _Watch:
    key: bytes
    last: bytes | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[bytes | None]

    def offer(self, value: bytes | None) -> bool:
        """Resolve (from any thread) if ``value`` differs from what the watcher had;
        ``False`` when the watcher's event loop is closed (nobody can be waiting)."""
        if value != self.last:
            try:
                self.loop.call_soon_threadsafe(self._resolve, value)
            except RuntimeError:  # "Event loop is closed"
                return False
        return True

    def _resolve(self, value: bytes | None) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def fail(self, error: StoreError) -> None:
        """Fail the watch (in its loop's thread): its engine closed."""
        if not self.future.done():
            self.future.set_exception(error)


class SQLiteEngine:
    """FDB-shaped ordered KV on one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        readers: int = 4,
        poll_interval: float = 0.01,
        poll_idle_interval: float = 0.05,
        busy_timeout: float = 30.0,
        max_batch: int = 1000,
        checkpoint_delay: float = 0.2,
        checkpoint_commits: int = 500,
        checkpoint_every: float = 1.0,
        wal_limit: int = 32 << 20,
        wal_limit_every: float = 1.0,
        file_check_every: float = FILE_CHECK_EVERY,
    ) -> None:
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.synchronous = sync
        self._poll_interval = poll_interval
        self._poll_idle_interval = max(poll_idle_interval, poll_interval)
        self._busy_timeout = busy_timeout
        self._max_batch = max_batch
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._submit_lock = threading.Lock()
        self._writes_stopped: StoreError | None = None  # set when the writer thread ends
        self._own_commits: set[int] = set()  # commit counters of this engine not yet polled
        # Set by the writer from just before a COMMIT until its counter is recorded in
        # ``_own_commits`` (or the COMMIT failed): the poller leaves a change it sees
        # meanwhile for its next round instead of taking it for another process's.
        self._committing = False
        self._readers: queue.Queue[sqlite3.Connection] = queue.Queue()
        self._reader_count = readers
        self._pool: ThreadPoolExecutor | None = None
        self._watches: dict[bytes, list[_Watch]] = {}
        # Every watched key, and for WATCH_MEMORY seconds every key whose watches all
        # ended: (commit counter, value) of the newest value offered (see _offer).
        self._known: dict[bytes, tuple[int, object]] = {}
        self._forget_at: dict[bytes, float] = {}  # known keys nobody watches: when to forget
        self._watch_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._checkpoint_delay = checkpoint_delay
        self._checkpoint_commits = checkpoint_commits
        self._checkpoint_every = checkpoint_every
        self._commits = 0  # since the last checkpoint (the writer counts, it resets)
        self.checkpoints = 0  # run by the background checkpointer so far
        self._checkpoint_failing: str | None = None  # the error of its last one, if it failed
        self._wal_limit = wal_limit
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self.writer_checkpoints = 0  # run by the writer thread, the WAL being over wal_limit
        self._wal_limit_every = wal_limit_every  # seconds between two of those, at least
        # When the writer last checkpointed, and last looked at the WAL's size: never
        # yet (0.0 meant "at boot": time.monotonic() counts from there, and within
        # wal_limit_every of boot the first of each was held back).
        self._wal_checked = -math.inf
        self._wal_sized = -math.inf
        self._checkpointer: threading.Thread | None = None
        # (device, inode) of the database file and its WAL as opened, and when the writer
        # last looked whether they are still at their paths (see _check_files)
        self._files: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._file_check_every = file_check_every
        self._files_checked = -math.inf
        self._committed = threading.Event()  # set after each commit, for the checkpointer
        self._closed = threading.Event()
        self._opened = False

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> SQLiteEngine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._opened:
            return
        await asyncio.to_thread(self._open_sync)
        self._opened = True

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        """A connection to the database file; only the writer's, at open, may make it:
        the others (the watch poller starts one whenever watches resume) fail if it is
        gone, rather than leave an empty database at its path."""
        # an absolute path after an empty authority ("file://" + "/x"): a path written with
        # a leading "//" (sqlite://///x) would otherwise be read as the authority
        root = "//" if self.path.is_absolute() else ""
        target = str(self.path) if create else f"file:{root}{quote(str(self.path))}?mode=rw"
        conn = sqlite3.connect(
            target,
            uri=not create,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout,
            factory=_Connection,
        )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA temp_store=MEMORY")  # savepoint sub-journals: no temp files
        return conn

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = self._connect(create=True)
            mode = writer.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch to WAL mode (got {mode})")
            writer.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    writer.execute(statement)
            self._check_format(writer)
            writer.execute("COMMIT")
            # WAL mode made the WAL file on opening; the writer keeps both open from now on.
            # SQLite names the WAL after the database file with its symlinks resolved (a
            # store path that is a symlink has its WAL next to the file it points to).
            real = writer.execute("PRAGMA database_list").fetchall()[0][2]
            self._wal_path = Path(real + "-wal") if real else self._wal_path
            self._files = (_identity(self.path), _identity(self._wal_path))
        except StoreError:  # (an OSError too) the WAL mode's or the format's: said already
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        writer.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        writer.execute(f"PRAGMA journal_size_limit={int(self._wal_limit)}")
        self._writer_conn = writer
        for _ in range(self._reader_count):
            reader = self._connect()
            reader.execute("PRAGMA query_only=1")
            self._readers.put(reader)
        self._pool = ThreadPoolExecutor(self._reader_count, thread_name_prefix="weft-read")
        self._closed.clear()
        self._writes_stopped = None  # this engine may have been closed and opened again
        self._writer_thread = threading.Thread(
            target=self._write_loop, name="weft-write", daemon=True
        )
        self._writer_thread.start()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="weft-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _check_format(self, conn: sqlite3.Connection) -> None:
        rows = dict(conn.execute("SELECT name, value FROM engine").fetchall())
        if "format_major" not in rows:
            conn.executemany(
                "INSERT INTO engine (name, value) VALUES (?, ?)",
                [("format_major", FORMAT_MAJOR), ("format_minor", FORMAT_MINOR), ("commit", 0)],
            )
            return
        major, minor = rows["format_major"], rows.get("format_minor", 0)
        if major > FORMAT_MAJOR:
            conn.execute("ROLLBACK")
            raise FormatError(
                f"{self.path} uses store format {major}.{minor}, newer than this weft "
                f"understands ({FORMAT_MAJOR}.{FORMAT_MINOR}); upgrade weft to open it"
            )

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        self._closed.set()
        self._requests.put(None)
        await asyncio.to_thread(self._close_sync)
        with self._watch_lock:
            watches = [w for ws in self._watches.values() for w in ws]
            self._watches.clear()
            self._forget_known()
        closed = StoreError("engine is closed")  # as FDB's: not the watcher's cancellation
        for w in watches:
            with contextlib.suppress(RuntimeError):  # a watcher whose loop is closed
                w.loop.call_soon_threadsafe(w.fail, closed)

    def _close_sync(self) -> None:
        if self._writer_thread is not None:
            self._writer_thread.join()
        if self._poller is not None:
            self._poller.join()
            self._poller = None  # else commits after a reopen are recorded for nobody
        self._own_commits.clear()
        if self._checkpointer is not None:
            self._committed.set()
            self._checkpointer.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        while not self._readers.empty():
            self._readers.get_nowait().close()
        self._writer_conn.close()

    # --- writes ----------------------------------------------------------------------

    async def transact(self, fn: Callable[[Transaction], T]) -> Committed[T]:
        if not self._opened:
            raise StoreError("engine is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Committed[T]] = loop.create_future()
        self._submit(_Request(fn, future, loop))
        return await future

    def transact_then(
        self, fn: Callable[[Transaction], T], callback: Callable[[Committed[T] | Exception], None]
    ) -> None:
        """``transact`` for a caller that goes on from a callback rather than a task:
        ``callback(outcome)`` (a :class:`Committed`, or the exception ``transact`` would
        raise) is called in this event loop's thread once the transaction is over,
        without a task to resume (the group-commit writer's hot path: an awaited
        ``transact`` took one more turn of the loop). Must be called from the loop;
        raises :class:`StoreError` at once if the engine cannot take it."""
        if not self._opened:
            raise StoreError("engine is not open")
        self._submit(_Request(fn, None, asyncio.get_running_loop(), callback))

    def transact_sync(self, fn: Callable[[Transaction], T]) -> Committed[T]:
        """``transact`` for threads that are not running an event loop."""
        future: Future[Committed[T]] = Future()
        self._submit(_Request(fn, future))
        return future.result()

    def _submit(self, request: _Request) -> None:
        with self._submit_lock:
            if self._writes_stopped is not None:
                raise StoreError(str(self._writes_stopped))
            if self._writer_thread is None:
                raise StoreError("engine is not open")
            self._requests.put(request)

    def _write_loop(self) -> None:
        """Commit queued transactions in batches until ``close``; whatever ends this
        thread fails the transactions still waiting, and every later one."""
        batch: list[_Request] | None = []
        stopped = StoreError("engine is closed")
        try:
            while (batch := self._next_batch()) is not None:
                self._commit_batch(batch)
                batch = None  # the batch (and what its functions hold) is done with
        except FilesMoved as exc:  # said in full by _check_files; the batch was failed
            stopped, batch = exc, None
        except BaseException as exc:
            log.exception("the SQLite writer thread stopped")
            stopped = StoreError(f"{self.path}: the writer thread stopped ({exc!r})")
        finally:
            with self._submit_lock:
                self._writes_stopped = stopped
            pending = list(batch or ())  # a batch the error cut short (settled ones stay)
            while True:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    pending.append(item)
            self._fail(pending, stopped)

    def _next_batch(self) -> list[_Request] | None:
        """The requests queued now (waiting for the first), cancelled ones left out;
        ``None`` once ``close`` asked the writer to stop."""
        batch: list[_Request] = []
        while not batch:
            item = self._requests.get()
            while item is not None:
                if item.claim():  # else: cancelled while queued
                    batch.append(item)
                    if len(batch) >= self._max_batch:
                        return batch
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
            else:  # close() asked the writer to stop: commit what came first, then stop
                if batch:
                    self._requests.put(None)
                    return batch
                return None
        return batch

    def _commit_batch(self, batch: list[_Request]) -> None:
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                outcomes, written = self._run_batch(batch)
                break
            except sqlite3.Error as exc:  # the database's failure (full, locked, corrupt)
                with contextlib.suppress(sqlite3.Error):
                    self._writer_conn.execute("ROLLBACK")
                busy = isinstance(exc, sqlite3.OperationalError) and (
                    "locked" in str(exc) or "busy" in str(exc)
                )
                if busy and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
                    continue
                self._fail(batch, StoreError(f"commit failed: {exc}"))
                return
            except BaseException as exc:  # the writer thread must survive anything
                log.exception("writer thread failed a batch")
                with contextlib.suppress(sqlite3.Error):
                    self._writer_conn.execute("ROLLBACK")
                self._fail(batch, StoreError(f"commit failed: {exc!r}"))
                return
        if written:
            self._check_files(batch)
        counter = int.from_bytes(written[0]._tr_version[:8], "big") if written else 0
        try:
            hit = self._unknown_after(written, counter) if written else None
        except Exception:  # a watch that fails must not stop the writer
            log.exception("marking watched keys after a commit failed")
            self._distrust(counter)
            hit = None
        _settle(list(zip(batch, outcomes, strict=True)))
        if hit:
            try:
                self._offer(_Reader(self._writer_conn), counter, hit, _written_values(written, hit))
            except Exception:
                log.exception("notifying watches after a commit failed")
                self._distrust(counter)
        if written:
            self._bound_wal()

    def _check_files(self, batch: list[_Request]) -> None:
        """Right after a commit, before it is reported (at most every
        ``file_check_every`` seconds): if the database file or its WAL is no longer the
        one opened, fail ``batch`` and raise :class:`FilesMoved`, which stops the writer
        (every later transaction fails with it). The commit went to the files this
        process holds open, which a restart would not find."""
        now = time.monotonic()
        if self._files is None or now - self._files_checked < self._file_check_every:
            return
        self._files_checked = now
        try:
            if (_identity(self.path), _identity(self._wal_path)) == self._files:
                return
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. the folder is unreadable now: not a sign of a move
            log.debug("%s: could not look at the store's files: %s", self.path, exc)
            return
        log.error(
            "%s: the database file or its WAL was deleted or replaced while the store was "
            "open: this process's commits went to files no longer at that path. Nothing "
            "more is written; restart weft once the right file is back (while this "
            "process runs, the files it has open are under /proc/%d/fd)",
            self.path,
            os.getpid(),
        )
        error = FilesMoved(
            "the store's database file was deleted or replaced while open: nothing more "
            "is stored until the server is restarted"
        )
        self._fail(batch, error)
        raise error

    def _bound_wal(self) -> None:
        """Checkpoint here, between two commits, if the WAL grew past ``wal_limit``
        (see the module docstring); the next batch waits for it, this one did not. At
        most once per ``wal_limit_every`` seconds: while a long read (another process's,
        say) keeps the WAL from starting over, it stays over the limit, and a checkpoint
        after every commit would only cost. Its size is looked at most every
        ``WAL_SIZE_EVERY`` seconds too: a ``stat`` per commit cost ~50 µs of CPU per
        one-update commit when commits were 10 ms apart."""
        try:
            now = time.monotonic()
            if now - self._wal_checked < self._wal_limit_every or now - self._wal_sized < min(
                WAL_SIZE_EVERY, self._wal_limit_every
            ):
                return
            self._wal_sized = now
            if self._wal_path.stat().st_size <= self._wal_limit:
                return
            self._wal_checked = now
            self._writer_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.writer_checkpoints += 1
        except (OSError, sqlite3.Error) as exc:  # e.g. the background one runs: next time
            log.debug("%s: writer checkpoint skipped: %s", self.path, exc)

    def _run_batch(
        self, batch: list[_Request]
    ) -> tuple[list[Committed[Any] | BaseException], list[_Writer]]:
        conn = self._writer_conn
        conn.execute("BEGIN IMMEDIATE")
        # The commit counter, bumped and read in one statement (a SELECT at the start
        # and an UPDATE at the end were two more statements per commit); a batch that
        # writes nothing is rolled back, bump and all.
        if _RETURNING:
            counter = conn.execute(_BUMP_COUNTER).fetchall()[0][0]
        else:
            conn.execute(_BUMP_ONLY)
            counter = _commit_counter(conn)
        commit = counter.to_bytes(8, "big")
        outcomes: list[Committed[Any] | BaseException] = []
        written: list[_Writer] = []
        for order, request in enumerate(batch):
            tr = _Writer(conn, commit + order.to_bytes(2, "big"))
            try:
                result = request.fn(tr)
            except sqlite3.OperationalError:
                raise
            except sqlite3.Error as exc:  # e.g. a corrupt page it read: the store's error
                if tr.savepoint:
                    conn.execute("ROLLBACK TO tr")
                    conn.execute("RELEASE tr")
                outcomes.append(_store_error(exc))
                continue
            except Exception as exc:
                if tr.savepoint:
                    conn.execute("ROLLBACK TO tr")
                    conn.execute("RELEASE tr")
                outcomes.append(exc)
                continue
            # Keys and values were checked as they were set: this insert of bytes into
            # a BLOB table fails only with the database (OperationalError: the batch is
            # retried or failed whole), and if anything else ever escaped, the caller
            # fails the whole batch, so no half-written function can commit.
            tr.flush()
            if tr.savepoint:
                conn.execute("RELEASE tr")
            wrote = bool(tr.keys or tr.ranges)
            outcomes.append(Committed(result, tr._tr_version if wrote else None))
            if wrote:
                written.append(tr)
        if written:
            self._committing = True
            try:
                conn.execute("COMMIT")
                self._commits += 1
                self._committed.set()
                with self._watch_lock:  # recorded once committed: see _only_own_commits
                    if self._poller is not None:  # none: a new poller takes a new baseline
                        self._own_commits.add(counter)
            finally:
                self._committing = False
        else:
            conn.execute("ROLLBACK")
        return outcomes, written

    @staticmethod
    def _fail(batch: list[_Request], exc: StoreError) -> None:
        _settle([(request, exc) for request in batch])

    # --- checkpoints -----------------------------------------------------------------

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """One PASSIVE checkpoint. One that fails (a full disk: the database file cannot
        grow) is tried again after the next commits; the first failure and the recovery
        are said. It used to end the checkpointer for good: from then on the WAL grew to
        ``wal_limit`` and commits paid for the writer's checkpoints until a restart."""
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            if self._checkpoint_failing is None:
                log.warning("%s: background checkpoint failed: %s", self.path, exc)
            self._checkpoint_failing = str(exc)
            return
        self.checkpoints += 1
        if self._checkpoint_failing is not None:
            log.warning(
                "%s: background checkpoints work again (they failed: %s)",
                self.path,
                self._checkpoint_failing,
            )
            self._checkpoint_failing = None

    def _checkpoint_loop(self) -> None:
        """Checkpoint (PASSIVE) once commits have paused for ``checkpoint_delay``, or,
        while they keep coming, after ``checkpoint_commits`` commits or
        ``checkpoint_every`` seconds (so one checkpoint never copies a whole burst); once
        more at close, so the database file holds everything the WAL did.

        Not after every burst: a checkpoint fsyncs the database file, and a commit whose
        own fsync lands meanwhile can wait for it (seen: single-update commits of 100-290
        ms while checkpoints ran every 0.2 s under steady paced traffic)."""
        conn: sqlite3.Connection | None = None
        last = time.monotonic()
        try:
            conn = self._connect()
            while not self._closed.is_set():
                self._committed.wait()
                self._committed.clear()
                if self._closed.wait(self._checkpoint_delay):
                    break
                busy = self._committed.is_set()
                if (
                    busy
                    and self._commits < self._checkpoint_commits
                    and (time.monotonic() - last < self._checkpoint_every)
                ):
                    continue  # still busy and the WAL still short: wait for a pause
                self._commits = 0
                last = time.monotonic()
                self._checkpoint(conn)
            self._checkpoint(conn)
        except sqlite3.Error as exc:  # its connection: commits still work, the WAL grows
            log.warning("%s: background checkpoints stopped: %s", self.path, exc)
        finally:
            if conn is not None:
                conn.close()

    # --- memory ----------------------------------------------------------------------

    async def release_memory(self) -> None:
        """Empty the page caches (``PRAGMA shrink_memory``) of the writer and of the
        reader connections not in use right now: called once documents were unloaded,
        when the pages they read are cold (the writer's cache alone held ~2 MB after
        1,000 documents were written)."""
        await asyncio.to_thread(self._shrink_caches)

    def _shrink_caches(self) -> None:
        idle: list[sqlite3.Connection] = []
        try:
            while True:
                idle.append(self._readers.get_nowait())
        except queue.Empty:
            pass
        try:
            for conn in idle:
                conn.execute("PRAGMA shrink_memory")
            if self._opened and sqlite3.threadsafety == 3:
                # On this thread while the writer may run a transaction: fine where SQLite
                # is built serialized (threadsafety 3); shrink_memory frees only unused
                # pages, and its own cursor leaves the writer's one alone.
                sqlite3.Connection.execute(self._writer_conn, "PRAGMA shrink_memory").close()
        except sqlite3.Error as exc:
            log.warning("could not shrink SQLite caches: %s", exc)
        finally:
            for conn in idle:
                self._readers.put(conn)

    # --- reads -----------------------------------------------------------------------

    async def read(self, fn: Callable[[ReadTransaction], T]) -> T:
        if not self._opened or self._pool is None:
            raise StoreError("engine is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.read_sync, fn)

    def read_sync(self, fn: Callable[[ReadTransaction], T]) -> T:
        """``read`` for threads that are not running an event loop."""
        conn = self._readers.get()
        try:
            conn.execute("BEGIN")
            try:
                return fn(_Reader(conn))
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc
        finally:
            self._readers.put(conn)

    # --- watches ---------------------------------------------------------------------

    async def watch(self, key: bytes, last: bytes | None) -> bytes | None:
        loop = asyncio.get_running_loop()
        w = _Watch(key, last, loop, loop.create_future())
        with self._watch_lock:
            self._watches.setdefault(key, []).append(w)
            known = self._known.setdefault(key, (-1, _UNKNOWN))[1]
            self._forget_at.pop(key, None)
            if self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(
                    target=self._poll_loop, name="weft-watch", daemon=True
                )
                self._poller.start()
        try:
            # A remembered value equal to ``last`` (a watcher back with the value it was
            # woken with): any newer commit is being offered, and wakes ``w`` (registered
            # above). Otherwise read: ``last`` may be newer than what was offered so far
            # (the caller read it itself), and the answer must not go back in time.
            if known is _UNKNOWN or known != last:
                known = await self.read(lambda tr: tr.get(key))
            current = known
            if current != last:
                return cast("bytes | None", current)
            return await w.future
        finally:
            with self._watch_lock:
                self._drop(w)

    def _drop(self, w: _Watch) -> None:
        """Forget a watch (hold ``_watch_lock``)."""
        ws = self._watches.get(w.key, [])
        if w in ws:
            ws.remove(w)
        if not ws:
            self._watches.pop(w.key, None)
            if self._known.get(w.key, (-1, _UNKNOWN))[1] is _UNKNOWN:
                self._known.pop(w.key, None)
            else:
                self._forget_at[w.key] = time.monotonic() + WATCH_MEMORY

    def _forget_known(self, now: float | None = None) -> None:
        """Forget the remembered values of keys nobody watches (hold ``_watch_lock``):
        all of them (``now`` None: nothing will offer them new values any more, e.g.
        the poller stopped) or those past their time."""
        if now is None:
            self._known = {k: v for k, v in self._known.items() if k in self._watches}
            self._forget_at.clear()
            return
        for key in [k for k, at in self._forget_at.items() if at <= now]:
            del self._forget_at[key]
            self._known.pop(key, None)

    def _unknown_after(self, written: list[_Writer], counter: int) -> set[bytes]:
        """The known keys this engine's commit ``counter`` wrote; their remembered values
        are marked unknown as of that commit, before the commit is reported: a caller
        that watches a key right after its own commit reads it (a remembered value would
        be the one before). The writer offers them their new values right after."""
        hit: set[bytes] = set()
        with self._watch_lock:
            known = self._known
            if not known:
                return hit
            for tr in written:  # walk the smaller side: rooms watch one key each
                if len(tr.keys) < len(known):
                    hit.update(key for key in tr.keys if key in known)
                else:
                    hit.update(key for key in known if key in tr.keys)
                for begin, end in tr.ranges:
                    hit.update(key for key in known if begin <= key < end)
            for key in hit:
                if known[key][0] <= counter:  # else another process's later value
                    known[key] = (counter, _UNKNOWN)  # (the poller offered it meanwhile)
        return hit

    def _offer(
        self,
        reader: _Reader,
        counter: int,
        keys: set[bytes] | None = None,
        values: dict[bytes, bytes] | None = None,
    ) -> None:
        """Read the known ``keys`` (``None``: all) in one query, remember each value and
        offer it to the key's watches: only a watch whose value changed wakes. A watch
        whose event loop is closed is dropped. ``values``: those of ``keys`` known
        without a read (what commit ``counter`` itself wrote); the rest are read.

        ``counter``: a commit counter read before the values (they are at least that
        new; ``values`` are exactly that commit's). The writer thread and the poller
        both offer, and one may read before the other but offer after it: a value is
        taken only if its counter is not older than the remembered one's (a value of
        ``values`` never replaces one remembered for a later commit: another process's
        commit may have been read and offered between this commit and this call).
        Equal counters may still hide a newer commit read by one side only; that commit
        is offered again later with a higher counter (by the writer if it was this
        engine's, else by the poller, which sees it move ``data_version``), so the
        newest value is always remembered in the end."""
        with self._watch_lock:
            remembered = self._known
            if keys is None:
                wanted = list(remembered.items())
            else:  # a commit's few keys: not a walk over every watched key per commit
                wanted = [(k, remembered[k]) for k in keys if k in remembered]
        if not wanted:
            return
        given = values or {}
        unread = [k for k, _ in wanted if k not in given]
        read = dict(zip(unread, reader.get_many(unread), strict=True)) if unread else {}
        with self._watch_lock:
            dead: list[_Watch] = []
            for key, entry in wanted:
                value = given[key] if key in given else read[key]
                known = self._known.get(key)
                if known is None:
                    continue  # forgotten meanwhile
                if key in given:  # the value as of commit ``counter`` exactly, not later
                    if counter < known[0]:
                        continue  # a later commit's value is remembered already
                    tag = counter  # (over a new watch's -1 too: it may have read before)
                elif known is entry:  # untouched since before the read: the value is newer
                    tag = max(counter, known[0])
                elif known[0] < 0 or counter < known[0]:
                    # A newer value was offered, or the entry was made again after the
                    # read began (whoever made it reads for itself): ours may be older.
                    continue
                else:
                    tag = counter
                self._known[key] = (tag, value)
                dead.extend(w for w in self._watches.get(key, ()) if not w.offer(value))
            for w in dead:
                self._drop(w)

    def _distrust(self, counter: int) -> None:
        """After a failure to mark or offer commit ``counter``'s keys: forget every
        remembered value (watched keys' are unknown as of ``counter``, so watches read)
        and count the commit as not this engine's, so the poller offers it."""
        with self._watch_lock:
            self._known = {k: (counter, _UNKNOWN) for k in self._known if k in self._watches}
            self._forget_at.clear()
            self._own_commits.discard(counter)

    def _poll_loop(self) -> None:
        """Cross-process watches: runs while anybody watches, polling ``data_version``.

        Its baseline is taken before it reads every watched key once, so a commit that
        lands between a watch's own first read and this start is seen. After that it
        re-reads the known keys only when the commit counter moved by a commit that is
        not this engine's (those were offered in-process already). Once it stops, no
        foreign commit is seen any more: the values remembered for unwatched keys go.
        """
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            seen, counter = _data_version(conn), _commit_counter(conn)
            reader = _Reader(conn)
            self._offer(reader, counter)
            idle_since = forget_checked = time.monotonic()
            interval = self._poll_interval
            while not self._closed.wait(interval):
                now = time.monotonic()
                with self._watch_lock:
                    if not self._watches:
                        if now - idle_since > 1.0:
                            self._poller = None
                            self._own_commits.clear()
                            self._forget_known()
                            return
                        continue
                    if now - forget_checked >= 1.0:
                        forget_checked = now
                        self._forget_known(now)
                idle_since = now
                version = _data_version(conn)  # before the counter: see _only_own_commits
                if version == seen:  # quiet: poll a little less often each time
                    interval = min(interval * POLL_SLOWDOWN, self._poll_idle_interval)
                    continue
                interval = self._poll_interval
                seen, latest = self._settled(conn, version)
                if not self._only_own_commits(counter, latest):
                    self._offer(reader, latest)
                counter = latest
        except Exception:  # the poller's boundary: the next watch starts another
            log.exception("watch poller stopped")
            with self._watch_lock:
                if self._poller is threading.current_thread():
                    self._poller = None
                    self._forget_known()
        finally:
            if conn is not None:
                conn.close()

    def _settled(self, conn: sqlite3.Connection, version: int) -> tuple[int, int]:
        """``data_version`` and the commit counter (read in that order), read while none
        of this engine's commits is between its COMMIT and its record in
        ``_own_commits``: a commit read then was taken for another process's, a needless
        read of every watched key. Waits at most ``COMMIT_SETTLE_SECONDS`` for it."""
        deadline = time.monotonic() + COMMIT_SETTLE_SECONDS
        while True:
            if self._committing and time.monotonic() < deadline:
                time.sleep(0.0002)
                version = _data_version(conn)  # again, after: still before the counter
                continue
            latest = _commit_counter(conn)
            if not (self._committing and time.monotonic() < deadline):
                return version, latest
            # one of ours committed meanwhile: both again, once it is recorded

    def _only_own_commits(self, counter: int, latest: int) -> bool:
        """Whether every commit after ``counter`` up to ``latest`` is this engine's.

        ``data_version`` moved, so somebody committed. Commits by engines bump the
        counter; this engine records its own numbers once they are committed, and the
        poller reads the counter only while none is between its COMMIT and that record
        (:meth:`_settled`). If the counter did not move, something wrote without it:
        not only ours.
        """
        with self._watch_lock:
            own = sum(1 for n in self._own_commits if counter < n <= latest)
            self._own_commits = {n for n in self._own_commits if n > latest}
        return latest > counter and own == latest - counter


def _store_error(exc: sqlite3.Error) -> StoreError:
    """``exc`` as the :class:`StoreError` callers of every engine expect."""
    error = StoreError(f"transaction failed: {exc}")
    error.__cause__ = exc
    return error


def _written_values(written: list[_Writer], keys: set[bytes]) -> dict[bytes, bytes]:
    """The values the transactions ``written`` (one commit, in order) left in ``keys``,
    for the keys whose last writer only set them; the others (cleared, or not found)
    are left out, to be read. The writer offers a commit's watched keys these instead
    of reading them back: a query per commit less (offering after a paced one-update
    commit: 132 -> 65 µs of the writer thread's CPU)."""
    out: dict[bytes, bytes] = {}
    for key in keys:
        for tr in reversed(written):  # the last transaction that wrote the key decides
            if tr.deleted and (key in tr.keys or any(b <= key < e for b, e in tr.ranges)):
                break
            if key in tr.keys:
                for rows in reversed(tr.flushed):
                    if key in rows:
                        out[key] = rows[key]
                        break
                break
    return out


def _data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection (this process's writer included) commits."""
    return int(conn.execute("PRAGMA data_version").fetchall()[0][0])


def _commit_counter(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM engine WHERE name = 'commit'").fetchall()[0][0])
