"""Minimal edits between two texts, and applying them to a ``Y.Text``.

Pure code, shared by the client (a file's new text becomes edits of its document) and
time travel (a revert edits the document at head into the old text). :func:`diff` finds
what changed as a short list of :class:`Op` (replace a range with a string) so that a
concurrent edit elsewhere in the same document survives the merge: the common prefix and
suffix are trimmed first, then small middles are compared character by character and big
ones line by line (with a character pass inside each changed block that is small enough).

Positions are Python characters (code points) of the old text. ``pycrdt.Text`` indexes
by UTF-8 byte, not by character: :func:`apply` converts.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

from pycrdt import Text

CHAR_DIFF_LIMIT = 4_000
"""Middles up to this many characters (both sides together) are diffed per character."""
_BLOCK = 4096


class Op(NamedTuple):
    """Replace characters ``[start, end)`` of the old text with ``insert`` (a tuple, so
    that an edit also reads as ``start, end, insert = op``)."""

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


def diff(old: str, new: str, *, char_limit: int = CHAR_DIFF_LIMIT) -> list[Op]:
    """Ops turning ``old`` into ``new``, in ascending, non-overlapping ``old`` positions.

    Changed regions of up to ``char_limit`` characters (both sides together) are compared
    per character, bigger ones per line.
    """
    if old == new:
        return []
    prefix = common_prefix(old, new)
    suffix = common_suffix(old, new, min(len(old), len(new)) - prefix)
    a, b = old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]
    if not a or not b:
        return [Op(prefix, prefix + len(a), b)]
    if len(a) + len(b) <= char_limit:
        return _char_ops(a, b, prefix)
    return _line_ops(a, b, prefix, char_limit)


def _char_ops(a: str, b: str, offset: int) -> list[Op]:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [
        Op(offset + i1, offset + i2, b[j1:j2])
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def _line_ops(a: str, b: str, offset: int, char_limit: int) -> list[Op]:
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
        if old and new and len(old) + len(new) <= char_limit:
            ops += _char_ops(old, new, start)
        else:
            ops.append(Op(start, start + len(old), new))
    return ops


def _starts(lines: list[str]) -> list[int]:
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


def apply_ops(old: str, ops: Sequence[Op]) -> str:
    """``old`` with ``ops`` applied (what :func:`apply` does to a ``Y.Text``)."""
    out: list[str] = []
    pos = 0
    for op in ops:
        out.append(old[pos : op.start])
        out.append(op.insert)
        pos = op.end
    out.append(old[pos:])
    return "".join(out)


OP_BYTES = 48  # what one insert or delete adds to an update beyond its text, at most


def apply(
    text: Text,
    old: str,
    ops: Sequence[Op],
    *,
    split_bytes: int | None = None,
    first: Callable[[], None] | None = None,
) -> tuple[int, int]:
    """Apply ``ops`` (computed against ``old``, the text's current value) to ``text``;
    returns (characters inserted, characters deleted).

    In one transaction (the caller's, if one is open), unless ``split_bytes`` is given:
    then in as many transactions as it takes for none to make an update over about that
    many bytes (its inserted UTF-8 plus ``OP_BYTES`` per insert or delete; a long
    insert goes in pieces, at character boundaries), so a server with that update size
    limit takes each. ``first`` runs in the first transaction (e.g. a flag to set with
    the edit)."""
    if not ops:
        if first is not None:
            assert text.doc is not None
            with text.doc.transaction():
                first()
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
    # Right to left, so every span's positions stay valid: per span its delete, then its
    # insert's pieces left to right; grouped into transactions under split_bytes.
    groups: list[list[Callable[[], None]]] = [[first] if first is not None else []]
    budget = split_bytes if split_bytes is not None else -1
    used = 0
    for start, end, insert in reversed(spans):
        if end > start:
            if budget > 0 and used + OP_BYTES > budget and groups[-1]:
                groups.append([])
                used = 0
            groups[-1].append(functools.partial(text.__delitem__, slice(start, end)))
            used += OP_BYTES
        at = start
        for piece in _pieces(insert, budget - OP_BYTES):
            size = len(piece.encode("utf-8"))
            if budget > 0 and used + size + OP_BYTES > budget and groups[-1]:
                groups.append([])
                used = 0
            groups[-1].append(functools.partial(text.insert, at, piece))
            used += size + OP_BYTES
            at += size
    assert text.doc is not None
    for group in groups:
        with text.doc.transaction():
            for step in group:
                step()
    inserted = deleted = 0
    for op in ops:
        inserted += len(op.insert)
        deleted += op.end - op.start
    return inserted, deleted


def _pieces(insert: str, budget: int) -> list[str]:
    """``insert`` cut at character boundaries into pieces of at most ``budget`` bytes of
    UTF-8 (whole when ``budget`` < 1 or it fits)."""
    if not insert:
        return []
    if budget < 1 or len(insert.encode("utf-8")) <= budget:
        return [insert]
    pieces: list[str] = []
    piece: list[str] = []
    size = 0
    for char in insert:  # a 4 MB file at most: a character loop only for big inserts
        width = len(char.encode("utf-8"))
        if piece and size + width > budget:
            pieces.append("".join(piece))
            piece, size = [], 0
        piece.append(char)
        size += width
    pieces.append("".join(piece))
    return pieces
