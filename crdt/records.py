"""What the history stores per update and per snapshot, and how big values are chunked.

Values are msgpack maps; anything over :data:`CHUNK` bytes is split into parts stored
under consecutive keys ``(..., vs, 0)``, ``(..., vs, 1)``… so that no value is over
FoundationDB's 100 kB limit. Readers join the parts of one versionstamp back together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
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
    return [value[i : i + CHUNK] for i in range(0, len(value), CHUNK)] or [b""]


def encode_record(update: bytes, user: str, client: str, session: str, ms: int) -> bytes:
    packed: bytes = msgpack.packb(
        {"update": update, "user": user, "client": client, "session": session, "ms": ms}
    )
    return packed


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


def encode_snapshot(
    state: bytes, count: int, size: int, pending: Iterable[bytes] = ()
) -> bytes:
    fields: dict[str, Any] = {"state": state, "count": count, "size": size}
    if pending := list(pending):
        fields["pending"] = pending
    packed: bytes = msgpack.packb(fields)
    return packed


def decode_snapshot(vs: Versionstamp, value: bytes) -> Snapshot:
    data = _unpack_map(value)
    pending = tuple(bytes(u) for u in data.get("pending", ()))
    return Snapshot(vs, bytes(data["state"]), int(data["count"]), int(data["size"]), pending)


def encode_segment(after: Versionstamp | None, update: bytes, count: int) -> bytes:
    packed: bytes = msgpack.packb(
        {"after": after.raw if after else b"", "update": update, "count": count}
    )
    return packed


def decode_segment(vs: Versionstamp, value: bytes) -> Segment:
    data = _unpack_map(value)
    after = bytes(data["after"])
    return Segment(
        vs, Versionstamp(after) if after else None, bytes(data["update"]), int(data["count"])
    )


def pending_updates(doc: Doc[Any], applied: Iterable[bytes]) -> list[bytes]:
    """The updates of ``applied`` (all applied to ``doc``) that ``doc`` holds pending.

    ``Doc.get_update()`` leaves out "pending" content: updates that arrived before an
    update they depend on, and deletions of items the doc has not seen. The log keeps
    updates in the order they arrived, so it can hold such updates; a snapshot of only
    ``get_update()`` would lose them for good once their dependencies arrive. Snapshots
    therefore keep these updates as they are, to be applied again after the state.
    An update counts as pending unless all its structs and deletions are inside the
    doc's state vector (a few integrated ones may be kept too; applying them twice is
    harmless). Usually the list is empty.
    """
    vector = doc.get_state()
    clocks = _clocks(vector)
    return [u for u in applied if not _integrated(u, vector, clocks)]


def _integrated(update: bytes, vector: bytes, clocks: dict[int, int]) -> bool:
    """Whether every struct and every deletion in ``update`` is inside ``vector``."""
    rest = get_update(update, vector)  # what ``update`` has beyond the state vector
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


def _clocks(vector: bytes) -> dict[int, int]:
    """Decode a lib0 state vector: varUint n, then n x (varUint client, varUint clock)."""
    count, pos = _varuint(vector, 0)
    out = {}
    for _ in range(count):
        client, pos = _varuint(vector, pos)
        out[client], pos = _varuint(vector, pos)
    return out


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
    """Join chunk parts ``prefix + (vs, part)`` back into one value per versionstamp.

    ``pairs`` may come in either direction; parts are joined in part order. A value whose
    parts are not all present is not yielded (the caller reads ranges that hold whole
    values, see ``History``).
    """
    current: Versionstamp | None = None
    parts: dict[int, bytes] = {}
    for key, value in pairs:
        vs, part = keys.unpack_stamped(key, prefix)
        if current is None or vs.raw != current.raw:
            if current is not None:
                yield current, _join(parts)
            current, parts = vs, {}
        parts[part] = value
    if current is not None:
        yield current, _join(parts)


def _join(parts: dict[int, bytes]) -> bytes:
    if len(parts) == 1 and 0 in parts:
        return parts[0]
    if sorted(parts) != list(range(len(parts))):
        raise StoreError("a chunked value in the store is missing parts")
    return b"".join(parts[i] for i in range(len(parts)))
