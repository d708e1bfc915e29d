"""Document history on a real SQLite store: append, idempotency, chunks, snapshots, replay."""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

import crdt.history as history_module
from crdt import keys
from crdt.appending import RANGE_GROUP, _idempotency_keys
from crdt.errors import NotFound, PermissionDenied, TransactionTooLarge
from crdt.history import (
    MAX_BATCH_UPDATES,
    MAX_UPDATE_BYTES,
    Append,
    DocRef,
    History,
    _build,
    _replay_reads,
    update_hash,
)
from crdt.kv import Engine, open_engine
from crdt.kv.base import ReadTransaction, Transaction, read_counter
from crdt.records import CHUNK, encode_record, first_struct


@pytest.fixture
async def history(kv: Engine) -> History:
    h = History(kv, snapshot_every=5)
    await h.init()
    return h


class Device:
    """A pycrdt doc that hands out one update per edit."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)

    def insert(self, at: int, s: str) -> bytes:
        before = self.doc.get_state()
        self.text.insert(at, s)
        return self.doc.get_update(before)

    def append(self, s: str) -> bytes:
        return self.insert(len(self.text), s)


def text_of(doc: Doc[Any]) -> str:
    return str(doc.get("content", type=Text))


async def raw_keys(kv: Engine, prefix: bytes) -> list[bytes]:
    begin, end = keys.prefix_range(prefix)
    return [k for k, _ in await kv.read(lambda tr: tr.get_range(begin, end))]


async def test_a_batch_is_one_transaction_with_one_versionstamp_per_update(
    history: History,
) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    results = await history.append([Append(ref, dev.append(c)) for c in "abc"])
    assert [r.duplicate for r in results] == [False] * 3
    assert len({r.versionstamp.tr_version for r in results}) == 1
    assert [r.versionstamp.user for r in results] == [0, 1, 2]
    assert await history.head(ref) == results[-1].versionstamp
    assert text_of((await history.replay(ref)).doc) == "abc"


async def test_a_projects_change_marker_is_its_last_appends_commit(history: History) -> None:
    """What the document list's ETag is: moved by every append to any document of the
    project (one batch touching two projects moves both), by nothing else; a list read
    with the marker it has is not read again."""
    a = await history.doc("acme", "site", "a.md", create=True)
    b = await history.doc("acme", "site", "dir/b.md", create=True)
    other = await history.doc("acme", "blog", "a.md", create=True)
    assert await history.docs_unless("acme", "site", ()) == (None, [])  # none yet
    dev = Device()
    first = await history.append([Append(a, dev.append("x")), Append(other, Device().append("y"))])
    marker, listed = await history.docs_unless("acme", "site", ())
    assert marker is not None and marker[:10] == first[0].versionstamp.tr_version
    assert [d.path for d in listed or []] == ["a.md"]
    assert (await history.docs_unless("acme", "blog", ()))[0] == marker  # same commit
    assert await history.docs_unless("acme", "site", {marker}) == (marker, None)
    later = await history.append([Append(b, Device().append("z"))])
    moved, listed = await history.docs_unless("acme", "site", {marker})
    assert moved is not None and moved[:10] == later[0].versionstamp.tr_version
    assert [d.path for d in listed or []] == ["a.md", "dir/b.md"]
    assert (await history.docs_unless("acme", "blog", {marker}))[1] is None  # unmoved
    # A re-sent update appends nothing, and moves nothing.
    again = await history.append([Append(b, dev.append("w")), Append(a, dev.doc.get_update())])
    last = (await history.docs_unless("acme", "site", ()))[0]
    assert last is not None and last[:10] == again[0].versionstamp.tr_version
    resent = await history.append([Append(a, dev.doc.get_update())])
    assert resent[0].duplicate
    assert (await history.docs_unless("acme", "site", {moved}))[0] == last


async def test_a_store_restored_from_a_backup_never_repeats_a_change_marker(
    tmp_path: Path,
) -> None:
    """A restored store makes commits again with the versionstamps of the lost ones: a
    marker a device held from before the restore named the list of a later commit with
    the same versionstamp, and its poll got a 304 with its stale list (real files)."""
    live, backup = tmp_path / "weft.db", tmp_path / "backup.db"

    async def appended(path: str, text: str) -> bytes:
        async with open_engine(f"sqlite:///{live}") as kv:
            history = History(kv)
            await history.init()
            doc = await history.doc("acme", "site", path, create=True)
            await history.append([Append(doc, Device().append(text))])
            marker, _ = await history.docs_unless("acme", "site", ())
            assert marker is not None
            return marker

    await appended("a.md", "one")
    shutil.copy(live, backup)  # (the engine is closed: its WAL was checkpointed)
    held = await appended("a.md", "two")  # the device's marker, and its list: a.md
    shutil.copy(backup, live)  # the restore: "two" is lost
    while (marker := await appended("b.md", "new")) < held[:10]:
        pass
    assert marker[:10] == held[:10]  # the same commit versionstamp again
    async with open_engine(f"sqlite:///{live}") as kv:
        history = History(kv)
        _, listed = await history.docs_unless("acme", "site", {held})
    assert [d.path for d in listed or []] == ["a.md", "b.md"]


async def test_resending_an_update_is_a_no_op_returning_its_versionstamp(
    history: History, kv: Engine
) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    first, second = dev.append("hello"), dev.append(" world")
    original = await history.append([Append(ref, first), Append(ref, second)])
    before = await kv.read(lambda tr: tr.get_range(b"", b"\xff"))
    # the second copy comes with its digest precomputed (as the server hands it over)
    again = await history.append(
        [Append(ref, second, digest=update_hash(second)), Append(ref, first)]
    )
    assert [a.versionstamp for a in again] == [original[1].versionstamp, original[0].versionstamp]
    assert all(a.duplicate for a in again)
    assert await kv.read(lambda tr: tr.get_range(b"", b"\xff")) == before
    assert len(await history.updates(ref)) == 2


def varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def test_first_struct_reads_the_id_an_update_starts_at() -> None:
    dev = Device()
    first, second = dev.append("ab"), dev.append("c")
    client = varuint(dev.doc.client_id)
    assert first_struct(first) == (client, 0)
    assert first_struct(second) == (client, 2)
    for _ in range(200):
        last = dev.append("d")
    assert first_struct(last) == (client, 202)
    assert first_struct(b"\x00\x00") is None  # an empty update: no structs
    for garbage in (b"", b"\x01", b"\x01\x01\xff", b"\x01\x01" + b"\xff" * 20 + b"\x01\x00"):
        assert first_struct(garbage) is None
    for clock in (0, 127, 128, 16383, 16384, 2**21, 2**53, 2**63):  # every varuint length
        header = varuint(3) + varuint(1) + varuint(2**40) + varuint(clock)
        assert first_struct(header + b"\x00") == (varuint(2**40), clock)
    assert first_struct(b"\x00\x01\x07\x05") is None  # no struct groups
    assert first_struct(b"\x01\x00\x07\x05") is None  # an empty first group


def first_struct_by_hand(update: bytes) -> tuple[bytes, int] | None:
    """first_struct's contract, decoded byte by byte: four varuints (at most 10 bytes
    each) within the first 40 bytes; neither of the first two the single byte 0."""
    window, pos, parts = update[:40], 0, []
    for _ in range(4):
        start = pos
        while pos < len(window) and window[pos] >= 0x80:
            pos += 1
        if pos >= len(window) or pos - start > 9:
            return None
        pos += 1
        parts.append(window[start:pos])
    if parts[0] == b"\x00" or parts[1] == b"\x00":
        return None
    return parts[2], sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(parts[3]))


@given(
    st.one_of(
        st.binary(max_size=48),
        st.lists(st.integers(0, 2**70), min_size=1, max_size=5).map(
            lambda ns: b"".join(varuint(n) for n in ns)
        ),
    ),
    st.binary(max_size=8),
)
def test_first_struct_equals_decoding_the_header_by_hand(head: bytes, rest: bytes) -> None:
    """Idempotency keys are built from it: any change of its answer would file re-sent
    updates under new keys."""
    assert first_struct(head + rest) == first_struct_by_hand(head + rest)


async def test_a_run_of_one_clients_resent_updates_is_found_by_its_range_read(
    history: History, kv: Engine
) -> None:
    """A client's run of at least RANGE_GROUP updates is checked with one range read:
    re-sent copies (mixed with new ones, out of order) get their original versionstamps."""
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    old = [dev.append(c) for c in "abcdefghijkl"]
    new = [dev.append(c) for c in "mnopqrst"]
    original = await history.append([Append(ref, u) for u in old])
    mixed = [*reversed(old[2:]), *new]
    assert len(mixed) >= 2 * RANGE_GROUP
    again = await history.append([Append(ref, u) for u in mixed])
    by_update = {u: a.versionstamp for u, a in zip(old, original, strict=True)}
    assert [a.duplicate for a in again] == [True] * 10 + [False] * 8
    assert [a.versionstamp for a in again[:10]] == [by_update[u] for u in mixed[:10]]
    assert text_of((await history.replay(ref)).doc) == "abcdefghijklmnopqrst"
    assert len(await raw_keys(kv, ref.key("i"))) == 20


async def test_a_crowded_range_falls_back_to_lookups(history: History) -> None:
    """Re-sent updates whose clocks are far apart span more stored entries than the
    range read may return: they are looked up one by one, and all are found."""
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    updates = [dev.append("x") for _ in range(100)]
    original = await history.append([Append(ref, u) for u in updates])
    spread = [updates[n] for n in range(0, 100, 10)]  # clocks 0, 10, ..., 90
    assert len(spread) >= RANGE_GROUP
    again = await history.append([Append(ref, u) for u in spread])
    assert all(a.duplicate for a in again)
    assert [a.versionstamp for a in again] == [original[n].versionstamp for n in range(0, 100, 10)]


async def test_replayed_state_keeps_an_update_still_waiting_for_its_dependency(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log can end with an update whose dependency never arrived: the doc holds it
    pending, and ``state()`` must still carry it (``Doc.get_update`` leaves it out), with
    or without a snapshot in between (written here at once, not deferred)."""
    monkeypatch.setattr(history_module, "PENDING_DEFER", 1)
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    first, second = dev.append("hello"), dev.append(" world")
    await history.append([Append(ref, second)])  # arrives before what it builds on
    for taken in (False, True):
        if taken:
            other = Device()  # enough unrelated updates for a snapshot to be due
            await history.append([Append(ref, other.insert(0, "x")) for _ in range(5)])
            assert await history.snapshot_if_due(ref) is not None
        replayed = await history.replay(ref)
        rebuilt: Doc[Any] = Doc()
        rebuilt.apply_update(replayed.state())
        rebuilt.apply_update(first)  # the dependency arrives at last
        assert "hello world" in text_of(rebuilt), taken


