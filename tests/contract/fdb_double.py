"""FDBDouble: stands in for libfdb_c, which cannot be installed here; it is not FoundationDB.

A TEST DOUBLE, in memory, of exactly the part of the ``fdb`` module (FoundationDB's Python
bindings at API 710) that ``crdt/kv/fdb.py`` uses, so that the engine's own code (its
retry loops, limit mapping, versionstamps, watches, futures bridged to asyncio) runs in
CI. What it models is our reading of the bindings' Python layer (``fdb/impl.py``) and of
the client library's documented behaviour; it proves nothing about FoundationDB itself.
The real-cluster run (``WEFT_FDB_CLUSTER_FILE``) stays the contract.

Modelled, because weft depends on it:

- futures: ``get`` and ``get_versionstamp`` return objects whose ``wait()`` returns the
  future itself and whose ``.value`` is the bytes (``None`` for an absent key); errors
  surface when a future is waited on, never when the operation is issued; writes (``set``,
  ``add``...) return nothing and a bad one (key over 10,000 bytes, value over 100,000,
  key at or after ``\\xff``) fails the transaction's next read or its commit, as the C
  client's deferred errors do; ``on_ready`` callbacks run on a "network thread" of the
  double's own (at once, on the caller's thread, if the future is already ready);
- serializable optimistic concurrency: non-snapshot reads add read-conflict ranges (a
  range read up to where it stopped); commit fails with 1020 ``not_committed`` when a
  transaction committed after the read version wrote into one of them; snapshot reads
  add none; read-only commits never conflict; multi-version reads (a transaction reads
  as of its read version); reads or commits more than ``mvcc_window`` seconds after the
  read version fail with 1007 ``transaction_too_old``;
- read-your-writes, including range reads merging pending sets, clears and atomic adds;
  keys written by a versionstamped mutation are unreadable in that transaction (1036
  ``accessed_unreadable``), as FoundationDB's RYW layer makes them;
- versionstamps: a 10-byte transaction versionstamp = 8-byte big-endian commit version +
  2-byte batch order (commits within ``batch_window`` seconds share a version, like a
  proxy batch, until a read version is given out at that version: a read version is
  at least every committed version, so a later commit never has it);
  ``set_versionstamped_key/value`` take the API >= 520 operand format (the offset as 4
  little-endian bytes at the end) and are checked the way the client checks
  them (2000 ``client_invalid_operation``); ``get_versionstamp`` must be asked for
  before ``commit`` and is ready after it;
- ``add``: little-endian, wrapping, result as long as the operand (FDB's ADD);
- ``on_error(code)``: back off and reset for retryable codes (the ``retryable``
  predicate's set), raise the error otherwise (and cancel the transaction); the
  ``transaction_timeout`` / ``timeout`` options bound a transaction from its creation
  and are not reset by ``on_error`` (API >= 610): 1031 ``transaction_timed_out``;
  ``cancel()``: 1025 ``transaction_cancelled`` from the next operation on (a wait
  already blocked is not modelled: the double never blocks in one);
- size limits: keys 10,000 bytes (2102), values 100,000 (2103), a commit's mutations plus
  conflict ranges 10,000,000 bytes (2101);
- watches: set when their transaction commits, fire (from the network thread) once a
  later commit gives the key a value other than the one the transaction saw; a failed
  commit fails its watches with the commit's error; ``cancel()`` gives 1101.

- round trips, on request (``range_latency``, default 0): each range read waits that
  long, as one to a storage server does, so that a transaction function making one
  range read after another runs into ``mvcc_window`` as it would on a cluster (point
  reads are not slowed: ``get_many`` has them in flight together).

Not modelled: processes (one double lives in one Python process: nothing here can stand
in for a second process or for ``kill -9``), durability, real timing (back-off is scaled
down: ``backoff``; round trips take no time unless ``range_latency`` says so), key
selectors, options weft does not set, tenants, the directory layer.

Faults are injected with :meth:`Cluster.inject`: the next N commits (or reads) fail with a
code; a ``commit_unknown_result`` (1021) can be injected after the commit was applied.
"""

from __future__ import annotations

import bisect
import contextlib
import queue
import random
import struct
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fdb.apiversion import LATEST_API_VERSION  # pure Python: the bindings' own constant

KEY_SIZE_LIMIT = 10_000
VALUE_SIZE_LIMIT = 100_000
TRANSACTION_SIZE_LIMIT = 10_000_000
MAX_READ_KEY = b"\xff"  # without the access_system_keys option

