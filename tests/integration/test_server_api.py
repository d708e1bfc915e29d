"""The read API, /metrics and /healthz of a real server."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from crdt.versionstamp import Versionstamp
from server.testing import ServerProcess, StartServer, YPeer

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


async def get(
    http: aiohttp.ClientSession, url: str, **params: str
) -> tuple[int, str, CIMultiDictProxy[str]]:
    async with http.get(url, params=params) as response:
        return response.status, await response.text(), response.headers


async def test_doc_list_and_text_at_head_at_versionstamp_and_at_time(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    api = f"{server.url}/api/v1/history/site"
    peer = await YPeer.connect(http, f"{server.ws_url}/history/site/notes/today.md", weft=True)
    other = await YPeer.connect(http, f"{server.ws_url}/history/site/other.md", weft=True)
    await other.edit(0, "x")
    stamps: list[Versionstamp] = []
    times: list[datetime] = []
    for word in ("one", " two", " three"):
        await peer.append(word)
        await peer.until(lambda: len(peer.acks) == len(stamps) + 1)
        stamps.append(peer.acks[-1].versionstamp)
        await asyncio.sleep(0.02)
        times.append(datetime.now(UTC))
        await asyncio.sleep(0.02)
    await other.until(lambda: len(other.acks) == 1)

    status, body, _ = await get(http, f"{api}/docs")
    assert status == 200
    docs = {d["path"]: d for d in json.loads(body)["docs"]}
    assert sorted(docs) == ["notes/today.md", "other.md"]
    today = docs["notes/today.md"]
    assert today["head"] == stamps[-1].hex() and today["updates"] == 3
    assert today["size"] > 0 and today["updated"].startswith(str(datetime.now(UTC).year))

    status, body, headers = await get(http, f"{api}/docs/notes/today.md")
    assert (status, body) == (200, "one two three")
    assert headers["X-Weft-Versionstamp"] == stamps[-1].hex()
    assert (await get(http, f"{api}/docs/notes/today.md", at=stamps[0].hex()))[1] == "one"
    assert (await get(http, f"{api}/docs/notes/today.md", at=times[1].isoformat()))[1] == (
        "one two"
    )
    naive = times[0].replace(tzinfo=None).isoformat()  # naive times are UTC
    assert (await get(http, f"{api}/docs/notes/today.md", at=naive))[1] == "one"
    before = (times[0] - timedelta(hours=1)).isoformat()
    status, body, _ = await get(http, f"{api}/docs/notes/today.md", at=before)
    assert status == 404 and '"not_found"' in body
    status, body, _ = await get(http, f"{api}/docs/notes/today.md", format="json")
    assert status == 200 and json.loads(body) == {
        "path": "notes/today.md",
        "versionstamp": stamps[-1].hex(),
        "text": "one two three",
        "deleted": False,
    }
    assert (await get(http, f"{api}/docs/notes/today.md", at="head"))[1] == "one two three"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, body, _ = await get(http, f"{api}/docs/notes/today.md", at=future)
    assert status == 400 and "in the future" in json.loads(body)["error"]["message"]
    await peer.close()
    await other.close()


async def test_the_document_list_asked_again_with_its_etag_is_a_304_until_it_changes(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A device polls the list every second: while nothing is appended to the project
    the answer is a 304 with no body (it was the whole list each time)."""
    project = f"p{uuid.uuid4().hex[:8]}"
    api = f"{server.url}/api/v1/etag/{project}/docs"

    async def edit(path: str, text: str, in_project: str = project) -> None:
        peer = await YPeer.connect(http, f"{server.ws_url}/etag/{in_project}/{path}", weft=True)
        await peer.append(text)
        await peer.until(lambda: len(peer.acks) == 1)
        await peer.close()

    async def listed(etag: str | None = None) -> tuple[int, str, str | None]:
        headers = {"If-None-Match": etag} if etag else {}
        async with http.get(api, headers=headers) as response:
            return response.status, await response.text(), response.headers.get("ETag")

    await edit("a.md", "one")
    status, body, etag = await listed()
    assert status == 200 and etag is not None and etag.startswith('"')
    assert [d["path"] for d in json.loads(body)["docs"]] == ["a.md"]
    assert await listed(etag) == (304, "", etag)
    # Weakly compared (RFC 9110): a proxy that gzips the list (nginx) hands on the ETag
    # as W/"...", and its clients ask with that.
    assert await listed(f"W/{etag}") == (304, "", etag)
    await edit("b.md", "x", in_project=f"{project}-other")  # another project: unchanged
    assert await listed(etag) == (304, "", etag)
    await edit("b.md", "two")  # a new document: the list changed
    status, body, second = await listed(etag)
    assert status == 200 and second not in (None, etag)
    assert [d["path"] for d in json.loads(body)["docs"]] == ["a.md", "b.md"]
    await edit("a.md", " more")  # an edit moves a head: changed too
    status, body, third = await listed(second)
    assert status == 200 and third not in (None, etag, second)
    # An ETag that is not the list's (weak or not), or garbage: the whole list.
    for other in (etag, f"W/{second}", '"zz"', "W/*"):
        status, body, again = await listed(other)
        assert status == 200 and again == third and len(json.loads(body)["docs"]) == 2
    # The list's among others, or "*" (any list at all): not modified (RFC 9110; both
    # were a 200 with the whole list).
    for matching in (f'{etag}, "zz", {third}', "*"):
        assert await listed(matching) == (304, "", third)
    empty = f"{server.url}/api/v1/etag/{project}-none/docs"  # no marker: no list to match
    async with http.get(empty, headers={"If-None-Match": "*"}) as response:
        assert response.status == 200 and "ETag" not in response.headers


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/v1/nobody/site/docs", {}, 404, "not_found"),
        ("/api/v1/history/site/docs/missing.md", {}, 404, "not_found"),
        ("/api/v1/history/site/docs/a//b", {}, 400, "bad_path"),
        ("/api/v1/hist%20ory/site/docs", {}, 400, "bad_path"),
        ("/api/v1/nothing-here", {}, 404, "not_found"),
    ],
)
async def test_errors_are_json_with_a_code_and_a_message(
    path: str,
    params: dict[str, str],
    status: int,
    code: str,
    server: ServerProcess,
    http: aiohttp.ClientSession,
) -> None:
    url = URL(f"{server.url}{path}", encoded=True).with_query(params)
    async with http.get(url) as response:
        assert response.status == status
        body = await response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


