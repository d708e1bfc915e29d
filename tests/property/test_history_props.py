"""History under reordering and duplication (hypothesis).

Several simulated devices (``pycrdt`` docs with their own client ids) edit a document
and now and then sync with each other, so later updates depend on earlier ones. Their
updates reach the log in a random interleaving (each device's own updates in order, but
updates from other devices they depend on may arrive later), some more than once, in
random batches. Then:

- state at head equals a Doc with every update applied;
- state at each version V equals a Doc with exactly the updates at or before V applied;
- the snapshot interval (and the segments written with snapshots) never changes any of
  these results;
- re-appending any subset changes nothing and returns the original versionstamps.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from crdt.history import Append, History
from crdt.kv import open_engine
from crdt.records import state_vector_clocks
from crdt.versionstamp import Versionstamp

# (snapshot_every, segment_every): snapshots and the segments written with them
SNAPSHOT_INTERVALS = ((1, 1), (3, 1), (5, 2), (10_000, 32))


@dataclass
class Scenario:
    updates: list[bytes]  # every device update, in the order the devices made them
    log: list[int]  # indexes into updates: the arrival order, duplicates included
    batches: list[int]  # sizes of the append batches that deliver ``log``
    resend: list[int]  # indexes re-sent at the end


def state_vector(doc: Doc[Any]) -> dict[int, int]:
    return state_vector_clocks(doc.get_state())


def observed(doc: Doc[Any]) -> tuple[str, dict[str, Any], dict[int, int]]:
    """What a reader can see of a doc: its text, its ``weft`` map, its state vector."""
    text = str(doc.get("content", type=Text))
    meta = doc.get("weft", type=Map).to_py() or {}
    return text, meta, state_vector(doc)


def doc_of(updates: list[bytes]) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    devices: list[Doc[Any]] = [Doc(client_id=n + 1) for n in range(draw(st.integers(2, 3)))]
    updates: list[bytes] = []
    made_by: list[int] = []
    for _ in range(draw(st.integers(1, 14))):
        n = draw(st.integers(0, len(devices) - 1))
        doc = devices[n]
        action = draw(st.sampled_from(["insert", "insert", "delete", "flag", "sync"]))
        if action == "sync":
            other = devices[draw(st.integers(0, len(devices) - 1))]
            doc.apply_update(other.get_update(doc.get_state()))
            continue
        before = doc.get_state()
        text = doc.get("content", type=Text)
        if action == "insert":
            at = draw(st.integers(0, len(text)))
            text.insert(at, draw(st.text("ab\n", min_size=1, max_size=4)))
        elif action == "delete" and len(text):
            at = draw(st.integers(0, len(text) - 1))
            del text[at : min(len(text), at + draw(st.integers(1, 3)))]
        else:
            doc.get("weft", type=Map)["deleted"] = draw(st.booleans())
        update = doc.get_update(before)
        # Two devices deleting the same characters make byte-identical updates: one
        # update to the log (append dedupes it by design), so the scenario keeps one.
        if update != b"\x00\x00" and update not in updates:
            updates.append(update)
            made_by.append(n)
    if not updates:
        updates.append(devices[0].get_update())
        made_by.append(0)
    # An interleaving: each device's updates keep their order (one device sends in
    # order), but another device's updates they depend on may come later.
    queues = [[i for i, by in enumerate(made_by) if by == n] for n in range(len(devices))]
    order = []
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        order.append(queue.pop(0))
    extra = draw(st.lists(st.integers(0, len(updates) - 1), max_size=4))
    log = list(order)
    for index in extra:  # duplicates, each after its first arrival or anywhere later
        log.insert(draw(st.integers(log.index(index) + 1, len(log))), index)
    batches: list[int] = []
    while sum(batches) < len(log):
        batches.append(draw(st.integers(1, len(log) - sum(batches))))
    resend = draw(st.lists(st.integers(0, len(updates) - 1), max_size=5))
    return Scenario(updates, log, batches, resend)


def _check_state(doc: Doc[Any], state: bytes, updates: list[bytes]) -> None:
    """``Replayed.state()``, the doc as one update: a doc built from it shows the same,
    unless ``doc`` holds an update pending (then ``state`` has it merged in, as Yjs's
    ``encodeStateAsUpdate`` does, and yrs defers a pending update's deletions while a
    doc built from the merge applies them at once: see tests/unit/test_replaying.py).
    Either way it holds the same structs, and converges with the rest of the log."""
    built = doc_of([state])
    if state == doc.get_update():  # nothing pending
        assert observed(built) == observed(doc)
    # the same structs (yrs may list a client with clock 0, which means none of its)
    assert {c: n for c, n in state_vector(built).items() if n} == {
        c: n for c, n in state_vector(doc).items() if n
    }
    assert observed(doc_of([state, *updates])) == observed(doc_of(updates))


async def _run(scenario: Scenario, store: Path) -> list[list[tuple[Any, ...]]]:
    """Play the scenario once per snapshot interval; per interval, what each version shows."""
    per_interval = []
    async with open_engine(f"sqlite:///{store}") as kv:
        for interval, segment in SNAPSHOT_INTERVALS:
            history = History(kv, snapshot_every=interval, segment_every=segment)
            ref = await history.doc(f"t{interval}", "p", "notes.md", create=True)
            stamps: list[Versionstamp] = []
            first: dict[int, Versionstamp] = {}
            at = 0
            for size in scenario.batches:
                indexes = scenario.log[at : at + size]
                at += size
                results = await history.append([Append(ref, scenario.updates[i]) for i in indexes])
                earlier = set(first)
                for i, result in zip(indexes, results, strict=True):
                    if i in first:  # a repeat: the original versionstamp; "duplicate"
                        # when the original was in the log before this append
                        assert result.versionstamp == first[i]
                        assert result.duplicate == (i in earlier)
                    else:
                        assert not result.duplicate
                        first[i] = result.versionstamp
                        stamps.append(result.versionstamp)
                await history.snapshot_if_due(ref)
            assert stamps == sorted(stamps), "log order is versionstamp order"
            in_log_order = sorted(first, key=first.__getitem__)

            head = await history.replay(ref)
            assert observed(head.doc) == observed(doc_of(scenario.updates))
            assert head.versionstamp == stamps[-1]
            shown = []
            for n, vs in enumerate(stamps):
                replayed = await history.replay(ref, vs)
                expected = doc_of([scenario.updates[i] for i in in_log_order[: n + 1]])
                assert observed(replayed.doc) == observed(expected), f"state at version {n}"
                _check_state(replayed.doc, replayed.state(), scenario.updates)
                shown.append(observed(replayed.doc))

            again = await history.append(
                [Append(ref, scenario.updates[i]) for i in scenario.resend]
            )
            assert [a.versionstamp for a in again] == [first[i] for i in scenario.resend]
            assert all(a.duplicate for a in again)
            assert await history.head(ref) == stamps[-1]
            assert len(await history.updates(ref, limit=0)) == len(scenario.updates)
            per_interval.append(shown)
    return per_interval


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_history_replays_exactly_what_was_appended(scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        per_interval = asyncio.run(_run(scenario, Path(tmp) / "weft.db"))
    assert all(shown == per_interval[0] for shown in per_interval), "snapshots changed a result"
