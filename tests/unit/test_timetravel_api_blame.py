"""The blame route's JSON (``server.timetravel_api.blame_json``): what ``json.dumps`` of
the blame gives, encoded so that the event loop keeps running while a worker thread
encodes a long one."""

from __future__ import annotations

import asyncio
import json
import time

from crdt import timetravel as tt
from crdt.versionstamp import Versionstamp
from server.timetravel_api import blame_json


def _blame(lines: int) -> tt.Blame:
    author = tt.Author(Versionstamp(bytes(12)), "ada", "laptop", 1_700_000_000_000)
    rows = [tt.BlameLine(n + 1, f'line \u00e9 {n} "q"', author) for n in range(lines)]
    rows.append(tt.BlameLine(lines + 1, "no author", None))
    return tt.Blame('a "b".md', Versionstamp(bytes(12)), "", [], rows)


def test_it_is_the_json_of_the_blame() -> None:
    for lines in (0, 1, 5):
        blame = _blame(lines)
        assert json.loads(blame_json(blame)) == blame.to_dict()
        assert blame_json(blame) == json.dumps(blame.to_dict())


async def test_the_event_loop_runs_while_a_long_blame_is_encoded() -> None:
    """Encoded as one value, a blame of 330,000 lines held the GIL (so the server's event
    loop) for the 0.5 s json's C encoder took."""
    blame = _blame(150_000)
    gaps: list[float] = []
    done = False

    async def tick() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await asyncio.to_thread(blame_json, blame)
    took = time.perf_counter() - started
    done = True
    await ticker
    assert max(gaps) < 0.05, (max(gaps), took)  # json.dumps of it all: 0.2 s
