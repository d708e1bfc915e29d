"""The same change sent online by two devices at one moment is kept once by the server
(crdt.sameonline): weft clients (YPeer, ?weft) on one server in this process, real
sockets and a real SQLite store; each edits before it has read the other's update."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pycrdt import merge_updates

from crdt.codec import SyncUpdate
from crdt.records import state_vector_clocks
from crdt.textedits import apply, diff
from server.app import create_app
from server.appkeys import METRICS
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process, until

BASE = "".join(f"line {n}\n" for n in range(5))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def has_all(peer: YPeer, *others: YPeer) -> bool:
    """Whether ``peer`` holds everything ``others`` hold (it read their updates)."""
    mine = state_vector_clocks(peer.doc.get_state())
    return all(
        mine.get(client, 0) >= clock
        for other in others
        for client, clock in state_vector_clocks(other.doc.get_state()).items()
    )


async def settled(want: str | None, *peers: YPeer) -> None:
    """Each peer read every other's updates, and holds ``want`` (if given)."""
    for peer in peers:
        others = [p for p in peers if p is not peer]
        await peer.until(
            lambda p=peer, o=others: has_all(p, *o) and want in (None, str(p))  # type: ignore[misc]
        )


def save(peer: YPeer, new: str) -> bytes:
    """The update of one save of the file as ``new``, as ``weft sync`` makes it (not
    sent)."""
    before = peer.doc.get_state()
    old = str(peer)
    apply(peer.text, old, diff(old, new))
    return peer.doc.get_update(before)


def settings(tmp_path: Path) -> Settings:
    return Settings(store=f"sqlite:///{tmp_path / 'weft.db'}")


async def two_devices(http: aiohttp.ClientSession, url: str, *, weft: bool) -> tuple[YPeer, YPeer]:
    first = await YPeer.connect(http, url, weft=weft, device="desk" if weft else None)
    await first.edit(0, BASE)
    second = await YPeer.connect(http, url, weft=weft, device="laptop" if weft else None)
    await first.until(lambda: len(first.acks) == 1 or not weft)
    await second.wait_text(BASE)
    return first, second


async def test_the_same_line_added_on_two_devices_at_once_is_kept_once(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        url = f"{server.ws_url}/acme/site/notes.txt"
        desk, laptop = await two_devices(http, url, weft=True)
        # Both change line 2 and add a line at the end, each before it read the other's.
        for peer in (desk, laptop):
            at = BASE.index("line 2")
            await peer.edit(at + len("line 2"), " (fixed)")
            await peer.append("new line\n")
        want = BASE.replace("line 2", "line 2 (fixed)") + "new line\n"
        await until(lambda: app[METRICS].same_changes.get() == 2)  # laptop's two updates
        await settled(want, desk, laptop)
        reader = await YPeer.connect(http, url)
        assert str(reader) == want
    async with serve_in_process(create_app(settings(tmp_path))) as server:  # from the log
        reader = await YPeer.connect(http, f"{server.ws_url}/acme/site/notes.txt")
        assert str(reader) == want


async def test_different_changes_and_editors_keep_theirs(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Two devices adding different lines keep both; two editors (plain y-websocket
    clients) typing the same word at one place keep both, as Yjs does."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        desk, laptop = await two_devices(http, f"{server.ws_url}/acme/site/a.txt", weft=True)
        await desk.append("from desk\n")
        await laptop.append("from laptop\n")
        await settled(None, desk, laptop)
        assert sorted(str(desk).splitlines(keepends=True)) == sorted(
            [*BASE.splitlines(keepends=True), "from desk\n", "from laptop\n"]
        )
        assert str(desk) == str(laptop)
        one, two = await two_devices(http, f"{server.ws_url}/acme/site/b.txt", weft=False)
        await one.append("word")
        await two.append("word")
        await settled(BASE + "wordword", one, two)
        assert app[METRICS].same_changes.get() == 0


async def marked(desk: YPeer, laptop: YPeer, acks: int) -> None:
    """Desk sends one more update (a line at the top) and both read until they have
    every update and desk has ``acks`` acks: a deletion the server committed for an
    earlier update went before it (one writer, in order) and has reached both."""
    await desk.edit(0, "top\n")
    await desk.until(lambda: len(desk.acks) == acks and has_all(desk, laptop))
    await laptop.until(lambda: has_all(laptop, desk))


async def test_a_line_its_device_added_and_took_out_again_is_no_original(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Desk added a line and took it out again, both saves sent as one update (the
    weft client's outbox merges the saves waiting to go); laptop added the same line
    meanwhile and keeps it: desk's line is gone, so laptop's is no copy of anything."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        desk, laptop = await two_devices(http, f"{server.ws_url}/acme/site/n.txt", weft=True)
        added = save(desk, BASE + "new line\n")
        taken_out = save(desk, BASE)
        await desk.send(SyncUpdate(merge_updates(added, taken_out)))
        await desk.until(lambda: len(desk.acks) == 2)
        await laptop.append("new line\n")
        await laptop.until(lambda: len(laptop.acks) == 1)
        await marked(desk, laptop, 3)
        want = "top\n" + BASE + "new line\n"
        assert (str(desk), str(laptop)) == (want, want)
        assert app[METRICS].same_changes.get() == 0


async def test_a_line_sent_again_after_it_was_taken_out_is_no_original(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Desk added a line and took it out again (two updates, both committed), then sent
    the first again with a later save (a reconnect regroups what was not acknowledged:
    another update, not a duplicate); laptop's same line, made meanwhile, stays."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        desk, laptop = await two_devices(http, f"{server.ws_url}/acme/site/n.txt", weft=True)
        added = save(desk, BASE + "new line\n")
        await desk.send(SyncUpdate(added))
        await desk.send(SyncUpdate(save(desk, BASE)))
        later = save(desk, BASE.replace("line 1", "line one"))
        await desk.send(SyncUpdate(merge_updates(added, later)))
        await desk.until(lambda: len(desk.acks) == 4)
        await laptop.append("new line\n")
        await laptop.until(lambda: len(laptop.acks) == 1)
        await marked(desk, laptop, 5)
        want = "top\n" + BASE.replace("line 1", "line one") + "new line\n"
        assert (str(desk), str(laptop)) == (want, want)
        assert app[METRICS].same_changes.get() == 0
