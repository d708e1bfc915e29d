"""Replay and snapshot building: how a document is rebuilt from its history.

:class:`crdt.history.History` reads and writes the log; this module holds what it does
with what it read, so the log's write path stays short:

- the reads one replay needs, in one read transaction (``_replay_reads``: the latest
  whole snapshot at or before a version, the chain of whole segments after it, then the
  updates after those; ``_whole_values`` for a range read whose limit may cut a chunked
  value);
- applying them to a ``pycrdt.Doc`` (``_start``, ``_apply``, ``_build`` ->
  :class:`Replayed`); an update pycrdt cannot integrate is logged and skipped;
- the next snapshot and its segments, and their writes in commit order
  (``_next_snapshot``, ``_next_snapshot_writes``).

Nothing here touches the engine except through the transaction it is handed. It logs
to ``weft.history``, as it did when it lived in :mod:`crdt.history`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pycrdt import Doc, merge_updates

from crdt import keys, ydoc
from crdt.kv.base import ReadTransaction
from crdt.logsafe import printable
from crdt.records import (
    Record,
    Segment,
    Snapshot,
    decode_records,
    decode_segment,
    decode_snapshot,
    encode_segment,
    encode_snapshot,
    group_stored,
    pending_updates,
)
from crdt.versionstamp import Versionstamp

if TYPE_CHECKING:
    from crdt.history import DocRef

log = logging.getLogger("weft.history")


@dataclass(frozen=True, slots=True)
class Replayed:
    """A document rebuilt at a version: its state and the last versionstamp in it."""

    doc: Doc[Any]
    versionstamp: Versionstamp | None
    updates_applied: int
    # what was applied to ``doc`` after the snapshot's state (see ``state``)
    applied: tuple[bytes, ...] = ()

    def state(self) -> bytes:
        """The document as one update, including the updates ``doc`` holds pending
        (``Doc.get_update`` leaves out an update whose dependencies never arrived: the
        log keeps updates in arrival order, so it can end with such an update)."""
        state = self.doc.get_update()
        pending = pending_updates(self.doc, self.applied)
        return merge_updates(state, *pending) if pending else state


def _whole_values(
    tr: ReadTransaction, begin: bytes, end: bytes, prefix: bytes, limit: int, reverse: bool
) -> list[tuple[bytes, bytes]]:
    """The chunk parts in [begin, end) of the first ``limit`` values (0: all), each whole.

    ``limit`` counts values, not parts: a value stored in several chunks is one of them,
    or a page holding one would come back short, and a caller paging until a short page
    (a room's tail reader, a device's outbox) would stop with values still to come."""
    pairs = tr.get_range(begin, end, limit=limit, reverse=reverse)
    if not limit or len(pairs) < limit:
        return pairs  # the whole range: every value is whole
    out: list[tuple[bytes, bytes]] = []
    values = 0
    last: object = None
    while True:
        for pair in pairs:
            vs = keys.unpack(pair[0], prefix)[0]
            if vs != last:
                if values == limit:
                    return out  # the next value starts: the ones before are whole
                values += 1
                last = vs
            out.append(pair)
        if len(pairs) < limit:
            return out  # the range ended
        if reverse:
            end = pairs[-1][0]
        else:
            begin = pairs[-1][0] + b"\x00"
        pairs = tr.get_range(begin, end, limit=limit, reverse=reverse)


def _replay_reads(
    tr: ReadTransaction, doc: DocRef, at: Versionstamp | None, with_segments: bool = False
) -> tuple[Snapshot | None, list[Segment], list[Record]]:
    """The latest whole snapshot at or before ``at``, then (``with_segments``) the chain
    of whole segments after it up to ``at``, then the updates after those, up to ``at``."""
    u_prefix, g_prefix = doc.key("u"), doc.key("g")
    snapshot = _latest_snapshot(tr, doc, at)
    base = snapshot.versionstamp if snapshot else None
    segments: list[Segment] = []
    if with_segments:
        begin = keys.pack(("g", base), doc.space) + b"\xff" if base else g_prefix + b"\x00"
        end = keys.pack(("g", at), doc.space) + b"\xff" if at else g_prefix + b"\xff"
        for vs, parts in group_stored(tr.get_range(begin, end), g_prefix):
            segment = decode_segment(vs, parts)
            if segment is None or segment.after != base:
                break  # the chain stops where a stretch has no (whole) segment
            segments.append(segment)
            base = vs
    begin = keys.pack(("u", base), doc.space) + b"\xff" if base else u_prefix + b"\x00"
    end = keys.pack(("u", at), doc.space) + b"\xff" if at else u_prefix + b"\xff"
    records = decode_records(tr.get_range(begin, end), u_prefix)
    return snapshot, segments, records


def _latest_snapshot(tr: ReadTransaction, doc: DocRef, at: Versionstamp | None) -> Snapshot | None:
    """The latest whole snapshot at or before ``at`` (``None``: head). One whose write
    is under way or was cut short is skipped for the one before it."""
    prefix = doc.key("s")
    end = keys.pack(("s", at), doc.space) + b"\xff" if at else prefix + b"\xff"
    while last := tr.get_range(prefix + b"\x00", end, limit=1, reverse=True):
        vs = keys.unpack_stamped(last[0][0], prefix)[0]
        lo, hi = keys.prefix_range(keys.pack(("s", vs), doc.space))
        parts = {keys.unpack_stamped(k, prefix)[1]: v for k, v in tr.get_range(lo, hi)}
        snapshot = decode_snapshot(vs, parts)
        if snapshot is not None:
            return snapshot
        log.info(
            "snapshot of %s at %s is not whole; using the one before",
            printable(doc.path),
            vs.hex(),
        )
        end = lo
    return None


class Logged(Protocol):
    """What building a snapshot needs of a log record: a :class:`Record`, or an update
    its writer still holds (see :func:`known_records`)."""

    @property
    def versionstamp(self) -> Versionstamp: ...

    @property
    def update(self) -> bytes: ...

    @property
    def size(self) -> int: ...


def known_records(
    snapshot: Snapshot | None, head: Versionstamp, count: int, known: Iterable[Logged]
) -> list[Logged] | None:
    """The log's records after ``snapshot`` up to ``head`` (in log order), taken from
    ``known`` instead of read from the store, or ``None`` if ``known`` lacks any.

    ``known`` holds updates that are in the log under their versionstamps, e.g. those
    a server committed itself; ``count`` is the doc's update count at ``head`` (its head
    value). The log holds exactly ``count - snapshot.count`` records in (snapshot,
    head]; the distinct known ones in that range are some of them, so when there are as
    many, they are all of them. Anything else (another writer, a restart, an update
    committed by another path) shows as fewer, and the caller reads the log.
    """
    after = snapshot.versionstamp.raw if snapshot is not None else b""
    last = head.raw
    distinct = {r.versionstamp.raw: r for r in known if after < r.versionstamp.raw <= last}
    if len(distinct) != count - (snapshot.count if snapshot is not None else 0):
        return None
    return [distinct[vs] for vs in sorted(distinct)]


def _next_snapshot_writes(
    doc: DocRef,
    snapshot: Snapshot | None,
    records: Sequence[Logged],
    segment_every: int,
    start: Doc[Any] | None = None,
) -> tuple[Snapshot, list[tuple[bytes, bytes]], Doc[Any]]:
    """The next snapshot, and it and its segments as writes in commit order: segments
    first, and each value's part 0 (its commit marker) after the rest of its parts. A
    write cut short at any point leaves whole values and at most one partial one, which
    readers skip. Writing a value again (after a crash) writes the same bytes: a
    ``pycrdt`` doc built fresh from the same updates encodes the same. A build that
    went on from ``start`` holds the same document but may encode it differently
    (``History.write_snapshot`` uses such a build only when it fits one transaction).
    Also the doc built (it holds the new snapshot, see ``_next_snapshot``)."""
    new, segments, built = _next_snapshot(snapshot, records, segment_every, start)
    _yield_gil()
    values = [
        ("g", seg.versionstamp, encode_segment(seg.after, seg.update, seg.count))
        for seg in segments
    ]
    values.append(
        ("s", new.versionstamp, encode_snapshot(new.state, new.count, new.size, new.pending))
    )
    writes = [
        (doc.key(kind, vs, n), parts[n])
        for kind, vs, parts in values
        for n in [*range(1, len(parts)), 0]
    ]
    return new, writes, built


def _next_snapshot(
    snapshot: Snapshot | None,
    records: Sequence[Logged],
    segment_every: int,
    start: Doc[Any] | None = None,
) -> tuple[Snapshot, list[Segment], Doc[Any]]:
    """The snapshot after ``records`` (its state, and what the doc still holds pending),
    and a segment for each run of ``segment_every`` records, as long as nothing was
    pending: then a segment's diff is exactly what its updates did; and the doc built.

    ``start``, if given, is a doc holding exactly ``snapshot`` and nothing pending (the
    doc this returned when it built ``snapshot``): it is used, and changed, instead of
    a new doc made from ``snapshot``, which costs more the bigger the doc (loading a
    130 kB state took 3 ms; the thousand one-character updates after it, 1 ms). The
    result holds the same document either way; its bytes can differ (maps)."""
    doc = _start(snapshot) if start is None or snapshot is None or snapshot.pending else start
    base = snapshot.versionstamp if snapshot else None
    clean = snapshot is None or not snapshot.pending
    segments: list[Segment] = []
    integrated = 0  # records known to be integrated (none pending): the segments' ones
    for at in range(0, len(records), segment_every):
        group = records[at : at + segment_every]
        whole = clean and len(group) == segment_every
        _yield_gil()
        before = doc.get_state() if whole else b""
        _apply(doc, (r.update for r in group))
        if whole:
            if pending_updates(doc, [r.update for r in group]):
                clean = False
                continue
            last = group[-1].versionstamp
            segments.append(Segment(last, base, doc.get_update(before), len(group)))
            base = last
            integrated = at + len(group)
    _yield_gil()
    # An update once integrated stays so: only the others can still be pending.
    unknown = records[integrated:]
    applied = [*(snapshot.pending if snapshot else ()), *(r.update for r in unknown)]
    new = Snapshot(
        records[-1].versionstamp,
        doc.get_update(),
        (snapshot.count if snapshot else 0) + len(records),
        (snapshot.size if snapshot else 0) + sum(r.size for r in records),
        tuple(pending_updates(doc, applied)),
    )
    return new, segments, doc


def _yield_gil() -> None:
    """Let other threads run: a snapshot is built in a worker thread of a server whose
    event loop needs the GIL too, and pycrdt keeps it through its calls. Left to the
    interpreter, the loop waited up to the 5 ms switch interval each time it wanted the
    GIL back while a build ran (a tick's lateness, p50: 5.8 ms; with this between the
    groups of ``_next_snapshot``: 0.75 ms). ``sleep(0)`` releases and retakes it."""
    time.sleep(0)


def _start(snapshot: Snapshot | None) -> Doc[Any]:
    """A doc holding ``snapshot``. Its pending updates go first: they were waiting for
    dependencies when it was taken, and yrs integrates an update differently when its
    dependencies are already there (see ``records.pending_updates``)."""
    doc: Doc[Any] = Doc()
    if snapshot is not None:
        _apply(doc, [*snapshot.pending, snapshot.state])
    return doc


def _apply(doc: Doc[Any], updates: Iterable[bytes]) -> None:
    """Apply in order; an update pycrdt cannot integrate is logged and skipped, so one bad
    record never makes a document unreadable (it stays in the log, untouched)."""
    ydoc.apply_all(doc, updates, _skip)


def _skip(update: bytes, exc: ydoc.UnusableUpdate) -> None:
    log.error("skipping a stored update (%d bytes): %s", len(update), exc)


def _build(
    snapshot: Snapshot | None, records: list[Record], segments: Sequence[Segment] = ()
) -> Replayed:
    doc = _start(snapshot)
    updates = [*(s.update for s in segments), *(r.update for r in records)]
    _apply(doc, updates)
    vs = snapshot.versionstamp if snapshot else None
    if segments:
        vs = segments[-1].versionstamp
    if records:
        vs = records[-1].versionstamp
    pending = snapshot.pending if snapshot is not None else ()
    return Replayed(doc, vs, len(records), (*pending, *updates))


__all__ = ["Replayed"]
