"""Snapshots and segments that span several transactions are all-or-nothing for readers.

A snapshot of a document of a few MB is written over several transactions. A crash
between them (or a read while they run) must never make a document unreadable: readers
skip a snapshot or segment that is not whole and use the one before, plus the updates.
The transaction split threshold and the chunk size are lowered here so that a small
document's snapshot spans several transactions; the store is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
from pycrdt import Doc, Text

from crdt import history as history_module
from crdt import keys, records
from crdt.errors import StoreError
from crdt.history import FORMAT_MINOR, Append, DocRef, History
from crdt.kv import Engine, ReadTransaction, Transaction, open_engine
from crdt.kv.base import Committed
from crdt.records import chunks, load_parts, stored_parts
from crdt.versionstamp import Versionstamp

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
SMALL_CHUNK = 400  # bytes per part
SMALL_BATCH = 1_000  # bytes per transaction: two parts each


class Crashed(Exception):
    """The process "died" before this transaction."""


class Hooked:
    """An engine that awaits ``before(n)`` ahead of its n-th transaction (from 0)."""

    def __init__(self, kv: Engine, before: Callable[[int], Awaitable[None]]) -> None:
        self.kv, self.before, self.count = kv, before, 0
        self.url = kv.url

    async def transact(self, fn: Callable[[Transaction], T]) -> Committed[T]:
        await self.before(self.count)
        self.count += 1
        return await self.kv.transact(fn)

    async def read(self, fn: Callable[[ReadTransaction], T]) -> T:
        return await self.kv.read(fn)

    async def watch(self, key: bytes, last: bytes | None) -> bytes | None:
        return await self.kv.watch(key, last)

    async def release_memory(self) -> None:
        await self.kv.release_memory()

    async def close(self) -> None:
        await self.kv.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@pytest.fixture
def small_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "CHUNK", SMALL_CHUNK)
    monkeypatch.setattr(history_module, "MAX_BATCH_BYTES", SMALL_BATCH)


def text_of(doc: Doc[Any]) -> str:
    return str(doc.get("content", type=Text))


class Writer:
    """A document typed into and appended to the history, with its text at each version."""

    def __init__(self, history: History, ref: DocRef) -> None:
        self.history, self.ref = history, ref
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)
        self.texts: dict[Versionstamp, str] = {}

    async def type(self, n: int, width: int = 100) -> None:
        """``n`` updates of ``width`` characters each, in one append."""
        updates, texts = [], []
        for i in range(n):
            before = self.doc.get_state()
            self.text.insert(len(self.text) // 2, f"<{len(self.texts) + i}>".ljust(width, "."))
            updates.append(self.doc.get_update(before))
            texts.append(str(self.text))
        appended = await self.history.append([Append(self.ref, u) for u in updates])
        self.texts.update((a.versionstamp, t) for a, t in zip(appended, texts, strict=True))

    async def check_every_version(self, history: History | None = None) -> None:
        history = history or self.history
        head = await history.replay(self.ref)
        assert text_of(head.doc) == str(self.text)
        for vs, text in self.texts.items():
            assert text_of((await history.replay(self.ref, vs)).doc) == text, vs.hex()


async def stored_keys(kv: Engine, ref: DocRef, kind: str) -> set[tuple[Versionstamp, int]]:
    prefix = ref.key(kind)
    begin, end = keys.prefix_range(prefix)
    return {
        keys.unpack_stamped(k, prefix)
        for k, _ in await kv.read(lambda tr: tr.get_range(begin, end))
    }


async def two_intervals(kv: Engine) -> tuple[History, Writer]:
    """A doc with one snapshot (and its segments) written, and a second one due."""
    history = History(kv, snapshot_every=16, segment_every=4)
    await history.init()
    writer = Writer(history, await history.doc("acme", "site", "big.md", create=True))
    await writer.type(16)
    assert await history.snapshot_if_due(writer.ref) is not None
    await writer.type(16)
    return history, writer


async def crash_snapshot(url: str, crash_before: int) -> Writer | None:
    """Two snapshot intervals in a new store, the second snapshot's write stopped before
    its transaction ``crash_before``; ``None`` when it has fewer transactions than that."""

    async def crash(n: int) -> None:
        if n == crash_before:
            raise Crashed

    async with open_engine(url) as kv:
        _, writer = await two_intervals(kv)
        before = await stored_keys(kv, writer.ref, "s") | await stored_keys(kv, writer.ref, "g")
        crashing = History(Hooked(kv, crash), snapshot_every=16, segment_every=4)
        try:
            await crashing.snapshot_if_due(writer.ref)
        except Crashed:
            pass
        else:
            return None
        after = await stored_keys(kv, writer.ref, "s") | await stored_keys(kv, writer.ref, "g")
        assert after > before, "the first transactions of the snapshot committed"
    return writer


@pytest.mark.usefixtures("small_transactions")
async def test_a_crash_between_snapshot_transactions_leaves_every_version_readable(
    tmp_path: Path,
) -> None:
    crash_before = 1
    while writer := await crash_snapshot(
        f"sqlite:///{tmp_path / f'{crash_before}.db'}", crash_before
    ):
        async with open_engine(f"sqlite:///{tmp_path / f'{crash_before}.db'}") as kv:
            history = History(kv, snapshot_every=16, segment_every=4)  # as after a restart
            await writer.check_every_version(history)
            # The next snapshot completes what the crash cut short, and is used.
            assert await history.snapshot_if_due(writer.ref) is not None
            assert (await history.replay(writer.ref)).updates_applied == 0
            await writer.check_every_version(history)
        crash_before += 1
    assert crash_before > 4, "the snapshot did not span several transactions"


@pytest.mark.usefixtures("small_transactions")
async def test_a_replay_while_a_snapshot_is_being_written_sees_a_whole_version(
    kv: Engine,
) -> None:
    history, writer = await two_intervals(kv)
    between: list[int] = []

    async def load_room(n: int) -> None:
        if n:
            between.append(n)
            await writer.check_every_version()

    writing = History(Hooked(kv, load_room), snapshot_every=16, segment_every=4)
    assert await writing.snapshot_if_due(writer.ref)
    assert len(between) > 3
    assert (await history.replay(writer.ref)).updates_applied == 0
    await writer.check_every_version()


async def test_a_snapshot_written_before_part_counts_still_loads(kv: Engine) -> None:
    """Format 1.0 wrote ``{state, count, size}`` chunked, part 0 first, and no count."""
    await kv.transact(lambda tr: tr.set(keys.FORMAT, msgpack.packb({"major": 1, "minor": 0})))
    history = History(kv)
    await history.init()
    raw = await kv.read(lambda tr: tr.get(keys.FORMAT))
    assert raw is not None
    assert msgpack.unpackb(raw) == {"major": 1, "minor": FORMAT_MINOR, "h": True}
    writer = Writer(history, await history.doc("acme", "site", "old.md", create=True))
    await writer.type(3, width=60_000)  # a state of 180 kB: three parts
    head = (await history.replay(writer.ref)).versionstamp
    assert head is not None
    state = (await history.replay(writer.ref)).state()
    old = msgpack.packb({"state": state, "count": 3, "size": 180_000})
    old_parts = chunks(old)
    assert len(old_parts) == 3

    def write_old(tr: Transaction, parts: list[bytes] = old_parts) -> None:
        for n, part in enumerate(parts):
            tr.set(writer.ref.key("s", head, n), part)

    await kv.transact(write_old)
    replayed = await history.replay(writer.ref)
    assert replayed.updates_applied == 0, "the old snapshot was not used"
    assert text_of(replayed.doc) == str(writer.text)

    # An old snapshot cut short by a crash (parts 0 and 1 of 3) is skipped, not fatal.
    await writer.type(1)
    newer = (await history.replay(writer.ref)).versionstamp
    assert newer is not None
    old = msgpack.packb(
        {"state": (await history.replay(writer.ref)).state(), "count": 4, "size": 0}
    )
    cut = chunks(old)[:2]

    def write_cut(tr: Transaction) -> None:
        for n, part in enumerate(cut):
            tr.set(writer.ref.key("s", newer, n), part)

    await kv.transact(write_cut)
    replayed = await history.replay(writer.ref)
    assert replayed.updates_applied == 1  # the whole snapshot before it, then one update
    await writer.check_every_version()


def test_parts_count_themselves_and_part_0_commits_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "CHUNK", 100)
    fields = {"state": bytes(range(256)) * 3, "count": 7, "size": 768}
    parts = stored_parts(fields)
    assert len(parts) == 9 and all(len(p) <= 100 for p in parts)
    by_number = dict(enumerate(parts))
    assert load_parts(by_number) == {"parts": 9, **fields}
    assert load_parts({n: p for n, p in by_number.items() if n != 0}) is None
    assert load_parts({n: p for n, p in by_number.items() if n != 8}) is None
    leftover = {**by_number, 9: b"from a longer write cut short"}
    assert load_parts(leftover) == {"parts": 9, **fields}
    single = stored_parts({"state": b"x", "count": 1, "size": 1})
    assert len(single) == 1 and load_parts({0: single[0]}) == {
        "parts": 1,
        "state": b"x",
        "count": 1,
        "size": 1,
    }
    with pytest.raises(StoreError, match="corrupt"):
        load_parts({0: b"\xc1 not msgpack"})


WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from crdt import history as history_module, records
    from crdt.history import History
    from crdt.kv import open_engine

    records.CHUNK, history_module.MAX_BATCH_BYTES = {chunk}, {batch}

    class StopBefore:
        def __init__(self, kv, last):
            self.kv, self.url, self.count, self.last = kv, kv.url, 0, last
        async def transact(self, fn):
            if self.count == self.last:
                print("between", flush=True)
                time.sleep(60)  # killed here
            self.count += 1
            return await self.kv.transact(fn)
        async def read(self, fn):
            return await self.kv.read(fn)

    async def main():
        async with open_engine(sys.argv[1]) as kv:
            history = History(StopBefore(kv, int(sys.argv[2])), snapshot_every=16, segment_every=4)
            await history.snapshot_if_due(await history.doc("acme", "site", "big.md"))
        print("finished", flush=True)

    asyncio.run(main())
    """
).format(chunk=SMALL_CHUNK, batch=SMALL_BATCH)


