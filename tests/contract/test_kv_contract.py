"""The KV contract: what every engine (SQLite, FoundationDB) must do, as one suite.

Every test takes the ``engine`` fixture (see ``conftest.py``) and so runs once per engine.
Second processes are real (``kv_worker.py``) and work on the same store.
"""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import fdb.tuple
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kv_worker import STREAM_VALUE, stream_value

from crdt import keys
from crdt.errors import FormatError, StoreError, TransactionTooLarge
from crdt.history import History
from crdt.kv import Engine, ReadTransaction, Transaction, open_engine
from crdt.kv.base import MAX_KEY, MAX_TRANSACTION, MAX_VALUE, read_counter
from crdt.versionstamp import INCOMPLETE_TR

T = TypeVar("T")
WORKER = Path(__file__).with_name("kv_worker.py")
REPO = Path(__file__).resolve().parents[2]
WAIT = 10.0  # seconds a watch may take to fire before the test fails


def k(*items: keys.Element) -> bytes:
    return keys.pack(items)


def setter(pairs: list[tuple[bytes, bytes]]) -> Callable[[Transaction], None]:
    def fn(tr: Transaction) -> None:
        for key, value in pairs:
            tr.set(key, value)

    return fn


def under(*items: keys.Element) -> tuple[bytes, bytes]:
    return keys.prefix_range(keys.pack(items))


async def get(kv: Engine, key: bytes) -> bytes | None:
    return await kv.read(lambda tr: tr.get(key))


async def rows(kv: Engine, *items: keys.Element) -> list[tuple[bytes, bytes]]:
    begin, end = under(*items)
    return await kv.read(lambda tr: tr.get_range(begin, end))


def start_worker(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


async def run_worker(url: str, *args: str) -> str:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(WORKER), url, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    done = await asyncio.to_thread(run)
    assert done.returncode == 0, f"worker {args} failed:\n{done.stderr}"
    return done.stdout


# --- order, ranges, reads ------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.binary(max_size=12),
    st.text(max_size=8),
    st.uuids(),
)
_elements = st.one_of(_scalars, st.tuples(_scalars, _scalars))
_tuple_keys = st.lists(st.tuples(_elements, _elements), min_size=1, max_size=25)