async def test_a_malformed_version_of_a_document_that_exists_is_a_400(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Its own document (it relied on the test above creating ``history/site``'s: run
    alone, it met a 404)."""
    peer = await YPeer.connect(http, f"{server.ws_url}/errors/site/notes/today.md", weft=True)
    await peer.edit(0, "x")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    url = f"{server.url}/api/v1/errors/site/docs/notes/today.md"
    async with http.get(url, params={"at": "yesterday"}) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["message"].startswith("not a version: 'yesterday'")


async def test_metrics_expose_the_named_series(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/metrics.txt", weft=True)
    await peer.edit(0, "m")
    await peer.until(lambda: len(peer.acks) == 1)
    async with http.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    for series in (
        "weft_connections 1",
        "weft_rooms_loaded",
        "weft_updates_committed_total",
        "weft_commit_batch_size_bucket",
        "weft_commit_latency_seconds_bucket",
        "weft_fanout_latency_seconds_count",
        "weft_refusals_total",
    ):
        assert series in text, series
    await peer.close()


async def test_healthz(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_the_document_route_refuses_a_parameter_it_does_not_take(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """`docs?foo=1` is a 400 naming foo, but `docs/{path}?foo=1` answered the text at
    head as if asked nothing (a mistyped `?at=` read as head, say)."""
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/params/a.txt")
    await peer.append("hello")
    url = f"{server.url}/api/v1/acme/params/docs/a.txt"
    for _ in range(200):
        status, text, _headers = await get(http, url)
        if status == 200 and text == "hello":
            break
        await asyncio.sleep(0.02)
    assert (status, text) == (200, "hello")
    for params in ({"foo": "1"}, {"At": "head"}, {"as": "json", "format": "json"}):
        status, body, _headers = await get(http, url, **params)
        assert status == 400, body
        error = json.loads(body)["error"]
        assert error["code"] == "bad_request"
        bad = next(k for k in params if k not in ("format",))
        assert f"takes no {bad!r} parameter" in error["message"], error
        assert "at, format and token" in error["message"], error
    status, body, _headers = await get(http, url, at="head", format="json", token="")
    assert status == 200 and json.loads(body)["text"] == "hello", body
    await peer.close()


@pytest.mark.parametrize("escaped", ["%ff", "%c0%af", "a/%e2%82.md"])
async def test_a_path_whose_escapes_are_not_utf8_is_refused_on_every_route(
    escaped: str, server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """yarl leaves an escape it cannot decode as it stands, so ``/ws/.../%ff`` and
    ``/ws/.../%25ff`` wrote the same document, stored under the literal name ``%ff``."""
    project = uuid.uuid4().hex
    ws = await http.ws_connect(URL(f"{server.ws_url}/utf8/{project}/{escaped}", encoded=True))
    msg = await ws.receive(5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4400 and "not valid UTF-8" in str(msg.extra), msg.extra
    await ws.close()
    api = f"{server.url}/api/v1/utf8/{project}"
    for route in (
        f"docs/{escaped}",
        f"history/{escaped}",
        f"diff/{escaped}?from=head",
        f"blame/{escaped}",
    ):
        async with http.get(URL(f"{api}/{route}", encoded=True)) as response:
            body = await response.json()
        assert response.status == 400, (route, body)
        assert body["error"]["code"] == "bad_path", (route, body)
        assert "not valid UTF-8" in body["error"]["message"], (route, body)
    # The literal name, escaped as it should be (%25), is an ordinary document.
    literal = URL(f"{server.ws_url}/utf8/{project}/%25ff", encoded=True).with_query(weft="1")
    peer = YPeer(await http.ws_connect(literal))
    await peer.handshake()
    await peer.edit(0, "literal")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    status, body, _ = await get(http, f"{api}/docs")
    assert status == 200 and [d["path"] for d in json.loads(body)["docs"]] == ["%ff"]
    async with http.get(URL(f"{api}/docs/%25ff", encoded=True)) as response:
        assert response.status == 200 and await response.text() == "literal"


@pytest.mark.parametrize(
    ("route", "query", "repeated"),
    [
        ("docs", "token=a&token=b", "token"),
        ("docs/a.txt", "at=head&at=0", "at"),
        ("docs/a.txt", "format=json&format=text", "format"),
        ("docs/a.txt", "at=head&format=json&at=head", "at"),
        ("history/a.txt", "limit=1&limit=2", "limit"),
        ("diff/a.txt", "from=head&from=0", "from"),
        ("blame/a.txt", "at=head&at=0", "at"),
        ("export", "at=head&at=0", "at"),
        ("conflicts", "status=open&status=resolved", "status"),
        (f"conflicts/{'0' * 24}", "token=&token=", "token"),
    ],
)
async def test_a_query_parameter_given_twice_is_refused(
    route: str, query: str, repeated: str, server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """`docs/a.txt?at=head&at=0` answered the text at head (the first value, silently)."""
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/twice/a.txt", weft=True)
    await peer.append("x")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    url = URL(f"{server.url}/api/v1/acme/twice/{route}?{query}", encoded=True)
    async with http.get(url) as response:
        body = await response.json()
    assert response.status == 400, body
    assert body["error"]["code"] == "bad_request", body
    message = body["error"]["message"]
    assert f"given more than once: {repeated!r}" in message, message


@pytest.mark.parametrize(
    ("route", "query", "unknown", "takes"),
    [
        ("history/a.txt", "limt=1", "limt", "limit, since, until and token"),
        ("diff/a.txt", "from=head&at=head", "at", "from, to, format and token"),
        ("blame/a.txt", "version=0", "version", "at and token"),
        ("blame/a.txt", "At=head", "At", "at and token"),
        ("export", "to=head", "to", "at and token"),
    ],
)
async def test_a_query_parameter_a_time_travel_route_does_not_take_is_refused(
    route: str,
    query: str,
    unknown: str,
    takes: str,
    server: ServerProcess,
    http: aiohttp.ClientSession,
) -> None:
    """`blame/a.txt?version=0` answered the blame at head, as if nothing had been asked,
    as the document routes refuse such a parameter."""
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/unknown/a.txt", weft=True)
    await peer.append("x")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    async with http.get(f"{server.url}/api/v1/acme/unknown/{route}?{query}") as response:
        body = await response.json()
    assert (response.status, body["error"]["code"]) == (400, "bad_request"), body
    assert f"takes no {unknown!r} parameter: it takes {takes}" in body["error"]["message"]
