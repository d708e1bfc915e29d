"""Time travel on random multi-device histories (hypothesis, real SQLite stores).

Several simulated devices (``pycrdt`` docs) edit documents, now and then sending their
outbox to the log and receiving what others sent, so updates are concurrent and
interleaved. Then:

- ``doc_at(V)`` equals a Doc with exactly the log's updates at or before V applied;
- ``doc_at(T)`` (a time) equals the last version committed at or before T;
- a project restored at a cut X holds each document as it was at X (deleted ones and
  ones created after X left out);
- reverting to X makes the text (and deletion flag) what it was at X, with exactly one
  new update, and a second revert to the same X changes nothing;
- blame gives every character the update that inserted it (ground truth from yrs: the
  item id under each character, via sticky indexes, and each update's clock range from
  the devices' state vectors) and every line the newest of its characters' updates.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Assoc, Doc, Map, Text

from crdt import timetravel as tt
from crdt.history import Append, History
from crdt.kv import open_engine
from crdt.records import state_vector_clocks
from crdt.versionstamp import Versionstamp

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALPHABET = "ab \n\r"  # \r: a lone one ends a line, one before \n does not


def state_vector(doc: Doc[Any]) -> dict[int, int]:
    return state_vector_clocks(doc.get_state())


@dataclass
class Op:
    """One device update: its bytes and the clock range of the items it inserted."""

    doc: str
    update: bytes
    user: str
    client: int
    clocks: tuple[int, int]


@dataclass
class Device:
    name: str
    docs: dict[str, Doc[Any]] = field(default_factory=dict)
    outbox: list[int] = field(default_factory=list)  # op numbers not sent yet
    seen: int = 0  # how much of the log this device has received


@dataclass
class Scenario:
    ops: list[Op]
    log: list[list[int]]  # batches of op numbers, in arrival order


def _doc(device: Device, path: str, number: int) -> Doc[Any]:
    if path not in device.docs:
        device.docs[path] = Doc(client_id=number * 100 + len(device.docs) + 1)
    return device.docs[path]


@st.composite
def scenarios(draw: st.DrawFn, paths: tuple[str, ...] = ("a.txt",)) -> Scenario:
    devices = [Device(f"user{n}") for n in range(draw(st.integers(2, 3)))]
    ops: list[Op] = []
    log: list[list[int]] = []
    flat: list[int] = []
    for _ in range(draw(st.integers(4, 30))):
        number = draw(st.integers(0, len(devices) - 1))
        device = devices[number]
        action = draw(st.sampled_from(["insert", "insert", "insert", "delete", "send", "flag"]))
        if action == "send":
            if device.outbox:
                log.append(list(device.outbox))
                flat.extend(device.outbox)
                device.outbox.clear()
            for n in flat[device.seen :]:
                op = ops[n]
                _doc(device, op.doc, number).apply_update(op.update)
            device.seen = len(flat)
            continue
        path = draw(st.sampled_from(paths))
        doc = _doc(device, path, number)
        text = doc.get("content", type=Text)
        before = state_vector(doc)
        captured: list[bytes] = []
        sub = doc.observe(lambda event, into=captured: into.append(event.update))
        current = str(text)
        if action == "insert":
            at = draw(st.integers(0, len(current)))
            text.insert(at, draw(st.text(ALPHABET, min_size=1, max_size=6)))
        elif action == "delete" and current:
            start = draw(st.integers(0, len(current) - 1))
            del text[start : draw(st.integers(start + 1, len(current)))]
        elif action == "flag":
            doc.get("weft", type=Map)["deleted"] = draw(st.booleans())
        sub.drop()
        if not captured:
            continue
        after = state_vector(doc)
        client = doc.client_id
        clocks = (before.get(client, 0), after.get(client, 0))
        ops.append(Op(path, captured[0], device.name, client, clocks))
        device.outbox.append(len(ops) - 1)
    for device in devices:  # everyone sends what is left
        if device.outbox:
            log.append(list(device.outbox))
    return Scenario(ops, log)


def doc_of(updates: list[bytes]) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


def seen(doc: Doc[Any]) -> tuple[str, bool]:
    return str(doc.get("content", type=Text)), doc.get("weft", type=Map).get("deleted") is True


@dataclass
class Stored:
    history: History
    order: list[int]  # op numbers in log order (an update already in the log is left out)
    stamps: list[Versionstamp]  # their versionstamps (same order)
    times: list[int]  # their record times


async def store(history: History, scenario: Scenario, tenant: str = "acme") -> Stored:
    order: list[int] = []
    stamps: list[Versionstamp] = []
    for batch in scenario.log:
        items = []
        for n in batch:
            op = scenario.ops[n]
            ref = await history.doc(tenant, "site", op.doc, create=True)
            items.append(Append(ref, op.update, op.user, f"{op.user}-laptop"))
        appended = await history.append(items)
        for n, done in zip(batch, appended, strict=True):
            if done.versionstamp not in stamps:  # the same bytes again: not a new record
                order.append(n)
                stamps.append(done.versionstamp)
        time.sleep(0.002)  # the next batch lands at a later millisecond
    times = []
    for n, vs in zip(order, stamps, strict=True):
        ref = await history.doc(tenant, "site", scenario.ops[n].doc)
        (record,) = await history.updates(ref, until=vs, limit=1, reverse=True)
        times.append(record.ms)
    return Stored(history, order, stamps, times)


def run(scenario: Scenario, check: Any, snapshot_every: int = 4) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with open_engine(f"sqlite:///{Path(tmp) / 'weft.db'}") as kv:
                history = History(kv, snapshot_every=snapshot_every, segment_every=2)
                await history.init()
                stored = await store(history, scenario)
                for path in {op.doc for op in scenario.ops}:
                    await history.snapshot_if_due(await history.doc("acme", "site", path))
                await check(stored)

    asyncio.run(main())


def updates_of(scenario: Scenario, stored: Stored, path: str, upto: int) -> list[bytes]:
    """The updates of ``path`` among the first ``upto`` log entries."""
    ops = [scenario.ops[n] for n in stored.order[:upto]]
    return [op.update for op in ops if op.doc == path]


@given(scenarios(), st.data())
@SETTINGS
def test_show_at_a_versionstamp_replays_exactly_the_updates_up_to_it(
    scenario: Scenario, data: st.DataObject
) -> None:
    async def check(stored: Stored) -> None:
        if not stored.order:  # nothing appended: no tenant, no doc to look up
            return
        ref = await stored.history.doc("acme", "site", "a.txt")
        k = data.draw(st.integers(0, len(stored.order) - 1))
        got = await tt.doc_at(stored.history, ref, tt.Version(stamp=stored.stamps[k]))
        assert (got.text, got.deleted) == seen(doc_of(updates_of(scenario, stored, "a.txt", k + 1)))
        assert got.versionstamp == stored.stamps[k]

    run(scenario, check)


@given(scenarios(), st.data())
@SETTINGS
def test_show_at_a_time_is_the_last_version_at_or_before_it(
    scenario: Scenario, data: st.DataObject
) -> None:
    async def check(stored: Stored) -> None:
        if not stored.order:
            return
        ref = await stored.history.doc("acme", "site", "a.txt")
        # Drawn with constraints that do not depend on the clock (hypothesis replays
        # draws and refuses a strategy that changes between runs): a record's time, or
        # just before or after it.
        index = data.draw(st.integers(0, 1 << 16)) % len(stored.times)
        when = stored.times[index] + data.draw(st.sampled_from((-1, 0, 1)))
        upto = sum(1 for ms in stored.times if ms <= when)
        version = tt.Version(ms=when, label=tt.iso_time(when))
        if upto == 0:
            try:
                await tt.doc_at(stored.history, ref, version)
            except tt.VersionNotFound as exc:
                assert "did not exist" in str(exc)
            else:
                raise AssertionError("a time before the first update must be refused")
            return
        got = await tt.doc_at(stored.history, ref, version)
        assert (got.text, got.deleted) == seen(doc_of(updates_of(scenario, stored, "a.txt", upto)))
        assert got.versionstamp == stored.stamps[upto - 1]

    run(scenario, check)


@given(scenarios(paths=("a.txt", "b/c.md", "d.txt")), st.data())
@SETTINGS
def test_restore_at_a_cut_holds_each_document_as_it_was_then(
    scenario: Scenario, data: st.DataObject
) -> None:
    async def check(stored: Stored) -> None:
        if not stored.order:
            return
        k = data.draw(st.integers(0, len(stored.order) - 1))
        cut = await tt.cut_at(stored.history, "acme", "site", tt.Version(stamp=stored.stamps[k]))
        got = {
            f.path: (f.data.decode(), f.versionstamp) async for f in tt.files(stored.history, cut)
        }
        expected = {}
        for path in sorted({op.doc for op in scenario.ops}):
            updates = updates_of(scenario, stored, path, k + 1)
            text, deleted = seen(doc_of(updates))
            if updates and not deleted:
                last = max(i for i in range(k + 1) if scenario.ops[stored.order[i]].doc == path)
                expected[path] = (text, stored.stamps[last])
        assert got == expected
        entries = [tt.File(p, t.encode(), v).manifest_entry() for p, (t, v) in got.items()]
        listed = tt.manifest(cut, entries)
        assert [f["path"] for f in listed["files"]] == sorted(got)

    run(scenario, check)


@given(scenarios(), st.data())
@SETTINGS
def test_revert_makes_the_document_what_it_was_with_one_new_update(
    scenario: Scenario, data: st.DataObject
) -> None:
    async def check(stored: Stored) -> None:
        if not stored.order:
            return
        history = stored.history
        ref = await history.doc("acme", "site", "a.txt")
        k = data.draw(st.integers(0, len(stored.order) - 1))
        target = tt.Version(stamp=stored.stamps[k])
        then = await tt.doc_at(history, ref, target)
        head = await tt.doc_at(history, ref, tt.HEAD_VERSION)
        count = len(await history.updates(ref, limit=10_000))
        done = await tt.revert_doc(history, ref, target, user="ada", device="cli")
        after = await tt.doc_at(history, ref, tt.HEAD_VERSION)
        grown = len(await history.updates(ref, limit=10_000)) - count
        # a deleted target sets the flag and leaves the text, as a deletion does
        assert (after.text, after.deleted) == (
            (head.text, True) if then.deleted else (then.text, False)
        )
        changed = (head.text, head.deleted) != (after.text, after.deleted)
        assert grown == (1 if changed else 0)
        assert (done.versionstamp is not None) == changed
        again = await tt.revert_doc(history, ref, target, user="ada", device="cli")
        assert again.versionstamp is None
        (last,) = await history.updates(ref, limit=1, reverse=True)
        if changed:
            assert (last.user, last.client, last.versionstamp) == ("ada", "cli", done.versionstamp)

    run(scenario, check)


@given(scenarios(paths=("a.txt", "b.txt")), st.data())
@SETTINGS
def test_project_revert_restores_the_cut_deleting_newer_documents(
    scenario: Scenario, data: st.DataObject
) -> None:
    async def check(stored: Stored) -> None:
        if not stored.order:
            return
        history = stored.history
        k = data.draw(st.integers(0, len(stored.order) - 1))
        target = tt.Version(stamp=stored.stamps[k])
        before = await tt.cut_at(history, "acme", "site", target)
        then = {f.path: f.data async for f in tt.files(history, before)}
        await tt.revert_project(history, "acme", "site", target, user="ada", device="cli")
        now = await tt.cut_at(history, "acme", "site", tt.HEAD_VERSION)
        assert {f.path: f.data async for f in tt.files(history, now)} == then

    run(scenario, check)


@given(scenarios(), st.data())
@SETTINGS
def test_blame_gives_each_character_its_inserting_update_and_each_line_the_newest(
    scenario: Scenario, data: st.DataObject
) -> None:
    async def check(stored: Stored) -> None:
        mine = [i for i, n in enumerate(stored.order) if scenario.ops[n].doc == "a.txt"]
        if not mine:
            return
        history = stored.history
        ref = await history.doc("acme", "site", "a.txt")
        k = data.draw(st.sampled_from(mine))
        result = await tt.blame(history, ref, tt.Version(stamp=stored.stamps[k]))
        doc = doc_of(updates_of(scenario, stored, "a.txt", k + 1))
        text = doc.get("content", type=Text)
        assert result.text == str(text)
        # ground truth: the item id under each character (yrs), and which op made it
        record_of: dict[int, int] = {}
        for position, i in enumerate(mine):
            if i <= k:
                op = scenario.ops[stored.order[i]]
                for clock in range(*op.clocks):
                    record_of.setdefault(op.client * 1_000_000 + clock, position)
        expected = []
        for index in range(len(str(text))):  # ASCII: byte index == character index
            item = text.sticky_index(index, Assoc.AFTER).to_json()["item"]
            expected.append(record_of.get(item["client"] * 1_000_000 + item["clock"], -1))
        got = [record for start, end, record in result.spans for _ in range(start, end)]
        assert got == expected
        # lines: the newest update among each line's characters, its ending included (a
        # line ends at \n, at \r not followed by \n, as in a diff)
        lines: list[int] = []
        current = -1
        plain = str(text)
        for i, (ch, record) in enumerate(zip(plain, expected, strict=True)):
            current = max(current, record)
            if ch == "\n" or (ch == "\r" and plain[i + 1 : i + 2] != "\n"):
                lines.append(current)
                current = -1
        if plain and plain[-1] not in "\r\n":
            lines.append(current)
        stamps = [stored.stamps[mine[r]] if r >= 0 else None for r in lines]
        assert [line.author.versionstamp if line.author else None for line in result.lines] == (
            stamps
        )
        users = {stored.stamps[i]: scenario.ops[stored.order[i]].user for i in mine}
        for line in result.lines:
            assert line.author is not None
            assert line.author.user == users[line.author.versionstamp]

    run(scenario, check)
