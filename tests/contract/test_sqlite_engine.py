"""What only the SQLite engine has: its own on-disk format and other writers on the file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdt import keys
from crdt.errors import FormatError, StoreError
from crdt.kv import Committed, Transaction, open_engine
from crdt.kv import sqlite as sqlite_module
from crdt.kv.sqlite import FORMAT_MAJOR, SQLiteEngine


def _format_major(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT value FROM engine WHERE name = 'format_major'").fetchone()
    return int(row[0])


async def test_a_newer_store_format_major_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    async with open_engine(f"sqlite:///{path}") as kv:
        await kv.transact(lambda tr: tr.set(b"k", b"v"))
    assert _format_major(path) == FORMAT_MAJOR
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE engine SET value = ? WHERE name = 'format_major'", (FORMAT_MAJOR + 1,))
    with pytest.raises(FormatError, match="newer than this weft understands"):
        async with open_engine(f"sqlite:///{path}"):
            pass
    assert _format_major(path) == FORMAT_MAJOR + 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT v FROM kv WHERE k = ?", (b"k",)).fetchone() == (b"v",)


async def test_a_commit_waits_for_another_writer_on_the_file(tmp_path: Path) -> None:
    """A second process holding SQLite's write lock delays a commit; it does not fail it."""
    path = tmp_path / "kv.db"
    async with open_engine(f"sqlite:///{path}") as kv:
        locked, held = threading.Event(), 0.5

        def other_writer() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (keys.pack(("other",)), b"o"))
            locked.set()
            time.sleep(held)
            conn.execute("COMMIT")
            conn.close()

        holder = asyncio.ensure_future(asyncio.to_thread(other_writer))
        assert await asyncio.to_thread(locked.wait, 5)
        started = time.monotonic()
        committed = await kv.transact(lambda tr: tr.set(keys.pack(("mine",)), b"m"))
        assert time.monotonic() - started > held / 2
        await holder
        assert committed.versionstamp is not None
        assert await kv.read(lambda tr: tr.get(keys.pack(("other",)))) == b"o"
        assert await kv.read(lambda tr: tr.get(keys.pack(("mine",)))) == b"m"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///x.db?journal=off", "unknown sqlite store option"),
        ("sqlite:///x.db?synchronous=SOMETIMES", "synchronous must be one of"),
        ("sqlite:///x.db?wal_limit_mb=0", "wal_limit_mb must be at least 1"),
        ("sqlite:///x.db?wal_limit_mb=lots", "invalid literal"),
        ("sqlite:///x.db?readers=0", "readers must be at least 1"),
        ("sqlite:///x.db?readers=many", "invalid literal"),
        ("postgres://db", "unknown store URL"),
        ("sqlite:///w\udcff.db", "is not valid UTF-8: SQLite cannot open it"),
    ],
)
def test_bad_sqlite_urls_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_engine(url)


def test_the_wal_limit_is_a_store_url_option() -> None:
    engine = open_engine("sqlite:///x.db?wal_limit_mb=8")
    assert isinstance(engine, SQLiteEngine) and engine._wal_limit == 8 << 20


@pytest.mark.parametrize("rows", [1, 2, 3, 255, 256, 257, 511, 1000])
async def test_a_transaction_writes_every_row_whatever_its_count(tmp_path: Path, rows: int) -> None:
    """The writer inserts a transaction's rows with multi-row INSERTs of power-of-two
    sizes (at most 256 rows each): every count must come out whole."""
    async with SQLiteEngine(tmp_path / "kv.db") as kv:

        def write(tr: Transaction) -> None:
            for n in range(rows):
                tr.set(keys.pack(("row", n)), f"value {n}".encode())

        await kv.transact(write)
        stored = await kv.read(
            lambda tr: tr.get_range(keys.pack(("row",)), keys.pack(("row",)) + b"\xff")
        )
    assert stored == sorted((keys.pack(("row", n)), f"value {n}".encode()) for n in range(rows))


# --- the writer thread survives its callers ------------------------------------------

WORKER = Path(__file__).with_name("kv_worker.py")
REPO = Path(__file__).resolve().parents[2]
WAIT = 5.0  # seconds a commit or a watch may take before the test calls it hung


def setter(key: bytes, value: bytes) -> Callable[[Transaction], None]:
    return lambda tr: tr.set(key, value)


async def set_from_another_process(url: str, key: bytes, value: bytes) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(WORKER), url, "set", key.hex(), value.hex()],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


