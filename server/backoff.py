"""How long a refused standard client's connection is held open before its close frame.

y-websocket reconnects 100 ms after the close of any connection that had opened, however
many times in a row it was refused (its backoff grows only while connecting fails, and a
refusal comes after the WebSocket handshake), and each time it sends again what was
refused: the whole update in its SyncStep2 (an update over the size limit: 10 uploads of
it a second, for ever), or the same expired token. The server therefore does the backing
off for it: the close frame of a refused connection waits ``FIRST_HOLD`` seconds, doubled
for each refusal of the same address and URL path in a row, up to ``most`` seconds;
``FORGET_AFTER`` seconds without one start the count again. Nothing is read from a held
connection, and it has left its room (its awareness clients are removed at once).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

FIRST_HOLD = 0.1
"""The first refusal's hold (y-websocket's own first reconnect delay)."""
FORGET_AFTER = 60.0
KEEP = 10_000
"""Keys remembered at most (the oldest are forgotten first), each as its hash: a few dozen
bytes whatever the key (a refused client chooses the URL path, up to aiohttp's 8 kB)."""
MAX_HELD = 256
"""Refused connections held at once, at most; the others close at once."""


class RefusalBackoff:
    """See the module docstring; ``most`` 0 closes every refused connection at once."""

    def __init__(self, most: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.most = most
        self._clock = clock
        self._seen: OrderedDict[int, tuple[int, float]] = OrderedDict()

    def hold(self, key: Hashable) -> float:
        """Count a refusal of ``key``; the seconds to hold its connection before closing."""
        if self.most <= 0:
            return 0.0
        now = self._clock()
        key = hash(key)  # not the key: a URL path may be 8 kB long, and KEEP are kept
        count, last = self._seen.pop(key, (0, now))
        if now - last > FORGET_AFTER:
            count = 0
        seconds = float(min(FIRST_HOLD * 2 ** min(count, 30), self.most))
        # counted from the close: a hold of WEFT_REFUSAL_HOLD_SECONDS=60 is itself a minute
        self._seen[key] = (count + 1, now + seconds)
        if len(self._seen) > KEEP:
            self._seen.popitem(last=False)
        return seconds