def _tuple_order(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
    result: int = fdb.tuple.compare(a, b)
    return result


async def test_keys_sort_in_memcmp_order_of_packed_tuples(engine: Engine) -> None:
    """Keys come back in byte order, which for ``fdb.tuple`` keys is tuple order."""
    loop = asyncio.get_running_loop()
    examples = iter(range(10**6))
    ran: list[int] = []

    def on_loop(make: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_tuple_keys)
    def check(tuples: list[tuple[Any, Any]]) -> None:
        ran.append(next(examples))
        prefix = k("order", ran[-1])
        by_key = {fdb.tuple.pack(t): t for t in tuples}

        def write(tr: Transaction) -> None:
            for key in by_key:
                tr.set(prefix + key, b"")

        on_loop(lambda: engine.transact(write))
        begin, end = prefix, keys.strinc(prefix)
        forward = on_loop(lambda: engine.read(lambda tr: tr.get_range(begin, end)))
        backward = on_loop(lambda: engine.read(lambda tr: tr.get_range(begin, end, 3, True)))
        stored = [key[len(prefix) :] for key, _ in forward]
        assert stored == sorted(by_key)
        expected = sorted(by_key.values(), key=functools.cmp_to_key(_tuple_order))
        assert [fdb.tuple.unpack(key) for key in stored] == [
            fdb.tuple.unpack(fdb.tuple.pack(t)) for t in expected
        ]
        assert [key for key, _ in backward] == [key for key, _ in forward][::-1][:3]

    await asyncio.to_thread(check)
    assert len(ran) >= 40


async def test_get_range_bounds_limit_and_reverse(engine: Engine) -> None:
    names = [f"k{i:02d}".encode() for i in range(20)]
    await engine.transact(setter([(k("r", n), n) for n in names]))

    async def scan(lo: int, hi: int, limit: int = 0, reverse: bool = False) -> list[bytes]:
        begin, end = k("r", names[lo]), k("r", names[hi]) if hi < 20 else under("r")[1]
        got = await engine.read(lambda tr: tr.get_range(begin, end, limit, reverse))
        return [v for _, v in got]

    assert await scan(0, 20) == names
    assert await scan(3, 7) == names[3:7]  # begin inclusive, end exclusive
    assert await scan(3, 7, limit=2) == names[3:5]
    assert await scan(3, 7, reverse=True) == names[3:7][::-1]
    assert await scan(3, 7, limit=2, reverse=True) == [names[6], names[5]]
    assert await scan(3, 7, limit=100) == names[3:7]
    assert await scan(5, 5) == []
    assert await engine.read(lambda tr: tr.get_range(k("r", b"z"), k("r", b"a"))) == []
    assert await get(engine, k("r", b"missing")) is None


async def test_get_many_reads_several_keys_in_order(engine: Engine) -> None:
    await engine.transact(setter([(k("m", i), b"%d" % i) for i in range(0, 1200, 2)]))
    wanted = [k("m", i) for i in (5, 4, 4, 1198, 0, 1199)] + [k("m", i) for i in range(1200)]
    got = await engine.read(lambda tr: tr.get_many(wanted))
    assert got == [None, b"4", b"4", b"1198", b"0", None] + [
        b"%d" % i if i % 2 == 0 else None for i in range(1200)
    ]
    assert await engine.read(lambda tr: tr.get_many([])) == []

    def fn(tr: Transaction) -> list[bytes | None]:
        tr.set(k("m", 1), b"new")
        tr.clear(k("m", 2))
        return tr.get_many([k("m", 0), k("m", 1), k("m", 2), k("m", 3)])

    assert (await engine.transact(fn)).result == [b"0", b"new", None, None]


async def test_clear_and_clear_range(engine: Engine) -> None:
    await engine.transact(setter([(k("c", i), b"%d" % i) for i in range(10)]))

    def clear(tr: Transaction) -> None:
        tr.clear(k("c", 0))
        tr.clear_range(k("c", 3), k("c", 6))
        tr.clear(k("c", "never written"))

    await engine.transact(clear)
    assert [keys.unpack(key)[1] for key, _ in await rows(engine, "c")] == [1, 2, 6, 7, 8, 9]


async def test_an_empty_clear_range_writes_nothing(engine: Engine) -> None:
    """FDB drops a clear_range whose end is not after its begin; a transaction with
    nothing else commits nothing (no versionstamp), on every engine alike."""
    await engine.transact(setter([(k("e", i), b"%d" % i) for i in range(3)]))

    def clear_nothing(tr: Transaction) -> None:
        tr.clear_range(k("e", 2), k("e", 2))
        tr.clear_range(k("e", 2), k("e", 1))

    committed = await engine.transact(clear_nothing)
    assert committed.versionstamp is None
    assert len(await rows(engine, "e")) == 3


async def test_a_transaction_reads_its_own_writes(engine: Engine) -> None:
    await engine.transact(setter([(k("y", i), b"old") for i in range(4)]))

    def fn(tr: Transaction) -> list[Any]:
        seen: list[Any] = []
        tr.set(k("y", 1), b"new")
        tr.clear(k("y", 2))
        tr.set(k("y", 9), b"added")
        tr.add(
            k(
                "y-count",
            ),
            5,
        )
        tr.add(
            k(
                "y-count",
            ),
            -2,
        )
        seen.append(tr.get(k("y", 1)))
        seen.append(tr.get(k("y", 2)))
        seen.append([v for _, v in tr.get_range(*under("y"))])
        seen.append(
            read_counter(
                tr.get(
                    k(
                        "y-count",
                    )
                )
            )
        )
        tr.clear_range(*under("y"))
        seen.append(tr.get_range(*under("y")))
        return seen

    committed = await engine.transact(fn)
    assert committed.result == [b"new", None, [b"old", b"new", b"old", b"added"], 3, []]
    assert await rows(engine, "y") == []
    assert read_counter(await get(engine, k("y-count"))) == 3


async def test_a_failing_transaction_writes_nothing(engine: Engine) -> None:
    class Boom(Exception):
        pass

    def bad(tr: Transaction) -> None:
        tr.set(k("f", 1), b"x")
        tr.add(k("f-count"), 1)
        raise Boom

    def bad_after_reading_its_writes(tr: Transaction) -> None:
        # a range read and clears make an engine write before the function returns
        tr.set(k("f", 3), b"z")
        assert tr.get_range(*under("f"))[-1] == (k("f", 3), b"z")
        tr.clear(k("f", 2))
        tr.clear_range(*under("f", 3))
        raise Boom

    def good(tr: Transaction) -> None:
        tr.set(k("f", 2), b"y")

    await engine.transact(good)
    fns = [good, bad, good, bad_after_reading_its_writes] * 3
    outcomes = await asyncio.gather(*(engine.transact(fn) for fn in fns), return_exceptions=True)
    assert [isinstance(o, Boom) for o in outcomes] == [fn is not good for fn in fns]
    assert await rows(engine, "f") == [(k("f", 2), b"y")]
    assert await get(engine, k("f-count")) is None


async def test_a_read_is_a_snapshot_and_does_not_block_writers(engine: Engine) -> None:
    await engine.transact(lambda tr: tr.set(k("snap"), b"before"))
    first_read, release = threading.Event(), threading.Event()

    def long_read(tr: ReadTransaction) -> tuple[bytes | None, bytes | None]:
        before = tr.get(k("snap"))
        first_read.set()
        assert release.wait(WAIT)
        return before, tr.get(k("snap"))

    reading = asyncio.ensure_future(engine.read(long_read))
    assert await asyncio.to_thread(first_read.wait, WAIT)
    started = time.monotonic()
    await asyncio.wait_for(engine.transact(lambda tr: tr.set(k("snap"), b"after")), WAIT)
    assert time.monotonic() - started < WAIT
    assert not reading.done()
    release.set()
    assert await reading == (b"before", b"before")
    assert await get(engine, k("snap")) == b"after"


# --- versionstamps -------------------------------------------------------------------


def commit_version(versionstamp: bytes | None) -> int:
    assert versionstamp is not None
    return int.from_bytes(versionstamp[:8], "big")


async def test_the_read_version_is_at_least_every_completed_commit(engine: Engine) -> None:
    """What tells a future versionstamp from a committed one (time travel refuses the
    future): every commit done before a read is at or below its read version, and one
    that commits after the read began is above it."""
    before = await engine.read(lambda tr: tr.read_version())
    done = commit_version((await engine.transact(setter([(k("rv"), b"1")]))).versionstamp)
    assert before < done <= await engine.read(lambda tr: tr.read_version())

    def write_and_read_version(tr: Transaction) -> int:
        tr.set(k("rv"), b"2")
        return tr.read_version()

    in_write = await engine.transact(write_and_read_version)
    assert done <= in_write.result < commit_version(in_write.versionstamp)

    read_began, release = threading.Event(), threading.Event()

    def long_read(tr: ReadTransaction) -> tuple[bytes | None, int]:
        value = tr.get(k("rv"))
        read_began.set()
        assert release.wait(WAIT)
        return value, tr.read_version()

    reading = asyncio.ensure_future(engine.read(long_read))
    assert await asyncio.to_thread(read_began.wait, WAIT)
    later = await engine.transact(setter([(k("rv"), b"3")]))
    release.set()
    value, version = await reading
    assert value == b"2" and version < commit_version(later.versionstamp)


async def test_versionstamps_increase_strictly_across_commits(engine: Engine) -> None:
    stamps = []
    for i in range(15):
        committed = await engine.transact(setter([(k("v", i), b"")]))
        assert committed.versionstamp is not None and len(committed.versionstamp) == 10
        stamps.append(committed.versionstamp)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    concurrent = await asyncio.gather(
        *(engine.transact(setter([(k("w", i), b"")])) for i in range(40))
    )
    more = [c.versionstamp for c in concurrent]
    assert len(set(more)) == 40
    assert min(s for s in more if s is not None) > stamps[-1]


async def test_versionstamped_keys_and_values_are_filled_at_commit(engine: Engine) -> None:
    def fn(tr: Transaction) -> None:
        for user in range(3):
            key, offset = keys.pack_incomplete(("vk",), user, ("tail",))
            tr.set_versionstamped_key(key, offset, b"%d" % user)
        tr.set_versionstamped_value(k("vv"), b"<" + INCOMPLETE_TR + b">", 1)

    committed = await engine.transact(fn)
    stamp = committed.versionstamp
    assert stamp is not None
    written = await rows(engine, "vk")
    assert len(written) == 3
    for user, (key, value) in enumerate(written):
        _, vs, tail = keys.unpack(key)
        assert (vs.tr_version, vs.user, tail, value) == (stamp, user, "tail", b"%d" % user)
    assert await get(engine, k("vv")) == b"<" + stamp + b">"

    later = await engine.transact(fn)
    assert later.versionstamp is not None and later.versionstamp > stamp
    assert [keys.unpack(key)[1].tr_version for key, _ in await rows(engine, "vk")] == [
        stamp
    ] * 3 + [later.versionstamp] * 3


@pytest.mark.parametrize(
    "read",
    [
        lambda tr: tr.get(k("vv")),
        lambda tr: tr.get_many([k("other"), k("vv")]),
        lambda tr: tr.get_range(k("vk"), k("vk\xff")),
        lambda tr: tr.get_range(k("vk"), k("vk\xff"), limit=1, reverse=True),
        lambda tr: tr.get_range(k("a"), k("z")),
    ],
    ids=["get", "get_many", "range", "range-reverse-limit", "range-around"],
)
async def test_what_a_versionstamped_mutation_wrote_is_unreadable_in_its_transaction(
    engine: Engine, read: Callable[[Transaction], object]
) -> None:
    """FoundationDB learns a versionstamp only at commit: reading what a versionstamped
    mutation wrote, in its own transaction, fails (1036 accessed_unreadable), and the
    transaction with it. Every engine refuses it, so code tried on SQLite is not
    surprised on FoundationDB."""

    def fn(tr: Transaction) -> object:
        key, offset = keys.pack_incomplete(("vk",), 0, ())
        tr.set_versionstamped_key(key, offset, b"x")
        tr.set_versionstamped_value(k("vv"), INCOMPLETE_TR, 0)
        return read(tr)

    await engine.transact(lambda tr: tr.set(k("other"), b"o"))
    with pytest.raises(StoreError):
        await engine.transact(fn)
    assert await rows(engine, "vk") == [] and await get(engine, k("vv")) is None


async def test_an_atomic_add_applies_to_a_versionstamped_value_of_its_transaction(
    engine: Engine,
) -> None:
    """An add reads nothing the caller sees: it works on a key just written by
    set_versionstamped_value (FDB applies the mutations in order at commit)."""

    def fn(tr: Transaction) -> None:
        tr.set_versionstamped_value(k("n"), INCOMPLETE_TR, 0)
        tr.add(k("n"), 1)

    committed = await engine.transact(fn)
    assert committed.versionstamp is not None
    stamped = int.from_bytes(committed.versionstamp[:8], "little")
    assert await get(engine, k("n")) == ((stamped + 1) % (1 << 64)).to_bytes(8, "little")


async def test_reads_beside_a_versionstamped_mutation_work_in_its_transaction(
    engine: Engine,
) -> None:
    """Only what the mutations wrote is unreadable: other keys, ranges beside them,
    and the same keys once committed read as usual."""
    await engine.transact(lambda tr: tr.set(k("a"), b"1"))

    def fn(tr: Transaction) -> object:
        key, offset = keys.pack_incomplete(("vk",), 0, ())
        tr.set_versionstamped_key(key, offset, b"x")
        tr.set_versionstamped_value(k("vv"), INCOMPLETE_TR, 0)
        return tr.get(k("a")), tr.get_range(k("a"), k("v")), tr.get_range(k("w"), k("z"))

    committed = await engine.transact(fn)
    assert committed.result == (b"1", [(k("a"), b"1")], [])
    assert committed.versionstamp is not None
    assert await get(engine, k("vv")) == committed.versionstamp
    assert len(await rows(engine, "vk")) == 1


async def test_a_transaction_that_writes_nothing_has_no_versionstamp(engine: Engine) -> None:
    committed = await engine.transact(lambda tr: tr.get(k("nothing")))
    assert committed.result is None and committed.versionstamp is None


# --- atomic add, conflicts, limits ---------------------------------------------------


async def test_atomic_add_counts_every_concurrent_increment(engine: Engine) -> None:
    await asyncio.gather(*(engine.transact(lambda tr: tr.add(k("n"), 1)) for _ in range(50)))
    await engine.transact(lambda tr: tr.add(k("n"), -8))
    assert read_counter(await get(engine, k("n"))) == 42
    await engine.transact(lambda tr: tr.add(k("wrap"), -1))
    assert await get(engine, k("wrap")) == b"\xff" * 8  # two's complement, like FDB


async def test_conflicting_read_modify_writes_are_retried(engine: Engine) -> None:
    """Non-atomic increments (get, +1, set) from this process and two others add up."""
    runs = 0

    def increment(tr: Transaction) -> None:
        nonlocal runs
        runs += 1
        tr.set(k("rmw"), (read_counter(tr.get(k("rmw"))) + 1).to_bytes(8, "little"))

    async def local() -> None:
        for _ in range(30):
            await engine.transact(increment)

    await asyncio.gather(
        run_worker(engine.url, "rmw", "30"), run_worker(engine.url, "rmw", "30"), local()
    )
    await asyncio.gather(*(engine.transact(increment) for _ in range(20)))
    assert read_counter(await get(engine, k("rmw"))) == 110
    assert runs >= 50


async def test_versionstamped_writes_at_fdb_limits_commit(engine: Engine) -> None:
    def fn(tr: Transaction) -> None:
        tr.set_versionstamped_key(k("big") + b"k" * (MAX_KEY - 4 - len(k("big"))), 0, b"")
        tr.set_versionstamped_value(k("big", "v"), b"v" * (MAX_VALUE - 4), 0)

    committed = await engine.transact(fn)
    assert committed.versionstamp is not None
    assert len(await get(engine, k("big", "v")) or b"") == MAX_VALUE - 4


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda tr: tr.set(b"k" * (MAX_KEY + 1), b""), id="key"),
        pytest.param(lambda tr: tr.set(k("big"), b"v" * (MAX_VALUE + 1)), id="value"),
        pytest.param(  # FDB counts the 4 bytes of the offset it takes after the key
            lambda tr: tr.set_versionstamped_key(b"k" * (MAX_KEY - 3), 0, b""),
            id="versionstamped-key",
        ),
        pytest.param(  # and after the value
            lambda tr: tr.set_versionstamped_value(k("big"), b"v" * (MAX_VALUE - 3), 0),
            id="versionstamped-value",
        ),
        pytest.param(
            lambda tr: [
                tr.set(k("big", i), b"v" * MAX_VALUE)
                for i in range(MAX_TRANSACTION // MAX_VALUE + 1)
            ],
            id="transaction",
        ),
    ],
)
async def test_writes_over_fdb_limits_are_refused_whole(
    engine: Engine, write: Callable[[Transaction], object]
) -> None:
    def fn(tr: Transaction) -> None:
        tr.set(k("big", "first"), b"written before the refused write")
        write(tr)

    with pytest.raises(TransactionTooLarge):
        await engine.transact(fn)
    assert await rows(engine, "big") == []


