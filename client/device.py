"""An offline-first device: the asyncio client library.

::

    async with Device("~/.local/share/weft/notes", "ws://localhost:8765", "acme", "site",
                      token=TOKEN) as device:
        doc = await device.doc("notes/today.md")          # a pycrdt.Doc
        doc.get("content", type=Text).insert(0, "hello")  # edit it as you like
        await device.sync()                               # optional: wait until acked

Local first: every change made to a document the device opened is appended to the
device's local history (:class:`crdt.history.History` on the SQLite engine, in the data
directory) before anything is sent, and so is every update received from the server, so
the device has the full state of its documents offline. Local updates wait in the outbox
(:mod:`client.outbox`) until the server acknowledges them; each document keeps its base,
the last server versionstamp it had seen, so an offline branch can be checked for
conflicts. Each document has a link (:mod:`client.connection`); when the server cannot
be reached the device probes it with exponential backoff and jitter, and every link
resumes (sync both ways) once it answers. A poller reads the project's document list to
notice documents that changed or appeared while their link was idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Doc, TransactionEvent

from client.backoff import Backoff
from client.entry import MAX_BASE_ROUNDS, DocEntry
from client.events import (
    DeviceClosed,
    DeviceFailed,
    DeviceNotStarted,
    DeviceUnusable,
    DocumentsFailed,
    Event,
    Listener,
    conflict_event,
)
from client.outbox import Outbox, Pending
from client.recorder import LOCAL, Recorder
from client.remote import (
    Api,
    ApiDenied,
    ApiError,
    ApiNotFound,
    ServerURL,
    auth_headers,
    token_scope,
)
from client.state import (
    Ahead,
    DataDirBusy,
    DeviceState,
    DocState,
    FileState,
    StateWriter,
    lock_data_dir,
)
from crdt import ydoc
from crdt.history import DocRef, History
from crdt.keys import check_name, check_new_path, normalise_path
from crdt.kv import open_engine
from crdt.versionstamp import ZERO, Versionstamp

log = logging.getLogger("weft.client")

EMPTY_UPDATE = b"\x00\x00"
PAGE = 1000
CHECK_SECONDS = 0.01
# While the tenant's connection quota turns a link of this device away, its links close
# after this many idle seconds (sooner if ``idle_seconds`` says so; with ``idle_seconds``
# None, only if the device polls: see Device.link_idle_seconds).
CROWDED_IDLE_SECONDS = 1.0
CROWDED_SAY_SECONDS = 600.0  # "waiting for a connection" is said at most this often


class Device:
    """See the module docstring. Use ``async with``, or :meth:`start` and :meth:`close`."""

    def __init__(
        self,
        data_dir: Path | str,
        server: str | ServerURL,
        tenant: str,
        project: str,
        *,
        token: str | None = None,
        device_id: str | None = None,
        listener: Listener | None = None,
        max_backoff: float = 10.0,
        poll_seconds: float | None = 1.0,
        idle_seconds: float | None = None,
        max_connecting: int = 96,
        quota_patience: float | None = None,
        offline_patience: float | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.server = server if isinstance(server, ServerURL) else ServerURL.parse(server)
        self.tenant = check_name("tenant", tenant)
        self.project = check_name("project", project)
        self.token = token
        self.headers = auth_headers(token)
        self.listener = listener or Listener()
        self.max_backoff = max_backoff
        self.poll_seconds = poll_seconds
        self.idle_seconds = idle_seconds
        # How long a sync waits for room under the tenant's connection quota before it
        # fails the document (weft sync --once); None: for as long as it takes.
        self.quota_patience = quota_patience
        # How long a sync waits for a server that cannot be reached before the device
        # gives up (halts: weft sync --once); None: for as long as it takes.
        self.offline_patience = offline_patience
        # (monotonic) when the device went offline with the server not taking it since
        # (cleared by ``accepted``): a server that answers its health probe while every
        # connection fails is no nearer.
        self._unreachable_since: float | None = None
        self._unusable_said: set[str] = set()  # documents an update did not apply to
        # Documents whose link the connection quota turns away now (see turned_away).
        self.crowded: set[str] = set()
        self._crowded_said: float | None = None  # (monotonic) when that was last said
        self.connect_slots = asyncio.Semaphore(max_connecting)
        self.device_id = device_id or ""
        self._wanted_id = device_id
        self.entries: dict[str, DocEntry] = {}
        self.heads: dict[str, Versionstamp | None] = {}
        # The documents the last heads read said are deleted, with the head it said so at
        # (``Api.gone``; see listed_deleted)
        self.gone: dict[str, Versionstamp] = {}
        self.heads_read = asyncio.Event()
        self._heads_due = asyncio.Event()  # read the heads before the poll interval ends
        self.heads_reads = 0  # heads reads started
        # The conflict count the last heads read that said one said (None: none did
        # yet), and set when a read says another (client.said reads the list then)
        self.conflicts_seen: int | None = None
        self.conflicts_moved = asyncio.Event()
        self.updates_acked = 0  # local updates the server acknowledged since start
        self.syncing = 0  # callers waiting in wait_until (sync, a workspace's sync)
        self._heads_again = False  # asked for while a one-off read was under way
        self.read_only = False
        self.paused = False
        self.stopping = False
        self.failure: DeviceFailed | None = None
        self._online = asyncio.Event()
        self._changed = asyncio.Event()
        self._opening: dict[str, asyncio.Future[DocEntry]] = {}
        # Documents opened with connect=False, until an open that connects: not connected
        # by a heads read either (a workspace takes in what changed on disk first).
        self.held: set[str] = set()
        # Documents a workspace left closed at its start: deleted here, every local
        # update acknowledged, no file at their path (see set_aside)
        self._set_aside: set[str] = set()
        # Documents let go while running (see let_go), with the head each had seen then
        self._let_go: dict[str, Versionstamp] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._prober: asyncio.Task[None] | None = None
        self._started = False
        # close() began (``stopping``), and it ended (everything released): a closed
        # device is not started again, see start()
        self._closed = False
        self._close_done = asyncio.Event()
        self._starting: asyncio.Event | None = None  # set once start() has ended
        # the recorder stopped: an edit of an open document would be lost, so it is refused
        self._edits_refused = False
        self._offline_said = False
        self._online_unsaid = False  # the server answers; "online" once it takes the token

    # --- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Device:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the local stores and start syncing (in the background). Once: a device
        already started, or closed (closing), raises :class:`DeviceUnusable`
        (:class:`DeviceClosed`); make a new Device on the data directory instead."""
        if self.stopping or self._closed:
            raise DeviceClosed(
                f"the device on {self.data_dir} was closed and cannot start again: make a new "
                "Device on it"
            )
        if self._starting is not None:
            raise DeviceUnusable(f"the device on {self.data_dir} is started already")
        # Set once start() has ended: a close() meanwhile waits for it, then releases
        # what it took (it released nothing, and the started device ran on, locked).
        starting = self._starting = asyncio.Event()
        try:
            await self._start()
        except BaseException:
            if not self._started:  # it took nothing it keeps: start() may be tried again
                self._starting = None
            raise
        finally:
            starting.set()

    async def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock_data_dir(self.data_dir / "lock")
        try:
            await self._open_stores()
        except BaseException:
            self._lock.close()
            raise
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.api = Api(self.http, self.server, self.tenant, self.project, self.token)
        self._started = True  # (close() releases everything from here on)
        if token_scope(self.token) == "read":
            self.set_read_only("the token's scope is read")
        self.recorder = Recorder(self.history, self.device_id, self.changed, self.writer.ahead)
        self._spawn(self.recorder.run(), "recorder")
        self._spawn(self.writer.run(), "state")
        if self.poll_seconds is not None:
            self._spawn(self._poll_loop(), "poller")
        self._start_prober()

    async def _open_stores(self) -> None:
        self.state = await asyncio.to_thread(DeviceState, self.data_dir / "state.db")
        try:
            await asyncio.to_thread(self.state.bind, str(self.server), self.tenant, self.project)
            self.device_id = await asyncio.to_thread(self.state.device_id, self._wanted_id)
            self._doc_states = await asyncio.to_thread(self.state.docs)
            self.writer = await asyncio.to_thread(StateWriter, self.state)
            self.history = History(open_engine(f"sqlite:///{self.data_dir / 'history.db'}"))
            await self.history.kv.__aenter__()
        except BaseException:
            await asyncio.to_thread(self.state.close)
            raise
        try:
            await self.history.init()
            await self.history.create_tenant(self.tenant)
        except BaseException:
            await self.history.kv.__aexit__(None, None, None)
            await asyncio.to_thread(self.state.close)
            raise

    async def close(self) -> None:
        """Stop syncing; everything recorded stays in the local history. Releases
        everything (the data directory's lock, its SQLite files, the HTTP session) even
        if a step fails; a second call waits for the first to end. From here on the
        device is unusable (:class:`DeviceClosed`): a document not open yet is refused,
        a sync raises, and an edit of a document it opened raises (see
        :meth:`_on_change`) rather than being lost."""
        if self.stopping:
            await self._close_done.wait()
            return
        self.stopping = True
        self.changed()  # (a sync waiting raises DeviceClosed)
        try:
            if self._starting is not None:
                await self._starting.wait()  # a start() under way: released below too
            if self._started:
                await self._stop()
        finally:
            self._closed = True
            self._edits_refused = True
            self._close_done.set()

    async def _stop(self) -> None:
        """Stop the tasks, then release everything, each step even if one before it
        failed (an exit stack runs them last first: the lock is released last)."""
        async with contextlib.AsyncExitStack() as release:
            release.callback(self._lock.close)
            release.push_async_callback(asyncio.to_thread, self.state.close)
            release.push_async_callback(self.history.kv.__aexit__, None, None, None)
            release.push_async_callback(self.http.close)
            release.push_async_callback(self.writer.flush)
            await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        await asyncio.gather(
            *(e.link.stop() for e in self.entries.values()), return_exceptions=True
        )
        for task in (self._prober, *self._tasks):
            if task is not None and task.get_name() != "weft-recorder":
                task.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await self.recorded()
        # Every edit made so far is recorded; one made from now on would not be.
        self._edits_refused = True
        for task in (self._prober, *self._tasks, *self.recorder.snapshots):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        # Before the history closes, every load under way ends (open() starts none now;
        # a list taken once missed one started while close() awaited another).
        while loads := [f for f in self._opening.values() if not f.done()]:
            for loading in loads:
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loading

    def _usable(self, what: str) -> None:
        """Raise :class:`DeviceNotStarted` or :class:`DeviceClosed` if the device cannot
        do ``what`` now."""
        if self.stopping or self._closed:
            raise DeviceClosed(f"{what}: the device is closed")
        if not self._started:
            raise DeviceNotStarted(f"{what}: the device is not started (call start() first)")

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks = [t for t in self._tasks if not t.done()]
        task = asyncio.create_task(coro, name=f"weft-{name}")
        task.add_done_callback(_log_failure)
        self._tasks.append(task)

    # --- documents --------------------------------------------------------------------

    async def doc(self, path: str) -> Doc[Any]:
        """The document at ``path`` (loaded from the local history, synced in the
        background). Edit it directly: every change is recorded and sent. Raises
        :class:`DeviceNotStarted` before start(), :class:`DeviceClosed` once close()
        began, and :class:`~crdt.errors.BadPath` for a path no document may have, or
        one no new document may have (``crdt.keys.check_new_path``: under ``.git/`` or
        ``.weft/``, say), as the server would, unless the document is known already
        (open, synced by this device before, or in the server's document list as last
        read): its edits would never be sent."""
        self._usable(f"not opening {path}")
        path = normalise_path(path)
        if path not in self.entries and path not in self._doc_states and path not in self.heads:
            check_new_path(path)
        return (await self.open(path)).doc

    async def open(self, path: str, *, connect: bool = True) -> DocEntry:
        """Open ``path`` (normalised; BadPath if not allowed) and, unless ``connect`` is
        False, keep its link up. Unlike :meth:`doc` it opens a path no new document may
        have (a folder workspace decides about those itself); the server refuses to
        create one (its link fails: see :meth:`sync`). Before start(), :class:`DeviceNotStarted`; once the
        device is closing, :class:`DeviceClosed`, for a document not open yet too (and
        for an opener whose load close() cancels): a load started then would read the
        local history after close() has closed it."""
        self._usable(f"not opening {path}")
        path = normalise_path(path)
        if not connect:
            # Held while it loads too: a heads read (_follow) ending between the load
            # and this opener's turn connected it, and a workspace starting up then
            # merged the server's changes before the edits made on disk while it was
            # down (an offline emptying met another device's offline edit: no conflict).
            self.held.add(path)
        entry = self.entries.get(path)
        if entry is None:
            pending = self._opening.get(path)
            if pending is None:  # kept until loaded, even if every opener is cancelled
                pending = asyncio.ensure_future(self._load(path))
                self._opening[path] = pending
                pending.add_done_callback(partial(self._loaded, path))
            try:
                entry = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled() and self.stopping:  # (not this opener cancelled)
                    raise DeviceClosed(f"not opening {path}: the device is closing") from None
                raise
        if not connect:  # until an open that connects: a heads read (_follow) waits too
            self.held.add(path)  # (again: an open that connects may have ended meanwhile)
        else:
            self.held.discard(path)
            if self.failure is None:
                entry.link.want()
        return entry

    def _loaded(self, path: str, loading: asyncio.Future[DocEntry]) -> None:
        if self._opening.get(path) is loading:
            del self._opening[path]

    async def _load(self, path: str) -> DocEntry:
        ref = await self.history.doc(self.tenant, self.project, path, create=True)
        # The replay writes the local history's snapshot when one is due (History.load);
        # the recorder counts on from what follows the latest (Recorder.snapshot_due).
        loaded = await self.history.load(ref)
        state = self._doc_states.get(path, DocState())
        outbox = Outbox(state.acked, await self.local_updates(ref, state.acked))
        entry = DocEntry(self, path, ref, loaded.replayed.doc, state, outbox)
        entry.since_snapshot = loaded.records
        entry.since_snapshot_bytes = loaded.size
        entry.subscription = entry.doc.observe(partial(self._on_change, entry))
        self.entries[path] = entry
        self._let_go.pop(path, None)
        return entry

    def let_go(self, path: str) -> bool:
        """Drop the open document ``path`` from memory (its doc, entry and link, as if
        this run had not opened it) when nothing of it is under way: its link closed
        (idle), not held, not failed; every local update recorded and acknowledged; its
        base caught up with what the server sent. A folder workspace lets go of a
        deleted document with no file at its path (a running weft sync kept every one
        loaded until it stopped). From then on it counts as set aside (see set_aside),
        and as listed deleted (see listed_deleted) until the document list shows it past
        the head it had seen; opening it again loads it from the local history, as at
        start. False (nothing done) if something is under way. A ``Doc`` of it held from
        before is the document's no more: its edits are neither recorded nor sent (open
        the document again, with :meth:`doc`, to edit it)."""
        entry = self.entries.get(path)
        if entry is None or entry.base is None or not self._quiet(entry):
            return False
        del self.entries[path]
        # (an observer is held by the doc's Rust side, which the garbage collector
        # cannot see into, and holds the doc: it kept the doc, and this entry, for ever)
        if entry.subscription is not None:
            entry.doc.unobserve(entry.subscription)
        self.held.discard(path)
        self._unusable_said.discard(path)
        # (a load reads the state from here: saved only by the state writer meanwhile)
        self._doc_states[path] = DocState(entry.base, entry.outbox.cursor)
        self._set_aside.add(path)
        self._let_go[path] = max(entry.base, entry.head_seen or entry.base)
        return True

    def _quiet(self, entry: DocEntry) -> bool:
        """Whether nothing of ``entry`` is under way (see let_go)."""
        link = entry.link
        return (
            not link.wanted
            and (link.task is None or link.task.done())
            and link.error is None
            and link.settling is None
            and link.confirm is None
            and entry.path not in self.held
            and entry.path not in self.crowded
            and not entry.waiting
            and entry.unrecorded == 0
            and not entry.base_wanted
            and self.failure is None
            and not self.stopping
        )

    async def local_updates(self, ref: DocRef, after: Versionstamp | None) -> list[Pending]:
        """The local updates of ``ref`` in the local history after ``after``."""
        out: list[Pending] = []
        while True:
            records = await self.history.updates(ref, after=after, limit=PAGE)
            out += [Pending(r.versionstamp, r.update) for r in records if r.session == LOCAL]
            if len(records) < PAGE:
                return out
            after = records[-1].versionstamp

    async def known_paths(self) -> list[str]:
        """Every document this device has in its local history."""
        self._usable("not listing the documents")
        return [info.path for info in await self.history.docs(self.tenant, self.project)]

    def text(self, path: str) -> str:
        return str(self.entries[normalise_path(path)].text)

    # --- local and remote changes -------------------------------------------------------

    def _on_change(self, entry: DocEntry, event: TransactionEvent) -> None:
        """Record a local edit. Once close() has stopped the recorder, the edit could be
        neither recorded nor sent: it raises :class:`DeviceClosed` (pycrdt hands an
        observer's error to the editing code as an ExceptionGroup holding it; the
        in-memory document keeps the edit, nothing else does)."""
        if entry.applying_remote:
            return
        update: bytes = event.update
        if update == EMPTY_UPDATE:
            return
        if self._edits_refused:
            raise DeviceClosed(
                f"{entry.path}: edit refused, the device is closed (it is neither recorded "
                "nor sent: open the document on a new Device)"
            )
        self.recorder.local(entry, update)

    def apply_remote(self, entry: DocEntry, update: bytes) -> bool:
        """Apply an update from the server to the live doc and record it locally; False
        if it does not apply (the doc does not hold it: no probe answer carrying it may
        move the base)."""
        self.listener.before_remote(entry.path)
        entry.applying_remote = True
        try:
            ydoc.apply(entry.doc, update)
        except ValueError as exc:  # ydoc.UnusableUpdate: refused or made pycrdt panic
            # (every probe's answer brings it again: a warning once per document)
            level = logging.INFO if entry.path in self._unusable_said else logging.WARNING
            self._unusable_said.add(entry.path)
            log.log(level, "%s: an update from the server does not apply: %s", entry.path, exc)
            return False
        finally:
            entry.applying_remote = False
        self.recorder.remote(entry, update)
        self.listener.after_remote(entry.path)
        return True

    def apply_stored(self, entry: DocEntry, update: bytes, versionstamp: Versionstamp) -> None:
        """Apply a local update that the server stored (at ``versionstamp``) before it
        was made here: a new file's ``Create``, made on a copy of the document. It is
        recorded as a local update, and not sent again (``Recorder.stored``)."""
        entry.applying_remote = True  # (not recorded by the observer either)
        try:
            ydoc.apply(entry.doc, update)
        finally:
            entry.applying_remote = False
        self.recorder.stored(entry, update, versionstamp)

    def after_recorded(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every change made so far is in the local history."""
        self.recorder.after_recorded(callback)

    async def recorded(self) -> None:
        """Wait until every change made so far is in the local history."""
        await self.recorder.recorded()

    # --- state ------------------------------------------------------------------------

    def save_doc_state(self, entry: DocEntry) -> None:
        self.writer.doc(entry.path, DocState(entry.base, entry.outbox.cursor))

    @property
    def files(self) -> dict[str, FileState]:
        """A folder workspace's file states (shadows), as last saved."""
        return self.writer.files

    async def aheads(self) -> dict[str, list[Ahead]]:
        """A folder workspace's ``ahead`` texts, as saved (read once, at its start)."""
        return await asyncio.to_thread(self.state.aheads)

    def file_read(self, entry: DocEntry, text: str | None) -> None:
        """The local edit just made to ``entry`` came from its file's ``text``: saved as
        the edit's ``ahead`` text before the edit is recorded (see client.shadows)."""
        self.recorder.file_read(entry, text)

    def save_file_state(self, path: str, state: FileState | None) -> None:
        """Remember a workspace file's shadow (None forgets it); written in the background.
        Called once the history has every change made so far: the state is stamped with
        the document's last local update now (``FileState.local``, see client.shadows)."""
        entry = self.entries.get(path)
        if state is not None and entry is not None:
            state = replace(state, local=entry.outbox.last or ZERO)
        self.writer.file(path, state)

    # --- online / offline ---------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._online.is_set()

    async def wait_online(self) -> None:
        await self._online.wait()

    def report_unreachable(self, reason: str) -> None:
        """A connection failed: go offline and probe the server until it answers."""
        if self.paused or self.stopping:
            return
        if self._online.is_set():
            self._online.clear()
            self._offline_said = True
            self.emit(Event("offline", f"offline: {reason}; retrying with backoff"))
            self.changed()
        self._start_prober()

    def _start_prober(self) -> None:
        if (self._prober is None or self._prober.done()) and not self.stopping:
            self._prober = asyncio.create_task(self._probe_loop(), name="weft-prober")
            self._prober.add_done_callback(_log_failure)

    async def _probe_loop(self) -> None:
        backoff = Backoff(initial=min(0.2, self.max_backoff), maximum=self.max_backoff)
        while not self._online.is_set() and not self.paused:
            # (armed again in the loop: a heads read that the server answered meanwhile,
            # e.g. while draining with its health probe failing, cleared it)
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            if self._out_of_patience():
                return
            if await self.api.healthy():
                self._online.set()
                self._offline_said = False
                self._online_unsaid = True
                self.changed()
                return
            if not self._offline_said:
                self._offline_said = True
                self.emit(Event("offline", f"offline: {self.server} does not answer; retrying"))
            await asyncio.sleep(backoff.next())

    def _out_of_patience(self) -> bool:
        """Give up (halt) if a sync has waited ``offline_patience`` seconds for a server
        that cannot be reached: ``weft sync --once`` must end. Edits stay recorded."""
        since, patience = self._unreachable_since, self.offline_patience
        if since is None or patience is None or not self.syncing:
            return False
        waited = time.monotonic() - since
        if waited <= patience:
            return False
        self.halt(
            DeviceFailed(
                f"{self.server} unreachable for {waited:.0f} s, giving up: local edits stay "
                "on this device and are sent on the next run"
            ),
            {"unreachable": waited},
        )
        return True

    def accepted(self) -> None:
        """The server took this device's token (a document list read, a room's first
        message): say "online" now, not when it merely answered a health probe, which
        it does for a token it then refuses."""
        self._unreachable_since = None
        if self._online_unsaid and self.failure is None:
            self._online_unsaid = False
            self.emit(Event("online", f"online: {self.server}"))

    async def pause(self) -> None:
        """Go offline on purpose: close every connection, keep working locally."""
        self.paused = True
        self._online.clear()
        await asyncio.gather(*(e.link.disconnect() for e in self.entries.values()))
        self.changed()

    def resume(self) -> None:
        """Come back online (after the server answers a probe)."""
        self.paused = False
        self._start_prober()

    def set_read_only(self, reason: str) -> None:
        if not self.read_only:
            self.read_only = True
            self.emit(Event("read_only", f"read-only ({reason}): local edits stay on this device"))
            self.changed()

    def fail(self, code: int | None, reason: str) -> None:
        """The server refused this device (bad token, no access): stop every link."""
        failure = DeviceFailed(f"the server refused this device ({code}): {reason}", code)
        self.halt(failure, {"refused": code})

    def halt(self, failure: DeviceFailed, data: dict[str, Any] | None = None) -> None:
        """Stop every link for good: the device cannot go on (``failure`` says why, once;
        :meth:`wait_until` raises it)."""
        if self.failure is None:
            self.failure = failure
            self.emit(Event("error", str(failure), data=data or {}))
            for entry in self.entries.values():
                entry.link.wanted = False
                entry.link_changed.set()
            self.changed()

    def turned_away(self, entry: DocEntry, reason: str) -> None:
        """The tenant's connection quota refused ``entry``'s link (it retries with
        backoff). Said once, and again only ``CROWDED_SAY_SECONDS`` later (not once per
        file: a big folder said it hundreds of times); meanwhile, until no link waits,
        this device's links close once idle for ``CROWDED_IDLE_SECONDS`` rather than
        ``idle_seconds``, making room for the others (a link held idle for a minute per
        file kept a folder bigger than the quota waiting)."""
        if entry.path in self.crowded:
            return
        now = time.monotonic()
        if self._crowded_said is None or now - self._crowded_said >= CROWDED_SAY_SECONDS:
            self._crowded_said = now
            self.warn(entry.path, f"{entry.path}: waiting for a connection: {reason} (4429)")
        else:
            log.info("%s: waiting for a connection: %s (4429)", entry.path, reason)
        if not self.crowded:
            for other in self.entries.values():
                other.link.nudge()  # (its sender re-reads link_idle_seconds)
        self.crowded.add(entry.path)
        self.changed()

    def let_in(self, entry: DocEntry) -> None:
        """``entry``'s link got a connection (or stopped trying)."""
        if entry.path in self.crowded:
            self.crowded.discard(entry.path)
            self.changed()

    @property
    def link_idle_seconds(self) -> float | None:
        """How long a link stays open with nothing to do (None: until closed).

        ``idle_seconds`` None (the library's default) keeps an open document's link up,
        so its remote edits arrive as they are made, but only while there is room: once
        the quota turns one of this device's links away, idle links close after
        ``CROWDED_IDLE_SECONDS`` as weft sync's do (held open, the documents beyond the
        quota were never sent, and ``sync()`` never returned), and the poller reconnects
        one when its head moves. Without a poller a closed link would hear of no remote
        edit again, so then they stay open (and the others wait for room)."""
        if not self.crowded:
            return self.idle_seconds
        if self.idle_seconds is not None:
            return min(self.idle_seconds, CROWDED_IDLE_SECONDS)
        return None if self.poll_seconds is None else CROWDED_IDLE_SECONDS

    def doc_failed(self, entry: DocEntry, reason: str) -> None:
        self.emit(Event("error", f"{entry.path}: {reason}", entry.path))
        self.changed()

    def branch_conflict(self, entry: DocEntry, cid: str, summary: str) -> None:
        """The server recorded a conflict for ``entry``: for an offline branch of it
        (``Checked``), or for an edit sent online that met a deletion (``Conflict``)."""
        self.emit(conflict_event(entry.path, cid, summary))

    def warn(self, path: str | None, message: str) -> None:
        self.emit(Event("warning", message, path))

    def emit(self, event: Event) -> None:
        log.info("%s", event.message, extra={"path": event.path})
        self.listener.event(event)

    # --- the project's document list ----------------------------------------------------

    async def read_heads(self) -> dict[str, Versionstamp | None] | None:
        """The server's documents and heads (None when unreachable)."""
        self.heads_reads += 1
        try:
            heads = await self.api.heads()
            gone = self.api.gone
            self._note_conflicts(self.api.conflicts)
        except ApiNotFound:
            heads, gone = {}, {}  # a tenant nobody has written to yet
            self._note_conflicts(0)  # (so none recorded)
        except ApiDenied as exc:
            self.fail(exc.status, exc.message)
            return None
        except ApiError as exc:  # e.g. a 500, or a proxy's 502: try again later
            self.warn(None, f"reading the document list failed: {exc}")
            return None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.report_unreachable(str(exc) or type(exc).__name__)
            return None
        self.accepted()
        self.heads = heads
        self.gone = gone
        self.heads_read.set()
        self.changed()
        return heads

    def listed_deleted(self, path: str) -> bool:
        """Whether the document list says ``path`` is deleted at the head it lists and
        this device neither has it open nor synced it before: it is not named to
        ``remote_docs`` (opening it would only tell that it is deleted: a new device's
        first sync opened every one a rename left) until a list shows it at another
        head (brought back elsewhere, say). Opening it (a file written at its path)
        syncs it as any other. A list that does not say (an older server, a document
        not marked yet) leaves every document to be opened, as before. A document this
        device let go (:meth:`let_go`) counts as listed deleted, whatever the list says
        (marked or not yet), while the list shows it at the head it had seen then (or
        an older one)."""
        if path in self.entries or path in self._opening:
            return False
        head = self.heads.get(path)
        seen = self._let_go.get(path)
        if seen is not None and (head is None or head <= seen):
            return True  # let go, and not changed since (see let_go)
        return (
            head is not None
            and self.gone.get(path) == head
            and (path not in self._doc_states or path in self._set_aside)
        )

    def set_aside(self, path: str, local: Versionstamp | None) -> bool:
        """Count the document ``path``, which this device synced and knows deleted (a
        workspace's file state, stamped with the document's last local update ``local``),
        as one it never synced in :meth:`listed_deleted`, when the server acknowledged
        that update (nothing of it waits to be sent): then it is opened only as
        such a document is, not at every start (every rename leaves one). False when
        an update may wait (``local`` unknown, or after the acknowledged one)."""
        acked = self._doc_states.get(path, DocState()).acked
        if local is None or (local != ZERO and (acked is None or local > acked)):
            return False
        self._set_aside.add(path)
        return True

    def _note_conflicts(self, count: int | None) -> None:
        """The conflict count a heads read said: one other than the last one said (not
        the first one) sets ``conflicts_moved`` (a record was made or resolved). A read
        that says none (a server from before the header: in an upgrade, one instance of
        several behind one address) leaves the last one as it was: taken as no number,
        answers of an old and a new instance in turn never showed a move."""
        if count is None:
            return
        if self.conflicts_seen is not None and count != self.conflicts_seen:
            self.conflicts_moved.set()
        self.conflicts_seen = count

    def want_heads(self) -> None:
        """Read the heads soon (a document needs its base): at once instead of at the
        end of the poll interval; without a poller, once."""
        if self.poll_seconds is not None:
            self._heads_due.set()
        elif self._heads_due.is_set():
            self._heads_again = True  # the read under way may have started too early
        elif not self.stopping:
            self._heads_due.set()
            self._spawn(self._read_heads_once(), "heads")

    async def _read_heads_once(self) -> None:
        try:
            self._heads_again = True
            while self._heads_again and not self.stopping:
                self._heads_again = False
                await self._read_and_follow(follow=False)
        finally:
            self._heads_due.clear()

    async def _poll_loop(self) -> None:
        assert self.poll_seconds is not None
        while self.failure is None:
            await self._online.wait()
            self._heads_due.clear()
            await self._read_and_follow(follow=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._heads_due.wait()

    async def _read_and_follow(self, follow: bool) -> None:
        read = self.heads_reads + 1  # the number read_heads gives this read
        try:
            heads = await self.read_heads()
        except Exception:  # a task boundary: polling (and a sync waiting on it) goes on
            log.exception("reading the document list failed")
            heads = None
        self._follow(heads or {}, read, follow=follow and heads is not None)

    def _follow(
        self, heads: dict[str, Versionstamp | None], read: int, follow: bool = True
    ) -> None:
        """Probe open documents whose head moved past what they have seen (and, if
        ``follow``, open the new documents and reconnect idle ones). A document whose
        base lags behind server updates that arrived before heads read number ``read``
        started is probed for its head (the updates are all at or before it), unless
        its base is there already; if it gets no probe (not connected, no head, the
        read failed) it stops waiting (nothing to learn now). Not one whose local
        updates wait: their acks move its base, then it asks again."""
        if follow:
            unknown = [
                p
                for p in heads
                if p not in self.entries and p not in self._opening and not self.listed_deleted(p)
            ]
            if unknown:
                self.listener.remote_docs(unknown)
        for path, head in heads.items():
            entry = self.entries.get(path)
            if entry is None or head is None:
                continue
            if entry.base_wanted:
                # Every read that finds the base lagging is a round, whichever way it
                # goes on: counted only for the first branch below, a document others
                # kept editing (an update arriving during every read) never ran out of
                # rounds, and a sync waited for as long as they typed.
                entry.base_rounds += 1
            if entry.base_wanted and entry.base_wanted_at < read:
                if entry.base is not None and head <= entry.base:
                    entry.settled()
                    continue
                if entry.link.connected and not entry.waiting:
                    entry.link.probe(head, read)
                    continue
            if entry.head_seen is not None and head <= entry.head_seen:
                continue
            if not entry.link.wanted:
                if follow and path not in self.held:
                    entry.link.want()
            elif entry.link.connected and (not entry.link.probes or entry.base_wanted):
                # (one waiting for its base: the probe pending may be its first, whose
                # answer proves no head)
                entry.link.probe(head, read)
        for entry in self.entries.values():
            if (
                entry.base_wanted
                and entry.base_wanted_at < read
                and not entry.link.probes
                and not entry.waiting
            ):
                # Nothing to learn from this read (not connected, no head, the read
                # failed): a sync stops waiting, but the mark stays, so a later read
                # still moves the base (clearing it left the base stale; found in a
                # review).
                entry.base_rounds = MAX_BASE_ROUNDS
                self.changed()

    # --- waiting --------------------------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()

    def pending(self) -> int:
        """Local updates not acknowledged by the server yet (recorded or not)."""
        return sum(len(e.outbox) + e.unrecorded_local for e in self.entries.values())

    def idle(self) -> bool:
        """Every open document recorded, acknowledged (unless read-only) and synced."""
        return self.recorder.idle and all(e.done() for e in self.entries.values())

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; raise :class:`DeviceFailed` if the device fails.

        The predicate is checked after a change, at most every ``CHECK_SECONDS`` (a check
        may look at every open document). Raises :class:`DeviceNotStarted` before start(),
        :class:`DeviceClosed` once close() began (while waiting too)."""
        self._usable("not syncing")
        self.syncing += 1  # acked edits are confirmed at once, not after a quiet spell
        for entry in self.entries.values():
            entry.link.hurry()
        try:
            await self._wait_until(predicate)
        finally:
            self.syncing -= 1

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while True:
            self._changed.clear()
            if self.stopping:
                raise DeviceClosed("not syncing: the device is closed")
            if self.failure is not None:
                raise self.failure
            if predicate():
                return
            await self._changed.wait()
            await asyncio.sleep(CHECK_SECONDS)

    async def sync(self, timeout: float | None = None) -> None:
        """Wait until local and server agree for every open document (see :meth:`idle`).
        Raises :class:`DocumentsFailed` if the server refused some for good (the others
        are in sync), :class:`DeviceFailed` if it refused the device, ``TimeoutError``
        after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self.wait_until(self.idle)
        failed = {e.path: e.link.error for e in self.entries.values() if e.link.error is not None}
        if failed:
            raise DocumentsFailed(failed)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


__all__ = [
    "DataDirBusy",
    "Device",
    "DeviceClosed",
    "DeviceFailed",
    "DeviceNotStarted",
    "DeviceUnusable",
    "DocEntry",
    "DocumentsFailed",
    "Event",
    "Listener",
]