async def test_a_watch_whose_event_loop_closed_does_not_stop_commits(tmp_path: Path) -> None:
    """Notifying a watcher whose loop is gone must not kill the writer thread."""
    key = keys.pack(("watched",))
    async with SQLiteEngine(tmp_path / "kv.db") as kv:

        def watch_from_a_loop_that_then_closes() -> None:
            loop = asyncio.new_event_loop()
            try:
                task = loop.create_task(kv.watch(key, None))
                loop.run_until_complete(asyncio.sleep(0.2))
                assert not task.done(), "the watch should still be waiting"
            finally:
                loop.close()
            # Abandoned with its loop on purpose: without this, asyncio logs "Task was
            # destroyed but it is pending!" whenever the garbage collector gets to it.
            task._log_destroy_pending = False  # type: ignore[attr-defined]

        await asyncio.to_thread(watch_from_a_loop_that_then_closes)
        for i in range(3):
            value = f"{i}".encode()
            done = await asyncio.wait_for(kv.transact(setter(key, value)), WAIT)
            assert done.versionstamp is not None
        other_thread = await asyncio.wait_for(
            asyncio.to_thread(kv.transact_sync, lambda tr: tr.set(key, b"thread")), WAIT
        )
        assert other_thread.versionstamp is not None
        watching = asyncio.ensure_future(kv.watch(key, b"thread"))
        await asyncio.sleep(0.05)
        await kv.transact(lambda tr: tr.set(key, b"live"))
        assert await asyncio.wait_for(watching, WAIT) == b"live"
        await asyncio.sleep(0.1)  # the poller too has offered to the dead watch by now
        await set_from_another_process(kv.url, key, b"theirs")
        assert await asyncio.wait_for(kv.watch(key, b"live"), WAIT) == b"theirs"


async def test_a_transaction_cancelled_while_queued_is_skipped(tmp_path: Path) -> None:
    """A caller that gives up (cancel, timeout) before its turn must not kill the writer."""
    async with SQLiteEngine(tmp_path / "kv.db") as kv:
        entered, release = threading.Event(), threading.Event()

        def hold(tr: Transaction) -> None:
            entered.set()
            release.wait(WAIT)

        busy = asyncio.ensure_future(kv.transact(hold))
        # Wait until the writer is inside ``busy`` (a fixed sleep was not always enough
        # on a loaded machine: both could then be taken into one batch).
        assert await asyncio.to_thread(entered.wait, WAIT)
        queued = asyncio.ensure_future(kv.transact(lambda tr: tr.set(b"cancelled", b"x")))
        await asyncio.sleep(0.05)
        queued.cancel()
        # The cancel reaches the engine's own future through a callback the event loop
        # runs on its next turn: let it run before the writer can take ``queued``.
        await asyncio.sleep(0)
        release.set()
        await busy
        later = await asyncio.wait_for(kv.transact(lambda tr: tr.set(b"later", b"y")), WAIT)
        assert later.versionstamp is not None
        assert queued.cancelled()
        assert await kv.read(lambda tr: tr.get(b"cancelled")) is None
        assert await kv.read(lambda tr: tr.get(b"later")) == b"y"


async def test_a_dead_writer_thread_fails_pending_and_later_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should the writer thread die anyway, nobody waits forever on it."""
    async with SQLiteEngine(tmp_path / "kv.db") as kv:
        inside, release = threading.Event(), threading.Event()

        def dies(batch: object) -> None:
            inside.set()
            release.wait(WAIT)
            raise RuntimeError("writer thread bug")

        monkeypatch.setattr(kv, "_commit_batch", dies)
        first = asyncio.ensure_future(kv.transact(lambda tr: tr.set(b"a", b"1")))
        assert await asyncio.to_thread(inside.wait, WAIT)
        pending = asyncio.ensure_future(kv.transact(lambda tr: tr.set(b"b", b"2")))
        await asyncio.sleep(0.05)
        release.set()
        for waiting in (first, pending):
            with pytest.raises(StoreError, match="writer thread stopped"):
                await asyncio.wait_for(waiting, WAIT)
        with pytest.raises(StoreError, match="writer thread stopped"):
            await asyncio.wait_for(kv.transact(lambda tr: tr.set(b"c", b"3")), WAIT)
        with pytest.raises(StoreError, match="writer thread stopped"):
            kv.transact_sync(lambda tr: tr.set(b"d", b"4"))
        assert await kv.read(lambda tr: tr.get_range(b"", b"\xff")) == []
    assert "the SQLite writer thread stopped" in caplog.text


async def test_a_writer_thread_dying_after_a_commit_calls_its_callback_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer thread that dies after reporting a commit fails the batch it was on
    once more: a future ignores that (it is set already), a ``transact_then`` callback
    must too. Called twice, the group-commit writer settled each update twice (acked,
    then failed) and took the next batch while one was still in flight."""
    async with SQLiteEngine(tmp_path / "kv.db") as kv:

        def dies() -> None:
            raise RuntimeError("writer thread bug after the commit")

        monkeypatch.setattr(kv, "_bound_wal", dies)  # runs after the batch is reported
        outcomes: list[object] = []
        kv.transact_then(lambda tr: tr.set(b"a", b"1"), outcomes.append)
        async with asyncio.timeout(WAIT):
            while not kv._writes_stopped:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the loop has run every callback queued for it
        assert len(outcomes) == 1
        assert isinstance(outcomes[0], Committed) and outcomes[0].versionstamp is not None
        assert await kv.read(lambda tr: tr.get(b"a")) == b"1"
    assert "the SQLite writer thread stopped" in caplog.text


