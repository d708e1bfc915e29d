"""``History.append_if``: an append stored only if the document's head is still the one
given, checked in the append's own transaction; with two engines on one SQLite file (two
server instances), the other's commit in between is seen."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt.errors import HeadMoved
from crdt.history import Append, History
from crdt.kv import Engine


def update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


async def test_an_append_if_stores_only_on_the_head_it_names(kv: Engine) -> None:
    history = History(kv)
    await history.init()
    doc = await history.doc("acme", "p", "new.txt", create=True)
    ones, twos = update("first"), update("second")
    first = await history.append_if(Append(doc, ones), None)
    with pytest.raises(HeadMoved):
        await history.append_if(Append(doc, twos), None)
    assert await history.head(doc) == first.versionstamp
    assert [r.update for r in await history.updates(doc)] == [ones]
    second = await history.append_if(Append(doc, twos), first.versionstamp)
    assert not second.duplicate and await history.head(doc) == second.versionstamp


async def test_an_append_if_sees_another_instances_commit(
    engines: tuple[Engine, Engine],
) -> None:
    one, two = History(engines[0]), History(engines[1])
    doc_one = await one.doc("acme", "p", "new.txt", create=True)
    doc_two = await two.doc("acme", "p", "new.txt")
    head = await two.head(doc_two)
    assert head is None
    theirs_update, ours_update = update("theirs"), update("ours")
    theirs = await one.append([Append(doc_one, theirs_update)])
    with pytest.raises(HeadMoved):
        await two.append_if(Append(doc_two, ours_update), head)
    assert [r.update for r in await two.updates(doc_two)] == [theirs_update]
    ours = await two.append_if(Append(doc_two, ours_update), theirs[0].versionstamp)
    assert await one.head(doc_one) == ours.versionstamp
