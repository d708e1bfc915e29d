"""One WebSocket's transport: a bounded send queue drained by its own task, and a clean
close.

Frames queued in one turn of the event loop go out in one ``transport.write`` (one
system call): a group commit hands each peer a burst of updates at once, and a write per
frame was the server's largest single cost. The :class:`Flusher` writes them: right
after a group commit's updates are settled (the writer calls it), or else in a callback
at the end of the turn, directly when the connection's sender task is idle and the
transport has room; the sender task writes only what that leaves (a peer that does not
read, a burst over ``WRITE_BYTES``). Waking a sender task for each peer of every
update (an event, a future, a task step) put ~0.1 ms and more between a paced commit
and its first send. Frames are binary, unmasked and
uncompressed (permessage-deflate is not offered, as the reference server's ``ws`` does
not), so they are framed here; control frames and the close handshake stay aiohttp's.
The sender stops writing while the transport holds more than ``TRANSPORT_HIGH`` bytes
(the peer is not reading), so frames pile up in the bounded queue, and a peer that
stops reading is disconnected (1013) once it is full; nobody else waits for it. Beyond
the queue's limits one frame more is taken, whatever its size, until the sender has
taken it: a joiner's state (its SyncStep2, up to the document size limit) is one frame
that can be bigger than the whole queue, and a busy room often has a broadcast queued
for the joiner at that moment. So a connection holds at most its frame limit, and its
byte limit plus one frame.

Closing flushes what is queued (unless aborting), stops the reader task, then runs the
close handshake: aiohttp cuts the transport at once if ``close()`` runs while another
task waits in ``receive()``, which would lose the close frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import struct
from collections import deque
from collections.abc import Hashable
from typing import Any

from aiohttp import web

from server.backoff import MAX_HELD, RefusalBackoff
from server.metrics import Metrics

log = logging.getLogger("weft.sync")

CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
MAX_REASON_BYTES = 123
CLOSE_TIMEOUT = 2.0
TRANSPORT_HIGH = 256 * 1024  # bytes the transport may hold before the sender waits
WRITE_BYTES = 1 << 20  # at most this much per write (a burst is written in slices)
_DRAIN_POLL = 0.005
_ids = itertools.count(1)


def binary_frame(payload: bytes) -> bytes:
    """A server-to-client WebSocket frame (RFC 6455 5.2): FIN, binary, no mask."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x82, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x82, 126, n) + payload
    return struct.pack("!BBQ", 0x82, 127, n) + payload


def close_reason(text: str) -> bytes:
    """A close reason that fits a control frame (123 bytes of UTF-8)."""
    data = text.encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return data
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."


_TOO_BIG = re.compile(r"Message size (\d+) exceeds limit \d+")


def too_big_text(error: object, limit: int) -> str:
    """aiohttp's words for a message it refused, with weft's ``limit``: aiohttp is given
    one byte more (see :class:`WebSocket`) and said "exceeds limit 16777217"."""
    text = str(error)
    found = _TOO_BIG.fullmatch(text)
    if found is None:
        return text
    return f"a message of {found[1]} bytes, over the {limit}-byte limit"


class WebSocket(web.WebSocketResponse):
    """aiohttp closes frames over ``max_msg_size`` with 1009 and no reason; give one.

    ``max_msg_size`` is the largest message taken, as the codec counts it (``<=``):
    aiohttp refuses a message of ``max_msg_size`` bytes or more, so it is given one
    byte more (a message of exactly the limit was closed with 1009)."""

    def __init__(self, *, max_msg_size: int, **kwargs: Any) -> None:
        super().__init__(max_msg_size=max_msg_size + 1, compress=False, **kwargs)
        self._too_big = f"message over the {max_msg_size}-byte limit".encode()

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        if code == CLOSE_TOO_BIG and not message:
            message = self._too_big
        return await super().close(code=code, message=message, drain=drain)

    def _reset_heartbeat(self) -> None:
        """No heartbeat once closing: aiohttp (3.14) re-armed it for the client's answer
        to our close frame, and the timer held this response, its request and handler
        for ``heartbeat_seconds`` after the connection ended (every connection the
        server closed after a close handshake: refusals, a drain)."""
        if not self.closed:
            super()._reset_heartbeat()


class Flusher:
    """Writes what connections queued (see the module docstring): :meth:`flush` writes
    every marked connection's queue, and runs by itself at the end of the turn of the
    loop in which the first of them was marked, unless called before."""

    def __init__(self) -> None:
        self._marked: list[Connection] = []
        self._scheduled = False

    def mark(self, conn: Connection) -> None:
        self._marked.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        marked, self._marked = self._marked, []
        for conn in marked:
            conn.flush()


