"""What the history stores per update and per snapshot, and how big values are chunked.

Values are msgpack maps; anything over :data:`CHUNK` bytes is split into parts stored
under consecutive keys ``(..., vs, 0)``, ``(..., vs, 1)``… so that no value is over
FoundationDB's 100 kB limit. Readers join the parts of one versionstamp back together.

An update record is written in one transaction with all its parts. A snapshot or a
segment can be bigger than one transaction may write, so its map starts with ``parts``,
the number of parts it was split into, and part 0 is written last (see
:func:`stored_parts`): until part 0 and every part it counts are in the store, readers
treat the value as absent (:func:`load_parts`). Values written before history format
1.1 have no ``parts`` field; for them, a map cut short shows as incomplete too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from blake3 import blake3
from pycrdt import Doc, get_update

from crdt import keys
from crdt.errors import StoreError
from crdt.versionstamp import Versionstamp

CHUNK = 90_000


@dataclass(frozen=True, slots=True)
class Record:
    """One update as stored: its bytes and who made it when."""

    versionstamp: Versionstamp
    update: bytes
    user: str
    client: str
    session: str
    ms: int

    @property
    def size(self) -> int:
        return len(self.update)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The full state of a document as of ``versionstamp`` (inclusive)."""

    versionstamp: Versionstamp
    state: bytes
    count: int
    size: int
    pending: tuple[bytes, ...] = ()  # updates to apply after ``state`` (see pending_updates)


@dataclass(frozen=True, slots=True)
class Segment:
    """Several consecutive updates as one diff, to replay an old version fast.

    Applied to the document as of ``after`` (``None``: the empty document) it gives the
    document as of ``versionstamp``; ``count`` updates are folded into it. Written with
    snapshots, only for stretches where nothing was pending (so the diff is exact).
    """

    versionstamp: Versionstamp
    after: Versionstamp | None
    update: bytes
    count: int


def chunks(value: bytes) -> list[bytes]:
    """``value`` split into parts of at most :data:`CHUNK` bytes (at least one part)."""
    if len(value) <= CHUNK:
        return [value]
    return [value[i : i + CHUNK] for i in range(0, len(value), CHUNK)]


def encode_record(update: bytes, user: str, client: str, session: str, ms: int) -> bytes:
    """msgpack of ``{"update", "user", "client", "session", "ms"}``, in that order.

    Built by hand from a cached packing of everything but the update (the same for all
    the updates of one device in one transaction): one record is encoded per appended
    update. Byte-identical to ``msgpack.packb`` of the dict (tests check it)."""
    return record_header(len(update)) + update + record_tail(user, client, session, ms)


def record_header(size: int) -> bytes:
    """A record's bytes before its update of ``size`` bytes: the map's header and the
    "update" entry's key and bin header."""
    if size < 0x100:
        return SMALL_RECORD_HEADERS[size]
    if size < 0x10000:
        return b"\x85\xa6update\xc5" + size.to_bytes(2, "big")  # bin 16
    return b"\x85\xa6update\xc6" + size.to_bytes(4, "big")  # bin 32


SMALL_RECORD_HEADERS = [b"\x85\xa6update\xc4" + bytes((size,)) for size in range(0x100)]  # bin 8


@functools.lru_cache(maxsize=256)
def record_tail(user: str, client: str, session: str, ms: int) -> bytes:
    """A record's bytes after its update: its other four entries."""
    packed: bytes = msgpack.packb({"user": user, "client": client, "session": session, "ms": ms})
    return packed[1:]  # without the 4-entry map header: the record's map has 5


def decode_record(vs: Versionstamp, value: bytes) -> Record:
    data = _unpack_map(value)
    return Record(
        vs,
        bytes(data["update"]),
        str(data.get("user", "")),
        str(data.get("client", "")),
        str(data.get("session", "")),
        int(data.get("ms", 0)),
    )


