"""Versionstamps in FoundationDB's exact format.

A transaction versionstamp is 10 bytes: an 8-byte big-endian commit version and a 2-byte
big-endian batch order. weft appends 2 user bytes (the update's position inside its
transaction), giving the 12-byte versionstamps that order the history. Byte order is
commit order, so versionstamps compare as bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Self

from crdt.errors import ProtocolError

TR_LEN = 10
LEN = 12
INCOMPLETE_TR = b"\xff" * TR_LEN
_HEX = re.compile(r"[0-9a-fA-F]{24}")


@dataclass(frozen=True, order=True, slots=True)
class Versionstamp:
    """A complete 12-byte versionstamp: commit version (8) + batch order (2) + user (2)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != LEN:
            raise ValueError(f"a versionstamp is {LEN} bytes, got {len(self.raw)}")

    @classmethod
    def of(cls, tr_version: bytes, user: int = 0) -> Self:
        """Complete a 10-byte transaction versionstamp with 2 user bytes."""
        if len(tr_version) != TR_LEN:
            raise ValueError(f"a transaction versionstamp is {TR_LEN} bytes")
        if not 0 <= user <= 0xFFFF:
            raise ValueError("user version must fit in 2 bytes")
        return cls(tr_version + user.to_bytes(2, "big"))

    @classmethod
    def from_hex(cls, text: str) -> Self:
        """Parse the 24-hex-digit form shown to people; raise ProtocolError otherwise."""
        if not _HEX.fullmatch(text):
            raise ProtocolError(f"not a versionstamp (24 hex digits): {text!r}", 1007)
        return cls(bytes.fromhex(text))

    @property
    def tr_version(self) -> bytes:
        return self.raw[:TR_LEN]

    @property
    def commit_version(self) -> int:
        return int.from_bytes(self.raw[:8], "big")

    @property
    def user(self) -> int:
        return int.from_bytes(self.raw[TR_LEN:], "big")

    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.raw.hex()


_new = object.__new__
_set = object.__setattr__


def unchecked(raw: bytes) -> Versionstamp:
    """``Versionstamp(raw)`` without the length check, for 12 bytes the caller just built
    as one (an append makes one per update; the check and ``__init__`` cost 2x this)."""
    stamp: Versionstamp = _new(Versionstamp)
    _set(stamp, "raw", raw)
    return stamp


ZERO = Versionstamp(b"\x00" * LEN)
"""Sorts before every real versionstamp: 'before anything was written'."""