class Connection:
    """One WebSocket: a bounded send queue, written by a :class:`Flusher`, and the task
    that drains what it leaves."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        max_frames: int,
        max_bytes: int,
        metrics: Metrics | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        self._id = next(_ids)
        self.metrics = metrics
        self.ws = ws
        self.request = request
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.closing = False
        self.close_code: int | None = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0  # every queued frame's, the one over the limits included
        self._taken = 0  # frames the sender has taken from the queue so far
        # The one frame queued beyond the limits (see send): its place (as a count of
        # frames taken before it) and its size, which the limits do not count.
        self._over_at: int | None = None
        self._over_bytes = 0
        self._ready = asyncio.Event()
        self._flusher = flusher or Flusher()
        self._marked = False  # with the flusher, to be written
        self._idle = False  # the sender waits for frames: the flusher writes them itself
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None

    @property
    def id(self) -> int:
        return self._id

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_forever(), name=f"weft-send-{self.id}")

    def send(self, frame: bytes) -> None:
        """Queue ``frame``; never blocks. A full queue disconnects this peer (1013).

        A frame that does not fit is taken if no other frame over the limits is queued:
        the state a joiner of a big document gets (its SyncStep2, up to the document
        size limit) is one frame, bigger than the whole queue maybe, and it often comes
        while a few broadcasts wait for the sender; refusing it would shut joiners of a
        busy room out. The byte limit counts the frames after it as if it were not
        there; a second frame that does not fit while it waits disconnects."""
        if self.closing:
            return
        queue = self._queue
        if (
            len(queue) >= self.max_frames
            or self._queued_bytes - self._over_bytes + len(frame) > self.max_bytes
        ):
            if self._over_at is None:  # none waits: this one is the frame over the limits
                self._over_at = self._taken + len(queue)
                self._over_bytes = len(frame)
                self._queue_frame(frame)
                return
            log.warning(
                "connection %d: send queue full, disconnecting a slow reader",
                self.id,
                extra={"connection": self.id},
            )
            if self.metrics is not None:
                self.metrics.refusals.inc(label="slow_reader")
            self.close(CLOSE_TRY_AGAIN, "send queue full: client too slow", abort=True)
            return
        self._queue_frame(frame)

    def _queue_frame(self, frame: bytes) -> None:
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if not self._marked:
            self._marked = True
            self._flusher.mark(self)

    def flush(self) -> None:
        """Write what is queued now, if the sender is idle and the transport has room
        (frames leave in the order queued either way); the sender writes what is left."""
        self._marked = False
        if not self._queue:
            return
        transport = self.request.transport
        if (
            self._idle
            and transport is not None
            and transport.get_write_buffer_size() <= TRANSPORT_HIGH
            and not transport.is_closing()
            and not self.ws.closed
        ):
            self._write_queued(transport)
        if self._queue:
            self._ready.set()

    def close(self, code: int, reason: str, *, abort: bool = False) -> None:
        """Close (once): flush what is queued unless ``abort``, then send the close frame."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        if abort:
            self._queue.clear()
            self._queued_bytes = self._over_bytes = 0
            self._over_at = None
        self._closer = asyncio.create_task(self._close(code, reason, abort), name="weft-close")

    async def _close(self, code: int, reason: str, abort: bool) -> None:
        if not abort and self._sender is not None:
            self._ready.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(self._flushed())
        if self._sender is not None:
            self._sender.cancel()
        # aiohttp cuts the transport at once if close() runs while another task waits in
        # receive(); stop the reader first so the close handshake completes properly.
        reader = self.reader
        if reader is not None and reader is not asyncio.current_task() and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=close_reason(reason), drain=not abort)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            transport = self.request.transport
            if abort and transport is not None:
                transport.abort()

    async def _flushed(self) -> None:
        while self._queue and self._sender is not None and not self._sender.done():
            await asyncio.sleep(0.005)

    async def _send_forever(self) -> None:
        transport = self.request.transport
        if transport is None:
            return  # the socket is gone; the reader side notices and cleans up
        queue = self._queue
        while True:
            while not queue:
                self._ready.clear()
                self._idle = True
                try:
                    await self._ready.wait()
                finally:
                    self._idle = False
            while transport.get_write_buffer_size() > TRANSPORT_HIGH:
                if transport.is_closing():
                    return
                await asyncio.sleep(_DRAIN_POLL)  # a peer that does not read
            if transport.is_closing() or self.ws.closed:  # no data after a close frame
                return
            self._write_queued(transport)

    def _write_queued(self, transport: asyncio.Transport) -> None:
        """Write the queued frames (up to ``WRITE_BYTES`` of them) in one write."""
        queue = self._queue
        parts = []
        size = 0
        while queue and size < WRITE_BYTES:
            frame = queue.popleft()
            size += len(frame)
            parts.append(binary_frame(frame))
        self._queued_bytes -= size
        self._taken += len(parts)
        if self._over_at is not None and self._over_at < self._taken:
            self._over_at = None  # the frame over the limits is taken: room for another
            self._over_bytes = 0
        transport.write(b"".join(parts))

    async def stop(self) -> None:
        """Wait for the close to finish and the sender to stop."""
        for task in (self._closer, self._sender):
            if task is None:
                continue
            if task is self._sender and not self.closing:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Connections:
    """Every open connection of this server, for draining at shutdown, and the holds of
    refused connections (:mod:`server.backoff`), which draining cuts short."""

    def __init__(self, refusal_hold: float = 0.0) -> None:
        self.open: set[Connection] = set()
        self.flusher = Flusher()  # every connection's: one write per peer per commit
        self.draining = False
        self.backoff = RefusalBackoff(refusal_hold)
        self._drained = asyncio.Event()
        self.held = 0  # refused connections held now

    async def hold_refused(self, key: Hashable) -> None:
        """Wait before closing a refused connection of ``key`` (its address and URL path;
        see :mod:`server.backoff`); not at all once the server drains, nor while
        ``MAX_HELD`` are held already. A connection refused before the handshake's checks
        passed counts against no quota: 1,100 of them opened at once were all held, and
        the server ran out of file descriptors (it accepted no connection meanwhile)."""
        seconds = self.backoff.hold(key)
        if seconds <= 0 or self.draining or self.held >= MAX_HELD:
            return
        self.held += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._drained.wait()
        finally:
            self.held -= 1

    def close_all(self, code: int, reason: str) -> None:
        self._drained.set()
        for conn in list(self.open):
            conn.close(code, reason)
