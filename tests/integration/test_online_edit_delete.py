"""An edit sent online while another online device deletes the file: recorded as an
edit/delete conflict, and said to the editor's weft client (``Conflict``). Real server
processes on real SQLite files; y-websocket peers (``YPeer``) whose documents are held
back, so an edit is made without the deletion exactly when a test says so."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from pycrdt import Map

from crdt.codec import Conflict, SyncStep1, SyncUpdate
from server.testing import ServerProcess, StartServer, YPeer, call_api

pytestmark = pytest.mark.functional

BASE = "".join(f"line {i}\n" for i in range(1, 6))
PATH = "notes.md"


def change(peer: YPeer, edit: Any) -> bytes:
    """Edit the peer's document (not sent): the update it makes."""
    before = peer.doc.get_state()
    with peer.doc.transaction():
        edit(peer)
    return peer.doc.get_update(before)


def append(peer: YPeer, new: str) -> bytes:
    return change(peer, lambda p: p.text.insert(len(p.text), new))


def set_deleted(peer: YPeer, value: bool) -> bytes:
    return change(peer, lambda p: p.doc.get("weft", type=Map).__setitem__("deleted", value))


def bring_back(peer: YPeer) -> None:
    """What ``weft sync`` does when a deleted file appears again with text."""
    peer.doc.get("weft", type=Map)["deleted"] = False
    peer.text.insert(len(peer.text), "back\n")


class Scene:
    """One document holding BASE on a real server; peers named by their device id."""

    def __init__(self, server: ServerProcess, http: aiohttp.ClientSession) -> None:
        self.server, self.http = server, http
        self.url = f"{server.ws_url}/acme/site/{PATH}"
        self.plain: set[int] = set()  # the peers that get no acks (no weft extension)

    async def start(self) -> Scene:
        writer = await YPeer.connect(self.http, f"{self.url}?weft=3&device=w")
        await self.send(writer, append(writer, BASE))
        return self

    async def peer(self, device: str | None, weft: int = 3) -> YPeer:
        """A peer synced with the server (``device`` None: a plain y-websocket one)."""
        query = f"?weft={weft}&device={device}" if device else ""
        peer = await YPeer.connect(self.http, self.url + query)
        if device is None:
            self.plain.add(id(peer))
        return peer

    async def send(self, peer: YPeer, update: bytes) -> None:
        """Send an update and wait for its ack (a plain peer: until the server has it)."""
        count = len(peer.acks)
        await peer.send(SyncUpdate(update))
        if id(peer) in self.plain:
            await asyncio.sleep(0.3)
        else:
            await peer.until(lambda: len(peer.acks) == count + 1)

    async def records(self) -> list[dict[str, Any]]:
        status, body = await call_api(
            self.http, "GET", f"{self.server.url}/api/v1/acme/site/conflicts"
        )
        assert status == 200, body
        return list(body["conflicts"])

    async def wait_records(self, count: int) -> list[dict[str, Any]]:
        for _ in range(200):
            found = await self.records()
            if len(found) >= count:
                await asyncio.sleep(0.5)  # a second record, if one were coming, shows
                return await self.records()
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} record(s) not made: {await self.records()}")

    async def head(self) -> dict[str, Any]:
        status, body = await call_api(
            self.http, "GET", f"{self.server.url}/api/v1/acme/site/docs/{PATH}", format="json"
        )
        assert status == 200, body
        return dict(body)


def conflicts(peer: YPeer) -> list[Conflict]:
    return [m for m in peer.received if isinstance(m, Conflict)]


async def drain(*peers: YPeer, seconds: float = 0.3) -> None:
    """Read whatever the peers were sent (for a while)."""
    for peer in peers:
        with contextlib.suppress(TimeoutError):
            await peer.until(lambda: False, seconds)


@pytest.fixture
async def scene(weft_server_factory: StartServer, http: aiohttp.ClientSession) -> Scene:
    return await Scene(weft_server_factory(), http).start()


