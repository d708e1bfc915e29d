"""``ydecode.deletes_within`` against the obvious set arithmetic, and against real delete
sets (a document's, and a document's after more deletions)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from crdt import ydecode

ranges = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 40), st.integers(0, 8)), max_size=12)


def clocks(deletes: list[tuple[int, int, int]]) -> set[tuple[int, int]]:
    return {(client, c) for client, clock, length in deletes for c in range(clock, clock + length)}


@given(ranges, ranges)
@settings(max_examples=500, deadline=None)
def test_agrees_with_set_containment(deletes: list[Any], known: list[Any]) -> None:
    assert ydecode.deletes_within(deletes, known) == (clocks(deletes) <= clocks(known))


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_a_documents_delete_set_holds_an_older_one_and_not_a_newer_one(
    cuts: list[tuple[int, int]],
) -> None:
    doc: Doc[Any] = Doc(client_id=1)
    text = doc.get("content", type=Text)
    text.insert(0, "x" * 60)
    sets = []
    for start, length in cuts:
        start = min(start, max(len(text) - 1, 0))
        del text[start : min(start + length, len(text))]
        sets.append(ydecode.decode_update(doc.get_update(doc.get_state()))[1])
    for older, newer in itertools.pairwise(sets):
        assert ydecode.deletes_within(older, newer)
        assert ydecode.deletes_within(newer, older) == (clocks(newer) <= clocks(older))
