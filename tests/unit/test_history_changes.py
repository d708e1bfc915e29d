"""The project's change index (format 1.6): ``History.docs_since`` answers the documents
appended to after a change marker, or the whole list when it cannot tell them. Real
SQLite files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pycrdt import Doc, Text

from crdt import keys
from crdt.history import Append, DocList, History
from crdt.kv import Engine, open_engine
from crdt.kv.base import Transaction


@pytest.fixture
async def history(kv: Engine) -> History:
    h = History(kv)
    await h.init()
    return h


class Device:
    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)

    def append(self, s: str) -> bytes:
        before = self.doc.get_state()
        self.text += s
        return self.doc.get_update(before)


async def edit(history: History, *paths: str, project: str = "site") -> None:
    """One append transaction: one update to each of ``paths``."""
    refs = [await history.doc("acme", project, p, create=True) for p in paths]
    await history.append([Append(ref, Device().append(ref.path)) for ref in refs])


async def marker_of(history: History, project: str = "site") -> bytes:
    marker = (await history.docs_since("acme", project, None)).marker
    assert marker is not None
    return marker


def heads(listed: DocList) -> dict[str, Any]:
    return {info.path: info.head for info in listed.infos or []}


async def test_since_a_marker_lists_exactly_the_documents_changed_after_it(
    history: History,
) -> None:
    await edit(history, "a.md", "b.md", "c.md")
    since = await marker_of(history)
    await edit(history, "b.md")
    for _ in range(3):  # several appends to one doc between two polls: listed once
        await edit(history, "c.md")
    await edit(history, "new/d.md")  # a new document
    listed = await history.docs_since("acme", "site", since)
    whole = await history.docs_since("acme", "site", None)
    assert not listed.complete and whole.complete
    assert listed.marker == whole.marker != since
    assert [info.path for info in listed.infos or []] == ["b.md", "c.md", "new/d.md"]
    assert listed.infos == [info for info in whole.infos or [] if info.path != "a.md"]
    # Since the current marker: nothing changed (an empty delta, not the whole list)
    assert await history.docs_since("acme", "site", whole.marker) == DocList(
        whole.marker, [], False
    )
    # Another project's appends are not this one's changes
    await edit(history, "b.md", project="blog")
    assert await history.docs_since("acme", "site", whole.marker) == DocList(
        whole.marker, [], False
    )


async def test_one_transaction_over_two_projects_is_a_marker_of_both(history: History) -> None:
    a = await history.doc("acme", "site", "a.md", create=True)
    b = await history.doc("acme", "blog", "b.md", create=True)
    await history.append([Append(a, Device().append("a")), Append(b, Device().append("b"))])
    shared = await marker_of(history, "site")
    assert await marker_of(history, "blog") == shared
    await edit(history, "c.md", project="blog")
    assert heads(await history.docs_since("acme", "site", shared)) == {}
    assert list(heads(await history.docs_since("acme", "blog", shared))) == ["c.md"]


async def test_a_marker_the_index_cannot_answer_gets_the_whole_list(
    history: History, tmp_path: Path
) -> None:
    """Malformed, made up, of a project the marker's append did not touch, or of
    another store: the whole list, never a delta read from the wrong place."""
    await edit(history, "a.md")
    site = await marker_of(history)
    await edit(history, "b.md", project="blog")
    blog = await marker_of(history, "blog")
    async with open_engine(f"sqlite:///{tmp_path / 'other.db'}") as kv:
        other = History(kv)
        await other.init()
        await edit(other, "a.md")
        foreign = await marker_of(other)
    assert foreign[:10] == site[:10]  # both stores' first commit: the same versionstamp
    await edit(history, "c.md")
    made_up = site[:10] + bytes(8)
    for since in (foreign, made_up, blog, site[:10], b"", bytes(18), b"\xff" * 18):
        listed = await history.docs_since("acme", "site", since)
        assert listed.complete and list(heads(listed)) == ["a.md", "c.md"], since


async def test_a_marker_from_before_a_restore_gets_the_whole_list(tmp_path: Path) -> None:
    """A restored store makes commits again with the versionstamps of the lost ones: a
    marker held from before the restore names one of them, and a delta from it would
    leave out what the restore took away and put back (real files)."""
    live, backup = tmp_path / "weft.db", tmp_path / "backup.db"

    async def appended(path: str) -> bytes:
        async with open_engine(f"sqlite:///{live}") as kv:
            history = History(kv)
            await history.init()
            await edit(history, path)
            return await marker_of(history)

    before = await appended("a.md")
    shutil.copy(live, backup)  # (the engine is closed: its WAL was checkpointed)
    held = await appended("lost.md")  # the device's marker: its list holds lost.md
    shutil.copy(backup, live)  # the restore: lost.md is gone
    while (marker := await appended("b.md"))[:10] < held[:10]:
        pass
    assert marker[:10] == held[:10]  # the same commit versionstamp again
    async with open_engine(f"sqlite:///{live}") as kv:
        history = History(kv)
        listed = await history.docs_since("acme", "site", held)
        assert listed.complete and list(heads(listed)) == ["a.md", "b.md"]
        # a marker from before the backup was taken is the restored store's own
        since_before = await history.docs_since("acme", "site", before)
        assert not since_before.complete and list(heads(since_before)) == ["b.md"]


async def test_a_marker_from_before_the_store_became_1_6_gets_the_whole_list(
    kv: Engine, history: History
) -> None:
    """A store raised from 1.5 has no change index for its earlier appends, only the
    marker 1.5 wrote to a key of its own: it stays the project's marker (a device
    polling with it gets nothing new) until the first append after the raise; a delta
    since it is then the whole list, and since a marker written after the raise a
    delta."""
    await edit(history, "a.md", "b.md")
    old = await marker_of(history)
    prefix = await history.tenant("acme")

    def as_1_5(tr: Transaction) -> None:  # what 1.5 wrote: a marker key, no change index
        tr.clear_range(*keys.prefix_range(keys.project_changes(prefix, "site")))
        tr.set(keys.project_changed(prefix, "site"), old)
        tr.set(keys.FORMAT, msgpack.packb({"major": 1, "minor": 5}))

    await kv.transact(as_1_5)
    raised = History(kv)
    await raised.init()
    raw = await kv.read(lambda tr: tr.get(keys.FORMAT))
    assert raw is not None and msgpack.unpackb(raw) == {"major": 1, "minor": 6}
    assert await raised.docs_since("acme", "site", old, {old}) == DocList(old, None, True)
    assert await raised.docs_since("acme", "site", old) == DocList(old, [], False)
    await edit(raised, "b.md")
    listed = await raised.docs_since("acme", "site", old)
    assert listed.marker not in (None, old)
    assert listed.complete and list(heads(listed)) == ["a.md", "b.md"]
    after = await marker_of(raised)
    await edit(raised, "a.md")
    assert list(heads(await raised.docs_since("acme", "site", after))) == ["a.md"]


async def test_more_changes_than_the_limit_get_the_whole_list(history: History) -> None:
    history.delta_limit = 3
    await edit(history, "a.md", "b.md")
    since = await marker_of(history)
    await edit(history, "a.md", "b.md")  # two entries
    assert list(heads(await history.docs_since("acme", "site", since))) == ["a.md", "b.md"]
    await edit(history, "a.md")  # three
    assert not (await history.docs_since("acme", "site", since)).complete
    await edit(history, "a.md")  # four: over the limit
    assert (await history.docs_since("acme", "site", since)).complete


async def test_a_known_marker_still_answers_nothing_changed(history: History) -> None:
    await edit(history, "a.md")
    marker = await marker_of(history)
    assert await history.docs_since("acme", "site", marker, {marker}) == DocList(marker, None, True)


async def test_re_sent_updates_write_no_change_entry(history: History) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    update = Device().append("x")
    await history.append([Append(ref, update)])
    since = await marker_of(history)
    [again] = await history.append([Append(ref, update)])
    assert again.duplicate
    assert await history.docs_since("acme", "site", since) == DocList(since, [], False)