async def test_an_edit_made_while_another_device_deletes_is_recorded_and_said(
    scene: Scene,
) -> None:
    a, b = await scene.peer("A"), await scene.peer("B")
    edit = append(b, "typed on B\n")  # B has not seen the deletion: it is not sent yet
    await scene.send(a, set_deleted(a, True))
    await scene.send(b, edit)

    [record] = await scene.wait_records(1)
    assert record["path"] == PATH and record["deleted"] == "theirs"
    assert record["ours"]["clients"] == ["B"] and record["theirs"]["clients"] == ["A"]
    assert record["regions"][0]["base_text"] == BASE
    assert record["regions"][0]["ours_text"] == BASE + "typed on B\n"
    assert record["regions"][0]["theirs_text"] == ""
    assert not record["restored"] and not record["emptied"]
    assert record["base"] == record["theirs"]["versionstamps"][0]

    await b.until(lambda: bool(conflicts(b)))
    [said] = conflicts(b)
    assert said.conflict.hex() == record["id"]
    assert said.summary.startswith("edited here while deleted elsewhere")
    assert not conflicts(a)  # the deleter is not told (it is not its edit)
    head = await scene.head()
    assert head["deleted"] and head["text"] == BASE + "typed on B\n"  # the edit is kept


async def test_an_edit_that_follows_a_seen_deletion_makes_no_record(scene: Scene) -> None:
    a, b, c = await scene.peer("A"), await scene.peer("B"), await scene.peer("C")
    late = append(c, "typed on C\n")  # concurrent: the sentinel at the end
    await scene.send(a, set_deleted(a, True))
    # The deleting document itself goes on editing (its own structs follow the deletion).
    await scene.send(a, append(a, "typed on A\n"))
    # B receives the deletion and brings the file back with an edit: the flag is unset.
    await b.until(lambda: b.doc.get("weft", type=Map).get("deleted") is True)
    await scene.send(b, change(b, bring_back))
    await a.until(lambda: a.doc.get("weft", type=Map).get("deleted") is False)
    await scene.send(a, set_deleted(a, True))  # deleted again (seen the return); B sees it
    await b.until(lambda: b.doc.get("weft", type=Map).get("deleted") is True)
    # B's client announces what it holds (a weft client's probe, a y-websocket
    # client's connect), then edits the deleted text without unsetting the flag.
    await b.send(SyncStep1(b.doc.get_state()))
    await scene.send(b, append(b, "after the probe\n"))
    # A plain editor that opens the deleted document and types into it.
    d = await scene.peer(None)
    assert d.doc.get("weft", type=Map).get("deleted") is True
    await d.send(SyncStep1(d.doc.get_state()))  # (y-websocket resyncs so)
    await scene.send(d, append(d, "typed on D\n"))

    await scene.send(c, late)  # the only edit made without seeing a deletion
    [record] = await scene.wait_records(1)
    assert record["ours"]["clients"] == ["C"]
    await c.until(lambda: bool(conflicts(c)))
    await drain(a, b, d)
    assert not conflicts(a) and not conflicts(b)


async def test_many_keystrokes_into_a_deleted_document_make_one_record(
    scene: Scene, http: aiohttp.ClientSession
) -> None:
    a, b, plain = await scene.peer("A"), await scene.peer("B"), await scene.peer(None)
    keystrokes = [append(b, ch) for ch in "fifty keystrokes, give or take a few of them!!"]
    more = [append(b, ch) for ch in "and more"]
    typed = [append(plain, ch) for ch in "xyz"]
    await scene.send(a, set_deleted(a, True))
    for update in keystrokes:
        await scene.send(b, update)
    # The same device on another connection (a reconnect): still the same record.
    again = await scene.peer("B")
    for update in more:
        await again.send(SyncUpdate(update))
    [record] = await scene.wait_records(1)
    assert record["ours"]["clients"] == ["B"]
    await b.until(lambda: bool(conflicts(b)))
    await drain(b, again)
    assert len(conflicts(b)) == 1 and not conflicts(again)
    # A plain editor typing without the deletion is another device (its Yjs client id):
    # one more record, however many updates it sends.
    for update in typed:
        await scene.send(plain, update)
    records = await scene.wait_records(2)
    assert len(records) == 2, records
    assert sorted(r["ours"]["clients"][0] == "B" for r in records) == [False, True]


async def test_an_edit_with_the_bring_back_setting_brings_the_file_back(
    weft_server_factory: StartServer, http: aiohttp.ClientSession
) -> None:
    server = weft_server_factory(env={"WEFT_BRING_BACK_EDITED": "1"})
    scene = await Scene(server, http).start()
    a, b = await scene.peer("A"), await scene.peer("B")
    edit = append(b, "typed on B\n")
    await scene.send(a, set_deleted(a, True))
    await scene.send(b, edit)
    [record] = await scene.wait_records(1)
    assert record["restored"]
    await b.until(lambda: bool(conflicts(b)))
    assert "brought back" in conflicts(b)[0].summary
    head = await scene.head()
    assert not head["deleted"] and head["text"] == BASE + "typed on B\n"
