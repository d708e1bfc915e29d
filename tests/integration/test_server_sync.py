"""Sync semantics against a real server process: y-websocket peers over real sockets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from crdt import codec
from crdt.codec import Ack, Awareness, AwarenessEntry, Hello, QueryAwareness, SyncStep1, SyncUpdate
from crdt.history import update_hash
from server.testing import ServerProcess, StartServer, YPeer, client_session

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def room(server: ServerProcess, path: str | None = None) -> str:
    return f"{server.ws_url}/acme/site/{path or f'src/{uuid.uuid4().hex}.js'}"


async def test_two_clients_see_each_others_edits(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    url = room(server)
    a = await YPeer.connect(http, url)
    b = await YPeer.connect(http, url)
    await a.edit(0, "hello")
    await b.wait_text("hello")
    await b.append(" world")
    await a.wait_text("hello world")
    await a.close()
    await b.close()


async def test_joiner_gets_the_current_state(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    url = room(server)
    a = await YPeer.connect(http, url, weft=True)
    await a.edit(0, "already here")
    await a.until(lambda: len(a.acks) == 1)
    joiners = [await YPeer.connect(http, url) for _ in range(3)]  # empty state vectors
    assert [str(j) for j in joiners] == ["already here"] * 3
    for peer in (a, *joiners):
        await peer.close()


async def test_server_sends_sync_step1_first_and_answers_ours(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    peer = await YPeer.connect(http, room(server), handshake=False)
    first = await peer.next()
    assert isinstance(first, SyncStep1)
    await peer.send(SyncStep1(b"\x00"))
    await peer.until(lambda: peer.synced)
    await peer.close()


async def test_weft_client_gets_acks_and_resending_is_idempotent(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    url = room(server)
    weft = await YPeer.connect(http, url, weft=True)
    plain = await YPeer.connect(http, url)
    update = await weft.edit(0, "x")
    await weft.until(lambda: len(weft.acks) == 1)
    first = weft.acks[0]
    assert first.update_hash == update_hash(update)
    await weft.send(SyncUpdate(update))  # re-sent, e.g. after a lost ack
    await weft.until(lambda: len(weft.acks) == 2)
    assert weft.acks[1].versionstamp == first.versionstamp
    await plain.wait_text("x")
    await weft.close()
    await plain.close()
    assert isinstance(weft.received[0], Hello)
    extension = (Hello, Ack, codec.Refused, codec.Base)
    assert not [m for m in plain.received if isinstance(m, extension)]
    async with http.get(f"{server.url}/api/v1/acme/site/docs") as response:
        docs = {d["path"]: d for d in (await response.json())["docs"]}
    assert docs[url.split("/site/", 1)[1]]["updates"] == 1


async def test_hello_message_opts_in(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    peer = await YPeer.connect(http, room(server), handshake=False)
    await peer.send(Hello(1))
    await peer.handshake()
    await peer.until(lambda: any(isinstance(m, Hello) for m in peer.received))
    await peer.edit(0, "a")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()


async def test_awareness_is_relayed_and_removed_on_close(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    url = room(server)
    a = await YPeer.connect(http, url)
    b = await YPeer.connect(http, url)
    state = codec.encode_awareness([AwarenessEntry(1234, 1, '{"user":{"name":"ada"}}')])
    await a.send(Awareness(state))
    await b.until(lambda: state in b.awareness)
    c = await YPeer.connect(http, url, handshake=False)  # a joiner gets current states
    await c.until(lambda: bool(c.awareness))
    assert codec.decode_awareness(c.awareness[0])[0].client_id == 1234
    await c.send(QueryAwareness())
    await c.until(lambda: len(c.awareness) == 2)
    await a.close()

    def removed() -> bool:
        return any(
            e.client_id == 1234 and e.removed
            for payload in b.awareness
            for e in codec.decode_awareness(payload)
        )

    await b.until(removed)
    await b.close()
    await c.close()


async def test_many_peers_converge(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    url = room(server)
    peers = [await YPeer.connect(http, url) for _ in range(5)]
    await asyncio.gather(*(p.append(f"<{i}>") for i, p in enumerate(peers)))
    await peers[0].until(lambda: all(f"<{i}>" in str(peers[0]) for i in range(5)))
    final = str(peers[0])
    await asyncio.gather(*(p.wait_text(final) for p in peers))
    for peer in peers:
        await peer.close()


async def test_an_answer_with_only_known_deletions_is_not_stored(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Found in a walkthrough: Yjs answers the server's SyncStep1 with its whole delete
    set, so every reconnect of a peer holding deletions stored a new, empty-handed
    version (new bytes whenever its deletions grew: no idempotency). Such an answer is
    no longer stored; a weft client gets its ack; an unknown deletion still is stored."""
    url = room(server)
    path = url.split("/site/", 1)[1]
    a = await YPeer.connect(http, url, weft=True)
    made: list[bytes] = []
    a.doc.observe(lambda event: made.append(event.update))  # each transaction's own
    a.text.insert(0, "hello world")
    del a.text[0:1]
    del a.text[9:10]
    for update in made:
        await a.send(SyncUpdate(update))
    await a.until(lambda: len(a.acks) == 3)

    async def updates() -> int:
        async with http.get(f"{server.url}/api/v1/acme/site/docs") as response:
            docs = {d["path"]: d for d in (await response.json())["docs"]}
        return int(docs[path]["updates"])

    assert await updates() == 3
    for weft in (False, True):  # peers holding everything reconnect
        b = await YPeer.connect(http, url, weft=weft, handshake=False)
        b.doc.apply_update(a.doc.get_update())
        received, acks = b.received, b.acks
        await b.until(lambda: any(isinstance(m, SyncStep1) for m in received))  # noqa: B023
        answer = b.doc.get_update(b.doc.get_state())  # what b just sent: deletions only
        if weft:
            await b.until(lambda: len(acks) == 1)  # noqa: B023
            assert acks[0].update_hash == update_hash(answer)
        await b.handshake()
        assert str(b) == "ello worl"
        await b.close()
    await asyncio.sleep(0.2)
    assert await updates() == 3

    # a peer that deleted, offline, what the server still has: its answer is stored
    c = await YPeer.connect(http, url, handshake=False)
    c.doc.apply_update(a.doc.get_update())
    del c.text[0:4]
    await c.handshake()
    await a.wait_text(" worl")
    assert await updates() == 4
    await a.close()
    await c.close()
