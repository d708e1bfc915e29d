"""The ordered key-value protocol every engine implements (modelled on FoundationDB).

Transaction functions are plain synchronous callables ``fn(tr) -> T``. They must be
retryable: an engine may run one more than once (conflicts, busy stores), so they do
nothing but read and write through ``tr``. Engines run them off the event loop; only
``transact``, ``read`` and ``watch`` are coroutines.

Limits (FDB's, enforced by every engine so code that passes on SQLite passes on FDB):
keys up to 10,000 bytes, values up to 100,000 bytes, a transaction's writes up to
10,000,000 bytes. Over a limit raises :class:`~crdt.errors.TransactionTooLarge`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from crdt.errors import TransactionTooLarge

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

MAX_KEY = 10_000
MAX_VALUE = 100_000
MAX_TRANSACTION = 10_000_000
PLACEHOLDER_LEN = 10


class ReadTransaction(Protocol):
    """A consistent snapshot read."""

    def get(self, key: bytes) -> bytes | None: ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The values of several keys, in order: one round trip where the engine can
        (FDB: all reads in flight at once; SQLite: one ``IN`` query per few hundred)."""
        ...

    def get_range(
        self, begin: bytes, end: bytes, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """Pairs with ``begin <= key < end`` in memcmp order (``limit`` 0: no limit)."""
        ...

    def read_version(self) -> int:
        """The commit version this transaction reads at: at least the version of every
        commit that completed before it started (FDB: its read version; SQLite: the
        commit counter). A versionstamp whose first 8 bytes (its commit version) are
        above it had not been committed when this transaction read: it is in the
        future (time travel refuses it)."""
        ...


class Transaction(ReadTransaction, Protocol):
    """A read-write transaction; it sees its own writes (except versionstamped ones)."""

    def set(self, key: bytes, value: bytes) -> None: ...

    def clear(self, key: bytes) -> None: ...

    def clear_range(self, begin: bytes, end: bytes) -> None: ...

    def set_versionstamped_key(self, key: bytes, offset: int, value: bytes) -> None:
        """Write ``value`` under ``key`` whose 10 bytes at ``offset`` become the commit's
        transaction versionstamp. Not visible to reads in this transaction."""
        ...

    def set_versionstamped_value(self, key: bytes, value: bytes, offset: int) -> None:
        """Write ``value`` whose 10 bytes at ``offset`` become the commit's versionstamp."""
        ...

    def add(self, key: bytes, delta: int) -> None:
        """Atomic add of a signed integer to an 8-byte little-endian counter (FDB ADD)."""
        ...


@dataclass(frozen=True, slots=True)
class Committed(Generic[T_co]):
    """What ``transact`` returns: the function's result and the commit's 10-byte
    transaction versionstamp (``None`` when the transaction wrote nothing)."""

    result: T_co
    versionstamp: bytes | None


class Engine(Protocol):
    """An ordered KV store. Open with :func:`crdt.kv.open_engine` and ``async with``."""

    url: str

    async def transact(self, fn: Callable[[Transaction], T]) -> Committed[T]:
        """Run ``fn`` in a read-write transaction, retrying on conflict; commit durably."""
        ...

    async def read(self, fn: Callable[[ReadTransaction], T]) -> T:
        """Run ``fn`` in a read-only snapshot transaction; never blocks writers."""
        ...

    async def watch(self, key: bytes, last: bytes | None) -> bytes | None:
        """Return the key's value as soon as it differs from ``last`` (at once if it
        already does). Changes from other processes on the same store count too. A
        watch still waiting when the engine closes raises :class:`StoreError`."""
        ...

    async def release_memory(self) -> None:
        """Give back caches kept for speed (called when the server went quiet)."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Engine: ...

    async def __aexit__(self, *exc: object) -> None: ...


# --- helpers shared by the engines ---------------------------------------------------


def check_key(key: bytes) -> None:
    if len(key) > MAX_KEY:
        raise TransactionTooLarge(f"key of {len(key)} bytes is over the {MAX_KEY}-byte limit")


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE:
        raise TransactionTooLarge(f"value of {len(value)} bytes is over the {MAX_VALUE}-byte limit")


def check_offset(data: bytes, offset: int) -> None:
    if offset < 0 or offset + PLACEHOLDER_LEN > len(data):
        raise ValueError(f"versionstamp offset {offset} is outside the {len(data)}-byte buffer")


OFFSET_LEN = 4  # FDB takes a versionstamp's offset as 4 more bytes of the key or value
MAX_STAMPED_KEY = MAX_KEY - OFFSET_LEN
MAX_STAMPED_VALUE = MAX_VALUE - OFFSET_LEN


def check_stamped(data: bytes, offset: int, limit: int) -> None:
    """``check_offset``, and the size limit of a versionstamped key (``limit``:
    ``MAX_STAMPED_KEY``) or value (``MAX_STAMPED_VALUE``): FDB counts the 4 offset bytes
    against its key and value limits."""
    check_offset(data, offset)
    if len(data) > limit:
        what = "key" if limit == MAX_STAMPED_KEY else "value"
        raise TransactionTooLarge(
            f"versionstamped {what} of {len(data)} bytes is over the {limit}-byte limit "
            f"(FoundationDB counts its {OFFSET_LEN}-byte offset too)"
        )


def fill(data: bytes, offset: int, tr_version: bytes) -> bytes:
    """``data`` with the 10-byte placeholder at ``offset`` replaced by ``tr_version``."""
    return data[:offset] + tr_version + data[offset + PLACEHOLDER_LEN :]


def add_le(old: bytes | None, delta: int) -> bytes:
    """FDB's ADD on little-endian values, for an 8-byte counter (wraps like FDB)."""
    current = int.from_bytes(old or b"", "little") if old else 0
    return ((current + delta) % (1 << 64)).to_bytes(8, "little")


def read_counter(value: bytes | None) -> int:
    """The unsigned value of an 8-byte little-endian counter (0 when absent)."""
    return int.from_bytes(value, "little") if value else 0


def offset_suffix(offset: int) -> bytes:
    """FDB (API >= 520) takes the versionstamp offset as 4 little-endian bytes at the end."""
    return struct.pack("<I", offset)
