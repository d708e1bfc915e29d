"""Conflicts end to end: offline branches over real sockets to a real server process,
records over the REST API, tenant isolation and scopes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from client import conflicts_cli
from client.cli import main
from client.folder import MAX_FILE_BYTES
from crdt.codec import Base, SyncUpdate
from crdt.versionstamp import ZERO, Versionstamp
from server.conflicts_api import MAX_REPORT_BODY, MAX_REPORT_TEXT_BYTES
from server.testing import (
    AUTH_ENV,
    ServerProcess,
    StartServer,
    YPeer,
    call_api,
    serve_in_process,
    token_for,
)

pytestmark = pytest.mark.functional
BASE_TEXT = "".join(f"line {i}\n" for i in range(1, 11))


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


async def api(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """:func:`call_api` as ada (write) unless ``token=`` says otherwise; every reply here
    is JSON."""
    kwargs["token"] = kwargs.get("token") or token_for()
    status, reply = await call_api(http, method, url, **kwargs)
    assert not isinstance(reply, bytes), (status, reply)
    return status, reply


def replace_line(peer: YPeer, number: int, new: str) -> None:
    """Replace line ``number`` (1-based) of the peer's text locally, sending nothing."""
    text = str(peer)
    start = sum(len(line) + 1 for line in text.split("\n")[: number - 1])
    old = text.split("\n")[number - 1]
    with peer.doc.transaction():
        del peer.text[start : start + len(old)]
        peer.text.insert(start, new)


async def offline_branch(peer: YPeer, base: Versionstamp, number: int, new: str) -> None:
    """What a device does on reconnect: Base(base), its offline update, Base(ZERO)."""
    before = peer.doc.get_state()
    replace_line(peer, number, new)
    await peer.send(Base(base))
    await peer.send(SyncUpdate(peer.doc.get_update(before)))
    await peer.send(Base(ZERO))
    acked = len(peer.acks)
    await peer.until(lambda: len(peer.acks) > acked)