ERRORS = {
    1007: "Transaction is too old to perform reads or be committed",
    1009: "Request for future version",
    1020: "Transaction not committed due to conflict with another transaction",
    1021: "Transaction may or may not have committed",
    1025: "Operation aborted because the transaction was cancelled",
    1031: "Operation aborted because the transaction timed out",
    1032: "Too many watches currently set",
    1036: "Read or wrote an unreadable key",
    1101: "Asynchronous operation cancelled",
    2000: "Invalid API call",
    2004: "Key outside legal range",
    2005: "Range begin key larger than end key",
    2020: "Transaction does not have a valid commit version",
    2021: "Transaction is read-only and therefore does not have a commit version",
    2101: "Transaction exceeds byte limit",
    2102: "Key length exceeds limit",
    2103: "Value length exceeds limit",
}
# fdb_c.cpp's fdb_error_predicate: retryable = maybe_committed or retryable_not_committed
MAYBE_COMMITTED = frozenset({1021, 1039})
RETRYABLE_NOT_COMMITTED = frozenset({1020, 1007, 1009, 1038, 1042, 1051, 1037, 1213, 2131})
RETRYABLE = MAYBE_COMMITTED | RETRYABLE_NOT_COMMITTED


class FDBError(Exception):
    """Like ``fdb.FDBError``: ``code`` and ``description``; ``str`` is "description (code)"."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code

    @property
    def description(self) -> str:
        return ERRORS.get(self.code, "UNKNOWN_ERROR")

    def __str__(self) -> str:
        return f"{self.description} ({self.code})"


class _Predicates:
    def is_retryable(self, error: Any) -> bool:
        return int(error.code) in RETRYABLE

    def is_maybe_committed(self, error: Any) -> bool:
        return int(error.code) in MAYBE_COMMITTED

    def is_retryable_not_committed(self, error: Any) -> bool:
        return int(error.code) in RETRYABLE_NOT_COMMITTED


class _StreamingMode:
    """``fdb.StreamingMode``'s values (fdboptions.py); the double returns whole ranges."""

    want_all = -2
    iterator = -1
    exact = 0
    small = 1
    medium = 2
    large = 3
    serial = 4


class KeyValue:
    def __init__(self, key: bytes, value: bytes) -> None:
        self.key = key
        self.value = value

    def __iter__(self) -> Iterator[bytes]:
        return iter((self.key, self.value))

    def __repr__(self) -> str:
        return f"{self.key!r}: {self.value!r}"


# --- futures -------------------------------------------------------------------------


class Future:
    """One result or one error, set once; ``on_ready`` callbacks on the network thread."""

    def __init__(self, network: _Network) -> None:
        self._network = network
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._code: int | None = None
        self._result: Any = None
        self._callbacks: list[Callable[[Any], None]] = []

    def _settle(self, result: Any = None, code: int | None = None) -> bool:
        with self._lock:
            if self._ready.is_set():
                return False
            self._result, self._code = result, code
            self._ready.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._network.call(callback, self)
        return True

    def is_ready(self) -> bool:
        return self._ready.is_set()

    def block_until_ready(self) -> None:
        self._ready.wait()

    def on_ready(self, callback: Callable[[Any], None]) -> None:
        with self._lock:
            if not self._ready.is_set():
                self._callbacks.append(callback)
                return
        _run_callback(callback, self)  # already ready: libfdb_c calls back at once

    def cancel(self) -> None:
        self._settle(code=1101)

    def _get(self) -> Any:
        self._ready.wait()
        if self._code is not None:
            raise FDBError(self._code)
        return self._result


class VoidFuture(Future):
    def wait(self) -> None:
        self._get()


class IntFuture(Future):
    def wait(self) -> int:
        return int(self._get())


class ValueFuture(Future):
    """Like ``fdb.impl.Value``/``Key``: ``wait()`` returns the future, ``.value`` the bytes."""

    def wait(self) -> ValueFuture:
        self._get()
        return self

    @property
    def value(self) -> bytes | None:
        result: bytes | None = self._get()
        return result

    def present(self) -> bool:
        return self.value is not None


def _run_callback(callback: Callable[[Any], None], future: Future) -> None:
    try:
        callback(future)
    except Exception:  # what fdb.impl.Future.on_ready does with a failing callback
        sys.stderr.write("Discarding uncaught exception from user FDB callback:\n")
        traceback.print_exc(file=sys.stderr)