# --- watches -------------------------------------------------------------------------


async def test_watch_returns_at_once_when_the_value_already_differs(engine: Engine) -> None:
    assert await asyncio.wait_for(engine.watch(k("wk"), b"stale"), WAIT) is None
    await engine.transact(lambda tr: tr.set(k("wk"), b"now"))
    assert await asyncio.wait_for(engine.watch(k("wk"), None), WAIT) == b"now"


async def test_watch_fires_on_a_commit_in_this_process(engine: Engine) -> None:
    await engine.transact(lambda tr: tr.set(k("wk"), b"1"))
    watching = asyncio.ensure_future(engine.watch(k("wk"), b"1"))
    await asyncio.sleep(0.2)
    await engine.transact(lambda tr: tr.set(k("other"), b"x"))
    await asyncio.sleep(0.2)
    assert not watching.done(), "a write to another key fired the watch"
    await engine.transact(lambda tr: tr.set(k("wk"), b"2"))
    assert await asyncio.wait_for(watching, WAIT) == b"2"

    cleared = asyncio.ensure_future(engine.watch(k("wk"), b"2"))
    await asyncio.sleep(0.1)
    await engine.transact(lambda tr: tr.clear(k("wk")))
    assert await asyncio.wait_for(cleared, WAIT) is None