# --- cross-process watches: no missed commit, no needless reads ----------------------


async def test_a_commit_while_the_watch_poller_starts_is_not_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process commits after the watch's own first read but before the poller
    (started by that watch) has its baseline: the watch must still fire."""
    key = keys.pack(("head",))
    async with SQLiteEngine(tmp_path / "kv.db") as kv:
        await kv.transact(lambda tr: tr.set(key, b"old"))
        poller_may_start = threading.Event()
        connect = kv._connect

        def slow_poller_connect() -> sqlite3.Connection:
            if threading.current_thread().name == "weft-watch":
                poller_may_start.wait(WAIT)
            return connect()

        monkeypatch.setattr(kv, "_connect", slow_poller_connect)
        watching = asyncio.ensure_future(kv.watch(key, b"old"))
        await asyncio.sleep(0.2)  # the watch read b"old"; its poller is not running yet
        assert not watching.done()
        await set_from_another_process(kv.url, key, b"new")
        poller_may_start.set()
        assert await asyncio.wait_for(watching, WAIT) == b"new"


def _traced(
    kv: SQLiteEngine, monkeypatch: pytest.MonkeyPatch, wanted: Callable[[str, str], bool]
) -> list[str]:
    """The statements run on ``kv``'s connections opened from now on for which
    ``wanted(sql, thread name)`` holds (the thread that runs the statement)."""
    seen: list[str] = []
    connect = kv._connect

    def tracing_connect(create: bool = False) -> sqlite3.Connection:
        conn = connect(create)
        conn.set_trace_callback(
            lambda sql: seen.append(sql) if wanted(sql, threading.current_thread().name) else None
        )
        return conn

    monkeypatch.setattr(kv, "_connect", tracing_connect)
    return seen


def _counting_reads(kv: SQLiteEngine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements reading the kv table on the engine's reader threads (the reads a
    watch makes), once ``kv`` is opened."""
    return _traced(
        kv, monkeypatch, lambda sql, thread: "FROM kv" in sql and thread.startswith("weft-read")
    )


async def test_the_poller_reads_watched_keys_only_for_other_processes_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched, other = keys.pack(("head", 1)), keys.pack(("head", 2))
    async with SQLiteEngine(tmp_path / "kv.db", poll_interval=0.005) as kv:
        await kv.transact(lambda tr: tr.set(watched, b"0"))
        poller_reads = _traced(
            kv, monkeypatch, lambda sql, thread: "FROM kv" in sql and thread == "weft-watch"
        )
        watchers = [asyncio.ensure_future(kv.watch(watched, b"0")) for _ in range(3)]
        await asyncio.sleep(0.1)
        start = len(poller_reads)  # the poller's first look at the watched keys
        for i in range(20):  # this process's own commits: offered in-process, not polled
            await kv.transact(setter(other, f"{i}".encode()))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        # None, or one when the poller looked between a commit and its recording.
        assert len(poller_reads) - start <= 1, poller_reads[start:]
        start = len(poller_reads)
        assert not any(w.done() for w in watchers)
        await set_from_another_process(kv.url, other, b"theirs")  # not a watched key
        await asyncio.sleep(0.2)
        assert 1 <= len(poller_reads) - start <= 2, poller_reads[start:]
        assert not any(w.done() for w in watchers), "an unchanged key woke a watcher"
        await set_from_another_process(kv.url, watched, b"1")
        assert await asyncio.wait_for(asyncio.gather(*watchers), WAIT) == [b"1"] * 3


async def test_watching_again_with_the_value_a_commit_woke_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A room watches its head again after each commit, with the value it was woken
    with: the engine remembers the value it offered, so that costs no read."""
    key = keys.pack(("head",))
    kv = SQLiteEngine(tmp_path / "kv.db")
    reads = _counting_reads(kv, monkeypatch)
    async with kv:
        await kv.transact(setter(key, b"0"))
        watching = asyncio.ensure_future(kv.watch(key, b"0"))
        await asyncio.sleep(0.05)
        assert len(reads) == 1, reads  # a key's first watch reads it
        for i in range(1, 11):
            await kv.transact(setter(key, f"{i}".encode()))
            value = await asyncio.wait_for(watching, WAIT)
            assert value == f"{i}".encode()
            watching = asyncio.ensure_future(kv.watch(key, value))
            await asyncio.sleep(0.01)
            assert not watching.done()
        assert len(reads) == 1, reads
        watching.cancel()


async def test_the_writer_offers_a_commits_watched_keys_without_reading_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values a commit wrote to watched keys are offered as written (versionstamps
    filled in), with no query on the writer's connection."""
    key = keys.pack(("head",))
    kv = SQLiteEngine(tmp_path / "kv.db")
    writer_reads = _traced(
        kv, monkeypatch, lambda sql, thread: "FROM kv" in sql and thread == "weft-write"
    )
    async with kv:
        await kv.transact(setter(key, b"0"))
        last: bytes | None = b"0"
        for i in range(5):
            watching = asyncio.ensure_future(kv.watch(key, last))
            await asyncio.sleep(0.01)
            stamped = b"%d:" % i + b"\0" * 10

            def stamp(tr: Transaction, stamped: bytes = stamped) -> None:
                tr.set_versionstamped_value(key, stamped, 2)

            committed = await kv.transact(stamp)
            last = await asyncio.wait_for(watching, WAIT)
            assert last == b"%d:" % i + (committed.versionstamp or b"")[:10]
            assert last == await kv.read(lambda tr: tr.get(key))
        assert writer_reads == []


