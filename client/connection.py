"""One document's link to the server: a WebSocket room, kept up while it is wanted.

Per connection (``ws://H:P/ws/{tenant}/{project}/{path}?weft=4``):

1. the server sends ``Hello`` and ``SyncStep1`` (its state vector); we send
   ``SyncStep1`` with ours, and the server's ``SyncStep2`` brings what we lacked. Our
   ``SyncStep2`` carries the outbox (merged); with an empty outbox it carries whatever
   the server lacks — nothing, unless the server lost acknowledged updates. When the
   server's state vector shows it lacks more than the outbox (restored from an older
   backup), it carries everything the server lacks, outbox included, as one send and
   no offline branch (see ``_answer_restored``);
2. if local updates were waiting when the connection opened, they are an offline
   branch: ``Base(base)`` goes first (the last server versionstamp this device had seen
   when it made them), then the outbox, merged; once every update is acknowledged
   ``Base(ZERO)`` ends the branch, and the server checks it for conflicts (a server
   of extension version 2 answers ``Checked``: the conflict recorded, if any, which the
   device reports; a sync waits for it);
   a server of extension version 3 also sends ``Conflict`` when an update sent online
   was recorded as a conflict (an edit of a document deleted elsewhere meanwhile);
   to a server of extension version 4 a new file's document is sent as ``Create``
   (see :meth:`DocLink.create`), not through the outbox;
3. every ``Ack`` moves the outbox cursor (and, once nothing else waits, asks for a probe
   of its versionstamp, see 4); ``Refused`` with 4403 means a read-only token: the
   device keeps its edits and stops sending;
4. the device's poller may ask for a probe (``SyncStep1`` again): the reply tells that
   everything up to the head it read before asking is here, which moves ``base``. Server
   updates the base may not cover (a live ``SyncUpdate``; an answer, which can reach past
   the head its probe proves; the server's state with no head known) have the device
   read the heads (at its next poll; without a frequent poller once the link has been
   quiet for ``CONFIRM_DELAY``; at once while it syncs), and a probe for the head read
   follows: the base never lags long behind what the device has seen (see
   ``DocEntry.received``). An answer that holds only deletions the document has is no
   such update.

When the connection fails the link reports it and waits until the device is online
again (the device probes the server with exponential backoff and jitter); errors that
another attempt cannot fix (bad path, bad token) stop the link and are reported. A
refusal by the tenant's connection quota (4429 before the server's state came) is
retried with backoff for as long as it takes, unless the device has a
``quota_patience`` (``weft sync --once``): see ``Device.turned_away``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import aiohttp

from client.backoff import Backoff
from crdt import codec, ydoc
from crdt.codec import (
    WEFT_EXTENSION_VERSION,
    Ack,
    AuthDenied,
    Base,
    Checked,
    Conflict,
    Create,
    Hello,
    Message,
    Refused,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from crdt.errors import ProtocolError
from crdt.history import update_hash
from crdt.versionstamp import ZERO, Versionstamp

if TYPE_CHECKING:
    from client.device import Device, DocEntry

log = logging.getLogger("weft.client")

EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE_VECTOR = b"\x00"
HEARTBEAT_SECONDS = 20.0
CONNECT_TIMEOUT = aiohttp.ClientWSTimeout(ws_close=5.0)
MAX_INFLIGHT_SENDS = 8
CONFIRM_DELAY = 0.5  # quiet seconds after the last ack (or server update) before a probe
CODE_READ_ONLY = 4403
CODE_TOO_BIG = 1009
# 4429: a tenant quota (update rate, connections) refused us for now; the updates not
# acknowledged are sent again on the next connection.
CODE_QUOTA = 4429
SETTLE_BY_POLL = 2.0  # a device polling this often reads the heads for a lagging base anyway
# max-backoff intervals weft sync --once waits for room under the connection quota, and
# for a server it cannot reach (a running weft sync waits for as long as it takes:
# Device.quota_patience, Device.offline_patience)
QUOTA_PATIENCE = 6
RETRY_LATER = {1008, 1011, 1013, 1014, CODE_QUOTA}
SERVER_GONE = {None, 1001, 1006, 1012}
FATAL_FOR_DEVICE = {4401, 4403}


class _Unreachable(Exception):
    pass


class DocLink:
    """The connection task of one document (see the module docstring)."""

    def __init__(self, device: Device, entry: DocEntry) -> None:
        self.device = device
        self.entry = entry
        self.wanted = False
        self.task: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ready = False  # the server's SyncStep1 arrived on the current connection
        self.server_sv: bytes | None = None  # its state vector, until we answered it
        # Updates the server sent after that state vector, before our answer: it has
        # them, though its state vector does not say so (see _answer_restored).
        self.sent_since: list[bytes] = []
        # Probes sent, oldest first: the head each answer proves, and the number of the
        # heads read it came from (0: none, e.g. an ack's versionstamp).
        self.probes: deque[tuple[Versionstamp | None, int]] = deque()
        # The last acked versionstamp, to be proven by a probe once the link has been
        # quiet for CONFIRM_DELAY (or at once while the device syncs): see confirm_later.
        self.confirm: Versionstamp | None = None
        self.confirm_at = 0.0
        # The heads read asked for a base that lags behind server updates received, once
        # the link has been quiet (see settle_later).
        self.settling: asyncio.TimerHandle | None = None
        # The code of the refusal said since the server last took an update of this
        # document (a store failing refused every retry: one line each, all day long)
        self.refusal_said: int | None = None
        self.branch_open = False
        self.branch_done = False
        self.offline_pending = False
        # The extension version the server said it speaks (its Hello), and the offline
        # branches this connection ended whose conflict verdict (Checked) is still due:
        # a sync waits for them, so a conflict is said before it returns.
        self.server_weft = 0
        self.verdicts = 0
        # Creates sent on this connection, by their update's hash: answered with the
        # versionstamp (Ack) or the refusal (see create).
        self.creations: dict[bytes, asyncio.Future[Versionstamp | Refused]] = {}
        self.error: str | None = None
        self.last_activity = time.monotonic()
        self._control: deque[Message] = deque()
        self._wake = asyncio.Event()
        self._slot_held = False

    # --- control --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed and self.ready

    def want(self) -> None:
        """Keep this link connected (start its task if it is not running)."""
        if self.error is not None or self.device.stopping:
            return
        self.wanted = True
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"weft-link-{self.entry.path}")

    def wake(self) -> None:
        """Something changed (outbox, read-only state): send what can be sent."""
        self._wake.set()
        if not self.wanted:
            self.want()

    def confirm_later(self, vs: Versionstamp) -> None:
        """Every local update is acknowledged, the last at ``vs``: an ack is no proof that
        every update before it is here (another instance's may still be on its way), so
        a probe for ``vs`` moves the base. Sent once the link has been quiet for
        ``CONFIRM_DELAY`` (a burst of edits costs one probe) or at once while the device
        syncs."""
        if self.confirm is None or vs > self.confirm:
            self.confirm = vs
        self.confirm_at = time.monotonic() + CONFIRM_DELAY
        self._wake.set()

    def settle_later(self) -> None:
        """Server updates the base may not cover are here: read the heads (a probe for the
        head read follows, see ``Device._follow``) at once while the device syncs; else
        the device's next poll does (when it polls at least every ``SETTLE_BY_POLL``
        seconds: a read per document and pause made ~3 reads/s of the whole document
        list with 20 documents changing), or a read once the link has been quiet for
        ``CONFIRM_DELAY`` (someone typing costs one read per pause)."""
        if self.settling is not None:
            self.settling.cancel()
        self.settling = None
        if self.device.syncing:
            self._settle()
        elif self.device.poll_seconds is None or self.device.poll_seconds > SETTLE_BY_POLL:
            self.settling = asyncio.get_running_loop().call_later(CONFIRM_DELAY, self._settle)

    def _settle(self) -> None:
        self.settling = None
        if self.entry.base_due():
            self.device.want_heads()

    def hurry(self) -> None:
        """The device syncs: send a pending confirming probe, or read the heads for a
        lagging base, now (and give the base ``MAX_BASE_ROUNDS`` more heads reads)."""
        self.entry.base_rounds = 0
        if self.confirm is not None:
            self._wake.set()
        if self.settling is not None:
            self.settling.cancel()
            self.settling = None
        if self.entry.base_due():  # (also a mark an earlier, failed read left)
            self._settle()

    def _maybe_confirm(self) -> float | None:
        """Send the confirming probe if due; else the seconds until it is (None: none)."""
        if self.confirm is None:
            return None
        entry = self.entry
        if len(entry.outbox) or entry.unrecorded_local:
            self.confirm = None  # more to send: its acks bring a newer one
            return None
        wait = self.confirm_at - time.monotonic()
        if wait > 0 and not self.device.syncing:
            return wait
        head, self.confirm = self.confirm, None
        self.probe(head)
        return None

    def probe(self, head: Versionstamp | None, read: int = 0) -> None:
        """Ask the server for what we lack; its answer proves we hold ``head`` (from heads
        read number ``read``, 0 if none)."""
        if self.connected:
            self.probes.append((head, read))
            self._control.append(SyncStep1(self.entry.doc.get_state()))
            self._wake.set()

    @property
    def speaks_create(self) -> bool:
        """Whether the server (of the current connection, or else of the last one) takes
        a ``Create``: extension version 4 or later."""
        return self.server_weft >= 4

    async def create(self, state_vector: bytes, update: bytes) -> Versionstamp | Refused:
        """Send ``update``, which makes the document (or brings it back), as a ``Create``
        decided on the state ``state_vector``: the server stores it only if it holds
        nothing past that state. Its versionstamp once stored, or the server's refusal
        (``codec.CREATED_MEANWHILE``: the document changed meanwhile, and what changed
        it came before the refusal). ``ConnectionError`` if the connection ends first."""
        if not self.connected:
            raise ConnectionError("not connected")
        digest = update_hash(update)
        answer: asyncio.Future[Versionstamp | Refused] = asyncio.get_running_loop().create_future()
        self.creations[digest] = answer
        self._control.append(Create(state_vector, update))
        self._wake.set()
        try:
            return await answer
        finally:
            self.creations.pop(digest, None)

    async def disconnect(self) -> None:
        """Close the current connection (the link reconnects once the device is online)."""
        ws = self.ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close(code=1000, message=b"device going offline")

    async def stop(self) -> None:
        """Close for good."""
        self.wanted = False
        if self.settling is not None:
            self.settling.cancel()
            self.settling = None
        await self.disconnect()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    # --- connection loop ------------------------------------------------------------

    def nudge(self) -> None:
        """Have the sender look again at whether the link is idle."""
        self._wake.set()

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        finally:
            self.device.let_in(self.entry)
            self.entry.link_changed.set()
            self.device.listener.link_closed(self.entry.path)

    async def _connect_loop(self) -> None:
        backoff = Backoff(
            initial=min(0.1, self.device.max_backoff), maximum=self.device.max_backoff
        )
        turned_away: float | None = None  # since when the connection quota refuses us
        while self.wanted and not self.device.stopping:
            await self.device.wait_online()
            if not self.wanted:
                break
            try:
                code, reason, synced = await self._connect_and_serve()
            except _Unreachable as exc:
                self.device.report_unreachable(str(exc))
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a task boundary: log with traceback, retry later
                log.error("link %s failed", self.entry.path, exc_info=True)
                code, reason, synced = 1011, f"client error: {exc!r}", False
            if synced and code not in RETRY_LATER:
                # (a connection that synced, then was refused, e.g. over the tenant's
                # update rate, backs off: reset, it reconnected every 0.1 s)
                backoff.reset()
            if code == CODE_QUOTA and not synced:  # the connection quota: no room yet
                now = time.monotonic()
                patience = self.device.quota_patience
                self.device.turned_away(self.entry, reason)  # (said once per device)
                if turned_away is None:
                    turned_away = now
                elif (
                    patience is not None and self.device.syncing and now - turned_away > patience
                ):  # a sync (weft sync --once) must end: say which file and why
                    self.error = (
                        f"closed by the server ({code}): {reason}; "
                        f"still refused after {now - turned_away:.0f} s"
                    )
                    self.wanted = False
                    self.device.doc_failed(self.entry, self.error)
                    return
            elif synced:
                turned_away = None
            if not self.wanted or self.device.stopping or self.device.paused:
                continue
            if code in FATAL_FOR_DEVICE:
                self.device.fail(code, reason or "refused by the server")
                return
            if code in SERVER_GONE:
                self.device.report_unreachable(f"connection closed ({code}) {reason}".strip())
            elif (
                code in RETRY_LATER
                or code == 1000
                or (code == CODE_TOO_BIG and self.entry.outbox.unmerge())
            ):  # too big: merged sends may each fit, sent one update at a time
                delay = backoff.next()
                log.info("%s: closed %s %s; retry in %.1f s", self.entry.path, code, reason, delay)
                await asyncio.sleep(delay)
            else:
                self.error = f"closed by the server ({code}): {reason}"
                self.wanted = False
                self.device.doc_failed(self.entry, self.error)
                return

    def _params(self) -> dict[str, str]:
        """Acks and conflict verdicts on (weft=2), and who this device is, so the server
        never judges this device's offline branch a conflict with its own earlier
        updates."""
        device_id = self.device.device_id
        weft = str(WEFT_EXTENSION_VERSION)
        return {"weft": weft, "device": device_id} if device_id else {"weft": weft}

    async def _connect_and_serve(self) -> tuple[int | None, str, bool]:
        device, entry = self.device, self.entry
        head_before = device.heads.get(entry.path)
        await device.connect_slots.acquire()
        self._slot_held = True
        try:
            try:
                ws = await device.http.ws_connect(
                    device.server.room(device.tenant, device.project, entry.path),
                    params=self._params(),
                    headers=device.headers,
                    heartbeat=HEARTBEAT_SECONDS,
                    max_msg_size=0,
                    timeout=CONNECT_TIMEOUT,
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    return 4401 if exc.status == 401 else 4403, exc.message, False
                raise _Unreachable(f"handshake refused: {exc.status} {exc.message}") from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise _Unreachable(str(exc) or type(exc).__name__) from exc
            return await self._serve(ws, head_before)
        finally:
            self._release_slot()

    def _release_slot(self) -> None:
        if self._slot_held:
            self._slot_held = False
            self.device.connect_slots.release()

    async def _serve(
        self, ws: aiohttp.ClientWebSocketResponse, head_before: Versionstamp | None
    ) -> tuple[int | None, str, bool]:
        entry = self.entry
        entry.outbox.reset()
        self.ws, self.ready, self.error, self.server_sv = ws, False, None, None
        self.branch_open = self.branch_done = False
        self.server_weft = self.verdicts = 0
        self.offline_pending = len(entry.outbox) > 0 or entry.unrecorded_local > 0
        # The first answer proves every head this device has heard of: the server catches
        # the room up to the store's head first (and what it acked is durable), so a
        # probe the last connection left unanswered is answered here too.
        known = [h for h in (head_before, entry.head_seen) if h is not None]
        self.probes = deque([(max(known) if known else None, 0)])
        self.confirm = None
        self.server_had_state = False
        self._control = deque([SyncStep1(entry.doc.get_state())])
        self._wake.set()
        synced = False
        sender = asyncio.create_task(self._sender(ws), name=f"weft-send-{entry.path}")
        reason = ""
        try:
            while True:
                msg = await ws.receive()
                self.last_activity = time.monotonic()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    try:
                        message = codec.decode(msg.data)
                    except ProtocolError as exc:
                        log.error("%s: bad frame from the server: %s", entry.path, exc)
                        await ws.close(code=exc.close_code, message=b"bad frame")
                        return exc.close_code, str(exc), synced
                    synced = self._receive(message) or synced
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    reason = str(msg.extra or "")
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = str(ws.exception() or "")
                    break
        finally:
            sender.cancel()
            # A sender that failed to write (the server closed at once, e.g. 4429) is
            # no error of its own: the close code the reader saw says what happened.
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, aiohttp.ClientError):
                await sender
            current = asyncio.current_task()
            if not ws.closed and not (current is not None and current.cancelling()):
                # The sender closes an idle link with ws.close(), which first stops this
                # reader's receive(); cancelled right after (above), that close never
                # sent its frame nor closed the socket: the server kept the connection
                # (counted against the tenant's quota, its room loaded) until the device
                # stopped. Finish the close here (bounded by CONNECT_TIMEOUT's ws_close).
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await ws.close(code=1000, message=b"idle" if not self.wanted else b"")
            self.ws, self.ready = None, False
            for answer in self.creations.values():
                if not answer.done():
                    answer.set_exception(ConnectionError("connection closed"))
            entry.synced.clear()
            entry.link_changed.set()
            entry.outbox.reset()
            self._release_slot()
            self.device.changed()
        return ws.close_code, reason, synced

    # --- receiving ------------------------------------------------------------------

    def _receive(self, message: Message) -> bool:
        """Act on one server message; True once the server's state has been received."""
        entry, device = self.entry, self.device
        match message:
            case SyncStep1(state_vector=sv):
                device.accepted()
                device.let_in(entry)
                self.ready = True
                self.server_sv = sv
                self.sent_since = []
                self.server_had_state = self.server_had_state or sv != EMPTY_STATE_VECTOR
                self._wake.set()
            case SyncStep2(update=update):
                head, read = self.probes.popleft() if self.probes else (None, 0)
                # An answer with news may reach past ``head``; most answers are only
                # the document's delete set (Yjs answers so), which is no news.
                # (Not applied either: it would change nothing, yet be recorded in the
                # local history at every probe.)
                news = update != EMPTY_UPDATE and not ydoc.adds_nothing(entry.doc, update)
                if news and self.server_sv is not None and not device.read_only:
                    self.sent_since.append(update)  # (see _answer_restored)
                applied = not news or device.apply_remote(entry, update)
                if news or (head is None and self.server_had_state):
                    entry.received()
                if applied:  # (one that did not apply is not held: the base stays)
                    entry.seen(head, read)
                entry.synced.set()
                entry.link_changed.set()
                self._release_slot()
                device.changed()
                return True
            case SyncUpdate(update=update):
                if self.server_sv is not None and not device.read_only:  # _answer_restored
                    self.sent_since.append(update)
                device.apply_remote(entry, update)
                entry.received()
                self.settle_later()
            case Ack(update_hash=digest, versionstamp=vs) if digest in self.creations:
                self.refusal_said = None
                _answer(self.creations[digest], vs)
            case Refused(update_hash=digest, code=codec.CREATED_MEANWHILE) if (
                digest in self.creations
            ):
                _answer(self.creations[digest], message)
            case Ack(update_hash=digest, versionstamp=vs):
                self.refusal_said = None
                if entry.outbox.ack(digest, vs) is not None:
                    entry.acked(vs)
                    self._wake.set()
                    device.changed()
            case Refused(update_hash=digest, code=code, reason=reason):
                if digest in self.creations:
                    _answer(self.creations[digest], message)
                if code == CODE_READ_ONLY:
                    device.set_read_only(reason)
                elif code == CODE_TOO_BIG and entry.outbox.merged(digest):
                    # not said: its updates are sent again one at a time (each refusal
                    # of one of those is), so one update was said to be refused twice
                    log.info("%s: a merged send refused (%s); unmerging", entry.path, reason)
                elif self.refusal_said != code:  # said once until an update is taken
                    self.refusal_said = code
                    if code == CODE_QUOTA:  # over the update rate
                        device.warn(entry.path, f"{entry.path}: {reason} (4429); sending again")
                    else:
                        again = "; sending again" if code in RETRY_LATER else ""
                        device.warn(
                            entry.path,
                            f"{entry.path}: update refused by the server ({code}): {reason}"
                            + again,
                        )
            case AuthDenied(reason=reason):
                log.info("%s: %s", entry.path, reason)
            case Hello(version=version):
                self.server_weft = version
            case Checked(conflict=cid, summary=summary):
                self.verdicts = max(0, self.verdicts - 1)
                if cid != ZERO:
                    device.branch_conflict(entry, cid.hex(), summary)
                elif summary:
                    device.warn(entry.path, f"{entry.path}: {summary}")
                device.changed()
            case Conflict(conflict=cid, summary=summary):
                # An edit sent online met a deletion made meanwhile elsewhere: said as
                # an offline branch's conflict is, but it answers no Base (no verdict
                # was awaited for it).
                device.branch_conflict(entry, cid.hex(), summary)
            case _:
                pass  # awareness is for editors; a sync device has no cursor to show
        return False

    # --- sending --------------------------------------------------------------------

    async def _sender(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            idle = self.device.link_idle_seconds  # (shorter while the quota turns links away)
            timeout = None if idle is None else max(idle / 2, 0.05)
            due = self._maybe_confirm()
            if due is not None:
                timeout = due if timeout is None else min(timeout, due)
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as the
            # wait ends (woken, e.g. nudged by Device.turned_away), and the reader, which
            # cancels this sender when its connection closes (a 4429 refusal), waited
            # for it for ever: weft sync --once hung. asyncio.timeout lets it through.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            self._maybe_confirm()
            while self._control:
                await self._send(ws, self._control.popleft())
            if self.ready:
                await self._flush(ws)
                if idle is not None and self._idle(idle):
                    self.wanted = False
                    await ws.close(code=1000, message=b"idle")
                    return

    async def _flush(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send what the outbox holds; the first send answers the server's SyncStep1."""
        entry = self.entry
        outbox = entry.outbox
        if self.device.read_only:
            return
        if self.server_sv is not None:
            if entry.unrecorded_local:
                return  # answered once recorded (the recorder wakes this link)
            if await self._answer_restored(ws):
                return
        while outbox.inflight < MAX_INFLIGHT_SENDS:
            send = outbox.take()
            if send is None:
                break
            if self.offline_pending and not self.branch_done:
                self.branch_done = True
                if entry.base is not None:
                    await self._send(ws, Base(entry.base))
                    self.branch_open = True
            if self.server_sv is not None:
                self.server_sv, self.sent_since = None, []
                await self._send(ws, SyncStep2(send.update))
            else:
                await self._send(ws, SyncUpdate(send.update))
        if self.server_sv is not None:
            # Nothing waits in the outbox: answer with whatever the server lacks (nothing,
            # unless it lost acknowledged updates, e.g. restored from an older backup).
            missing = entry.doc.get_update(self.server_sv)
            self.server_sv, self.sent_since = None, []
            await self._send(ws, SyncStep2(missing))
        if self.branch_open and len(outbox) == 0 and entry.unrecorded_local == 0:
            self.branch_open = False
            if self.server_weft >= 2:
                self.verdicts += 1
            await self._send(ws, Base(ZERO))

    async def _answer_restored(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Answer the server's SyncStep1 with everything it lacks, outbox included, when
        its state vector shows it lacks more than the outbox: acknowledged updates (of
        this device or others), lost to a restore from an older backup. The outbox's
        updates alone depend on those, and the server would hold them pending for ever
        while this device counted them acknowledged. True if so answered. What the server
        sent after its state vector (another device's edit, broadcast while this answer
        waited for the recorder) is no loss: taken for one, two devices syncing offline
        edits at the same moment made one of them send its branch as a restore's, with
        no base, and an overlap of the two went unrecorded (an audit: 2 rounds in 15).

        Sent as one send covering the whole outbox (its ack moves the cursor over it),
        and as no offline branch: the base names a version of a history the server no
        longer has."""
        entry = self.entry
        assert self.server_sv is not None
        if not entry.outbox.unsent:
            return False
        missing = entry.doc.get_update(self.server_sv)
        try:
            if entry.outbox.covers(missing, self.sent_since):
                return False
        except ValueError:  # (ydecode.UpdateDecodeError) our own doc's: never seen
            log.exception("%s: comparing with the server's state failed", entry.path)
            return False
        send = entry.outbox.take_all(missing)
        assert send is not None
        self.server_sv, self.sent_since = None, []
        self.branch_done = True
        self.device.warn(
            entry.path,
            f"{entry.path}: the server lacks updates it had acknowledged (restored from "
            "a backup?); sending them again",
        )
        await self._send(ws, SyncStep2(send.update))
        return True

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, message: Message) -> None:
        self.last_activity = time.monotonic()
        await ws.send_bytes(codec.encode(message))

    def _idle(self, idle: float) -> bool:
        entry = self.entry
        return (
            entry.synced.is_set()
            and not self.probes
            and self.confirm is None
            and self.settling is None
            and not entry.base_awaited()
            and not self.branch_open
            and not self.verdicts
            and len(entry.outbox) == 0
            and entry.unrecorded == 0
            and not self.device.listener.busy(entry.path)
            and time.monotonic() - self.last_activity >= idle
        )


def _answer(future: asyncio.Future[Versionstamp | Refused], value: Versionstamp | Refused) -> None:
    if not future.done():
        future.set_result(value)
