"""The client library (:class:`client.device.Device`) against a real server process."""

from __future__ import annotations

import asyncio
import shutil
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Text

from client import device as device_module
from client.connection import DocLink
from client.device import (
    DataDirBusy,
    Device,
    DeviceClosed,
    DeviceFailed,
    DeviceNotStarted,
    DeviceUnusable,
    DocumentsFailed,
    Event,
    Listener,
)
from client.remote import ApiError
from client.testing import get_json, get_text
from crdt.codec import SyncStep1
from crdt.errors import BadPath
from crdt.records import Snapshot
from crdt.replaying import _replay_reads
from server.auth import issue_token
from server.testing import ServerProcess, StartServer, call_api

pytestmark = pytest.mark.functional

SECRET = "device-test-secret-0123456789abcdef"


class Events(Listener):
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def event(self, event: Event) -> None:
        self.seen.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.seen]


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def text_of(doc: Any) -> Text:
    text: Text = doc.get("content", type=Text)
    return text


def server_text(server: ServerProcess, project: str, path: str, token: str | None = None) -> str:
    url = f"{server.url}/api/v1/acme/{project}/docs/{urllib.parse.quote(path)}"
    return get_text(url, token) or ""


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def make(tmp_path: Path, server: ServerProcess, name: str, project: str, **kwargs: Any) -> Device:
    return Device(
        tmp_path / name, server.ws_url, "acme", project, max_backoff=0.3, poll_seconds=0.1, **kwargs
    )


async def test_offline_edits_survive_a_restart_and_are_sent_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with make(tmp_path, server, "a", "restart") as device:
        text = text_of(await device.doc("notes.md"))
        text.insert(0, "first\n")
        await device.sync(10)
        await device.pause()
        for word in ("second\n", "third\n", "fourth\n"):
            text.insert(len(text), word)  # three offline edits, three updates
        await device.recorded()
        assert device.pending() == 3
    assert server_text(server, "restart", "notes.md") == "first\n"

    async with make(tmp_path, server, "a", "restart") as device:
        entry = await device.open("notes.md", connect=False)
        assert len(entry.outbox) == 3  # the outbox came back from the local history
        assert str(entry.text) == "first\nsecond\nthird\nfourth\n"
        entry.link.want()
        await device.sync(10)
        assert device.pending() == 0
    assert server_text(server, "restart", "notes.md") == "first\nsecond\nthird\nfourth\n"


async def test_remote_updates_are_kept_locally_for_offline_work(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with make(tmp_path, server, "a", "local") as a, make(tmp_path, server, "b", "local") as b:
        text_of(await a.doc("x.txt")).insert(0, "from a\n")
        await a.sync(10)
        doc_b = await b.doc("x.txt")
        await eventually(lambda: str(text_of(doc_b)) == "from a\n")
        await b.sync(10)
    # b reopens with no server at all: everything it received is there
    offline = Device(tmp_path / "b", "ws://127.0.0.1:9", "acme", "local", poll_seconds=None)
    async with offline:
        assert str(text_of(await offline.doc("x.txt"))) == "from a\n"


def offline(tmp_path: Path, name: str) -> Device:
    return Device(tmp_path / name, "ws://127.0.0.1:9", "acme", "local", poll_seconds=None)


async def test_a_sync_gives_up_on_an_unreachable_server_though_accepted_meanwhile(
    tmp_path: Path,
) -> None:
    """offline_patience (weft sync --once) ends a sync whose server does not answer,
    also when the server accepted the device once while it probed (a heads read the
    server answered while its health probe failed, as when draining): that cleared the
    waiting time for good, and the sync waited for ever (found in a review)."""
    device = Device(
        tmp_path / "d",
        "ws://127.0.0.1:9",
        "acme",
        "local",
        poll_seconds=None,
        max_backoff=0.1,
        offline_patience=0.5,
    )
    async with device:
        await device.open("x.txt")
        syncing = asyncio.ensure_future(device.sync(20))
        await asyncio.sleep(0.2)  # probing: nothing listens on port 9
        device.accepted()  # as a heads read answered meanwhile would
        with pytest.raises(DeviceFailed, match="unreachable for"):
            await syncing


async def local_log(device: Device, path: str) -> tuple[Snapshot | None, int]:
    """The latest snapshot of ``path`` in the device's local history, and how many
    updates follow it there (what opening the document replays)."""
    ref = await device.history.doc("acme", "local", path)
    snapshot, _, records = await device.history.kv.read(lambda tr: _replay_reads(tr, ref, None))
    return snapshot, len(records)


async def test_a_few_big_edits_per_run_get_the_local_history_snapshotted(
    tmp_path: Path,
) -> None:
    """Snapshots of the local history are due by bytes too, counted from what the load
    found after the latest snapshot: counted in updates, from 0 in each run, a document
    edited a few times per run never got one, and every start replayed all of it."""
    for run in range(2):
        async with offline(tmp_path, "a") as device:
            device.history.snapshot_bytes = 150_000
            text = text_of(await device.doc("big.md"))
            text.insert(len(text), "xy"[run] * 100_000)  # one update per run
            await device.recorded()
            await asyncio.gather(*device.recorder.snapshots)
            snapshot, records = await local_log(device, "big.md")
    assert snapshot is not None and snapshot.count == 2 and records == 0
    async with offline(tmp_path, "a") as device:
        assert str(text_of(await device.doc("big.md"))) == "x" * 100_000 + "y" * 100_000


async def test_opening_a_document_due_for_a_snapshot_writes_it(tmp_path: Path) -> None:
    """The history of a device that never snapshotted it gets its snapshot from the next
    load's replay (no second build), and the next start replays nothing."""
    async with offline(tmp_path, "a") as device:
        text = text_of(await device.doc("big.md"))
        for part in ("x", "y"):
            text.insert(len(text), part * 100_000)
        await device.recorded()
        assert await local_log(device, "big.md") == (None, 2)
    async with offline(tmp_path, "a") as device:
        device.history.snapshot_bytes = 150_000
        entry = await device.open("big.md", connect=False)
        assert str(entry.text) == "x" * 100_000 + "y" * 100_000
        assert (entry.since_snapshot, entry.since_snapshot_bytes) == (0, 0)
        snapshot, records = await local_log(device, "big.md")
        assert snapshot is not None and snapshot.count == 2 and records == 0


async def test_base_follows_what_the_device_has_seen(server: ServerProcess, tmp_path: Path) -> None:
    """b rewrites, offline, a line it received from a: not a conflict. Then a and b both
    rewrite the same line offline: one conflict."""
    project = "bases"
    conflicts_url = f"{server.url}/api/v1/acme/{project}/conflicts"
    async with make(tmp_path, server, "a", project) as a, make(tmp_path, server, "b", project) as b:
        ta = text_of(await a.doc("f.txt"))
        ta.insert(0, "one\ntwo\nthree\n")
        await a.sync(10)
        entry_b = await b.open("f.txt")
        tb = entry_b.text
        await eventually(lambda: str(tb) == "one\ntwo\nthree\n")
        ta.insert(3, " by a")
        await a.sync(10)
        a_head = a.entries["f.txt"].base
        await eventually(lambda: str(tb) == "one by a\ntwo\nthree\n")
        await eventually(lambda: entry_b.base == a_head)  # the poller's probe moved it

        await b.pause()
        tb.insert(len("one by a"), " and b")
        b.resume()
        await b.sync(10)
        await eventually(lambda: str(ta) == "one by a and b\ntwo\nthree\n")
        await asyncio.sleep(0.3)
        assert get_json(conflicts_url)["conflicts"] == []

        await a.pause()
        await b.pause()
        ta.insert(len("one by a and b\ntwo"), " (a)")
        tb.insert(len("one by a and b\ntwo"), " (b)")
        a.resume()
        await a.sync(10)
        b.resume()
        await b.sync(10)
        record = await _the_one_record(ta, tb, conflicts_url)
        assert {record["regions"][0]["ours_text"], record["regions"][0]["theirs_text"]} == {
            "two (a)\n",
            "two (b)\n",
        }


def late_device(
    tmp_path: Path, server: ServerProcess, project: str, poll: float | None, **kwargs: Any
) -> Device:
    """A device whose poller reads the heads at start, then not for an hour (or never)."""
    return Device(
        tmp_path / "late",
        server.ws_url,
        "acme",
        project,
        max_backoff=0.3,
        poll_seconds=poll,
        **kwargs,
    )


def slow_heads(device: Device, gate: asyncio.Event | None = None, delay: float = 0.0) -> None:
    """The device's heads reads answer late: after ``gate`` is set, or ``delay`` seconds
    (the real read, its answer held back)."""
    read = device.api.heads

    async def held_back() -> dict[str, Any]:
        heads = await read()
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(delay)
        return heads

    device.api.heads = held_back  # type: ignore[method-assign]


async def written_after_b_read_the_heads(a: Device, b: Device, path: str, text: str) -> Text:
    """a writes ``text`` to a new doc ``path`` after b's poller (if any) read the heads."""
    if b.poll_seconds is not None:
        await eventually(b.heads_read.is_set)
    written = text_of(await a.doc(path))
    written.insert(0, text)
    await a.sync(10)
    return written


@pytest.mark.parametrize("poll_seconds", [3600.0, None])
async def test_a_document_opened_before_its_head_was_read_learns_its_base(
    server: ServerProcess, tmp_path: Path, poll_seconds: float | None
) -> None:
    """b reads the heads at start, before a creates the doc, and would not read them
    again for an hour (or never): it still learns the base of the state it synced, so
    its offline edit of a line a also edited offline is a conflict. Then a doc that was
    empty when b opened it, and that a writes to later, gets its base too."""
    project = f"late-base-{poll_seconds}"
    conflicts_url = f"{server.url}/api/v1/acme/{project}/conflicts"
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, poll_seconds)
    async with a, b:
        ta = await written_after_b_read_the_heads(a, b, "f.txt", "one\ntwo\nthree\n")
        entry_b = await b.open("f.txt")
        await b.sync(10)
        assert str(entry_b.text) == "one\ntwo\nthree\n"
        assert entry_b.base is not None and entry_b.base == a.entries["f.txt"].base

        await a.pause()
        await b.pause()
        ta.insert(len("one\ntwo"), " (a)")
        entry_b.text.insert(len("one\ntwo"), " (b)")
        a.resume()
        await a.sync(10)
        b.resume()
        await b.sync(10)
        await eventually(lambda: str(ta) == str(entry_b.text))
        await eventually(lambda: len(get_json(conflicts_url)["conflicts"]) == 1)

        empty_b = await b.open("g.txt")
        await b.sync(10)
        assert empty_b.base is None  # nothing on the server: nothing to base edits on
        tg = text_of(await a.doc("g.txt"))
        tg.insert(0, "from a\n")
        await a.sync(10)
        await eventually(lambda: str(empty_b.text) == "from a\n")
        await b.sync(10)
        assert empty_b.base == a.entries["g.txt"].base


