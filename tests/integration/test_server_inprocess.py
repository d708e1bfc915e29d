"""The app run in this process (real sockets, no child process): hooks and internals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Doc, Text

from client.device import Device
from crdt import codec
from crdt.codec import Base, SyncStep1, SyncStep2
from crdt.errors import StoreError, TransactionTooLarge
from crdt.history import Append, Appended, DocRef, History
from crdt.kv import open_engine
from crdt.versionstamp import ZERO, Versionstamp
from server.app import create_app
from server.appkeys import HISTORY, METRICS, ON_BRANCH, ROOMS, WRITER
from server.auth import Principal
from server.config import Settings
from server.metrics import Metrics
from server.rooms import Room
from server.testing import (
    ConnectionClosed,
    InProcessServer,
    YPeer,
    client_session,
    serve_in_process,
    until,
)
from server.writer import Writer, WriterClosed


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", **overrides)  # type: ignore[arg-type]


async def test_offline_branch_hook_gets_base_and_committed_updates(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    calls: list[tuple[DocRef, Versionstamp, list[Appended], Principal]] = []
    devices: list[str | None] = []

    async def on_branch(
        doc: DocRef,
        base: Versionstamp,
        appended: list[Appended],
        who: Principal,
        device: str | None,
    ) -> None:
        calls.append((doc, base, appended, who))
        devices.append(device)

    app = create_app(settings(tmp_path))
    app[ON_BRANCH] = on_branch
    async with serve_in_process(app) as server:
        url = f"{server.ws_url}/acme/site/branch.txt"
        peer = await YPeer.connect(http, url, weft=True, device="dev-1")
        await peer.edit(0, "base")
        await peer.until(lambda: len(peer.acks) == 1)
        base = peer.acks[0].versionstamp
        await peer.send(Base(base))
        await peer.append(" one")
        await peer.append(" two")
        await peer.send(Base(ZERO))  # the branch is over
        await peer.until(lambda: len(peer.acks) == 3)
        await peer.append(" live")  # not part of any branch
        await peer.until(lambda: len(peer.acks) == 4)
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.01)
        assert len(calls) == 1
        doc, got_base, appended, who = calls[0]
        assert (doc.path, got_base, who.user) == ("branch.txt", base, "anonymous")
        assert [a.versionstamp for a in appended] == [a.versionstamp for a in peer.acks[1:3]]
        # A branch also ends when its connection closes.
        await peer.send(Base(peer.acks[-1].versionstamp))
        await peer.append(" offline")
        await peer.until(lambda: len(peer.acks) == 5)
        await peer.close()
        for _ in range(100):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.01)
        assert [a.versionstamp for a in calls[1][2]] == [peer.acks[4].versionstamp]
        assert devices == ["dev-1", "dev-1"]
        # The device is stored as each update's client.
        [record] = await app[HISTORY].updates(doc, limit=1)
        assert record.client == "dev-1"
        bad = await YPeer.connect(http, url, device="../x", handshake=False)
        assert await bad.closed() == (4400, "bad ?device=: 1-64 of A-Z a-z 0-9 . _ : -")


async def test_rooms_unload_when_idle_and_reload_from_the_store(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = create_app(settings(tmp_path, room_idle_seconds=0.1))
    async with serve_in_process(app) as server:
        url = f"{server.ws_url}/acme/site/idle.txt"
        peer = await YPeer.connect(http, url, weft=True)
        await peer.edit(0, "kept")
        await peer.until(lambda: len(peer.acks) == 1)
        assert len(app[ROOMS]) == 1
        await peer.close()
        for _ in range(100):
            if len(app[ROOMS]) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(app[ROOMS]) == 0
        assert app[METRICS].rooms_loaded.value == 0
        again = await YPeer.connect(http, url)
        assert str(again) == "kept"
        await again.close()


async def test_memory_stays_bounded_with_many_documents(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = create_app(settings(tmp_path, room_idle_seconds=60, max_idle_rooms=3))
    async with serve_in_process(app) as server:
        for i in range(12):
            peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/many/{i}.txt", weft=True)
            await peer.append(str(i))
            await peer.until(lambda: bool(peer.acks))  # noqa: B023
            await peer.close()
            for _ in range(100):
                if len(app[ROOMS]) <= 3:
                    break
                await asyncio.sleep(0.01)
            assert len(app[ROOMS]) <= 3  # idle rooms beyond the bound unload at once
        async with http.get(f"{server.url}/api/v1/acme/site/docs") as response:
            assert len((await response.json())["docs"]) == 12


async def test_updates_from_another_writer_reach_the_room_through_the_head_watch(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/watched.txt")
        history = app[HISTORY]
        doc = await history.doc("acme", "site", "watched.txt")
        source: Doc[Any] = Doc()
        source.get("content", type=Text).insert(0, "from elsewhere")
        # Written as if by another instance (its session id does not start with ours).
        await history.append([Append(doc, source.get_update(), "bob", "1", "other/1")])
        await peer.wait_text("from elsewhere")
        assert app[METRICS].remote_updates.get() == 1
        await peer.close()


async def test_group_commit_puts_queued_updates_from_many_rooms_in_one_transaction(
    tmp_path: Path,
) -> None:
    async with open_engine(f"sqlite:///{tmp_path / 'w.db'}") as kv:
        history = History(kv)
        await history.init()
        metrics = Metrics()
        docs = [await history.doc("acme", "site", f"f{i}.txt", create=True) for i in range(10)]
        writer = Writer(history, metrics, max_updates=1000)
        writer.start()
        futures = []
        for i in range(50):
            d: Doc[Any] = Doc()
            d.get("content", type=Text).insert(0, f"u{i}")
            futures.append(writer.submit(Append(docs[i % 10], d.get_update())))
        results = await asyncio.gather(*futures)
        await writer.close()
        assert metrics.commit_batch_size.count == 1  # one transaction for all 50
        assert metrics.updates_committed.get() == 50
        assert len({r.versionstamp for r in results}) == 50
        with pytest.raises(WriterClosed):
            writer.submit(Append(docs[0], b"\x00\x00"))


async def test_an_update_too_big_for_a_transaction_fails_alone(tmp_path: Path) -> None:
    async with open_engine(f"sqlite:///{tmp_path / 'w.db'}") as kv:
        history = History(kv)
        await history.init()
        doc = await history.doc("acme", "site", "f.txt", create=True)
        writer = Writer(history)
        writer.start()
        ok = writer.submit(Append(doc, Doc().get_update()))
        too_big = writer.submit(Append(doc, b"\x00" * 9_500_000))  # over history's limit
        with pytest.raises(TransactionTooLarge, match="limit"):
            await too_big
        assert not (await ok).duplicate  # its batch-mate is committed
        await writer.close()


async def test_a_failed_commit_fails_every_future_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_engine(f"sqlite:///{tmp_path / 'w.db'}") as kv:
        history = History(kv)
        await history.init()
        doc = await history.doc("acme", "site", "f.txt", create=True)
        writer = Writer(history)
        writer.start()

        def broken(items: object, done: Callable[..., None]) -> None:
            asyncio.get_running_loop().call_soon(done, None, StoreError("disk on fire"))

        with monkeypatch.context() as patch:
            patch.setattr(history, "append_then", broken)
            futures = [writer.submit(Append(doc, bytes([i]))) for i in range(3)]
            for result in await asyncio.gather(*futures, return_exceptions=True):
                assert isinstance(result, StoreError)
        assert not (await writer.submit(Append(doc, Doc().get_update()))).duplicate
        await writer.close()


def test_joiners_with_an_empty_state_vector_share_one_encoding() -> None:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, "shared")
    ref = DocRef("acme", "site", "a.txt", b"T", b"D")
    room = Room(ref, doc, None, 0)
    first = room.sync_step2_frame(b"\x00")
    assert room.sync_step2_frame(b"\x00") is first
    decoded = codec.decode(first)
    assert isinstance(decoded, SyncStep2)
    other: Doc[Any] = Doc()
    other.get("content", type=Text).insert(0, "more")
    room.apply_local(
        other.get_update(), Appended(Versionstamp(b"\x00" * 11 + b"\x01"), False), sender=0
    )
    assert room.sync_step2_frame(b"\x00") is not first  # re-encoded after a change


async def test_a_loaded_room_tells_the_writer_what_follows_the_latest_snapshot(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Its first update then needs no snapshot check that reads the log."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        history = app[HISTORY]
        doc = await history.doc("acme", "site", "known.txt", create=True)
        source: Doc[Any] = Doc()
        earlier = []
        for word in ("one ", "two ", "three "):
            before = source.get_state()
            source.get("content", type=Text).insert(0, word)
            earlier.append(source.get_update(before))
        await history.append([Append(doc, u) for u in earlier])  # before the room loaded
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/known.txt", weft=True)
        update = await peer.edit(0, "four ")
        await peer.until(lambda: len(peer.acks) == 1)
        writer = app[WRITER]
        assert writer._since_check[doc.space] == (4, sum(map(len, [*earlier, update])))
        assert writer.log_snapshots == 0 and not writer._snapshots
        await peer.close()


def device_of(server: InProcessServer, tmp_path: Path) -> Device:
    """A weft client device of project acme/site on ``server``, without a poller."""
    return Device(
        tmp_path / "device", server.ws_url, "acme", "site", max_backoff=0.2, poll_seconds=None
    )


async def commit_behind_the_watcher(
    app: web.Application, path: str, text: str
) -> tuple[Room, Appended]:
    """Stop the room's watcher of ``path`` (as if SQLite's cross-process poll had not
    come round yet), then commit ``text`` as another instance would (its session id
    does not start with this instance's): the room does not have it."""
    history = app[HISTORY]
    doc = await history.doc("acme", "site", path)
    room = app[ROOMS].get(doc)
    assert room is not None and room.watcher is not None
    room.watcher.cancel()
    source: Doc[Any] = Doc()
    source.get("content", type=Text).insert(0, text)
    (appended,) = await history.append([Append(doc, source.get_update(), "bob", "1", "other/1")])
    return room, appended


async def test_a_weft_probe_is_answered_with_every_update_up_to_the_head(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A weft client's SyncStep1 proves it holds everything up to a head it read before
    asking (its base for offline edits), so the room first applies what the store holds
    up to the head, even when another instance's commit has not woken its watcher yet.
    That lag is made certain here by stopping the room's watcher (as if SQLite's
    cross-process poll had not come round yet)."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/probed.txt", weft=True)
        room, _ = await commit_behind_the_watcher(app, "probed.txt", "from another instance")
        await peer.send(SyncStep1(peer.doc.get_state()))
        await peer.wait_text("from another instance", timeout=2.0)
        assert str(room.doc.get("content", type=Text)) == "from another instance"
        await peer.close()