async def test_watch_fires_on_a_commit_from_another_process(engine: Engine) -> None:
    await engine.transact(lambda tr: tr.set(k("wk"), b"mine"))
    watchers = [asyncio.ensure_future(engine.watch(k("wk"), b"mine")) for _ in range(3)]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in watchers)
    await run_worker(engine.url, "set", k("wk").hex(), b"theirs".hex())
    assert await asyncio.wait_for(asyncio.gather(*watchers), WAIT) == [b"theirs"] * 3


async def test_a_cancelled_watch_leaves_the_engine_usable(engine: Engine) -> None:
    watching = asyncio.ensure_future(engine.watch(k("wc"), None))
    await asyncio.sleep(0.1)
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    again = asyncio.ensure_future(engine.watch(k("wc"), None))
    await asyncio.sleep(0.1)
    await engine.transact(lambda tr: tr.set(k("wc"), b"v"))
    assert await asyncio.wait_for(again, WAIT) == b"v"


async def test_a_watch_waiting_when_the_engine_closes_fails_with_store_error(
    engine: Engine,
) -> None:
    """Not a CancelledError: that would look to the watcher's task like its own
    cancellation, and nobody cancelled it."""
    await engine.transact(lambda tr: tr.set(k("wz"), b"1"))
    watching = asyncio.ensure_future(engine.watch(k("wz"), b"1"))
    await asyncio.sleep(0.1)
    await engine.close()
    with pytest.raises(StoreError):
        await asyncio.wait_for(watching, WAIT)