@pytest.mark.usefixtures("small_transactions")
async def test_kill_9_before_the_last_snapshot_transaction(tmp_path: Path) -> None:
    """A process killed (SIGKILL) after all but the snapshot's last transaction."""
    url = f"sqlite:///{tmp_path / 'weft.db'}"
    async with open_engine(url) as kv:
        _, writer = await two_intervals(kv)
        before = await stored_keys(kv, writer.ref, "s") | await stored_keys(kv, writer.ref, "g")
    shutil.copy(tmp_path / "weft.db", tmp_path / "count.db")  # closed: no WAL left
    async with open_engine(f"sqlite:///{tmp_path / 'count.db'}") as kv:
        counting = Hooked(kv, lambda n: asyncio.sleep(0))
        await History(counting, snapshot_every=16, segment_every=4).snapshot_if_due(writer.ref)
    assert counting.count > 4, "the snapshot did not span several transactions"
    last = str(counting.count - 1)
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, url, last], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
    assert line == "between\n"
    assert proc.returncode == -signal.SIGKILL
    async with open_engine(url) as kv:
        after = await stored_keys(kv, writer.ref, "s") | await stored_keys(kv, writer.ref, "g")
        assert after > before, "the killed process committed its first transaction"
        history = History(kv, snapshot_every=16, segment_every=4)
        await writer.check_every_version(history)
        assert await history.snapshot_if_due(writer.ref) is not None
        assert (await history.replay(writer.ref)).updates_applied == 0
        await writer.check_every_version(history)