def decode_records(pairs: Sequence[tuple[bytes, bytes]], prefix: bytes) -> list[Record]:
    """``decode_record`` over ``group_parts(pairs, prefix)``: the log records of a range
    read. Replay and snapshots read a thousand at a time, so the usual shape (every
    record in one part, as records under ``CHUNK`` are) is decoded here in one pass;
    anything else takes the general path."""
    n = len(prefix)
    out: list[Record] = []
    last = b""
    for key, value in pairs:
        raw = key[n + 1 : n + 13]
        single = len(key) == n + 14 and key[n] == 0x33 and key[n + 13] == 0x14  # (vs, 0)
        if not single or raw == last or not key.startswith(prefix):
            return [decode_record(vs, v) for vs, v in group_parts(pairs, prefix)]
        last = raw
        try:
            data = msgpack.unpackb(value, raw=False)
            update = data["update"]
            record = Record(
                Versionstamp(raw),
                update if type(update) is bytes else bytes(update),
                str(data.get("user", "")),
                str(data.get("client", "")),
                str(data.get("session", "")),
                int(data.get("ms", 0)),
            )
        except Exception:  # corrupt: the general path says how, as it always did
            return [decode_record(vs, v) for vs, v in group_parts(pairs, prefix)]
        out.append(record)
    return out


def encode_snapshot(
    state: bytes, count: int, size: int, pending: Iterable[bytes] = ()
) -> list[bytes]:
    """A snapshot's parts; store part 0 last (see :func:`stored_parts`)."""
    fields: dict[str, Any] = {"state": state, "count": count, "size": size}
    if pending := list(pending):
        fields["pending"] = pending
    return stored_parts(fields)


def decode_snapshot(vs: Versionstamp, parts: Mapping[int, bytes]) -> Snapshot | None:
    """The snapshot stored in ``parts`` (by part number); ``None`` while incomplete."""
    data = load_parts(parts)
    if data is None:
        return None
    pending = tuple(bytes(u) for u in data.get("pending", ()))
    return Snapshot(vs, bytes(data["state"]), int(data["count"]), int(data["size"]), pending)


def encode_segment(after: Versionstamp | None, update: bytes, count: int) -> list[bytes]:
    """A segment's parts; store part 0 last (see :func:`stored_parts`)."""
    return stored_parts({"after": after.raw if after else b"", "update": update, "count": count})


def decode_segment(vs: Versionstamp, parts: Mapping[int, bytes]) -> Segment | None:
    """The segment stored in ``parts`` (by part number); ``None`` while incomplete."""
    data = load_parts(parts)
    if data is None:
        return None
    after = bytes(data["after"])
    return Segment(
        vs, Versionstamp(after) if after else None, bytes(data["update"]), int(data["count"])
    )


def stored_parts(fields: dict[str, Any]) -> list[bytes]:
    """``fields`` as one msgpack map that starts with ``parts`` (how many parts it is
    split into), split into parts of at most :data:`CHUNK` bytes.

    Write part 0 last, in the last transaction: a reader takes the value as whole only
    once part 0 and every part it counts are there, so a write cut short by a crash (or
    still under way) reads as no value, never as a truncated one.

    A value of more than one part also carries ``sum`` (second, right after ``parts``):
    the blake3 of the fields that follow it. Two writers of the same key may write it
    in different bytes (a snapshot built on from a kept doc, or from an older snapshot
    after a stale read: the same document, laid out differently) and, over several
    transactions each, mix their parts; the sum tells such a mix from a whole value,
    and readers take it as no value (see :func:`load_parts`).
    """
    body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in fields.items())
    head = msgpack.Packer().pack_map_header(len(fields) + 1) + _PARTS_KEY
    value = head + b"\x01" + body
    if len(value) <= CHUNK:
        return [value]
    head = msgpack.Packer().pack_map_header(len(fields) + 2) + _PARTS_KEY
    summed = _SUM_KEY + _SUM_BIN + blake3(body).digest(_SUM_SIZE) + body
    count = 2
    while True:  # the count's own size can change the count (at most a step or two)
        needed = -(-(len(head) + len(msgpack.packb(count)) + len(summed)) // CHUNK)
        if needed == count:
            return chunks(head + msgpack.packb(count) + summed)
        count = needed


def load_parts(parts: Mapping[int, bytes]) -> dict[str, Any] | None:
    """The map written by :func:`stored_parts` from its parts (by part number), or
    ``None`` while it is incomplete. Parts numbered past the count are left over from an
    earlier write of the same value that was cut short, and are ignored.

    A value written before the ``parts`` field (history format 1.0) had its part 0
    written first; it counts as whole when its parts run 0..n-1 and hold a whole map.
    A map cut short is incomplete; any other undecodable value is a :class:`StoreError`.
    """
    first = parts.get(0)
    if first is None:
        return None
    count = _declared_parts(first)
    if count == 1:
        return _unpack_map(first)
    if count is not None:
        if count > len(parts) or any(i not in parts for i in range(1, count)):
            return None
        value = b"".join(parts[i] for i in range(count))
        if not _whole(value):
            return None  # parts of two writes of this value: the one before is used
        data = _unpack_map(value)
        data.pop("sum", None)
        return data
    if sorted(parts) != list(range(len(parts))):
        return None
    value = b"".join(parts[i] for i in range(len(parts)))
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(value), 1))
    unpacker.feed(value)
    try:
        data = unpacker.unpack()
    except msgpack.OutOfData:
        return None
    except (ValueError, msgpack.UnpackException) as exc:
        raise StoreError(f"corrupt record in the store: {exc}") from exc
    if unpacker.tell() != len(value) or not isinstance(data, dict):
        raise StoreError("corrupt record in the store: not one map")
    return data