# --- concurrency and crashes ---------------------------------------------------------


async def test_concurrent_writers_in_threads_lose_nothing(engine: Engine) -> None:
    def thread(tid: int) -> None:
        async def work() -> None:
            for i in range(25):

                def fn(tr: Transaction, i: int = i) -> None:
                    tr.set(k("th", tid, i), b"%d" % i)
                    tr.add(k("th-count"), 1)

                await engine.transact(fn)

        asyncio.run(work())

    await asyncio.gather(*(asyncio.to_thread(thread, tid) for tid in range(4)))
    assert len(await rows(engine, "th")) == 100
    assert read_counter(await get(engine, k("th-count"))) == 100


async def test_concurrent_writer_processes_lose_nothing(engine: Engine) -> None:
    async def local() -> None:
        for i in range(40):

            def fn(tr: Transaction, i: int = i) -> None:
                tr.set(k("cw", "local", i), b"")
                tr.add(k("cw-count"), 1)

            await engine.transact(fn)

    await asyncio.gather(
        *(run_worker(engine.url, "write", f"p{p}", "40") for p in range(3)), local()
    )
    written = {keys.unpack(key)[1:] for key, _ in await rows(engine, "cw")}
    expected = {(w, i) for w in ("p0", "p1", "p2", "local") for i in range(40)}
    assert written == expected
    assert read_counter(await get(engine, k("cw-count"))) == 160


