"""Giving memory back to the operating system once documents were unloaded.

Unloading a room drops its ``pycrdt.Doc``, but the memory stays with the process:
CPython's allocator and glibc's ``malloc`` keep freed blocks for reuse, and SQLite's
page caches stay full. After the reaper unloaded rooms, :func:`release` collects
cycles, has the store empty its idle caches and asks glibc to return free pages
(``malloc_trim``; skipped where the C library has none, e.g. musl or macOS).

glibc also gives each thread that allocates its own arena (up to 8 per core): the
server's dozen threads (event loop, store writer, checkpointer, watch poller, readers,
the event loop's workers) each kept freed memory in its own, and the RSS of a server
whose memory in use stayed flat grew with churn (73 -> 160 MB over 20 rounds of the
2026-12-06 leak audit; 90 MB at round 10 with two arenas). :func:`limit_arenas` caps
them at ``ARENAS`` unless ``MALLOC_ARENA_MAX`` is set (glibc then applied it itself).
Four, not two: with two, the event loop and the store's writer shared an arena's lock
and the 1x2 fan-out bench's CPU per update rose by about a tenth (4 alternating runs:
38.75 µs on average against 35.5 with glibc's own limit; four arenas: 34.5).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterable

from crdt import keys, records
from crdt.kv.base import Engine

log = logging.getLogger("weft.server")


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _find_malloc_trim()

ARENAS = 4
_M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Have glibc's ``malloc`` use at most ``arenas`` arenas from now on (call it before
    threads start: a thread keeps the arena it was given). False where it cannot (no
    glibc) or where ``MALLOC_ARENA_MAX`` already says how many."""
    name = ctypes.util.find_library("c")
    if name is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def _module_caches(module: object) -> list[Callable[[], None]]:
    """``cache_clear`` of the LRU caches defined on ``module``: e.g. ``crdt.records``
    keeps the packed record tails of the last 256 (user, client, session, ms), one
    session per connection, so after a burst of connections they are all gone ones."""
    import functools

    return [
        value.cache_clear
        for value in vars(module).values()
        if isinstance(value, functools._lru_cache_wrapper)
    ]


def _url_caches() -> list[Callable[[], None]]:
    """``cache_clear`` of yarl's URL-parsing LRU caches (128 entries each). Every room's
    URL path is parsed once, so after a burst of documents they hold the last 128 URLs
    with their query dicts: a few hundred small objects spread over the allocator's
    arenas, enough to keep megabytes from being returned. ``yarl.cache_clear`` covers
    only the host-name caches, so the others are found on the modules (private: if
    yarl moves them, this finds fewer and clears what it finds)."""
    import yarl

    found: list[Callable[[], None]] = [yarl.cache_clear]
    for name in ("yarl._url", "yarl._parse"):
        module = sys.modules.get(name)
        if module is not None:
            found.extend(_module_caches(module))
    return found


async def _tasks_cancelled_before(timeout: float = 1.0) -> None:
    """Wait (at most ``timeout``) for the tasks cancelled but not finished yet, e.g. the
    unloaded rooms' watchers: until they ran their cancellation, their frames, futures
    and handles are alive, and once they end they refill CPython's free lists (tuples,
    contexts, ...) that the collection below empties. Released while they still ran,
    those objects were left spread over many allocator arenas, keeping each one in use."""
    current = asyncio.current_task()
    cancelled = [t for t in asyncio.all_tasks() if t is not current and t.cancelling()]
    if cancelled:
        await asyncio.wait(cancelled, timeout=timeout)


async def release(kv: Engine, forget: Iterable[Callable[[], None]] = ()) -> None:
    """Drop caches of unloaded documents (``forget``, the packed keys), collect garbage,
    empty the store's idle caches and return free pages to the OS."""
    await _tasks_cancelled_before()
    for hook in forget:
        hook()
    keys.clear_caches()
    for clear in _module_caches(records):
        clear()
    for clear in _url_caches():
        clear()
    gc.collect()
    try:
        await kv.release_memory()
    except Exception:  # an optimisation: never let it take the reaper down
        log.warning("the store could not release its caches", exc_info=True)
    if _malloc_trim is not None:
        _malloc_trim(0)
