"""One error hierarchy for weft. Each subclass also inherits the stdlib type it resembles."""

from __future__ import annotations


class WeftError(Exception):
    """Root of every error weft raises on purpose."""


class ProtocolError(WeftError, ValueError):
    """A frame or message that does not follow the protocol.

    ``close_code`` is the WebSocket close code the connection should be closed with:
    1002 protocol error, 1003 unsupported data, 1007 invalid payload, 1009 too big.
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class BadPath(WeftError, ValueError):
    """A document path, project or tenant name that is not allowed (400)."""


class NotFound(WeftError, LookupError):
    """A tenant, project, document or version that does not exist (404)."""


class PermissionDenied(WeftError, PermissionError):
    """The caller's token does not allow this (403)."""


class QuotaExceeded(WeftError):
    """A tenant quota refused the request; ``close_code`` says how a connection closes."""

    def __init__(self, message: str, close_code: int = 1008) -> None:
        super().__init__(message)
        self.close_code = close_code


class HeadMoved(WeftError):
    """A conditional append found the document's head moved past the one it was
    conditional on (see ``History.append_if``): nothing was stored."""


class StoreError(WeftError, OSError):
    """The KV store failed or refused an operation."""


class StoreStopped(StoreError):
    """The store takes no more writes until the process restarts (its file was deleted
    or replaced, say): unlike a full disk or a lock, it does not clear by itself."""


class StoreConfigError(StoreError):
    """A store URL that is malformed, or names an engine this machine cannot run (fdb://
    without the FoundationDB client library): a configuration error, not a failure of
    the store itself (``weft serve`` exits 2 for it, 1 for the store failing)."""


class TransactionTooLarge(StoreError):
    """A key, value or transaction over the limits every engine enforces (FDB's limits)."""


class Conflict(StoreError):
    """A transaction conflicted with another one; engines retry these themselves."""


class FormatError(StoreError):
    """An on-disk format this version of weft cannot read (for instance a newer major)."""
