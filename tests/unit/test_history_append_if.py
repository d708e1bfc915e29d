"""``History.append_if``: an append stored only if the document's head is still the one
given, checked in the append's own transaction (on SQLite, and on the FoundationDB
engine over the in-memory FDB test double); with two engines on one SQLite file (two
server instances), the other's commit in between is seen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fdb_double import use_fdb_double
from pycrdt import Doc, Text

from crdt.errors import HeadMoved
from crdt.history import Append, History
from crdt.kv import Engine, open_engine


@pytest.fixture
def history(history_on_each_engine: History) -> History:
    return history_on_each_engine


def update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


async def test_an_append_if_stores_only_on_the_head_it_names(history: History) -> None:
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


async def test_on_foundationdb_a_commit_between_the_heads_read_and_the_commit_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction stores an update right after the append read the head: the
    append's commit conflicts on the head it read (the FDB double's serializable
    reads), runs again, finds the head moved and stores nothing."""
    double = use_fdb_double(monkeypatch)
    cluster_file = str(tmp_path / "double.cluster")
    try:
        async with open_engine(f"fdb://{cluster_file}") as kv:
            history = History(kv)
            await history.init()
            doc = await history.doc("acme", "p", "new.txt", create=True)
            theirs, ours = update("theirs"), update("ours")
            raced: list[object] = []
            transact = kv.transact

            class Racing:
                """The append's transaction, with another append committed right after
                its first read."""

                def __init__(self, tr: Any) -> None:
                    self.tr = tr

                def __getattr__(self, name: str) -> Any:
                    return getattr(self.tr, name)

                def get_many(self, wanted: list[bytes]) -> list[bytes | None]:
                    values: list[bytes | None] = self.tr.get_many(wanted)
                    if not raced:
                        other = history._append_fn([Append(doc, theirs)])
                        raced.append(kv.transact_sync(other))  # type: ignore[attr-defined]
                    return values

            async def racing(fn: Any) -> Any:
                return await transact(lambda tr: fn(Racing(tr)))

            monkeypatch.setattr(kv, "transact", racing)
            with pytest.raises(HeadMoved):
                await history.append_if(Append(doc, ours), None)
            assert raced and double.cluster(cluster_file).stats["conflicts"] >= 1
            assert [r.update for r in await history.updates(doc)] == [theirs]
    finally:
        double.stop()


async def test_on_foundationdb_an_append_if_whose_commit_was_unknown_is_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FoundationDB answers the commit with 1021 (result unknown) though it happened;
    its retry loop runs the append again, which finds the head moved: by this very
    append (its change-index entry holds the append's random bytes), so it is stored,
    once, and not refused (the device, told so, decided again on its own creation)."""
    double = use_fdb_double(monkeypatch)
    cluster_file = str(tmp_path / "double.cluster")
    try:
        async with open_engine(f"fdb://{cluster_file}") as kv:
            history = History(kv)
            await history.init()
            doc = await history.doc("acme", "p", "new.txt", create=True)
            ours = update("ours")
            double.cluster(cluster_file).inject(1021, applied=True)
            appended = await history.append_if(Append(doc, ours), None)
            assert double.cluster(cluster_file).stats["on_error:1021"] == 1
            assert not appended.duplicate
            assert await history.head(doc) == appended.versionstamp
            assert [r.update for r in await history.updates(doc)] == [ours]
            # Another append's update at that head is still refused.
            with pytest.raises(HeadMoved):
                await history.append_if(Append(doc, update("theirs")), None)
    finally:
        double.stop()