# Found by tests/property/test_history_props.py: client 1 sets the map entry weft.deleted
# (1,0); (1,1)..(1,3) insert text after client 2's; (1,4) sets the entry again and
# deletes (1,0). Client 2's updates arrive last, so (1,1)..(1,4) wait for them.
_DEFERRED_DELETE = [
    b"\x01\x01\x01\x00(\x01\x04weft\x07deleted\x01y\x00",
    b"\x01\x01\x01\x01D\x02\x01\x01a\x00",
    b"\x01\x01\x01\x02D\x01\x01\x01a\x00",
    b"\x01\x01\x01\x03D\x01\x02\x01a\x00",
    b"\x01\x01\x01\x04\xa8\x01\x00\x01y\x01\x01\x01\x00\x01",
]
_DEPENDENCIES = [
    b"\x01\x01\x02\x00\x04\x01\x07content\x01a\x00",
    b"\x01\x01\x02\x01D\x02\x00\x01a\x00",
    b"\x01\x01\x02\x02D\x02\x01\x01a\x00",
]


async def test_replayed_state_applies_a_pending_updates_deletions_at_once(
    history: History,
) -> None:
    """What ``state()`` cannot keep: yrs holds a pending update's deletions back with
    it, while a doc built from ``state()`` (the pending update merged in, as Yjs's
    ``encodeStateAsUpdate`` does) deletes the items it already has at once, as a Yjs
    doc fed the same log would. Until the dependencies arrive the two show different
    maps; then they converge. Pinned here: a pycrdt that changes either side fails it."""
    ref = await history.doc("acme", "site", "a.md", create=True)
    await history.append([Append(ref, u) for u in _DEFERRED_DELETE])
    replayed = await history.replay(ref)
    rebuilt: Doc[Any] = Doc()
    rebuilt.apply_update(replayed.state())
    assert replayed.doc.get("weft", type=Map).to_py() == {"deleted": False}
    assert rebuilt.get("weft", type=Map).to_py() == {}
    for update in _DEPENDENCIES:
        replayed.doc.apply_update(update)
        rebuilt.apply_update(update)
    for doc in (replayed.doc, rebuilt):
        assert (text_of(doc), doc.get("weft", type=Map).to_py()) == ("aaaaaa", {"deleted": False})