async def wait_conflicts(
    http: aiohttp.ClientSession, url: str, count: int, **params: str
) -> list[dict[str, Any]]:
    for _ in range(200):
        status, body = await api(http, "GET", url, **params)
        assert status == 200, body
        if len(body["conflicts"]) >= count:
            return list(body["conflicts"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} conflicts: {body}")


async def test_overlapping_offline_edits_make_one_record_and_disjoint_ones_none(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    room = f"{server.ws_url}/acme/site/notes.txt"
    url = f"{server.url}/api/v1/acme/site/conflicts"
    writer = await YPeer.connect(http, room, token=token_for(user="ada"), weft=True)
    await writer.append(BASE_TEXT)
    await writer.until(lambda: len(writer.acks) == 1)
    base = writer.acks[0].versionstamp
    # Three devices all synced at base; none reads the socket while it "is offline".
    bob = await YPeer.connect(http, room, token=token_for(user="bob"), weft=True)
    cy = await YPeer.connect(http, room, token=token_for(user="cy"), weft=True)
    dee = await YPeer.connect(http, room, token=token_for(user="dee"), weft=True)
    for peer in (bob, cy, dee):
        assert str(peer) == BASE_TEXT
    await offline_branch(bob, base, 3, "line three, says bob")
    await offline_branch(cy, base, 3, "line III, says cy")
    await offline_branch(dee, base, 9, "line nine, says dee")

    records = await wait_conflicts(http, url, 1)
    # dee's branch is checked after cy's; give it the same time to (not) appear.
    await asyncio.sleep(0.3)
    status, body = await api(http, "GET", url)
    assert status == 200 and len(body["conflicts"]) == 1, body
    record = records[0]
    assert record["path"] == "notes.txt" and record["status"] == "open"
    assert record["base"] == base.hex()
    assert record["ours"]["users"] == ["cy"] and record["theirs"]["users"] == ["bob"]
    [region] = record["regions"]
    assert (region["base_start"], region["base_end"]) == (2, 3)
    assert region["base_text"] == "line 3\n"
    assert region["ours_text"] == "line III, says cy\n"
    assert region["theirs_text"] == "line three, says bob\n"
    assert "line nine, says dee" not in region["ours_text"] + region["theirs_text"]

    # The CRDT merge is untouched: every device converges to the merged text.
    # The record's merged text is the log at detection time (bob's and cy's edits).
    assert "line III, says cy" in record["merged_text"]
    assert "line three, says bob" in record["merged_text"]
    status, final = await api(
        http, "GET", f"{server.url}/api/v1/acme/site/docs/notes.txt", format="json"
    )
    assert status == 200 and "line nine, says dee" in final["text"]
    for peer in (bob, cy, dee, writer):
        await peer.until(lambda p=peer: str(p) == final["text"])  # type: ignore[misc]

    status, body = await api(http, "GET", f"{url}/{record['id']}")
    assert status == 200 and body["conflict"] == record
    assert (await api(http, "GET", url, path="other.txt"))[1]["conflicts"] == []
    # ?device=: only the records said to that device (their ours side names it).
    [cys] = record["ours"]["clients"]
    assert (await api(http, "GET", url, device=cys))[1]["conflicts"] == [record]
    assert (await api(http, "GET", url, device="another-device"))[1]["conflicts"] == []
    status, body = await api(http, "GET", url, device="no such/device")
    assert status == 400 and "?device=" in body["error"]["message"], body

    # Scopes and tenants: read can list but not resolve; another tenant sees nothing.
    resolve = f"{url}/{record['id']}/resolve"
    status, body = await api(http, "POST", resolve, token=token_for(scope="read"), body={})
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await api(http, "GET", url, token=token_for(tenant="evil"))
    assert status == 403
    status, body = await api(
        http, "GET", f"{server.url}/api/v1/evil/site/conflicts", token=token_for(tenant="evil")
    )
    assert status == 404 and "unknown tenant" in body["error"]["message"]

    status, body = await api(
        http, "POST", resolve, token=token_for(user="ada"), body={"resolution": "kept bob's line"}
    )
    assert status == 200
    resolved = body["conflict"]
    assert (resolved["status"], resolved["resolved_by"]) == ("resolved", "ada")
    assert resolved["resolution"] == "kept bob's line" and resolved["resolved_ms"] > 0
    assert (await api(http, "GET", url, status="open"))[1]["conflicts"] == []
    assert len((await api(http, "GET", url, status="resolved"))[1]["conflicts"]) == 1


async def test_the_side_filter_lists_the_records_naming_a_device_on_that_side(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """``?device=D&side=theirs``: the records whose other side names D (here the device
    whose edit the offline branch met); ``either``: both sides; ``ours`` (the default)
    as ``?device=`` alone. A bad side, or a side without a device, is a 400 saying so."""
    room = f"{server.ws_url}/acme/site/sides.txt"
    url = f"{server.url}/api/v1/acme/site/conflicts"
    writer = await YPeer.connect(http, room, token=token_for(user="ada"), weft=True)
    await writer.append(BASE_TEXT)
    await writer.until(lambda: len(writer.acks) == 1)
    base = writer.acks[0].versionstamp
    desk, laptop = [
        await YPeer.connect(http, room, token=token_for(user="ada"), weft=True, device=name)
        for name in ("side-desk", "side-laptop")
    ]
    await offline_branch(desk, base, 5, "line five, on the desk")
    await offline_branch(laptop, base, 5, "line V, on the laptop")
    [record] = await wait_conflicts(http, url, 1, path="sides.txt")
    assert (record["ours"]["clients"], record["theirs"]["clients"]) == (
        ["side-laptop"],
        ["side-desk"],
    )

    async def listed(**params: str) -> list[dict[str, Any]]:
        status, body = await api(http, "GET", url, path="sides.txt", **params)
        assert status == 200, body
        return list(body["conflicts"])

    for side in ("theirs", "either"):
        assert await listed(device="side-desk", side=side) == [record]
    for side in ("ours", "either"):
        assert await listed(device="side-laptop", side=side) == [record]
    assert await listed(device="side-desk") == await listed(device="side-desk", side="ours") == []
    assert await listed(device="side-laptop", side="theirs") == []
    status, body = await api(http, "GET", url, device="side-desk", side="both")
    assert status == 400, body
    assert body["error"]["message"] == "?side= must be one of ours, theirs, either, not 'both'"
    status, body = await api(http, "GET", url, side="theirs")
    assert status == 400 and "?side= needs ?device=" in body["error"]["message"], body


async def test_a_user_name_or_path_cannot_forge_a_log_line(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """The conflict line ("branch by USER") and the revert line ("USER reverted PATH")
    wrote the token's ``sub`` and the document path raw: a newline in ``sub`` started a
    log line of the token holder's making, and U+2028 in a path (a document path may
    hold it) is a line break to some log viewers."""
    marker = uuid.uuid4().hex
    user = f"eve\n2026-01-01 00:00:00,000 INFO weft.server: FORGED{marker}"
    path = f"menu\u2028{marker}.txt"
    room = f"{server.ws_url}/acme/logsafe/{path}"
    writer = await YPeer.connect(http, room, token=token_for(user="ada"), weft=True)
    await writer.append(BASE_TEXT)
    await writer.until(lambda: len(writer.acks) == 1)
    base = writer.acks[0].versionstamp
    bob = await YPeer.connect(http, room, token=token_for(user="bob"), weft=True)
    eve = await YPeer.connect(http, room, token=token_for(user=user), weft=True)
    await offline_branch(bob, base, 3, "line three, says bob")
    await offline_branch(eve, base, 3, "line III, says eve")
    await wait_conflicts(http, f"{server.url}/api/v1/acme/logsafe/conflicts", 1)
    status, body = await api(
        http,
        "POST",
        f"{server.url}/api/v1/acme/logsafe/revert",
        token=token_for(user=user),
        body={"path": path, "to": base.hex()},
    )
    assert status == 200, body
    for _ in range(100):  # eve joined, her branch's conflict, her revert
        if server.log().count(f"FORGED{marker}") >= 3:
            break
        await asyncio.sleep(0.05)
    lines = [line for line in server.log().splitlines() if f"FORGED{marker}" in line]
    assert len(lines) == 3, lines
    for line in lines:
        assert f"eve\\n2026-01-01 00:00:00,000 INFO weft.server: FORGED{marker}" in line, line
        assert not line.startswith("2026-01-01 00:00:00,000")
    assert any("branch by eve" in line for line in lines)
    assert any(f"reverted acme/logsafe/menu\\u2028{marker}.txt" in line for line in lines)
    assert "\u2028" not in server.log()
    for peer in (writer, bob, eve):
        await peer.close()


async def test_client_reported_conflict_keeps_the_server_text_and_is_idempotent(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    room = f"{server.ws_url}/acme/first/readme.md"
    url = f"{server.url}/api/v1/acme/first/conflicts"
    peer = await YPeer.connect(http, room, token=token_for(user="ada"), weft=True)
    await peer.append("server text\n")
    await peer.until(lambda: len(peer.acks) == 1)
    body = {"path": "readme.md", "text": "local text\n", "device": "laptop"}
    status, first = await api(http, "POST", url, token=token_for(user="bob"), body=body)
    assert status == 201, first
    record = first["conflict"]
    assert record["merged_text"] == "server text\n"
    [region] = record["regions"]
    assert (region["ours_text"], region["theirs_text"]) == ("local text\n", "server text\n")
    assert record["ours"] == {"users": ["bob"], "clients": ["laptop"], "versionstamps": []}
    assert record["theirs"]["versionstamps"] == [peer.acks[0].versionstamp.hex()]
    status, again = await api(http, "POST", url, token=token_for(user="bob"), body=body)
    assert status == 201 and again["conflict"]["id"] == record["id"]
    assert len((await api(http, "GET", url))[1]["conflicts"]) == 1
    # Resolved, then the same report again: a new open record, not the resolved one.
    status, _ = await api(http, "POST", f"{url}/{record['id']}/resolve", body={})
    assert status == 200
    status, third = await api(http, "POST", url, token=token_for(user="bob"), body=body)
    assert status == 201 and third["conflict"]["id"] != record["id"]
    assert third["conflict"]["status"] == "open"
    # The document changed since: the same report is about a new situation too.
    await peer.append("more\n")
    await peer.until(lambda: len(peer.acks) == 2)
    status, fourth = await api(http, "POST", url, token=token_for(user="bob"), body=body)
    assert status == 201 and fourth["conflict"]["id"] not in (record["id"], third["conflict"]["id"])
    assert fourth["conflict"]["merged_text"] == "server text\nmore\n"
    assert fourth["conflict"]["theirs"]["versionstamps"] == [peer.acks[1].versionstamp.hex()]
    assert len((await api(http, "GET", url))[1]["conflicts"]) == 3
    await peer.close()


async def test_a_report_of_a_big_text_is_stored_listed_and_resolved(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Found in a walkthrough: a report whose record was over the store's 100 kB value
    limit was a 500 (TransactionTooLarge), and the client retried it for ever."""
    room = f"{server.ws_url}/acme/bigreport/n.txt"
    url = f"{server.url}/api/v1/acme/bigreport/conflicts"
    server_text = "".join(f"server line {i} {'x' * 50}\n" for i in range(2_300))  # 140 kB
    local_text = "".join(f"local line {i} {'y' * 50}\n" for i in range(2_300))
    peer = await YPeer.connect(http, room, token=token_for(user="ada"), weft=True)
    await peer.append(server_text)
    await peer.until(lambda: len(peer.acks) == 1)
    body = {"path": "n.txt", "text": local_text, "device": "laptop"}
    status, first = await api(http, "POST", url, token=token_for(user="bob"), body=body)
    assert status == 201, first
    record = first["conflict"]
    [region] = record["regions"]
    assert (region["ours_text"], region["theirs_text"]) == (local_text, server_text)
    assert record["merged_text"] == server_text
    status, again = await api(http, "POST", url, token=token_for(user="bob"), body=body)
    assert status == 201 and again["conflict"] == record  # a retry finds it
    assert (await api(http, "GET", url))[1]["conflicts"] == [record]
    assert (await api(http, "GET", f"{url}/{record['id']}"))[1]["conflict"] == record
    status, done = await api(http, "POST", f"{url}/{record['id']}/resolve", body={})
    assert status == 200 and done["conflict"]["status"] == "resolved"
    assert done["conflict"]["regions"] == record["regions"]
    resolved = (await api(http, "GET", url, status="resolved"))[1]["conflicts"]
    assert resolved == [done["conflict"]]
    assert (await api(http, "GET", url, status="open"))[1]["conflicts"] == []
    status, note = await api(
        http, "POST", f"{url}/{record['id']}/resolve", body={"resolution": "n" * 70_000}
    )
    assert status == 400, note
    await peer.close()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "bad_request"),
        ([1, 2], 400, "bad_request"),
        ({"path": "x.md"}, 400, "bad_request"),
        ({"path": "../x.md", "text": "t"}, 400, "bad_path"),
        ({"path": "missing.md", "text": "t"}, 404, "not_found"),
    ],
)
async def test_bad_conflict_reports_are_refused_and_write_nothing(
    server: ServerProcess, http: aiohttp.ClientSession, body: Any, status: int, code: str
) -> None:
    url = f"{server.url}/api/v1/acme/bad/conflicts"
    headers = {"Authorization": f"Bearer {token_for()}"}
    data = body if isinstance(body, str) else None
    async with http.post(url, data=data, json=None if data else body, headers=headers) as r:
        assert r.status == status
        assert (await r.json())["error"]["code"] == code
    assert (await api(http, "GET", url))[1]["conflicts"] == []


async def test_unknown_and_malformed_conflict_ids(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/api/v1/acme/site/conflicts"
    status, body = await api(http, "GET", f"{url}/{'0' * 24}")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api(http, "GET", f"{url}/nothex")
    assert status == 400 and "24 hex digits" in body["error"]["message"]
    status, body = await api(http, "GET", url, status="maybe")
    assert status == 400


async def test_the_conflict_routes_refuse_a_query_parameter_they_do_not_take(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A mistyped ``?Status=`` listed every record as if nothing had been asked (an
    audit): a 400 that names it, as the document routes answer."""
    url = f"{server.url}/api/v1/acme/site/conflicts"
    status, body = await api(http, "GET", f"{url}?Status=open")
    assert status == 400 and "'Status'" in body["error"]["message"], body
    assert "path, status, device, side, after, limit and token" in body["error"]["message"]
    status, body = await api(http, "GET", f"{url}/{'0' * 24}?at=x")
    assert status == 400 and "'at'" in body["error"]["message"], body
    status, body = await api(http, "GET", f"{url}?status=open&path=x.md")
    assert status != 400, body  # (what it takes: a 404 here, the project has no record)


def weft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "WEFT_TOKEN": token_for(user="cli"), **(env or {})},
    )


async def test_cli_lists_shows_and_resolves_through_the_server_and_the_store(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    room = f"{server.ws_url}/acme/cli/a.txt"
    peer = await YPeer.connect(http, room, token=token_for(), weft=True)
    await peer.append("theirs\n")
    await peer.until(lambda: len(peer.acks) == 1)
    url = f"{server.url}/api/v1/acme/cli/conflicts"
    status, body = await api(http, "POST", url, body={"path": "a.txt", "text": "ours\n"})
    assert status == 201
    cid = body["conflict"]["id"]
    remote = ["--server", server.ws_url.rsplit("/ws", 1)[0], "--tenant", "acme", "--project", "cli"]

    listed = await asyncio.to_thread(weft, "conflicts", "list", *remote)
    assert listed.returncode == 0, listed.stderr
    assert cid in listed.stdout and "open" in listed.stdout and "a.txt" in listed.stdout
    shown = await asyncio.to_thread(weft, "conflicts", "show", cid, *remote)
    assert shown.returncode == 0, shown.stderr
    assert "| ours" in shown.stdout and "| theirs" in shown.stdout
    # a local file that met another document: no base, no base lines (it said "1-0")
    assert "\n  no shared history:\n  --- ours\n" in shown.stdout
    assert "base lines" not in shown.stdout and "--- base" not in shown.stdout
    assert "  no shared history  a.txt  (" in listed.stdout and "1-0" not in listed.stdout
    # what the file holds: the server's text, which stays (it was never printed)
    merged = "\n  merged text (what the document held once both sides were in):\n  | theirs\n"
    assert shown.stdout.endswith(merged)
    as_json = await asyncio.to_thread(weft, "conflicts", "list", "--json", *remote)
    assert [r["id"] for r in json.loads(as_json.stdout)] == [cid]
    where = {"WEFT_SERVER": remote[1], "WEFT_TENANT": "acme", "WEFT_PROJECT": "cli"}
    from_env = await asyncio.to_thread(weft, "conflicts", "list", "--json", env=where)
    assert from_env.returncode == 0, from_env.stderr
    assert [r["id"] for r in json.loads(from_env.stdout)] == [cid]
    reader = {"WEFT_TOKEN": token_for(user="reader", scope="read")}
    refused = await asyncio.to_thread(weft, "conflicts", "resolve", cid, *remote, env=reader)
    assert refused.returncode == 1 and refused.stderr  # as `weft revert`: a refusal fails
    nowhere = await asyncio.to_thread(weft, "conflicts", "list", "--tenant", "acme")
    assert nowhere.returncode == 2 and "--server URL or --store URL" in nowhere.stderr
    no_project = await asyncio.to_thread(weft, "conflicts", "list", *remote[:4])
    assert no_project.returncode == 2 and "missing --project (or WEFT_PROJECT)" in no_project.stderr

    missing = await asyncio.to_thread(weft, "conflicts", "show", "0" * 24, *remote)
    assert missing.returncode == 2 and "no conflict" in missing.stderr
    bad = await asyncio.to_thread(weft, "conflicts", "show", "xyz", *remote)
    assert bad.returncode == 2 and "24 hex digits" in bad.stderr

    # An operator on the server's machine goes to the store directly; a mistyped store
    # path is said (it created an empty store there and said "unknown tenant").
    typo = Path(server.store.removeprefix("sqlite:///") + ".typo")
    for action in (["list"], ["resolve", cid]):
        wrong = ["--store", f"sqlite:///{typo}", "--tenant", "acme", "--project", "cli"]
        r = await asyncio.to_thread(weft, "conflicts", *action, *wrong)
        assert r.returncode == 2 and f"no store at {typo}" in r.stderr, r
        assert not typo.exists()
    local = ["--store", server.store, "--tenant", "acme", "--project", "cli"]
    done = await asyncio.to_thread(
        weft, "conflicts", "resolve", cid, "--note", "took ours", "--user", "op", *local
    )
    assert done.returncode == 0, done.stderr
    # one line (it printed the whole record first, texts and all, as `show` does)
    assert done.stdout == f"conflict {cid} on a.txt: marked resolved, note 'took ours'\n"
    status, body = await api(http, "GET", f"{url}/{cid}")
    assert body["conflict"]["status"] == "resolved" and body["conflict"]["resolved_by"] == "op"
    opened = await asyncio.to_thread(weft, "conflicts", "list", "--status", "open", *remote)
    assert opened.returncode == 0 and "no conflicts" in opened.stdout
    # Resolving it again changes nothing, and says so (it said "marked resolved").
    for place in (remote, local):
        again = await asyncio.to_thread(
            weft, "conflicts", "resolve", cid, "--note", "again", *place
        )
        assert again.returncode == 0, again.stderr
        assert "marked resolved" not in again.stdout
        assert "already resolved by op at " in again.stdout
        assert "UTC, note 'took ours': left as it was" in again.stdout
    status, body = await api(http, "GET", f"{url}/{cid}")
    assert (body["conflict"]["resolved_by"], body["conflict"]["resolution"]) == ("op", "took ours")


async def reported(
    server: ServerProcess,
    http: aiohttp.ClientSession,
    project: str,
    path: str = "n.md",
    user: str = "ada",
) -> str:
    """The id of a new open record in ``acme/PROJECT``: ``user``'s local file that met
    the document ``path``."""
    room = f"{server.ws_url}/acme/{project}/{path}"
    peer = await YPeer.connect(http, room, token=token_for(), weft=True)
    await peer.append("server text\n")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    url = f"{server.url}/api/v1/acme/{project}/conflicts"
    report = {"path": path, "text": "mine\n"}
    status, body = await api(http, "POST", url, token=token_for(user=user), body=report)
    assert status == 201, body
    return str(body["conflict"]["id"])


async def status_of(server: ServerProcess, http: aiohttp.ClientSession, project: str) -> list[str]:
    url = f"{server.url}/api/v1/acme/{project}/conflicts"
    return [r["status"] for r in (await api(http, "GET", url))[1]["conflicts"]]


async def test_cli_ids_and_names_are_checked_before_they_go_into_a_url(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """With --server the id went into the URL as typed (``quote()`` keeps '/'): ``resolve
    ../../other/conflicts/ID --project mine`` resolved a record of project ``other``, and
    ``a/b``, ``..`` and ``''`` were a bare "404: Not Found". Ids, tenants and projects are
    checked as --store and the time-travel commands check them: bad input, exit 2."""
    cid = await reported(server, http, "other")
    remote = ["--server", server.url, "--tenant", "acme", "--project", "mine"]
    for bad in (f"../../other/conflicts/{cid}", "a/b", "..", ""):
        r = await asyncio.to_thread(weft, "conflicts", "resolve", bad, *remote)
        assert r.returncode == 2, r
        assert r.stderr == f"weft conflicts: a conflict id is 24 hex digits, not {bad!r}\n"
    r = await asyncio.to_thread(weft, "conflicts", "show", "..", *remote[:-1], "other")
    assert r.returncode == 2 and "a conflict id is 24 hex digits, not '..'" in r.stderr, r
    for name, value in (("--tenant", ".."), ("--project", "other/conflicts")):
        r = await asyncio.to_thread(weft, "conflicts", "list", *remote, name, value)
        assert r.returncode == 2, r
        assert f"name {value!r} may" in r.stderr and r.stdout == "", r
    assert await status_of(server, http, "other") == ["open"]


@contextlib.asynccontextmanager
async def prefix_proxy(upstream: str, http: aiohttp.ClientSession) -> AsyncIterator[str]:
    """A reverse proxy that serves ``upstream`` under the path ``/weft`` (as a site that
    mounts weft beside other things): the base URL to give ``--server``."""

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        body = await request.read()
        url = f"{upstream}/{request.match_info['tail']}"
        async with http.request(
            request.method, url, params=request.query, headers=headers, data=body or None
        ) as response:
            content = await response.read()
            return web.Response(
                status=response.status,
                body=content,
                headers={"Content-Type": response.headers.get("Content-Type", "text/plain")},
            )

    app = web.Application()
    app.router.add_route("*", "/weft/{tail:.*}", forward)
    async with serve_in_process(app) as proxy:
        yield f"http://127.0.0.1:{proxy.port}/weft"


async def test_cli_keeps_the_path_of_the_server_url(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """``--server https://example.com/weft``: the records are under that path, as the
    time-travel commands and ``weft sync`` take it (``weft conflicts`` dropped the path
    and asked ``https://example.com/api/v1/...``)."""
    cid = await reported(server, http, "prefixed")
    async with prefix_proxy(server.url, http) as base:
        remote = ["--server", base, "--tenant", "acme", "--project", "prefixed"]
        listed = await asyncio.to_thread(weft, "conflicts", "list", "--json", *remote)
        assert listed.returncode == 0, listed.stderr
        assert [r["id"] for r in json.loads(listed.stdout)] == [cid]
        shown = await asyncio.to_thread(weft, "conflicts", "show", cid, *remote)
        assert shown.returncode == 0 and f"conflict {cid} on n.md: open" in shown.stdout, shown
        done = await asyncio.to_thread(weft, "conflicts", "resolve", cid, *remote)
        assert done.returncode == 0 and "marked resolved" in done.stdout, done
        history = await asyncio.to_thread(weft, "history", "n.md", "--json", *remote)
        assert history.returncode == 0, history.stderr  # the same URL, as the other commands
    assert await status_of(server, http, "prefixed") == ["resolved"]


async def test_cli_refuses_user_through_the_server(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """``--user`` was silently ignored with --server (the record named the token's user);
    ``weft revert`` refuses it there, and so does ``resolve`` now."""
    cid = await reported(server, http, "byuser")
    remote = ["--server", server.url, "--tenant", "acme", "--project", "byuser"]
    r = await asyncio.to_thread(weft, "conflicts", "resolve", cid, *remote, "--user", "mallory")
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr == (
        "weft conflicts: --user is for --store: through a server, the token names who resolved it\n"
    )
    assert await status_of(server, http, "byuser") == ["open"]
    r = await asyncio.to_thread(weft, "conflicts", "resolve", cid, *remote)
    assert r.returncode == 0 and "marked resolved" in r.stdout, r
    r = await asyncio.to_thread(weft, "conflicts", "show", cid, "--json", *remote)
    assert json.loads(r.stdout)["resolved_by"] == "cli"  # weft()'s token


async def test_cli_refuses_an_argument_that_is_not_utf8_and_writes_nothing(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """``--note $'bad\\xff'`` (a lone surrogate to Python) was a msgpack traceback with
    --store, ``--tenant $'acme\\xff'`` one in ``quote()`` with --server."""
    cid = await reported(server, http, "notutf8")
    local = ["--store", server.store, "--tenant", "acme", "--project", "notutf8"]
    r = await asyncio.to_thread(weft, "conflicts", "resolve", cid, *local, "--note", "bad\udcff")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "error: argument --note: b'bad\\xff' is not valid UTF-8\n" in r.stderr, r
    remote = ["--server", server.url, "--tenant", "acme\udcff", "--project", "notutf8"]
    r = await asyncio.to_thread(weft, "conflicts", "list", *remote)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "error: argument --tenant: b'acme\\xff' is not valid UTF-8\n" in r.stderr, r
    assert await status_of(server, http, "notutf8") == ["open"]


async def test_cli_a_read_token_cannot_resolve_a_record_resolved_already(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """``resolve`` read the record first and, finding it resolved, said "already
    resolved" and exited 0 without asking the server: a read-only token seemed to
    resolve. It is refused (exit 1) as on an open record; the first resolution stays."""
    cid = await reported(server, http, "readonly")
    status, _ = await api(
        http, "POST", f"{server.url}/api/v1/acme/readonly/conflicts/{cid}/resolve"
    )
    assert status == 200
    remote = ["--server", server.url, "--tenant", "acme", "--project", "readonly"]
    reader = {"WEFT_TOKEN": token_for(user="reader", scope="read")}
    r = await asyncio.to_thread(weft, "conflicts", "resolve", cid, *remote, env=reader)
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == "weft conflicts: token scope 'read' does not allow write\n"
    r = await asyncio.to_thread(weft, "conflicts", "resolve", cid, "--note", "late", *remote)
    assert r.returncode == 0 and "already resolved by ada at " in r.stdout, r
    r = await asyncio.to_thread(weft, "conflicts", "show", cid, "--json", *remote)
    assert (json.loads(r.stdout)["resolved_by"], json.loads(r.stdout)["resolution"]) == ("ada", "")


def test_cli_a_failing_store_or_a_server_that_never_answers_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store that cannot be opened exited 2, as bad input (the time-travel commands
    exit 1); a server that took the connection and never answered was a TimeoutError
    traceback after 30 s."""
    broken = tmp_path / "weft.db"
    broken.write_bytes(b"not a database, " * 512)
    where = ["--tenant", "acme", "--project", "p"]
    r = weft("conflicts", "list", "--store", f"sqlite:///{broken}", *where)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r
    assert r.stderr.startswith("weft conflicts: cannot open SQLite store"), r
    monkeypatch.setattr(conflicts_cli, "TIMEOUT", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert main(["conflicts", "list", "--server", url, *where]) == 1
    assert capsys.readouterr().err == f"weft conflicts: {url} did not answer within 0.3 s\n"


async def test_cli_escapes_names_paths_and_notes_but_not_json(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A user name (a token's ``sub``), a path and a resolution note are free text:
    ``list`` and ``show`` printed them raw, so an ESC or OSC sequence (or a NUL) reached
    the terminal. They are escaped as ``weft history`` escapes names; ``--json`` keeps
    them as they are."""
    user, path = "eve\x1b]0;pwned\x07", "n\u2028otes.md"
    note = "ok\x1b]0;pwned\x07\x1b[1A\x00"
    cid = await reported(server, http, "escapes", path, user)
    url = f"{server.url}/api/v1/acme/escapes/conflicts"
    status, body = await api(
        http, "POST", f"{url}/{cid}/resolve", token=token_for(user=user), body={"resolution": note}
    )
    assert status == 200, body
    remote = ["--server", server.url, "--tenant", "acme", "--project", "escapes"]
    for action in (["list"], ["show", cid], ["resolve", cid]):
        r = await asyncio.to_thread(weft, "conflicts", *action, *remote)
        assert r.returncode == 0, r
        for raw in ("\x1b", "\x07", "\x00", "\u2028"):
            assert raw not in r.stdout, (action, r.stdout)
        assert "eve\\x1b]0;pwned\\x07" in r.stdout, r.stdout
        assert "n\\u2028otes.md" in r.stdout or action == ["resolve", cid], r.stdout
    r = await asyncio.to_thread(weft, "conflicts", "show", cid, *remote)
    assert "  note       ok\\x1b]0;pwned\\x07\\x1b[1A\\x00\n" in r.stdout, r.stdout
    r = await asyncio.to_thread(weft, "conflicts", "list", "--json", *remote)
    [record] = json.loads(r.stdout)
    assert (record["path"], record["ours"]["users"]) == (path, [user])
    assert (record["resolved_by"], record["resolution"]) == (user, note)


async def test_a_report_of_a_file_over_1_mib_is_taken_and_an_oversized_one_is_a_json_413(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Found in a walkthrough: `weft sync` syncs files up to 4 MiB, but a report of one
    over 1 MiB (2.2 MB here) met aiohttp's default 1 MiB body limit, a 413, and that
    file could never sync. A text over the file limit is a 413 that says why, and so is a
    body over what such a file's JSON can take."""
    room = f"{server.ws_url}/acme/bigfile/big.txt"
    url = f"{server.url}/api/v1/acme/bigfile/conflicts"
    peer = await YPeer.connect(http, room, token=token_for(user="ada"), weft=True)
    await peer.append("the server's big.txt\n")
    await peer.until(lambda: len(peer.acks) == 1)
    local_text = "".join(f"local line {i:07d} {'z' * 40}\n" for i in range(40_000))
    assert len(local_text) > 2_200_000

    async def post(body: bytes) -> tuple[int, dict[str, Any]]:
        # as a stream: aiohttp warns of a big body given as bytes (or json=)
        headers = {"Authorization": f"Bearer {token_for(user='bob')}"}
        headers["Content-Type"] = "application/json"
        async with http.post(url, data=io.BytesIO(body), headers=headers) as r:
            reply: dict[str, Any] = await r.json()
            return r.status, reply

    report = {"path": "big.txt", "text": local_text, "device": "laptop"}
    status, reply = await post(json.dumps(report).encode())
    assert status == 201, reply
    [region] = reply["conflict"]["regions"]
    assert region["ours_text"] == local_text

    too_long = {"path": "big.txt", "text": "t" * (MAX_REPORT_TEXT_BYTES + 1)}
    status, reply = await post(json.dumps(too_long).encode())
    assert status == 413, reply
    assert reply["error"]["code"] == "request_entity_too_large"
    assert f"over {MAX_REPORT_TEXT_BYTES} bytes" in reply["error"]["message"], reply

    status, reply = await post(b" " * (MAX_REPORT_BODY + 1))
    assert status == 413, reply
    assert reply["error"]["code"] == "request_entity_too_large"
    assert f"over {MAX_REPORT_BODY} bytes" in reply["error"]["message"], reply
    assert len((await api(http, "GET", url))[1]["conflicts"]) == 1
    await peer.close()


def test_a_report_takes_the_text_of_any_file_weft_sync_syncs() -> None:
    assert MAX_REPORT_TEXT_BYTES == MAX_FILE_BYTES
