"""A budget of log lines: at most ``burst`` per label in any ``every``-second window.

A client retrying a refused connection, or sending malformed requests, would otherwise
write one line per try (13,760 in a walkthrough); past the budget the lines go unsaid
and are counted, and the next line said in that label says how many.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LineBudget:
    """See the module docstring."""

    def __init__(
        self, burst: int = 20, every: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst, self.every, self._clock = burst, every, clock
        self._window: dict[str, tuple[float, int]] = {}  # label -> (start, said in it)
        self._unsaid: dict[str, int] = {}

    def take(self, label: str = "") -> int | None:
        """Spend one line of ``label``'s budget: the number of its lines that went unsaid
        since the last one said (usually 0), or None when the budget is spent (this
        line is counted as unsaid)."""
        now = self._clock()
        start, said = self._window.get(label, (now, 0))
        if now - start >= self.every:
            start, said = now, 0
        if said >= self.burst:
            self._unsaid[label] = self._unsaid.get(label, 0) + 1
            return None
        self._window[label] = (start, said + 1)
        return self._unsaid.pop(label, 0)


__all__ = ["LineBudget"]