def test_idempotency_keys_equal_the_tuple_layers() -> None:
    """The hand-built keys are exactly ``doc.key(...)`` of the tuple layer, for digests
    with 0x00 bytes (escaped), for an update without structs, and for first-struct
    clocks of every packed size (headers made by hand: only the header is read)."""
    ref = DocRef("acme", "site", "a.md", b"\x15\x01", b"\x15\x01\x02")
    dev = Device()
    updates = [dev.append(c) for c in "ab"] + [b"\x00\x00"]
    digests = [b"\x00" * 16, b"\x01\x00\xff" + b"\x00" * 13, update_hash(b"x")]
    items = [Append(ref, u, digest=d) for u, d in zip(updates, digests, strict=True)]
    clocks = [127, 128, 255, 256, 2**55, 2**56 - 1, 2**56, 2**63, 2**64 - 1, 2**64]
    headers = [b"\x01\x01" + varuint(7) + varuint(clock) + b"\x00" for clock in clocks]
    built, groups = _idempotency_keys(items + [Append(ref, h) for h in headers])
    client = varuint(dev.doc.client_id)
    assert groups == {
        ref.key("i", client): [0, 1],  # D + (i, client): its clocks follow
        ref.key("i", varuint(7)): list(range(3, 3 + len(headers))),
    }
    assert built == [
        ref.key("i", client, 0, digests[0]),
        ref.key("i", client, 1, digests[1]),
        ref.key("h", digests[2]),
        *(
            ref.key("i", varuint(7), clock, update_hash(h))
            for clock, h in zip(clocks, headers, strict=True)
        ),
    ]


