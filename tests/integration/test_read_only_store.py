"""A read-only token writes nothing to the store: real server processes on a real SQLite
file, read-only WebSocket rooms and REST reads of existing and missing tenants, projects
and documents, then the store compared key for key with what it held before.

Left out of the comparison, the server's own housekeeping, written whoever connects:
the instance registry (``(instances, name)`` and ``(instancesv,)``: each running
server's heartbeat; see ``server.registry``), SQLite's commit counter (the ``engine``
table, bumped by those heartbeats), the deletion mark a room writes as it unloads a
deleted document (``D + (gone,)``: a fact the log holds already, for the document list;
see ``server.rooms``), and awareness shared with the other instances (``D + (aw, ...)``,
``D + (awv,)``: presence, outside the history, cleared as the room unloads; see
``server.awareness``). Nothing at all is written under an unknown tenant's name.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from pycrdt import Map

from crdt import codec, keys
from crdt.codec import Awareness, AwarenessEntry
from server.testing import (
    AUTH_ENV,
    ServerProcess,
    StartServer,
    YPeer,
    api_routes,
    call_api,
    token_for,
)

pytestmark = pytest.mark.functional

KEPT = "kept text"
NEW_TENANT = "newco"
HOUSEKEEPING = ("aw", "awv", "gone")


def store_rows(server: ServerProcess) -> dict[bytes, bytes]:
    """Every key and value of the server's SQLite store but the instance registry's,
    read with sqlite3 itself (the server may be running: WAL readers do not block)."""
    path = server.store.removeprefix("sqlite:///")
    lo, hi = keys.instances_range()
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT k, v FROM kv ORDER BY k").fetchall()
    return {
        bytes(k): bytes(v)
        for k, v in rows
        if not lo <= bytes(k) < hi and bytes(k) != keys.INSTANCES_BUMP
    }


def housekeeping(key: bytes) -> bool:
    """A document's deletion mark, awareness entry or awareness counter (``D + (gone,)``,
    ``D + (aw, ...)``, ``D + (awv,)``; D = (t, n, d, project, doc id)): see the module
    docstring."""
    items = keys.unpack(key)
    return len(items) >= 6 and items[0] == "t" and items[2] == "d" and items[5] in HOUSEKEEPING


def described(rows: dict[bytes, bytes]) -> list[str]:
    """Keys as tuples where they unpack (for a readable failure)."""
    out = []
    for key in rows:
        try:
            out.append(repr(keys.unpack(key)))
        except Exception:
            out.append(key.hex())
    return out


def gone_marks(rows: dict[bytes, bytes]) -> list[bytes]:
    """The documents' deletion marks (``D + (gone,)``, see ``server.rooms``)."""
    return [k for k in rows if k.endswith(keys.pack(("gone",)))]


async def seed(http: aiohttp.ClientSession, server: ServerProcess) -> str:
    """acme/site: a.txt holding KEPT, gone.txt deleted, and a conflict record (its id)."""
    url = f"{server.ws_url}/acme/site"
    kept = await YPeer.connect(http, f"{url}/a.txt", token=token_for(), weft=True)
    await kept.edit(0, KEPT)
    gone = await YPeer.connect(http, f"{url}/gone.txt", token=token_for(), weft=True)
    await gone.edit(0, "soon deleted")
    before = gone.doc.get_state()
    gone.doc.get("weft", type=Map)["deleted"] = True
    await gone.send(codec.SyncUpdate(gone.doc.get_update(before)))
    await kept.until(lambda: len(kept.acks) == 1)
    await gone.until(lambda: len(gone.acks) == 2)
    status, body = await call_api(
        http,
        "POST",
        f"{server.url}/api/v1/acme/site/conflicts",
        token=token_for(),
        body={"path": "a.txt", "text": "another text"},
    )
    assert status == 201, body
    await kept.close()
    await gone.close()
    return str(body["conflict"]["id"])


async def read_only_peer(http: aiohttp.ClientSession, url: str, token: str, *, weft: bool) -> YPeer:
    """A read-only peer that synced, sent a cursor and an edit (refused), and left."""
    peer = await YPeer.connect(http, url, token=token, weft=weft)
    state = json.dumps({"user": {"name": "eve"}})
    await peer.send(Awareness(codec.encode_awareness([AwarenessEntry(77, 1, state)])))
    await peer.edit(0, "not stored")
    await peer.until(lambda: bool(peer.denied))
    await peer.close()
    return peer


