"""How the group-commit writer hands updates to the store and settles them: no task in
between (each one cost a turn of the event loop, on the path of every broadcast), yet
the updates of one turn, and those that queue while a commit is in flight, still share
one transaction. Real SQLite file, real History."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt import history as history_module
from crdt.history import Append, Appended, DocRef, History
from crdt.kv import Engine
from server.writer import Writer


def updates(count: int) -> list[bytes]:
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    out = []
    for i in range(count):
        before = doc.get_state()
        text += str(i % 10)
        out.append(doc.get_update(before))
    return out


async def setup(kv: Engine) -> tuple[History, DocRef]:
    history = History(kv)
    await history.init()
    return history, await history.doc("acme", "site", "a.txt", create=True)


@contextmanager
def turns() -> Iterator[list[int]]:
    """A count of the event loop's turns: one callback that schedules itself again."""
    loop = asyncio.get_running_loop()
    count = [0]
    handle: list[asyncio.Handle] = []

    def tick() -> None:
        count[0] += 1
        handle[:] = [loop.call_soon(tick)]

    handle.append(loop.call_soon(tick))
    try:
        yield count
    finally:
        handle[0].cancel()


def spy_appends(history: History) -> list[int]:
    """The size of each batch the writer hands to ``history``."""
    sizes: list[int] = []
    append_then = history.append_then

    def spy(items: Sequence[Append], done: Callable[..., None]) -> None:
        sizes.append(len(items))
        append_then(items, done)

    history.append_then = spy  # type: ignore[method-assign]
    return sizes


async def test_a_commit_is_settled_in_the_turn_the_store_reports_it(kv: Engine) -> None:
    history, ref = await setup(kv)
    engine: Any = kv  # SQLite: it has transact_then
    transact_then = engine.transact_then
    reported: list[int] = []

    async with Writer(history) as writer:
        with turns() as turn:

            def spy(fn: Any, callback: Callable[[Any], None]) -> None:
                def report(outcome: Any) -> None:
                    reported.append(turn[0])
                    callback(outcome)

                transact_then(fn, report)

            engine.transact_then = spy
            settled = asyncio.get_running_loop().create_future()

            def done(appended: Appended | None, error: BaseException | None) -> None:
                settled.set_result((turn[0], appended, error))

            writer.submit_with(Append(ref, updates(1)[0]), done)
            at, appended, error = await settled
    assert error is None and appended is not None and not appended.duplicate
    assert reported == [at]  # the same turn: no task resumed in between


async def test_updates_of_one_turn_share_a_commit_and_so_do_those_queued_meanwhile(
    kv: Engine,
) -> None:
    history, ref = await setup(kv)
    sizes = spy_appends(history)
    made = updates(8)
    first, second = made[:5], made[5:]
    async with Writer(history) as writer:
        one_turn = [writer.submit(Append(ref, u)) for u in first]
        assert sizes == []  # handed over at the end of the turn, all together
        await asyncio.sleep(0)
        assert sizes == [5]
        meanwhile = [writer.submit(Append(ref, u)) for u in second]  # a commit in flight
        results = await asyncio.gather(*one_turn, *meanwhile)
    assert sizes == [5, 3]
    assert len({r.versionstamp for r in results}) == 8
    replayed = await history.replay(ref)
    assert str(replayed.doc.get("content", type=Text)) == "01234567"


async def test_a_failure_at_handover_fails_its_batch_and_the_writer_goes_on(
    kv: Engine,
) -> None:
    """``append_then`` reporting a failure before it returns (an engine that cannot take
    the transaction) fails that batch only; what queued after it is committed."""
    history, ref = await setup(kv)
    append_then = history.append_then
    failing = [True]

    def fail_once(items: Sequence[Append], done: Callable[..., None]) -> None:
        if failing[0]:
            failing[0] = False
            done(None, RuntimeError("engine is not open"))
            return
        append_then(items, done)

    history.append_then = fail_once  # type: ignore[method-assign]
    one, two = updates(2)
    async with Writer(history) as writer:
        failed = writer.submit(Append(ref, one))
        await asyncio.sleep(0)
        committed = writer.submit(Append(ref, two))
        outcomes = await asyncio.gather(failed, committed, return_exceptions=True)
    assert str(outcomes[0]) == "commit failed: RuntimeError('engine is not open')"
    assert isinstance(outcomes[1], Appended)
    assert writer.failing is None  # a later commit worked


async def test_close_commits_what_is_queued(kv: Engine) -> None:
    history, ref = await setup(kv)
    writer = Writer(history)
    writer.start()
    futures = [writer.submit(Append(ref, u)) for u in updates(3)]
    await writer.close()
    assert all(f.done() and not f.exception() for f in futures)
    assert (await history.replay(ref)).doc.get("content", type=Text).to_py() == "012"


class WithoutCallbacks:
    """The SQLite engine without ``transact_then`` (as the FoundationDB engine is):
    ``History.append_then`` goes through a task running ``append``."""

    def __init__(self, kv: Engine) -> None:
        self.kv, self.url = kv, kv.url

    def __getattr__(self, name: str) -> Any:
        if name == "transact_then":
            raise AttributeError(name)
        return getattr(self.kv, name)


