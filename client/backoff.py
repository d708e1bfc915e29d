"""Exponential backoff with jitter, for reconnecting to a server that went away.

Each failed attempt doubles the delay up to ``maximum``; the delay actually slept is
drawn uniformly from its upper half ("equal jitter"), so devices that lost the same
server at the same moment do not all come back in the same millisecond, and none waits
less than half the nominal delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for successive attempts: ``initial * factor**n``, capped, jittered."""

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")

    def nominal(self) -> float:
        """The delay before jitter for the next attempt."""
        return float(min(self.maximum, self.initial * self.factor**self.attempts))

    def next(self) -> float:
        """The delay to sleep before the next attempt (and count the attempt)."""
        delay = self.nominal()
        self.attempts += 1
        return delay / 2 + self.rng.uniform(0, delay / 2)

    def reset(self) -> None:
        """The connection worked: start again from ``initial``."""
        self.attempts = 0