async def test_read_only_tokens_leave_the_store_as_it_was(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Rooms of an existing document, a deleted one, a new path, a new project and a new
    tenant (a read-only token's first room created its directory entry), and every GET
    route on each: the store holds the same keys and values after the server stopped
    (rooms unloaded) as before it started, but for the housekeeping (see the module
    docstring), and nothing under the new tenant's name. (The seeding server is killed,
    so for 35 s its heartbeat says it is alive: the reading server shares awareness
    through the store meanwhile, as with another instance, but not an unknown
    tenant's room's.)"""
    store = f"sqlite:///{tmp_path / 'weft.db'}"
    seeder = weft_server_factory(env=AUTH_ENV, store=store, workdir=tmp_path / "seed")
    conflict = await seed(http, seeder)
    seeder.kill()  # no room unloads: gone.txt is not marked deleted yet
    server = weft_server_factory(env=AUTH_ENV, store=store, workdir=tmp_path / "read")
    before = store_rows(server)
    assert keys.directory("acme") in before and keys.directory(NEW_TENANT) not in before
    assert gone_marks(before) == []

    acme, newco = token_for("eve", scope="read"), token_for("eve", tenant=NEW_TENANT, scope="read")
    texts = {
        ("acme/site/a.txt", acme): KEPT,
        ("acme/site/gone.txt", acme): "soon deleted",
        ("acme/site/new.txt", acme): "",
        ("acme/fresh/new.txt", acme): "",
        (f"{NEW_TENANT}/site/new.txt", newco): "",
    }
    answers = {}
    for target, token in texts:
        tenant, project, path = target.split("/", 2)
        for method, route in api_routes(tmp_path):
            if method != "GET":
                continue
            filled = route.format(tenant=tenant, project=project, path=path, id=conflict)
            status, body = await call_api(http, "GET", server.url + filled, token=token)
            assert status in (200, 400, 404), (filled, status, body)
            answers[filled] = status, body
    assert answers["/api/v1/acme/site/docs/a.txt"] == (200, KEPT.encode())
    assert answers["/api/v1/acme/fresh/docs"][1]["docs"] == []
    assert answers["/api/v1/acme/site/docs/new.txt"][0] == 404
    assert answers[f"/api/v1/{NEW_TENANT}/site/docs"][0] == 404  # an unknown tenant

    for n, ((target, token), text) in enumerate(texts.items()):
        for weft in (False, True):
            url = f"{server.ws_url}/{target}"
            peer = await read_only_peer(http, url, token, weft=weft)
            assert str(peer).endswith(text) and "not stored" in str(peer), (n, target)
    listed, _ = await call_api(
        http, "GET", f"{server.url}/api/v1/{NEW_TENANT}/site/docs", token=newco
    )

    assert server.terminate() == 0  # rooms unload (a deletion mark), awareness cleared
    after = store_rows(server)
    unborn = keys.unborn_prefix(NEW_TENANT)
    assert [k for k in after if k.startswith(unborn)] == []  # awareness neither
    assert gone_marks(after) != []  # gone.txt's room marked it, as any room does
    after = {k: v for k, v in after.items() if not housekeeping(k)}
    before = {k: v for k, v in before.items() if not housekeeping(k)}
    added = described({k: v for k, v in after.items() if before.get(k) != v})
    removed = described({k: v for k, v in before.items() if k not in after})
    assert (added, removed) == ([], [])
    assert after == before
    assert listed == 404  # still unknown: its readers' rooms created nothing


async def test_a_reader_of_a_new_tenant_reads_it_empty_then_as_a_writer_creates_it(
    weft_server_factory: StartServer, http: aiohttp.ClientSession
) -> None:
    """A read-only token's room on a tenant that does not exist reads an empty document
    and creates nothing; a write token's first room creates the tenant, and the reader
    is closed with 1013 (try again), then reads the document where it now lives."""
    server = weft_server_factory(env=AUTH_ENV)
    url = f"{server.ws_url}/{NEW_TENANT}/site/a.txt"
    reader = await YPeer.connect(http, url, token=token_for("eve", tenant=NEW_TENANT, scope="read"))
    assert str(reader) == ""
    assert keys.directory(NEW_TENANT) not in store_rows(server)

    writer = await YPeer.connect(http, url, token=token_for(tenant=NEW_TENANT), weft=True)
    assert keys.directory(NEW_TENANT) in store_rows(server)  # a write token's first room
    await writer.edit(0, "hello")
    await writer.until(lambda: len(writer.acks) == 1)
    assert await reader.closed() == (1013, "the tenant was created: connect again")

    again = await YPeer.connect(http, url, token=token_for("eve", tenant=NEW_TENANT, scope="read"))
    assert str(again) == "hello"
    await writer.edit(5, "!")
    await again.wait_text("hello!")
    for peer in (writer, again):
        await peer.close()


async def test_a_reader_of_a_new_tenant_shares_no_awareness_through_the_store(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With another instance alive, awareness goes through the store; a reader's room on
    a tenant that does not exist writes nothing there, its cursor included (it reaches
    the peers of its own instance only). A writer's cursor on a known tenant, sent
    after it, shows the instance published meanwhile."""
    store = f"sqlite:///{tmp_path / 'weft.db'}"
    a, b = (weft_server_factory(env=AUTH_ENV, store=store, workdir=tmp_path / n) for n in "ab")
    newco = token_for("eve", tenant=NEW_TENANT, scope="read")
    reader = await YPeer.connect(http, f"{a.ws_url}/{NEW_TENANT}/site/a.txt", token=newco)
    also = await YPeer.connect(http, f"{a.ws_url}/{NEW_TENANT}/site/a.txt", token=newco)
    writer = await YPeer.connect(http, f"{a.ws_url}/acme/site/a.txt", token=token_for())
    watcher = await YPeer.connect(http, f"{b.ws_url}/acme/site/a.txt", token=token_for())
    state = json.dumps({"user": {"name": "eve"}})
    await reader.send(Awareness(codec.encode_awareness([AwarenessEntry(77, 1, state)])))
    await also.until(lambda: bool(also.awareness))  # relayed on its own instance
    await writer.send(Awareness(codec.encode_awareness([AwarenessEntry(88, 1, state)])))
    await watcher.until(lambda: bool(watcher.awareness), timeout=5.0)  # A published
    unborn = keys.unborn_prefix(NEW_TENANT)
    assert [k for k in store_rows(a) if k.startswith(unborn)] == []
    for peer in (reader, also, writer, watcher):
        await peer.close()
