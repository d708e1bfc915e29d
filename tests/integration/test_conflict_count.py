"""The document list's ``X-Weft-Conflicts``: how many times a conflict record of the
project was made or resolved, on the list's 200 and 304 answers alike (a new record
leaves the ETag as it was), counted in the store, so every server instance on it says
the same number, and a new one goes on from it."""

from __future__ import annotations

import aiohttp
import pytest

from server.testing import ServerProcess, StartServer, YPeer

pytestmark = pytest.mark.functional

TENANT = "acme"
PROJECT = "counted"


async def listed(
    http: aiohttp.ClientSession, server: ServerProcess, etag: str | None = None
) -> tuple[int, str | None, str | None]:
    """The document list's status, ETag and ``X-Weft-Conflicts`` (asked with ``etag``)."""
    headers = {"If-None-Match": etag} if etag else {}
    url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs"
    async with http.get(url, headers=headers) as response:
        await response.read()
        return (
            response.status,
            response.headers.get("ETag"),
            response.headers.get("X-Weft-Conflicts"),
        )


async def report(http: aiohttp.ClientSession, server: ServerProcess, text: str) -> str:
    """Record a conflict as a client reports one: its id."""
    url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts"
    body = {"path": "plan.txt", "text": text, "device": "desk"}
    async with http.post(url, json=body) as response:
        assert response.status in (200, 201), await response.text()
        return str((await response.json())["conflict"]["id"])


async def resolve(http: aiohttp.ClientSession, server: ServerProcess, cid: str) -> None:
    url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts/{cid}/resolve"
    async with http.post(url, json={}) as response:
        assert response.status == 200, await response.text()


async def test_the_document_list_counts_conflict_records_made_and_resolved(
    weft_server_factory: StartServer, http: aiohttp.ClientSession
) -> None:
    a = weft_server_factory()
    b = weft_server_factory(store=a.store)  # another instance on the same SQLite file
    peer = await YPeer.connect(http, f"{a.ws_url}/{TENANT}/{PROJECT}/plan.txt", weft=True)
    await peer.append("the plan\n")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()

    status, etag, count = await listed(http, a)
    assert (status, count) == (200, "0") and etag is not None  # no record yet
    assert await listed(http, a, etag) == (304, etag, "0")

    first = await report(http, a, "my other plan\n")
    # The list did not change: still a 304 for its ETag, saying the new count.
    assert await listed(http, a, etag) == (304, etag, "1")
    assert await listed(http, b, etag) == (304, etag, "1")
    assert await report(http, b, "my other plan\n") == first  # the same report: no record
    await resolve(http, b, first)
    assert await listed(http, a, etag) == (304, etag, "2")
    await resolve(http, a, first)  # resolved already: nothing written
    await report(http, a, "yet another plan\n")
    assert await listed(http, a) == (200, etag, "3")
    assert await listed(http, b, etag) == (304, etag, "3")

    for server in (a, b):
        server.terminate()
    c = weft_server_factory(store=a.store)
    assert await listed(http, c, etag) == (304, etag, "3")
