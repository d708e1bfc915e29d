"""Turning a file's new text into minimal edits of a ``Y.Text``, and three-way text merges.

Pure code. :func:`diff` finds what changed between two texts as a short list of
:class:`Op` (delete a range, insert a string) so that a concurrent edit elsewhere in the
same document survives the merge: the common prefix and suffix are trimmed first, then
small middles are compared character by character and big ones line by line (with a
character pass inside each changed block that is small enough).

``pycrdt.Text`` indexes by UTF-8 byte, not by character: :func:`apply` converts.

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

from pycrdt import Text

CHAR_DIFF_LIMIT = 4_000
"""Middles up to this many characters (both sides together) are diffed per character."""
_BLOCK = 4096


@dataclass(frozen=True, slots=True)
class Op:
    """Replace characters ``[start, end)`` of the old text with ``insert``."""

    start: int
    end: int
    insert: str


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix, comparing big blocks first."""
    limit = min(len(a), len(b))
    n = 0
    while n + _BLOCK <= limit and a[n : n + _BLOCK] == b[n : n + _BLOCK]:
        n += _BLOCK
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix, at most ``limit``."""
    la, lb = len(a), len(b)
    n = 0
    while n + _BLOCK <= limit and a[la - n - _BLOCK : la - n] == b[lb - n - _BLOCK : lb - n]:
        n += _BLOCK
    while n < limit and a[la - n - 1] == b[lb - n - 1]:
        n += 1
    return n


def diff(old: str, new: str) -> list[Op]:
    """Ops turning ``old`` into ``new``, in ascending, non-overlapping ``old`` positions."""
    if old == new:
        return []
    prefix = common_prefix(old, new)
    suffix = common_suffix(old, new, min(len(old), len(new)) - prefix)
    a, b = old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]
    return _middle(a, b, prefix)


def _middle(a: str, b: str, offset: int) -> list[Op]:
    if not a or not b:
        return [Op(offset, offset + len(a), b)]
    if len(a) + len(b) <= CHAR_DIFF_LIMIT:
        return _char_ops(a, b, offset)
    return _line_ops(a, b, offset)


def _char_ops(a: str, b: str, offset: int) -> list[Op]:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [
        Op(offset + i1, offset + i2, b[j1:j2])
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def _line_ops(a: str, b: str, offset: int) -> list[Op]:
    a_lines, b_lines = a.splitlines(keepends=True), b.splitlines(keepends=True)
    a_starts = _starts(a_lines)
    b_starts = _starts(b_lines)
    ops: list[Op] = []
    matcher = difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old = a[a_starts[i1] : a_starts[i2]]
        new = b[b_starts[j1] : b_starts[j2]]
        start = offset + a_starts[i1]
        if old and new and len(old) + len(new) <= CHAR_DIFF_LIMIT:
            ops += _char_ops(old, new, start)
        else:
            ops.append(Op(start, start + len(old), new))
    return ops


def _starts(lines: list[str]) -> list[int]:
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


def apply_ops(old: str, ops: list[Op]) -> str:
    """``old`` with ``ops`` applied (what :func:`apply` does to a ``Y.Text``)."""
    out: list[str] = []
    pos = 0
    for op in ops:
        out.append(old[pos : op.start])
        out.append(op.insert)
        pos = op.end
    out.append(old[pos:])
    return "".join(out)


def apply(text: Text, old: str, ops: list[Op]) -> tuple[int, int]:
    """Apply ``ops`` (computed against ``old``, the text's current value) to ``text`` in
    one transaction; returns (characters inserted, characters deleted)."""
    if not ops:
        return 0, 0
    # pycrdt indexes by UTF-8 byte: convert each op's positions, walking the text once.
    spans: list[tuple[int, int, str]] = []
    pos = 0
    byte = 0
    for op in ops:
        byte += len(old[pos : op.start].encode("utf-8"))
        start = byte
        byte += len(old[op.start : op.end].encode("utf-8"))
        spans.append((start, byte, op.insert))
        pos = op.end
    inserted = deleted = 0
    assert text.doc is not None
    with text.doc.transaction():
        for start, end, insert in reversed(spans):
            if end > start:
                del text[start:end]
            if insert:
                text.insert(start, insert)
    for op in ops:
        inserted += len(op.insert)
        deleted += op.end - op.start
    return inserted, deleted


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