async def _one_batch(kv: SQLiteEngine, *fns: Callable[[Transaction], Any]) -> list[Any]:
    """Commit ``fns`` in one batch, in this order (the writer thread is held inside a
    transaction of its own until all of them are queued); their ``Committed``."""
    entered, release = threading.Event(), threading.Event()

    def hold(tr: Transaction) -> None:
        entered.set()
        release.wait(WAIT)

    held = asyncio.ensure_future(kv.transact(hold))
    await asyncio.to_thread(entered.wait, WAIT)
    queued = [asyncio.ensure_future(kv.transact(fn)) for fn in fns]
    await asyncio.sleep(0.01)  # each transact() has queued its request
    release.set()
    await held
    return list(await asyncio.gather(*queued))


@pytest.mark.parametrize(
    ("fns", "expected"),
    [
        ((setter(b"w", b"a"), setter(b"w", b"b")), b"b"),
        ((setter(b"w", b"a"), lambda tr: tr.clear_range(b"v", b"x")), None),
        ((setter(b"w", b"a"), lambda tr: tr.clear(b"w")), None),
        ((lambda tr: tr.clear(b"w"), setter(b"w", b"c")), b"c"),
    ],
    ids=["set-set", "set-clear_range", "set-clear", "clear-set"],
)
async def test_a_batch_offers_its_watched_keys_their_last_value(
    tmp_path: Path, fns: tuple[Callable[[Transaction], Any], ...], expected: bytes | None
) -> None:
    """Several transactions of one commit wrote a watched key: its watch wakes with
    what the last of them left, a clear or a range clear included."""
    async with SQLiteEngine(tmp_path / "kv.db") as kv:
        await kv.transact(setter(b"w", b"0"))
        watching = asyncio.ensure_future(kv.watch(b"w", b"0"))
        await asyncio.sleep(0.01)
        committed = await _one_batch(kv, *fns)
        assert len({c.versionstamp[:8] for c in committed}) == 1  # one commit, the case
        assert await asyncio.wait_for(watching, WAIT) == expected
        assert await kv.read(lambda tr: tr.get(b"w")) == expected