_PARTS_KEY = b"\xa5parts"  # msgpack's "parts"
_UINT_SIZES = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}  # msgpack uint 8/16/32/64, with type byte
_SUM_KEY = b"\xa3sum"  # msgpack's "sum"
_SUM_SIZE = 16
_SUM_BIN = b"\xc4" + bytes((_SUM_SIZE,))  # msgpack bin 8 of 16 bytes


def _whole(value: bytes) -> bool:
    """Whether a value of several parts holds the fields its ``sum`` was taken of (a
    value written before sums, format 1.3 and older, has none: taken as whole)."""
    size = 1 if value[7] < 0x80 else _UINT_SIZES.get(value[7], 1)
    at = 7 + size  # past the map header, ``parts`` and its count
    if value[at : at + len(_SUM_KEY) + len(_SUM_BIN)] != _SUM_KEY + _SUM_BIN:
        return True
    at += len(_SUM_KEY) + len(_SUM_BIN)
    return blake3(value[at + _SUM_SIZE :]).digest(_SUM_SIZE) == value[at : at + _SUM_SIZE]


def _declared_parts(first: bytes) -> int | None:
    """The part count at the start of a value's part 0; ``None`` for a format 1.0 value.

    Read by hand (it is on every replay's path): a map of at most 15 fields (one byte,
    0x80 + n), the key ``parts``, then an unsigned integer.
    """
    if len(first) < 8 or first[0] & 0xF0 != 0x80 or first[1:7] != _PARTS_KEY:
        return None  # not a map that starts with ``parts``: the 1.0 decoder will tell
    size = 1 if first[7] < 0x80 else _UINT_SIZES.get(first[7], 0)
    count = msgpack.unpackb(first[7 : 7 + size]) if size else None
    if not isinstance(count, int) or count < 1:
        raise StoreError(f"corrupt record in the store: part count {first[7:16]!r}")
    return count


def pending_updates(
    doc: Doc[Any], applied: Iterable[bytes], vector: bytes | None = None
) -> list[bytes]:
    """The updates of ``applied`` (all applied to ``doc``) that ``doc`` holds pending.

    ``Doc.get_update()`` leaves out "pending" content: updates that arrived before an
    update they depend on, and deletions of items the doc has not seen. The log keeps
    updates in the order they arrived, so it can hold such updates; a snapshot of only
    ``get_update()`` would lose them for good once their dependencies arrive. Snapshots
    therefore keep these updates as they are, to be applied again after the state.
    An update counts as pending unless all its structs and deletions are inside the
    doc's state vector (a few integrated ones may be kept too; applying them twice is
    harmless). Usually the list is empty. ``vector``: ``doc.get_state()``, if the caller
    has it already.
    """
    if vector is None:
        vector = doc.get_state()
    clocks: dict[int, int] | None = None
    out = []
    for update in applied:
        rest = get_update(update, vector)  # what ``update`` has beyond the state vector
        if rest == _NOTHING:  # all its structs integrated, no deletions: the usual case
            continue
        if clocks is None:
            clocks = state_vector_clocks(vector)
        if not _integrated(rest, clocks):
            out.append(update)
    return out


def holds_pending(doc: Doc[Any], update: bytes, vector: bytes | None = None) -> bool:
    """Whether ``doc``, ``update`` applied to it, holds some of ``update`` pending:
    ``pending_updates(doc, [update]) == [update]``. A room asks this of every update it
    applies (about 3 µs for a one-character one; decoding the state vector, which
    costs ~25 µs with 50 clients, is left to updates that delete something).
    ``vector``: ``doc.get_state()``, if the caller has it already."""
    return bool(pending_updates(doc, [update], vector))


