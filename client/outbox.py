"""One document's outbox: local updates the server has not acknowledged yet.

Every local update is first appended to the device's local history (that is what makes
it durable); the outbox is the tail of that history the server has not acked — the
local updates after the ``acked`` cursor. Pure bookkeeping, no I/O:

- :meth:`Outbox.take` groups the next unsent updates into one send (merged with
  ``pycrdt.merge_updates`` when there are several: 1,000 offline edits travel as one
  update, one commit, one ack), bounded in bytes and count;
- :meth:`Outbox.ack` marks a send acknowledged (by the blake3 hash the server echoes)
  and moves the cursor over every send acknowledged in order; only then are updates
  dropped;
- :meth:`Outbox.reset` forgets what was in flight when a connection ends: those updates
  are sent again on the next one. Re-sending is safe: the server's appends are
  idempotent by hash, and a CRDT update applied twice changes nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from pycrdt import merge_updates

from crdt.history import update_hash
from crdt.versionstamp import Versionstamp
from crdt.ydecode import ranges_within, struct_ranges

MAX_SEND_BYTES = 1 << 20
MAX_SEND_UPDATES = 5_000


@dataclass(frozen=True, slots=True)
class Pending:
    """A local update as recorded in the local history."""

    versionstamp: Versionstamp
    update: bytes


@dataclass(slots=True)
class Send:
    """One message's worth of the outbox: ``count`` updates up to ``last``, merged."""

    update: bytes
    hash: bytes
    last: Versionstamp
    count: int
    acked: Versionstamp | None = None


class Outbox:
    """See the module docstring."""

    def __init__(
        self,
        acked: Versionstamp | None = None,
        pending: list[Pending] | None = None,
        *,
        max_bytes: int = MAX_SEND_BYTES,
        max_updates: int = MAX_SEND_UPDATES,
    ) -> None:
        self.cursor = acked
        self.max_bytes = max_bytes
        self.max_updates = max_updates
        self._pending: deque[Pending] = deque(
            p for p in pending or [] if acked is None or p.versionstamp > acked
        )
        self._inflight: deque[Send] = deque()
        self._sent = 0  # how many of _pending the in-flight sends cover

    def __len__(self) -> int:
        """Local updates not acknowledged yet (sent or not)."""
        return len(self._pending)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def last(self) -> Versionstamp | None:
        """The versionstamp of the document's last local update recorded, acknowledged
        or not (None: it has none)."""
        return self._pending[-1].versionstamp if self._pending else self.cursor

    @property
    def unsent(self) -> int:
        return len(self._pending) - self._sent

    def add(self, versionstamp: Versionstamp, update: bytes) -> None:
        """A local update was recorded; one already here (or acknowledged) is ignored
        (the recorder re-adds what a partly failed append had already stored)."""
        if self.cursor is not None and versionstamp <= self.cursor:
            return
        behind = bool(self._pending) and versionstamp <= self._pending[-1].versionstamp
        if behind and any(p.versionstamp == versionstamp for p in self._pending):
            return
        self._pending.append(Pending(versionstamp, update))

    def add_stored(self, versionstamp: Versionstamp, update: bytes) -> None:
        """A local update the server had stored before it was recorded (a new file's
        ``Create``): acknowledged at once when no other waits, else sent in its turn
        (the server finds it stored and acknowledges it again)."""
        if self._pending:
            self.add(versionstamp, update)
        elif self.cursor is None or versionstamp > self.cursor:
            self.cursor = versionstamp

    def take(self) -> Send | None:
        """The next send: unsent updates in order, merged, within the bounds."""
        if self._sent >= len(self._pending):
            return None
        group: list[Pending] = []
        size = 0
        for index in range(self._sent, len(self._pending)):
            item = self._pending[index]
            if group and (
                len(group) >= self.max_updates or size + len(item.update) > self.max_bytes
            ):
                break
            group.append(item)
            size += len(item.update)
        update = group[0].update if len(group) == 1 else merge_updates(*(p.update for p in group))
        send = Send(update, update_hash(update), group[-1].versionstamp, len(group))
        self._inflight.append(send)
        self._sent += len(group)
        return send

    def take_all(self, update: bytes) -> Send | None:
        """One send of every unsent update, carrying ``update`` instead of their merge:
        an update that holds them all and more (what a server restored from an older
        backup lacks besides them). Its ack moves the cursor over all of them."""
        if self._sent >= len(self._pending):
            return None
        count = len(self._pending) - self._sent
        send = Send(update, update_hash(update), self._pending[-1].versionstamp, count)
        self._inflight.append(send)
        self._sent += count
        return send

    def covers(self, update: bytes, also: Sequence[bytes] = ()) -> bool:
        """Whether every struct ``update`` carries is one of the updates not acknowledged
        yet's, or of ``also`` (False: it holds more, e.g. acknowledged updates that a
        server restored from an older backup lost). Deletions are not compared."""
        updates = [p.update for p in self._pending] + list(also)
        known = [r for u in updates for r in struct_ranges(u)]
        return ranges_within(struct_ranges(update), known)

    def ack(self, digest: bytes, versionstamp: Versionstamp) -> Versionstamp | None:
        """The server acknowledged the send with hash ``digest``; returns the new cursor
        when it moved (None for an unknown hash, e.g. an ack from before a reconnect)."""
        for send in self._inflight:
            if send.hash == digest and send.acked is None:
                send.acked = versionstamp
                break
        else:
            return None
        moved = False
        while self._inflight and self._inflight[0].acked is not None:
            done = self._inflight.popleft()
            for _ in range(done.count):
                self._pending.popleft()
            self._sent -= done.count
            self.cursor = done.last
            moved = True
        return self.cursor if moved else None

    def merged(self, digest: bytes) -> bool:
        """Whether the in-flight send with hash ``digest`` merged several updates (a
        refusal of it as too big is followed by sending them one at a time)."""
        return any(send.hash == digest and send.count > 1 for send in self._inflight)

    def unmerge(self) -> bool:
        """Send each update on its own from now on (the server refused a merged send as
        too big: a tenant's limit can be below ``max_bytes``); False if that is already
        so, and the refused send was one update."""
        if self.max_updates == 1:
            return False
        self.max_updates = 1
        return True

    def reset(self) -> None:
        """The connection ended: what was in flight will be sent again."""
        self._inflight.clear()
        self._sent = 0