async def test_a_watch_right_after_its_own_commit_is_not_woken_by_the_value_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine marks a remembered value unknown before it reports the commit that
    changed it: a caller who watches with the value it just wrote must not be woken by
    the value before, even while the writer thread has not offered the new one yet
    (held back here, to make that window wide)."""
    key, other = keys.pack(("head",)), keys.pack(("other",))
    async with SQLiteEngine(tmp_path / "kv.db") as kv:
        offer = kv._offer

        def late_offer(*args: Any) -> None:
            if threading.current_thread().name == "weft-write":
                time.sleep(0.01)
            offer(*args)

        monkeypatch.setattr(kv, "_offer", late_offer)
        await kv.transact(setter(key, b"0"))
        woken = asyncio.ensure_future(kv.watch(key, b"0"))
        await asyncio.sleep(0.05)
        await kv.transact(setter(key, b"1"))
        assert await asyncio.wait_for(woken, WAIT) == b"1"  # offered: now remembered
        for i in range(2, 32):
            value = f"{i}".encode()
            await kv.transact(setter(key, value))
            watching = asyncio.ensure_future(kv.watch(key, value))
            await asyncio.sleep(0.005)
            assert not watching.done(), f"woken with {watching.result()!r} after {value!r}"
            watching.cancel()
            await kv.transact(setter(other, value))  # the writer moves on meanwhile


@pytest.mark.parametrize("watched_meanwhile", [True, False], ids=["polled", "poller-idle"])
async def test_a_remembered_value_sees_another_process_commit_while_nobody_watched(
    tmp_path: Path, watched_meanwhile: bool
) -> None:
    """Between two watches of a key its value is remembered: another process's commit
    in that gap must still wake the next watch, whether the poller kept polling (for
    another key) or idled with nobody watching."""
    key, other = keys.pack(("head", 1)), keys.pack(("head", 2))
    async with SQLiteEngine(tmp_path / "kv.db", poll_interval=0.005) as kv:
        await kv.transact(setter(key, b"a"))
        watching = asyncio.ensure_future(kv.watch(key, b"a"))
        await asyncio.sleep(0.05)
        await kv.transact(setter(key, b"b"))
        assert await asyncio.wait_for(watching, WAIT) == b"b"
        elsewhere = asyncio.ensure_future(kv.watch(other, None)) if watched_meanwhile else None
        await set_from_another_process(kv.url, key, b"c")
        assert await asyncio.wait_for(kv.watch(key, b"b"), WAIT) == b"c"
        if elsewhere is not None:
            assert not elsewhere.done()
            elsewhere.cancel()


async def test_a_watch_with_a_value_read_after_another_process_commit_is_not_woken(
    tmp_path: Path,
) -> None:
    """A caller that read a key itself (here: just after another process wrote it)
    and watches with that value must not be woken with the value remembered before."""
    key = keys.pack(("head",))
    async with SQLiteEngine(tmp_path / "kv.db") as kv:
        await kv.transact(setter(key, b"0"))
        watching = asyncio.ensure_future(kv.watch(key, b"0"))
        await asyncio.sleep(0.05)
        await kv.transact(setter(key, b"1"))
        assert await asyncio.wait_for(watching, WAIT) == b"1"  # b"1" is remembered now
        await set_from_another_process(kv.url, key, b"2")
        read = await kv.read(lambda tr: tr.get(key))
        assert read == b"2"
        again = asyncio.ensure_future(kv.watch(key, read))
        await asyncio.sleep(0.2)
        assert not again.done(), f"woken with {again.result()!r}, read {read!r}"
        again.cancel()


async def test_a_late_poller_offer_does_not_overwrite_a_value_remembered_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller read a key, then stalled; meanwhile the key's entry was dropped, this
    engine committed a new value and a new watch read it. The stalled offer is older:
    it must neither wake that watch nor be remembered."""
    key, other, elsewhere = keys.pack(("head", 1)), keys.pack(("head", 2)), keys.pack(("x",))
    poller_read, resume = threading.Event(), threading.Event()
    hold = threading.Event()
    get_many = sqlite_module._Reader.get_many

    def stalling_get_many(self: Any, wanted: Any) -> Any:
        values = get_many(self, wanted)
        if threading.current_thread().name == "weft-watch" and hold.is_set():
            hold.clear()
            poller_read.set()
            resume.wait(WAIT)
        return values

    monkeypatch.setattr(sqlite_module._Reader, "get_many", stalling_get_many)
    async with SQLiteEngine(tmp_path / "kv.db", poll_interval=0.005) as kv:
        await kv.transact(setter(key, b"0"))
        keeps_polling = asyncio.ensure_future(kv.watch(other, None))
        await asyncio.sleep(0.1)  # the poller started and made its first offer
        first = asyncio.ensure_future(kv.watch(key, b"0"))  # read b"0", nothing offered
        await asyncio.sleep(0.05)
        hold.set()
        await set_from_another_process(kv.url, elsewhere, b"theirs")
        assert await asyncio.to_thread(poller_read.wait, WAIT)  # it read b"0" and stalls
        first.cancel()  # the key's entry (no value offered yet) goes with its last watch
        await asyncio.sleep(0.01)
        await kv.transact(setter(key, b"1"))
        second = asyncio.ensure_future(kv.watch(key, b"1"))
        await asyncio.sleep(0.05)
        resume.set()
        await asyncio.sleep(0.1)
        assert not second.done(), f"woken with {second.result()!r} after b'1' was committed"
        # and nothing old is remembered: a watch with the old value sees the new one
        assert await asyncio.wait_for(kv.watch(key, b"0"), WAIT) == b"1"
        second.cancel()
        keeps_polling.cancel()


