"""The conflict list in pages, end to end: ``GET .../conflicts`` answered a project's
every record, whole texts included, in one store read and one response (records are
never removed, so it grew without bound). It answers a page (``?limit=``, default 100,
at most 1000) from the first id after ``?after=``, in id order, with the filters applied
before the limit, and ``next_after`` for the next page; ``weft conflicts list`` follows
the pages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from server.testing import ServerProcess, StartServer, YPeer, call_api

pytestmark = pytest.mark.functional
TENANT = "acme"
RECORDS = 230  # more than two pages of the default size (100)
PATHS = ("a.md", "b.md")


@dataclass(frozen=True)
class Made:
    """The records made in a project, as the server answered them (after resolving)."""

    project: str
    records: list[dict[str, Any]]

    def ids(self, **wanted: str) -> list[str]:
        """The ids of the records that pass ``wanted`` (as the query filters), in id order."""

        def passes(r: dict[str, Any]) -> bool:
            return (
                wanted.get("path", r["path"]) == r["path"]
                and wanted.get("status", r["status"]) == r["status"]
                and wanted.get("device", r["ours"]["clients"][0]) in r["ours"]["clients"]
            )

        return sorted(r["id"] for r in self.records if passes(r))


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


@pytest.fixture(scope="module")
def made(server: ServerProcess) -> Made:
    """``RECORDS`` reports in project ``pages``: on a.md and b.md by turns, every third
    by device ``dev-b`` (the others ``dev-a``), every fourth resolved."""
    return asyncio.run(make_records(server, "pages"))


async def make_records(server: ServerProcess, project: str) -> Made:
    async with aiohttp.ClientSession() as http:
        for path in PATHS:  # a report needs a document to conflict with
            peer = await YPeer.connect(
                http, f"{server.ws_url}/{TENANT}/{project}/{path}", weft=True
            )
            await peer.append("the server's text\n")
            await peer.until(lambda peer=peer: len(peer.acks) == 1)  # type: ignore[misc]
            await peer.close()
        url = f"{server.url}/api/v1/{TENANT}/{project}/conflicts"
        gate = asyncio.Semaphore(8)

        async def one(n: int) -> dict[str, Any]:
            device = "dev-b" if n % 3 == 0 else "dev-a"
            report = {"path": PATHS[n % 2], "text": f"mine, number {n}\n", "device": device}
            async with gate:
                status, body = await call_api(http, "POST", url, body=report)
                assert status == 201, body
                if n % 4 == 0:
                    cid = body["conflict"]["id"]
                    status, body = await call_api(http, "POST", f"{url}/{cid}/resolve", body={})
                    assert status == 200, body
            return dict(body["conflict"])

        records = await asyncio.gather(*(one(n) for n in range(RECORDS)))
    assert len({r["id"] for r in records}) == RECORDS
    return Made(project, list(records))


async def pages(
    http: aiohttp.ClientSession, server: ServerProcess, project: str, **params: str
) -> list[list[str]]:
    """The ids of every page of the list, following ``next_after`` from the first page
    (asked with ``params``) to the end."""
    url = f"{server.url}/api/v1/{TENANT}/{project}/conflicts"
    found: list[list[str]] = []
    while True:
        status, body = await call_api(http, "GET", url, **params)
        assert status == 200, body
        assert (body["tenant"], body["project"]) == (TENANT, project)
        found.append([r["id"] for r in body["conflicts"]])
        assert len(found) <= RECORDS + 1, "next_after goes round"
        if body["next_after"] is None:
            return found
        params["after"] = body["next_after"]


async def test_the_pages_hold_every_record_once_in_id_order(
    server: ServerProcess, made: Made, http: aiohttp.ClientSession
) -> None:
    everything = made.ids()
    [first, second, third] = await pages(http, server, made.project)
    assert first == everything[:100] and second == everything[100:200]  # (the default size)
    assert third == everything[200:]
    found = await pages(http, server, made.project, limit="37")
    assert [len(page) for page in found] == [37] * 6 + [8]
    assert [cid for page in found for cid in page] == everything
    [whole] = await pages(http, server, made.project, limit="1000")
    assert whole == everything
    # an id is a cursor whether or not it is a record's, in either case of hex digits
    status, body = await call_api(
        http, "GET", f"{server.url}/api/v1/{TENANT}/{made.project}/conflicts",
        after=everything[99].upper(), limit="2",
    )  # fmt: skip
    assert status == 200 and body["next_after"] == everything[101], body
    assert [r["id"] for r in body["conflicts"]] == everything[100:102]
    assert await pages(http, server, made.project, after="f" * 24) == [[]]


@pytest.mark.parametrize(
    "wanted",
    [
        {"status": "open"},
        {"status": "resolved"},
        {"device": "dev-b"},
        {"path": "b.md", "status": "open"},
        {"status": "open", "device": "dev-b"},
    ],
    ids=lambda wanted: "&".join(f"{k}={v}" for k, v in wanted.items()),
)
async def test_the_filters_apply_before_the_limit(
    server: ServerProcess, made: Made, http: aiohttp.ClientSession, wanted: dict[str, str]
) -> None:
    expected = made.ids(**wanted)
    assert 10 < len(expected) < RECORDS
    found = await pages(http, server, made.project, limit="9", **wanted)
    assert [cid for page in found for cid in page] == expected
    assert all(len(page) == 9 for page in found[:-1]), found  # (full pages but the last)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("limit", "0", "?limit= must be a whole number from 1 to 1000, not '0'"),
        ("limit", "1001", "?limit= must be a whole number from 1 to 1000, not '1001'"),
        ("limit", "-5", "?limit= must be a whole number from 1 to 1000, not '-5'"),
        ("limit", "ten", "?limit= must be a whole number from 1 to 1000, not 'ten'"),
        ("limit", "9" * 5000, "?limit= must be a whole number from 1 to 1000, not '999"),
        ("limit", "", "?limit= must be a whole number from 1 to 1000, not ''"),
        ("after", "xyz", "?after= must be a conflict id (24 hex digits), not 'xyz'"),
        ("after", "0" * 23, f"?after= must be a conflict id (24 hex digits), not '{'0' * 23}'"),
        ("after", "g" * 24, f"?after= must be a conflict id (24 hex digits), not '{'g' * 24}'"),
    ],
)
async def test_a_bad_limit_or_after_is_a_400_naming_it(
    server: ServerProcess, made: Made, http: aiohttp.ClientSession, name: str, value: str, says: str
) -> None:
    url = f"{server.url}/api/v1/{TENANT}/{made.project}/conflicts"
    status, body = await call_api(http, "GET", url, **{name: value})
    assert status == 400, body
    assert body["error"]["message"].startswith(says), body


def weft(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "conflicts", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def test_weft_conflicts_list_follows_the_pages(server: ServerProcess, made: Made) -> None:
    """``weft conflicts list`` printed the first page only once the server paged."""
    remote = ["--server", server.url, "--tenant", TENANT, "--project", made.project]
    local = ["--store", server.store, "--tenant", TENANT, "--project", made.project]
    for where in (remote, local):
        r = await asyncio.to_thread(weft, "list", "--json", *where)
        assert r.returncode == 0, r.stderr
        assert [record["id"] for record in json.loads(r.stdout)] == made.ids()
        r = await asyncio.to_thread(weft, "list", *where)
        assert r.returncode == 0, r.stderr
        rows = r.stdout.splitlines()[1:]  # the table: oldest first, id order among ties
        by_id = sorted(made.records, key=lambda record: str(record["id"]))
        oldest_first = sorted(by_id, key=lambda record: int(record["created_ms"]))
        assert [row.split()[0] for row in rows] == [record["id"] for record in oldest_first]
        r = await asyncio.to_thread(weft, "list", "--json", "--status", "open", *where)
        assert [record["id"] for record in json.loads(r.stdout)] == made.ids(status="open")
        for limit in (5, 150):
            r = await asyncio.to_thread(weft, "list", "--json", "--limit", str(limit), *where)
            assert r.returncode == 0, r.stderr
            assert [record["id"] for record in json.loads(r.stdout)] == made.ids()[:limit]
    r = await asyncio.to_thread(weft, "list", "--limit", "0", *remote)
    assert r.returncode == 2 and "argument --limit: must be a whole number from 1, not '0'" in (
        r.stderr
    ), r
