"""Rooms: one loaded document, its peers and their awareness, kept in step with the store.

A room is loaded lazily (``History.replay``: latest snapshot + tail) when its first peer
joins and unloaded once it has had no peer for ``idle_seconds`` (or sooner when more than
``max_idle`` rooms sit idle), so memory stays bounded by the documents in use.

Updates reach a room two ways, both only after they are durable:

- local: the connection that received an update calls :meth:`Room.apply_local` once the
  group commit resolved; the exact bytes go to the room's other peers;
- other instances: a watcher task per room waits on the document's head key
  (``kv.watch``: FDB native, SQLite cross-process) and reads the log tail after its
  cursor; records written by this instance (their ``session`` starts with the
  instance id) are skipped, the rest are applied and broadcast to every peer.

The head also tells how many updates the doc holds (:class:`~crdt.history.Head`). A room
counts the updates up to its cursor and remembers the versionstamps of this instance's
connection commits after it (told by a ``History`` listener, before the watcher can wake
up for them), so when the head's count is the room's count plus its own commits up
to the head, nobody else wrote: the cursor moves to the head without reading the log.
That is every wake-up of a room that only this instance writes to. Anything else (an
older head without a count, another writer, or a commit the room has not heard of yet)
reads the tail as above.

Joiners with an empty state vector share one encoding of the whole document.

A room knows whether its document is flagged deleted (``weft.deleted``) without reading
anything per update: an observer on the ``weft`` map notes that an update changed it,
and only then is the flag read. While the flag is set, an observer on the text notes
that an update changed it too: :meth:`Room.apply_local` then says so, and the update is
judged as an edit of a deleted document (:mod:`crdt.editdelete`). For every other
document an update costs one list lookup more.

Each room remembers its devices' recent online text inserts (``Room.same``,
:mod:`crdt.sameonline`): a device's update that inserts a copy of what another device
inserted at the same place a moment before (the same change, made on both) is found as
it is applied (:meth:`Room.take_copies`), and the connection commits the deletion of
that copy (``server.ws``). Measured on updates like ``weft sync``'s (a line changed in
a 200-line file): ~10 µs per device update compared, ~7.5 µs per other update while
the room remembers some, 0.7 µs when it remembers none.

Awareness is relayed to the room's peers and, through :mod:`server.awareness`, to the
other instances' rooms of the same document (never stored in the history).

A room that unloads holding a document flagged deleted marks it so at its cursor
(:meth:`History.mark_deleted`, batched by the reaper), for the document list to say so
(a new device then need not open it), when its document holds exactly the log's updates
up to the cursor (:meth:`Room.deleted_at`): every update at or before the cursor came
from the replay, from the tail reader, or (this instance's own commits, which the tail
reader skips) through ``apply_local``, and none after it did. The commits the listener
told of and ``apply_local`` has not applied yet (``unapplied``), those after the cursor
(``own``, ``unseen``), an update that could not be applied, or a re-sent one applied
late, or updates applied in another order than the log's (``exact``: an own commit
applied before another instance's earlier one; yrs can leave an update that arrived
before one it depends on pending in one order and not in the other, so the room and a
replay can disagree about the flag) keep the mark unwritten. The mark is written only if the cursor is
still the head in the marking transaction; a mark the document's later changes made
old names an older head, and says nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from pycrdt import Doc, Map, Text, merge_updates

from crdt import codec, ydoc
from crdt.codec import Awareness, AwarenessEntry, SyncStep2, SyncUpdate
from crdt.history import Append, Appended, DocRef, Head, History, Record
from crdt.kv.base import read_counter
from crdt.records import holds_pending, pending_updates, state_vector_clocks
from crdt.sameonline import SameChanges
from crdt.versions import CONTENT, DELETED, META
from crdt.versionstamp import Versionstamp
from server import memory
from server.awareness import ClusterAwareness
from server.logsafe import printable
from server.metrics import Metrics
from server.session import EMPTY_STATE_VECTOR

log = logging.getLogger("weft.sync")
TAIL_PAGE = 1000
# After a wake-up, a room's watcher waits this long before watching again, so a busy
# document costs at most one wake-up (and one watch re-arm) per interval however many
# commits land; another instance's edits arrive at most this much later.
WATCH_COALESCE = 0.005
RELEASE_EVERY = 5.0  # seconds between memory releases after rooms were unloaded
_WEFT_ROOT = bytes((len(META),)) + META.encode()  # the root's name as an update writes it
PENDING_PRUNE = 64  # pending updates a room keeps before it drops those integrated since
PENDING_INLINE = 100  # updates a loading room checks for pending ones on the event loop
MAX_REMOVED = 1024  # awareness removals a room remembers (Room.removed)
MARK_BATCH = 500  # deletion marks written per transaction (Rooms.write_marks)


def _roots(doc: Doc[Any]) -> set[str]:
    """The names of the document's root types (a transaction: not for every update)."""
    return set(doc.keys())