@given(ms=st.integers(min_value=0, max_value=2**64 + 5), user=st.integers(0, 0xFFFF))
def test_append_keys_equal_the_tuple_layers(ms: int, user: int) -> None:
    """The keys an append packs once per doc are the tuple layer's, and the time-index
    key built by hand is ``keys.pack_incomplete`` for every ms (all int sizes)."""
    ref = DocRef("acme", "site", "a.md", b"\x15\x01", b"\x15\x01\x02")
    ak = ref.append_keys
    assert ref.append_keys is ak  # packed once
    assert [ak.head, ak.n, ak.bytes, ak.ms, ak.i, ak.h, ak.t] == [
        ref.key(name) for name in ("head", "n", "bytes", "ms", "i", "h", "t")
    ]
    assert (
        ak.meta
        == keys.pack(("doc", "site", "a.md"), b"\x15\x01")
        == keys.doc_meta(b"\x15\x01", "site", "a.md")
    )
    assert ak.records.key(user, 0) == keys.pack_incomplete(("u",), user, (0,), ref.space)
    assert ak.time_key(ms, user) == keys.pack_incomplete(("t", ms), user, (), ref.space)
    assert ref == DocRef("acme", "site", "a.md", b"\x15\x01", b"\x15\x01\x02")  # cache not compared


@given(
    update=st.binary(max_size=70_000),
    user=st.text(max_size=40),
    client=st.text(max_size=300),
    session=st.text(max_size=5),
    ms=st.integers(0, 2**63 - 1),
)
def test_encode_record_is_msgpack_of_the_record(
    update: bytes, user: str, client: str, session: str, ms: int
) -> None:
    expected = msgpack.packb(
        {"update": update, "user": user, "client": client, "session": session, "ms": ms}
    )
    assert encode_record(update, user, client, session, ms) == expected


async def test_idempotency_entries_are_filed_by_client_and_clock(
    history: History, kv: Engine
) -> None:
    """One client's entries sit next to each other, in clock order (inserts stay local
    in the index); an update without structs (only deletions) is filed by its hash."""
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    updates = [dev.append(c) for c in "abcd"]
    before = dev.doc.get_state()
    dev.text.clear()
    deletion = dev.doc.get_update(before)
    assert first_struct(deletion) is None
    await history.append([Append(ref, u) for u in reversed(updates)])
    await history.append([Append(ref, deletion)])
    client = varuint(dev.doc.client_id)
    filed = await raw_keys(kv, ref.key("i"))
    assert filed == sorted(filed)
    assert [keys.unpack(k, ref.key("i"))[:2] for k in filed] == [(client, n) for n in range(4)]
    assert await raw_keys(kv, ref.key("h")) == [
        keys.pack_bytes_after(ref.key("h"), update_hash(deletion))
    ]
    again = await history.append([Append(ref, u) for u in (*updates, deletion)])
    assert all(a.duplicate for a in again)


async def test_a_store_from_before_1_3_still_finds_its_idempotency_entries(
    history: History, kv: Engine
) -> None:
    """Entries written under the old key (h, hash) by an older weft are found after the
    upgrade, and the store remembers it needs the second lookup."""
    import msgpack

    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    update = dev.append("x")
    [original] = await history.append([Append(ref, update)])
    new_key = keys.pack(("i", varuint(dev.doc.client_id), 0, update_hash(update)), ref.space)
    old_key = keys.pack_bytes_after(ref.key("h"), update_hash(update))

    def downgrade(tr: Transaction) -> None:  # what a 1.2 store holds
        tr.set(old_key, tr.get(new_key) or b"")
        tr.clear(new_key)
        tr.set(keys.FORMAT, msgpack.packb({"major": 1, "minor": 2}))

    await kv.transact(downgrade)
    blind = History(kv)  # never told about the old key: would store it again
    upgraded = History(kv)
    await upgraded.init()
    assert upgraded.legacy_idempotency
    [again] = await upgraded.append([Append(ref, update)])
    assert again.duplicate and again.versionstamp == original.versionstamp
    reopened = History(kv)
    await reopened.init()  # the format record says 1.3 now, and keeps the flag
    assert reopened.legacy_idempotency
    [copy] = await blind.append([Append(ref, update)])
    assert not copy.duplicate  # the lookup the flag adds is what finds it