async def test_a_heads_read_ending_while_a_held_open_loads_does_not_connect_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A heads read that ends after an open with ``connect=False`` has loaded the
    document but before the opener has it (here: at once when the load is done) does not
    connect it. It did (the path was marked held only then): under load, ``weft sync``
    starting up merged another device's edit into a document before taking in the file's
    offline emptying, sent as a live edit with no conflict record
    (tests/integration/test_sync_offline_branches.py)."""
    project = "held-while-loading"
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, None)
    async with a, b:
        await written_after_b_read_the_heads(a, b, "f.txt", "from a\n")
        heads = await b.read_heads()
        assert heads is not None and heads["f.txt"] is not None
        opening = asyncio.ensure_future(b.open("f.txt", connect=False))
        await asyncio.sleep(0)  # the opener started the load
        b._opening["f.txt"].add_done_callback(lambda _: b._follow(heads, b.heads_reads))
        entry = await opening
        await asyncio.sleep(0.3)
        assert (entry.link.wanted, str(entry.text)) == (False, "")
        await b.open("f.txt")
        await b.sync(10)
        assert str(entry.text) == "from a\n"


@pytest.mark.parametrize("poll", [3600.0, None])
async def test_a_server_update_before_the_first_answer_still_leads_to_a_base(
    server: ServerProcess, tmp_path: Path, poll: float | None
) -> None:
    """An update of another device reaches b after the server's SyncStep1 but before
    the answer to b's own (held back here), and the heads read it triggers is over
    before that answer: b still learns its base."""
    project = f"early-update-{poll}"
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, poll)
    async with a, b:
        ta = await written_after_b_read_the_heads(a, b, "f.txt", "one\n")
        entry = await b.open("f.txt", connect=False)
        link, send, gate = entry.link, entry.link._send, asyncio.Event()

        async def sync_step1_held_back(ws: Any, message: Any) -> None:
            if isinstance(message, SyncStep1) and not gate.is_set():
                await gate.wait()
            await send(ws, message)

        link._send = sync_step1_held_back  # type: ignore[method-assign]
        reads = b.heads_reads
        link.want()
        await eventually(lambda: link.connected)
        ta.insert(0, "zero\n")
        await a.sync(10)
        await eventually(lambda: entry.base_wanted and b.heads_reads > reads)
        await asyncio.sleep(0.3)  # that heads read is over
        gate.set()
        await b.sync(10)
        assert str(entry.text) == "zero\none\n"
        assert entry.base == a.entries["f.txt"].base


async def test_a_base_asked_for_during_a_heads_read_gets_a_read_of_its_own(
    server: ServerProcess, tmp_path: Path
) -> None:
    """No poller: y asks for its base while x's heads read is under way, and y's first
    update came after that read: another read follows, and y learns its base."""
    project = "asked-during-a-read"
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, None)
    async with a, b:
        entry_y = await b.open("y.txt")
        await b.sync(10)
        tx = text_of(await a.doc("x.txt"))
        tx.insert(0, "x\n")
        await a.sync(10)
        gate = asyncio.Event()
        slow_heads(b, gate)
        entry_x = await b.open("x.txt")
        await eventually(lambda: b.heads_reads == 1)
        ty = text_of(await a.doc("y.txt"))
        ty.insert(0, "y\n")
        await a.sync(10)
        await eventually(lambda: str(entry_y.text) == "y\n" and entry_y.base_wanted)
        gate.set()
        await b.sync(10)
        assert entry_x.base == a.entries["x.txt"].base
        assert entry_y.base == a.entries["y.txt"].base


@pytest.mark.parametrize("poll", [3600.0, None])
async def test_a_failing_heads_read_does_not_hold_up_sync(
    server: ServerProcess, tmp_path: Path, poll: float | None
) -> None:
    """The document list answers 500: the device says so, and its sync completes
    without a base (there is none to learn now) instead of waiting for good; the base
    is still wanted, so once the list answers again a sync learns it (the mark was
    cleared, leaving the base stale; found in a review)."""
    project = f"heads-fail-{poll}"
    events = Events()
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, poll, listener=events)
    async with a, b:
        await written_after_b_read_the_heads(a, b, "f.txt", "one\n")

        async def failing() -> dict[str, Any]:
            raise ApiError(500, "internal", "internal error: boom")

        heads = b.api.heads
        b.api.heads = failing  # type: ignore[method-assign]
        entry = await b.open("f.txt")
        await b.sync(10)
        assert str(entry.text) == "one\n"
        assert entry.base is None and entry.base_wanted and not entry.base_awaited()
        assert any("document list failed" in e.message for e in events.seen)
        b.api.heads = heads  # type: ignore[method-assign]
        await b.sync(10)
        assert entry.base == a.entries["f.txt"].base and not entry.base_wanted


@pytest.mark.parametrize("poll", [3600.0, None])
async def test_an_idle_closing_link_waits_for_its_base(
    server: ServerProcess, tmp_path: Path, poll: float | None
) -> None:
    """weft sync --once closes idle links at once (idle_seconds=0): a link waiting for
    its base (heads answered 300 ms late) is not idle."""
    project = f"idle-base-{poll}"
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, poll, idle_seconds=0.0)
    async with a, b:
        await written_after_b_read_the_heads(a, b, "f.txt", "one\n")
        slow_heads(b, delay=0.3)
        entry = await b.open("f.txt")
        await b.sync(10)
        assert entry.base == a.entries["f.txt"].base


async def test_a_link_closed_when_idle_closes_its_connection_on_the_server(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """An idle link's close used to stop at its first step (the reader it woke
    cancelled it): no close frame, the socket left open, so the server kept the
    connection (against the tenant's connection quota, its room loaded) until the
    device stopped."""
    server = weft_server_factory()
    device = make(tmp_path, server, "a", "idle-close", idle_seconds=0.1)

    def connections() -> float:
        metrics = get_text(f"{server.url}/metrics") or ""
        return sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("weft_connections ")
        )

    async with device:
        for name in ("a.txt", "b.txt", "c.txt"):
            text_of((await device.open(name)).doc).insert(0, f"{name}\n")
        await device.sync(10)
        entries = list(device.entries.values())
        await eventually(lambda: all(not e.link.connected for e in entries))
        await eventually(lambda: connections() == 0, timeout=5)
        assert server_text(server, "idle-close", "b.txt") == "b.txt\n"


def rewrite_line(text: Text, old: str, new: str) -> None:
    start = str(text).index(old)
    del text[start : start + len(old)]
    text.insert(start, new)


@pytest.mark.parametrize("poll", [3600.0, None])
async def test_a_server_update_received_live_moves_the_base(
    server: ServerProcess, tmp_path: Path, poll: float | None
) -> None:
    """Found in CI (a deletion judged against an edit its device had written): b
    received a's edit as a live update, and its base stayed where its last probe had
    left it until the poller's next heads read (an hour here, or never). A sync now
    returns only once the base covers what b received, and without a sync the base
    follows after a quiet spell; b's offline deletion is not judged against the edits b
    had seen (no conflict record)."""
    project = f"live-base-{poll}"
    conflicts_url = f"{server.url}/api/v1/acme/{project}/conflicts"
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, poll)
    async with a, b:
        ta = await written_after_b_read_the_heads(a, b, "f.txt", "one\ntwo\nthree\n")
        entry = await b.open("f.txt")
        await b.sync(10)
        assert entry.base == a.entries["f.txt"].base

        rewrite_line(ta, "two\n", "two by a\n")
        await a.sync(10)
        await eventually(lambda: "two by a" in str(entry.text))
        await b.sync(10)  # a sync proves what it received
        assert entry.base == a.entries["f.txt"].base

        rewrite_line(ta, "three\n", "three by a\n")
        await a.sync(10)
        await eventually(lambda: "three by a" in str(entry.text))
        await eventually(lambda: entry.base == a.entries["f.txt"].base, 5)  # no sync

        await b.pause()
        entry.meta["deleted"] = True  # what weft sync does for a deleted file
        b.resume()
        await b.sync(10)
        await eventually(lambda: a.entries["f.txt"].deleted)
        await asyncio.sleep(0.3)
        assert get_json(conflicts_url)["conflicts"] == []


@pytest.mark.parametrize("poll", [3600.0, None])
async def test_an_answer_newer_than_its_probe_moves_the_base(
    server: ServerProcess, tmp_path: Path, poll: float | None
) -> None:
    """The NFD test's CI failure, held open: b reconnects after a edited, and its first
    probe can only prove the base it had (its heads read, answered while the probe was
    on its way, asked for no other). The answer brings a's edit: b's sync now returns
    only once a probe proved it, so b's offline deletion is not judged against an edit
    b had seen (no conflict record, the document stays deleted)."""
    project = f"answer-base-{poll}"
    conflicts_url = f"{server.url}/api/v1/acme/{project}/conflicts"
    async with make(tmp_path, server, "a", project) as a:
        async with late_device(tmp_path, server, project, poll) as b:
            ta = await written_after_b_read_the_heads(a, b, "f.txt", "one\ntwo\n")
            entry = await b.open("f.txt")
            await b.sync(10)
            assert entry.base == a.entries["f.txt"].base
        rewrite_line(ta, "two\n", "two by a\n")
        await a.sync(10)

        async with late_device(tmp_path, server, project, poll) as b:
            heads_gate, step1_gate = asyncio.Event(), asyncio.Event()
            slow_heads(b, heads_gate)
            entry = await b.open("f.txt", connect=False)
            send = entry.link._send

            async def sync_step1_held_back(ws: Any, message: Any) -> None:
                if isinstance(message, SyncStep1) and not step1_gate.is_set():
                    await step1_gate.wait()
                await send(ws, message)

            entry.link._send = sync_step1_held_back  # type: ignore[method-assign]
            entry.link.want()
            await eventually(lambda: entry.link.connected and bool(entry.link.probes))
            heads_gate.set()  # (the poller's read answers while the probe waits)
            if poll is not None:
                await eventually(b.heads_read.is_set)
            step1_gate.set()
            await b.sync(10)
            assert str(entry.text) == "one\ntwo by a\n"
            assert entry.base == a.entries["f.txt"].base

            await b.pause()
            entry.meta["deleted"] = True  # what weft sync does for a deleted file
            b.resume()
            await b.sync(10)
            await eventually(lambda: a.entries["f.txt"].deleted)
            await asyncio.sleep(0.3)
            assert get_json(conflicts_url)["conflicts"] == []
            assert a.entries["f.txt"].deleted


@pytest.mark.slow
async def test_reconnects_after_the_server_comes_back(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory()
    events = Events()
    async with make(tmp_path, server, "a", "back", listener=events) as device:
        text = text_of(await device.doc("a.txt"))
        text.insert(0, "before\n")
        await device.sync(10)
        server.terminate()
        await eventually(lambda: not device.online)
        text.insert(len(text), "while the server was down\n")
        restarted = weft_server_factory(store=server.store, port=server.port)
        await device.sync(15)
        assert server_text(restarted, "back", "a.txt") == "before\nwhile the server was down\n"
    assert events.kinds().count("online") >= 2 and "offline" in events.kinds()


@pytest.fixture
def auth_server(weft_server_factory: StartServer) -> ServerProcess:
    return weft_server_factory(env={"WEFT_SECRET": SECRET})


def token(scope: str, secret: str = SECRET) -> str:
    return issue_token(
        secret=secret, tenant="acme", projects=None, user="ada", scope=scope, ttl_seconds=600
    )


async def test_read_only_refusal_keeps_edits_local_and_says_so(
    auth_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = token("write")
    async with make(tmp_path, auth_server, "w", "ro", token=writer) as w:
        text_of(await w.doc("a.txt")).insert(0, "written\n")
        await w.sync(10)
    # the device does not guess from the token: the server's refusal is what counts
    monkeypatch.setattr(device_module, "token_scope", lambda _token: None)
    events = Events()
    async with make(tmp_path, auth_server, "r", "ro", token=token("read"), listener=events) as r:
        text = text_of(await r.doc("a.txt"))
        await eventually(lambda: str(text) == "written\n")
        text.insert(0, "local only\n")
        await r.sync(10)
        assert r.read_only and r.pending() == 1
        assert str(text) == "local only\nwritten\n"
    assert "read_only" in events.kinds()
    assert any("local edits stay on this device" in e.message for e in events.seen)
    assert server_text(auth_server, "ro", "a.txt", writer) == "written\n"


async def test_a_read_only_device_keeps_no_copy_of_what_the_server_sends(
    auth_server: ServerProcess, tmp_path: Path
) -> None:
    """A read-only device never answers the server's state vector, and kept every update
    broadcast after it (for comparing with, in ``_answer_restored``, which it never
    runs) for as long as the connection lasted (a review: 202 updates after 200 edits)."""
    async with (
        make(tmp_path, auth_server, "w", "mirror", token=token("write")) as w,
        make(tmp_path, auth_server, "r", "mirror", token=token("read")) as r,
    ):
        tw = text_of(await w.doc("f.txt"))
        tw.insert(0, "start\n")
        await w.sync(10)
        entry = await r.open("f.txt")
        await r.sync(10)
        for n in range(20):
            tw.insert(len(tw), f"line {n}\n")
            await w.sync(10)
        await eventually(lambda: str(entry.text) == str(tw))
        assert r.read_only and entry.link.sent_since == []


async def test_an_expired_token_stops_the_device_and_keeps_its_edits(
    auth_server: ServerProcess, tmp_path: Path
) -> None:
    """The server closes a connection whose token expired (4401 "token expired"): the
    device stops, says why, and what it had not sent yet stays recorded for a restart
    with a new token."""
    short = issue_token(
        secret=SECRET, tenant="acme", projects=None, user="ada", scope="write", ttl_seconds=2
    )
    async with make(tmp_path, auth_server, "e", "expiry", token=short) as device:
        text = text_of(await device.doc("a.txt"))
        text.insert(0, "sent\n")
        await device.sync(10)
        await eventually(lambda: device.failure is not None, 10)
        # 4401 from the open connection; 401 when a reconnect's handshake met it first
        assert device.failure is not None and device.failure.code in (401, 4401)
        assert str(device.failure).endswith("token expired")
        text.insert(len(text), "kept\n")
        await device.recorded()
        assert device.pending() == 1
    async with make(tmp_path, auth_server, "e", "expiry", token=token("write")) as again:
        await again.doc("a.txt")
        await again.sync(10)
    assert server_text(auth_server, "expiry", "a.txt", token("write")) == "sent\nkept\n"


async def test_a_refused_token_fails_the_device(auth_server: ServerProcess, tmp_path: Path) -> None:
    bad = token("write", secret="not-the-server-secret-0123456789")
    async with make(tmp_path, auth_server, "x", "denied", token=bad) as device:
        await device.doc("a.txt")
        with pytest.raises(DeviceFailed) as failure:
            await device.sync(10)
    assert failure.value.code in (401, 4401)


@pytest.mark.slow
async def test_a_server_that_lost_acknowledged_updates_gets_them_back(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """The answer to the server's SyncStep1 carries what the server lacks, outbox or not:
    a server restored from an older backup (here: an empty store) is healed."""
    server = weft_server_factory()
    async with make(tmp_path, server, "a", "heal") as device:
        text = text_of(await device.doc("kept.txt"))
        text.insert(0, "acknowledged long ago\n")
        await device.sync(10)
        assert device.pending() == 0
        server.terminate()
        await eventually(lambda: not device.online)
        empty = weft_server_factory(port=server.port, workdir=tmp_path / "fresh-store")
        await eventually(lambda: server_text(empty, "heal", "kept.txt") != "", 15)
        assert server_text(empty, "heal", "kept.txt") == "acknowledged long ago\n"


async def test_a_server_restored_from_a_backup_gets_what_it_lost_before_a_new_edit(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """The server is restored from a backup that lacks an update the device had acked;
    the device then makes a new edit. Its answer to the server's SyncStep1 carried only
    the new edit, which depends on the lost one: the server held it pending, kept the
    backup's text, and a sync said "in sync" (found in a walkthrough). The answer now
    carries everything the server's state vector shows it lacks."""
    store = tmp_path / "store"
    backup = tmp_path / "backup"
    url = f"sqlite:///{store / 'weft.db'}"
    server = weft_server_factory(store=url, workdir=store)
    port = server.port
    async with make(tmp_path, server, "a", "restored") as device:
        text = text_of(await device.doc("doc.md"))
        text.insert(0, "line one\nline two\n")
        await device.sync(10)
        server.terminate()
        shutil.copytree(store, backup, ignore=shutil.ignore_patterns("*.log"))
        server = weft_server_factory(store=url, workdir=store, port=port)
        text.insert(len(text), "line three\n")
        await device.sync(10)
        assert server_text(server, "restored", "doc.md").endswith("line three\n")
        server.terminate()
        for name in ("weft.db", "weft.db-wal", "weft.db-shm"):
            (store / name).unlink(missing_ok=True)
            if (backup / name).exists():
                shutil.copy2(backup / name, store / name)
        server = weft_server_factory(store=url, workdir=store, port=port)
        assert server_text(server, "restored", "doc.md") == "line one\nline two\n"
        text.insert(len(text), "line four\n")
        await device.sync(15)
        assert device.pending() == 0
        assert server_text(server, "restored", "doc.md") == (
            "line one\nline two\nline three\nline four\n"
        )


async def test_one_data_directory_one_device(server: ServerProcess, tmp_path: Path) -> None:
    async with make(tmp_path, server, "a", "busy"):
        with pytest.raises(DataDirBusy, match="in use by another Device of this process"):
            await make(tmp_path, server, "a", "busy").start()
    async with make(tmp_path, server, "a", "busy") as again:  # released on close
        assert again.device_id
    data_dir = make(tmp_path, server, "a", "busy").data_dir
    holder = await asyncio.create_subprocess_exec(  # another process holds the folder
        sys.executable,
        "-c",
        "import sys, pathlib; from client.state import lock_data_dir; "
        "lock = lock_data_dir(pathlib.Path(sys.argv[1])); print('held', flush=True); "
        "sys.stdin.read()",
        str(data_dir / "lock"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],  # this checkout's client package
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"held\n"
        with pytest.raises(DataDirBusy, match="in use by another weft process"):
            await make(tmp_path, server, "a", "busy").start()
    finally:
        holder.kill()
        await holder.wait()


async def test_a_change_too_big_to_record_does_not_hold_up_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local change over the one-update limit can never be appended; it used to stay
    at the head of the recorder's queue, so no later change of any document was ever
    recorded (and closing dropped them all)."""
    import crdt.history as history_module
    from client import recorder as recorder_module
    from server.testing import free_port

    for module in (recorder_module, history_module):  # the store's limit, made small
        monkeypatch.setattr(module, "MAX_UPDATE_BYTES", 50_000)
    url = f"ws://127.0.0.1:{free_port()}"  # offline: nothing listens there
    device = Device(tmp_path / "dev", url, "acme", "p", max_backoff=0.2, poll_seconds=None)
    async with device:
        (await device.doc("big.txt")).get("content", type=Text).insert(0, "x" * 60_000)
        (await device.doc("small.txt")).get("content", type=Text).insert(0, "precious edit")
        await asyncio.wait_for(device.recorder.recorded(), 5)
    again = Device(tmp_path / "dev", url, "acme", "p", max_backoff=0.2, poll_seconds=None)
    async with again:
        assert str((await again.doc("small.txt")).get("content", type=Text)) == "precious edit"


async def an_offline_edit_of_line_3(device: Device) -> tuple[Any, Text, int]:
    """Ten lines synced, then offline: line 3 rewritten and recorded. The doc, its text
    and where line 3 starts."""
    base_text = "".join(f"line {i}\n" for i in range(1, 11))
    doc = await device.doc("notes.txt")
    text = doc.get("content", type=Text)
    text.insert(0, base_text)
    await device.sync(10)
    await device.pause()
    at = base_text.index("line 3")
    with doc.transaction():
        del text[at : at + 6]
        text.insert(at, "line 3 edited offline")
    await device.recorded()
    return doc, text, at


def lose_the_first_ack(
    monkeypatch: pytest.MonkeyPatch, then: Callable[[Any], Awaitable[Any]]
) -> tuple[list[Any], list[asyncio.Future[Any]]]:
    """The first ack a document link receives is lost, and ``then(link)`` runs (e.g.
    the connection drops with it). The acks lost, and the futures of ``then``."""
    from client import connection as connection_module
    from crdt.codec import Ack

    receive = connection_module.DocLink._receive
    dropped: list[Ack] = []
    cuts: list[asyncio.Future[Any]] = []

    def losing_the_first_ack(self: Any, message: Any) -> Any:
        if isinstance(message, Ack) and not dropped:
            dropped.append(message)
            cuts.append(asyncio.ensure_future(then(self)))
            return False
        return receive(self, message)

    monkeypatch.setattr(connection_module.DocLink, "_receive", losing_the_first_ack)
    return dropped, cuts


async def test_an_offline_edit_resent_after_a_lost_ack_is_not_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the server committed an offline update and before its
    ack arrived; the device sends it again (stored once: a duplicate). Only this device
    ever edited the document, so nothing may be recorded as a conflict."""
    from server.app import create_app
    from server.config import Settings
    from server.testing import client_session, serve_in_process, until

    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server, client_session() as http:
        device = Device(
            tmp_path / "dev", server.ws_url, "acme", "site", max_backoff=0.2, poll_seconds=0.1
        )
        async with device:
            await an_offline_edit_of_line_3(device)
            dropped, _ = lose_the_first_ack(monkeypatch, lambda link: link.disconnect())
            device.resume()
            await until(lambda: bool(dropped), 10)
            await device.sync(10)
            await asyncio.sleep(0.5)  # a conflict is recorded once the branch ends
        async with http.get(f"{server.url}/api/v1/acme/site/conflicts") as response:
            assert (await response.json())["conflicts"] == []


async def test_offline_edits_merged_past_the_servers_limit_are_sent_one_by_one(
    tmp_path: Path,
) -> None:
    """The outbox merges pending updates into one send; a tenant whose update limit is
    below the merged size refuses it (1009). Each update fits on its own: the link sends
    them one at a time instead of failing the document for good."""
    from server.app import create_app
    from server.config import Settings
    from server.testing import serve_in_process

    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}", max_update_bytes=2000))
    async with serve_in_process(app) as server:
        device = Device(
            tmp_path / "dev", server.ws_url, "acme", "p", max_backoff=0.2, poll_seconds=0.1
        )
        async with device:
            doc = await device.doc("a.txt")
            text = doc.get("content", type=Text)
            text.insert(0, "start\n")
            await device.sync(10)
            await device.pause()
            for n in range(5):
                text.insert(len(text), f"{n}" * 600 + "\n")  # ~620 bytes each, 3 kB merged
            await device.recorded()
            device.resume()
            await device.sync(10)
            assert device.pending() == 0
            assert str(text).count("\n") == 6


async def test_an_offline_branch_sent_over_two_connections_is_not_a_conflict_with_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device sends its first offline edit; the connection drops before the ack and
    the device stays offline a while longer, editing the same line again. Its next
    connection sends both edits (merged, new bytes) on the same base. Both parts are
    this device's: nothing may be recorded as a conflict. (Before the device said who
    it was, the second part was judged against the first as if another device made it.)
    Another device's overlapping edit is still a conflict, and the record names the
    device as ``clients``."""
    from server.app import create_app
    from server.config import Settings
    from server.testing import client_session, serve_in_process, until

    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server, client_session() as http:
        device = Device(
            tmp_path / "dev", server.ws_url, "acme", "site", max_backoff=0.2, poll_seconds=0.1
        )
        async with device:
            doc, text, at = await an_offline_edit_of_line_3(device)
            dropped, cuts = lose_the_first_ack(monkeypatch, lambda _link: device.pause())
            device.resume()
            await until(lambda: bool(dropped), 10)
            await asyncio.gather(*cuts)
            with doc.transaction():
                del text[at : at + len("line 3 edited offline")]
                text.insert(at, "line 3 edited offline, twice")
            await device.recorded()
            device.resume()
            await device.sync(10)
            await asyncio.sleep(0.5)  # a conflict is recorded once the branch ends
            async with http.get(f"{server.url}/api/v1/acme/site/conflicts") as response:
                assert (await response.json())["conflicts"] == []
            # Another device's overlapping offline edit is still a conflict.
            other = Device(
                tmp_path / "other", server.ws_url, "acme", "site", max_backoff=0.2, poll_seconds=0.1
            )
            async with other:
                theirs = await other.doc("notes.txt")
                await other.sync(10)
                # Its edits below are a branch once it knows the head it starts from.
                await eventually(lambda: other.entries["notes.txt"].base is not None)
                await other.pause()
                await device.pause()
                for dev, d, words in ((device, doc, "mine"), (other, theirs, "theirs")):
                    t = d.get("content", type=Text)
                    start = str(t).index("line 3")
                    with d.transaction():
                        del t[start : start + len("line 3 edited offline, twice")]
                        t.insert(start, f"line 3 is {words}")
                    await dev.recorded()
                device.resume()
                await device.sync(10)
                other.resume()
                await other.sync(10)
            conflicts: list[Any] = []
            for _ in range(200):  # detected off the hot path once the branch ends
                async with http.get(f"{server.url}/api/v1/acme/site/conflicts") as response:
                    conflicts = (await response.json())["conflicts"]
                if conflicts:
                    break
                await asyncio.sleep(0.05)
            [record] = conflicts
            assert record["ours"]["clients"] == [other.device_id]
            assert record["theirs"]["clients"] == [device.device_id]


async def test_a_document_still_loading_when_its_opener_is_cancelled_ends_before_close(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A load is shielded from its openers: cancelling the only one (a workspace closing)
    forgot the load, which went on reading the local history after close had closed it
    ("engine is not open"), and the next opener started a second load."""
    device = make(tmp_path, server, "a", "loading")
    loads: list[str] = []
    ended: list[str] = []
    async with device:
        load = device.history.load

        async def slow_load(ref: Any) -> Any:
            loads.append(ref.path)
            try:
                await asyncio.sleep(0.3)  # the real load, late
                return await load(ref)
            finally:
                ended.append(ref.path)

        device.history.load = slow_load  # type: ignore[method-assign, assignment]
        opener = asyncio.create_task(device.open("x.txt"))
        await eventually(lambda: loads == ["x.txt"])
        opener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opener
        await device.open("x.txt")  # the same load, not a second one
        assert loads == ["x.txt"]
        opener = asyncio.create_task(device.open("y.txt"))
        await eventually(lambda: loads == ["x.txt", "y.txt"])
        opener.cancel()
    assert ended == ["x.txt", "y.txt"]  # y.txt's load ended before the history closed


