"""Requests aiohttp's HTTP parser refuses, said in one short line at most 20 times in 10 s.

A request line or header over aiohttp's 8190-byte limit (or any request its parser
cannot read) is answered 400 by aiohttp itself, before any route, middleware or token
check, and aiohttp logged each one at ERROR on ``aiohttp.server`` with a traceback whose
message quotes the first ~100 bytes of the offending line: a long URL's ``?token=``, or
a long ``Authorization: Bearer`` header, reached the log in part, and anyone could fill
the log with tracebacks. :class:`BadRequestFilter` rewrites those records (only the
parser's, a ``BadHttpMessage``; aiohttp's other records pass untouched) into a WARNING
that says who and what kind of error, never the request's bytes, and drops them past
the budget; the next line said counts those.

(The 400 itself stays aiohttp's text/plain answer, not weft's JSON error: aiohttp
writes it in ``RequestHandler.handle_error``, which no public hook replaces.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from server.budget import LineBudget

AIOHTTP_SERVER_LOGGER = "aiohttp.server"
_WHAT = {LineTooLong: "a request line or header over the size limit"}


class BadRequestFilter(logging.Filter):
    """A filter for the ``aiohttp.server`` logger (see the module docstring)."""

    def __init__(
        self, burst: int = 20, every: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._budget = LineBudget(burst, every, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, BadHttpMessage):
            return True
        unsaid = self._budget.take()
        if unsaid is None:
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        kind = type(exc).__name__
        what = next((w for cls, w in _WHAT.items() if isinstance(exc, cls)), "")
        record.msg = "refused a malformed HTTP request from %s: %s%s (400)%s"
        record.args = (
            remote,
            kind,
            f", {what}" if what else "",
            f" ({unsaid} more went unsaid before this one)" if unsaid else "",
        )
        record.levelno = min(record.levelno, logging.WARNING)
        record.levelname = logging.getLevelName(record.levelno)
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def install() -> None:
    """Put one :class:`BadRequestFilter` on the ``aiohttp.server`` logger."""
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    if not any(isinstance(f, BadRequestFilter) for f in logger.filters):
        logger.addFilter(BadRequestFilter())


__all__ = ["AIOHTTP_SERVER_LOGGER", "BadRequestFilter", "install"]