async def test_an_engine_without_callbacks_commits_through_a_task(kv: Engine) -> None:
    history = History(WithoutCallbacks(kv))
    assert not hasattr(history.kv, "transact_then")
    await history.init()
    ref = await history.doc("acme", "site", "a.txt", create=True)
    one, two, three = updates(3)
    async with Writer(history) as writer:
        results = await asyncio.gather(*(writer.submit(Append(ref, u)) for u in (one, two)))
        again = await writer.submit(Append(ref, one))  # a repeat: the first's versionstamp
        await writer.submit(Append(ref, three))
    assert again.duplicate and again.versionstamp == results[0].versionstamp
    assert (await history.replay(ref)).doc.get("content", type=Text).to_py() == "012"


async def test_a_commit_whose_results_cannot_be_read_fails_its_batch_and_the_writer_goes_on(
    kv: Engine,
) -> None:
    """Reading the results of a commit that landed (``History._landed``) raising, as
    ``append`` would raise it: the batch fails, and the writer is not left waiting for
    a callback that never comes (every later update stayed queued, close never
    returned)."""
    history, ref = await setup(kv)
    read_results = history._landed
    failing = [True]

    def fail_once(items: Any, committed: Any) -> list[Appended | None]:
        if failing[0]:
            failing[0] = False
            raise RuntimeError("results unreadable")
        return read_results(items, committed)

    history._landed = fail_once  # type: ignore[method-assign]
    one, two = updates(2)
    writer = Writer(history)
    writer.start()
    async with asyncio.timeout(3):
        failed = await asyncio.gather(writer.submit(Append(ref, one)), return_exceptions=True)
        committed = await writer.submit(Append(ref, two))
        await writer.close()
    assert str(failed[0]) == "commit failed: RuntimeError('results unreadable')"
    assert not committed.duplicate


async def test_an_append_split_in_several_transactions_commits_through_a_task_in_order(
    kv: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch over one transaction's limits (here 2 updates) is appended by a task
    running ``History.append``, one transaction after the other, in submission order."""
    monkeypatch.setattr(history_module, "MAX_BATCH_UPDATES", 2)
    history, ref = await setup(kv)
    sizes = spy_appends(history)
    async with Writer(history) as writer:
        results = await asyncio.gather(*(writer.submit(Append(ref, u)) for u in updates(7)))
    assert sizes == [7]
    stamps = [r.versionstamp for r in results]
    assert stamps == sorted(stamps) and len({s.tr_version for s in stamps}) == 4
    assert (await history.replay(ref)).doc.get("content", type=Text).to_py() == "0123456"


async def test_the_engine_closed_under_the_writer_settles_every_update_once(
    kv: Engine,
) -> None:
    """The batch in flight when the engine closes is committed; what queued after it is
    failed at handover (the engine is not open); each update is settled exactly once."""
    history, ref = await setup(kv)
    made = updates(6)
    outcomes: list[list[BaseException | None]] = [[] for _ in made]
    writer = Writer(history)
    writer.start()

    def submit(i: int) -> None:
        writer.submit_with(Append(ref, made[i]), lambda _, error: outcomes[i].append(error))

    for i in range(3):
        submit(i)
    await asyncio.sleep(0)  # handed over: in flight
    for i in range(3, 6):
        submit(i)
    await kv.close()
    async with asyncio.timeout(3):
        await writer.close()
    assert [len(o) for o in outcomes] == [1] * 6
    assert [o[0] is None for o in outcomes] == [True] * 3 + [False] * 3


async def test_a_batch_whose_settling_fails_midway_still_answers_every_update_once(
    kv: Engine,
) -> None:
    """A bug while settling a landed batch (here: its metrics, after the first update's
    answer) fails the updates not answered yet, and answers none twice; the writer goes
    on. Before, the rest of the batch waited for ever."""
    history, ref = await setup(kv)
    made = updates(4)
    async with Writer(history) as writer:
        answers: list[tuple[Appended | None, BaseException | None]] = []
        settle = writer._settle

        def settle_then_fail(batch: Any, results: Any, exc: Any) -> None:
            batch[0].settle(results[0], None)
            raise RuntimeError("metrics broke")

        writer._settle = settle_then_fail  # type: ignore[method-assign]
        for u in made[:3]:
            writer.submit_with(Append(ref, u), lambda a, e: answers.append((a, e)))
        async with asyncio.timeout(5):
            while len(answers) < 3:
                await asyncio.sleep(0.01)
        writer._settle = settle  # type: ignore[method-assign]
        later = await writer.submit(Append(ref, made[3]))
    assert len(answers) == 3
    assert answers[0][0] is not None and answers[0][1] is None
    assert [str(e) for _, e in answers[1:]] == [
        "commit outcome unknown: RuntimeError('metrics broke')"
    ] * 2
    assert not later.duplicate
