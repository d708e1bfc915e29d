"""Conditional items in the group-commit writer (``Append.expect``: a new file's
``create``): appended in the batch's transaction only if their document's head, after
the batch's earlier items, is the one they expect; otherwise that item alone fails with
``HeadMoved`` and nothing of it is written. On SQLite (one transaction callback) and on
the FoundationDB engine over the in-memory FDB test double (the task path)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt.errors import HeadMoved
from crdt.history import Append, Appended, DocRef, Expect, History
from server.writer import Writer


@pytest.fixture
def history(history_on_each_engine: History) -> History:
    return history_on_each_engine


def update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


async def one_batch(history: History, items: list[Append]) -> list[Appended | BaseException]:
    """``items`` submitted in one turn of the loop (so one group commit)."""
    calls: list[int] = []
    append_then = history.append_then

    def counted(batch: Any, done: Any) -> None:
        calls.append(len(batch))
        append_then(batch, done)

    history.append_then = counted  # type: ignore[method-assign,assignment]
    async with Writer(history) as writer, asyncio.timeout(5):
        futures = [writer.submit(item) for item in items]
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert calls == [len(items)]
    return results


async def texts(history: History, doc: DocRef) -> list[bytes]:
    return [r.update for r in await history.updates(doc)]


async def test_a_conditional_item_whose_head_moved_fails_alone(history: History) -> None:
    doc = await history.doc("acme", "p", "new.txt", create=True)
    other = await history.doc("acme", "p", "other.txt")
    stored = update("first")
    (first,) = await history.append([Append(doc, stored)])
    late, beside = update("late"), update("beside")
    results = await one_batch(
        history, [Append(doc, late, expect=Expect(None)), Append(other, beside)]
    )
    assert isinstance(results[0], HeadMoved)
    assert isinstance(results[1], Appended) and not results[1].duplicate
    assert await texts(history, doc) == [stored]
    assert await history.head(doc) == first.versionstamp
    assert await texts(history, other) == [beside]


async def test_a_conditional_item_after_one_of_its_document_in_the_batch_fails(
    history: History,
) -> None:
    """The earlier item moves the head the conditional one expects (read as it was
    before the batch): the conditional one is refused, the earlier one stored."""
    doc = await history.doc("acme", "p", "new.txt", create=True)
    edit, create = update("edit"), update("create")
    results = await one_batch(
        history, [Append(doc, edit), Append(doc, create, expect=Expect(None))]
    )
    assert isinstance(results[0], Appended) and isinstance(results[1], HeadMoved)
    assert await texts(history, doc) == [edit]
    assert await history.head(doc) == results[0].versionstamp


async def test_a_conditional_item_on_the_head_it_expects_is_stored(history: History) -> None:
    """Accepted on the head it names (none, or the document's last update), also after
    an earlier item of another document in the same batch, and before a later item of
    its own document."""
    doc = await history.doc("acme", "p", "new.txt", create=True)
    other = await history.doc("acme", "p", "other.txt")
    await history.append([Append(other, update("first"))])
    beside, create, then = update("beside"), update("create"), update("then")
    created = update("created")
    results = await one_batch(
        history,
        [
            Append(other, beside),
            Append(doc, create, expect=Expect(None)),
            Append(doc, then),
        ],
    )
    assert all(isinstance(r, Appended) and not r.duplicate for r in results)
    assert await texts(history, doc) == [create, then]
    head = await history.head(doc)
    results = await one_batch(history, [Append(doc, created, expect=Expect(head))])
    assert isinstance(results[0], Appended) and await history.head(doc) == results[0].versionstamp
    assert await texts(history, doc) == [create, then, created]
