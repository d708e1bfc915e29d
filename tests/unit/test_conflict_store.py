"""Conflict records of any size: stored as a head and a chunked body, read back whole,
never visible half-written; records written whole before format 1.4 still read."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fdb_double import use_fdb_double
from pycrdt import Doc, Map, Text

from crdt import branches, conflict_store, keys
from crdt import history as history_module
from crdt.conflicts import ConflictRecord, Region, Side
from crdt.errors import NotFound, ProtocolError, StoreError
from crdt.history import Append, Appended, DocRef, History
from crdt.kv import Engine, open_engine
from crdt.kv.base import MAX_TRANSACTION, MAX_VALUE, Transaction
from crdt.kv.sqlite import SQLiteEngine
from crdt.versionstamp import Versionstamp


def big_text(lines: int) -> str:
    return "".join(f"line {i} " + "y" * 50 + "\n" for i in range(lines))


def record_of(cid: str, path: str, text: str, *, created_ms: int = 1) -> ConflictRecord:
    """An edit-against-delete record: the text about three times, as the server makes."""
    edited = text.replace("line 9 ", "line 9 edited by X ", 1)
    return ConflictRecord(
        id=cid,
        path=path,
        base="00" * 12,
        ours=Side(users=["y"], clients=["y"], versionstamps=["01" * 12]),
        theirs=Side(users=["x"], clients=["x"], versionstamps=["02" * 12]),
        regions=[Region(0, text.count("\n"), text, "", edited)],
        merged_text=edited,
        created_ms=created_ms,
        deleted="ours",
    )


@pytest.fixture(params=["sqlite", "fdb-double"])
async def history(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[History]:
    """On SQLite, and on the FoundationDB engine over the in-memory FDB test double
    (``tests/contract/fdb_double.py``: FDB's value, key and transaction size limits,
    not FDB itself), the engine whose limits chunked records are for."""
    if request.param == "sqlite":
        engine: Engine = SQLiteEngine(tmp_path / "weft.db")
    else:
        double = use_fdb_double(monkeypatch)
        request.addfinalizer(double.stop)
        engine = open_engine(f"fdb://{tmp_path / 'double.cluster'}")
    async with engine as kv:
        h = History(kv)
        await h.init()
        yield h


async def doc_in(history: History, path: str = "big.txt") -> DocRef:
    return await history.doc("acme", "site", path, create=True)


def size(record: ConflictRecord) -> int:
    return len(msgpack.packb(record.to_dict()))


async def commit(
    history: History, doc: DocRef, user: str, edit: Callable[[Doc[Any]], None]
) -> list[Appended]:
    """Edit the document at head as ``user``'s device and commit the edit."""
    device: Doc[Any] = Doc()
    device.apply_update((await history.replay(doc)).state())
    before = device.get_state()
    edit(device)
    return await history.append([Append(doc, device.get_update(before), user, user)])


def rewrite_line_9(device: Doc[Any]) -> None:
    text = device.get("content", type=Text)
    at = str(text).index("line 9 ")
    end = str(text).index("\n", at)
    del text[at:end]
    text.insert(at, "line 9 edited by X")


def delete_file(device: Doc[Any]) -> None:
    device.get("weft", type=Map)["deleted"] = True


async def test_an_edit_against_a_deletion_of_a_40_kb_file_is_stored_and_read_whole(
    history: History,
) -> None:
    doc = await doc_in(history)
    text = big_text(700)  # 42 kB: the record holds it three times, over the value limit
    [seeded] = await commit(
        history, doc, "seed", lambda d: d.get("content", type=Text).insert(0, text)
    )
    await commit(history, doc, "x", rewrite_line_9)
    branch = await commit(history, doc, "y", delete_file)
    record = await branches.detect_branch(history, doc, seeded.versionstamp, branch)
    assert record is not None and record.deleted == "ours"
    assert size(record) > MAX_VALUE

    await branches.save(history, doc, record)
    await branches.save(history, doc, record)  # idempotent
    assert await branches.get_conflict(history, "acme", "site", record.id) == record
    assert (await branches.list_conflicts(history, "acme", "site")).records == [record]
    done = await branches.resolve(history, "acme", "site", record.id, user="dana", resolution="ok")
    assert (done.status, done.resolved_by, done.resolution) == ("resolved", "dana", "ok")
    assert done.regions == record.regions and done.merged_text == record.merged_text
    again = await branches.resolve(history, "acme", "site", record.id, user="eve")
    assert again == done  # the first resolution stays
    assert (await branches.list_conflicts(history, "acme", "site", status="resolved")).records == [
        done
    ]


