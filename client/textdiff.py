"""A file's new text as minimal edits of its ``Y.Text``, and three-way text merges.

The edits are :mod:`crdt.textedits` (shared with time travel's revert), re-exported here
for the workspace: :func:`diff` turns a file's old and new text into a short list of
:class:`Op` so that a concurrent edit elsewhere in the same document survives the merge,
and :func:`apply` makes them on the ``Y.Text`` (converting to pycrdt's UTF-8 offsets).

:func:`merge3` is a line-based three-way merge used when a file changed on disk while
the document changed too (remote updates not written yet, or a crash in between): changes
only one side made are taken, a change both sides made identically (or one side's
version of a region containing the other's) is taken once, and a region both changed
differently keeps both versions (theirs, then ours), never losing text.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crdt.textedits import (
    CHAR_DIFF_LIMIT,
    Op,
    apply,
    apply_ops,
    common_prefix,
    common_suffix,
    diff,
)

__all__ = [
    "CHAR_DIFF_LIMIT",
    "Op",
    "apply",
    "apply_ops",
    "common_prefix",
    "common_suffix",
    "diff",
    "merge3",
]


# --- three-way merge ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Change:
    base_start: int
    base_end: int
    side: int  # 0 ours, 1 theirs


def merge3(base: str, ours: str, theirs: str) -> str:
    """Merge two texts that both changed ``base`` (line based; see the module docstring)."""
    if ours == theirs or theirs == base:
        return ours
    if ours == base:
        return theirs
    base_lines = base.splitlines(keepends=True)
    sides = [ours.splitlines(keepends=True), theirs.splitlines(keepends=True)]
    opcodes = [
        difflib.SequenceMatcher(None, base_lines, lines, autojunk=False).get_opcodes()
        for lines in sides
    ]
    changes = sorted(
        (
            _Change(i1, i2, side)
            for side in (0, 1)
            for tag, i1, i2, _j1, _j2 in opcodes[side]
            if tag != "equal"
        ),
        key=lambda c: (c.base_start, c.base_end),
    )
    out: list[str] = []
    pos = 0
    index = 0
    while index < len(changes):
        start, end = changes[index].base_start, changes[index].base_end
        members = {changes[index].side}
        index += 1
        # Changes that overlap (or insert at the same point) are decided together.
        while index < len(changes) and (
            changes[index].base_start < end
            or changes[index].base_start == changes[index].base_end == start == end
        ):
            end = max(end, changes[index].base_end)
            members.add(changes[index].side)
            index += 1
        out += base_lines[pos:start]
        texts = [
            "".join(sides[s][_map(opcodes[s], start, min) : _map(opcodes[s], end, max)])
            for s in (0, 1)
        ]
        if members == {0} or texts[1] in texts[0]:
            out.append(texts[0])
        elif members == {1} or texts[0] in texts[1]:
            out.append(texts[1])
        else:
            out.append(texts[1])
            out.append(texts[0])
        pos = end
    out += base_lines[pos:]
    return "".join(out)


def _map(
    opcodes: Sequence[tuple[str, int, int, int, int]],
    pos: int,
    pick: Callable[[list[int]], int],
) -> int:
    """Where base line ``pos`` (never strictly inside a change) falls in the side's lines:
    ``pick=min`` for a region's start (before an insertion there), ``max`` for its end."""
    found = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal" and i1 <= pos <= i2:
            found.append(j1 + pos - i1)
        elif tag != "equal" and pos in (i1, i2):
            found.append(j1 if pos == i1 else j2)
            if pos == i2:
                found.append(j2)
    return pick(found) if found else 0