async def test_one_batch_appends_to_many_docs(history: History, kv: Engine) -> None:
    a = await history.doc("acme", "site", "a.md", create=True)
    b = await history.doc("acme", "site", "dir/b.md", create=True)
    da, db = Device(), Device()
    updates = [da.append("1"), db.append("x"), da.append("2")]
    results = await history.append(
        [Append(a, updates[0]), Append(b, updates[1]), Append(a, updates[2])]
    )
    assert await history.head(a) == results[2].versionstamp
    assert await history.head(b) == results[1].versionstamp
    assert text_of((await history.replay(a)).doc) == "12"
    assert text_of((await history.replay(b)).doc) == "x"
    infos = {i.path: i for i in await history.docs("acme", "site")}
    assert sorted(infos) == ["a.md", "dir/b.md"]
    assert (infos["a.md"].count, infos["dir/b.md"].count) == (2, 1)
    assert infos["a.md"].size == len(updates[0]) + len(updates[2])
    assert infos["a.md"].head == results[2].versionstamp
    assert read_counter(await kv.read(lambda tr: tr.get(a.key("n")))) == 2


async def test_metadata_is_kept_per_update(history: History) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    start = time.time_ns() // 1_000_000
    update = dev.append("hi")
    [appended] = await history.append(
        [Append(ref, update, user="ana", client="laptop-1", session="s-9")]
    )
    [record] = await history.updates(ref)
    assert record.versionstamp == appended.versionstamp
    assert (record.update, record.user, record.client, record.session) == (
        update,
        "ana",
        "laptop-1",
        "s-9",
    )
    assert start <= record.ms <= time.time_ns() // 1_000_000
    assert record.size == len(update)


async def test_large_updates_are_chunked_and_read_back_whole(history: History, kv: Engine) -> None:
    ref = await history.doc("acme", "site", "big.txt", create=True)
    dev = Device()
    small = dev.append("start ")
    big = dev.append("x" * (3 * CHUNK))
    await history.append([Append(ref, small), Append(ref, big), Append(ref, dev.append("!"))])
    parts = await raw_keys(kv, ref.key("u"))
    assert len(parts) >= 3 + 2  # the big record spans several keys
    assert all(
        len(v) <= CHUNK
        for _, v in await kv.read(lambda tr: tr.get_range(*keys.prefix_range(ref.key("u"))))
    )
    records = await history.updates(ref)
    assert [r.update for r in records] == [small, big, records[2].update]
    first_two = await history.updates(ref, limit=2)  # a limit never cuts a record in parts
    assert [r.update for r in first_two] == [small, big]
    assert text_of((await history.replay(ref)).doc) == "start " + "x" * (3 * CHUNK) + "!"


async def test_a_page_limit_counts_updates_not_the_chunks_they_are_stored_in(
    history: History,
) -> None:
    """Paging until a short page (as a room's tail reader and a device's outbox do)
    sees every update, chunked ones included: a limit of n gives n updates while there
    are more, however many parts they take; newest first too."""
    ref = await history.doc("acme", "site", "paged.txt", create=True)
    dev = Device()
    updates = [dev.append("x" * (2 * CHUNK)), *(dev.append(str(n)) for n in range(4))]
    updates.insert(3, dev.append("y" * (3 * CHUNK)))
    for update in updates:
        await history.append([Append(ref, update)])
    for page_size in (1, 2, 3, 4):
        seen: list[bytes] = []
        cursor = None
        while True:
            page = await history.updates(ref, after=cursor, limit=page_size)
            seen += [r.update for r in page]
            if len(page) < page_size:
                break
            cursor = page[-1].versionstamp
        assert seen == updates, page_size
    for n in range(1, len(updates) + 1):
        newest = await history.updates(ref, limit=n, reverse=True)
        assert [r.update for r in newest] == updates[::-1][:n]


async def test_an_update_over_the_limit_is_refused_and_nothing_written(
    history: History, kv: Engine
) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    before = await kv.read(lambda tr: tr.get_range(b"", b"\xff"))
    with pytest.raises(TransactionTooLarge):
        await history.append(
            [Append(ref, Device().append("ok")), Append(ref, b"\0" * (MAX_UPDATE_BYTES + 1))]
        )
    assert await kv.read(lambda tr: tr.get_range(b"", b"\xff")) == before


async def test_batches_too_big_for_one_transaction_are_split(history: History) -> None:
    ref = await history.doc("acme", "site", "many.md", create=True)
    dev = Device()
    updates = [dev.append("a") for _ in range(MAX_BATCH_UPDATES + 50)]
    results = await history.append([Append(ref, u) for u in updates])
    stamps = [r.versionstamp for r in results]
    assert len(set(stamps)) == len(updates)
    assert len({s.tr_version for s in stamps}) >= 2
    assert len(await history.updates(ref, limit=0)) == len(updates)
    assert text_of((await history.replay(ref)).doc) == "a" * len(updates)


