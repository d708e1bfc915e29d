"""One connection's protocol logic as a state machine: frames in, actions out (sans-I/O).

The WebSocket handler (:mod:`server.ws`) feeds it frames and commit results and carries
out the actions it returns; it never looks inside a message itself. Everything a
connection may or may not do is decided here, read-only enforcement included:

- on open: ``SyncStep1`` with the room's state vector and the current awareness states
  (and ``Hello`` first for a weft client that opted in with ``?weft=N``);
- ``SyncStep1`` → ``SyncStep2`` with what the peer lacks (one shared encoding of the whole
  document for an empty state vector);
- ``SyncStep2``/``SyncUpdate`` → validated (decodes; size, document-size and rate quotas)
  then :class:`Commit`; a read-only token gets the y-protocols permission-denied message
  instead (and, for weft clients, ``Refused``), and nothing is stored;
- ``Awareness`` → :class:`Relay` to the room (never stored); ``QueryAwareness`` → states;
- weft extension: ``Hello`` opts in to ``Ack``/``Refused``; ``Base(vs)`` starts an offline
  branch on ``vs`` (``Base(ZERO)`` ends it); a branch also ends when the connection
  closes, and :class:`BranchEnd` reports it once all of its updates are committed;
  ``Create(sv, update)`` is validated as an update is, then a :class:`Commit` that
  names ``sv`` (the handler stores it only if the room holds nothing the client had
  not seen, see :meth:`Session.created_meanwhile`).
"""

from __future__ import annotations

from collections.abc import KeysView
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from pycrdt import get_state