async def test_the_writers_late_offer_of_its_own_commit_does_not_hide_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This engine committed b"1", then stalled before offering it; meanwhile another
    process committed b"2", which the poller offered. The writer's offer of b"1" is
    older: it must neither wake a watch on b"2" nor be remembered (a watch coming back
    with b"1" would then wait although the store holds b"2")."""
    key = keys.pack(("head", 1))
    stalled, resume = threading.Event(), threading.Event()
    unknown_after = sqlite_module.SQLiteEngine._unknown_after

    def stalling(self: Any, written: Any, counter: int) -> Any:
        if not stalled.is_set():
            stalled.set()
            resume.wait(WAIT)
        return unknown_after(self, written, counter)

    async with SQLiteEngine(tmp_path / "kv.db", poll_interval=0.005) as kv:
        await kv.transact(setter(key, b"0"))
        first = asyncio.ensure_future(kv.watch(key, b"0"))
        # The poller runs and knows the key (its first read of it is remembered): a
        # poller starting only after b"1" is committed takes b"1" for the store's value
        # and rightly offers it. (A fixed 0.1 s sleep was not always enough under load:
        # this test failed once in a run of the suite with 6 workers on 2 cores.)
        async with asyncio.timeout(WAIT):
            while kv._known.get(key, (-1, None))[0] < 0:
                await asyncio.sleep(0.005)
        monkeypatch.setattr(sqlite_module.SQLiteEngine, "_unknown_after", stalling)
        ours = asyncio.ensure_future(kv.transact(setter(key, b"1")))
        assert await asyncio.to_thread(stalled.wait, WAIT)  # committed, not offered
        await set_from_another_process(kv.url, key, b"2")
        assert await asyncio.wait_for(first, WAIT) == b"2"  # the poller's offer
        second = asyncio.ensure_future(kv.watch(key, b"2"))
        await asyncio.sleep(0.05)
        resume.set()
        await asyncio.wait_for(ours, WAIT)
        await asyncio.sleep(0.1)
        assert not second.done(), f"woken with {second.result()!r}; the store holds b'2'"
        assert await asyncio.wait_for(kv.watch(key, b"1"), WAIT) == b"2"
        second.cancel()


async def test_a_new_watch_is_woken_by_this_engines_next_commit(tmp_path: Path) -> None:
    """A key watched for the first time has no remembered value yet (the watch reads it
    itself); this engine's next commit of it must still be offered to the watch (the
    poller, already running, leaves this engine's own commits to the writer)."""
    key, other = keys.pack(("head", 1)), keys.pack(("head", 2))
    async with SQLiteEngine(tmp_path / "kv.db", poll_interval=0.005) as kv:
        await kv.transact(setter(key, b"0"))
        keeps_polling = asyncio.ensure_future(kv.watch(other, None))
        await asyncio.sleep(0.1)  # the poller runs
        for n in range(1, 20):
            watch = asyncio.ensure_future(kv.watch(key, str(n - 1).encode()))
            await asyncio.sleep(0)  # registered: its own read is under way
            await kv.transact(setter(key, str(n).encode()))
            assert await asyncio.wait_for(watch, WAIT) == str(n).encode()
        keeps_polling.cancel()


async def test_a_value_nobody_watches_is_forgotten_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key nobody watched for WATCH_MEMORY seconds is read again by its next watch."""
    monkeypatch.setattr(sqlite_module, "WATCH_MEMORY", 0.05)
    key, other = keys.pack(("head", 1)), keys.pack(("head", 2))
    kv = SQLiteEngine(tmp_path / "kv.db", poll_interval=0.005)
    reads = _counting_reads(kv, monkeypatch)
    async with kv:
        await kv.transact(setter(key, b"a"))
        watching = asyncio.ensure_future(kv.watch(key, b"a"))
        await asyncio.sleep(0.05)
        await kv.transact(setter(key, b"b"))
        assert await asyncio.wait_for(watching, WAIT) == b"b"
        keeps_polling = asyncio.ensure_future(kv.watch(other, None))
        quick = asyncio.ensure_future(kv.watch(key, b"b"))  # remembered: no read
        await asyncio.sleep(0.05)
        quick.cancel()
        before = len(reads)
        await asyncio.sleep(1.3)  # the poller forgets once a second
        again = asyncio.ensure_future(kv.watch(key, b"b"))
        await asyncio.sleep(0.05)
        assert len(reads) == before + 1, reads[before:]
        assert not again.done()
        again.cancel()
        keeps_polling.cancel()


async def test_the_watch_poller_slows_down_while_the_file_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 10 ms while commits come, every 50 ms once they stopped a while."""
    key, watched = keys.pack(("head", 1)), keys.pack(("head", 2))
    kv = SQLiteEngine(tmp_path / "kv.db", poll_interval=0.01, poll_idle_interval=0.05)
    polls = _traced(kv, monkeypatch, lambda sql, thread: "data_version" in sql)
    async with kv:
        watching = asyncio.ensure_future(kv.watch(watched, None))
        await asyncio.sleep(0.5)
        start = len(polls)
        await asyncio.sleep(1.0)
        quiet = len(polls) - start
        start = len(polls)
        for i in range(100):  # 1 s of commits, 10 ms apart
            await kv.transact(setter(key, f"{i}".encode()))
            await asyncio.sleep(0.01)
        busy = len(polls) - start
        assert not watching.done()
        watching.cancel()
    assert quiet <= 30, f"{quiet} polls in a quiet second (50 ms apart: 20)"
    assert busy >= 40, f"{busy} polls in a busy second (10 ms apart: up to 100)"


