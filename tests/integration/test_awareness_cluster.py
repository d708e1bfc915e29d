"""Awareness (cursors, presence) crosses server instances, and never enters the history.

Two real ``weft serve`` processes on one SQLite file, y-websocket peers over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdt import codec, keys
from crdt.codec import Awareness, AwarenessEntry, QueryAwareness
from crdt.history import History
from crdt.kv import open_engine
from server.testing import ServerProcess, StartServer, YPeer, call_api

pytestmark = pytest.mark.functional

DOC = "acme/site/src/shared.txt"


def states_of(peer: YPeer) -> dict[int, tuple[int, str]]:
    """The awareness states ``peer`` holds, y-protocols' way (newer clocks win; a null
    state removes the client)."""
    states: dict[int, tuple[int, str]] = {}
    for payload in peer.awareness:
        for e in codec.decode_awareness(payload):
            known = states.get(e.client_id)
            if known is not None and e.clock < known[0]:
                continue
            states[e.client_id] = (e.clock, e.state)
    return {c: s for c, s in states.items() if s[1] != "null"}


def cursor(client: int, clock: int, name: str, index: int = 0) -> Awareness:
    state = json.dumps({"user": {"name": name}, "cursor": index})
    return Awareness(codec.encode_awareness([AwarenessEntry(client, clock, state)]))


async def metric(http: aiohttp.ClientSession, server: ServerProcess, name: str) -> float:
    async with http.get(f"{server.url}/metrics") as r:
        text = await r.text()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def two_instances(factory: StartServer, tmp_path: Path) -> tuple[ServerProcess, ServerProcess]:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    return (
        factory(workdir=tmp_path / "a", store=store),
        factory(workdir=tmp_path / "b", store=store),
    )


async def test_awareness_crosses_instances_both_ways_and_leaves_with_its_connection(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a_server, b_server = two_instances(weft_server_factory, tmp_path)
    a = await YPeer.connect(http, f"{a_server.ws_url}/{DOC}")
    b = await YPeer.connect(http, f"{b_server.ws_url}/{DOC}")

    started = time.monotonic()
    await a.send(cursor(1001, 1, "ada"))
    await b.until(lambda: 1001 in states_of(b), timeout=1.0)
    a_to_b = time.monotonic() - started
    assert json.loads(states_of(b)[1001][1])["user"]["name"] == "ada"

    started = time.monotonic()
    await b.send(cursor(2002, 1, "bob"))
    await a.until(lambda: 2002 in states_of(a), timeout=1.0)
    b_to_a = time.monotonic() - started

    # A moving cursor: the last state wins on the other instance.
    for clock in range(2, 12):
        await a.send(cursor(1001, clock, "ada", index=clock))
    await b.until(lambda: states_of(b).get(1001, (0, ""))[0] == 11, timeout=1.0)
    assert json.loads(states_of(b)[1001][1])["cursor"] == 11

    # A joiner on B gets A's client (remote) and B's client (local) on connect.
    c = await YPeer.connect(http, f"{b_server.ws_url}/{DOC}", handshake=False)
    await c.until(lambda: {1001, 2002} <= set(states_of(c)), timeout=1.0)

    # A's connection closes: B's peers are told its client is gone.
    started = time.monotonic()
    await a.close()
    await b.until(lambda: 1001 not in states_of(b), timeout=1.0)
    await c.until(lambda: 1001 not in states_of(c), timeout=1.0)
    removal = time.monotonic() - started
    assert 2002 in states_of(b) and 2002 in states_of(c)
    print(
        f"\nawareness across instances: A->B {a_to_b * 1000:.0f} ms, "
        f"B->A {b_to_a * 1000:.0f} ms, removal {removal * 1000:.0f} ms"
    )
    assert await metric(http, a_server, "weft_awareness_publishes_total") >= 1
    assert await metric(http, b_server, "weft_awareness_remote_total") >= 1
    for peer in (b, c):
        await peer.close()


async def history_view(
    http: aiohttp.ClientSession, server: ServerProcess, path: str
) -> tuple[Any, Any]:
    status, docs = await call_api(http, "GET", f"{server.url}/api/v1/acme/site/docs")
    assert status == 200, docs
    status, versions = await call_api(http, "GET", f"{server.url}/api/v1/acme/site/history/{path}")
    assert status == 200, versions
    return docs, versions


async def read_store(store: str, fn: Any) -> Any:
    """Read the shared SQLite file from this process (a third party on the same file)."""
    async with open_engine(store) as kv:
        history = History(kv)
        ref = await history.doc("acme", "site", "src/shared.txt")
        return await kv.read(lambda tr: fn(tr, ref))


def awareness_rows(tr: Any, ref: Any) -> list[tuple[str, int | None]]:
    lo, hi = keys.awareness_range(ref.space)
    return [keys.unpack_awareness(k, ref.space) for k, _ in tr.get_range(lo, hi)]


async def test_awareness_never_enters_the_history(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a_server, b_server = two_instances(weft_server_factory, tmp_path)
    a = await YPeer.connect(http, f"{a_server.ws_url}/{DOC}", weft=True)
    b = await YPeer.connect(http, f"{b_server.ws_url}/{DOC}")
    await a.append("hello")
    await a.until(lambda: len(a.acks) == 1)
    await b.wait_text("hello")
    before = [await history_view(http, s, "src/shared.txt") for s in (a_server, b_server)]
    assert before[0][0]["docs"][0]["updates"] == 1

    # A burst of cursor moves on both instances.
    for clock in range(1, 101):
        await a.send(cursor(1001, clock, "ada", index=clock))
        await b.send(cursor(2002, clock, "bob", index=clock))
        if clock % 20 == 0:
            await asyncio.sleep(0.02)
    await b.until(lambda: states_of(b).get(1001, (0, ""))[0] == 100, timeout=2.0)
    await a.until(lambda: states_of(a).get(2002, (0, ""))[0] == 100, timeout=2.0)

    # While the clients are connected, their states are in the ephemeral entries.
    rows = await read_store(a_server.store, awareness_rows)
    assert sorted(c for _, c in rows if c is not None) == [1001, 2002]
    assert len({i for i, c in rows if c is None}) == 2  # one entry per instance

    after = [await history_view(http, s, "src/shared.txt") for s in (a_server, b_server)]
    assert after == before  # docs (head, update count, size) and the versions list
    assert str(a) == str(b) == "hello"
    # Coalesced: 100 messages per instance became far fewer store transactions.
    publishes = await metric(http, a_server, "weft_awareness_publishes_total")
    assert 1 <= publishes < 50, publishes

    # Both connections close: the instances clear their entries.
    await a.close()
    await b.close()
    deadline = time.monotonic() + 2.0
    while (
        rows := await read_store(a_server.store, awareness_rows)
    ) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert rows == []
    assert [await history_view(http, s, "src/shared.txt") for s in (a_server, b_server)] == before


@pytest.mark.slow  # an instance's drain and exit: ~4 s
async def test_a_draining_instance_takes_its_clients_away(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a_server, b_server = two_instances(weft_server_factory, tmp_path)
    a = await YPeer.connect(http, f"{a_server.ws_url}/{DOC}")
    b = await YPeer.connect(http, f"{b_server.ws_url}/{DOC}")
    await a.send(cursor(1001, 1, "ada"))
    await b.until(lambda: 1001 in states_of(b), timeout=1.0)
    assert a_server.terminate() == 0  # SIGTERM: drains, closes a, clears its entry
    await b.until(lambda: 1001 not in states_of(b), timeout=2.0)
    rows = await read_store(b_server.store, awareness_rows)
    assert rows == []
    await b.close()


async def test_a_state_at_the_same_clock_from_another_connection_is_ignored(
    weft_server: str, http: aiohttp.ClientSession
) -> None:
    """One server: b sends a's client at the clock a gave it, with another state. The
    peers ignore it (y-protocols: an equal clock is not news), and so must the room:
    it stored it, so a joiner and a query-awareness answer got b's state while every
    connected peer kept a's."""
    url = f"{weft_server.replace('http', 'ws', 1)}/ws/{DOC}"
    watcher, a, b = [await YPeer.connect(http, url) for _ in range(3)]
    await a.send(cursor(4, 5, "alice"))
    await watcher.until(lambda: 4 in states_of(watcher))
    await b.send(cursor(4, 5, "forged"))
    await b.send(cursor(77, 1, "b"))  # (relayed after b's first frame: it was handled)
    await watcher.until(lambda: 77 in states_of(watcher))
    assert json.loads(states_of(watcher)[4][1])["user"]["name"] == "alice"

    joiner = await YPeer.connect(http, url, handshake=False)
    await joiner.until(lambda: {4, 77} <= set(states_of(joiner)))
    assert json.loads(states_of(joiner)[4][1])["user"]["name"] == "alice"
    asked = len(watcher.awareness)
    await watcher.send(QueryAwareness())
    await watcher.until(lambda: len(watcher.awareness) > asked)
    answer = {e.client_id: e.state for e in codec.decode_awareness(watcher.awareness[-1])}
    assert json.loads(answer[4])["user"]["name"] == "alice"
    for peer in (watcher, a, b, joiner):
        await peer.close()
