"""The disk's own floor under a durable write: what one small write and its
``fdatasync`` take, paced like the fan-out benchmark's paced phase.

weft commits every update (SQLite, ``synchronous=FULL``: a write and an fsync of the
WAL) before it broadcasts it, so its paced fan-out latency cannot go below what the disk
takes for that. The reference Node server persists nothing. Printed beside the paced
figures so that a reader can tell the disk's share of weft's p99 from weft's own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

BLOCK = 4096


def sync_floor(directory: Path, period: float, count: int = 300) -> dict[str, float | int]:
    """``count`` times, ``period`` seconds apart: write one 4 KiB block of a file in
    ``directory`` (16 blocks written in turn, the file's size never changes) and
    ``fdatasync`` it. Returns p50 and p99 (nearest rank) in ms, and the count."""
    path = directory / "disk-floor.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, b"\0" * 16 * BLOCK, 0)
        os.fsync(fd)
        block = os.urandom(BLOCK)
        took = []
        for i in range(count):
            time.sleep(period)
            start = time.perf_counter()
            os.pwrite(fd, block, (i % 16) * BLOCK)
            os.fdatasync(fd)
            took.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    took.sort()

    def rank(q: float) -> float:
        return round(1000 * took[max(0, min(len(took) - 1, int(q * len(took) + 0.5) - 1))], 3)

    return {"p50": rank(0.5), "p99": rank(0.99), "samples": len(took)}