async def test_a_steady_stream_of_commits_is_checkpointed_every_n_commits(
    tmp_path: Path,
) -> None:
    """Commits that never pause for ``checkpoint_delay`` are checkpointed every
    ``checkpoint_commits`` commits (and not after each one: a checkpoint's fsync can hold
    up a commit's)."""
    path = tmp_path / "kv.db"
    engine = SQLiteEngine(path, checkpoint_delay=0.1, checkpoint_commits=200, checkpoint_every=60.0)
    async with engine:
        before = path.stat().st_size
        started = time.monotonic()
        for i in range(400):

            def write(tr: Transaction, i: int = i) -> None:
                tr.set(keys.pack(("k", i)), b"v" * 2000)

            await engine.transact(write)
            await asyncio.sleep(0.002)  # a steady stream: no 0.1 s pause (barring stalls)
        took, during = time.monotonic() - started, engine.checkpoints
        # Mid-stream checkpoints, by count (one per 0.1 s would be took / 0.1 of them).
        assert path.stat().st_size > before and during >= 1
        assert during <= 6 < took / 0.1, (during, took)


async def test_the_wal_is_checkpointed_in_the_background_not_by_commits(tmp_path: Path) -> None:
    """Commits never run a checkpoint themselves (their latency would carry it); the
    background checkpointer copies the WAL into the database file soon after: the file
    itself grows to hold the rows while the engine stays open."""
    path = tmp_path / "kv.db"
    engine = SQLiteEngine(path, checkpoint_delay=0.05)
    async with engine:
        assert engine._writer_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = path.stat().st_size
        for i in range(50):

            def write(tr: Transaction, i: int = i) -> None:
                tr.set(keys.pack(("k", i)), b"v" * 2000)

            await engine.transact(write)
        deadline = time.monotonic() + 5
        while path.stat().st_size < before + 100_000 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert path.stat().st_size >= before + 100_000
        assert engine._checkpointer is not None and engine._checkpointer.is_alive()
    assert engine._checkpointer is not None and not engine._checkpointer.is_alive()


async def test_the_wal_stays_under_its_limit_when_checkpoints_never_catch_up(
    tmp_path: Path,
) -> None:
    """The background checkpointer never runs here (as if a commit always landed while
    it ran): past ``wal_limit`` the writer checkpoints itself between two commits, the
    WAL starts over and is truncated back to the limit, and nothing is lost."""
    path, limit = tmp_path / "kv.db", 64 * 1024
    engine = SQLiteEngine(path, checkpoint_delay=3600.0, wal_limit=limit, wal_limit_every=0.0)
    wal = path.with_name(path.name + "-wal")
    async with engine:
        for i in range(200):  # each commit appends at least one 4 kB page: >= 12x the limit

            def write(tr: Transaction, i: int = i) -> None:
                tr.set(keys.pack(("k", i)), b"v" * 500)

            await engine.transact(write)
            assert wal.stat().st_size < 2 * limit, i  # the limit + the frames of one commit
        assert engine.checkpoints == 0 and engine.writer_checkpoints >= 5
        values = await engine.read(lambda tr: tr.get_range(b"", b"\xff"))
        assert [k for k, _ in values] == sorted(keys.pack(("k", i)) for i in range(200))


async def test_the_writer_checkpoints_the_wal_at_most_so_often(tmp_path: Path) -> None:
    """Over the limit for good (as while a long read holds the WAL), the writer does not
    checkpoint after every commit: at most once per ``wal_limit_every``."""
    path = tmp_path / "kv.db"
    engine = SQLiteEngine(path, checkpoint_delay=3600.0, wal_limit=4096, wal_limit_every=3600.0)
    async with engine:
        for i in range(50):
            await engine.transact(setter(keys.pack(("k", i)), b"v" * 500))
        assert engine.writer_checkpoints == 1


# --- the files under the engine ---------------------------------------------------------


def _delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink()


def _replace(path: Path) -> None:
    other = path.with_name("other.db")
    sqlite3.connect(other).close()
    other.replace(path)


def _delete_wal(path: Path) -> None:
    path.with_name(path.name + "-wal").unlink()