def _stream_until_killed(url: str, min_commits: int, rng: random.Random) -> list[int]:
    """Run a ``stream`` worker, SIGKILL it at a random moment; the commits it reported."""
    proc = start_worker(url, "stream", "8")
    assert proc.stdout is not None
    reported: list[int] = []
    deadline = time.monotonic() + 60
    while len(reported) < min_commits:
        line = proc.stdout.readline()
        assert line, f"stream worker died: {proc.stderr.read() if proc.stderr else ''}"
        reported.append(int(line))
        assert time.monotonic() < deadline, "stream worker is too slow"
    time.sleep(rng.uniform(0, 0.05))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    reported += [int(line) for line in out.split()]
    return reported


async def test_kill_9_mid_stream_keeps_every_commit_and_no_partial_one(engine: Engine) -> None:
    rng = random.Random(9)
    for _ in range(3):
        reported = await asyncio.to_thread(_stream_until_killed, engine.url, 10, rng)
        async with open_engine(engine.url) as fresh:  # as a restarted server would
            stored = await rows(fresh, "s")
            last = await get(fresh, k("s-last"))
        groups: dict[int, list[tuple[int, bytes]]] = {}
        for key, value in stored:
            _, i, j = keys.unpack(key)
            groups.setdefault(i, []).append((j, value))
        assert last is not None
        top = int(last)
        assert sorted(groups) == list(range(top + 1)), "a transaction is missing or partial"
        for i, parts in groups.items():
            assert parts == [(j, stream_value(i, j)) for j in range(8)], f"commit {i} is partial"
            assert all(len(v) == STREAM_VALUE for _, v in parts)
        assert max(reported) <= top, "a reported commit is not readable"


# --- formats -------------------------------------------------------------------------


async def test_a_newer_history_format_major_is_refused(engine: Engine) -> None:
    import msgpack

    history = History(engine)
    await history.init()
    await history.init()  # the same format opens again
    await engine.transact(lambda tr: tr.set(keys.FORMAT, msgpack.packb({"major": 1, "minor": 7})))
    await history.init()  # a newer minor is readable
    await engine.transact(lambda tr: tr.set(keys.FORMAT, msgpack.packb({"major": 2, "minor": 0})))
    with pytest.raises(FormatError, match=r"format 2\.0, newer"):
        await History(engine).init()