def test_parts_of_two_writes_of_one_value_read_as_no_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in a review: two writers of one snapshot key can write the same document in
    different bytes (one built on from a kept doc, or from an older snapshot after a
    stale read) and, each over several transactions, mix their parts; the value did not
    decode and every replay raised StoreError. A value of several parts carries the
    blake3 of its fields: a mix reads as no value (the snapshot before it is used), a
    whole one as before, and one written before sums were (no ``sum``) as before."""
    monkeypatch.setattr(records, "CHUNK", 100)
    one = {"state": bytes(range(256)) * 3, "count": 7, "size": 768}
    other = {"state": bytes(range(255, -1, -1)) * 3, "count": 7, "size": 768}
    a, b = stored_parts(one), stored_parts(other)
    assert len(a) == len(b) == 9
    assert load_parts(dict(enumerate(a))) == {"parts": 9, **one}
    for mixed in ([b[0], *a[1:]], [*a[:5], *b[5:]], [a[0], *b[1:]]):
        assert load_parts(dict(enumerate(mixed))) is None
    # Format 1.3 and older: no sum, parts as they were.
    body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in one.items())
    head = msgpack.Packer().pack_map_header(4) + msgpack.packb("parts") + b"\x08"
    old = records.chunks(head + body)
    assert len(old) == 8 and load_parts(dict(enumerate(old))) == {"parts": 8, **one}