async def test_a_document_opened_while_the_device_closes_is_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    """close() cancelled the loads under way from a list taken once, and open() still
    started new ones: a document opened meanwhile (here when close cancels a load) was
    loaded from the local history as it closed. Once closing, open() refuses a document
    not open yet, as an opener whose load close() cancels is refused (DeviceClosed: a
    CancelledError was taken for the caller's own cancellation)."""
    device = make(tmp_path, server, "a", "closing")
    loads: list[str] = []
    late: list[asyncio.Future[Any]] = []
    async with device:
        await device.open("open.txt")
        load = device.history.load

        async def slow_load(ref: Any) -> Any:
            loads.append(ref.path)
            try:
                await asyncio.sleep(0.3)  # the real load, late
                return await load(ref)
            finally:
                late.append(asyncio.ensure_future(device.open("z.txt")))

        device.history.load = slow_load  # type: ignore[method-assign, assignment]
        opener = asyncio.create_task(device.open("x.txt"))
        await eventually(lambda: loads == ["x.txt"])
    with pytest.raises(DeviceClosed):
        await opener
    [opening] = late
    with pytest.raises(DeviceClosed):
        await opening
    assert loads == ["x.txt"]
    with pytest.raises(DeviceClosed):  # open already: refused too (see the next test)
        await device.open("open.txt")


