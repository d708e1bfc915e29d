"""Time travel over REST against a real server process: history, diff, blame, export and
revert (seen live by a connected editor), with scopes, tenant isolation and bad input."""

from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from blake3 import blake3
from pycrdt import Map
from pydantic import SecretStr

from crdt.codec import SyncUpdate
from crdt.timetravel import predecessor
from crdt.versionstamp import Versionstamp
from server.app import create_app
from server.config import Settings
from server.testing import (
    AUTH_ENV,
    TEST_SECRET,
    ServerProcess,
    StartServer,
    YPeer,
    call_api,
    client_session,
    serve_in_process,
    token_for,
)

pytestmark = pytest.mark.functional


FUTURE = "00000000ffffffff00000000"  # 2^32 commits ahead of any store these tests make


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


class Editor:
    """A weft y-websocket peer that waits for the ack of each edit."""

    def __init__(self, peer: YPeer) -> None:
        self.peer = peer

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, server: ServerProcess, path: str, user: str
    ) -> Editor:
        url = f"{server.ws_url}/acme/proj/{path}"
        return cls(await YPeer.connect(http, url, token=token_for(user), weft=True))

    async def _send(self, change: Any) -> Versionstamp:
        before = self.peer.doc.get_state()
        change()
        update = self.peer.doc.get_update(before)
        count = len(self.peer.acks)
        await self.peer.send(SyncUpdate(update))
        await self.peer.until(lambda: len(self.peer.acks) > count)
        return self.peer.acks[-1].versionstamp

    async def insert(self, at: int, s: str) -> Versionstamp:
        return await self._send(lambda: self.peer.text.insert(at, s))

    async def delete_file(self) -> Versionstamp:
        def change() -> None:
            del self.peer.text[0 : len(self.peer.text)]
            self.peer.doc.get("weft", type=Map)["deleted"] = True

        return await self._send(change)


