"""Minimal edits between two texts, and applying them to a ``Y.Text``.

Pure code, shared by the client (a file's new text becomes edits of its document) and
time travel (a revert edits the document at head into the old text). :func:`diff` finds
what changed as a short list of :class:`Op` (replace a range with a string) so that a
concurrent edit elsewhere in the same document survives the merge: the common prefix and
suffix are trimmed first, then small middles are compared character by character and big
ones line by line (with a character pass inside each changed block that is small enough).

Positions are Python characters (code points) of the old text. ``pycrdt.Text`` indexes
by UTF-8 byte, not by character, and counts each embed (an image a rich-text editor such
as Quill put in the text) as one, though ``str(text)`` leaves embeds out: :func:`apply`
converts. An edit next to an embed leaves it where it is; a deletion spanning one takes
it with it. A root that is not a text (a ``Y.Array`` or ``Y.XmlFragment`` another editor
made under that name) takes no edits: :class:`NotText`.
"""

from __future__ import annotations

import bisect
import difflib
from collections.abc import Sequence
from typing import NamedTuple

from pycrdt import Array, Map, Text, XmlElement, XmlFragment, XmlText

from crdt.errors import ProtocolError

CHAR_DIFF_LIMIT = 4_000
"""Middles up to this many characters (both sides together) are diffed per character."""
INSERT_CHUNK = 16_384
"""Longer strings are inserted in pieces of at most this many characters (see
:func:`insert`)."""
_BLOCK = 4096


class NotText(ProtocolError):
    """A ``Y.Text`` view of a root that holds what a rich text does not: a
    ``Y.XmlFragment``'s nodes, a ``Y.Array``'s values. Characters inserted into it land
    among them (the array gained one element per character)."""


_SHARED = (Array, Map, Text, XmlElement, XmlFragment, XmlText)


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
        ops = [Op(prefix, prefix + len(a), b)]
    elif len(a) + len(b) <= char_limit:
        ops = _char_ops(a, b, prefix)
    else:
        ops = _line_ops(a, b, prefix, char_limit)
    return _on_line_boundaries(old, ops)


def line_diff(old: str, new: str) -> list[Op]:
    """Ops turning ``old`` into ``new`` that replace whole lines only (lines as
    ``str.splitlines`` ends them): the lines both texts hold stay (the same characters,
    so edits made elsewhere to them still apply), and each run of changed lines is
    replaced whole, never edited character by character. See ``client.newfiles``: a
    file written where a deleted document was."""
    return _line_ops(old, new, 0, 0) if old != new else []


SLIDE_LIMIT = 1_000
"""How far (characters) :func:`_on_line_boundaries` looks for a better place for an op."""


def _on_line_boundaries(old: str, ops: list[Op]) -> list[Op]:
    """``ops`` with each pure insertion and pure deletion moved, where an equivalent
    place exists, to whole lines.

    Trimming the common suffix (or a character diff) places an appended line as
    ``"\nnew"`` before the old last newline rather than ``"new\n"`` after it: the same
    text results, but the inserted newline becomes the end of the line before, so blame
    credits that line to whoever appended, and a conflict check sees it changed. An
    insertion of ``s`` at ``p`` is the same edit as ``s[1:] + old[p]`` at ``p + 1``
    when ``s[0] == old[p]`` (and likewise to the left); a deletion of ``[p, q)`` the
    same as ``[p + 1, q + 1)`` when ``old[p] == old[q]``. Among the equivalent places
    (staying between the neighbouring ops) the one that starts on a line start and ends
    with a newline wins; ties keep the place nearest the original. Ops without a newline
    stay where they are (no line to keep whole)."""
    out: list[Op] = []
    for n, op in enumerate(ops):
        low = out[-1].end if out else 0
        high = ops[n + 1].start if n + 1 < len(ops) else len(old)
        if op.start == op.end and "\n" in op.insert:
            out.append(_slide_insert(old, op, low, high))
        elif not op.insert and "\n" in old[op.start : op.end]:
            out.append(_slide_delete(old, op, low, high))
        else:
            out.append(op)
    return out


def _line_start(text: str, pos: int) -> bool:
    return pos == 0 or text[pos - 1] == "\n"


def _slide_insert(old: str, op: Op, low: int, high: int) -> Op:
    def score(pos: int, text: str) -> int:
        return 2 * _line_start(old, pos) + (text[-1] == "\n")

    best, best_score = op, score(op.start, op.insert)
    if best_score == 3:
        return op
    for step in (1, -1):
        pos, text = op.start, op.insert
        for _ in range(SLIDE_LIMIT):
            if step == 1:
                if pos >= high or text[0] != old[pos]:
                    break
                pos, text = pos + 1, text[1:] + old[pos]
            else:
                if pos <= low or text[-1] != old[pos - 1]:
                    break
                pos, text = pos - 1, old[pos - 1] + text[:-1]
            found = score(pos, text)
            if found > best_score:
                best, best_score = Op(pos, pos, text), found
                if found == 3:
                    return best
    return best


