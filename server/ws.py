"""The WebSocket endpoint ``/ws/{tenant}/{project}/{doc path}``: glue only.

The handler authenticates (before any read), joins the room, then moves frames: bytes
from the socket go to the :class:`~server.session.Session`, whose actions it carries out
(send, commit through the group-commit writer, relay awareness, close). All protocol
decisions live in the session. A ``Create`` (a commit that names the state its client
decided on) is stored here, not through the writer: see :meth:`_Link._create`.

The transport of each connection (bounded send queue, clean close) is
:mod:`server.connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from crdt import codec
from crdt.codec import Checked, Conflict
from crdt.conflicts import ConflictRecord
from crdt.editdelete import Editor
from crdt.errors import (
    BadPath,
    HeadMoved,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    StoreError,
    WeftError,
)
from crdt.history import Append, Appended, DocRef, Expect
from crdt.keys import (
    DEVICE_ID,
    DEVICE_ID_RULE,
    check_name,
    check_new_path,
    check_url_utf8,
    normalise_path,
)
from crdt.records import state_vector_clocks
from crdt.versionstamp import ZERO, Versionstamp
from server.appkeys import (
    AUTH,
    CONNECTIONS,
    HISTORY,
    METRICS,
    ON_BRANCH,
    ON_EDIT_DELETED,
    QUOTAS,
    ROOMS,
    SETTINGS,
    WRITER,
)
from server.auth import InvalidToken, Principal, check, token_of
from server.budget import LineBudget
from server.connection import (
    CLOSE_TIMEOUT,
    CLOSE_TRY_AGAIN,
    Connection,
    WebSocket,
    close_reason,
    too_big_text,
)
from server.logsafe import printable
from server.rooms import Room
from server.session import (
    WEFT_VERSION,
    Action,
    BranchEnd,
    Close,
    Commit,
    Refusal,
    Relay,
    Send,
    SendFrame,
    Session,
    Wait,
)
from server.writer import WriterClosed

SAME_CHANGE_DEVICE = "weft:same-change"  # the device a same change's deletion is by
log = logging.getLogger("weft.sync")

SYNC_STEP1_PREFIX = bytes((codec.MSG_SYNC, codec.SYNC_STEP1))
CLOSE_GOING_AWAY = 1001
CLOSE_INVALID = 1007
CLOSE_INTERNAL = 1011
CLOSE_BAD_PATH = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
HELD_CODES = frozenset({1002, 1003, 1007, 1009, 4413, 4429})
"""Refusals of what a client sent (a frame, an update, awareness, its rate)."""
CREATE_TRIES = 5
"""Times a ``Create`` is looked at again when the document's head moved between the
room's check and the store's (another instance's commit, or this one's in flight)."""


def _target(request: web.Request) -> tuple[str, str, str]:
    check_url_utf8(request.rel_url.raw_path)  # %ff: refused, not stored as "%ff"
    tenant = check_name("tenant", request.match_info["tenant"])
    project = check_name("project", request.match_info["project"])
    return tenant, project, normalise_path(request.match_info["path"])


async def websocket(request: web.Request) -> web.StreamResponse:
    """GET /ws/{tenant}/{project}/{path}: one y-websocket peer."""
    app = request.app
    settings = app[SETTINGS]
    ws = WebSocket(
        max_msg_size=settings.max_message_bytes,
        heartbeat=settings.heartbeat_seconds,
        timeout=CLOSE_TIMEOUT,
    )
    try:
        await ws.prepare(request)
    except ConnectionResetError:  # the client left during the handshake: not our error
        log.info("%s: the client went away during the handshake", printable(request.path))
        # Not ``ws``: aiohttp would close it unprepared (a RuntimeError, logged as an
        # unhandled exception); writing this one fails quietly (a ConnectionError).
        return web.Response(status=499, reason="Client Closed Request")
    metrics = app[METRICS]
    try:
        tenant, project, path = _target(request)
        device = _device(request)
        principal = app[AUTH].verify(token_of(request))
        check(principal, tenant, project, "read")
        await _check_new(app, tenant, project, path)
        await app[QUOTAS].ready()  # the other instances' counts: read once, at first
        if app[CONNECTIONS].draining:
            raise _Refuse(CLOSE_GOING_AWAY, "server shutting down", "draining")
        app[QUOTAS].connect(tenant)
    except (BadPath, PermissionDenied, QuotaExceeded, _Refuse) as exc:
        code, label = _refusal(exc)
        _REFUSALS.say(label, "refused %s: %s", printable(request.path), printable(exc))
        metrics.refusals.inc(label=label)
        if code != CLOSE_GOING_AWAY and not _weft_version(request.query.get("weft")):
            await app[CONNECTIONS].hold_refused(_hold_key(request))
        await ws.close(code=code, message=close_reason(str(exc)))
        _drop_data_callback(request)
        return ws
    metrics.connections.inc()
    try:
        await _Link(request, ws, principal, tenant, project, path, device).run()
    finally:
        metrics.connections.dec()
        app[QUOTAS].disconnect(tenant)
    return ws


class _Said:
    """Refusals (or closes) said at WARNING, at most ``burst`` per reason in any
    ``every``-second window, then at DEBUG, and the next WARNING says how many went
    unsaid (a client retrying a refused connection made one WARNING line per try: 13,760
    in a walkthrough; a full disk closed every writer, each retrying). /metrics counts
    every refusal."""

    def __init__(self, burst: int = 20, every: float = 10.0, what: str = "refusal(s)") -> None:
        self._budget = LineBudget(burst, every)
        self._what = what

    def say(
        self, label: str, message: str, *args: Any, extra: dict[str, Any] | None = None
    ) -> None:
        fields = {**(extra or {}), "reason": label}
        unsaid = self._budget.take(label)
        if unsaid is None:
            log.debug(message, *args, extra=fields)
            return
        if unsaid:
            message += f" ({unsaid} more {label} {self._what} before this one went unsaid)"
        log.warning(message, *args, extra=fields)


_REFUSALS = _Said()
# Closes of open connections, per close code: a store that fails closes every writer
_CLOSES = _Said(what="close(s)")


async def _check_new(app: web.Application, tenant: str, project: str, path: str) -> None:
    """Refuse (BadPath) a room for a document that does not exist and may not be created
    with this path (``crdt.keys.check_new_path``: under ``.git/`` or ``.weft/``, the
    manifest's name, a disguising character...). One that exists (stored before the rule)
    stays readable, writable and deletable. The store is read only for such a path."""
    try:
        check_new_path(path)
    except BadPath:
        history = app[HISTORY]
        try:
            exists = await history.head(await history.doc(tenant, project, path)) is not None
        except NotFound:  # an unknown tenant: no document at all
            exists = False
        except StoreError as exc:
            raise _Refuse(CLOSE_TRY_AGAIN, "store unavailable; try again", "store") from exc
        if not exists:
            raise


def _device(request: web.Request) -> str | None:
    """``?device=``: the id a weft client gives its device (stable across connections).
    Its updates are stored with it as their client, and an offline branch is never
    judged a conflict with the device's own updates (see ``crdt.branches``)."""
    device = request.query.get("device")
    if device is not None and not DEVICE_ID.fullmatch(device):
        raise _Refuse(CLOSE_BAD_PATH, f"bad ?device=: {DEVICE_ID_RULE}", "bad_device")
    return device


def _hold_key(request: web.Request) -> tuple[str | None, str]:
    """Whose refusals a refused connection's hold counts (see server.backoff)."""
    return request.remote, request.path


def _weft_version(value: str | None) -> int:
    """``?weft=``: the extension version the client speaks (``1``/``true``/``yes``: 1),
    capped at this server's; 0 (a standard client) for anything else."""
    if value in ("true", "yes"):
        return 1
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 4:
        return 0
    return min(int(value), WEFT_VERSION)


class _Refuse(WeftError):
    def __init__(self, code: int, message: str, label: str) -> None:
        super().__init__(message)
        self.code, self.label = code, label


def _refusal(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, _Refuse):
        return exc.code, exc.label
    if isinstance(exc, BadPath):
        return CLOSE_BAD_PATH, "bad_path"
    if isinstance(exc, InvalidToken):
        return CLOSE_UNAUTHORIZED, "bad_token"
    if isinstance(exc, PermissionDenied):
        return CLOSE_FORBIDDEN, "forbidden"
    if isinstance(exc, QuotaExceeded):
        return exc.close_code, "connections"
    return CLOSE_INTERNAL, "internal"


def _drop_data_callback(request: web.Request) -> None:
    """Break the reference cycle aiohttp (3.14) leaves after a WebSocket with a heartbeat:
    the connection's protocol keeps the response's data callback once the connection is
    over (protocol -> callback -> response -> reader -> protocol), so every closed
    connection (~34 objects: request, headers, parser, reader, writer) waited for a full
    garbage collection instead of going at once. After a burst of connections some 200
    of them waited at a time, raising the allocator's peak, and CPython keeps most of
    the memory a peak took (1,000 documents opened and left: ~2 MB more RSS once they
    were unloaded). Called once the connection is closed: nothing is left to notify."""
    protocol = request.protocol
    if getattr(protocol, "_data_received_cb", None) is not None:
        protocol._data_received_cb = None


class _Link:
    """One accepted connection: the session, its room and the actions between them."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        principal: Principal,
        tenant: str,
        project: str,
        path: str,
        device: str | None = None,
    ) -> None:
        self.app = request.app
        self.device = device
        self.request = request
        self.ws = ws
        self.principal = principal
        self.tenant, self.project, self.path = tenant, project, path
        settings = self.app[SETTINGS]
        self.conn = Connection(
            ws,
            request,
            settings.send_queue_frames,
            settings.send_queue_bytes,
            self.app[METRICS],
            self.app[CONNECTIONS].flusher,
        )
        self.session_id = f"{settings.instance}/{self.conn.id}"
        # Looked up once: the per-update paths below use them thousands of times a second.
        self.connections = self.app[CONNECTIONS]
        self.metrics = self.app[METRICS]
        self.rooms = self.app[ROOMS]
        self.writer = self.app[WRITER]
        self.max_inflight = settings.max_inflight_updates
        self.inflight = 0
        self.room_free = asyncio.Event()
        self.room: Room | None = None
        self.stopped = False  # see _stop
        self.left = False  # left the room (at the end, or when it stopped, see _stop)
        self.session: Session | None = None
        # How the connection closes once the reader stops without a close (see _stop)
        self.end = (CLOSE_GOING_AWAY, "server shutting down")
        self.ref: DocRef | None = None
        # The deletion this connection's edits were last judged against: (room, its
        # deletion count). One judgment per deletion: later edits were made later still.
        self.judged: tuple[int, int] | None = None
        self.extra = {
            "connection": self.conn.id,
            "tenant": tenant,
            "project": project,
            "path": path,
        }

    async def run(self) -> None:
        app = self.app
        connections = app[CONNECTIONS]
        expiry: asyncio.TimerHandle | None = None
        connections.open.add(self.conn)
        born: asyncio.Task[None] | None = None
        try:
            can_write = self.principal.can_write(self.tenant, self.project)
            history = app[HISTORY]
            # A write token's first room creates its tenant; a read-only token writes
            # nothing, and reads an unknown tenant's document as empty (an unborn room).
            if can_write:
                self.ref = await history.doc(self.tenant, self.project, self.path, create=True)
            else:
                self.ref = await history.doc_to_read(self.tenant, self.project, self.path)
            self.room = await app[ROOMS].join(self.ref, self.conn)
            self.session = Session(
                self.room,
                tenant=self.tenant,
                can_write=can_write,
                quotas=app[QUOTAS],
                weft=_weft_version(self.request.query.get("weft")),
                max_frame=app[SETTINGS].max_message_bytes,
            )
            log.info(
                "connection %d: %s joined %s",
                self.conn.id,
                printable(self.principal.user),
                printable(self.request.path),
                extra=self.extra,
            )
            self.conn.start()
            if self.session.weft and not await self.rooms.catch_up_to_head(self.room):
                # A weft client compares the state vector sent on open with its own to
                # tell a server restored from a backup (it then sends what the server
                # lacks as one update, not as an offline branch): a room behind another
                # instance's commits would look like one, and the branch go unchecked.
                self.conn.close(CLOSE_TRY_AGAIN, "store unavailable; try again")
                return
            await self._act(self.session.open())
            self.conn.reader = asyncio.create_task(self._read(), name=f"weft-read-{self.conn.id}")
            if self.ref.unborn:
                born = asyncio.create_task(self._until_born(), name=f"weft-born-{self.conn.id}")
            if self.principal.expires is not None:
                expiry = asyncio.get_running_loop().call_later(
                    max(0.0, self.principal.expires - time.time()), self._expire
                )
            try:
                await self.conn.reader
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are cancelled, not just the reader (closed by the server)
        except asyncio.CancelledError:
            raise
        except Exception:  # a connection boundary: log with traceback, close with 1011
            log.error("connection %d failed", self.conn.id, exc_info=True, extra=self.extra)
            self.conn.close(CLOSE_INTERNAL, "internal server error")
        finally:
            if expiry is not None:
                expiry.cancel()
            if born is not None:
                born.cancel()
            # Who closed: the client (its close frame, or 1006 for a lost connection) when
            # the socket is closed and we never began to; else the code we send.
            by_client = self.ws.closed and not self.conn.closing
            if not self.conn.closing:  # we stopped reading (_stop, draining): ack what is in flight
                await self._settle()
                if self._held():
                    await self.connections.hold_refused(_hold_key(self.request))
                self.conn.close(*self.end)
            self._leave()
            if self.session is not None:
                self._act_now(self.session.close())
            await self.conn.stop()
            connections.open.discard(self.conn)
            _drop_data_callback(self.request)
            # The code sent, not ws.close_code: after our close frame that is what the
            # client answered, or 1006 when it went before answering (seen on drain).
            how = f"{self.ws.close_code} from the client" if by_client else None
            log.info(
                "connection %d closed (%s)",
                self.conn.id,
                how or f"{self.conn.close_code} sent",
                extra=self.extra,
            )

    async def _until_born(self) -> None:
        """The room is unborn (a reader of a tenant not in the directory): once a write
        token creates the tenant, its documents live under its own prefix, so close
        with 1013 (try again) and the client connects again and reads them there (the
        official client and ``weft sync`` both reconnect by themselves after it)."""
        try:
            await self.app[HISTORY].tenant_created(self.tenant)
            reason = "the tenant was created: connect again"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (the store failed or closes): the client tries again
            log.warning("connection %d: watching for its tenant failed: %s", self.conn.id, exc)
            reason = "store unavailable; try again"
        log.info("connection %d: %s", self.conn.id, reason, extra=self.extra)
        self._stop(CLOSE_TRY_AGAIN, reason)

    def _held(self) -> bool:
        """Whether the close frame waits (server.backoff): a standard client refused for
        what it sent, which y-websocket sends again 100 ms after the close. A weft
        client was told (``Refused``) and backs off itself."""
        return (
            self.stopped
            and self.end[0] in HELD_CODES
            and self.session is not None
            and not self.session.weft
            and not self.ws.closed
        )

    def _leave(self) -> None:
        """Leave the room (once): the connection gets none of its updates or awareness
        any more, and the awareness clients it controls are removed for the others."""
        if self.room is None or self.left:
            return
        self.left = True
        clients = self.session.awareness_clients if self.session else ()
        self.rooms.leave(self.room, self.conn, clients)

    def _expire(self) -> None:
        """The token expired: close with 4401 "token expired" as for a refusal (see
        _stop). Whatever the client sent after that is not acknowledged: a client
        resends it once it connects with a new token (`weft sync` stops and says the
        token expired; the official client retries with the params it has, and is
        refused until the application gives it a new token)."""
        reader = self.conn.reader
        if self.conn.closing or reader is None or reader.done():
            return
        log.info("connection %d: token expired", self.conn.id, extra=self.extra)
        self.metrics.refusals.inc(label="token_expired")
        self._stop(CLOSE_UNAUTHORIZED, "token expired")

    def _stop(self, code: int, reason: str) -> None:
        """Close with ``code`` once the updates in flight are acknowledged: a refusal
        (quota, bad frame, a failed commit...) or an expired token. Read nothing more
        (an update read and not submitted yet is dropped: never acknowledged, the
        client sends it again), leave the room and end the session, so the
        connection is sent nothing more but the acks of its updates as they become
        durable (at most ``drain_seconds``, see _settle); then the close frame (run's
        ``finally``). Once the reader is done (the run is ending), close at once."""
        reader = self.conn.reader
        if self.conn.closing or self.stopped:
            return
        if reader is None or reader.done():
            self.conn.close(code, reason)
            return
        self.stopped = True
        self.end = (code, reason)
        self._leave()
        if self.session is not None:
            self._act_now(self.session.close())  # answers nothing more but acks
        if reader is not asyncio.current_task():
            reader.cancel()  # (the reader itself sees `stopped` and returns)

    async def _read(self) -> None:
        session = self.session
        assert session is not None
        metrics, connections, conn = self.metrics, self.connections, self.conn
        async for msg in self.ws:
            if conn.closing or connections.draining or self.stopped:
                break
            if msg.type == WSMsgType.BINARY:
                if session.weft and msg.data[:2] == SYNC_STEP1_PREFIX and self.room is not None:
                    # Its answer proves a base: first this instance's commits made durable
                    # before it came, then everything up to the head.
                    await self.writer.settled()
                    if not await self.rooms.catch_up_to_head(self.room):
                        self._stop(CLOSE_TRY_AGAIN, "store unavailable; try again")
                        break
                actions = session.receive_frame(msg.data, time.monotonic())
                if (
                    len(actions) == 1
                    and type(actions[0]) is Commit
                    and actions[0].seen is None
                    and self.inflight < self.max_inflight
                ):
                    self._submit_now(actions[0])  # the usual update: nothing to await
                else:
                    await self._act(actions)
            elif msg.type == WSMsgType.TEXT:
                await self._act(session.receive_text())
            elif msg.type == WSMsgType.ERROR:
                metrics.refusals.inc(label="too_big" if self.ws.close_code == 1009 else "protocol")
                what = too_big_text(msg.data, self.app[SETTINGS].max_message_bytes)
                log.warning("connection %d: %s", self.conn.id, printable(what), extra=self.extra)
                break
            if conn.closing or self.stopped:
                break

    async def _settle(self) -> None:
        """Wait (bounded) for this connection's in-flight commits, so their acks go out."""
        deadline = time.monotonic() + self.app[SETTINGS].drain_seconds
        while self.inflight > 0 and not self.ws.closed and time.monotonic() < deadline:
            self.room_free.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self.room_free.wait()

    async def _act(self, actions: list[Action]) -> None:
        for n, action in enumerate(actions):
            try:
                if isinstance(action, Wait):
                    await asyncio.sleep(action.seconds)
                elif isinstance(action, Commit):
                    await self._submit(action)
                else:
                    self._act_now([action])
            except BaseException:  # e.g. cancelled while waiting: these were never submitted
                self._drop([a for a in actions[n:] if isinstance(a, Commit)])
                raise

    def _drop(self, commits: list[Commit]) -> None:
        if self.session is not None:
            for commit in commits:
                self._act_now(self.session.dropped(commit))

    def _act_now(self, actions: list[Action]) -> None:
        metrics = self.app[METRICS]
        for action in actions:
            if isinstance(action, Send):
                self.conn.send(codec.encode(action.message))
            elif isinstance(action, SendFrame):
                self.conn.send(action.frame)
            elif isinstance(action, Relay):
                assert self.room is not None
                self.room.relay(self.conn.id, action.payload, action.entries, action.own)
            elif isinstance(action, Close):
                _CLOSES.say(
                    str(action.code),
                    "closing connection %d: %d %s",
                    self.conn.id,
                    action.code,
                    printable(action.reason),
                    extra=self.extra,
                )
                self._stop(action.code, action.reason)
            elif isinstance(action, Refusal):
                metrics.refusals.inc(label=action.reason)
            elif isinstance(action, BranchEnd):
                self._branch_end(action)

    async def _submit(self, commit: Commit) -> None:
        while self.inflight >= self.max_inflight:
            self.room_free.clear()
            await self.room_free.wait()
        if commit.seen is not None:
            self._start_create(commit)
        else:
            self._submit_now(commit)

    def _item(self, commit: Commit) -> Append:
        assert self.ref is not None
        return Append(
            self.ref,
            commit.update,
            self.principal.user,
            self.device or str(self.conn.id),
            self.session_id,
            commit.hash,
        )

    def _keep_once(self, copies: bytes) -> None:
        """Commit ``copies`` (a delete-only update: this connection's copy of the same
        change another device sent at the same moment, see :mod:`crdt.sameonline`) as
        this connection's user, by ``SAME_CHANGE_DEVICE``, then apply it and send it to
        every peer, this one included. If it fails, the copy stays, as it did before."""
        assert self.ref is not None
        ref = self.ref
        item = Append(
            ref, copies, self.principal.user, SAME_CHANGE_DEVICE, self.session_id
        )
        log.info(
            "connection %d: the same change as another device's, sent at the same moment: "
            "its copy deleted",
            self.conn.id,
            extra=self.extra,
        )

        def landed(appended: Appended | None, error: BaseException | None) -> None:
            if error is not None or appended is None:
                log.warning(
                    "connection %d: keeping a same change once failed: %s",
                    self.conn.id,
                    error,
                    extra=self.extra,
                )
                return
            room = self.rooms.get(ref)
            if room is None:
                return  # unloaded: its next load replays the deletion from the log
            try:
                room.apply_local(copies, appended, sender=-1)  # every peer, this one too
                self.metrics.same_changes.inc()
            except Exception:
                log.error("applying a same change's deletion failed", exc_info=True)

        with contextlib.suppress(WriterClosed):  # shutting down: the copy stays
            self.writer.submit_with(item, landed)

    def _submit_now(self, commit: Commit) -> None:
        item = self._item(commit)
        self.inflight += 1  # before: an update the writer refuses at once is settled inside
        try:
            self.writer.submit_with(item, functools.partial(self._on_commit, commit))
        except WriterClosed:
            self.inflight -= 1
            self._drop([commit])
            self.conn.close(CLOSE_GOING_AWAY, "server shutting down")

    def _start_create(self, commit: Commit) -> None:
        """Store a ``Create`` in a task of its own: once its append has begun it must
        reach the room (as a writer's commit does), whatever happens to the connection."""
        self.inflight += 1  # (settled by _on_commit, or by _create's refusal)
        task = asyncio.ensure_future(self._create(commit))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _create(self, commit: Commit) -> None:
        """Store ``commit`` (a ``Create``) only if the room, caught up with the store,
        holds nothing its client had not seen (``commit.seen``), and the document's head
        is still the room's cursor when its group commit runs (``Append.expect``,
        checked in the batch's transaction): so of two devices that created the
        document at the same moment, through this instance or two, the first is stored
        and the other refused, and that one decides again. A moved head is caught up
        with, then tried again. One ``Create`` at a time per room: the room has applied
        the one stored before the next is looked at. (The catch-up before the first try
        could go, the head check catching a room behind the store: no faster measured.)"""
        assert self.room is not None and self.session is not None and commit.seen is not None
        room, seen, item = self.room, commit.seen, self._item(commit)
        async with room.creating:
            for _ in range(CREATE_TRIES):
                try:
                    await self.writer.settled()
                    if not await self.rooms.catch_up_to_head(room):
                        raise StoreError("store unavailable; try again")
                    if _beyond(state_vector_clocks(room.state_vector()), seen):
                        break
                    stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                    done = functools.partial(self._created, commit, stored)
                    self.writer.submit_with(item._replace(expect=Expect(room.cursor)), done)
                except Exception as exc:  # a task boundary: the client is told, as for any commit
                    self._on_commit(commit, None, exc)
                    return
                if await stored:
                    return
        self.inflight -= 1
        self.room_free.set()
        self._act_now(self.session.created_meanwhile(commit))

    def _created(
        self,
        commit: Commit,
        stored: asyncio.Future[bool],
        appended: Appended | None,
        error: BaseException | None,
    ) -> None:
        """The writer's answer to a ``Create``: applied to the room as any commit, in
        commit order with the rest of its batch; ``stored`` False when the head moved
        (nothing was stored)."""
        moved = isinstance(error, HeadMoved)
        if not moved:
            self._on_commit(commit, appended, error)
        if not stored.done():  # (cancelled when the server stops)
            stored.set_result(not moved)

    def _on_commit(
        self, commit: Commit, appended: Appended | None, error: BaseException | None
    ) -> None:
        """Called by the writer once ``commit`` is durable (or failed)."""
        self.inflight -= 1
        self.room_free.set()
        session = self.session
        assert session is not None and self.room is not None
        if error is not None or appended is None:
            self._act_now(session.failed(commit, error or StoreError("commit failed")))
            return
        session.landed(commit)  # applied just below (or refused): no longer in flight
        try:
            # The room this connection joined, or its successor if it was unloaded meanwhile.
            assert self.ref is not None
            room = self.rooms.get(self.ref) or self.room
            online = commit.branch is None  # a branch is judged whole, when it ends
            compare = online and session.weft > 0  # a device's: see crdt.sameonline
            if (
                room.apply_local(
                    commit.update, appended, self.conn.id, commit.frame, compare=compare
                )
                and online
            ):
                self._edited_deleted(room, appended)
            copies = room.take_copies() if compare else None
            if copies is not None:
                self._keep_once(copies)
            self.metrics.fanout_latency.observe(time.monotonic() - commit.received)
            if session.weft or commit.branch is not None:  # else: nothing to acknowledge
                self._act_now(session.committed(commit, appended))
        except ValueError as exc:  # ydoc.UnusableUpdate: it decoded, yet cannot be integrated
            log.warning("connection %d: %s", self.conn.id, printable(exc), extra=self.extra)
            self.metrics.refusals.inc(label="unusable_update")
            self._stop(CLOSE_INVALID, "update cannot be integrated into the document")
        except Exception:  # a callback boundary: the update is durable; the client resends
            log.error("after committing for connection %d", self.conn.id, exc_info=True)
            self._stop(CLOSE_INTERNAL, "internal server error")

    def _branch_end(self, end: BranchEnd) -> None:
        """Have the branch checked (the ``on_branch`` hook) and, for a client of
        extension version 2, say the verdict (``Checked``) once there is one."""
        hook = self.app[ON_BRANCH]
        if hook is None or self.ref is None or not end.appended:
            self._verdict(None)
            return
        try:
            result = hook(self.ref, end.base, list(end.appended), self.principal, self.device)
        except Exception:
            log.error("on_branch hook failed", exc_info=True, extra=self.extra)
            self._verdict(CHECK_FAILED)
            return
        if not inspect.isawaitable(result):
            self._verdict(result)
            return
        task = asyncio.ensure_future(result)
        _background.add(task)
        task.add_done_callback(_hook_done)
        task.add_done_callback(self._verdict_of)

    def _edited_deleted(self, room: Room, appended: Appended) -> None:
        """This connection's update changed the text of a document flagged deleted: have
        it judged (the ``on_edit_deleted`` hook), once per deletion, and tell a client of
        extension version 3 about a record made (``Conflict``)."""
        key = (id(room), room.deletions)
        hook = self.app[ON_EDIT_DELETED]
        if hook is None or self.ref is None or self.judged == key or self.session is None:
            return
        self.judged = key
        editor = Editor(
            self.principal.user,
            self.device or str(self.conn.id),
            self.device,
            self.session.announced,
        )
        task = asyncio.ensure_future(hook(self.ref, appended.versionstamp, editor))
        _background.add(task)
        task.add_done_callback(_hook_done)
        task.add_done_callback(self._conflict_of)

    def _conflict_of(self, task: asyncio.Future[Any]) -> None:
        session = self.session
        if task.cancelled() or task.exception() is not None or session is None:
            return
        record = task.result()
        if not isinstance(record, ConflictRecord):
            return
        if session.weft < 3 or session.closed or self.conn.closing:
            return
        message = Conflict(Versionstamp.from_hex(record.id), record.summary()[:500])
        self.conn.send(codec.encode(message))

    def _verdict_of(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._verdict(CHECK_FAILED)
        else:
            self._verdict(task.result())

    def _verdict(self, record: ConflictRecord | str | None) -> None:
        """Send ``Checked`` for a record, for no conflict (``None``), or for a check that
        failed (a reason), if the client speaks version 2 and is still connected."""
        session = self.session
        if session is None or session.weft < 2 or session.closed or self.conn.closing:
            return
        if isinstance(record, ConflictRecord):
            message = Checked(Versionstamp.from_hex(record.id), record.summary()[:500])
        else:
            message = Checked(ZERO, record or "")
        self.conn.send(codec.encode(message))


def _beyond(clocks: dict[int, int], seen: dict[int, int]) -> bool:
    """Whether a state vector's ``clocks`` hold anything past ``seen``'s."""
    return any(clock > seen.get(client, 0) for client, clock in clocks.items())


CHECK_FAILED = "the server could not check this offline branch for conflicts (see its log)"
_background: set[asyncio.Future[Any]] = set()


def _hook_done(task: asyncio.Future[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("a conflict hook failed", exc_info=task.exception())
