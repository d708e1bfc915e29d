"""``GET .../docs?since=MARKER``: only the documents changed after a change marker (the
list's ETag), or the whole list when the server cannot tell them. Real server process."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import pytest

from server.testing import ServerProcess, StartServer, YPeer

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


class Project:
    """One fresh project on the server: edits through a weft peer, list reads."""

    def __init__(self, server: ServerProcess, http: aiohttp.ClientSession) -> None:
        self.server, self.http = server, http
        self.name = f"p{uuid.uuid4().hex[:8]}"
        self.api = f"{server.url}/api/v1/since/{self.name}/docs"

    async def edit(self, path: str, text: str) -> None:
        url = f"{self.server.ws_url}/since/{self.name}/{path}"
        peer = await YPeer.connect(self.http, url, weft=True)
        await peer.append(text)
        await peer.until(lambda: len(peer.acks) == 1)
        await peer.close()

    async def list(
        self, since: str | None = None, etag: str | None = None
    ) -> tuple[int, dict[str, Any] | None, str]:
        params = {"since": since} if since is not None else {}
        headers = {"If-None-Match": etag} if etag else {}
        async with self.http.get(self.api, params=params, headers=headers) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, response.headers["ETag"]


def paths(body: dict[str, Any] | None) -> list[str]:
    return [d["path"] for d in (body or {})["docs"]]


def marker(etag: str) -> str:
    return etag.strip('"')


async def test_since_a_marker_the_list_holds_only_the_documents_changed_after_it(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    project = Project(server, http)
    for path in ("a.md", "b.md", "c.md"):
        await project.edit(path, "one")
    status, whole, etag = await project.list()
    assert status == 200 and whole is not None and whole["complete"] is True
    assert paths(whole) == ["a.md", "b.md", "c.md"]
    await project.edit("b.md", " two")
    await project.edit("b.md", " three")  # two appends to one doc: listed once
    await project.edit("new/d.md", "new")  # a new document
    status, delta, now = await project.list(marker(etag))
    assert status == 200 and delta is not None and now != etag
    assert delta["complete"] is False and delta["since"] == marker(etag)
    assert paths(delta) == ["b.md", "new/d.md"]
    _, fresh, _ = await project.list()
    assert fresh is not None
    assert delta["docs"] == [d for d in fresh["docs"] if d["path"] in ("b.md", "new/d.md")]
    # Since the current marker: an empty delta; with If-None-Match too: a 304
    assert await project.list(marker(now)) == (
        200,
        {
            "tenant": "since",
            "project": project.name,
            "complete": False,
            "since": marker(now),
            "docs": [],
        },
        now,
    )
    assert await project.list(marker(now), now) == (304, None, now)
    # The ETag as a proxy may hand it on (weak, in quotes) is taken too
    status, weak, _ = await project.list(f"W/{etag}")
    assert weak is not None and paths(weak) == ["b.md", "new/d.md"]


async def test_a_well_formed_marker_the_server_cannot_answer_gets_the_whole_list(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Another project's or store's, one from before a restore, one made up: the whole
    list, said complete."""
    project, other = Project(server, http), Project(server, http)
    await other.edit("x.md", "x")
    _, _, foreign = await other.list()
    await project.edit("a.md", "one")
    _, _, etag = await project.list()
    await project.edit("b.md", "two")
    for since in (marker(foreign), marker(etag)[:20] + "0" * 16, "0" * 36, "f" * 36):
        status, body, _ = await project.list(since)
        assert status == 200 and body is not None, since
        assert body["complete"] is True and "since" not in body
        assert paths(body) == ["a.md", "b.md"]


@pytest.mark.parametrize("since", ["", "abc", "g" * 36, "0" * 34, "0" * 38, '"' + "0" * 35])
async def test_a_malformed_since_is_a_400(
    server: ServerProcess, http: aiohttp.ClientSession, since: str
) -> None:
    project = Project(server, http)
    await project.edit("a.md", "one")
    async with http.get(project.api, params={"since": since}) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == "bad_request" and "?since= must be a change marker" in error["message"]


async def test_since_given_twice_is_a_400(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    project = Project(server, http)
    await project.edit("a.md", "one")
    url = f"{project.api}?since={'0' * 36}&since={'1' * 36}"
    async with http.get(url) as response:
        assert response.status == 400
        assert "'since'" in (await response.json())["error"]["message"]