class _Network:
    """The double's network thread: where ``on_ready`` callbacks run."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], None], Future] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, callback: Callable[[Any], None], future: Future) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fdb-double-network", daemon=True
                )
                self._thread.start()
        self._queue.put((callback, future))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            _run_callback(*item)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(5)


# --- the stored data ("the cluster") -------------------------------------------------


@dataclass
class _Fault:
    code: int
    at: str  # "commit" or "read"
    applied: bool  # for a commit fault: apply the commit, then report the error
    left: int  # how many more operations it fails


@dataclass
class _Written:
    seq: int
    at: float
    keys: set[bytes]
    ranges: list[tuple[bytes, bytes]]


@dataclass
class _Watch:
    key: bytes
    seen: bytes | None
    future: VoidFuture


@dataclass
class Cluster:
    """One database's data, shared by every ``open`` of the same cluster file in a double.

    ``stats`` counts what tests may want to see: ``commits``, ``conflicts`` (1020 from a
    real conflict), ``injected``, ``on_error:<code>``, ``too_old``.
    """

    network: _Network
    rng: random.Random
    batch_window: float
    mvcc_window: float
    max_watches: int = 10_000
    lock: threading.RLock = field(default_factory=threading.RLock)
    keys: list[bytes] = field(default_factory=list)  # sorted; every key ever written
    history: dict[bytes, list[tuple[int, bytes | None]]] = field(default_factory=dict)
    seq: int = 0  # internal commit sequence: what read versions really are
    version: int = 0
    batch: int = 0
    version_read: bool = False  # a read version was given out at ``version``
    last_commit_at: float = -1.0
    version_of: dict[int, int] = field(default_factory=lambda: {0: 0})
    written: list[_Written] = field(default_factory=list)
    watches: dict[bytes, list[_Watch]] = field(default_factory=dict)
    faults: list[_Fault] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.version = self.rng.randrange(1 << 32, 1 << 48)  # use more than the low bytes
        self.version_of[0] = self.version

    def inject(
        self, code: int, count: int = 1, *, at: str = "commit", applied: bool = False
    ) -> None:
        """Make the next ``count`` commits (``at="commit"``; read-only commits excluded)
        or reads (``at="read"``) fail with ``code``. ``applied=True``: the commit takes
        effect and still reports ``code`` (1021, commit_unknown_result)."""
        if at not in ("commit", "read"):
            raise ValueError("at must be 'commit' or 'read'")
        with self.lock:
            self.faults.append(_Fault(code, at, applied, count))

    def _take_fault(self, at: str) -> _Fault | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault.at == at:
                    self.stats["injected"] += 1
                    fault.left -= 1
                    if not fault.left:
                        del self.faults[i]
                    return fault
        return None

    def value_at(self, key: bytes, seq: int) -> bytes | None:
        with self.lock:
            entries = self.history.get(key)
            if not entries:
                return None
            i = bisect.bisect_right(entries, seq, key=lambda entry: entry[0])
            return entries[i - 1][1] if i else None

    def range_at(self, begin: bytes, end: bytes, seq: int) -> list[tuple[bytes, bytes]]:
        with self.lock:
            lo, hi = bisect.bisect_left(self.keys, begin), bisect.bisect_left(self.keys, end)
            pairs = [(key, self.value_at(key, seq)) for key in self.keys[lo:hi]]
        return [(key, value) for key, value in pairs if value is not None]

    def _put(self, key: bytes, value: bytes | None, seq: int, changed: set[bytes]) -> None:
        entries = self.history.get(key)
        if entries is None:
            if value is None:
                return
            entries = self.history[key] = []
            bisect.insort(self.keys, key)
        old = entries[-1][1] if entries else None
        if entries and entries[-1][0] == seq:
            entries[-1] = (seq, value)
        else:
            entries.append((seq, value))
        if old != value:
            changed.add(key)

    def _next_version(self) -> tuple[int, int]:
        """The commit's version and batch order. Commits share the last commit's version
        (one proxy batch) only while no read version was given out at it: in FDB a read
        version is at least every version already committed, so no later commit has it."""
        now = time.monotonic()
        batch = now - self.last_commit_at < self.batch_window and self.batch < 0xFFFF
        if batch and not self.version_read:
            self.batch += 1
        else:
            self.version += self.rng.randrange(1, 1_000_000)  # versions are not dense
            self.batch = 0
            self.version_read = False
        self.last_commit_at = now
        return self.version, self.batch

    def conflicts(self, read_seq: int, ranges: list[tuple[bytes, bytes]]) -> bool:
        for w in self.written:
            if w.seq <= read_seq:
                continue
            for begin, end in ranges:
                if any(begin <= key < end for key in w.keys):
                    return True
                if any(b < end and begin < e for b, e in w.ranges):
                    return True
        return False

    def forget_old_writes(self) -> None:
        horizon = time.monotonic() - self.mvcc_window - 1.0
        while self.written and self.written[0].at < horizon:
            self.written.pop(0)

    def fire_watches(self, changed: set[bytes]) -> None:
        for key in changed & self.watches.keys():
            value = self.value_at(key, self.seq)
            keep = []
            for w in self.watches[key]:
                if w.future.is_ready():
                    continue
                if w.seen != value:
                    w.future._settle()
                else:
                    keep.append(w)
            if keep:
                self.watches[key] = keep
            else:
                del self.watches[key]

    def add_watch(self, w: _Watch) -> None:
        live = sum(1 for ws in self.watches.values() for x in ws if not x.future.is_ready())
        if live >= self.max_watches:
            w.future._settle(code=1032)
        elif self.value_at(w.key, self.seq) != w.seen:
            w.future._settle()
        else:
            self.watches.setdefault(w.key, []).append(w)


# --- database and transactions -------------------------------------------------------


class _DatabaseOptions:
    def __init__(self, db: Database) -> None:
        self._db = db

    def set_transaction_timeout(self, milliseconds: int) -> None:
        self._db.timeout_ms = int(milliseconds)

    def set_max_watches(self, count: int) -> None:
        if not 0 <= count <= 1_000_000:  # FDB's bounds for this option
            raise FDBError(2006)  # invalid_option_value
        self._db.max_watches = int(count)


class Database:
    def __init__(self, double: FDBDouble, cluster: Cluster) -> None:
        self._double = double
        self.cluster = cluster
        self.options = _DatabaseOptions(self)
        self.timeout_ms = 0  # 0: no timeout, as in FDB
        self.max_watches = 10_000  # FDB's default

    def create_transaction(self) -> Transaction:
        return Transaction(self)


class _TransactionOptions:
    def __init__(self, tr: Transaction) -> None:
        self._tr = tr

    def set_timeout(self, milliseconds: int) -> None:
        self._tr._timeout_ms = int(milliseconds)


@dataclass
class _Pending:
    """Read-your-writes state of one key: a known value (set/clear) or the stored value
    with atomic adds on top."""

    known: bool
    value: bytes | None = None
    adds: list[bytes] = field(default_factory=list)


def add_le(old: bytes | None, param: bytes) -> bytes:
    """FDB ADD: little-endian, the old value zero-extended or cut to ``len(param)``, wraps."""
    n = len(param)
    current = int.from_bytes((old or b"")[:n].ljust(n, b"\0"), "little")
    return ((current + int.from_bytes(param, "little")) % (1 << (8 * n))).to_bytes(n, "little")


def _after(key: bytes) -> bytes:
    return key + b"\x00"


def _overlaps(begin: bytes, end: bytes, ranges: list[tuple[bytes, bytes]]) -> bool:
    return any(b < end and begin < e for b, e in ranges)


class _Reads:
    """Reads of one transaction, with read conflicts (``snapshot=False``) or without."""

    def __init__(self, tr: Transaction, snapshot: bool) -> None:
        self._tr = tr
        self._snapshot = snapshot

    def get(self, key: bytes) -> ValueFuture:
        return self._tr._get(key, self._snapshot)

    def get_range(
        self,
        begin: bytes,
        end: bytes,
        limit: int = 0,
        reverse: bool = False,
        streaming_mode: int = _StreamingMode.iterator,
    ) -> _Range:
        return self._tr._get_range(begin, end, limit, reverse, streaming_mode, self._snapshot)

    def get_read_version(self) -> IntFuture:
        return self._tr.get_read_version()


class _Range:
    """What ``get_range`` returns: an iterable of KeyValue; errors surface on iteration."""

    def __init__(self, pairs: list[tuple[bytes, bytes]] | None, code: int | None) -> None:
        self._pairs = pairs
        self._code = code

    def __iter__(self) -> Iterator[KeyValue]:
        if self._code is not None:
            raise FDBError(self._code)
        assert self._pairs is not None
        return iter([KeyValue(k, v) for k, v in self._pairs])

    def to_list(self) -> list[KeyValue]:
        return list(self)


class Transaction:
    """The double of ``fdb.impl.Transaction`` (with its read-your-writes layer)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cluster = db.cluster
        self._network = db.cluster.network
        self.options = _TransactionOptions(self)
        self.snapshot = _Reads(self, snapshot=True)
        self._reads = _Reads(self, snapshot=False)
        self._created = time.monotonic()
        self._timeout_ms = db.timeout_ms
        self._backoff = db._double.backoff[0]
        self._cancelled: int | None = None  # the error every later use gets
        self._clear_state()

    def _clear_state(self) -> None:
        self._read_seq: int | None = None
        self._read_at = 0.0
        self._ops: list[tuple[str, bytes, bytes]] = []
        self._writes: dict[bytes, _Pending] = {}
        self._cleared: list[tuple[bytes, bytes]] = []
        self._unreadable_keys: set[bytes] = set()
        self._unreadable_ranges: list[tuple[bytes, bytes]] = []
        self._read_ranges: list[tuple[bytes, bytes]] = []
        self._write_keys: set[bytes] = set()
        self._write_ranges: list[tuple[bytes, bytes]] = []
        self._size = 0
        self._deferred: int | None = None
        self._watches: list[_Watch] = []
        self._stamp: ValueFuture | None = None
        self._committing = False

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            for w in self._watches:  # never committed: FDB cancels them
                w.future._settle(code=1025)

    # --- state checks --------------------------------------------------------------

    def _error(self) -> int | None:
        """The error every operation of this transaction gets now, if any."""
        if self._cancelled is not None:
            return self._cancelled
        if self._timeout_ms and time.monotonic() > self._created + self._timeout_ms / 1000:
            self._cancel(1031)
            return 1031
        return self._deferred

    def _cancel(self, code: int) -> None:
        self._cancelled = code
        for w in self._watches:
            w.future._settle(code=code)
        self._watches = []

    def cancel(self) -> None:
        """``fdb.impl.Transaction.cancel``: every later use (and, in FDB, every pending
        wait) fails with 1025 ``transaction_cancelled`` until ``reset``."""
        self._cancel(1025)

    def _defer(self, code: int) -> None:
        if self._deferred is None:
            self._deferred = code

    def _read_version(self) -> int:
        """Take the read version at the first read, like FDB; 1007 once it is too old."""
        if self._read_seq is None:
            with self._cluster.lock:
                self._read_seq, self._read_at = self._cluster.seq, time.monotonic()
                self._cluster.version_read = True
        elif time.monotonic() - self._read_at > self._cluster.mvcc_window:
            self._cluster.stats["too_old"] += 1
            raise FDBError(1007)
        return self._read_seq

    def _read_error(self) -> int | None:
        code = self._error()
        if code is None:
            fault = self._cluster._take_fault("read")
            code = None if fault is None else fault.code
        return code

    # --- reads ---------------------------------------------------------------------

    def get_read_version(self) -> IntFuture:
        future = IntFuture(self._network)
        code = self._read_error()
        if code is not None:
            future._settle(code=code)
        else:
            try:
                seq = self._read_version()
            except FDBError as exc:
                future._settle(code=exc.code)
            else:
                future._settle(self._cluster.version_of[seq])
        return future

    def get(self, key: bytes) -> ValueFuture:
        return self._get(key, snapshot=False)

    def get_range(
        self,
        begin: bytes,
        end: bytes,
        limit: int = 0,
        reverse: bool = False,
        streaming_mode: int = _StreamingMode.iterator,
    ) -> _Range:
        return self._get_range(begin, end, limit, reverse, streaming_mode, snapshot=False)

    def _get(self, key: bytes, snapshot: bool) -> ValueFuture:
        future = ValueFuture(self._network)
        try:
            future._settle(self._read_key(_bytes(key), snapshot))
        except FDBError as exc:
            future._settle(code=exc.code)
        return future

    def _read_key(self, key: bytes, snapshot: bool) -> bytes | None:
        code = self._read_error()
        if code is not None:
            raise FDBError(code)
        if key in self._unreadable_keys or _overlaps(key, _after(key), self._unreadable_ranges):
            raise FDBError(1036)
        if key >= MAX_READ_KEY:
            raise FDBError(2004)
        pending = self._writes.get(key)
        if pending is not None and pending.known:
            value = pending.value
        elif pending is None and _overlaps(key, _after(key), self._cleared):
            return None
        else:
            seq = self._read_version()
            value = self._cluster.value_at(key, seq)
            if not snapshot:
                self._read_ranges.append((key, _after(key)))
        for param in pending.adds if pending is not None else ():
            value = add_le(value, param)
        return value

    def _get_range(
        self, begin: bytes, end: bytes, limit: int, reverse: bool, mode: int, snapshot: bool
    ) -> _Range:
        try:
            return _Range(
                self._read_range(_bytes(begin), _bytes(end), limit, reverse, snapshot), None
            )
        except FDBError as exc:
            return _Range(None, exc.code)

    def _read_range(
        self, begin: bytes, end: bytes, limit: int, reverse: bool, snapshot: bool
    ) -> list[tuple[bytes, bytes]]:
        code = self._read_error()
        if code is not None:
            raise FDBError(code)
        if self._db._double.range_latency:
            time.sleep(self._db._double.range_latency)
        end = min(end, MAX_READ_KEY)
        if begin >= end:
            return []
        seq = self._read_version()
        stored = dict(self._cluster.range_at(begin, end, seq))
        merged: dict[bytes, bytes | None] = {}
        for key, value in stored.items():
            if key not in self._writes and not _overlaps(key, _after(key), self._cleared):
                merged[key] = value
        for key, pending in self._writes.items():
            if begin <= key < end:
                mine = pending.value if pending.known else stored.get(key)
                for param in pending.adds:
                    mine = add_le(mine, param)
                merged[key] = mine
        pairs = sorted((k, v) for k, v in merged.items() if v is not None)
        if reverse:
            pairs.reverse()
        if 0 < limit < len(pairs):
            pairs = pairs[:limit]
            last = pairs[-1][0]
            scanned = (last, end) if reverse else (begin, _after(last))
        else:
            scanned = (begin, end)
        if _overlaps(*scanned, self._unreadable_ranges) or any(
            scanned[0] <= key < scanned[1] for key in self._unreadable_keys
        ):
            raise FDBError(1036)
        if not snapshot:
            self._read_ranges.append(scanned)
        return pairs

    # --- writes (errors are deferred to the next read or the commit) ---------------

    def _check_write(self, key: bytes, value: bytes = b"") -> bool:
        if self._committing:
            self._defer(2017)
        elif key >= MAX_READ_KEY:
            self._defer(2004)
        elif len(key) > KEY_SIZE_LIMIT:
            self._defer(2102)
        elif len(value) > VALUE_SIZE_LIMIT:
            self._defer(2103)
        else:
            return True
        return False

    def set(self, key: bytes, value: bytes) -> None:
        key, value = _bytes(key), _bytes(value)
        if self._check_write(key, value):
            self._ops.append(("set", key, value))
            self._writes[key] = _Pending(True, value)
            self._write_keys.add(key)
            self._size += 3 * len(key) + 1 + len(value)

    def clear(self, key: bytes) -> None:
        key = _bytes(key)
        if self._check_write(key):
            self._ops.append(("clear", key, b""))
            self._writes[key] = _Pending(True, None)
            self._unreadable_keys.discard(key)
            self._write_keys.add(key)
            self._size += 3 * len(key) + 1

    def clear_range(self, begin: bytes, end: bytes) -> None:
        begin, end = _bytes(begin), _bytes(end)
        if end > MAX_READ_KEY or begin > end:
            self._defer(2004 if end > MAX_READ_KEY else 2005)  # 2005: inverted_range
            return
        if self._committing:
            self._defer(2017)
            return
        self._ops.append(("clear_range", begin, end))
        for key in [k for k in self._writes if begin <= k < end]:
            self._writes[key] = _Pending(True, None)
        self._cleared.append((begin, end))
        self._unreadable_keys = {k for k in self._unreadable_keys if not begin <= k < end}
        self._unreadable_ranges = [
            (b, e) for b, e in self._unreadable_ranges if not (begin <= b and e <= end)
        ]
        self._write_ranges.append((begin, end))
        self._size += 2 * (len(begin) + len(end))

    def add(self, key: bytes, param: bytes) -> None:
        key, param = _bytes(key), _bytes(param)
        if self._check_write(key, param):
            self._ops.append(("add", key, param))
            pending = self._writes.get(key)
            if pending is None:
                cleared = _overlaps(key, _after(key), self._cleared)
                pending = self._writes[key] = _Pending(cleared)
            pending.adds.append(param)
            self._write_keys.add(key)
            self._size += 3 * len(key) + 1 + len(param)

    def set_versionstamped_key(self, key: bytes, param: bytes) -> None:
        key, param = _bytes(key), _bytes(param)
        if not self._check_write(key, param):
            return
        if len(key) < 4:
            self._defer(2000)
            return
        (offset,) = struct.unpack("<i", key[-4:])
        stripped = key[:-4]
        if offset < 0 or offset + 10 > len(stripped):
            self._defer(2000)
            return
        min_stamp = self._cluster.version_of.get(self._read_seq or 0, 0).to_bytes(8, "big")
        low = stripped[:offset] + min_stamp + b"\0\0" + stripped[offset + 10 :]
        high = stripped[:offset] + b"\xff" * 10 + stripped[offset + 10 :] + b"\0"
        self._unreadable_ranges.append((low, min(high, MAX_READ_KEY)))
        self._ops.append(("vs_key", key, param))
        self._size += len(key) + len(param)  # no write conflict range (FDB adds none)

    def set_versionstamped_value(self, key: bytes, param: bytes) -> None:
        key, param = _bytes(key), _bytes(param)
        if not self._check_write(key, param):
            return
        if len(param) < 4:
            self._defer(2000)
            return
        (offset,) = struct.unpack("<i", param[-4:])
        if offset < 0 or offset + 10 > len(param) - 4:
            self._defer(2000)
            return
        self._ops.append(("vs_value", key, param))
        self._unreadable_keys.add(key)
        self._writes.pop(key, None)
        self._write_keys.add(key)
        self._size += 3 * len(key) + 1 + len(param)

    def watch(self, key: bytes) -> VoidFuture:
        key = _bytes(key)
        future = VoidFuture(self._network)
        code = self._error()
        if code is not None:
            future._settle(code=code)
            return future
        try:
            seen = self._read_key(key, snapshot=False)  # FDB's RYW watch reads the key
        except FDBError as exc:
            future._settle(code=exc.code)
            return future
        self._watches.append(_Watch(key, seen, future))
        return future

    # --- commit and retry ----------------------------------------------------------

    def get_versionstamp(self) -> ValueFuture:
        if self._stamp is None:
            self._stamp = ValueFuture(self._network)
            if self._committing:  # asked for after commit: FDB never sets it
                self._stamp._settle(code=2020)
        return self._stamp

    def commit(self) -> VoidFuture:
        future = VoidFuture(self._network)
        self._committing = True
        code = self._error()
        if code is None and not self._ops:
            self._commit_read_only()
        elif code is None:
            try:
                self._commit_writes()
            except FDBError as exc:
                code = exc.code
        if code is not None:
            self._fail_commit(code)
            future._settle(code=code)
        else:
            future._settle()
        return future

    def _fail_commit(self, code: int) -> None:
        for w in self._watches:
            w.future._settle(code=code)
        self._watches = []
        if self._stamp is not None:
            self._stamp._settle(code=2020)

    def _commit_read_only(self) -> None:
        cluster = self._cluster
        with cluster.lock:
            for w in self._watches:
                cluster.add_watch(w)
        self._watches = []
        if self._stamp is not None:
            self._stamp._settle(code=2021)

    def _commit_writes(self) -> None:
        cluster = self._cluster
        size = self._size + sum(len(b) + len(e) for b, e in self._read_ranges)
        if size > TRANSACTION_SIZE_LIMIT:
            raise FDBError(2101)
        with cluster.lock:
            too_old = time.monotonic() - self._read_at > cluster.mvcc_window
            if self._read_seq is not None and too_old:
                cluster.stats["too_old"] += 1
                raise FDBError(1007)
            fault = cluster._take_fault("commit")
            if fault is not None and not fault.applied:
                raise FDBError(fault.code)
            if self._read_seq is not None and cluster.conflicts(self._read_seq, self._read_ranges):
                cluster.stats["conflicts"] += 1
                raise FDBError(1020)
            stamp = self._apply()
            cluster.stats["commits"] += 1
            if fault is not None:  # applied, and still reported as failed (1021)
                raise FDBError(fault.code)
            for w in self._watches:
                cluster.add_watch(w)
        self._watches = []
        if self._stamp is not None:
            self._stamp._settle(stamp)

    def _apply(self) -> bytes:
        """Apply the mutations in order at a new version (hold the cluster lock)."""
        cluster = self._cluster
        version, batch = cluster._next_version()
        stamp = version.to_bytes(8, "big") + batch.to_bytes(2, "big")
        seq = cluster.seq + 1
        changed: set[bytes] = set()
        keys = set(self._write_keys)
        current = cluster.value_at
        for op, key, param in self._ops:
            if op == "set":
                cluster._put(key, param, seq, changed)
            elif op == "clear":
                cluster._put(key, None, seq, changed)
            elif op == "clear_range":
                lo, hi = (
                    bisect.bisect_left(cluster.keys, key),
                    bisect.bisect_left(cluster.keys, param),
                )
                for k in cluster.keys[lo:hi]:
                    cluster._put(k, None, seq, changed)
            elif op == "add":
                cluster._put(key, add_le(current(key, seq), param), seq, changed)
            elif op == "vs_key":
                (offset,) = struct.unpack("<i", key[-4:])
                filled = key[:offset] + stamp + key[offset + 10 : -4]
                cluster._put(filled, param, seq, changed)
                keys.add(filled)
            elif op == "vs_value":
                (offset,) = struct.unpack("<i", param[-4:])
                cluster._put(key, param[:offset] + stamp + param[offset + 10 : -4], seq, changed)
        cluster.seq = seq
        cluster.version_of[seq] = version
        cluster.written.append(_Written(seq, time.monotonic(), keys, list(self._write_ranges)))
        cluster.forget_old_writes()
        cluster.fire_watches(changed)
        return stamp

    def on_error(self, code: Any) -> VoidFuture:
        code = int(getattr(code, "code", code))
        future = VoidFuture(self._network)
        self._cluster.stats[f"on_error:{code}"] += 1
        current = self._error()
        if current is not None and current != self._deferred:  # timed out or cancelled
            future._settle(code=current)
            return future
        if code not in RETRYABLE:
            self._cancel(1025)
            future._settle(code=code)
            return future
        high = self._db._double.backoff[1]
        delay, self._backoff = self._backoff, min(self._backoff * 2, high)
        if self._timeout_ms:
            left = self._created + self._timeout_ms / 1000 - time.monotonic()
            if left <= delay:
                time.sleep(max(left, 0))
                self._cancel(1031)
                future._settle(code=1031)
                return future
        time.sleep(delay)
        self._reset_for_retry()
        future._settle()
        return future

    def _reset_for_retry(self) -> None:
        for w in self._watches:
            w.future._settle(code=1025)
        if self._stamp is not None:
            self._stamp._settle(code=1025)
        self._clear_state()

    def reset(self) -> None:
        self._reset_for_retry()
        self._created = time.monotonic()
        self._cancelled = None
        self._backoff = self._db._double.backoff[0]


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):  # fdb.impl.keyToBytes / valueToBytes
        raise TypeError("Key must be of type bytes")
    return value


