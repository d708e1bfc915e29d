"""weft's shared data layer: codec, keys, versionstamps, KV engines, document history.

Importing this package pulls in no network library (no aiohttp): it is pure code plus the
storage engines, shared by the server and the client.
"""

from crdt.errors import (
    BadPath,
    Conflict,
    FormatError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    QuotaExceeded,
    StoreError,
    TransactionTooLarge,
    WeftError,
)
from crdt.versionstamp import Versionstamp

__all__ = [
    "BadPath",
    "Conflict",
    "FormatError",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "QuotaExceeded",
    "StoreError",
    "TransactionTooLarge",
    "Versionstamp",
    "WeftError",
]
