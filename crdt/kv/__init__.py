"""Ordered KV engines, chosen by URL.

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the default store);
  query options ``synchronous=FULL|NORMAL|OFF|EXTRA``, ``readers=N`` and
  ``wal_limit_mb=N`` (the size the WAL file is kept near, default 32).
- ``fdb://`` (default cluster file) or ``fdb:///path/to/fdb.cluster``; query option
  ``timeout=SECONDS`` bounds each transaction's retry loop (default 60, at most
  2,147,483: FDB's timeout is whole milliseconds up to INT_MAX). Needs the
  FoundationDB client library (libfdb_c); opening without it raises StoreConfigError.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from crdt.errors import StoreConfigError
from crdt.kv.base import Committed, Engine, ReadTransaction, Transaction

__all__ = ["Committed", "Engine", "ReadTransaction", "Transaction", "open_engine"]


def open_engine(url: str) -> Engine:
    """An engine for ``url``, not yet opened: use ``async with open_engine(url) as kv``."""
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "sqlite":
        from crdt.kv.sqlite import SQLiteEngine

        path = url.split("?", 1)[0][len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise StoreConfigError(
                f"store URL {url!r} names no file: use sqlite:///path/to/weft.db"
            )
        try:
            path.encode()
        except UnicodeEncodeError:  # bytes from argv or the environment (surrogateescape)
            raise StoreConfigError(
                f"store path {path!r} is not valid UTF-8: SQLite cannot open it (it "
                "created the file, then failed reading its own name); use another name"
            ) from None
        unknown = set(options) - {"synchronous", "readers", "wal_limit_mb"}
        if unknown:
            raise StoreConfigError(f"unknown sqlite store option(s): {', '.join(sorted(unknown))}")
        try:
            wal_limit_mb = int(options.get("wal_limit_mb", "32"))
            if wal_limit_mb < 1:
                raise ValueError(f"wal_limit_mb must be at least 1, got {wal_limit_mb}")
            return SQLiteEngine(
                path,
                synchronous=options.get("synchronous", "FULL"),
                readers=int(options.get("readers", "4")),
                wal_limit=wal_limit_mb << 20,
            )
        except ValueError as exc:
            raise StoreConfigError(f"bad store URL {url!r}: {exc}") from exc
    if parts.scheme == "fdb":
        from crdt.kv.fdb import MAX_TIMEOUT, FDBEngine

        if parts.netloc:
            raise StoreConfigError(
                f"store URL {url!r} has a host: use fdb:// (default cluster file) or "
                "fdb:///path/to/fdb.cluster"
            )
        unknown = set(options) - {"timeout"}
        if unknown:
            raise StoreConfigError(f"unknown fdb store option(s): {', '.join(sorted(unknown))}")
        try:
            timeout = float(options.get("timeout", "60"))
        except ValueError as exc:
            raise StoreConfigError(f"bad store URL {url!r}: timeout must be seconds") from exc
        if not timeout > 0:
            raise StoreConfigError(f"bad store URL {url!r}: timeout must be positive")
        if not timeout <= MAX_TIMEOUT:  # inf too: FDB takes whole ms up to INT_MAX
            raise StoreConfigError(
                f"bad store URL {url!r}: timeout must be a finite number of seconds, "
                f"at most {MAX_TIMEOUT:,}"
            )
        return FDBEngine(parts.path or None, timeout=timeout)
    raise StoreConfigError(f"unknown store URL {url!r}: use sqlite:///path/to/weft.db or fdb://")