async def test_history_diff_blame_and_paging(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    api = f"{server.url}/api/v1/acme/proj"
    ada = await Editor.open(http, server, "notes.md", "ada")
    bob = await Editor.open(http, server, "notes.md", "bob")
    v1 = await ada.insert(0, "one\ntwo\n")
    await bob.peer.wait_text("one\ntwo\n")
    await asyncio.sleep(0.01)
    between = datetime.now(UTC)
    await asyncio.sleep(0.01)
    v2 = await bob.insert(8, "three\n")
    v3 = await bob.insert(4, "TWO-")
    tok = token_for(scope="read")

    status, page = await call_api(http, "GET", f"{api}/history/notes.md", token=tok)
    assert status == 200
    stamps = [v["versionstamp"] for v in page["versions"]]
    assert stamps == [v3.hex(), v2.hex(), v1.hex()]
    assert [v["user"] for v in page["versions"]] == ["bob", "bob", "ada"]
    assert all(v["size"] > 0 and v["time"].startswith(str(between.year)) for v in page["versions"])
    status, first = await call_api(http, "GET", f"{api}/history/notes.md", token=tok, limit="2")
    assert [v["versionstamp"] for v in first["versions"]] == [v3.hex(), v2.hex()]
    status, rest = await call_api(
        http, "GET", f"{api}/history/notes.md", token=tok, limit="2", until=first["next_until"]
    )
    assert [v["versionstamp"] for v in rest["versions"]] == [v1.hex()]
    assert rest["next_until"] is None
    status, since = await call_api(
        http, "GET", f"{api}/history/notes.md", token=tok, since=v1.hex()
    )
    assert [v["versionstamp"] for v in since["versions"]] == [v3.hex(), v2.hex()]
    status, until = await call_api(
        http, "GET", f"{api}/history/notes.md", token=tok, until=between.isoformat()
    )
    assert [v["versionstamp"] for v in until["versions"]] == [v1.hex()]

    status, text = await call_api(
        http, "GET", f"{api}/diff/notes.md", token=tok, **{"from": v1.hex()}
    )
    assert status == 200
    assert text.decode().splitlines() == [
        f"--- a/notes.md\t{v1.hex()}",
        f"+++ b/notes.md\t{v3.hex()}",
        "@@ -1,2 +1,3 @@",
        " one",
        "-two",
        "+TWO-two",
        "+three",
    ]
    status, data = await call_api(
        http, "GET", f"{api}/diff/notes.md", token=tok, format="json",
        **{"from": between.isoformat(), "to": v2.hex()},
    )  # fmt: skip
    assert (data["from"], data["to"]) == (v1.hex(), v2.hex()) and "+three" in data["diff"]

    status, blame = await call_api(http, "GET", f"{api}/blame/notes.md", token=tok)
    assert status == 200 and blame["versionstamp"] == v3.hex()
    lines = [(b["text"], b["user"], b["versionstamp"]) for b in blame["lines"]]
    assert lines == [
        ("one", "ada", v1.hex()),
        ("TWO-two", "bob", v3.hex()),
        ("three", "bob", v2.hex()),
    ]
    status, old = await call_api(http, "GET", f"{api}/blame/notes.md", token=tok, at=v1.hex())
    assert [(b["text"], b["user"]) for b in old["lines"]] == [("one", "ada"), ("two", "ada")]
    await ada.peer.close()
    await bob.peer.close()


async def test_revert_is_a_new_update_that_live_editors_receive(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    api = f"{server.url}/api/v1/acme/proj"
    ada = await Editor.open(http, server, "live.md", "ada")
    v1 = await ada.insert(0, "good text\n")
    await ada.insert(5, "BROKEN ")
    watcher = await Editor.open(http, server, "live.md", "carol")
    await watcher.peer.wait_text("good BROKEN text\n")
    count = len(
        (await call_api(http, "GET", f"{api}/history/live.md", token=token_for()))[1]["versions"]
    )

    status, done = await call_api(
        http,
        "POST",
        f"{api}/revert",
        token=token_for("dan"),
        body={"path": "live.md", "to": v1.hex()},
    )
    assert status == 200, done
    (result,) = done["reverted"]
    assert result["changed"] and result["target"] == v1.hex()
    await watcher.peer.wait_text("good text\n")  # broadcast to the live editor
    await ada.peer.wait_text("good text\n")
    _, page = await call_api(http, "GET", f"{api}/history/live.md", token=token_for())
    assert len(page["versions"]) == count + 1
    newest = page["versions"][0]
    assert (newest["versionstamp"], newest["user"], newest["device"], newest["revert"]) == (
        result["versionstamp"], "dan", "api", True,
    )  # fmt: skip
    # the live editors keep editing on top of the revert
    await ada.insert(0, "still ")
    await watcher.peer.wait_text("still good text\n")
    # reverting the revert brings the text back: history is never rewritten
    back = {"path": "live.md", "to": newest["versionstamp"]}
    status, undone = await call_api(http, "POST", f"{api}/revert", token=token_for(), body=back)
    assert status == 200 and undone["reverted"][0]["changed"]
    await watcher.peer.wait_text("good text\n")
    await ada.peer.close()
    await watcher.peer.close()


async def test_export_and_project_revert_follow_the_deletion_convention(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    api = f"{server.url}/api/v1/acme/tree"
    tok = token_for()
    a = await Editor(
        await YPeer.connect(http, f"{server.ws_url}/acme/tree/a.txt", token=tok, weft=True)
    ).insert(0, "A\n")
    old = Editor(
        await YPeer.connect(http, f"{server.ws_url}/acme/tree/dir/old.txt", token=tok, weft=True)
    )
    await old.insert(0, "old\n")
    cut = await Editor(
        await YPeer.connect(http, f"{server.ws_url}/acme/tree/dir/ünï😀.md", token=tok, weft=True)
    ).insert(0, "x")
    await old.delete_file()
    await Editor(
        await YPeer.connect(http, f"{server.ws_url}/acme/tree/new.txt", token=tok, weft=True)
    ).insert(0, "new\n")
    assert a < cut

    status, body = await call_api(
        http, "GET", f"{api}/export", token=token_for(scope="read"), at=cut.hex()
    )
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members.pop(".weft-manifest.json"))
    assert members == {"a.txt": b"A\n", "dir/old.txt": b"old\n", "dir/ünï😀.md": b"x"}
    assert manifest["versionstamp"] == cut.hex()
    assert {f["path"]: f["blake3"] for f in manifest["files"]} == {
        p: blake3(d).hexdigest() for p, d in members.items()
    }
    status, body = await call_api(http, "GET", f"{api}/export", token=tok)  # head: old.txt deleted
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert sorted(tar.getnames()) == [".weft-manifest.json", "a.txt", "dir/ünï😀.md", "new.txt"]

    status, done = await call_api(http, "POST", f"{api}/revert", token=tok, body={"to": cut.hex()})
    assert status == 200
    changed = {r["path"]: r["deleted"] for r in done["reverted"] if r["changed"]}
    assert changed == {"dir/old.txt": False, "new.txt": True}
    status, body = await call_api(http, "GET", f"{api}/export", token=tok)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert sorted(tar.getnames()) == [
            ".weft-manifest.json",
            "a.txt",
            "dir/old.txt",
            "dir/ünï😀.md",
        ]
        assert tar.extractfile("dir/old.txt").read() == b"old\n"  # type: ignore[union-attr]


async def test_the_exports_document_count_is_of_the_documents_that_existed_at_the_cut(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """``X-Weft-Documents`` (`weft restore`'s progress total) counted every document the
    project lists at head, those created after the cut too (2,052 for a cut of 2,000
    files). It counts those that existed at the cut, with no document replayed before the
    headers, so those deleted at it too: the tar and the manifest leave them out."""
    from client.remote import ServerURL
    from client.timetravel_backends import ApiBackend
    from crdt import timetravel as tt

    tok = token_for()

    async def editor(path: str) -> Editor:
        url = f"{server.ws_url}/acme/counted/{path}"
        return Editor(await YPeer.connect(http, url, token=tok, weft=True))

    a, b, c, d, e, f = [await editor(f"{name}.md") for name in "abcdef"]
    await a.insert(0, "A")
    await b.insert(0, "B")
    await b.delete_file()  # deleted before the cut
    await c.insert(0, "C")
    cut = await d.insert(0, "D")
    await asyncio.sleep(0.01)  # what follows is at a later millisecond
    await c.delete_file()  # deleted after it
    await e.insert(0, "E")  # created after it
    await f.insert(0, "F")  # created and deleted after it
    await f.delete_file()
    for one in (a, b, c, d, e, f):
        await one.peer.close()
    api = f"{server.url}/api/v1/acme/counted"
    status, page = await call_api(http, "GET", f"{api}/history/d.md", token=tok)
    assert status == 200 and page["versions"][0]["versionstamp"] == cut.hex()
    then = tt.iso_time(page["versions"][0]["ms"]).replace("+00:00", "Z")
    at_cut = (4, ["a.md", "c.md", "d.md"])  # a, b (deleted), c, d existed
    cases = {cut.hex(): at_cut, then: at_cut, "head": (6, ["a.md", "d.md", "e.md"])}
    for at, (existed, files) in cases.items():
        headers = {"Authorization": f"Bearer {tok}"}
        async with http.get(f"{api}/export", params={"at": at}, headers=headers) as response:
            assert response.status == 200
            count, body = response.headers["X-Weft-Documents"], await response.read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            names = tar.getnames()
            manifest = json.loads(tar.extractfile(names[-1]).read())  # type: ignore[union-attr]
        assert (count, names[:-1]) == (str(existed), files), at
        assert [entry["path"] for entry in manifest["files"]] == files
        totals: list[int] = []  # `weft restore`'s progress total, from the header
        backend = ApiBackend(http, ServerURL.parse(server.url), "acme", "counted", tok)
        restored = backend.restore(tt.parse_version(at), totals.append)
        assert [name async for kind, name, *_ in restored if kind == "file"] == files
        assert totals == [existed]


@pytest.mark.parametrize(
    ("method", "route", "params", "body", "status", "code"),
    [
        ("GET", "history/notes.md", {"since": "yesterday"}, None, 400, "bad_request"),
        ("GET", "history/notes.md", {"limit": "x"}, None, 400, "bad_request"),
        ("GET", "history/notes.md", {"limit": "0"}, None, 400, "bad_request"),
        ("GET", "history/notes.md", {"limit": "\u00b2"}, None, 400, "bad_request"),  # ²
        ("GET", "history/notes.md", {"limit": "9" * 5000}, None, 400, "bad_request"),
        ("GET", "history/missing.md", {}, None, 404, "not_found"),
        ("GET", "history/a//b", {}, None, 400, "bad_path"),
        ("GET", "diff/notes.md", {}, None, 400, "bad_request"),
        ("GET", "diff/notes.md", {"from": "2001-01-01T00:00:00Z"}, None, 404, "not_found"),
        ("GET", "blame/notes.md", {"at": "2999-01-01T00:00:00Z"}, None, 400, "bad_request"),
        ("GET", "blame/notes.md", {"at": "000000000000000000000001"}, None, 404, "not_found"),
        ("GET", "export", {"at": "then"}, None, 400, "bad_request"),
        ("POST", "revert", {}, {"path": "notes.md"}, 400, "bad_request"),
        ("POST", "revert", {}, {"path": "notes.md", "to": "2999-01-01"}, 400, "bad_request"),
        ("POST", "revert", {}, {"path": "missing.md", "to": "head"}, 404, "not_found"),
        ("POST", "revert", {}, {"path": "notes.md", "to": "2001-01-01"}, 404, "not_found"),
        ("POST", "revert", {}, ["not", "an", "object"], 400, "bad_request"),
        # a device name outside the ?device= rule (it is printed in history and blame)
        (
            "POST",
            "revert",
            {},
            {"path": "notes.md", "to": "head", "device": "a b!"},
            400,
            "bad_request",
        ),
        ("POST", "revert", {}, {"to": "head", "device": "\u202eevil\nline"}, 400, "bad_request"),
        ("GET", "history/notes.md", {"limit": "-1"}, None, 400, "bad_request"),
        ("GET", "history/notes.md", {"limit": "10001"}, None, 400, "bad_request"),
        # a versionstamp beyond the store's latest commit, in every route that takes one
        ("GET", "docs/notes.md", {"at": FUTURE}, None, 400, "bad_request"),
        ("GET", "history/notes.md", {"until": FUTURE}, None, 400, "bad_request"),
        ("GET", "history/notes.md", {"since": FUTURE}, None, 400, "bad_request"),
        ("GET", "diff/notes.md", {"from": FUTURE}, None, 400, "bad_request"),
        ("GET", "diff/notes.md", {"from": "head", "to": FUTURE}, None, 400, "bad_request"),
        ("GET", "blame/notes.md", {"at": FUTURE}, None, 400, "bad_request"),
        ("GET", "export", {"at": FUTURE}, None, 400, "bad_request"),
        ("POST", "revert", {}, {"path": "notes.md", "to": FUTURE}, 400, "bad_request"),
        ("POST", "revert", {}, {"to": FUTURE}, 400, "bad_request"),
        # a format that does not exist
        ("GET", "docs/notes.md", {"format": "xml"}, None, 400, "bad_request"),
        ("GET", "diff/notes.md", {"from": "head", "format": "xml"}, None, 400, "bad_request"),
    ],
)
async def test_bad_input_is_a_json_error_and_writes_nothing(
    method: str,
    route: str,
    params: dict[str, str],
    body: Any,
    status: int,
    code: str,
    server: ServerProcess,
    http: aiohttp.ClientSession,
) -> None:
    api = f"{server.url}/api/v1/acme/proj"
    tok = token_for()
    editor = await Editor.open(http, server, "notes.md", "ada")
    await editor.insert(0, "x")  # the document exists (whatever ran before)
    await editor.peer.close()
    _, before = await call_api(http, "GET", f"{api}/history/notes.md", token=tok, limit="1000")
    got, answer = await call_api(http, method, f"{api}/{route}", token=tok, body=body, **params)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert answer["error"]["message"]
    _, after = await call_api(http, "GET", f"{api}/history/notes.md", token=tok, limit="1000")
    assert after == before


async def test_bad_query_values_say_what_is_expected(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    api = f"{server.url}/api/v1/acme/proj"
    tok = token_for()
    editor = await Editor.open(http, server, "notes.md", "ada")
    head = await editor.insert(0, "x")
    await editor.peer.close()

    async def error(route: str, **params: str) -> str:
        status, answer = await call_api(http, "GET", f"{api}/{route}", token=tok, **params)
        assert (status, answer["error"]["code"]) == (400, "bad_request"), answer
        message: str = answer["error"]["message"]
        return message

    for limit in ("-1", "0", "10001", "x"):
        assert await error("history/notes.md", limit=limit) == (
            f"?limit= must be a whole number from 1 to 10000, not {limit!r}"
        )
    assert await error("docs/notes.md", format="xml") == (
        "?format= must be one of text, json, not 'xml'"
    )
    assert await error("diff/notes.md", format="XML", **{"from": "head"}) == (
        "?format= must be one of text, json, not 'XML'"
    )
    said = re.fullmatch(
        f"versionstamp {FUTURE} is in the future: the store's latest commit version is "
        "([0-9a-f]{16}): a versionstamp may be at most ([0-9a-f]{16})ffffffff",
        await error("blame/notes.md", at=FUTURE),
    )
    assert said and said[1] == said[2]
    assert int(said[1], 16) >= head.commit_version  # (snapshots commit too)
    # the document list is at head: ?at= was ignored (today's list for any time)
    message = await error("docs", at="2001-01-01T00:00:00Z")
    assert message.startswith("the document list takes no 'at' parameter: it lists"), message
    status, listed = await call_api(http, "GET", f"{api}/docs", token=tok)
    assert status == 200 and "notes.md" in [d["path"] for d in listed["docs"]], listed

    # An unencoded "+" in a UTC offset arrives as a space: the error says to write %2B.
    url = f"{api}/docs/notes.md?at=2026-01-01T10:00:00+01:00"
    async with http.get(url, headers={"Authorization": f"Bearer {tok}"}) as response:
        answer = await response.json()
    assert response.status == 400
    assert answer["error"]["message"].endswith(
        '"+" means a space: write a UTC offset\'s "+" as %2B'
    )
    plain = await error("docs/notes.md", at="yesterday")
    assert "%2B" not in plain

    # RFC 3339's lowercase "z" (and "t") are times like any other.
    now = datetime.now(UTC).strftime("%Y-%m-%dt%H:%M:%S.%fz")
    status, answer = await call_api(
        http, "GET", f"{api}/docs/notes.md", token=tok, at=now, format="json"
    )
    assert status == 200 and answer["versionstamp"] == head.hex(), answer
    status, answer = await call_api(http, "GET", f"{api}/docs/notes.md", token=tok, format="text")
    assert status == 200 and answer.startswith(b"x")

    # Before the document existed: said as the CLI says it (it said "no document").
    status, answer = await call_api(http, "GET", f"{api}/docs/notes.md", token=tok, at="2001-01-01")
    assert status == 404, answer
    assert answer["error"]["message"].startswith(
        "'notes.md' did not exist at 2001-01-01 (its first"
    )


async def test_scopes_and_tenants(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    api = f"{server.url}/api/v1/acme/proj"
    revert = {"path": "notes.md", "to": "head"}
    assert (await call_api(http, "GET", f"{api}/history/notes.md"))[0] == 401
    assert (
        await call_api(http, "GET", f"{api}/history/notes.md", token=token_for(tenant="other"))
    )[0] == 403
    assert (await call_api(http, "GET", f"{api}/export", token=token_for(tenant="other")))[0] == 403
    assert (
        await call_api(http, "POST", f"{api}/revert", token=token_for(scope="read"), body=revert)
    )[0] == 403
    assert (
        await call_api(http, "POST", f"{api}/revert", token=token_for(tenant="other"), body=revert)
    )[0] == 403
    status, _ = await call_api(http, "GET", f"{api}/blame/notes.md", token=token_for(scope="read"))
    assert status == 200


async def test_export_of_an_unknown_project_or_before_it_existed(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Before a project's first document, a time and a versionstamp get the same 404 from
    export and a project revert (by versionstamp the export was an empty project, and the
    revert deleted every document)."""
    tok = token_for()
    status, answer = await call_api(
        http, "GET", f"{server.url}/api/v1/acme/nothing/export", token=tok
    )
    assert (status, answer["error"]["code"]) == (404, "not_found")
    long_ago = (datetime.now(UTC) - timedelta(days=3650)).isoformat()
    url = f"{server.ws_url}/acme/firstdoc/a.md"
    first = await Editor(await YPeer.connect(http, url, token=tok, weft=True)).insert(0, "A\n")
    just_before = predecessor(first)  # the commit just before the project's first
    api = f"{server.url}/api/v1/acme/firstdoc"
    for at in (long_ago, just_before.hex()):
        said = f"project acme/firstdoc had no documents at {at}"
        for method, route, params, body in (("GET", "export", {"at": at}, None),
                                            ("POST", "revert", {}, {"to": at})):  # fmt: skip
            status, answer = await call_api(
                http, method, f"{api}/{route}", token=tok, body=body, **params
            )
            assert status == 404, (route, at, answer)
            assert answer["error"] == {"code": "not_found", "message": said}
    status, page = await call_api(http, "GET", f"{api}/history/a.md", token=tok)
    assert [v["versionstamp"] for v in page["versions"]] == [first.hex()]  # nothing reverted


async def test_a_revert_keeps_to_the_document_size_quota(tmp_path: Path) -> None:
    """A revert is an update like an editor's: reverting back and forth cannot grow a
    document past its size limit (it used to skip the quotas)."""
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'weft.db'}", secret=SecretStr(TEST_SECRET), max_doc_bytes=3000
    )
    async with serve_in_process(create_app(settings)) as server, client_session() as http:
        tok = token_for()
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/a.md", token=tok, weft=True)
        await peer.append("A" * 1400)
        await peer.until(lambda: len(peer.acks) == 1)
        full = peer.acks[-1].versionstamp.hex()
        before = peer.doc.get_state()
        del peer.text[0 : len(peer.text)]
        await peer.send(SyncUpdate(peer.doc.get_update(before)))
        await peer.until(lambda: len(peer.acks) == 2)
        empty = peer.acks[-1].versionstamp.hex()
        api = f"{server.url}/api/v1/acme/site"
        statuses = []
        for to in (full, empty, full, empty, full):
            status, body = await call_api(
                http, "POST", f"{api}/revert", token=tok, body={"to": to, "path": "a.md"}
            )
            statuses.append((status, body.get("error", {}).get("code")))
        assert (429, "quota_exceeded") in statuses
        _, docs = await call_api(http, "GET", f"{api}/docs", token=tok)
        assert docs["docs"][0]["size"] <= 3000


async def test_diff_blame_and_history_do_their_cpu_work_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The diff of two big versions and a long blame's JSON take seconds of CPU (a 4 MB
    document: a diff 4.8 s, a blame's 330,000 lines 2.8 s): done on the event loop, they
    stalled every connection of the server that long. A history page of 10,000
    versions held it ~55 ms decoding the updates for their deletion flags, and ~40 ms
    building and encoding its JSON. All of it runs in worker threads."""
    from crdt import timetravel as tt
    from crdt.blame import BlameLine

    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def recorded(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads[name] = threading.get_ident()
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(tt, "unified_diff", recorded("diff", tt.unified_diff))
    monkeypatch.setattr(BlameLine, "to_dict", recorded("blame", BlameLine.to_dict))
    monkeypatch.setattr(tt, "map_entries", recorded("history flags", tt.map_entries))
    monkeypatch.setattr(tt.Entry, "to_dict", recorded("history JSON", tt.Entry.to_dict))
    settings = Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", secret=SecretStr(TEST_SECRET))
    async with serve_in_process(create_app(settings)) as server, client_session() as http:
        tok = token_for()
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/a.md", token=tok, weft=True)
        await peer.append("one\n")
        await peer.until(lambda: len(peer.acks) == 1)
        first = peer.acks[-1].versionstamp.hex()
        await peer.append("two\n")
        await peer.until(lambda: len(peer.acks) == 2)
        api = f"{server.url}/api/v1/acme/site"
        status, diff = await call_api(http, "GET", f"{api}/diff/a.md", token=tok, **{"from": first})
        assert status == 200 and b"+two" in diff
        status, blame = await call_api(http, "GET", f"{api}/blame/a.md", token=tok)
        assert status == 200 and [line["text"] for line in blame["lines"]] == ["one", "two"]
        status, page = await call_api(http, "GET", f"{api}/history/a.md", token=tok)
        assert status == 200 and page["versions"][-1]["versionstamp"] == first
    assert threads.keys() == {"diff", "blame", "history flags", "history JSON"}
    assert loop_thread not in threads.values()
