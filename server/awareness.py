"""Awareness (cursors, presence) across server instances: relayed, never stored in history.

Within one process a room relays awareness messages to its peers (:meth:`Room.relay`).
Several instances on one store are one service, so each instance also shares the states
of ITS OWN clients (those its connections control: not the other clients' states a
y-websocket client echoes back, see :class:`server.session.Relay`) with the others
through an ephemeral part of the store, outside the document's history (no ``u/``,
snapshot or time-index key is ever written for it):

- ``D + (aw, instance)`` -> ``{v, ms, gen}``: the instance's entry for the doc, stamped
  with the wall clock of its last publish; ``D + (aw, instance, client)`` ->
  ``[clock, JSON state]`` for each of its clients; ``D + (awv,)``: a counter every publish
  adds to (see :mod:`crdt.keys`).
- Publishing is coalesced: one task per instance writes every room whose local awareness
  changed in ONE transaction, at most once per ``PUBLISH_EVERY`` (a moving cursor sends
  many messages; a busy instance still costs at most ~20 small transactions a second).
  It never goes through the update writer, and a failed publish is logged and retried:
  awareness is best effort, document updates are never affected. An entry with clients
  is renewed every ``RENEW_EVERY`` so the expiry below never hides a live client; an
  entry whose clients are all gone (or whose room unloaded, or whose server drains) is
  cleared.
- Whether another instance is alive comes from the instance registry
  (:mod:`server.registry`): alone, an instance shares nothing, so a single server writes
  no awareness to its store at all.
- Each loaded room follows the doc's counter (``kv.watch``) and reads every entry; its
  own instance's and any entry older than ``TIMEOUT_MS`` (y-protocols' own awareness
  timeout: a crashed instance's clients vanish) are dropped, and :func:`merge` turns the
  rest into one awareness message for the room's peers: newer clocks win, and a client
  that left a remote entry is sent as removed (``null``, clock + 1), as
  :meth:`Room.remove` does for a local connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from crdt import keys
from crdt.codec import AwarenessEntry
from crdt.kv.base import MAX_VALUE, Engine, Transaction
from server.logsafe import printable
from server.metrics import Metrics
from server.registry import FORGET_MS, Registry
from server.session import MAX_AWARENESS_STATE

if TYPE_CHECKING:
    from server.rooms import Room

log = logging.getLogger("weft.sync")

ENTRY_FORMAT = 1
TIMEOUT_MS = 30_000
"""An entry not renewed for this long is ignored (y-protocols' ``outdatedTimeout``)."""
PUBLISH_EVERY = 0.05
"""Seconds between two publishing transactions of one instance (coalescing)."""
RENEW_EVERY = 15.0
"""Seconds between renewals of an entry that has clients (half of ``TIMEOUT_MS``)."""
EXPIRY_CHECK = 5.0
"""While a room shows remote clients, it re-reads the entries this often (expiry)."""
WATCH_COALESCE = 0.01
MAX_ROOMS_PER_PUBLISH = 200
MAX_PUBLISH_BYTES = 2_000_000
"""Bytes of states one publishing transaction writes at most (more waits for the next)."""

States = dict[int, tuple[int, str]]  # client id -> (clock, JSON state)


@dataclass(frozen=True)
class Entry:
    """One instance's published awareness for one doc."""

    ms: int
    gen: int
    states: States


def encode_header(ms: int, gen: int) -> bytes:
    packed: bytes = msgpack.packb({"v": ENTRY_FORMAT, "ms": ms, "gen": gen})
    return packed


def encode_state(clock: int, state: str) -> bytes:
    packed: bytes = msgpack.packb([clock, state])
    return packed


def decode_header(raw: bytes) -> tuple[int, int]:
    value = msgpack.unpackb(raw)
    if not isinstance(value, dict) or value.get("v") != ENTRY_FORMAT:
        raise ValueError(f"awareness entry of an unknown format: {value!r:.80}")
    ms, gen = value.get("ms"), value.get("gen")
    if type(ms) is not int or type(gen) is not int:
        raise ValueError("awareness entry without ms/gen")
    return ms, gen


def _state(raw: bytes) -> tuple[int, str]:
    value = msgpack.unpackb(raw)
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("awareness state is not [clock, state]")
    clock, state = value
    if type(clock) is not int or clock < 0 or not isinstance(state, str):
        raise ValueError("awareness state is not [clock, state]")
    if len(state) > MAX_AWARENESS_STATE:
        raise ValueError("awareness state too big")
    return clock, state


def decode_entries(rows: Iterable[tuple[bytes, bytes]], space: bytes) -> dict[str, Entry]:
    """The entries in ``rows`` (a read of ``keys.awareness_range``), by instance. A row
    that does not decode is logged and skipped; clients without a header are ignored."""
    headers: dict[str, tuple[int, int]] = {}
    states: dict[str, States] = {}
    for key, value in rows:
        try:
            instance, client = keys.unpack_awareness(key, space)
            if client is None:
                headers[instance] = decode_header(value)
            else:
                states.setdefault(instance, {})[client] = _state(value)
        except Exception as exc:  # foreign or damaged data: awareness is best effort
            log.warning("skipping an awareness row that does not decode: %s", exc)
    return {
        instance: Entry(ms, gen, states.get(instance, {}))
        for instance, (ms, gen) in headers.items()
    }


def merge(
    states: States,
    local: Collection[int],
    seen: dict[str, States],
    entries: Mapping[str, Entry],
    now_ms: int,
) -> list[AwarenessEntry]:
    """Fold other instances' ``entries`` into a room's ``states`` (mutated); returns what
    changed, to send to the room's peers.

    ``local``: the clients of this instance's own connections (never touched here).
    ``seen``: what each instance's entry held at the previous merge (replaced); a client
    gone from it since (or whose whole entry expired) is removed, unless another entry
    or a local connection still has it or a newer clock arrived meanwhile.
    Entries older than ``TIMEOUT_MS`` count as absent. The caller drops its own entry.
    """
    fresh = {i: e for i, e in entries.items() if now_ms - e.ms <= TIMEOUT_MS}
    changes: list[AwarenessEntry] = []
    for entry in fresh.values():
        for client, (clock, state) in entry.states.items():
            if client in local:
                continue
            known = states.get(client)
            if known is None or clock > known[0]:
                states[client] = (clock, state)
                changes.append(AwarenessEntry(client, clock, state))
    present = {client for entry in fresh.values() for client in entry.states}
    for before in seen.values():
        for client, (clock, _) in before.items():
            if client in present or client in local:
                continue
            known = states.get(client)
            if known is not None and known[0] <= clock:
                del states[client]
                changes.append(AwarenessEntry(client, known[0] + 1, "null"))
                present.add(client)  # removed once, however many entries had it
    seen.clear()
    seen.update({instance: dict(entry.states) for instance, entry in fresh.items()})
    return changes


@dataclass(eq=False)
class _Link:
    """One loaded room's share in the cluster's awareness."""

    room: Room
    gen: int
    seen: dict[str, States] = field(default_factory=dict)
    follower: asyncio.Task[None] | None = None
    published: bool = False  # the store holds a non-empty entry of ours
    renew_at: float | None = None
    detached: bool = False


class ClusterAwareness:
    """Publishes this instance's local awareness per room and relays the other instances'
    (see the module docstring). One per :class:`~server.rooms.Rooms`."""

    def __init__(
        self, kv: Engine, instance: str, metrics: Metrics, registry: Registry | None = None
    ) -> None:
        self.kv = kv
        self.instance = instance
        self.metrics = metrics
        self._gens = itertools.count(1)
        self._links: dict[bytes, _Link] = {}
        self._dirty: dict[_Link, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        # Whether another instance is alive (the registry says): alone, an instance
        # shares nothing, so a single server writes no awareness to its store at all.
        self.others = False
        self._owns_registry = registry is None
        self.registry = registry or Registry(kv, instance, metrics)
        self.registry.on_others(self._set_others)
        self._closing = False

    # --- rooms -------------------------------------------------------------------------

    def attach(self, room: Room) -> None:
        """``room`` was loaded: follow the other instances' awareness for it (from the
        moment another instance is alive: a lone server keeps no follower task and no
        watch per room, and never reads awareness entries from the store). Not an
        unborn document's (a reader's, of a tenant not in the directory: nothing is
        written under it), whose awareness stays with this instance's peers."""
        if room.ref.unborn:
            return
        if not self._closing:
            self.registry.start()
        link = _Link(room, next(self._gens))
        self._links[room.ref.space] = link
        room.awareness_changed = lambda: self._changed(link)
        if self.others:
            self._follow_link(link)

    def _follow_link(self, link: _Link) -> None:
        if link.follower is None and not link.detached and not self._closing:
            link.follower = asyncio.create_task(self._follow(link), name="weft-awareness-follow")

    def detach(self, room: Room) -> None:
        """``room`` unloads: stop following; clear our entry if we published one."""
        link = self._links.get(room.ref.space)
        if link is None or link.room is not room:
            return
        del self._links[room.ref.space]
        room.awareness_changed = None
        link.detached = True
        if link.follower is not None:
            link.follower.cancel()
            link.follower = None
        if link.published:
            self._changed(link)
        else:
            self._dirty.pop(link, None)

    def _changed(self, link: _Link) -> None:
        self._dirty[link] = None
        self._wake.set()
        if self._publisher is None and not self._closing:
            self._publisher = asyncio.create_task(
                self._publish_forever(), name="weft-awareness-publish"
            )

    async def close(self, timeout: float = 2.0) -> None:
        """Detach every room, then clear what this instance published (bounded wait)."""
        self._closing = True  # no new tasks; the loops stop at their next turn
        for link in list(self._links.values()):
            self.detach(link.room)
        if self._publisher is not None:
            self._publisher.cancel()
            # Not ``await task``: on Python 3.11 a cancel that lands as the task's
            # wait_for completes is swallowed, and the task would run on (seen in tests).
            await asyncio.wait([self._publisher], timeout=timeout)
        self._publisher = None
        if self._dirty:
            try:
                async with asyncio.timeout(timeout):
                    await self._flush(list(self._dirty))
            except Exception as exc:  # shutting down: the entries expire on their own
                log.warning("could not clear this instance's awareness entries: %s", exc)
        if self._owns_registry:
            await self.registry.close(timeout)

    # --- the instance registry -----------------------------------------------------------

    def _set_others(self, alive: bool) -> None:
        if alive == self.others or self._closing:
            return
        self.others = alive
        if alive:
            log.info("another instance is alive: awareness is shared through the store")
        else:
            log.info("no other instance is alive: awareness is kept local")
        for link in self._links.values():  # publish (or clear) what we have now
            if alive:  # followers stay once started: they see the others' entries go
                self._follow_link(link)
            if link.room.local or link.published:
                self._changed(link)

    # --- publishing ----------------------------------------------------------------------

    async def _publish_forever(self) -> None:
        delay = PUBLISH_EVERY
        while not self._closing:
            renewals = [link.renew_at for link in self._links.values() if link.renew_at]
            timeout = max(min(renewals) - time.monotonic(), 0.0) if renewals else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            for link in self._links.values():
                if link.renew_at is not None and link.renew_at <= now:
                    self._dirty[link] = None
            batch = list(self._dirty)[:MAX_ROOMS_PER_PUBLISH]
            try:
                await self._flush(batch)
                delay = PUBLISH_EVERY
            except asyncio.CancelledError:
                raise
            except Exception:  # a task boundary: awareness is best effort; retry later
                log.warning("publishing awareness failed; retrying", exc_info=True)
                delay = min(delay * 2, 5.0)
            if self._dirty:
                self._wake.set()
            await asyncio.sleep(delay)

    async def _flush(self, batch: list[_Link]) -> None:
        """Write (or clear) the entries of ``batch`` in one transaction."""
        if not batch:
            return
        ms = int(time.time() * 1000)
        others = self.others
        writes: list[tuple[bytes, int, States | None]] = []
        size = 0
        for link in list(batch):
            room = link.room
            alone = link.detached or not others  # alone: nobody reads it; clear
            mine = None if alone else _local_states(room.states, room.local)
            if not mine and not link.published:
                batch.remove(link)  # nothing of ours in the store: nothing to clear
                self._dirty.pop(link, None)
                continue
            size += sum(len(state) * 4 for _, state in (mine or {}).values())
            if writes and size > MAX_PUBLISH_BYTES:
                del batch[len(writes) :]  # the rest stays dirty: the next transaction
                break
            writes.append((room.ref.space, link.gen, mine or None))
        if not batch:
            return
        instance = self.instance

        def publish(tr: Transaction) -> None:
            for space, gen, states in writes:
                _write(tr, space, instance, gen, ms, states)

        await self.kv.transact(publish)
        self.metrics.awareness_publishes.inc(len(batch))
        renew_at = time.monotonic() + RENEW_EVERY
        for link, (_, _, states) in zip(batch, writes, strict=True):
            # Still dirty if its states changed meanwhile, or the registry flipped.
            settled = others == self.others and (not others or not _newer_than(link, states))
            if link in self._dirty and settled:
                del self._dirty[link]
            link.published = states is not None
            link.renew_at = renew_at if states is not None and not link.detached else None

    # --- following -----------------------------------------------------------------------

    async def _follow(self, link: _Link) -> None:
        """Read the doc's entries now and whenever its counter moves (and every
        ``EXPIRY_CHECK`` while remote clients are shown, so expired ones go)."""
        space = link.room.ref.space
        bump = keys.awareness_bump(space)
        lo, hi = keys.awareness_range(space)

        def read(tr: Any) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
            return tr.get(bump), tr.get_range(lo, hi)

        delay = 0.1
        while True:
            try:
                value, rows = await self.kv.read(read)
                self._deliver(link, decode_entries(rows, space))
                timeout = EXPIRY_CHECK if link.seen else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.kv.watch(bump, value)
                delay = 0.1
                await asyncio.sleep(WATCH_COALESCE)
            except asyncio.CancelledError:
                raise
            except Exception:  # a task boundary: log, back off, keep following
                log.error(
                    "following awareness of %s failed", printable(link.room.ref.path), exc_info=True
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _deliver(self, link: _Link, entries: dict[str, Entry]) -> None:
        entries.pop(self.instance, None)
        room = link.room
        changes = merge(room.states, room.local, link.seen, entries, int(time.time() * 1000))
        if changes:
            room.announce(changes)
            self.metrics.awareness_remote.inc()


def _local_states(states: States, local: Collection[int]) -> States:
    return {client: states[client] for client in local if client in states}


def _newer_than(link: _Link, written: States | None) -> bool:
    """Whether the room's local states changed since ``written`` was taken (a message
    arrived during the transaction: publish again)."""
    if link.detached:
        return False
    room = link.room
    return (_local_states(room.states, room.local) or None) != written


# FORGET_MS (the registry's): an instance's entry this much older than the clock of an
# instance leaving the doc is cleared by it: its instance died without leaving (kill -9),
# and instance names are new at every start, so such entries (user presence) would stay
# in the doc for good.


def _clear_dead(tr: Transaction, space: bytes, now_ms: int) -> None:
    """Clear the entries (header and clients) of the doc whose header is older than
    ``FORGET_MS``. Run when an instance leaves a doc: rarely, so the range read costs
    nothing on the path of cursor moves."""
    for key, raw in tr.get_range(*keys.awareness_range(space)):
        try:
            if keys.unpack_awareness(key, space)[1] is not None:
                continue  # a client's state: cleared with its header
            ms, _ = decode_header(raw)
        except Exception:  # another version's entry: left to its owner
            continue
        if ms < now_ms - FORGET_MS:
            tr.clear_range(*keys.prefix_range(key))
            tr.clear(key)


def _write(
    tr: Transaction, space: bytes, instance: str, gen: int, ms: int, states: States | None
) -> None:
    header = keys.awareness_entry(space, instance)
    if states is None:
        raw = tr.get(header)
        if raw is None:
            return
        with contextlib.suppress(Exception):
            if decode_header(raw)[1] != gen:
                return  # a newer room of this instance wrote it since: not ours to clear
    lo, hi = keys.prefix_range(header)
    tr.clear_range(lo, hi)
    if states is None:
        tr.clear(header)
        _clear_dead(tr, space, ms)
    else:
        tr.set(header, encode_header(ms, gen))
        for client, (clock, state) in states.items():
            value = encode_state(clock, state)
            if len(value) > MAX_VALUE:  # 32 k characters of 4 UTF-8 bytes each
                log.warning(
                    "awareness state of client %d too big to share: %d bytes", client, len(value)
                )
                continue
            tr.set(keys.awareness_client(space, instance, client), value)
    tr.add(keys.awareness_bump(space), 1)