# --- the module ------------------------------------------------------------------------


class FDBDouble:
    """Stands in for the ``fdb`` module (after ``api_version``); one per test.

    ``open(cluster_file)`` returns the same :class:`Database` for the same file name,
    so a second engine in the same process sees the same data, as two connections to
    one cluster would. ``cluster(cluster_file)`` gives tests the data, stats and faults.
    """

    FDBError = FDBError
    KeyValue = KeyValue
    StreamingMode = _StreamingMode()
    predicates = _Predicates()

    def __init__(
        self,
        *,
        api_version: int | None = None,
        backoff: tuple[float, float] = (0.001, 0.02),
        batch_window: float = 0.0005,
        mvcc_window: float = 5.0,
        range_latency: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._api_version = api_version
        self.range_latency = range_latency
        self.backoff = backoff
        self.batch_window = batch_window
        self.mvcc_window = mvcc_window
        self._rng = random.Random(seed)
        self._network = _Network()
        self._databases: dict[str | None, Database] = {}
        self._clusters: dict[str | None, Cluster] = {}
        self._lock = threading.Lock()

    def is_api_version_selected(self) -> bool:
        return self._api_version is not None

    def get_api_version(self) -> int:
        if self._api_version is None:
            raise RuntimeError("API version is not set")
        return self._api_version

    def api_version(self, version: int) -> None:
        if self._api_version is not None:
            if self._api_version != version:
                raise RuntimeError(f"FDB API already loaded at version {self._api_version}")
            return
        if version > LATEST_API_VERSION:
            raise RuntimeError(f"Latest known FDB API version is {LATEST_API_VERSION}")
        self._api_version = version

    def open(self, cluster_file: str | None = None) -> Database:
        if self._api_version is None:
            raise RuntimeError("You must call api_version() before using any fdb methods")
        with self._lock:
            db = self._databases.get(cluster_file)
            if db is None:
                cluster = self.cluster(cluster_file)
                db = self._databases[cluster_file] = Database(self, cluster)
            return db

    def cluster(self, cluster_file: str | None = None) -> Cluster:
        db = self._databases.get(cluster_file)
        if db is not None:
            return db.cluster
        return self._clusters.setdefault(
            cluster_file,
            Cluster(self._network, self._rng, self.batch_window, self.mvcc_window),
        )

    def stop(self) -> None:
        """Stop the network thread (a test's teardown)."""
        self._network.stop()


def use_fdb_double(monkeypatch: Any, **options: Any) -> FDBDouble:
    """Make ``fdb://`` engines opened from now on in this test use a fresh FDBDouble."""
    import crdt.kv.fdb

    double = FDBDouble(**options)
    monkeypatch.setattr(crdt.kv.fdb, "load_fdb", lambda: crdt.kv.fdb.select_api(double))
    return double