async def test_a_device_used_before_start_or_after_close_says_so_and_close_releases_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A device used before start() raised AttributeError ('history'); after close()
    doc() returned the old document, an edit of it was accepted and lost, sync() timed
    out, a new document got CancelledError, and start() again succeeded, after which
    close() released nothing (the next Device on the folder got DataDirBusy). Now: one
    clear error each, start() after close() is refused, and close() releases all."""
    device = make(tmp_path, server, "a", "lifecycle")
    with pytest.raises(DeviceNotStarted):
        await device.doc("a.md")
    with pytest.raises(DeviceNotStarted):
        await device.sync(1)
    async with device:
        text = text_of(await device.doc("a.md"))
        text.insert(0, "before close\n")
        await device.sync(10)
        with pytest.raises(DeviceUnusable, match="started already"):
            await device.start()
    with pytest.raises(DeviceClosed):
        await device.doc("a.md")  # open before close: refused too
    with pytest.raises(DeviceClosed):
        await device.doc("b.md")
    with pytest.raises(DeviceClosed):
        await device.sync(1)
    with pytest.raises(ExceptionGroup) as edit:  # (pycrdt's form of an observer's error)
        text.insert(0, "EDIT AFTER CLOSE\n")
    assert edit.group_contains(DeviceClosed, match="neither recorded nor sent")
    with pytest.raises(DeviceClosed, match="cannot start again"):
        await device.start()
    await device.close()  # again: nothing to do, no error
    async with make(tmp_path, server, "a", "lifecycle") as again:  # the lock was released
        assert str(text_of(await again.doc("a.md"))) == "before close\n"
        await again.sync(10)
    assert server_text(server, "lifecycle", "a.md") == "before close\n"


@pytest.mark.parametrize("path", [".git/config", "a/.GIT/hooks/x", ".weft/state", "x\u202e.md"])
async def test_doc_refuses_a_path_no_new_document_may_have(
    server: ServerProcess, tmp_path: Path, path: str
) -> None:
    """``Device.doc(".git/config")`` was taken: the edit was kept in the local history,
    the server refused the document (4400, said only as an event) and ``sync()``
    returned as if it had been sent. Now doc() refuses it as the server and weft sync
    do; ``open()`` (a folder workspace's, which decides itself) still takes it."""
    async with make(tmp_path, server, "d", "newpaths") as device:
        with pytest.raises(BadPath, match="not allowed for a new document"):
            await device.doc(path)
        assert await device.known_paths() == []
        text_of(await device.doc("fine.md")).insert(0, "ok")
        await device.sync(10)
        assert (await device.open(path, connect=False)).path == path


async def test_a_sync_with_a_document_the_server_refused_raises_naming_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A document the server refused for good (4400: a new ``.git/config``) counts as
    done, so sync() does not wait for ever; it returned as if every edit had been sent.
    Now it raises DocumentsFailed naming the document, once the others are in sync."""
    async with make(tmp_path, server, "d", "refused") as device:
        refused = await device.open(".git/config")
        refused.text.insert(0, "[core]\n")
        text_of(await device.doc("fine.md")).insert(0, "ok")
        with pytest.raises(DocumentsFailed) as failed:
            await device.sync(10)
        assert list(failed.value.failed) == [".git/config"]
        assert "(4400)" in failed.value.failed[".git/config"]
        assert device.pending() == 1
    assert server_text(server, "refused", "fine.md") == "ok"


async def test_a_close_while_the_device_starts_releases_what_start_took(
    server: ServerProcess, tmp_path: Path
) -> None:
    """close() while start() was opening the stores marked the device closed and released
    nothing: start() went on, its tasks ran, the folder stayed locked (a review). Now
    close() waits for start() to end, then releases everything; a second start() while
    one is under way is refused."""
    device = make(tmp_path, server, "a", "racing")
    starting = asyncio.create_task(device.start())
    await asyncio.sleep(0)  # start() is under way (opening the stores, in threads)
    with pytest.raises(DeviceUnusable, match="started already"):
        await device.start()
    await device.close()
    await starting  # (it ended before close() went on)
    assert all(task.done() for task in device._tasks)
    async with make(tmp_path, server, "a", "racing") as again:  # the lock was released
        assert again.device_id


async def test_a_start_that_failed_may_be_tried_again(
    server: ServerProcess, tmp_path: Path
) -> None:
    """start() refused because the folder was busy took nothing; a second try once it
    is free starts the device (it said "started already", a review)."""
    device = make(tmp_path, server, "a", "retry")
    async with make(tmp_path, server, "a", "retry"):
        with pytest.raises(DataDirBusy):
            await device.start()
    await device.start()
    try:
        await device.sync(10)
    finally:
        await device.close()


async def test_a_sync_waiting_when_the_device_closes_raises(tmp_path: Path) -> None:
    """A sync waiting (here for a server that is not there) when close() ran waited
    until its timeout, and then said only TimeoutError."""
    device = offline(tmp_path, "d")
    async with device:
        text_of(await device.doc("x.txt")).insert(0, "offline\n")
        syncing = asyncio.ensure_future(device.sync(20))
        await asyncio.sleep(0.2)
    with pytest.raises(DeviceClosed):
        await asyncio.wait_for(syncing, 5)


@pytest.mark.parametrize("poll", [3600.0, None])
async def test_a_quiet_document_with_a_deletion_stops_reading_the_heads(
    server: ServerProcess, tmp_path: Path, poll: float | None
) -> None:
    """One device, alone: it writes a line and deletes a character, syncs, then nothing
    happens. Yjs answers every SyncStep1 with the whole delete set, so every probe's
    answer is a non-empty update; counted as server updates received (it was, found in
    a review), each answer asked for another heads read and probe."""
    project = f"quiet-deletion-{poll}"
    device = late_device(tmp_path, server, project, poll)
    async with device:
        entry = await device.open("f.txt")
        entry.text.insert(0, "one\ntwo\n")
        del entry.text[0:1]
        await device.sync(10)
        reads, sent = device.heads_reads, 0
        orig = entry.link.probe

        def counting(head, read=0):  # type: ignore[no-untyped-def]
            nonlocal sent
            sent += 1
            orig(head, read)

        entry.link.probe = counting  # type: ignore[method-assign]
        await asyncio.sleep(4.0)  # quiet: no edit anywhere
        assert (device.heads_reads - reads, sent) == (0, 0)


async def test_a_quiet_document_with_a_deletion_closes_when_idle(
    server: ServerProcess, tmp_path: Path
) -> None:
    """idle_seconds: a link with nothing to do closes (an endless probe loop would keep it
    busy: each answer arming the settle timer again)."""
    project = "quiet-deletion-idle"
    device = make(tmp_path, server, "a", project, idle_seconds=0.3)
    async with device:
        entry = await device.open("f.txt")
        entry.text.insert(0, "one\ntwo\n")
        del entry.text[0:1]
        await device.sync(10)
        await asyncio.sleep(4.0)
        assert not entry.link.connected


async def keep_typing(text: Text, stop: asyncio.Event, every: float = 0.03) -> None:
    while not stop.is_set():
        text.insert(len(text), "x")
        await asyncio.sleep(every)


@pytest.mark.parametrize("every", [0.03, 0.1])
@pytest.mark.parametrize("delay", [0.15])
@pytest.mark.parametrize("poll", [3600.0, None])
async def test_a_sync_returns_while_someone_else_keeps_typing(
    server: ServerProcess, tmp_path: Path, poll: float | None, delay: float, every: float
) -> None:
    """a types a character every 30 or 100 ms; b's heads reads take 150 ms (a WAN round
    trip). MAX_BASE_ROUNDS bounds b's sync to 3 reads of a base others keep moving; it
    counted only probes of _follow's first branch, which needs no update to have arrived
    since the read started: with updates arriving during every read, it never counted,
    and the sync waited for as long as a typed (found in a review)."""
    project = f"typing-{poll}-{delay}-{every}"
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, poll)
    async with a, b:
        ta = text_of(await a.doc("f.txt"))
        ta.insert(0, "one\n")
        await a.sync(10)
        slow_heads(b, delay=delay)
        entry = await b.open("f.txt")
        await b.sync(10)
        stop = asyncio.Event()
        typing = asyncio.create_task(keep_typing(ta, stop, every))
        try:
            await asyncio.sleep(1.0)
            reads = b.heads_reads
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await b.sync(8)
            except TimeoutError:
                pytest.fail(
                    f"b.sync() did not return in 8 s while a typed: {b.heads_reads - reads} "
                    f"heads reads, base_rounds={entry.base_rounds}"
                )
            assert loop.time() - started < 8
        finally:
            stop.set()
            await typing


@pytest.mark.parametrize("poll", [1.0])
async def test_heads_reads_stay_near_the_poll_rate_while_many_documents_change(
    server: ServerProcess, tmp_path: Path, poll: float
) -> None:
    """b has 20 documents open; a rewrites a line in one of them every 50 ms (each
    document every second). b's heads reads (each lists every document of the project)
    stay near its poll rate: every document's settle timer fired on its own, each asking
    for a read (3.4 reads/s at poll 1 s, found in a review); the poll does it now."""
    project = "storm"
    names = [f"d{n}.txt" for n in range(20)]
    a = make(tmp_path, server, "a", project)
    b = late_device(tmp_path, server, project, poll)
    async with a, b:
        texts = []
        for name in names:
            t = text_of(await a.doc(name))
            t.insert(0, "line\n")
            texts.append(t)
        await a.sync(10)
        entries = [await b.open(name) for name in names]
        await b.sync(10)
        probes = 0
        for entry in entries:
            orig = entry.link.probe

            def counting(*args, orig=orig):  # type: ignore[no-untyped-def]
                nonlocal probes
                probes += 1
                orig(*args)

            entry.link.probe = counting  # type: ignore[method-assign]
        reads = b.heads_reads
        seconds = 5.0
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        n = 0
        while loop.time() < end:
            t = texts[n % len(texts)]
            del t[0:1]
            t.insert(0, "L")
            n += 1
            await asyncio.sleep(0.05)
        rate, probe_rate = (b.heads_reads - reads) / seconds, probes / seconds
        assert rate <= 2.5 / poll, (rate, probe_rate)


async def test_a_rate_refusal_is_retried_with_backoff_and_said_once(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Update rate 4/s, no waiting: 8 documents with a local edit each. A link refused
    over the rate had synced first (the server answers before it refuses an update), so
    its backoff was reset and it reconnected every 0.1 s: 940 connections and 928
    'update refused' warnings in 5 s for 20 edits (found in a review). Nothing is lost."""
    docs = 8
    quotas = '{"acme": {"updates_per_second": 4, "updates_burst": 1}}'
    server = weft_server_factory(
        env={"WEFT_TENANT_QUOTAS": quotas, "WEFT_RATE_MAX_WAIT_SECONDS": "0"}
    )
    events = Events()
    device = Device(
        tmp_path / "d",
        server.ws_url,
        "acme",
        "rate",
        max_backoff=4.0,
        poll_seconds=None,
        listener=events,
    )
    async with device:
        connect = device.http.ws_connect
        attempts = 0

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal attempts
            attempts += 1
            return connect(*args, **kwargs)

        device.http.ws_connect = counting  # type: ignore[method-assign]
        for n in range(docs):
            (await device.open(f"d{n}.txt")).text.insert(0, f"{n}\n")
        await asyncio.sleep(3.0)
        said = [e.message for e in events.seen if "4429" in e.message]
        # backing off (0.1 s doubling): ~log2(30) connections per link in 3 s; the bug
        # made ~30 per link
        assert attempts < 8 * docs, (attempts, len(said))
        assert len(said) <= 2 * docs, said  # once per link until an ack (a few acks land)
        assert not any("update refused" in m for m in said), said
        await device.sync(60)
    for n in range(docs):
        assert server_text(server, "rate", f"d{n}.txt") == f"{n}\n"