async def test_replay_at_versions_and_times(history: History) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    stamps, times = [], []
    for word in ["one", " two", " three"]:
        [r] = await history.append([Append(ref, dev.append(word))])
        stamps.append(r.versionstamp)
        times.append(time.time_ns() // 1_000_000)
        await asyncio.sleep(0.01)
    assert [text_of((await history.replay(ref, vs)).doc) for vs in stamps] == [
        "one",
        "one two",
        "one two three",
    ]
    for vs in stamps:
        replayed = await history.replay(ref, vs)
        assert replayed.versionstamp == vs
    assert await history.version_at_time(ref, times[1]) == stamps[1]
    assert await history.version_at_time(ref, times[0] - 10_000) is None
    at_time = await history.replay_at_time(ref, times[1])
    assert text_of(at_time.doc) == "one two"
    before_anything = await history.replay_at_time(ref, times[0] - 10_000)
    assert before_anything.versionstamp is None and text_of(before_anything.doc) == ""


async def test_updates_page_forwards_and_backwards(history: History) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    results = await history.append([Append(ref, dev.append(str(i))) for i in range(10)])
    stamps = [r.versionstamp for r in results]

    async def page(**kwargs: Any) -> list[int]:
        return [stamps.index(r.versionstamp) for r in await history.updates(ref, **kwargs)]

    assert await page() == list(range(10))
    assert await page(limit=3) == [0, 1, 2]
    assert await page(after=stamps[2], limit=3) == [3, 4, 5]
    assert await page(after=stamps[2], until=stamps[5]) == [3, 4, 5]
    assert await page(reverse=True, limit=2) == [9, 8]
    assert await page(until=stamps[4], reverse=True, limit=2) == [4, 3]
    assert await page(after=stamps[9]) == []


async def test_snapshots_every_n_updates_change_no_result(history: History, kv: Engine) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    dev = Device()
    stamps, taken = [], []
    for i in range(12):
        [r] = await history.append([Append(ref, dev.append(f"{i},"))])
        stamps.append(r.versionstamp)
        snapshot = await history.snapshot_if_due(ref)
        if snapshot is not None:
            taken.append((stamps.index(snapshot.versionstamp), snapshot.count))
    assert taken == [(4, 5), (9, 10)]
    assert len({keys.unpack(k, ref.key("s"))[0] for k in await raw_keys(kv, ref.key("s"))}) == 2
    for n, vs in enumerate(stamps):
        replayed = await history.replay(ref, vs)
        assert text_of(replayed.doc) == "".join(f"{i}," for i in range(n + 1))
        assert replayed.updates_applied <= 5  # bounded by the snapshot interval
    assert await history.snapshot_if_due(ref) is None  # 2 updates since: not due


async def test_segments_make_old_versions_cheap_and_change_no_result(kv: Engine) -> None:
    history = History(kv, snapshot_every=20, segment_every=4)
    plain = History(kv, snapshot_every=10_000)
    ref = await history.doc("acme", "site", "seg.md", create=True)
    dev = Device()
    stamps = []
    for i in range(45):
        [r] = await history.append([Append(ref, dev.insert(i % 3, f"{i};"))])
        stamps.append(r.versionstamp)
        await history.snapshot_if_due(ref)
    segments = {keys.unpack(k, ref.key("g"))[0] for k in await raw_keys(kv, ref.key("g"))}
    assert segments == {stamps[i] for i in range(3, 40, 4)}  # written with the 2 snapshots
    for n, vs in enumerate(stamps):
        fast = await history.replay(ref, vs)
        without_segments = functools.partial(_replay_reads, doc=ref, at=vs)
        slow_snapshot, _, slow_records = await kv.read(without_segments)
        slow = _build(slow_snapshot, slow_records)
        assert text_of(fast.doc) == text_of(slow.doc) == text_of((await plain.replay(ref, vs)).doc)
        assert fast.versionstamp == vs
        assert fast.updates_applied <= (3 if n < 40 else 5)


async def test_snapshots_by_bytes_and_chunked_snapshots(kv: Engine) -> None:
    history = History(kv, snapshot_every=1000, snapshot_bytes=150_000)
    ref = await history.doc("acme", "site", "big.md", create=True)
    dev = Device()
    await history.append([Append(ref, dev.append("y" * 100_000))])
    assert await history.snapshot_if_due(ref) is None
    await history.append([Append(ref, dev.append("z" * 100_000))])
    snapshot = await history.snapshot_if_due(ref)
    assert snapshot is not None and len(snapshot.state) > CHUNK
    assert len(await raw_keys(kv, ref.key("s"))) >= 3
    replayed = await history.replay(ref)
    assert replayed.updates_applied == 0
    assert text_of(replayed.doc) == "y" * 100_000 + "z" * 100_000


async def test_a_load_due_for_a_snapshot_writes_it(kv: Engine, tmp_path: Path) -> None:
    """A device loads its documents with History.load: when its history is due for a
    snapshot, the load writes it (the bytes snapshot_if_due writes: the same fresh
    build), so the next load and replay apply nothing. Before, a device whose documents
    got a few big updates per run never snapshotted and replayed everything each time."""
    history = History(kv, snapshot_every=1000, snapshot_bytes=150_000)
    ref = await history.doc("acme", "site", "big.md", create=True)
    dev = Device()
    updates = [dev.append("y" * 100_000), dev.append("z" * 100_000)]
    await history.append([Append(ref, updates[0])])
    first = await history.load(ref)
    assert (first.snapshot, first.records, first.size) == (None, 1, len(updates[0]))
    await history.append([Append(ref, updates[1])])
    loaded = await history.load(ref)
    assert loaded.snapshot is not None and (loaded.records, loaded.size) == (0, 0)
    assert text_of(loaded.replayed.doc) == "y" * 100_000 + "z" * 100_000
    assert loaded.replayed.updates_applied == 2
    again = await history.load(ref)
    assert again.snapshot is None and again.replayed.updates_applied == 0
    assert text_of(again.replayed.doc) == text_of(loaded.replayed.doc)
    assert (await history.replay(ref)).updates_applied == 0
    async with open_engine(f"sqlite:///{tmp_path / 'other.db'}") as other_kv:
        other = History(other_kv, snapshot_every=1000, snapshot_bytes=150_000)
        other_ref = await other.doc("acme", "site", "big.md", create=True)
        for update in updates:
            await other.append([Append(other_ref, update)])
        written = await other.snapshot_if_due(other_ref)
    assert written is not None and written.state == loaded.snapshot.state


async def test_a_whole_project_at_one_version(history: History) -> None:
    a = await history.doc("acme", "site", "a.md", create=True)
    b = await history.doc("acme", "site", "b.md", create=True)
    da, db = Device(), Device()
    [first] = await history.append([Append(a, da.append("a1"))])
    await asyncio.sleep(0.01)
    cut_ms = time.time_ns() // 1_000_000
    await asyncio.sleep(0.01)
    await history.append([Append(b, db.append("b1")), Append(a, da.append("a2"))])
    early = await history.replay_project("acme", "site", first.versionstamp)
    assert {p: text_of(r.doc) for p, r in early.items()} == {"a.md": "a1"}
    now = await history.replay_project("acme", "site")
    assert {p: text_of(r.doc) for p, r in now.items()} == {"a.md": "a1a2", "b.md": "b1"}
    assert await history.project_cut("acme", "site", cut_ms) == first.versionstamp


async def test_tenants_are_isolated_by_prefix(history: History) -> None:
    one = await history.create_tenant("one")
    assert await history.create_tenant("one") == one
    two = await history.create_tenant("two")
    assert one != two
    a1 = await history.doc("one", "site", "a.md")
    a2 = await history.doc("two", "site", "a.md")
    assert a1.space.startswith(one) and a2.space.startswith(two)
    await history.append([Append(a1, Device().append("tenant one"))])
    assert text_of((await history.replay(a2)).doc) == ""
    assert await history.docs("two", "site") == []
    assert sorted(await history.tenants()) == ["one", "two"]
    with pytest.raises(NotFound):
        await history.doc("nobody", "site", "a.md")


async def test_a_reader_of_an_unknown_tenant_gets_an_unborn_reference_that_writes_nothing(
    history: History, kv: Engine
) -> None:
    """``doc_to_read``: an unknown tenant is no NotFound but an unborn reference (one per
    tenant name) whose document reads empty, which no append takes and which leaves
    the store as it was; once the tenant is created, ``tenant_created`` returns and
    the reader's next reference is the document's own."""

    def everything(tr: ReadTransaction) -> list[tuple[bytes, bytes]]:
        return tr.get_range(b"", b"\xff")

    before = await kv.read(everything)
    ref = await history.doc_to_read("newco", "site", "a.md")
    assert ref.unborn and ref.tenant_prefix == keys.unborn_prefix("newco")
    other = await history.doc_to_read("otherco", "site", "a.md")
    assert other.space != ref.space  # readers of two unknown tenants never share a room
    assert text_of((await history.replay(ref)).doc) == "" and await history.head(ref) is None
    with pytest.raises(PermissionDenied):
        await history.append([Append(ref, Device().append("never stored"))])
    waiting = asyncio.ensure_future(history.tenant_created("newco"))
    await asyncio.sleep(0.05)
    assert not waiting.done() and await kv.read(everything) == before
    await history.create_tenant("newco")
    await asyncio.wait_for(waiting, 5)
    assert not (await history.doc_to_read("newco", "site", "a.md")).unborn


async def test_a_new_history_object_finds_existing_tenants(history: History, kv: Engine) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    await history.append([Append(ref, Device().append("kept"))])
    again = History(kv)
    other: DocRef = await again.doc("acme", "site", "a.md")
    assert other == ref
    assert text_of((await again.replay(other)).doc) == "kept"


def test_decode_records_matches_the_general_path_in_every_shape() -> None:
    """One pass for one-part records; chunked records and corrupt values take the
    general path (joined, or a StoreError naming the corruption)."""
    from crdt.errors import StoreError
    from crdt.records import chunks, decode_record, decode_records, encode_record, group_parts
    from crdt.versionstamp import Versionstamp

    prefix = keys.pack(("u",), b"D")
    dev = Device()
    small = [encode_record(dev.append(c), "u", "c", "s", 7) for c in "abc"]
    big = encode_record(dev.append("x" * (3 * CHUNK)), "u", "c", "s", 8)

    def rows(values: list[bytes]) -> list[tuple[bytes, bytes]]:
        out = []
        for n, value in enumerate(values):
            vs = Versionstamp((n + 1).to_bytes(10, "big") + b"\x00\x00")
            out += [(keys.pack((vs, part), prefix), c) for part, c in enumerate(chunks(value))]
        return out

    def general(pairs: list[tuple[bytes, bytes]]) -> list[object]:
        return [decode_record(vs, v) for vs, v in group_parts(pairs, prefix)]

    for values in (small, [*small, big], [big]):
        pairs = rows(values)
        assert decode_records(pairs, prefix) == general(pairs)
        assert decode_records(pairs[::-1], prefix) == general(pairs[::-1])
    assert len(rows([big])) > 1 and decode_records(rows([big]), prefix)[0].size > 3 * CHUNK
    with pytest.raises(StoreError, match="corrupt record"):
        decode_records(rows([*small, b"\xc1garbage"]), prefix)


async def test_a_repeat_across_the_parts_of_a_split_append_is_not_a_duplicate(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append over MAX_BATCH_UPDATES is split in several transactions; an update
    repeated in a later part gets the first copy's versionstamp, and, as a repeat inside
    one transaction, is not marked a duplicate (it was not in the log before)."""
    monkeypatch.setattr(history_module, "MAX_BATCH_UPDATES", 3)
    ref = await history.doc("acme", "site", "split.txt", create=True)
    dev = Device()
    updates = [dev.append(str(n)) for n in range(7)]
    results = await history.append([Append(ref, u) for u in [*updates, updates[0]]])
    assert len({r.versionstamp for r in results}) == 7
    assert results[-1] == results[0] and not results[-1].duplicate
    again = await history.append([Append(ref, updates[0])])
    assert again[0].versionstamp == results[0].versionstamp and again[0].duplicate


async def test_a_snapshot_waits_while_the_document_holds_pending_updates(
    history: History,
) -> None:
    """A snapshot taken while an update waits for its dependency would keep it apart
    from the state, and replaying from it is not always replaying the log in order; it
    is deferred until the dependency came (or PENDING_DEFER x snapshot_every records)."""
    ref = await history.doc("acme", "site", "deferred.md", create=True)
    dev, other = Device(), Device()
    first, second = dev.append("hello"), dev.append(" world")
    await history.append([Append(ref, second)])  # before what it builds on
    await history.append([Append(ref, other.append(str(n))) for n in range(5)])
    assert await history.snapshot_if_due(ref) is None  # due, but " world" is pending
    await history.append([Append(ref, first)])
    snapshot = await history.snapshot_if_due(ref)
    assert snapshot is not None and snapshot.pending == ()
    assert "hello world" in text_of((await history.replay(ref)).doc)

    # A dependency that never comes: the snapshot is written after all, pending kept.
    lost = await history.doc("acme", "site", "lost.md", create=True)
    dev, other = Device(), Device()
    dev.append("never sent")
    await history.append([Append(lost, dev.append(" waiting"))])
    limit = history_module.PENDING_DEFER * history.snapshot_every
    for n in range(2, limit):  # records 2 .. limit - 1
        await history.append([Append(lost, other.append(str(n % 10)))])
        assert await history.snapshot_if_due(lost) is None, n
    await history.append([Append(lost, other.append("."))])
    snapshot = await history.snapshot_if_due(lost)
    assert snapshot is not None and len(snapshot.pending) == 1


async def test_a_path_in_a_log_line_cannot_break_it(
    kv: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A document path may hold U+2028 (a line break to some log viewers); the replay's
    "snapshot is not whole" line escapes it, as the server's lines escape paths."""
    history = History(kv, snapshot_every=5)
    await history.init()
    ref = await history.doc("acme", "site", "a\u2028b.txt", create=True)
    device = Device()
    big = "x" * (3 * CHUNK)  # a snapshot in several parts
    await history.append([Append(ref, device.append(big + f"{i} ")) for i in range(6)])
    assert await history.snapshot_if_due(ref) is not None
    stored = await raw_keys(kv, ref.key("s"))
    assert len(stored) > 1
    await kv.transact(lambda tr: tr.clear(stored[-1]))  # a part missing: not whole
    with caplog.at_level("INFO", logger="weft.history"):
        replayed = await History(kv, snapshot_every=5).replay(ref)
    assert text_of(replayed.doc) == "".join(big + f"{i} " for i in range(6))
    lines = [r.getMessage() for r in caplog.records if "not whole" in r.getMessage()]
    assert lines and all("a\\u2028b.txt" in m and "\u2028" not in m for m in lines), lines