class Peer(Protocol):
    """A connection as a room sees it: an id and a non-blocking, bounded send."""

    @property
    def id(self) -> int: ...

    def send(self, frame: bytes) -> None: ...


class Room:
    """One loaded document (see the module docstring)."""

    def __init__(
        self,
        ref: DocRef,
        doc: Doc[Any],
        cursor: Versionstamp | None,
        size: int,
        count: int | None = None,
        pending: Sequence[bytes] = (),
    ) -> None:
        self.ref = ref
        self.doc = doc
        # Devices' recent online inserts: one sent again by another device at the same
        # moment (the same change, made on both) is deleted (crdt.sameonline).
        self.same = SameChanges()
        self._copies: bytes | None = None  # see take_copies
        # Updates the doc holds pending (their dependencies never reached it), which
        # Doc.get_update leaves out: sent to joiners with the state, dropped once applied.
        self.pending = list(pending)
        self.cursor = cursor
        self.count = count  # updates in the log up to the cursor (None: not known)
        self.own: set[Versionstamp] = set()  # this instance's commits after the cursor
        # This instance's commits that landed while the room was loading, after the head
        # its replay read: they went to the room they were sent to (unloaded), so the
        # tail reader applies them here. Every other commit of this instance reaches the
        # room through apply_local (its record may be read from the tail first: skipped).
        self.unseen: set[Versionstamp] = set()
        # This instance's commits for this room that the History listener told of and
        # apply_local has not applied yet (the tail reader may have passed them).
        self.unapplied: set[Versionstamp] = set()
        # False once the document may differ from the log it was built from: an update
        # it could not integrate, a re-sent one applied late, or the log applied in
        # another order than its own (see note_order and deleted_at).
        self.exact = True
        self.size = size
        # Bytes of updates sessions accepted for this room and not applied yet: the
        # document-size quota counts them with ``size`` (see ``Session._update``).
        self.inflight = 0
        self.peers: dict[int, Peer] = {}
        self.states: dict[int, tuple[int, str]] = {}  # client id -> (clock, JSON state)
        # Awareness clients of this instance's own peers: client id -> the id of the peer
        # that controls it (server.awareness publishes their states).
        self.local: dict[int, int] = {}
        # Awareness clients this room removed for its peers (a connection left, another
        # instance's entry lost them): client id -> the removal's clock, the oldest first
        # (at most MAX_REMOVED). See _bounce.
        self.removed: dict[int, int] = {}
        # Told when ``local`` or one of its states changed (server.awareness publishes).
        self.awareness_changed: Callable[[], None] | None = None
        self.idle_since: float | None = time.monotonic()
        self.watcher: asyncio.Task[None] | None = None
        self.catching_up = asyncio.Lock()  # one log-tail reader at a time moves the cursor
        self.creating = asyncio.Lock()  # one Create at a time is checked and stored (server.ws)
        self._full_frame: bytes | None = None
        # Whether the document is flagged deleted, and how many times an update set the
        # flag while the room was loaded (each is a deletion to judge edits against).
        self.deleted = False
        self.deletions = 0
        # Set by the observers: [the weft map changed, the text changed while deleted].
        # The callbacks hold only this list (not the room: the document, which keeps
        # them, would keep the room alive in a cycle the collector cannot see).
        self._touched = [False, False]
        self._meta: Map[Any] | None = None
        self._text: Text | None = None
        self._meta_watch: Any = None
        self._text_watch: Any = None
        # The observers cost ~2 kB per room (1,000 idle rooms left ~2 MB more behind
        # after they unloaded: bench.fanout's idle check), so they are made only once
        # the document has a `weft` root: at load, or when an update may have made it
        # (the update that makes a root names it: see _apply).
        self._weft_seen = META in _roots(doc)
        if self._weft_seen:
            self._watch_meta()
            self._took()

    # --- what sessions read (RoomView) -----------------------------------------------

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def sync_step2_frame(self, state_vector: bytes) -> bytes:
        if self.pending:  # usually empty: then this costs nothing
            self.pending = pending_updates(self.doc, self.pending)
        if state_vector == EMPTY_STATE_VECTOR:
            if self._full_frame is None:
                self._full_frame = codec.encode(SyncStep2(self._with_pending(None)))
            return self._full_frame
        return codec.encode(SyncStep2(self._with_pending(state_vector)))

    def _with_pending(self, state_vector: bytes | None) -> bytes:
        """What a peer at ``state_vector`` lacks, with the pending updates (as Yjs's
        ``encodeStateAsUpdate`` does): it holds them pending too, until they apply."""
        update = self.doc.get_update(state_vector)
        return merge_updates(update, *self.pending) if self.pending else update

    def holds_deletions(self, update: bytes) -> bool:
        """Whether ``update`` carries no struct and deletes only what this document has
        deleted already: a no-op (Yjs sends its whole delete set with every answer to a
        ``SyncStep1``, so a reconnecting peer sends this, in new bytes whenever its
        deletions grew). Costs one encoding of the document's delete set."""
        return ydoc.adds_nothing(self.doc, update)  # else stored (or refused) as any update

    def awareness_clock(self, client: int) -> int | None:
        state = self.states.get(client)
        return None if state is None else state[0]

    def awareness_payload(self) -> bytes | None:
        if not self.states:
            return None
        return codec.encode_awareness(
            AwarenessEntry(client, clock, state) for client, (clock, state) in self.states.items()
        )

    # --- peers -----------------------------------------------------------------------

    def add(self, peer: Peer) -> None:
        self.peers[peer.id] = peer
        self.idle_since = None

    def remove(self, peer: Peer, awareness_clients: Iterable[int]) -> None:
        """Drop ``peer``; the awareness clients it still controls are removed for the
        others (one that another connection took over with a newer clock stays)."""
        self.peers.pop(peer.id, None)
        gone = []
        left = False
        for client in awareness_clients:
            if self.local.get(client) != peer.id:
                continue
            del self.local[client]
            left = True
            state = self.states.pop(client, None)
            if state is not None:
                gone.append(AwarenessEntry(client, state[0] + 1, "null"))
        if gone:
            self.announce(gone)
        if left and self.awareness_changed is not None:
            self.awareness_changed()
        if not self.peers:
            self.idle_since = time.monotonic()

    def announce(self, entries: Sequence[AwarenessEntry]) -> None:
        """Send every peer awareness changes the room made itself (not relayed), and
        remember the removals among them (see _bounce)."""
        removed = self.removed
        for entry in entries:
            if entry.removed:
                removed.pop(entry.client_id, None)
                removed[entry.client_id] = entry.clock
                if len(removed) > MAX_REMOVED:
                    del removed[next(iter(removed))]
        self.broadcast(codec.encode(Awareness(codec.encode_awareness(entries))))

    def _bounce(self, sender: int, entries: Sequence[AwarenessEntry], own: Collection[int]) -> None:
        """Tell ``sender`` that a state it sent for a client the room removed is not newer
        than that removal: the peers have the removal's clock, and ignore such a state
        (y-protocols takes a state only at a newer clock). y-websocket re-sends its state
        at the clock it had when it reconnects, so a client whose dead socket the server
        closed first stayed invisible until its second 15-second renewal. Sent the
        removal itself, y-protocols answers with its state at a clock past it, which
        the peers take at once."""
        stale = []
        for entry in entries:
            if entry.client_id in own and not entry.removed:
                clock = self.removed.pop(entry.client_id, None)
                if clock is not None and entry.clock <= clock:
                    stale.append(AwarenessEntry(entry.client_id, clock, "null"))
        peer = self.peers.get(sender)
        if stale and peer is not None:
            peer.send(codec.encode(Awareness(codec.encode_awareness(stale))))

    def broadcast(self, frame: bytes, exclude: int | None = None) -> None:
        for peer_id, peer in list(self.peers.items()):
            if peer_id != exclude:
                peer.send(frame)

    # --- changes ---------------------------------------------------------------------

    def apply_local(
        self,
        update: bytes,
        appended: Appended,
        sender: int,
        frame: bytes | None = None,
        *,
        compare: bool = False,
    ) -> bool:
        """A peer's update is durable: apply it and send its exact bytes to the others
        (``frame``: the update frame as the peer sent it, when it is already the one to
        send, see ``codec.read_update_frame``; else it is encoded here). True when it
        changed the text of the document while the document is (still) flagged deleted.
        ``compare``: a device's online update (see ``same``): :meth:`take_copies` then
        says whether it copied another device's same change."""
        self._copies = None
        if appended.duplicate and not pending_updates(self.doc, [update]):
            return False  # in the log and in the room: peers had it when first committed
        # New, or in the log but not in the room: a commit whose outcome was unknown (FDB
        # commit_unknown_result) or whose ack was lost, now re-sent. This instance's own
        # records are skipped by the watcher, so this is the room's one chance to get it.
        # What the doc held before: an item below it (sent again) is no new insert.
        known = state_vector_clocks(self.doc.get_state()) if compare else None
        edited = self._apply(update)
        try:
            self._copies = self.same.note(update, compare=compare, known=known)
        except Exception:  # keeping a same change once must never stop an update
            log.error("comparing an update with recent ones failed", exc_info=True)
        self.unapplied.discard(appended.versionstamp)
        if appended.duplicate:  # (at a versionstamp the cursor may be before or past)
            self.exact = False
        self.broadcast(frame or codec.encode(SyncUpdate(update)), exclude=sender)
        return edited

    def take_copies(self) -> bytes | None:
        """The delete-only update that keeps once the same change the last
        :meth:`apply_local` (with ``compare``) copied from another device's (None:
        nothing to delete); asked once."""
        copies, self._copies = self._copies, None
        return copies

    def deleted_at(self) -> Versionstamp | None:
        """The cursor, when the document is flagged deleted and holds exactly the log's
        updates up to it (see the module docstring); else None."""
        if not self.deleted or not self.exact or self.cursor is None:
            return None
        if self.own or self.unseen or self.unapplied:
            return None
        if self.pending and pending_updates(self.doc, self.pending):
            return None
        return self.cursor if self._meta is not None and self._meta.get(DELETED) is True else None

    def note_order(self, first: Versionstamp, last: Versionstamp) -> None:
        """The log's records from ``first`` to ``last`` are applied now (by the tail
        reader). If an own commit after ``first`` was applied already, or one before
        ``last`` is still to be applied, the room applies the log in another order than
        a replay does, and yrs can end in another state (an update that arrived before
        one it depends on can stay pending in one order and not in another, the flag
        with it): ``exact`` is then False."""
        early = any(vs.raw > first.raw for vs in self.own if vs not in self.unapplied)
        if early or any(vs.raw < last.raw for vs in self.unapplied):
            self.exact = False

    def skip_own(self, head: Head) -> bool:
        """Move the cursor to ``head`` if every update up to it is known to the room (its
        own commits); ``False`` when the log tail must be read."""
        if self.cursor is not None and head.versionstamp.raw <= self.cursor.raw:
            return True
        if head.count is None or self.count is None:
            return False
        last = head.versionstamp.raw  # versionstamps compare as their bytes, faster so
        own = [vs for vs in self.own if vs.raw <= last]
        if head.count - self.count != len(own):
            return False
        self.cursor, self.count = head.versionstamp, head.count
        self.own.difference_update(own)
        return True

    def advance(self, records: list[Record]) -> None:
        """The cursor moves past ``records``: every update after the old cursor, in order."""
        self.cursor = records[-1].versionstamp
        if self.count is not None:
            self.count += len(records)
        last = self.cursor.raw
        self.own = {vs for vs in self.own if vs.raw > last}

    def apply_remote(self, records: Iterable[Record]) -> int:
        """Updates from the log the room has not had (another instance's commits, or this
        one's that landed while the room loaded): apply and send to every peer."""
        count = 0
        for record in records:
            try:
                self._apply(record.update)
            except ValueError as exc:  # decoded before commit, yet pycrdt refused it here
                log.error("skipping the update at %s: %s", record.versionstamp, exc)
                continue
            with contextlib.suppress(Exception):  # (see apply_local)
                self.same.note(record.update, compare=False)  # text it deletes
            self.broadcast(codec.encode(SyncUpdate(record.update)))
            count += 1
        return count

    def _apply(self, update: bytes) -> bool:
        """Apply ``update``; True when it changed the text of a document flagged deleted
        (and left the flag set). UnusableUpdate (a ValueError) on a poisonous update."""
        touched = self._touched
        try:
            vector = ydoc.apply_with_state(self.doc, update)
        except ValueError:
            self.exact = False
            raise
        finally:
            # The first entry of a root map names its root (varString "weft") in the
            # update that makes it; later ones point at an earlier entry. Seen once, the
            # root is looked for again after each update until it is there (the entry
            # may wait, pending, for an update it depends on).
            if self._meta_watch is None and (self._weft_seen or _WEFT_ROOT in update):
                self._weft_seen = True
                self._watch_meta()
            edited = self._took() if touched[0] or touched[1] else False
        self.size += len(update)
        self._full_frame = None
        # An update that arrived before one it depends on: kept for joiners (see
        # ``pending``), or a joiner now would never get it: once the dependency comes,
        # only the dependency is broadcast.
        if holds_pending(self.doc, update, vector) and update not in self.pending:
            self.pending.append(update)
            if len(self.pending) > PENDING_PRUNE:  # most may have integrated since
                self.pending = pending_updates(self.doc, self.pending)
        return edited

    def _watch_meta(self) -> None:
        """Observe the ``weft`` map once the document has it (see ``__init__``)."""
        doc = self.doc
        if META not in _roots(doc):
            return
        touched = self._touched
        try:
            meta, text = doc.get(META, type=Map), doc.get(CONTENT, type=Text)
            self._meta_watch = meta.integrated.observe(
                lambda _event, t=touched: t.__setitem__(0, True)
            )
        except Exception:  # a root of another type: such a document is never judged
            log.warning("%s: no deletion check (roots of other types)", printable(self.ref.path))
            self._weft_seen = False
            self._meta = self._text = None
            self._meta_watch = True  # (not None: never looked for again)
            return
        self._meta, self._text = meta, text
        touched[0] = True  # read the flag: the update that made the map may have set it

    def _took(self) -> bool:
        """What the observers noted during the last update: read the deletion flag again
        if the ``weft`` map changed (and watch the text while it is set). True when the
        text changed while the document is flagged deleted."""
        touched = self._touched
        meta_changed, text_changed = touched
        touched[0] = touched[1] = False
        if meta_changed and self._meta is not None and self._text is not None:
            deleted = self._meta.get(DELETED) is True
            if deleted:
                self.deletions += 1  # a new deletion (or the same one, set again)
                if self._text_watch is None:
                    self._text_watch = self._text.integrated.observe(
                        lambda _event, t=touched: t.__setitem__(1, True)
                    )
            elif self._text_watch is not None:
                self._text_watch.drop()
                self._text_watch = None
            self.deleted = deleted
        return self.deleted and text_changed

    def relay(
        self,
        sender: int,
        payload: bytes,
        entries: Sequence[AwarenessEntry],
        own: Collection[int],
    ) -> None:
        """Record the awareness states (newer clocks win) and relay the exact bytes to every
        peer, the sender included: y-websocket drops a connection that received nothing for
        30 s, and a peer alone in its room only hears its own 15-second renewals (the
        reference server echoes them too; an echo of its own clock is a no-op for it).
        A frame that brings the room nothing (every entry at or below the clock the room
        holds: the echoes y-websocket sends of every state it receives) is not relayed,
        as the reference server relays only what changed: relayed, one cursor move in a
        room of N such clients made about N x N frames.

        ``own``: the clients of ``entries`` that ``sender`` controls (see
        :class:`~server.session.Relay`); only those become, or stop being, local. An
        entry older than the room's changes nothing, control included (a late frame of
        a connection another one took the client over from), and so does a state at
        the room's clock from a connection that does not control the client (a
        reconnecting client's, or another state forged at that clock: y-protocols
        peers ignore it, so the room would hand joiners a state its peers do not
        have); a state at that clock from its controller changes nothing either, as
        on the peers. A removal of a client that another connection here controls is
        ignored: only that one, or its leaving, removes it."""
        local = self.local
        changed = False
        news = False  # an entry the peers would apply: a new client, a newer clock, a removal
        ignored: list[AwarenessEntry] = []  # foreign removals: not relayed either
        for entry in entries:
            client = entry.client_id
            known = self.states.get(client)
            controller = local.get(client)
            if known is not None and (
                entry.clock < known[0]
                or (entry.clock == known[0] and not entry.removed and controller != sender)
            ):
                continue
            if entry.removed and controller is not None and controller != sender:
                ignored.append(entry)
                continue
            if known is None:
                news = news or not entry.removed
            else:
                news = news or entry.clock > known[0] or entry.removed
            if client in own:
                if not entry.removed:
                    changed = changed or controller != sender
                    local[client] = sender
                elif controller == sender:
                    del local[client]
                    changed = True
            if entry.removed:
                if self.states.pop(client, None) is not None:
                    changed = changed or client in local
            elif known is None or entry.clock > known[0]:  # (y-protocols: newer wins)
                self.states[client] = (entry.clock, entry.state)
                changed = changed or client in local
        if news and ignored:  # rare: the frame goes on without them (peers would apply them)
            payload = codec.encode_awareness([entry for entry in entries if entry not in ignored])
        if news:
            self.broadcast(codec.encode(Awareness(payload)))
        if self.removed and own:
            self._bounce(sender, entries, own)
        if changed and self.awareness_changed is not None:
            self.awareness_changed()