@pytest.mark.parametrize("lines", [6_000, 60_000])  # records of ~1 MB and of ~11 MB
async def test_a_record_over_a_megabyte_or_a_transaction_is_stored_whole(
    history: History, lines: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = await doc_in(history)
    record = record_of("0a" * 12, doc.path, big_text(lines))
    assert size(record) > (1_000_000 if lines < 10_000 else MAX_TRANSACTION)
    sizes: list[int] = []
    transact = history.kv.transact

    async def counting(fn: Callable[[Transaction], Any]) -> Any:
        sizes.append(0)

        def measured(tr: Transaction) -> Any:
            set_ = tr.set

            def setting(key: bytes, value: bytes) -> None:
                sizes[-1] += len(key) + len(value)
                set_(key, value)

            tr.set = setting  # type: ignore[method-assign]
            return fn(tr)

        return await transact(measured)

    monkeypatch.setattr(history.kv, "transact", counting)
    await branches.save(history, doc, record)
    assert max(sizes) <= history_module.MAX_BATCH_BYTES + MAX_VALUE
    assert len(sizes) == (1 if lines < 10_000 else 2)
    assert await branches.get_conflict(history, "acme", "site", record.id) == record
    [listed] = (await branches.list_conflicts(history, "acme", "site", path="big.txt")).records
    assert listed == record


async def counted(history: History) -> int:
    """The project's count of conflict head writes, as the document list says it."""
    return (await history.docs_since("acme", "site", None)).conflicts


async def test_a_record_cut_short_is_not_listed_and_a_later_save_stores_it(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "MAX_BATCH_BYTES", 300_000)
    doc = await doc_in(history)
    record = record_of("0b" * 12, doc.path, big_text(6_000))
    calls = 0
    transact = history.kv.transact

    async def crashing(fn: Callable[[Transaction], Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreError("the process died here")
        return await transact(fn)

    monkeypatch.setattr(history.kv, "transact", crashing)
    with pytest.raises(StoreError):
        await branches.save(history, doc, dataclasses.replace(record, created_ms=7))
    monkeypatch.setattr(history.kv, "transact", transact)
    assert (await branches.list_conflicts(history, "acme", "site")).records == []
    assert await counted(history) == 0  # (its head is its count)
    with pytest.raises(NotFound):
        await branches.get_conflict(history, "acme", "site", record.id)
    prefix = doc.tenant_prefix
    bodies = keys.conflict_bodies(prefix, "site", Versionstamp.from_hex(record.id))
    assert await history.kv.read(lambda tr: tr.get_range(*bodies, limit=1))  # parts left

    await branches.save(history, doc, record)  # the retry (another created_ms)
    assert (await branches.list_conflicts(history, "acme", "site")).records == [record]
    assert await counted(history) == 1
    stored = await history.kv.read(lambda tr: tr.get_range(*bodies))
    assert len({keys.unpack(k, prefix)[3] for k, _ in stored}) == 1  # the cut one cleared


async def test_two_writers_of_one_big_record_leave_one_whole_record(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "MAX_BATCH_BYTES", 300_000)
    doc = await doc_in(history)
    one = record_of("0c" * 12, doc.path, big_text(6_000), created_ms=1)
    two = dataclasses.replace(one, created_ms=2)
    await asyncio.gather(branches.save(history, doc, one), branches.save(history, doc, two))
    [stored] = (await branches.list_conflicts(history, "acme", "site")).records
    assert stored in (one, two)
    assert await counted(history) == 1  # (one head written, over several transactions)
    await branches.resolve(history, "acme", "site", one.id, user="ada")
    await branches.resolve(history, "acme", "site", one.id, user="bob")  # (resolved already)
    assert await counted(history) == 2
    bodies = keys.conflict_bodies(doc.tenant_prefix, "site", Versionstamp.from_hex(one.id))
    pairs = await history.kv.read(lambda tr: tr.get_range(*bodies))
    assert len({keys.unpack(k, doc.tenant_prefix)[3] for k, _ in pairs}) == 1


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the records whose bodies ``conflict_store._load_sized`` reads from now on."""
    loaded: list[str] = []
    load = conflict_store._load_sized

    def counting(tr: Any, where: Any, head: bytes) -> tuple[ConflictRecord, int]:
        loaded.append(where.vs.hex())
        return load(tr, where, head)

    monkeypatch.setattr(conflict_store, "_load_sized", counting)
    return loaded


async def test_a_record_written_whole_before_1_4_is_read_and_resolved(history: History) -> None:
    doc = await doc_in(history)
    record = record_of("0d" * 12, doc.path, big_text(300))
    assert size(record) < MAX_VALUE
    key = keys.conflict(doc.tenant_prefix, "site", Versionstamp.from_hex(record.id))
    await history.kv.transact(lambda tr: tr.set(key, msgpack.packb(record.to_dict())))
    assert await branches.get_conflict(history, "acme", "site", record.id) == record
    assert (await branches.list_conflicts(history, "acme", "site", status="open")).records == [
        record
    ]
    big = record_of("0e" * 12, doc.path, big_text(6_000))
    await branches.save(history, doc, big)  # the two forms side by side
    assert (await branches.list_conflicts(history, "acme", "site")).records == [record, big]
    done = await branches.resolve(history, "acme", "site", record.id, user="dana")
    assert done == dataclasses.replace(
        record, status="resolved", resolved_by="dana", resolved_ms=done.resolved_ms
    )
    raw = await history.kv.read(lambda tr: tr.get(key))
    assert raw is not None
    head = msgpack.unpackb(raw)
    assert "body" in head and head["status"] == "resolved"  # now in the new form
    assert await branches.get_conflict(history, "acme", "site", record.id) == done
    assert (await branches.list_conflicts(history, "acme", "site", status="open")).records == [big]


async def test_listing_reads_the_bodies_of_matching_records_only(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc, other = await doc_in(history, "a.txt"), await doc_in(history, "b.txt")
    records = [
        record_of(f"1{i}" * 12, ref.path, big_text(2_000))
        for i, ref in enumerate([doc, other, other])
    ]
    for record in records:
        await branches.save(history, doc, record)
    loaded = count_loads(monkeypatch)
    assert (
        await branches.list_conflicts(history, "acme", "site", path="a.txt")
    ).records == records[:1]
    assert loaded == [records[0].id]
    await branches.resolve(history, "acme", "site", records[1].id, user="dana")
    loaded.clear()
    assert (await branches.list_conflicts(history, "acme", "site", status="open")).records == [
        records[0],
        records[2],
    ]
    assert loaded == [records[0].id, records[2].id]


async def test_the_device_filter_reads_the_bodies_of_that_devices_records_only(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``?device=`` is decided on the head (it names the ``ours`` side's devices): the
    bodies of other devices' records are not read. A head written before heads named
    them has its body read, and is filtered as before."""
    doc = await doc_in(history, "a.txt")

    def of(cid: str, device: str, lines: int = 2_000) -> ConflictRecord:
        record = record_of(cid, doc.path, big_text(lines))
        return dataclasses.replace(record, ours=Side(users=["y"], clients=[device]))

    mine, other, old_mine, old_other = (
        of("21" * 12, "dev-me"),
        of("22" * 12, "dev-other"),
        of("23" * 12, "dev-me"),
        of("24" * 12, "dev-other"),
    )
    for record in (mine, other, old_mine, old_other):
        await branches.save(history, doc, record)
    for record in (old_mine, old_other):  # their heads as written before: no ours_clients
        key = keys.conflict(doc.tenant_prefix, "site", Versionstamp.from_hex(record.id))

        def unnamed(
            tr: Transaction, key: bytes = key, clients: list[str] = record.ours.clients
        ) -> None:
            raw = tr.get(key)
            assert raw is not None
            head = msgpack.unpackb(raw)
            assert head.pop(conflict_store.OURS_CLIENTS) == clients
            tr.set(key, msgpack.packb(head))

        await history.kv.transact(unnamed)
    # written whole, before 1.4: the head is the record, its ours side in it
    whole_mine, whole_other = of("25" * 12, "dev-me", 100), of("26" * 12, "dev-other", 100)
    for record in (whole_mine, whole_other):
        key = keys.conflict(doc.tenant_prefix, "site", Versionstamp.from_hex(record.id))
        value = msgpack.packb(record.to_dict())

        def whole(tr: Transaction, key: bytes = key, value: bytes = value) -> None:
            tr.set(key, value)

        await history.kv.transact(whole)
    loaded = count_loads(monkeypatch)
    listed = (await branches.list_conflicts(history, "acme", "site", device="dev-me")).records
    assert listed == [mine, old_mine, whole_mine]
    assert other.id not in loaded  # its head said it is not this device's
    assert loaded == [mine.id, old_mine.id, old_other.id, whole_mine.id]
    loaded.clear()
    assert (await branches.list_conflicts(history, "acme", "site", device="dev-other")).records == [
        other,
        old_other,
        whole_other,
    ]
    assert loaded == [other.id, old_mine.id, old_other.id, whole_other.id]
    assert (await branches.list_conflicts(history, "acme", "site", device="dev-none")).records == []
    # resolving keeps the head's devices: the resolved record is still filtered on it
    await branches.resolve(history, "acme", "site", mine.id, user="dana")
    loaded.clear()
    assert (
        await branches.list_conflicts(
            history, "acme", "site", status="resolved", device="dev-other"
        )
    ).records == []
    assert loaded == []


async def test_the_side_filter_lists_the_records_naming_the_device_on_that_side(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``side``: ``ours`` (the default) the records made for the device's own edits,
    ``theirs`` those its edits were the other side of, ``either`` both; decided on the
    head (it names both sides' devices). A head written before heads named the
    ``theirs`` side's devices has its body read for ``theirs`` and ``either``."""
    doc = await doc_in(history, "s.txt")

    def of(cid: str, ours: str, theirs: str) -> ConflictRecord:
        record = record_of(cid, doc.path, big_text(200))
        return dataclasses.replace(
            record, ours=Side(users=["u"], clients=[ours]), theirs=Side(clients=[theirs])
        )

    met = of("31" * 12, "dev-a", "dev-me")  # dev-me is the other side
    mine = of("32" * 12, "dev-me", "dev-b")
    none = of("33" * 12, "dev-a", "dev-b")
    old_met, old_none = of("34" * 12, "dev-a", "dev-me"), of("35" * 12, "dev-a", "dev-b")
    for record in (met, mine, none, old_met, old_none):
        await branches.save(history, doc, record)
    for record in (old_met, old_none):  # their heads as written before: no theirs_clients
        key = keys.conflict(doc.tenant_prefix, "site", Versionstamp.from_hex(record.id))

        def unnamed(tr: Transaction, key: bytes = key) -> None:
            raw = tr.get(key)
            assert raw is not None
            head = msgpack.unpackb(raw)
            del head[conflict_store.THEIRS_CLIENTS]
            tr.set(key, msgpack.packb(head))

        await history.kv.transact(unnamed)
    loaded = count_loads(monkeypatch)

    async def listed(side: str = "ours") -> list[ConflictRecord]:
        loaded.clear()
        page = await branches.list_conflicts(history, "acme", "site", device="dev-me", side=side)
        return page.records

    assert await listed() == [mine]  # (ours, the default)
    assert loaded == [mine.id]
    assert (await branches.list_conflicts(history, "acme", "site", device="dev-me")).records == [
        mine
    ]
    assert await listed(side="theirs") == [met, old_met]
    assert loaded == [met.id, old_met.id, old_none.id]  # (the old heads cannot tell)
    assert await listed(side="either") == [met, mine, old_met]
    assert loaded == [met.id, mine.id, old_met.id, old_none.id]
    with pytest.raises(ValueError, match="either"):
        await listed(side="both")


async def test_a_big_report_is_stored_and_a_long_note_refused(history: History) -> None:
    doc = await doc_in(history)
    text = big_text(3_000)  # 180 kB, in ours, theirs and the merged text
    record = ConflictRecord(
        id="",
        path=doc.path,
        base="",
        ours=Side(users=["bob"], clients=["laptop"]),
        theirs=Side(users=["ada"], clients=["c"], versionstamps=["03" * 12]),
        regions=[Region(0, 0, "", text, text.upper())],
        merged_text=text.upper(),
        created_ms=5,
    )
    seed = [doc.path, "laptop", text, "03" * 12]
    first = await branches.save_report(history, doc, record, seed)
    assert first == dataclasses.replace(record, id=first.id)
    assert await branches.save_report(history, doc, record, seed) == first  # a retry
    with pytest.raises(ProtocolError):
        await branches.resolve(history, "acme", "site", first.id, user="d", resolution="n" * 70_000)
    await branches.resolve(history, "acme", "site", first.id, user="d")
    second = await branches.save_report(history, doc, record, seed)
    assert second.id != first.id and second.status == "open"


async def pages(history: History, **filters: Any) -> list[conflict_store.ConflictPage]:
    """Every page of the list, following ``next_after`` to the end."""
    found = [await branches.list_conflicts(history, "acme", "site", **filters)]
    while found[-1].next_after is not None:
        after = found[-1].next_after
        found.append(await branches.list_conflicts(history, "acme", "site", after=after, **filters))
    return found


def small_record(n: int, path: str, device: str) -> ConflictRecord:
    record = record_of(f"{n:024x}", path, f"line 9 of {n}\n")
    return dataclasses.replace(record, ours=Side(users=["y"], clients=[device]))


async def test_a_page_reads_a_bounded_part_of_the_list_and_the_pages_hold_each_record_once(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list was read whole, bodies and all, in one transaction, however many records
    the project had gathered (they are never removed). A page holds up to ``limit``
    records that pass the filters, in id order, and reads at most ``PAGE_HEADS`` heads
    in transactions of ``CHUNK``: a filter that passes few records ends a page early,
    with a ``next_after``, rather than read on to the end."""
    monkeypatch.setattr(conflict_store, "CHUNK", 4)
    monkeypatch.setattr(conflict_store, "PAGE_HEADS", 10)
    doc = await doc_in(history, "a.txt")
    records = [small_record(n, "a.txt", "dev-a" if n % 5 else "dev-b") for n in range(1, 31)]
    for record in records:
        await branches.save(history, doc, record)
    ids = [r.id for r in records]  # (in id order: the ids are their numbers in hex)

    reads = 0
    read = history.kv.read

    async def counted(fn: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read(fn)

    monkeypatch.setattr(history.kv, "read", counted)
    first = await branches.list_conflicts(history, "acme", "site", limit=7)
    assert [r.id for r in first.records] == ids[:7] and first.next_after == ids[6]
    assert reads == 2  # two chunks of 4 heads
    assert [r.id for p in await pages(history, limit=7) for r in p.records] == ids
    reads = 0
    loaded = count_loads(monkeypatch)
    found = await pages(history, device="dev-b", limit=2)
    # 6 records of dev-b among 30: 10 heads a page, at most; the other bodies not read
    assert [r.id for p in found for r in p.records] == ids[4::5] == loaded
    assert [len(p.records) for p in found] == [2, 2, 2, 0]
    assert [p.next_after for p in found] == [ids[9], ids[19], ids[29], None]
    assert reads == 3 * 3 + 1  # (10 heads: 4 + 4 + 2; the last page finds the end)
    assert (await branches.list_conflicts(history, "acme", "site", after=ids[-1])) == (
        conflict_store.ConflictPage([], None)
    )
    with pytest.raises(ValueError, match="1 to 1000 records, not 1001"):
        await branches.list_conflicts(history, "acme", "site", limit=1001)


async def test_a_page_ends_after_about_page_bytes_of_records(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record holds whole texts (a few MiB each): ``limit`` records could be far over
    what one answer should hold. A page ends once what it read passes ``PAGE_BYTES``
    (one record at least)."""
    doc = await doc_in(history)
    records = [record_of(f"3{i}" * 12, doc.path, big_text(2_000)) for i in range(4)]
    for record in records:
        await branches.save(history, doc, record)
    assert [p.records for p in await pages(history)] == [records]
    monkeypatch.setattr(conflict_store, "PAGE_BYTES", 1)
    found = await pages(history)
    assert [p.records for p in found] == [[r] for r in records]
    assert [p.next_after for p in found] == [r.id for r in records[:3]] + [None]
