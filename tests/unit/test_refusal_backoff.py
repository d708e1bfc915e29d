"""The hold before a refused standard client's close frame (server.backoff)."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

from server.backoff import FORGET_AFTER, KEEP, MAX_HELD, RefusalBackoff
from server.connection import Connections


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_doubles_per_refusal_in_a_row_up_to_the_most() -> None:
    clock = Clock()
    backoff = RefusalBackoff(1.0, clock)
    holds = []
    for _ in range(7):
        holds.append(backoff.hold(("127.0.0.1", "/ws/a/p/doc")))
        clock.now += holds[-1] + 0.1  # the client reconnects 100 ms after each close
    assert holds == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert backoff.hold(("127.0.0.1", "/ws/a/p/other")) == 0.1  # counted per address and path


def test_a_pause_starts_the_count_again() -> None:
    clock = Clock()
    backoff = RefusalBackoff(10.0, clock)
    for _ in range(5):
        backoff.hold("key")
    clock.now += 10.0 + FORGET_AFTER + 1  # counted from the last hold's end
    assert backoff.hold("key") == 0.1


def test_zero_never_holds_and_keys_are_bounded() -> None:
    assert RefusalBackoff(0.0).hold("key") == 0.0
    backoff = RefusalBackoff(10.0, Clock())
    backoff.hold("first")
    backoff.hold("first")
    for n in range(KEEP):
        backoff.hold(n)
    assert backoff.hold("first") == 0.1  # forgotten: the oldest go first


def test_a_key_costs_the_same_whatever_its_length() -> None:
    """A refused client chooses the URL path of its key (up to 8 kB, aiohttp's limit):
    10,000 long paths, each refused once, kept ~80 MB when the keys themselves were kept."""
    backoff = RefusalBackoff(10.0, Clock())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1000):
            backoff.hold(("127.0.0.1", f"/ws/a/p/{n:08}" + "x" * 8000))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 500_000  # ~8 MB when the paths were kept
    assert backoff.hold(("127.0.0.1", "/ws/a/p/00000007" + "x" * 8000)) == 0.2  # still counted


async def test_draining_cuts_a_hold_short() -> None:
    connections = Connections(refusal_hold=30.0)
    for _ in range(10):
        connections.backoff.hold("key")  # the next hold is the longest, 30 s
    started = time.monotonic()
    held = asyncio.create_task(connections.hold_refused("key"))
    await asyncio.sleep(0.05)
    assert not held.done()
    connections.close_all(1001, "server shutting down")
    await held
    assert time.monotonic() - started < 1


async def test_at_most_max_held_are_held_at_once() -> None:
    """Refused connections opened all at once (not y-websocket's one at a time) are not
    all held: each held one keeps a socket open, counted by no quota (1,100 of them
    left the server out of file descriptors)."""
    connections = Connections(refusal_hold=30.0)
    for _ in range(10):
        connections.backoff.hold("key")  # the next holds are the longest, 30 s
    held = [asyncio.create_task(connections.hold_refused("key")) for _ in range(MAX_HELD + 50)]
    await asyncio.sleep(0.05)
    assert sum(not task.done() for task in held) == MAX_HELD
    connections.close_all(1001, "server shutting down")
    await asyncio.gather(*held)
    assert connections.held == 0


def test_the_pause_is_counted_from_the_close_not_from_the_refusal() -> None:
    """With the longest hold at a minute (the most allowed), the client reconnects just
    over FORGET_AFTER after its previous refusal began: that is no pause, and the hold
    stays at the most (it went back to 0.1 s)."""
    clock = Clock()
    backoff = RefusalBackoff(60.0, clock)
    holds = []
    for _ in range(13):
        holds.append(backoff.hold("key"))
        clock.now += holds[-1] + 0.1
    assert holds[-3:] == [60.0, 60.0, 60.0]