async def test_more_documents_open_than_the_connection_quota_all_sync_and_hear_remote_edits(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """The library's default (``idle_seconds`` None) keeps links open, and did so also
    while the tenant's connection quota turned others away: with more documents open than
    ``max_connections``, those were never sent and ``sync()`` never returned. While a link
    waits, idle links close after ``CROWDED_IDLE_SECONDS`` (as weft sync's do); a remote
    edit to a document whose link closed still arrives (the poller reconnects it). A
    device that does not poll would hear of none, so its links stay open."""
    quotas = '{"acme": {"max_connections": 2}}'
    server = weft_server_factory(env={"WEFT_TENANT_QUOTAS": quotas})
    paths = [f"d{n}.txt" for n in range(5)]
    async with make(tmp_path, server, "a", "crowd") as device:
        texts = [text_of(await device.doc(path)) for path in paths]
        for n, text in enumerate(texts):
            text.insert(0, f"{n}\n")
        await device.sync(30)
        assert [server_text(server, "crowd", path) for path in paths] == [
            str(text) for text in texts
        ]
        assert device.link_idle_seconds is None  # nothing waits now: links stay open
        then = datetime.now(UTC).isoformat()
        await asyncio.sleep(0.05)
        for text in texts:
            text.insert(len(text), "more\n")
        await device.sync(30)
        async with aiohttp.ClientSession() as http:  # every document back: remote edits
            status, _ = await call_api(
                http, "POST", f"{server.url}/api/v1/acme/crowd/revert", body={"to": then}
            )
        assert status == 200
        await eventually(lambda: [str(t) for t in texts] == [f"{n}\n" for n in range(5)], 30)
    still = Device(tmp_path / "still", server.ws_url, "acme", "crowd", poll_seconds=None)
    still.crowded.add("waiting.txt")  # (the rule alone: this device never starts)
    assert still.link_idle_seconds is None
    still.poll_seconds = 1.0
    assert still.link_idle_seconds == device_module.CROWDED_IDLE_SECONDS


async def test_a_link_woken_as_the_connection_quota_turns_it_away_still_gives_up(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """max_connections 1, held by another device. The link of the one syncing is
    woken (``nudge``: what ``Device.turned_away`` does to every link when another link
    is turned away) just as its connection is refused. Its reader then cancelled the
    sender as the sender's ``asyncio.wait_for`` finished waiting, and on Python 3.11
    that cancel is swallowed: the sender, with nothing to send on a connection never
    ready, waited on and on, and the reader waited for it for ever. No more tries, no
    quota patience: ``weft sync --once`` hung (twice in a day, on a loaded machine).
    Now the link is refused again and the sync gives up on the file."""
    quotas = '{"acme": {"max_connections": 1}}'
    server = weft_server_factory(env={"WEFT_TENANT_QUOTAS": quotas})
    holder = make(tmp_path, server, "holder", "nudged")  # idle_seconds None: holds its link
    # idle_seconds: the sender waits with a timeout, as weft sync's do (0 with --once,
    # 60 running); long here, so it is surely waiting when the refusal comes
    device = make(tmp_path, server, "d", "nudged", idle_seconds=60.0, quota_patience=0.5)
    async with holder, device:
        held = await holder.open("held.txt")
        await eventually(lambda: held.link.connected)
        connect = device.http.ws_connect
        refusals = 0

        async def nudged_as_refused(*args: Any, **kwargs: Any) -> Any:
            ws = await connect(*args, **kwargs)
            receive = ws.receive

            async def receive_nudged(timeout: float | None = None) -> Any:
                nonlocal refusals
                await asyncio.sleep(0.2)  # the sender sent its SyncStep1 and waits
                msg = await receive(timeout)
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    refusals += 1
                    device.entries["mine.txt"].link.nudge()
                    await asyncio.sleep(0)  # the sender's wait sees the wake-up
                return msg

            ws.receive = receive_nudged
            return ws

        device.http.ws_connect = nudged_as_refused  # type: ignore[method-assign, assignment]
        entry = await device.open("mine.txt")
        entry.text.insert(0, "mine\n")
        with pytest.raises(DocumentsFailed, match=r"mine\.txt"):
            await device.sync(15)
        assert refusals >= 2, refusals
        assert entry.link.error is not None and "(4429)" in entry.link.error, entry.link.error
        assert "still refused" in entry.link.error


async def _the_one_record(ta: Text, tb: Text, conflicts_url: str) -> dict[str, Any]:
    """Once both texts converged, the project's one conflict record (waited for)."""
    await eventually(lambda: str(ta) == str(tb))
    await eventually(lambda: len(get_json(conflicts_url)["conflicts"]) == 1)
    record: dict[str, Any] = get_json(conflicts_url)["conflicts"][0]
    return record


async def _both_paused_with(a: Device, b: Device, text: str) -> tuple[Text, Text]:
    """f.txt holds ``text`` on a and b, both synced, then both offline (paused)."""
    ta = text_of(await a.doc("f.txt"))
    ta.insert(0, text)
    await a.sync(10)
    tb = (await b.open("f.txt")).text
    await eventually(lambda: str(tb) == text)
    await b.sync(10)
    await a.pause()
    await b.pause()
    return ta, tb


async def test_an_edit_broadcast_before_the_answer_to_the_servers_state_is_no_restore(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a and b rewrite the same line offline; b connects first, and a's branch is
    broadcast to b before b has answered the server's state vector (its answer waits,
    here until then). b took a's edit for one the server had lost (restored from a
    backup?), sent its own edits as a restore's, with no base, and no conflict was
    recorded (audit: 2 of 15 rounds of two devices syncing at the same moment)."""
    project = "same-moment"
    conflicts_url = f"{server.url}/api/v1/acme/{project}/conflicts"
    async with make(tmp_path, server, "a", project) as a, make(tmp_path, server, "b", project) as b:
        ta, tb = await _both_paused_with(a, b, "one\ntwo\nthree\n")
        ta.insert(len("one\ntwo"), " (a)")
        tb.insert(len("one\ntwo"), " (b)")

        answer = DocLink._answer_restored
        seen_a = asyncio.Event()

        async def late(self: Any, ws: Any) -> bool:
            if self.device is b:
                await seen_a.wait()
            return await answer(self, ws)

        monkeypatch.setattr(DocLink, "_answer_restored", late)
        b.resume()
        await eventually(lambda: b.entries["f.txt"].link.ready)  # the server's state came
        a.resume()
        await a.sync(10)
        await eventually(lambda: "(a)" in str(tb))  # a's edit, broadcast to b
        seen_a.set()
        await b.sync(10)
        record = await _the_one_record(ta, tb, conflicts_url)
        assert {record["regions"][0]["ours_text"], record["regions"][0]["theirs_text"]} == {
            "two (a)\n",
            "two (b)\n",
        }


async def test_the_same_fix_made_offline_on_two_devices_comes_out_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    """a and b both fix "teh" offline: two updates, which the CRDT merges into a text
    nobody wrote (both deleted the same characters; each inserted its own "he"). That
    was kept with no record (an audit), then recorded as a conflict; since 2026-12-06
    the server keeps the change once, on both devices, with no record
    (crdt.samechange)."""
    project = "same-fix"
    conflicts_url = f"{server.url}/api/v1/acme/{project}/conflicts"
    async with make(tmp_path, server, "a", project) as a, make(tmp_path, server, "b", project) as b:
        ta, tb = await _both_paused_with(a, b, "one\nteh line\nthree\n")
        for text in (ta, tb):
            del text[len("one\nt") : len("one\nteh")]
            text.insert(len("one\nt"), "he")
        a.resume()
        await a.sync(10)
        b.resume()
        await b.sync(10)
        await eventually(lambda: str(ta) == str(tb) == "one\nthe line\nthree\n")
        assert get_json(conflicts_url)["conflicts"] == []


async def test_a_store_refusing_every_retry_is_said_once_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose store fails (a full disk, a read-only file) refuses each update
    (1011) and closes; the device sends it again after a backoff. Each refusal was one
    warning with no file name: a running ``weft sync`` printed one every few seconds for
    as long as the store failed. Now one per document until the server takes an update."""
    from crdt.errors import StoreError
    from server.app import create_app
    from server.appkeys import HISTORY
    from server.config import Settings
    from server.testing import serve_in_process

    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        history = app[HISTORY]
        append_then = history.append_then
        failing = [True]

        def append_or_fail(items: Any, done: Any) -> None:
            if failing[0]:
                error = StoreError("commit failed: disk I/O error")
                asyncio.get_running_loop().call_soon(done, None, error)
            else:
                append_then(items, done)

        monkeypatch.setattr(history, "append_then", append_or_fail)
        events = Events()
        device = Device(
            tmp_path / "a", server.ws_url, "acme", "full", listener=events, max_backoff=0.1
        )
        async with device:
            text = text_of(await device.doc("notes.md"))

            def refusals() -> list[str]:
                return [e.message for e in events.seen if "refused by the server" in e.message]

            text.insert(0, "x")
            await eventually(lambda: len(refusals()) >= 1)
            await asyncio.sleep(1.0)  # several reconnects, each refused again
            assert refusals() == [
                "notes.md: update refused by the server (1011): commit failed: disk I/O "
                "error; sending again"
            ]
            failing[0] = False
            await device.sync(10)  # taken at last
            failing[0] = True
            text.insert(0, "y")  # failing again: said again
            await eventually(lambda: len(refusals()) == 2)
            failing[0] = False
            await device.sync(10)
