"""The group-commit writer: one queue for every room, one transaction per batch.

Connections :meth:`Writer.submit` validated updates and get a future that resolves with
the update's :class:`~crdt.history.Appended` once it is durable. One commit is in flight
at a time: whatever arrived while it was (up to ``max_updates`` / ``max_bytes``) goes
into the next single :meth:`History.append_then` call, so under load many updates, from
many rooms, share one transaction and one fsync. No task runs in between: updates that
find no commit in flight go to the store at the end of the loop's turn that queued
them, and the next commit is handed over from the callback that settles the last one.

An item may be conditional (``Append.expect``: a new file's ``create``): it is appended
only if its document's head, read in the batch's transaction after the batch's earlier
items, is the one it expects; else nothing of it is written and it fails alone with
:class:`~crdt.errors.HeadMoved` (see ``appending._append_checked_tr``).

After a commit, snapshots are scheduled off the hot path for the documents that received
enough updates: counted from what the document's room found after the latest snapshot
when it loaded (:meth:`Writer.note_loaded`), or else from a first check that reads the
log. The writer keeps, per busy document, the updates it committed since the
document's last snapshot (its *tail*): when they are provably all of the log's records
since that snapshot (``replaying.known_records``: as many as the head's count says), the
next snapshot is built from them without reading the log (reading and decoding a
thousand records cost about as much as building the snapshot). Otherwise (another
instance writes to the document too, the server restarted, the tail was dropped to stay
within ``TAIL_BYTES``) ``History.snapshot_if_due`` reads the log, as before. Both write
the same snapshot: the same records, in the same order, through the same builder (which
may go on from the doc its previous build of the document left, see
``History.write_snapshot``).

A tail starts when a document is due for a snapshot that has to read the log (so it
holds everything committed after that read, hence after the snapshot it writes): a
document that never gets that far (most of them: a few edits, then idle) holds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from crdt.errors import (
    HeadMoved,
    PermissionDenied,
    StoreError,
    StoreStopped,
    TransactionTooLarge,
    WeftError,
)
from crdt.history import MAX_UPDATE_BYTES, Append, Appended, DocRef, Head, History
from crdt.kv.base import ReadTransaction
from crdt.records import Snapshot
from crdt.replaying import Logged, _latest_snapshot, known_records
from crdt.versionstamp import Versionstamp
from server.budget import LineBudget
from server.logsafe import printable
from server.metrics import Metrics

log = logging.getLogger("weft.store")
MAX_TRACKED_DOCS = 100_000
SNAPSHOT_CONCURRENCY = 2
FAILING_FOR = 30.0  # seconds /healthz says a failed commit (see Writer.health)
TAIL_BYTES = 32 << 20  # update bytes all tails may hold; over it they are dropped


Done = Callable[[Appended | None, BaseException | None], None]


class _Pending:
    """One queued update (a plain slotted class: one is made per update)."""

    __slots__ = ("done", "item", "queued")

    def __init__(self, item: Append, done: Done) -> None:
        self.item = item
        self.done = done
        self.queued = time.monotonic()

    def settle(self, appended: Appended | None, error: BaseException | None) -> None:
        """Call ``done`` (once: a second call does nothing, see ``Writer._landed``)."""
        done, self.done = self.done, _settled
        try:
            done(appended, error)
        except Exception:  # a callback must not take the writer down
            log.error("an update's commit callback failed", exc_info=True)


def _settled(appended: Appended | None, error: BaseException | None) -> None:
    """What a settled update's ``done`` becomes."""


