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


def encode_snapshot(state: bytes, count: int, size: int) -> bytes:
    packed: bytes = msgpack.packb({"state": state, "count": count, "size": size})
    return packed


def decode_snapshot(vs: Versionstamp, value: bytes) -> Snapshot:
    data = _unpack_map(value)
    return Snapshot(vs, bytes(data["state"]), int(data["count"]), int(data["size"]))


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
        vs, part = keys.unpack(key, prefix)
        if vs != current:
            if current is not None:
                yield current, _join(parts)
            current, parts = vs, {}
        parts[part] = value
    if current is not None:
        yield current, _join(parts)


def _join(parts: dict[int, bytes]) -> bytes:
    if sorted(parts) != list(range(len(parts))):
        raise StoreError("a chunked value in the store is missing parts")
    return b"".join(parts[i] for i in range(len(parts)))
