"""A device's heads poll asks the document list again with its ETag: a 304 while the
project is unchanged, answered from the heads read last time. Real server process."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from client.remote import Api, ServerURL
from server.testing import ServerProcess, StartServer, YPeer

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


async def test_heads_polled_again_are_a_304_until_the_project_changes(
    server: ServerProcess,
) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    statuses: list[int] = []

    async def on_end(_s: object, _c: object, params: aiohttp.TraceRequestEndParams) -> None:
        statuses.append(params.response.status)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as http:
        api = Api(http, ServerURL.parse(server.ws_url), "acme", project)

        async def edit(path: str, text: str) -> None:
            peer = await YPeer.connect(http, f"{server.ws_url}/acme/{project}/{path}", weft=True)
            await peer.append(text)
            await peer.until(lambda: len(peer.acks) == 1)
            await peer.close()

        await edit("a.md", "one")
        statuses.clear()
        first = await api.heads()
        assert list(first) == ["a.md"] and first["a.md"] is not None
        first["mutated by the caller"] = None  # a copy: the next answer is not changed
        again = await api.heads()
        assert again == {"a.md": first["a.md"]}
        assert statuses == [200, 304]
        await edit("b.md", "two")
        statuses.clear()
        changed = await api.heads()
        assert sorted(changed) == ["a.md", "b.md"] and changed["a.md"] == first["a.md"]
        assert statuses == [200]


async def test_heads_from_a_server_that_sends_no_etag_are_read_whole_each_time(
    server: ServerProcess,
) -> None:
    """A project nothing was appended to since its store's format 1.5 (or an older
    server) has no ETag: every poll reads the list."""
    project = f"p{uuid.uuid4().hex[:8]}"  # empty: no change marker yet
    async with aiohttp.ClientSession() as http:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/{project}-x/a.md", weft=True)
        await peer.append("the tenant exists")
        await peer.until(lambda: len(peer.acks) == 1)
        await peer.close()
        api = Api(http, ServerURL.parse(server.ws_url), "acme", project)
        assert await api.heads() == {}
        assert await api.heads() == {}
        assert api._heads is None
