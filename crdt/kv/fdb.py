"""The FoundationDB engine: the official bindings behind weft's KV protocol.

Thin on purpose: everything above :mod:`crdt.kv.base` is shared code, so this module only
translates.

- ``import fdb`` and ``fdb.api_version`` happen when the engine opens, not at import: the
  bindings need the FoundationDB client library (``libfdb_c``), and a machine without it
  gets a :class:`~crdt.errors.StoreError` saying so, only when it asks for ``fdb://``.
- Transaction functions are synchronous (see ``base``), so each ``transact``/``read``
  runs FDB's standard retry loop (``commit`` / ``on_error``) on a worker thread; the
  event loop never blocks. Watches wait on the loop: the watch future's ``on_ready``
  callback (FDB's network thread) resolves an asyncio future through
  ``loop.call_soon_threadsafe``.
- Limits are checked before FDB sees a write, with the same code as the SQLite engine;
  FDB's own ``transaction_too_large``/``key_too_large``/``value_too_large`` map to
  :class:`~crdt.errors.TransactionTooLarge` too. The engine's timeout bounds every
  retry loop (FDB itself bounds one attempt to 5 s); it is set on each transaction, not
  on the database, which ``fdb.open`` shares between engines on one cluster file.
- Versionstamped keys/values use FDB's native mutations (offset as 4 little-endian bytes
  at the end, API >= 520); the commit's versionstamp comes from ``get_versionstamp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from crdt.errors import StoreConfigError, StoreError, TransactionTooLarge
from crdt.kv.base import (
    MAX_STAMPED_KEY,
    MAX_STAMPED_VALUE,
    MAX_TRANSACTION,
    Committed,
    ReadTransaction,
    Transaction,
    check_key,
    check_stamped,
    check_value,
    offset_suffix,
)

T = TypeVar("T")
log = logging.getLogger("weft.store")

API_VERSION = 710
"""The API version weft selects (FoundationDB 7.1 and newer client libraries)."""

MAX_WATCHES = 1_000_000
MAX_TIMEOUT = 2_147_483
"""The largest ``?timeout=`` in seconds: FDB takes a timeout in milliseconds, at most
INT_MAX (2,147,483,647), and refuses more (invalid_option_value)."""
_TOO_LARGE = {2101, 2102, 2103}  # transaction_too_large, key_too_large, value_too_large
_TIMED_OUT = 1031
_CANCELLED = 1025  # transaction_cancelled: close() cancels transactions in use
_MAYBE_COMMITTED = {1021, 1039}  # commit_unknown_result, cluster_version_changed
_TOO_OLD = 1007  # transaction_too_old: read or committed over 5 s after its read version
TOO_OLD_LIMIT = 3
"""Consecutive 1007s after which a call is refused: a function that outlasts FDB's
5-second transaction limit fails the same way on every run."""
_load_lock = threading.Lock()


def load_fdb() -> Any:
    """The ``fdb`` module with the API version selected; a clear StoreError without it."""
    try:
        import fdb
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise StoreConfigError(
            "the 'foundationdb' Python package is not installed; fdb:// stores need it"
        ) from exc
    return select_api(fdb)


def select_api(fdb: Any) -> Any:
    """``fdb`` (the bindings' module, or a test double of it) with API_VERSION selected.

    Separate from :func:`load_fdb` so that the contract suite's FDB test double
    (tests/contract/fdb_double.py) goes through the same selection code."""
    with _load_lock:
        if fdb.is_api_version_selected():
            if fdb.get_api_version() < API_VERSION:
                raise StoreError(
                    f"FoundationDB API version {fdb.get_api_version()} is already selected "
                    f"in this process; weft needs {API_VERSION} or newer"
                )
            return fdb
        try:
            fdb.api_version(API_VERSION)
        except Exception as exc:  # the bindings raise bare Exception/RuntimeError here
            raise StoreConfigError(
                f"cannot load the FoundationDB client library libfdb_c ({exc}). fdb:// "
                "stores need the FoundationDB client package (libfdb_c, 7.1 or newer, "
                "from the FoundationDB releases) installed, and the Python bindings "
                f"(foundationdb {bindings_version()} here) must not be newer than it: "
                "a client library refuses bindings of a later version. Install the "
                "bindings of the client library's version (`fdbcli --version` names "
                "it): pip install 'foundationdb==<that version>'. sqlite:/// stores "
                "need nothing"
            ) from exc
    return fdb


def bindings_version() -> str:
    """The installed ``foundationdb`` package's version, as pip names it."""
    try:
        return importlib.metadata.version("foundationdb")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def fdb_error(exc: BaseException, timeout: float, maybe_committed: bool = False) -> StoreError:
    """A weft error for an FDB error that the retry loop could not handle.
    ``maybe_committed``: a commit of this loop was in flight when it failed, or its
    result was unknown (1021), so that attempt may still have taken effect."""
    code = getattr(exc, "code", None)
    description = getattr(exc, "description", str(exc))
    if code in _TOO_LARGE:
        return TransactionTooLarge(f"FoundationDB refused the transaction: {description}")
    if code == _TIMED_OUT and maybe_committed:
        return StoreError(
            f"FoundationDB transaction timed out after {timeout:g} s of retries with a "
            "commit in flight or of unknown result: it may or may not have committed"
        )
    if code == _TIMED_OUT:
        return StoreError(f"FoundationDB transaction timed out after {timeout:g} s of retries")
    return StoreError(f"FoundationDB error {code}: {description}")


class _Attempts:
    """One ``transact``/``read``/watch call's retry loop: what it runs, and what its
    failed attempts said so far."""

    def __init__(self, kind: str, fn: object) -> None:
        self.what = f"{kind} {getattr(fn, '__qualname__', None) or fn!r}"
        self.too_old = 0
        self.committing = False  # the attempt is waiting on its commit
        self.maybe_committed = False  # some attempt's commit may have taken effect

    def failed(self, code: int) -> None:
        """Count an attempt's error; StoreError once it is the same 1007 too often."""
        # FDB: a commit cancelled in flight (a timeout cancels) may still happen.
        if code in _MAYBE_COMMITTED or (code in (_TIMED_OUT, _CANCELLED) and self.committing):
            self.maybe_committed = True
        self.committing = False
        self.too_old = self.too_old + 1 if code == _TOO_OLD else 0
        if self.too_old >= TOO_OLD_LIMIT:
            raise StoreError(
                f"FoundationDB refused {self.what} {self.too_old} times in a row as too "
                "old (1007 transaction_too_old): it runs longer than FoundationDB's "
                "5-second transaction limit, so running it again cannot succeed"
            )


def add_param(delta: int) -> bytes:
    """FDB's ADD operand for a signed delta on an 8-byte little-endian counter."""
    return (delta % (1 << 64)).to_bytes(8, "little")


class _Reader:
    """Reads through an ``fdb`` transaction (or its snapshot view)."""

    def __init__(self, tr: Any, streaming_mode: Any) -> None:
        self._tr = tr
        self._mode = streaming_mode

    def get(self, key: bytes) -> bytes | None:
        value = self._tr.get(key).wait().value
        return None if value is None else bytes(value)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        futures = [self._tr.get(key) for key in keys]  # all in flight before any wait
        values = [future.wait().value for future in futures]
        return [None if value is None else bytes(value) for value in values]

    def get_range(
        self, begin: bytes, end: bytes, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        rows = self._tr.get_range(
            begin, end, limit=limit, reverse=reverse, streaming_mode=self._mode
        )
        return [(bytes(kv.key), bytes(kv.value)) for kv in rows]

    def read_version(self) -> int:
        return int(self._tr.get_read_version().wait())


class _Writer(_Reader):
    """A read-write ``fdb`` transaction with weft's limit checks in front of it."""

    def __init__(self, tr: Any, streaming_mode: Any) -> None:
        super().__init__(tr, streaming_mode)
        self.size = 0
        self.wrote = False

    def _count(self, key: bytes, value: bytes = b"") -> None:
        check_key(key)
        check_value(value)
        self._grow(len(key) + len(value))

    def _grow(self, size: int) -> None:
        self.size += size
        if self.size > MAX_TRANSACTION:
            raise TransactionTooLarge(f"transaction writes more than {MAX_TRANSACTION} bytes")
        self.wrote = True

    def set(self, key: bytes, value: bytes) -> None:
        self._count(key, value)
        self._tr.set(key, value)

    def clear(self, key: bytes) -> None:
        self._count(key)
        self._tr.clear(key)

    def clear_range(self, begin: bytes, end: bytes) -> None:
        check_key(begin)
        check_key(end)
        # Nothing to clear, so skipped (and not counted as a write: a commit without a
        # mutation has no version, and its versionstamp future would fail with 2021).
        # FDB itself skips an empty range (begin == end) but fails the transaction with
        # inverted_range (2005) for begin > end.
        if begin >= end:
            return
        self._grow(len(begin) + len(end))
        self._tr.clear_range(begin, end)

    def set_versionstamped_key(self, key: bytes, offset: int, value: bytes) -> None:
        check_stamped(key, offset, MAX_STAMPED_KEY)
        self._count(key, value)
        self._tr.set_versionstamped_key(key + offset_suffix(offset), value)

    def set_versionstamped_value(self, key: bytes, value: bytes, offset: int) -> None:
        check_stamped(value, offset, MAX_STAMPED_VALUE)
        self._count(key, value)
        self._tr.set_versionstamped_value(key, value + offset_suffix(offset))

    def add(self, key: bytes, delta: int) -> None:
        self._count(key, b"\0" * 8)
        self._tr.add(key, add_param(delta))


class FDBEngine:
    """FDB-shaped ordered KV on FoundationDB itself (see the module docstring)."""

    def __init__(
        self,
        cluster_file: str | None = None,
        *,
        timeout: float = 60.0,
        workers: int = 16,
        write_workers: int = 4,
    ) -> None:
        self.cluster_file = cluster_file or None
        self.url = f"fdb://{cluster_file}" if cluster_file else "fdb://"
        self.timeout = timeout
        # In milliseconds, at least 1: FDB reads 0 as "no timeout at all".
        self._timeout_ms = max(1, math.ceil(timeout * 1000))
        self._workers = workers
        self._write_workers = write_workers
        self._fdb: Any = None
        self._db: Any = None
        # Two pools: reads and watch setups in one, writes in the other, so that reads
        # stuck on an unreachable cluster (each up to the timeout) or a burst of room
        # loads setting up watches never hold the commits back.
        self._pool: ThreadPoolExecutor | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        self._watches: set[Any] = set()
        self._live: set[Any] = set()  # transactions in a retry loop, for close()
        self._live_lock = threading.Lock()

    async def __aenter__(self) -> FDBEngine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._db is not None:
            return
        self._fdb, self._db = await asyncio.to_thread(self._open_sync)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="weft-fdb")
        self._write_pool = ThreadPoolExecutor(
            self._write_workers, thread_name_prefix="weft-fdb-write"
        )

    def _open_sync(self) -> tuple[Any, Any]:
        fdb = load_fdb()
        try:
            db = fdb.open(self.cluster_file)
            # One watch per loaded room: FDB's default cap (10,000 per connection, error
            # 1032 beyond) is below what one server keeps loaded; 1,000,000 is its maximum.
            db.options.set_max_watches(MAX_WATCHES)
            # Fail fast on an unreachable cluster instead of hanging in the first read.
            tr = db.create_transaction()
            tr.options.set_timeout(10_000)
            tr.get_read_version().wait()
        except fdb.FDBError as exc:
            where = self.cluster_file or "the default cluster file"
            raise StoreError(f"cannot open FoundationDB via {where}: {exc.description}") from exc
        return fdb, db

    async def release_memory(self) -> None:
        """Nothing to give back: the client library keeps no cache of its own here."""

    async def close(self) -> None:
        """Stop using the database: transactions in use are cancelled (they raise
        StoreError; one whose commit was in flight may or may not have committed), calls
        not started yet are dropped (StoreError), watches are cancelled. (FDB's network
        thread lives until the process ends: the client library cannot restart it.)"""
        if self._db is None:
            return
        with self._live_lock:
            self._db = None
            live = list(self._live)
        for tr in live:  # their waits end now with 1025 (transaction_cancelled)
            with contextlib.suppress(Exception):
                tr.cancel()
        for future in list(self._watches):
            with contextlib.suppress(Exception):
                future.cancel()
        self._watches.clear()
        for pool in (self._pool, self._write_pool):
            if pool is not None:
                # Calls still queued are not started; running ones end at their next wait.
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        self._pool = self._write_pool = None

    def _check_open(self) -> tuple[Any, ThreadPoolExecutor]:
        if self._db is None or self._pool is None:
            raise StoreError("engine is not open")
        return self._db, self._pool

    # --- transactions ----------------------------------------------------------------

    async def transact(self, fn: Callable[[Transaction], T]) -> Committed[T]:
        return await self._run(self.transact_sync, fn, write=True)

    async def _run(self, call: Callable[..., T], *args: Any, write: bool = False) -> T:
        """``call(*args)`` on a worker thread (of the write pool if ``write``);
        StoreError if close() drops it unrun."""
        _, pool = self._check_open()
        if write:
            pool = self._write_pool or pool
        try:
            future = asyncio.get_running_loop().run_in_executor(pool, call, *args)
        except RuntimeError:  # the pool shut down since _check_open
            raise StoreError("engine is not open") from None
        try:
            return await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._db is None and task is not None and not task.cancelling():
                raise StoreError("engine closed before the call ran") from None
            raise

    def transact_sync(self, fn: Callable[[Transaction], T]) -> Committed[T]:
        """``transact`` for threads that are not running an event loop."""
        db, _ = self._check_open()
        mode = self._fdb.StreamingMode.want_all
        attempts = _Attempts("transaction", fn)
        with self._transaction(db) as tr:
            while True:
                try:
                    writer = _Writer(tr, mode)
                    result = fn(writer)
                    stamp = tr.get_versionstamp() if writer.wrote else None
                    attempts.committing = writer.wrote
                    tr.commit().wait()
                    stamp = None if stamp is None else bytes(stamp.wait().value)
                    return Committed(result, stamp)
                except self._fdb.FDBError as exc:
                    self._on_error(tr, exc, attempts)

    async def read(self, fn: Callable[[ReadTransaction], T]) -> T:
        return await self._run(self.read_sync, fn)

    def read_sync(self, fn: Callable[[ReadTransaction], T]) -> T:
        """``read`` for threads that are not running an event loop: snapshot reads, so
        they add no read conflicts and never make a writer retry."""
        db, _ = self._check_open()
        mode = self._fdb.StreamingMode.want_all
        attempts = _Attempts("read", fn)
        with self._transaction(db) as tr:
            while True:
                try:
                    return fn(_Reader(tr.snapshot, mode))
                except self._fdb.FDBError as exc:
                    self._on_error(tr, exc, attempts)

    @contextlib.contextmanager
    def _transaction(self, db: Any) -> Iterator[Any]:
        """A new transaction bounded by this engine's timeout, known to close() while in
        use. The timeout is set per transaction, not as the database option: ``fdb.open``
        caches one database per cluster file, so engines with different ``?timeout=``
        would share whichever set it last. (API >= 610: ``on_error`` keeps it, measured
        from the transaction's creation.)"""
        tr = db.create_transaction()
        tr.options.set_timeout(self._timeout_ms)
        with self._live_lock:
            if self._db is None:
                raise StoreError("engine is not open")
            self._live.add(tr)
        try:
            yield tr
        finally:
            with self._live_lock:
                self._live.discard(tr)

    def _on_error(self, tr: Any, exc: Any, attempts: _Attempts) -> None:
        """FDB's retry step: back off and return for a retryable error, raise otherwise."""
        if self._db is None:  # close() cancelled it (1025), or it failed meanwhile
            attempts.failed(exc.code)
            maybe = " (it may or may not have committed)" if attempts.maybe_committed else ""
            raise StoreError(f"engine closed while {attempts.what} was running{maybe}") from exc
        if exc.code in _TOO_LARGE:
            raise fdb_error(exc, self.timeout) from exc
        try:
            attempts.failed(exc.code)
        except StoreError as refused:
            raise refused from exc
        try:
            tr.on_error(exc.code).wait()
        except self._fdb.FDBError as final:
            raise fdb_error(final, self.timeout, attempts.maybe_committed) from final

    # --- watches ---------------------------------------------------------------------

    async def watch(self, key: bytes, last: bytes | None) -> bytes | None:
        self._check_open()
        loop = asyncio.get_running_loop()
        while True:
            value, future = await self._run(self._read_and_watch, key, last)
            if future is None:
                return value
            if self._db is None:  # closed while the watch was set up: close() missed it
                future.cancel()
                raise StoreError("engine closed while watching")
            self._watches.add(future)
            try:
                await self._wait(future, loop)
            except self._fdb.FDBError as exc:
                if not self._fdb.predicates.is_retryable(exc):
                    raise fdb_error(exc, self.timeout) from exc
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                future.cancel()
                raise
            finally:
                self._watches.discard(future)

    def _read_and_watch(self, key: bytes, last: bytes | None) -> tuple[bytes | None, Any]:
        """The key's value if it differs from ``last``, else a native watch on it."""
        db, _ = self._check_open()
        attempts = _Attempts("the watch read of", key)
        with self._transaction(db) as tr:
            while True:
                try:
                    raw = tr.get(key).wait().value
                    value = None if raw is None else bytes(raw)
                    if value != last:
                        return value, None
                    future = tr.watch(key)
                    tr.commit().wait()  # a watch starts when its transaction commits
                    return None, future
                except self._fdb.FDBError as exc:
                    self._on_error(tr, exc, attempts)

    @staticmethod
    async def _wait(future: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Await an ``fdb`` future on ``loop`` without a thread: ``on_ready`` runs on
        FDB's network thread and hands the outcome over with ``call_soon_threadsafe``."""
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def on_ready(ready: Any) -> None:
            error: BaseException | None = None
            try:
                ready.wait()
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, error)

        future.on_ready(on_ready)
        await done