class Rooms:
    """Loads, tracks and unloads rooms; one watcher task per loaded room."""

    def __init__(
        self,
        history: History,
        metrics: Metrics | None = None,
        *,
        instance: str = "",
        idle_seconds: float = 30.0,
        max_idle: int = 1000,
    ) -> None:
        self.history = history
        self.metrics = metrics or Metrics()
        self.instance = instance
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self._rooms: dict[bytes, Room] = {}
        self._idle: OrderedDict[bytes, Room] = OrderedDict()  # rooms without peers, oldest first
        self._loading: dict[bytes, asyncio.Task[Room]] = {}
        self._missed: dict[bytes, set[Versionstamp]] = {}  # per loading doc: see Room.unseen
        self._reaper: asyncio.Task[None] | None = None
        self._unloaded = 0  # rooms unloaded since the last memory release
        # Documents to mark deleted (see Room.deleted_at): space -> (doc, its cursor)
        self._marks: dict[bytes, tuple[DocRef, Versionstamp]] = {}
        self.awareness = ClusterAwareness(history.kv, instance, self.metrics)
        history.listeners.append(self._committed)
        # Called when memory is given back after unloading: caches of other parts that
        # only unloaded documents used (see server.memory).
        self.release_hooks: list[Callable[[], None]] = []
        # Told (doc, records, bytes after its latest snapshot) when a room loads.
        self.load_hooks: list[Callable[[DocRef, int, int], None]] = []

    def _committed(self, items: Sequence[Append], results: Sequence[Appended]) -> None:
        """Note this instance's connection commits in their rooms (see :meth:`Room.skip_own`);
        they reach the room through ``apply_local``, as the tail reader assumes too."""
        mine = f"{self.instance}/"
        rooms = self._rooms
        for item, appended in zip(items, results, strict=True):
            if appended.duplicate or not item.session.startswith(mine):
                continue
            room = rooms.get(item.doc.space)
            if room is None:
                if item.doc.space in self._loading:
                    self._missed.setdefault(item.doc.space, set()).add(appended.versionstamp)
                continue
            room.unapplied.add(appended.versionstamp)
            if room.cursor is None or appended.versionstamp.raw > room.cursor.raw:
                room.own.add(appended.versionstamp)

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, ref: DocRef) -> Room | None:
        return self._rooms.get(ref.space)

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="weft-room-reaper")

    async def close(self) -> None:
        if self._committed in self.history.listeners:
            self.history.listeners.remove(self._committed)
        tasks = [t for t in (self._reaper, *self._loading.values()) if t is not None]
        for room in list(self._rooms.values()):
            self._unload(room)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._reaper = None
        await self.write_marks()
        await self.awareness.close()

    async def join(self, ref: DocRef, peer: Peer) -> Room:
        """The room of ``ref`` (loaded if needed) with ``peer`` added to it."""
        while True:
            room = self._rooms.get(ref.space)
            if room is None:
                task = self._loading.get(ref.space)
                if task is None:
                    task = asyncio.create_task(self._load(ref), name="weft-room-load")
                    self._loading[ref.space] = task
                room = await asyncio.shield(task)
            if self._rooms.get(ref.space) is room:  # not unloaded while we waited
                self._idle.pop(ref.space, None)
                room.add(peer)
                return room

    def leave(self, room: Room, peer: Peer, awareness_clients: Iterable[int]) -> None:
        room.remove(peer, awareness_clients)
        if room.peers or self._rooms.get(room.ref.space) is not room:
            return
        self._idle[room.ref.space] = room
        self._idle.move_to_end(room.ref.space)
        if self.idle_seconds == 0:
            self._unload(room)
        while len(self._idle) > self.max_idle:
            self._unload(next(iter(self._idle.values())))

    async def _load(self, ref: DocRef) -> Room:
        try:
            raw, size = await self.history.kv.read(
                lambda tr: (tr.get(ref.key("head")), read_counter(tr.get(ref.key("bytes"))))
            )
            head = Head.decode(raw) if raw else None
            # Replayed at the head just read, so the head's count is the room's count.
            replayed = await self.history.replay(ref, head.versionstamp if head else None)
            count = head.count if head else 0
            applied = replayed.applied  # ~1 µs each: a thread only for a long tail
            pending = (
                pending_updates(replayed.doc, applied)
                if len(applied) <= PENDING_INLINE
                else await asyncio.to_thread(pending_updates, replayed.doc, applied)
            )
            room = Room(ref, replayed.doc, replayed.versionstamp, size, count, pending)
            self.metrics.room_loads.inc()
            after = replayed.versionstamp.raw if replayed.versionstamp is not None else b""
            room.unseen = {vs for vs in self._missed.pop(ref.space, ()) if vs.raw > after}
            tail = applied[len(applied) - replayed.updates_applied :]
            for hook in self.load_hooks:
                hook(ref, replayed.updates_applied, sum(map(len, tail)))
            room.watcher = asyncio.create_task(self._watch(room, raw), name="weft-room-watch")
            self._rooms[ref.space] = room
            self.awareness.attach(room)
            self._idle[ref.space] = room  # until its first peer joins
            self.metrics.rooms_loaded.set(len(self._rooms))
            log.debug(
                "loaded %s/%s/%s (%d updates replayed)",
                ref.tenant,
                ref.project,
                printable(ref.path),
                replayed.updates_applied,
                extra={"tenant": ref.tenant, "project": ref.project, "path": ref.path},
            )
            return room
        finally:
            self._loading.pop(ref.space, None)
            self._missed.pop(ref.space, None)

    def _unload(self, room: Room) -> None:
        if self._rooms.get(room.ref.space) is room:
            del self._rooms[room.ref.space]
            self._idle.pop(room.ref.space, None)
            self._unloaded += 1  # whoever unloaded it, the reaper releases the memory
            deleted_at = room.deleted_at()
            if deleted_at is not None:  # written by the reaper (or close)
                self._marks[room.ref.space] = (room.ref, deleted_at)
        if room.watcher is not None:
            room.watcher.cancel()
            room.watcher = None  # its traceback would hold the room (and its Doc) in a cycle
        self.awareness.detach(room)
        self.metrics.rooms_loaded.set(len(self._rooms))

    async def _watch(self, room: Room, last: bytes | None) -> None:
        """Follow the document's head (``last``: its value when the room was loaded);
        apply what other instances commit."""
        head_key = room.ref.key("head")
        delay = 0.1
        while True:
            try:
                last = await self.history.kv.watch(head_key, last)
                async with room.catching_up:
                    if last is None or not room.skip_own(Head.decode(last)):
                        await self._catch_up(room)
                delay = 0.1
                await asyncio.sleep(WATCH_COALESCE)
            except asyncio.CancelledError:
                raise
            except Exception:  # a task boundary: log, back off, keep following
                log.error("watching %s failed; retrying", printable(room.ref.path), exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def catch_up_to_head(self, room: Room) -> bool:
        """Apply every update up to the document's current head before a weft client's
        ``SyncStep1`` is answered: the client takes the answer as proof that it holds
        everything up to a head it read before asking (its base for offline edits), and
        another instance's commit may not have woken this room's watcher yet (SQLite's
        cross-process watch polls). On this instance's own commits: no log read (the
        caller first waits until the writer settled what it had started, see
        ``Writer.settled``). ``False`` when the store could not be read: no proof."""
        try:
            raw = await self.history.kv.read(lambda tr: tr.get(room.ref.key("head")))
            if raw is None:
                return True
            async with room.catching_up:
                if not room.skip_own(Head.decode(raw)):
                    await self._catch_up(room)
            return True
        except Exception:  # the caller says "try again"; the watcher catches up later
            log.warning(
                "catching %s up before a probe failed", printable(room.ref.path), exc_info=True
            )
            return False

    async def _catch_up(self, room: Room) -> None:
        """Apply the log's records after the room's cursor that the room does not get
        otherwise: other instances' commits, and this instance's in ``room.unseen``
        (landed while the room loaded). This instance's others reach it through
        ``apply_local``, which may run after their record is read here (the store
        offers a commit's head to watchers before its caller hears of it)."""
        mine = f"{self.instance}/"
        self.metrics.tail_reads.inc()
        while True:
            records = await self.history.updates(room.ref, after=room.cursor, limit=TAIL_PAGE)
            if not records:
                return
            unseen = room.unseen
            missed = [
                r for r in records if not r.session.startswith(mine) or r.versionstamp in unseen
            ]
            if missed:
                room.note_order(missed[0].versionstamp, missed[-1].versionstamp)
                unseen.difference_update(r.versionstamp for r in missed)
                self.metrics.remote_updates.inc(room.apply_remote(missed))
            room.advance(records)
            if len(records) < TAIL_PAGE:
                return

    async def _reap_forever(self) -> None:
        """Unload idle rooms; after unloading some, give the memory back (at most once
        per ``RELEASE_EVERY`` seconds: it costs a garbage collection)."""
        interval = min(max(self.idle_seconds / 4, 0.05), 5.0)
        released = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            self.reap(time.monotonic())
            await self.write_marks()
            # Rooms unloaded here, in leave() (idle_seconds 0, over max_idle) or anywhere
            # else. At once when the last room went (nothing left to slow down), else at
            # most every RELEASE_EVERY seconds.
            if self._unloaded and (not self._rooms or time.monotonic() - released >= RELEASE_EVERY):
                self._unloaded = 0
                await memory.release(self.history.kv, self.release_hooks)
                released = time.monotonic()

    async def write_marks(self) -> None:
        """Mark the documents deleted that unloaded rooms held so (see the module
        docstring), ``MARK_BATCH`` a transaction. A mark is a hint for new devices:
        one that fails is logged and dropped (the next unload tries again)."""
        while self._marks:
            batch = list(self._marks.values())[:MARK_BATCH]
            for ref, _ in batch:
                del self._marks[ref.space]
            try:
                self.metrics.deleted_marks.inc(await self.history.mark_deleted(batch))
            except Exception:  # the reaper goes on
                log.warning("marking %d deleted documents failed", len(batch), exc_info=True)

    def reap(self, now: float) -> int:
        """Unload the rooms idle for ``idle_seconds``; returns how many were unloaded."""
        unloaded = 0
        while self._idle:
            room = next(iter(self._idle.values()))
            if room.peers or room.idle_since is None:  # defensive: joined without notice
                self._idle.pop(room.ref.space)
                continue
            if now - room.idle_since < self.idle_seconds:
                break
            self._unload(room)
            unloaded += 1
        return unloaded