_NOTHING = b"\x00\x00"  # a v1 update with no structs and an empty delete set


def _integrated(rest: bytes, clocks: dict[int, int]) -> bool:
    """Whether an update is all inside a state vector, given what ``get_update`` left
    of it against that vector (``rest``) and the vector's ``clocks``."""
    if rest[:1] != b"\x00":  # some structs (clients > 0) are not integrated
        return False
    # ``rest`` is: no structs (0), then the update's whole delete set.
    clients, pos = _varuint(rest, 1)
    for _ in range(clients):
        client, pos = _varuint(rest, pos)
        count, pos = _varuint(rest, pos)
        for _ in range(count):
            clock, pos = _varuint(rest, pos)
            length, pos = _varuint(rest, pos)
            if clock + length > clocks.get(client, 0):
                return False
    return True


def state_vector_clocks(vector: bytes) -> dict[int, int]:
    """Decode a lib0 state vector: varUint n, then n x (varUint client, varUint clock)."""
    count, pos = _varuint(vector, 0)
    out = {}
    for _ in range(count):
        client, pos = _varuint(vector, pos)
        out[client], pos = _varuint(vector, pos)
    return out


_VARUINT = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
# A v1 update's header: its number of struct groups and its first group's number of
# structs, neither 0 (the one byte 0x00), then the first group's client and clock.
_HEADER = re.compile(
    rb"(?!\x00)" + _VARUINT + rb"(?!\x00)" + _VARUINT + b"(" + _VARUINT + b")(" + _VARUINT + b")"
)


def first_struct(update: bytes) -> tuple[bytes, int] | None:
    """The id of the first struct of a v1 update (the first client group's start): its
    client as the varuint bytes it is written with, and its clock; ``None`` when the
    update has no structs or its header does not decode. A pure function of the bytes:
    the idempotency index files an update under it (``crdt.keys``), so one client's
    updates land next to each other, in clock order. The client is kept encoded: it
    only has to tell clients apart, and decoding it cost more than the rest."""
    header = _HEADER.match(update, 0, 40)
    if header is None:
        return None  # no struct groups (a delete set only), an empty first group, garbage
    client, clock_bytes = header.groups()
    if len(clock_bytes) == 1:  # a clock below 128
        return client, clock_bytes[0]
    if len(clock_bytes) == 2:  # below 16384
        return client, (clock_bytes[0] & 0x7F) | clock_bytes[1] << 7
    clock = shift = 0
    for byte in clock_bytes:
        clock |= (byte & 0x7F) << shift
        shift += 7
    return client, clock


def _varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise StoreError("truncated state vector or delete set")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _unpack_map(value: bytes) -> dict[str, Any]:
    try:
        data = msgpack.unpackb(value, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise StoreError(f"corrupt record in the store: {exc}") from exc
    if not isinstance(data, dict):
        raise StoreError("corrupt record in the store: not a map")
    return data


def group_parts(
    pairs: Iterable[tuple[bytes, bytes]], prefix: bytes
) -> Iterator[tuple[Versionstamp, bytes]]:
    """Join chunk parts ``prefix + (vs, part)`` of update records back into one value per
    versionstamp (a record's parts are written in one transaction: all or none).

    ``pairs`` may come in either direction; parts are joined in part order. Missing parts
    are a :class:`StoreError` (the caller reads ranges that hold whole values, see
    ``History``).
    """
    for vs, parts in group_stored(pairs, prefix):
        yield vs, _join(parts)


def group_stored(
    pairs: Iterable[tuple[bytes, bytes]], prefix: bytes
) -> Iterator[tuple[Versionstamp, dict[int, bytes]]]:
    """The parts ``prefix + (vs, part)`` of each versionstamp, by part number, in the
    order of ``pairs`` (for :func:`decode_snapshot` and :func:`decode_segment`)."""
    current: Versionstamp | None = None
    parts: dict[int, bytes] = {}
    for key, value in pairs:
        vs, part = keys.unpack_stamped(key, prefix)
        if current is None or vs.raw != current.raw:
            if current is not None:
                yield current, parts
            current, parts = vs, {}
        parts[part] = value
    if current is not None:
        yield current, parts


def _join(parts: dict[int, bytes]) -> bytes:
    if len(parts) == 1 and 0 in parts:
        return parts[0]
    if sorted(parts) != list(range(len(parts))):
        raise StoreError("a chunked value in the store is missing parts")
    return b"".join(parts[i] for i in range(len(parts)))
