"""The instance registry: which server instances share this store, and what they publish.

Several ``weft serve`` processes on one store are one service. Each running instance
keeps an entry in the store (see :mod:`crdt.keys`):

- ``(instances, name)`` -> msgpack ``{"ms": wall clock of the last write, "seen": [the
  other live instances it knew of then], <field>: ...}``: its heartbeat, rewritten every
  ``HEARTBEAT_EVERY`` seconds, with the fields its users share (:meth:`Registry.share`:
  the connection counts of :mod:`server.quotas`);
- ``(instancesv,)``: a counter bumped when an instance joins, leaves or publishes a change
  of its fields. Every instance watches it, so the others learn at once.

An entry whose heartbeat is older than ``INSTANCE_TIMEOUT_MS`` belongs to an instance
that died without leaving (kill -9): it is ignored, and so is everything it published;
past ``FORGET_MS`` the next live instance to write its heartbeat clears it.

Cost: the server starts the registry at startup (:mod:`server.app`; ``start()`` is
idempotent, and a connection or a loaded room starts it too where nothing did), so
``weft_instances`` counts the instances on the store from the start: one heartbeat write
every ``HEARTBEAT_EVERY`` seconds and one watch of the counter. A lone instance writes
only its heartbeat. A change of its fields waits for the
next heartbeat, unless another instance is alive: then it is published promptly, at most
once per ``PUBLISH_EVERY`` (changes in between are coalesced into the next write). When
another instance appears, each publishes its fields at once (at most ``PUBLISH_EVERY``
later), listing the newcomer in ``seen``. A newcomer is :attr:`Registry.synced` once every
live instance's entry lists it: their fields are then no older than the moment they knew
of it, and from then on they publish every change promptly. Until then their entries may
be a heartbeat old (a lone instance publishes only at its heartbeat), so
:meth:`Registry.ready` waits for that, not merely for a first read. Users:
:mod:`server.awareness` (shares only while :attr:`Registry.others`), :mod:`server.quotas`
(cluster-wide connection and rate quotas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from crdt import keys
from crdt.kv.base import MAX_VALUE, Engine, Transaction
from server.metrics import Metrics

log = logging.getLogger("weft.cluster")

HEARTBEAT_EVERY = 10.0
"""Seconds between two heartbeats of a running instance in the registry."""
INSTANCE_TIMEOUT_MS = 35_000
"""An instance whose heartbeat is older than this is taken for gone."""
FORGET_MS = 600_000
"""An entry whose heartbeat is this much older than a live instance's clock is cleared
by it (its instance died without leaving; far past INSTANCE_TIMEOUT_MS, so clock skew
between machines never clears a live one's for long: it rewrites it at its heartbeat)."""
PUBLISH_EVERY = 0.5
"""Seconds between two prompt publishes of changed fields (only while others are alive)."""
SEEN = "seen"
"""The entry field listing the other live instances its instance knew of when it wrote it."""

Peers = dict[str, dict[str, Any]]
"""Every other live instance's entry, by instance name."""


class Registry:
    """This instance's entry in the registry and its view of the others' (see the module
    docstring). ``start()`` runs it; ``close()`` leaves."""

    def __init__(self, kv: Engine, instance: str, metrics: Metrics | None = None) -> None:
        self.kv = kv
        self.instance = instance
        self.metrics = metrics
        self.others = False
        """Whether another instance is alive (its heartbeat is within the timeout)."""
        self.peers: Peers = {}
        self._fields: dict[str, Callable[[], Any]] = {}
        self._others_listeners: list[Callable[[bool], None]] = []
        self._peers_listeners: list[Callable[[], None]] = []
        self._dirty = False
        self._wake = asyncio.Event()
        self._read = asyncio.Event()  # set after the first successful read
        self._synced = asyncio.Event()  # every live instance's entry lists this one
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        if metrics is not None:
            metrics.instances.set(1)

    # --- users ---------------------------------------------------------------------------

    def share(self, name: str, value: Callable[[], Any]) -> None:
        """Publish ``value()`` (msgpack-able, small) as ``name`` in this instance's entry;
        call :meth:`changed` when it changes."""
        if name in ("ms", SEEN):
            raise ValueError(f"{name!r} is the registry's own field")
        self._fields[name] = value

    def on_others(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(alive)`` whenever :attr:`others` flips."""
        self._others_listeners.append(listener)

    def on_peers(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever :attr:`peers` changed (an entry, a join, an expiry)."""
        self._peers_listeners.append(listener)

    def changed(self) -> None:
        """A shared field changed: publish it soon if another instance is alive (alone,
        the next heartbeat carries it)."""
        self._dirty = True
        if self.others:
            self._wake.set()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Join the registry (idempotent; needs a running event loop)."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="weft-registry")

    @property
    def has_read(self) -> bool:
        """Whether the others' entries were read at least once."""
        return self._read.is_set()

    @property
    def synced(self) -> bool:
        """Whether the others' entries were read once while every live one listed this
        instance in ``seen``: what they published was current then (see the module
        docstring). Stays true."""
        return self._synced.is_set()

    def unsynced(self) -> list[str]:
        """The live instances whose entries do not list this one yet."""
        return sorted(name for name, entry in self.peers.items() if not _lists(entry, self))

    async def ready(self, timeout: float) -> bool:
        """Start, and wait (at most ``timeout``) until :attr:`synced`: the others' entries
        were read, each written after its instance knew of this one."""
        self.start()
        if self._task is None:  # closed
            return self._synced.is_set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        return self._synced.is_set()

    async def close(self, timeout: float = 2.0) -> None:
        """Stop heartbeating and leave the registry (bounded wait)."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # Not ``await task``: on Python 3.11 a cancel that lands as the task's wait
        # completes can be swallowed, and the task would run on.
        await asyncio.wait([task], timeout=timeout)
        key = keys.instance(self.instance)

        def leave(tr: Transaction) -> None:
            tr.clear(key)
            tr.add(keys.INSTANCES_BUMP, 1)

        try:
            async with asyncio.timeout(timeout):
                await self.kv.transact(leave)
        except Exception as exc:  # its heartbeat expires on its own
            log.warning("could not leave the instance registry: %s", exc)

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        """Heartbeat, publish changed fields, and read the others' entries whenever the
        registry's counter moves (and at every heartbeat, so expiries are noticed)."""
        watch: asyncio.Task[bytes | None] | None = None
        joined = False
        beat_at = publish_at = 0.0
        delay = 0.1
        try:
            while not self._closing:
                try:
                    self._wake.clear()
                    if watch is not None and watch.done():
                        fired, watch = watch, None
                        fired.result()  # a failed watch raises here: back off, retry
                    now = time.monotonic()
                    publish = self._dirty and self.others and now >= publish_at
                    if not joined or publish or now >= beat_at:
                        self._dirty = False  # a change during the write publishes again
                        try:
                            bump, rows = await self._write(announce=not joined or publish)
                        except BaseException:
                            self._dirty = self._dirty or publish or not joined
                            raise
                        joined = True
                        beat_at = now + HEARTBEAT_EVERY
                        if publish:
                            publish_at = now + PUBLISH_EVERY
                    else:
                        bump, rows = await self.kv.read(_read_registry)
                    self._update(rows)
                    self._read.set()
                    if watch is None:
                        watch = asyncio.create_task(
                            self.kv.watch(keys.INSTANCES_BUMP, bump), name="weft-registry-watch"
                        )
                    await self._sleep(watch, beat_at, publish_at)
                    delay = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception:  # a task boundary: log, back off, keep beating
                    log.warning("the instance registry failed; retrying", exc_info=True)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if watch is not None:
                watch.cancel()

    async def _sleep(
        self, watch: asyncio.Task[bytes | None], beat_at: float, publish: float
    ) -> None:
        """Until the registry moves, a field changes (while others are alive), or the next
        heartbeat or coalesced publish is due."""
        due = beat_at
        if self._dirty and self.others:
            due = min(due, publish)
        timeout = max(due - time.monotonic(), 0.0)
        if timeout == 0.0:
            return
        wake = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({watch, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()

    async def _write(self, announce: bool) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
        """Write this instance's entry (bumping the counter if ``announce``) and read the
        registry in the same transaction."""
        key = keys.instance(self.instance)
        entry: dict[str, Any] = {name: value() for name, value in self._fields.items()}
        entry["ms"] = int(time.time() * 1000)
        entry[SEEN] = sorted(self.peers)
        raw: bytes = msgpack.packb(entry)
        if len(raw) > MAX_VALUE:
            log.warning("registry entry of %d bytes over the value limit: heartbeat only", len(raw))
            raw = msgpack.packb({"ms": entry["ms"], SEEN: entry[SEEN]})

        def write(tr: Transaction) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
            tr.set(key, raw)
            if announce:
                tr.add(keys.INSTANCES_BUMP, 1)
            bump, rows = _read_registry(tr)
            # An instance that died without leaving (kill -9) never clears its entry, and
            # names are new at every start: whoever sees one long dead clears it.
            dead = {k for k, v in rows if k != key and _heartbeat(v) < entry["ms"] - FORGET_MS}
            for gone in dead:
                tr.clear(gone)
            return bump, [(k, v) for k, v in rows if k not in dead]

        result: tuple[bytes | None, list[tuple[bytes, bytes]]] = (
            await self.kv.transact(write)
        ).result
        return result

    def _update(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        peers = live_peers(rows, keys.instance(self.instance), int(time.time() * 1000))
        changed = peers != self.peers
        joined = peers.keys() - self.peers.keys()
        self.peers = peers
        if not self._synced.is_set() and all(_lists(e, self) for e in peers.values()):
            self._synced.set()
        if joined and not self._closing:  # a newcomer waits for our entry to list it
            self._dirty = True
            self._wake.set()
        if self.metrics is not None:
            self.metrics.instances.set(1 + len(peers))
        alive = bool(peers)
        if alive != self.others and not self._closing:
            self.others = alive
            if alive:
                log.info("another instance is alive: %s", ", ".join(sorted(peers)))
            else:
                log.info("no other instance is alive")
            for flip in self._others_listeners:
                flip(alive)
        if changed:
            for listener in self._peers_listeners:
                listener()


def _lists(entry: dict[str, Any], registry: Registry) -> bool:
    """Whether an instance's entry was written once it knew of ``registry``'s instance."""
    seen = entry.get(SEEN)
    return isinstance(seen, list) and registry.instance in seen


def _heartbeat(raw: bytes) -> float:
    """An entry's heartbeat (ms); one that does not decode counts as current (another
    version's, say: left for its owner)."""
    try:
        return int(msgpack.unpackb(raw)["ms"])
    except Exception:
        return float("inf")


def _read_registry(tr: Any) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    lo, hi = keys.instances_range()
    return tr.get(keys.INSTANCES_BUMP), tr.get_range(lo, hi)


def live_peers(rows: Iterable[tuple[bytes, bytes]], mine: bytes, now_ms: int) -> Peers:
    """The entries of ``rows`` (a read of the registry) other than ``mine`` whose heartbeat
    is within ``INSTANCE_TIMEOUT_MS`` of ``now_ms``, by instance name. A row that does not
    decode is skipped (another version's or damaged: it only costs that instance its
    share)."""
    peers: Peers = {}
    for key, raw in rows:
        if key == mine:
            continue
        with contextlib.suppress(Exception):
            entry = msgpack.unpackb(raw)
            name = keys.unpack(key)[1]
            if isinstance(entry, dict) and int(entry["ms"]) > now_ms - INSTANCE_TIMEOUT_MS:
                peers[str(name)] = entry
    return peers