@pytest.mark.parametrize("move", [_delete, _replace, _delete_wal])
async def test_a_store_file_deleted_or_replaced_while_open_stops_every_commit(
    tmp_path: Path, move: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    """A commit that went to a file no longer at the store's path is not reported as
    committed (a restart would not find it), and nothing more is written."""
    path = tmp_path / "kv.db"
    async with SQLiteEngine(path, file_check_every=0) as kv:
        await kv.transact(lambda tr: tr.set(b"before", b"1"))
        move(path)
        with pytest.raises(StoreError, match="deleted or replaced while open"):
            await asyncio.wait_for(kv.transact(lambda tr: tr.set(b"lost", b"2")), WAIT)
        with pytest.raises(StoreError, match="deleted or replaced while open"):
            await asyncio.wait_for(kv.transact(lambda tr: tr.set(b"later", b"3")), WAIT)
    assert "was deleted or replaced while the store was open" in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_failed_background_checkpoint_is_tried_again_after_the_next_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint that fails (a full disk: the database file cannot grow) does not end
    the checkpointer: the next commits are checkpointed once the disk has room."""
    failures = [sqlite3.OperationalError("database or disk is full")]
    execute = sqlite_module._Connection.execute

    def full_once(
        conn: sqlite_module._Connection, sql: str, parameters: Any = ()
    ) -> sqlite3.Cursor:
        checkpointer = threading.current_thread().name == "weft-checkpoint"
        if checkpointer and failures and sql.startswith("PRAGMA wal_checkpoint"):
            raise failures.pop()
        return execute(conn, sql, parameters)

    async def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            assert time.monotonic() < deadline, "not in time"
            await asyncio.sleep(0.01)

    monkeypatch.setattr(sqlite_module._Connection, "execute", full_once)
    async with SQLiteEngine(tmp_path / "kv.db", checkpoint_delay=0.01) as kv:
        await kv.transact(lambda tr: tr.set(b"a", b"1"))
        await until(lambda: not failures)
        await kv.transact(lambda tr: tr.set(b"b", b"2"))
        await until(lambda: kv.checkpoints == 1)
        assert kv._checkpointer is not None and kv._checkpointer.is_alive()
    assert "background checkpoint failed: database or disk is full" in caplog.text
    assert "background checkpoints work again" in caplog.text


async def test_a_corrupt_database_fails_transactions_with_store_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Damaged pages (sqlite3.DatabaseError, not an OperationalError) fail a transaction
    with StoreError, as every engine's callers expect, whether the function read them
    or the commit wrote them; the store's failure is not logged as the writer's bug."""
    path = tmp_path / "kv.db"

    def fill(tr: Transaction, value: bytes = b"v") -> None:
        for i in range(2000):
            tr.set(b"k%06d" % i, value * 400)

    async with SQLiteEngine(path) as kv:
        await kv.transact(fill)
    pages = path.stat().st_size // 4096
    with path.open("r+b") as file:
        file.seek(4096 * (pages // 2))
        file.write(b"\x55" * 4096 * 3)
    async with SQLiteEngine(path) as kv:
        with pytest.raises(StoreError, match="malformed"):
            await kv.transact(lambda tr: tr.get_range(b"", b"\xff"))
        with pytest.raises(StoreError, match="malformed"):
            await kv.transact(lambda tr: fill(tr, b"w"))
        await kv.transact(lambda tr: tr.set(b"a", b"1"))  # pages it does not meet still work
    assert "Traceback" not in caplog.text


async def test_a_watch_after_the_store_file_was_deleted_leaves_no_empty_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch poller, started again once watches resume, opened the path with
    SQLite's default of creating a missing file: an empty database was left where the
    store had been, which a restart would open as a new, empty store."""
    monkeypatch.setattr(sqlite_module, "WATCH_MEMORY", 0.0)
    folder = tmp_path / "odd ?#% name"
    path = folder / "kv.db"
    async with SQLiteEngine(path, poll_interval=0.005) as kv:
        await kv.transact(lambda tr: tr.set(b"k", b"1"))
        await asyncio.wait_for(kv.watch(b"k", b"0"), WAIT)  # a poller on the odd path
        poller = kv._poller
        assert poller is not None
        await asyncio.to_thread(poller.join, WAIT)  # it stops 1 s after the last watch
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink()
        watching = asyncio.ensure_future(kv.watch(b"k", b"1"))
        await asyncio.sleep(0.2)
        watching.cancel()
    assert sorted(folder.iterdir()) == []


async def test_a_store_path_that_is_a_symlink_opens_and_its_files_are_checked(
    tmp_path: Path,
) -> None:
    """SQLite keeps the WAL next to the file a symlinked path points to, not next to
    the symlink: the engine looks for it there (it failed to open, FileNotFoundError)."""
    (tmp_path / "real").mkdir()
    path = tmp_path / "kv.db"
    path.symlink_to(tmp_path / "real" / "kv.db")
    async with SQLiteEngine(path, file_check_every=0) as kv:
        await kv.transact(lambda tr: tr.set(b"before", b"1"))
        assert kv._wal_path == (tmp_path / "real" / "kv.db-wal")
        _delete_wal(tmp_path / "real" / "kv.db")
        with pytest.raises(StoreError, match="deleted or replaced while open"):
            await asyncio.wait_for(kv.transact(lambda tr: tr.set(b"lost", b"2")), WAIT)


async def test_a_store_path_written_with_a_leading_double_slash_opens(tmp_path: Path) -> None:
    """sqlite://///x names the path //x, the same file as /x: the connections opened
    with a URI (mode=rw) must not read its first component as a URI authority."""
    path = Path("/" + str(tmp_path / "kv.db"))
    assert str(path).startswith("//")
    async with SQLiteEngine(path) as kv:
        await kv.transact(lambda tr: tr.set(b"a", b"1"))
        assert (await kv.read(lambda tr: tr.get(b"a"))) == b"1"