async def test_an_acked_update_moves_a_devices_base_only_with_what_came_before_it(
    tmp_path: Path,
) -> None:
    """Another instance commits X, then this device's own edit is acked at a later
    versionstamp while X has not reached this instance's room yet (its watcher stopped
    here, as if SQLite's cross-process poll had not come round): the device's base may
    only pass X once X is in its document, or its next offline edit of X's line would
    not be judged against X."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        device = device_of(server, tmp_path)
        async with device:
            entry = await device.open("acked.txt")
            entry.text.insert(0, "mine\n")
            await device.sync(10)
            _, other = await commit_behind_the_watcher(app, "acked.txt", "theirs\n")
            entry.text.insert(len(entry.text), "more of mine\n")
            await device.sync(10)
            assert entry.base is not None and entry.base > other.versionstamp
            assert "theirs\n" in str(entry.text)


async def probe_answer(peer: YPeer) -> SyncStep2:
    """Send a probe (SyncStep1 with the peer's state) and wait for its SyncStep2."""
    seen = len(peer.received)
    await peer.send(SyncStep1(peer.doc.get_state()))
    await peer.until(lambda: any(isinstance(m, SyncStep2) for m in peer.received[seen:]))
    return next(m for m in peer.received[seen:] if isinstance(m, SyncStep2))


async def test_a_probe_the_room_could_not_catch_up_for_is_refused_not_answered(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The log cannot be read (the store fails here): an answer would prove a head the
    room may lack, so the connection is closed with 1013 (the client tries again)."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/failing.txt", weft=True)
        history = app[HISTORY]
        await commit_behind_the_watcher(app, "failing.txt", "from another instance")

        async def failing(*args: Any, **kwargs: Any) -> Any:
            raise StoreError("read failed: database is locked")

        history.updates = failing  # type: ignore[method-assign]
        with pytest.raises(ConnectionClosed) as closed:
            await probe_answer(peer)
        assert closed.value.code == 1013


async def test_a_probe_answer_holds_this_instances_commits_durable_before_it(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """b's update is durable (in the head anyone reads) but its commit has not been
    reported to the writer yet (held back here, as a slow thread hand-off would): a
    probe that comes meanwhile is answered only once it is in the room."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        url = f"{server.ws_url}/acme/site/own.txt"
        a = await YPeer.connect(http, url, weft=True)
        b = await YPeer.connect(http, url, weft=True)
        history = app[HISTORY]
        doc = await history.doc("acme", "site", "own.txt")
        kv: Any = history.kv  # SQLite: it has transact_then
        transact_then, held = kv.transact_then, asyncio.Event()

        def reported_late(fn: Any, callback: Callable[[Any], None]) -> None:
            def late(outcome: Any) -> None:
                if held.is_set():
                    callback(outcome)
                    return
                held.set()
                asyncio.get_running_loop().call_later(0.5, callback, outcome)  # not reported

            transact_then(fn, late)

        kv.transact_then = reported_late
        await b.append("from b")
        await held.wait()
        assert await history.head(doc) is not None  # a client could read this head
        await probe_answer(a)
        assert str(a.text) == "from b"


async def test_a_device_typing_sends_one_confirming_probe_per_pause(tmp_path: Path) -> None:
    """Acked edits are confirmed by a probe (one KV read on the server) once the link
    has been quiet a moment, not after every keystroke."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        rooms = app[ROOMS]
        catch_up, calls = rooms.catch_up_to_head, [0]

        async def counted(room: Room) -> bool:
            calls[0] += 1
            return await catch_up(room)

        rooms.catch_up_to_head = counted  # type: ignore[method-assign]
        device = device_of(server, tmp_path)
        async with device:
            entry = await device.open("typed.txt")
            await device.sync(10)
            before = calls[0]
            for _ in range(20):
                entry.text.insert(len(entry.text), "x")
                await asyncio.sleep(0.1)  # 10 keystrokes a second, each acked in between
            await device.sync(10)
            assert calls[0] - before <= 2
            assert entry.base is not None and entry.base == entry.head_seen


async def test_a_reconnect_proves_what_an_unanswered_confirmation_would_have(
    tmp_path: Path,
) -> None:
    """The connection drops after the acks, before their confirming probe: the next
    connection's first answer proves the acked versionstamp (else the base stayed
    behind updates the device holds, and a later offline edit made false conflicts)."""
    app = create_app(settings(tmp_path))
    async with serve_in_process(app) as server:
        device = device_of(server, tmp_path)
        async with device:
            entry = await device.open("dropped.txt")
            entry.text.insert(0, "one\n")
            await device.sync(10)
            first = entry.base
            entry.text.insert(len(entry.text), "two\n")
            await until(lambda: entry.link.confirm is not None, 5.0)  # acked, not confirmed
            await entry.link.disconnect()
            await device.sync(10)
            assert entry.base is not None and first is not None and entry.base > first
            assert entry.base == entry.head_seen