from crdt import codec, ydoc
from crdt.codec import (
    CREATED_MEANWHILE,
    SYNC_UPDATE,
    Ack,
    AuthDenied,
    Awareness,
    AwarenessEntry,
    Base,
    Checked,
    Conflict,
    Create,
    Hello,
    Message,
    QueryAwareness,
    Refused,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from crdt.errors import ProtocolError, QuotaExceeded, StoreError, WeftError
from crdt.history import Appended, update_hash
from crdt.records import state_vector_clocks
from crdt.versionstamp import ZERO, Versionstamp
from server.quotas import Quotas

WEFT_VERSION = codec.WEFT_EXTENSION_VERSION
EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE_VECTOR = b"\x00"
CLOSE_PROTOCOL = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_STORE = 1011
CLOSE_TOO_BIG = 1009
CODE_READ_ONLY = 4403
CLOSE_QUOTA = 4429
MAX_AWARENESS_STATE = 32 * 1024
"""Bytes of one client's awareness state (a cursor, a name, a colour: usually < 1 kB)."""
MAX_AWARENESS_CLIENTS = 8
"""Awareness client ids one connection may hold (a y-websocket provider uses one). With the
state bound, this bounds the awareness memory a connection can make the room keep."""
READ_ONLY_REASON = "read-only token: updates are not accepted"


class RoomView(Protocol):
    """What a session reads from its room (all in memory, no I/O), and the one thing it
    counts there: ``inflight``."""

    @property
    def size(self) -> int: ...

    inflight: int
    """Bytes of updates this instance's sessions accepted for the room and that are not
    applied yet (in the writer's queue or its transaction): counted against the
    document-size quota with ``size``, which grows only once an update is applied."""

    def state_vector(self) -> bytes: ...

    def sync_step2_frame(self, state_vector: bytes) -> bytes:
        """The encoded SyncStep2 frame answering ``state_vector``; ValueError if it does
        not decode."""
        ...

    def awareness_payload(self) -> bytes | None: ...

    def awareness_clock(self, client: int) -> int | None:
        """The clock of the state the room holds for awareness ``client`` (None: none)."""
        ...

    @property
    def cursor(self) -> Versionstamp | None:
        """The versionstamp up to which the room holds the document's log."""
        ...

    def holds_deletions(self, update: bytes) -> bool:
        """Whether ``update`` carries no struct and only deletions the room has."""
        ...


# --- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``message`` to this connection."""

    message: Message


@dataclass(frozen=True)
class SendFrame:
    """Send an already encoded frame to this connection."""

    frame: bytes


@dataclass(frozen=True)
class Wait:
    """Pause reading from this connection (rate quota backpressure)."""

    seconds: float


@dataclass(slots=True)
class Commit:
    """Commit ``update`` durably; report the outcome with ``committed``/``failed``.

    ``frame``: the update as a frame for the room's other peers, when the client's own
    frame is that already (a canonical update frame: relayed as it came), else ``None``.
    ``seen``: for a ``Create``, the clocks of the state its client decided on (stored
    only if the room holds nothing past them, see ``Session.created_meanwhile``).
    Not frozen, unlike the other actions: one is made per update, and a frozen
    dataclass's ``__init__`` costs about four times as much (``object.__setattr__`` per
    field), which counted at thousands of updates a second. Nothing changes it.
    """

    update: bytes
    hash: bytes
    branch: int | None
    received: float
    frame: bytes | None = None
    seen: dict[int, int] | None = None


@dataclass(frozen=True)
class Relay:
    """Relay an awareness update (exact bytes) to the room's peers.

    ``own``: the clients of ``entries`` this connection controls (its states, their
    removals); the others are echoes of states the room already has, as y-websocket
    re-sends every state it receives: not this connection's to publish, and a removal
    of a client another connection controls is ignored (``Room.relay``).
    """

    payload: bytes
    entries: tuple[AwarenessEntry, ...]
    own: tuple[int, ...]


@dataclass(frozen=True)
class Close:
    """Close this connection with ``code`` and ``reason``; read nothing more."""

    code: int
    reason: str


@dataclass(frozen=True)
class Refusal:
    """Count a refusal (metrics label ``reason``)."""

    reason: str


@dataclass(frozen=True)
class BranchEnd:
    """An offline branch made on ``base`` is complete: these are its committed updates."""

    base: Versionstamp
    appended: tuple[Appended, ...]


Action: TypeAlias = Send | SendFrame | Wait | Commit | Relay | Close | Refusal | BranchEnd


@dataclass
class _Branch:
    base: Versionstamp
    appended: list[Appended] = field(default_factory=list)
    pending: int = 0
    ended: bool = False


class Session:
    """The protocol state of one connection to one room (see the module docstring)."""

    def __init__(
        self,
        room: RoomView,
        *,
        tenant: str,
        can_write: bool,
        quotas: Quotas,
        weft: int = 0,
        max_frame: int = codec.DEFAULT_MAX_FRAME,
    ) -> None:
        self.room = room
        self.tenant = tenant
        self.can_write = can_write
        self.quotas = quotas
        self.weft = weft
        self.max_frame = max_frame
        self.closed = False
        # Awareness clients this connection controls (see _awareness): client id -> its
        # newest clock here. A removal older than that is ignored, as the room ignores it
        # (a stale removal must not let the room keep a state this count forgot).
        self._awareness_clocks: dict[int, int] = {}
        self._hello_sent = False
        # The last state vector the client announced (its SyncStep1): what it held then,
        # evidence that an edit made later saw a deletion (see crdt.editdelete).
        self.announced: bytes | None = None
        self._branches: dict[int, _Branch] = {}
        self._branch: int | None = None
        self._next_branch = 0

    # --- inputs ------------------------------------------------------------------

    @property
    def awareness_clients(self) -> KeysView[int]:
        """The awareness clients this connection controls (not the echoes it sent):
        removed for the others when it closes."""
        return self._awareness_clocks.keys()

    def open(self) -> list[Action]:
        """What the server sends first."""
        actions: list[Action] = []
        if self.weft:
            self._hello_sent = True
            actions.append(Send(Hello(WEFT_VERSION)))
        actions.append(Send(SyncStep1(self.room.state_vector())))
        payload = self.room.awareness_payload()
        if payload is not None:
            actions.append(Send(Awareness(payload)))
        return actions

    def receive_frame(self, frame: bytes, now: float) -> list[Action]:
        """Decode one binary frame and act on it."""
        if self.closed:
            return []
        if len(frame) <= self.max_frame:
            update = codec.read_update_frame(frame)  # the usual frame, read without a Decoder
            if update is not None:
                if frame[1] == SYNC_UPDATE:
                    return self._update(update, now, frame)
                return self._update(update, now, answer=True)
        try:
            return self.receive(codec.decode(frame, max_size=self.max_frame), now)
        except ProtocolError as exc:
            return self._close(exc.close_code, str(exc), "protocol")

    def receive_text(self) -> list[Action]:
        return self._close(CLOSE_UNSUPPORTED, "text frames are not supported", "protocol")

    def receive(self, message: Message, now: float) -> list[Action]:
        """Act on one decoded message (may raise ProtocolError)."""
        if self.closed:
            return []
        match message:
            case SyncStep1(state_vector=sv):
                self.announced = sv
                return [self._sync_step2(sv)]
            case SyncStep2(update=update):
                return self._update(update, now, answer=True)
            case SyncUpdate(update=update):
                return self._update(update, now)
            case Awareness(payload=payload):
                return self._awareness(payload)
            case QueryAwareness():
                current = self.room.awareness_payload()
                return [] if current is None else [Send(Awareness(current))]
            case AuthDenied():
                return []  # a client has nothing to deny us; ignore like y-websocket
            case Hello(version=version):
                self.weft = max(self.weft, min(version, WEFT_VERSION), 1)
                if self._hello_sent:
                    return []
                self._hello_sent = True
                return [Send(Hello(WEFT_VERSION))]
            case Base(versionstamp=vs):
                return self._base(vs)
            case Create(state_vector=sv, update=update):
                return self._create(sv, update, now)
            case Ack() | Refused() | Checked() | Conflict():
                return self._close(
                    CLOSE_UNSUPPORTED,
                    "ack/refused/checked/conflict are server messages",
                    "protocol",
                )
        return []  # pragma: no cover  (every message type is matched above)

    def committed(self, commit: Commit, appended: Appended) -> list[Action]:
        """``commit`` is durable: acknowledge it (weft clients) and track its branch.
        Acknowledged after a refusal too: the connection sends its acks before the
        close frame (a connection already gone sends nothing)."""
        actions: list[Action] = []
        if self.weft:
            actions.append(Send(Ack(commit.hash, appended.versionstamp)))
        if commit.branch is not None:
            branch = self._branches[commit.branch]
            branch.appended.append(appended)
            branch.pending -= 1
            actions += self._finish_branch(commit.branch)
        return actions

    def created_meanwhile(self, commit: Commit) -> list[Action]:
        """``commit`` (a ``Create``) is not stored: the room holds updates its client had
        not seen when it decided (another device created the document, or brought it
        back, meanwhile). The client decides again on the newer state."""
        self.room.inflight -= len(commit.update)
        if self.closed:
            return []
        reason = "created or changed elsewhere meanwhile: decide again"
        return [Refusal("created_meanwhile"), Send(Refused(commit.hash, CREATED_MEANWHILE, reason))]

    def landed(self, commit: Commit) -> None:
        """``commit`` is durable and about to be applied to the room (whose ``size``
        then counts it), or cannot be: it is no longer in flight."""
        self.room.inflight -= len(commit.update)

    def dropped(self, commit: Commit) -> list[Action]:
        """``commit`` will not be stored (never handed to the writer: it was shutting
        down, or the connection ended while the update waited; or its commit failed):
        it is no longer in flight, and its branch no longer waits for it."""
        self.room.inflight -= len(commit.update)
        if commit.branch is None:
            return []
        self._branches[commit.branch].pending -= 1
        return self._finish_branch(commit.branch)

    def failed(self, commit: Commit, error: BaseException) -> list[Action]:
        """``commit`` could not be stored: the client must re-send it, on a new connection."""
        actions = self.dropped(commit)  # its branch no longer waits for it either
        if self.closed:
            return actions
        reason = str(error) if isinstance(error, WeftError) else "store unavailable"
        if self.weft:
            actions.append(Send(Refused(commit.hash, CLOSE_STORE, reason[:200])))
        return actions + self._close(CLOSE_STORE, f"update not stored: {reason}", "store")

    def close(self) -> list[Action]:
        """The connection is gone: end its branches (reported once their commits land)."""
        self.closed = True
        actions: list[Action] = []
        for number in list(self._branches):
            self._branches[number].ended = True
            actions += self._finish_branch(number)
        self._branch = None
        return actions

    # --- handlers ----------------------------------------------------------------

    def _sync_step2(self, state_vector: bytes) -> Action:
        try:
            return SendFrame(self.room.sync_step2_frame(state_vector))
        except ValueError as exc:
            raise ProtocolError(f"state vector does not decode: {exc}", CLOSE_INVALID) from exc

    def _update(
        self,
        update: bytes,
        now: float,
        frame: bytes | None = None,
        *,
        answer: bool = False,
        seen: dict[int, int] | None = None,
    ) -> list[Action]:
        if update == EMPTY_UPDATE:
            return []  # nothing to store (a fresh client's SyncStep2)
        digest = update_hash(update)
        if (
            answer
            and self._branch is None
            and self.room.cursor is not None
            and self.room.holds_deletions(update)
        ):
            # A SyncStep2 with only deletions the document has (a reconnecting peer's
            # answer: Yjs sends its whole delete set): nothing to store, however its
            # bytes differ from the last one's; a weft client gets its ack all the same.
            # Not inside an offline branch: a branch's deletions are its own edits
            # (someone else may have deleted the same text since), judged for conflicts.
            return [Send(Ack(digest, self.room.cursor))] if self.weft else []
        if not self.can_write:
            actions: list[Action] = [Refusal("read_only"), Send(AuthDenied(READ_ONLY_REASON))]
            if self.weft:
                actions.append(Send(Refused(digest, CODE_READ_ONLY, READ_ONLY_REASON)))
            return actions
        room = self.room
        try:
            # Against what is applied and what is accepted but not applied yet: updates
            # sent back to back (this connection's in flight, and other connections')
            # would each pass against the applied size alone.
            self.quotas.check_update(self.tenant, len(update), room.size + room.inflight)
            validate_update(update)
            wait = self.quotas.reserve_update(self.tenant, now)
        except QuotaExceeded as exc:
            label = {1009: "update_too_big", 4413: "doc_too_big"}.get(exc.close_code, "rate")
            refused: list[Action] = []
            if self.weft:
                refused.append(Send(Refused(digest, exc.close_code, str(exc))))
            return refused + self._close(exc.close_code, str(exc), label)
        except ProtocolError as exc:
            return self._close(exc.close_code, str(exc), "bad_update")
        branch = self._branch if seen is None else None  # (a create is decided online)
        if branch is not None:
            self._branches[branch].pending += 1
        room.inflight += len(update)  # until landed() or dropped()
        commit = Commit(update, digest, branch, now, frame, seen)
        return [Wait(wait), commit] if wait > 0 else [commit]

    def _create(self, state_vector: bytes, update: bytes, now: float) -> list[Action]:
        """A ``Create``: an update as any other (quotas, read-only), whose commit names
        the state it was decided on. Never part of an offline branch (it was decided
        online) and never a bare answer (see ``_update``)."""
        if self.weft < 4:
            return self._close(CLOSE_UNSUPPORTED, "create needs extension version 4", "protocol")
        try:
            seen = state_vector_clocks(state_vector)
        except (StoreError, ValueError) as exc:
            raise ProtocolError(f"state vector does not decode: {exc}", CLOSE_INVALID) from exc
        if update == EMPTY_UPDATE:
            raise ProtocolError("a create with an empty update", CLOSE_INVALID)
        return self._update(update, now, seen=seen)

    def _awareness(self, payload: bytes) -> list[Action]:
        """A connection controls a client id it sends that the room does not hold, or
        holds at an older clock, until it removes it. Anything else is an echo
        (y-websocket re-sends every state it receives: other peers', other instances'),
        relayed but never counted as this connection's."""
        entries = tuple(codec.decode_awareness(payload))
        clocks = self._awareness_clocks
        own: list[int] = []
        for entry in entries:
            if len(entry.state) > MAX_AWARENESS_STATE:
                return self._close(
                    CLOSE_TOO_BIG,
                    f"awareness state over {MAX_AWARENESS_STATE} bytes",
                    "awareness_too_big",
                )
            client = entry.client_id
            known = clocks.get(client)
            if known is None:
                if entry.removed:
                    continue  # not ours to remove: the room goes by its clock
                held = self.room.awareness_clock(client)
                if held is not None and entry.clock <= held:
                    continue  # an echo of a state the room has
            elif entry.clock < known:
                continue  # older than what this connection sent: the room ignores it too
            if entry.removed:
                del clocks[client]
            else:
                clocks[client] = entry.clock
            own.append(client)
        if len(clocks) > MAX_AWARENESS_CLIENTS:
            return self._close(
                CLOSE_QUOTA,
                f"more than {MAX_AWARENESS_CLIENTS} awareness clients on one connection",
                "awareness_clients",
            )
        return [Relay(payload, entries, tuple(own))]

    def _base(self, vs: Versionstamp) -> list[Action]:
        actions: list[Action] = []
        if self._branch is not None:
            self._branches[self._branch].ended = True
            actions += self._finish_branch(self._branch)
            self._branch = None
        if vs != ZERO:
            self._branch = self._next_branch
            self._next_branch += 1
            self._branches[self._branch] = _Branch(vs)
        return actions

    def _finish_branch(self, number: int) -> list[Action]:
        branch = self._branches[number]
        if not branch.ended or branch.pending > 0:
            return []
        del self._branches[number]
        if not branch.appended and (self.weft < 2 or self.closed):
            return []  # (a client of version 2 is told, even that nothing was stored)
        return [BranchEnd(branch.base, tuple(branch.appended))]

    def _close(self, code: int, reason: str, label: str) -> list[Action]:
        actions: list[Action] = [Refusal(label), Close(code, reason)]
        self.closed = True
        return actions


def validate_update(update: bytes) -> None:
    """Raise ProtocolError (1007) unless ``update`` decodes as a Yjs update (v1).

    ``get_state`` decodes the whole update (it reads every struct to compute the state
    vector) without building a document: the same verdict as applying it to an empty
    ``Doc``, at about 1/30 of the cost, which counted per update under load.
    """
    try:
        get_state(update)
    except ValueError as exc:
        raise ProtocolError(f"update does not decode: {exc}", CLOSE_INVALID) from exc
    except BaseException as exc:  # a pycrdt panic is a BaseException: refuse, do not crash
        if not ydoc.is_panic(exc):
            raise
        raise ProtocolError(f"update does not decode: {exc}", CLOSE_INVALID) from None