def _resolve(
    future: asyncio.Future[Appended], appended: Appended | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None or appended is None:
        future.set_exception(error or StoreError("commit failed"))
    else:
        future.set_result(appended)


class _Logged:
    """An update this writer committed, as a snapshot needs it (``replaying.Logged``)."""

    __slots__ = ("update", "versionstamp")

    def __init__(self, versionstamp: Versionstamp, update: bytes) -> None:
        self.versionstamp = versionstamp
        self.update = update

    @property
    def size(self) -> int:
        return len(self.update)


class WriterClosed(StoreError):
    """The writer is draining or closed: the update was not accepted (retry elsewhere)."""


class Writer:
    """Group-commits updates across rooms; see the module docstring."""

    def __init__(
        self,
        history: History,
        metrics: Metrics | None = None,
        *,
        max_updates: int = 4000,
        max_bytes: int = 4 << 20,
    ) -> None:
        self.history = history
        self.metrics = metrics or Metrics()
        self.max_updates = max_updates
        self.max_bytes = max_bytes
        self._queue: deque[_Pending] = deque()
        self._closing = False
        self._started = False
        self._committing = False  # a batch is with the store (see _commit_queued)
        self._handing = False  # _commit_queued is handing batches over
        self._since_check: dict[bytes, tuple[int, int]] = {}
        self._checked: set[bytes] = set()
        self._snapshots: dict[bytes, asyncio.Task[None]] = {}
        self._snapshot_slots = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)
        self._tails: dict[bytes, list[_Logged]] = {}  # per doc: committed since its snapshot
        self._tail_bytes = 0
        self._batches_started = 0  # group commits begun, and finished (results noted)
        self._batches_done = 0
        self._batch_done = asyncio.Event()
        # The store's error if the last group commit failed (None once one succeeds),
        # and when: /healthz says it (see health). Said in the log at most a few times a
        # minute, no traceback.
        self.failing: StoreError | None = None
        self._failed_at = -math.inf
        self._failures = LineBudget(burst=5, every=60.0)
        # Called once a batch's updates are settled (before the writer's own
        # bookkeeping): the server writes what they queued for the peers (one write per
        # peer, see server.connection.Flusher).
        self.settled_hooks: list[Callable[[], None]] = []
        self.tail_snapshots = 0  # snapshots built from a tail, without reading the log
        self.log_snapshots = 0  # snapshot checks that read the log (History.snapshot_if_due)

    async def __aenter__(self) -> Writer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        self._started = True

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, item: Append) -> asyncio.Future[Appended]:
        """Queue ``item``; the future resolves once it is durable (or fails)."""
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self.submit_with(item, functools.partial(_resolve, future))
        return future

    def submit_with(self, item: Append, done: Done) -> None:
        """Queue ``item``; ``done(appended, None)`` is called once it is durable, or
        ``done(None, error)`` (the hot path of every connection: no future per update).
        With no commit in flight, it goes to the store at the end of this turn of the
        event loop."""
        pending = _Pending(item, done)
        if self._closing or not self._started:
            raise WriterClosed("the server is shutting down and accepts no more updates")
        if item.doc.unborn:  # a reader's reference (never one of a writer): fail it alone
            pending.settle(None, PermissionDenied(f"{item.doc.tenant}: no such tenant"))
            return
        size = len(pending.item.update)
        if size > MAX_UPDATE_BYTES:  # would fail the whole batch: fail it alone
            limit = f"the {MAX_UPDATE_BYTES}-byte limit"
            pending.settle(None, TransactionTooLarge(f"update of {size} bytes is over {limit}"))
            return
        self._queue.append(pending)
        if not self._committing and not self._handing:
            # At the end of this turn of the loop, with whatever else it queues: the
            # updates of a burst read in one turn share a commit.
            self._handing = True
            asyncio.get_running_loop().call_soon(self._commit_queued)

    async def settled(self) -> None:
        """Wait until every batch started so far has been settled: each of its updates
        applied to its room (or failed) and acknowledged. Once it returns, whatever this
        instance had made durable by the time of the call is in its rooms."""
        target = self._batches_started
        while self._batches_done < target:
            await self._batch_done.wait()

    async def close(self) -> None:
        """Stop accepting, commit everything already queued, then stop."""
        self._closing = True
        while self._committing or self._queue:  # queued: its handover is scheduled
            await self._batch_done.wait()
        for task in list(self._snapshots.values()):
            task.cancel()
        for task in list(self._snapshots.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _commit_queued(self) -> None:
        """Hand what is queued to the store as one append: the one commit in flight.
        Whatever queues meanwhile goes in the next, handed over as soon as this one is
        settled (in :meth:`_landed`), so under load many updates, from many rooms, share
        a transaction. No task runs this: it is a callback of the loop, and the commit
        is settled from the store's own callback (``History.append_then``), a turn of the
        loop sooner than a writer task awaiting the append resumed (paced fan-out
        latency; a task also cost more CPU per commit)."""
        self._handing = True
        try:
            while self._queue and not self._committing:
                batch = self._take()
                self._committing = True
                self._batches_started += 1
                landed = functools.partial(self._landed, batch)
                try:
                    self.history.append_then([p.item for p in batch], landed)
                except Exception as exc:  # append_then says failures to landed: a bug
                    self._landed(batch, None, exc)
        finally:
            self._handing = False

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._queue and len(batch) < self.max_updates:
            pending = self._queue[0]
            if batch and size + len(pending.item.update) > self.max_bytes:
                break
            batch.append(self._queue.popleft())
            size += len(pending.item.update)
        return batch

    def _landed(
        self,
        batch: list[_Pending],
        results: list[Appended | None] | None,
        exc: BaseException | None,
    ) -> None:
        """The commit of ``batch`` is over: settle each of its updates, then hand over
        what queued meanwhile at the end of this turn of the loop, with what the
        connections read in it (handed over at once, the next batches were smaller:
        -15 % updates/s at 1x2x5000), unless called from :meth:`_commit_queued` itself,
        the append having failed at once: its loop goes on."""
        try:
            self._settle(batch, results, exc)
        except Exception as bug:  # every update still gets its answer, once
            log.error("settling a group commit of %d updates failed", len(batch), exc_info=True)
            error = StoreError(f"commit outcome unknown: {bug!r}")
            for p in batch:
                p.settle(None, error)
        finally:
            self._committing = False
            self._batches_done += 1
            self._batch_done.set()  # wakes whoever waits on it (settled, close, snapshots)
            self._batch_done = asyncio.Event()
            if self._queue and not self._handing:
                self._handing = True
                asyncio.get_running_loop().call_soon(self._commit_queued)

    def _settle(
        self,
        batch: list[_Pending],
        results: list[Appended | None] | None,
        exc: BaseException | None,
    ) -> None:
        if exc is not None or results is None:
            if not isinstance(exc, Exception):  # a cancelled append: nothing was raised
                exc = StoreError("commit failed")
            error = exc if isinstance(exc, WeftError) else StoreError(f"commit failed: {exc!r}")
            self._failed(len(batch), exc)
            for p in batch:
                p.settle(None, error)
            return
        if self.failing is not None:
            log.warning("the store commits again (it failed: %s)", self.failing)
            self.failing = None
        done = time.monotonic()
        self.metrics.commit_batch_size.observe(len(batch))
        self.metrics.commit_latency.observe(done - batch[0].queued)
        self.metrics.updates_committed.inc(len(batch) - results.count(None))
        log.debug("committed %d updates", len(batch))
        for p, appended in zip(batch, results, strict=True):
            if appended is None:  # a conditional item whose head moved: nothing stored
                p.settle(None, HeadMoved(f"{printable(p.item.doc.path)}: the head moved"))
            else:
                p.settle(appended, None)
        for hook in self.settled_hooks:
            try:
                hook()
            except Exception:  # the updates are settled whatever a hook does
                log.error("a hook after settling a group commit failed", exc_info=True)
        try:
            self._note_for_snapshots(batch, results)
        except Exception:  # bookkeeping for snapshots must never stop the writer
            log.error("scheduling snapshots after a commit failed", exc_info=True)

    def health(self) -> StoreError | None:
        """The store's error while it fails, for /healthz: that of the last group commit
        if it failed less than ``FAILING_FOR`` seconds ago (or stopped the store for
        good). Only commits of updates clear it, so on its own it would hold an instance
        at 503 for ever once a load balancer stopped sending it clients; after
        ``FAILING_FOR`` quiet seconds the instance says ``ok`` and takes clients again,
        and their first failed commit says ``store_failing`` again."""
        failing = self.failing
        if failing is None or isinstance(failing, StoreStopped):
            return failing
        return failing if time.monotonic() - self._failed_at < FAILING_FOR else None

    def _failed(self, count: int, exc: Exception) -> None:
        """Say a failed group commit: the store's own failure (disk full, locked, its
        file gone) in one line, at most ``_failures`` allows (a full disk fails every
        client's every try), and keep it for /healthz; anything else, a bug, with its
        traceback."""
        if not isinstance(exc, StoreError) or isinstance(exc, TransactionTooLarge):
            log.error("group commit of %d updates failed", count, exc_info=True)
            return
        self.failing = exc
        self._failed_at = time.monotonic()
        unsaid = self._failures.take()
        if unsaid is None:
            return
        more = f" ({unsaid} more failed since the last one said)" if unsaid else ""
        log.error("group commit of %d updates failed: %s%s", count, exc, more)

    def _note_for_snapshots(self, batch: list[_Pending], results: list[Appended | None]) -> None:
        docs: dict[bytes, DocRef] = {}
        tails = self._tails
        added = 0
        seen: set[bytes] = set()
        for p, appended in zip(batch, results, strict=True):
            # A repeat inside one append has the first copy's versionstamp and is one
            # record of the log: counted once, like a repeat of an earlier append. A
            # conditional item refused (None) is not in the log.
            if appended is None or appended.duplicate or appended.versionstamp.raw in seen:
                continue
            seen.add(appended.versionstamp.raw)
            item = p.item
            space = item.doc.space
            docs[space] = item.doc
            count, size = self._since_check.get(space, (0, 0))
            self._since_check[space] = (count + 1, size + len(item.update))
            tail = tails.get(space)
            if tail is not None:
                tail.append(_Logged(appended.versionstamp, item.update))
                added += len(item.update)
        self._tail_bytes += added
        if self._tail_bytes > TAIL_BYTES:
            self._drop_tails()  # the next snapshots read the log, as they would anyway
        if len(self._checked) > MAX_TRACKED_DOCS or len(self._since_check) > MAX_TRACKED_DOCS:
            self._checked.clear()  # bounded memory; docs are simply checked once more
            self._since_check.clear()
            self._drop_tails()
        for space, doc in docs.items():
            count, size = self._since_check.get(space, (0, 0))  # none: cleared just above
            first = space not in self._checked
            due = count >= self.history.snapshot_every or size >= self.history.snapshot_bytes
            if (first or due) and space not in self._snapshots:
                self._checked.add(space)
                self._since_check.pop(space, None)
                task = asyncio.create_task(self._snapshot(doc, due), name="weft-snapshot")
                self._snapshots[space] = task

    def note_loaded(self, doc: DocRef, records: int, size: int) -> None:
        """A room loaded ``doc`` and found ``records`` updates (``size`` bytes) after
        its latest snapshot: counted as if noted here, so its first update needs no
        check that reads the log (which, run after a burst, read and decoded hundreds
        of records only to find nothing due)."""
        space = doc.space
        if space in self._checked:
            return
        self._checked.add(space)
        count, total = self._since_check.get(space, (0, 0))
        self._since_check[space] = (count + records, total + size)

    def forget_checks(self) -> None:
        """Forget which documents were checked for snapshots (each is checked once more
        on its next update): called when unloaded documents' memory is given back."""
        self._checked = set()
        self._since_check = {}
        self._drop_tails()
        self.history.forget_built()

    def _drop_tails(self) -> None:
        self._tails = {}
        self._tail_bytes = 0

    def _prune_tail(self, space: bytes, upto: Versionstamp) -> None:
        """Forget the tail's updates at or before ``upto`` (a snapshot holds them)."""
        tail = self._tails.get(space)
        if tail is None:
            return
        last = upto.raw
        kept = [r for r in tail if r.versionstamp.raw > last]
        self._tail_bytes -= sum(r.size for r in tail) - sum(r.size for r in kept)
        self._tails[space] = kept  # kept even when empty: the doc's tail goes on from here

    async def _snapshot(self, doc: DocRef, due: bool) -> None:
        try:
            async with self._snapshot_slots:
                written = await self._snapshot_if_due(doc, start_tail=due)
            if written is not None:
                log.info(
                    "snapshot of %s/%s/%s at %s",
                    doc.tenant,
                    doc.project,
                    printable(doc.path),
                    written.versionstamp,
                    extra={"tenant": doc.tenant, "project": doc.project, "path": doc.path},
                )
        except asyncio.CancelledError:
            raise
        except Exception:  # off the hot path: a failed snapshot is retried on a later one
            log.error("snapshot of %s/%s failed", doc.project, printable(doc.path), exc_info=True)
        finally:
            self._snapshots.pop(doc.space, None)

    async def _snapshot_if_due(self, doc: DocRef, start_tail: bool) -> Snapshot | None:
        """``History.snapshot_if_due``, from the doc's tail when it holds every record
        since the latest snapshot (see the module docstring), else reading the log;
        ``start_tail``: start the doc's tail before reading it, if it has none."""
        history = self.history
        space = doc.space
        if space in self._tails:
            head_key = doc.key("head")

            def reads(tr: ReadTransaction) -> tuple[Snapshot | None, bytes | None]:
                return _latest_snapshot(tr, doc, None), tr.get(head_key)

            snapshot, raw = await history.kv.read(reads)
            head = Head.decode(raw) if raw is not None else None
            records = await self._known(snapshot, head, space)
            if records is not None:
                if snapshot is not None:
                    self._prune_tail(space, snapshot.versionstamp)
                added = sum(r.size for r in records)
                if not records or (
                    len(records) < history.snapshot_every and added < history.snapshot_bytes
                ):
                    return None
                new = await history.write_snapshot(doc, snapshot, records)
                if new is not None:  # else deferred: the doc holds pending updates
                    self._prune_tail(space, new.versionstamp)
                    self.tail_snapshots += 1
                return new
        elif start_tail:
            # Started before the read below: every later commit is noted from now on
            # (noting follows committing), and what the snapshot it writes holds is
            # pruned after it, so the tail is whole from that snapshot on.
            self._tails[space] = []
        written = await history.snapshot_if_due(doc)
        self.log_snapshots += 1
        if written is not None:
            self._prune_tail(space, written.versionstamp)
        return written

    async def _known(
        self, snapshot: Snapshot | None, head: Head | None, space: bytes
    ) -> list[Logged] | None:
        """``known_records`` from the doc's tail for the head just read. A group commit
        in flight now may be in that head before its updates reach the tail (they are
        noted once its result is back): then wait for it and look again. Commits that
        begin after it come after the read, so after the head."""
        if head is None or head.count is None:
            return None
        records = known_records(snapshot, head.versionstamp, head.count, self._tails.get(space, []))
        if records is None and self._batches_done < self._batches_started:
            target = self._batches_started
            while self._batches_done < target:
                await self._batch_done.wait()
            tail = self._tails.get(space, [])
            records = known_records(snapshot, head.versionstamp, head.count, tail)
        return records
