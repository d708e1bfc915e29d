"""A server's threads share at most four glibc malloc arenas (``server.memory.limit_arenas``).

Found by the 2026-12-06 leak audit: glibc gave each of the server's threads that
allocates its own arena (9 arenas in a server with 13 threads after a sync and a few
reads), each keeping the memory freed in it, and the server's RSS grew with churn while
its memory in use stayed flat.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from server.memory import ARENAS
from server.testing import StartServer, YPeer, client_session

HEAP = 64 << 20  # a glibc arena's heap: reserved as one aligned 64 MiB mapping


def arena_heaps(pid: int) -> int:
    """The glibc arena heaps (beyond the main arena) mapped in process ``pid``: anonymous
    mappings at a 64 MiB boundary whose used part (rw) and reserved rest (no access)
    make 64 MiB."""
    maps = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        maps.append((low, high, fields[1], len(fields) > 5))
    heaps = 0
    for i, (low, high, perms, named) in enumerate(maps):
        if named or low % HEAP or perms != "rw-p":
            continue
        end = high
        if i + 1 < len(maps):
            nlow, nhigh, nperms, nnamed = maps[i + 1]
            if nlow == high and nperms == "---p" and not nnamed:
                end = nhigh
        heaps += end - low == HEAP
    return heaps


async def wait_for_text(http: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(10):
        while True:
            async with http.get(url) as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.02)


async def work(base: str, ws_url: str) -> None:
    """Updates (the store's writer), REST reads at once (its reader threads) and
    connections to several rooms (the watch poller)."""
    async with client_session() as http:
        peers = [await YPeer.connect(http, f"{ws_url}/acme/site/doc{i}.txt") for i in range(8)]
        for i, peer in enumerate(peers):
            await peer.edit(0, f"text {i}\n" * 200)
        for i in range(8):  # each edit is stored (the reads below answer 200)
            await wait_for_text(http, f"{base}/api/v1/acme/site/docs/doc{i}.txt")
        reads = [http.get(f"{base}/api/v1/acme/site/docs/doc{i % 8}.txt") for i in range(40)]
        for response in await asyncio.gather(*reads):
            assert response.status == 200
            await response.read()
        for peer in peers:
            await peer.close()


async def test_the_servers_threads_share_at_most_four_arenas(
    weft_server_factory: StartServer,
) -> None:
    server = weft_server_factory()
    await work(server.url, server.ws_url)
    assert server.proc.pid is not None
    heaps = arena_heaps(server.proc.pid)
    assert heaps <= ARENAS - 1, Path(f"/proc/{server.proc.pid}/maps").read_text()
