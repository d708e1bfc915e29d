"""A device's heads poll asks the document list again with its ETag: a 304 while the
project is unchanged, answered from the heads read last time; else only the documents
changed since (``?since=``), merged into them. Real server processes."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Doc, Text

from client.remote import Api, ServerURL
from crdt.history import Append, History
from crdt.kv import open_engine
from server.testing import ServerProcess, StartServer, YPeer, serve_in_process

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


class Spy:
    """What an Api's list reads answered: 304 (None), the whole list, or a delta."""

    def __init__(self, api: Api) -> None:
        self.answers: list[str] = []
        self.sizes: list[int] = []
        inner = api._get_unless

        async def spied(
            url: str, headers: dict[str, str], since: str | None
        ) -> tuple[dict[str, Any] | None, str | None]:
            body, etag = await inner(url, headers, since)
            kind = "304" if body is None else "whole" if body.get("complete", True) else "delta"
            self.answers.append(kind)
            self.sizes.append(len((body or {}).get("docs", [])))
            return body, etag

        api._get_unless = spied  # type: ignore[method-assign]


async def test_a_device_s_heads_stay_those_of_a_fresh_read_over_random_appends_and_polls(
    server: ServerProcess,
) -> None:
    """Appends (several documents, one document several times, new documents) from
    another process on the server's SQLite file, polls in between: the heads a device
    merges from deltas are always exactly the whole list's."""
    project = f"p{uuid.uuid4().hex[:8]}"
    rng = random.Random(20261206)
    pool = [f"d{n}.md" for n in range(6)] + ["sub/e.md", "sub/f.md"]
    async with (
        open_engine(server.store) as kv,
        aiohttp.ClientSession() as http,
    ):
        history = History(kv)
        await history.init()
        devices: dict[str, Doc[Any]] = {}
        since_poll: set[str] = set()  # the documents appended to since the last poll

        async def append(paths: list[str]) -> None:
            since_poll.update(paths)
            items = []
            for path in paths:
                doc = devices.setdefault(path, Doc())
                text = doc.get("content", type=Text)
                before = doc.get_state()
                text += path
                ref = await history.doc("acme", project, path, create=True)
                items.append(Append(ref, doc.get_update(before)))
            await history.append(items)

        await append(pool[:2])
        api = Api(http, ServerURL.parse(server.ws_url), "acme", project)
        spy = Spy(api)
        for _ in range(80):
            if rng.random() < 0.55:
                await append(rng.choices(pool, k=rng.randint(1, 3)))
                continue
            fresh = await Api(http, api.server, "acme", project).heads()
            assert await api.heads() == fresh
            if spy.answers[-1] != "whole":  # a delta holds exactly the changed documents
                assert spy.sizes[-1] == len(since_poll)
            since_poll.clear()
        assert await api.heads() == await Api(http, api.server, "acme", project).heads()
    assert spy.answers[0] == "whole" and "whole" not in spy.answers[1:]
    assert spy.answers.count("delta") > 5 and "304" in spy.answers


async def test_heads_polled_from_two_servers_on_one_store_see_each_other_s_appends(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Two server processes on one SQLite file, edits through both at once: a device
    polling one of them sees the other's appends in its deltas (concurrent appends
    never conflict on the change index, nor miss it)."""
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = weft_server_factory(store=store), weft_server_factory(store=store)
    project = f"p{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        api = Api(http, ServerURL.parse(one.ws_url), "acme", project)
        spy = Spy(api)

        async def typist(server: ServerProcess, path: str) -> None:
            peer = await YPeer.connect(http, f"{server.ws_url}/acme/{project}/{path}", weft=True)
            for n in range(8):
                await peer.append(f"{n} ")

                def acked(count: int = n + 1) -> bool:
                    return len(peer.acks) == count

                await peer.until(acked)
            await peer.close()

        async def poller() -> None:
            for _ in range(15):
                await api.heads()
                await asyncio.sleep(0.01)

        await typist(one, "first.md")
        await api.heads()
        await asyncio.gather(
            *(typist(s, f"{s.port}-{n}.md") for s in (one, two) for n in range(3)), poller()
        )
        for server in (one, two):
            assert (
                await api.heads()
                == await Api(http, ServerURL.parse(server.ws_url), "acme", project).heads()
            )
        assert len(await api.heads()) == 7
    assert spy.answers[0] == "whole" and "whole" not in spy.answers[1:]
    assert "delta" in spy.answers


async def test_a_server_that_refuses_since_is_asked_for_the_whole_list() -> None:
    """A server from before ``?since=`` refuses the parameter (400, naming it): the
    device asks again without it, and from then on, with its ETag only."""
    asked: list[str] = []

    async def old_list(request: web.Request) -> web.Response:
        asked.append(request.query_string)
        if request.query:  # what refuse_unknown_params said before ?since=
            message = "the document list takes no 'since' parameter: it lists every document"
            error = {"code": "bad_request", "message": message}
            return web.json_response({"error": error}, status=400)
        body = {"docs": [{"path": "a.md", "head": "00" * 12}]}
        return web.json_response(body, headers={"ETag": f'"{"ab" * 18}"'})

    app = web.Application()
    app.router.add_get("/api/v1/acme/site/docs", old_list)
    async with serve_in_process(app) as old, aiohttp.ClientSession() as http:
        api = Api(http, ServerURL.parse(old.ws_url), "acme", "site")
        for _ in range(3):
            assert list(await api.heads()) == ["a.md"]
    assert asked == ["", f"since={'ab' * 18}", "", ""]


async def test_another_400_costs_one_poll_the_whole_list_not_every_later_one(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A 400 that is not a refusal of ``?since=`` (a proxy's, here once, an HTML page):
    that poll reads the whole list, and the next ones ask for deltas again. Any 400 used
    to stop ``?since=`` for the rest of the device's run."""
    project = f"p{uuid.uuid4().hex[:8]}"
    upstream = f"{server.url}/api/v1/acme/{project}/docs"
    asked: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        asked.append(request.query.get("since", ""))
        if len(asked) == 2:  # the first poll that sends since
            return web.Response(status=400, text="<html>400 Bad Request</html>")
        headers = {"If-None-Match": request.headers.get("If-None-Match", "")}
        async with http.get(upstream, params=request.query, headers=headers) as answer:
            body = await answer.read()
            passed = {"ETag": answer.headers["ETag"]} if "ETag" in answer.headers else {}
            return web.Response(status=answer.status, body=body, headers=passed)

    async def edit(path: str) -> None:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/{project}/{path}", weft=True)
        await peer.append(path)
        await peer.until(lambda: len(peer.acks) == 1)
        await peer.close()

    app = web.Application()
    app.router.add_get(f"/api/v1/acme/{project}/docs", proxy)
    async with serve_in_process(app) as front:
        api = Api(http, ServerURL.parse(front.ws_url), "acme", project)
        spy = Spy(api)
        direct = ServerURL.parse(server.ws_url)
        for path in ("a.md", "b.md", "c.md"):
            await edit(path)
            assert await api.heads() == await Api(http, direct, "acme", project).heads()
    assert asked[1] != "" and asked[2] == ""  # the 400, then the same poll without since
    assert asked[3] != ""  # since is still sent
    assert spy.answers == ["whole", "whole", "delta"]