def _slide_delete(old: str, op: Op, low: int, high: int) -> Op:
    def score(start: int, end: int) -> int:
        return 2 * _line_start(old, start) + _line_start(old, end)

    best, best_score = op, score(op.start, op.end)
    if best_score == 3:
        return op
    for step in (1, -1):
        start, end = op.start, op.end
        for _ in range(SLIDE_LIMIT):
            if step == 1:
                if end >= high or old[start] != old[end]:
                    break
                start, end = start + 1, end + 1
            else:
                if start <= low or old[start - 1] != old[end - 1]:
                    break
                start, end = start - 1, end - 1
            found = score(start, end)
            if found > best_score:
                best, best_score = Op(start, end, ""), found
                if found == 3:
                    return best
    return best


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


def insert(text: Text, at: int, value: str) -> None:
    """Insert ``value`` at UTF-8 offset ``at`` of ``text``, in pieces of at most
    ``INSERT_CHUNK`` characters, the last piece first, each at ``at``.

    yrs keeps an insert as one item, and splitting an item, or finding an offset inside
    it, costs time in proportion to its length. A 4 MB file inserted whole was one item:
    2000 scattered line edits of it then took ~50 s to make, and ~25 s again wherever
    their update was applied (the server's room, its snapshot build, every replay of the
    device's history that started before them). Pieces stay separate items: yrs merges
    an item into the one before it only when it was inserted just after that one, and
    here each piece goes before the one inserted before it (~14 bytes more per piece in
    the update). The text is the same, and so is a merge: every piece has the same left
    origin, so a concurrent insert at the same place goes before or after all of them,
    as it would for one insert."""
    if len(value) <= INSERT_CHUNK:
        if value:
            text.insert(at, value)
        return
    for begin in reversed(range(0, len(value), INSERT_CHUNK)):
        text.insert(at, value[begin : begin + INSERT_CHUNK])


def apply(text: Text, old: str, ops: Sequence[Op]) -> tuple[int, int]:
    """Apply ``ops`` (computed against ``old``, the text's current value) to ``text`` in
    one transaction (the caller's, if one is open); returns (characters inserted,
    characters deleted). Long inserts go in pieces (see :func:`insert`)."""
    if not ops:
        return 0, 0
    # pycrdt indexes by UTF-8 byte and counts embeds: convert each op's positions,
    # walking the text once.
    embeds = _embeds(text, old)
    spans: list[tuple[int, int, str]] = []
    pos = 0
    byte = 0
    for op in ops:
        byte += len(old[pos : op.start].encode("utf-8"))
        start = byte
        byte += len(old[op.start : op.end].encode("utf-8"))
        if embeds:  # after the embeds at start, before those at end
            after = bisect.bisect_right(embeds, op.start)
            before = bisect.bisect_left(embeds, op.end) if op.end > op.start else after
            spans.append((start + after, byte + before, op.insert))
        else:
            spans.append((start, byte, op.insert))
        pos = op.end
    inserted = deleted = 0
    assert text.doc is not None
    with text.doc.transaction():
        for start, end, value in reversed(spans):
            if end > start:
                del text[start:end]
            insert(text, start, value)
    for op in ops:
        inserted += len(op.insert)
        deleted += op.end - op.start
    return inserted, deleted


def check_text(text: Text, old: str) -> None:
    """:class:`NotText` unless ``text`` (whose string is ``old``) can take character
    edits: it holds characters, and maybe formats and embeds (a rich text's)."""
    _embeds(text, old)


def _embeds(text: Text, old: str) -> list[int]:
    """Where ``text`` (whose string is ``old``) holds embeds: the character position of
    ``old`` each sits at (one entry per embed, ascending); usually none, which its
    length tells without reading it again. :class:`NotText` when it holds shared types
    (a ``Y.XmlFragment``'s nodes, a ``Y.Array``'s maps; a Yjs text may embed one, but no
    editor weft knows of does), or positions that are neither characters nor embeds (a
    ``Y.Array``'s values; an embed that is a string, which ``diff()`` gives as text)."""
    extra = len(text) - len(old.encode("utf-8"))
    if extra == 0:
        return []
    at = 0
    out: list[int] = []
    for chunk, _attributes in text.diff():
        if isinstance(chunk, str):
            at += len(chunk)
        elif isinstance(chunk, _SHARED):
            raise NotText("its content holds shared types (a Y.XmlFragment's nodes, say)")
        else:
            out.append(at)
    if len(out) != extra:
        raise NotText("its content holds values neither characters nor embeds (a Y.Array's, say)")
    return out
