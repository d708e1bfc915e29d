"""A line-based three-way merge (diff3) of two texts that both changed one base.

Used where a file changed on disk while its document changed too (remote updates not
written yet, or a crash in between: :mod:`client.textdiff` re-exports it for the
workspace), and by conflict detection (:mod:`crdt.conflicts`) as the merge a person
would expect, to tell a CRDT merge that came out otherwise.

Base lines both sides kept are stable; a region between them that one side changed is
taken from that side, and one both changed the same way is taken once. A region both
changed differently is a conflict, merged line by line: its base lines (each deleted by
one side) stay deleted, and every line either side added is kept, once. Where one side
added the other's lines and more (the document already holds the file's edit plus a
remote one), those are taken; where both added different lines at one place, theirs
(the document's) then ours (the file's). So no base line comes back or twice, and no
added line is lost; :func:`merge3_both` also says where both versions were kept, for
the workspace to tell the user.
"""

from __future__ import annotations

import difflib


def merge3(base: str, ours: str, theirs: str) -> str:
    """Merge two texts that both changed ``base``: a line-based diff3 (see the module
    docstring). The workspace passes the file as ``ours`` and the document as ``theirs``."""
    return merge3_both(base, ours, theirs)[0]


def merge3_both(base: str, ours: str, theirs: str) -> tuple[str, list[int]]:
    """:func:`merge3`, and the lines (1-based, in the merged text) where a region both
    sides changed differently starts with both versions kept, theirs then ours (none
    when each side's lines were in the other's, or only one side changed a region)."""
    both: list[int] = []
    if ours == theirs or theirs == base:
        return ours, both
    if ours == base:
        return theirs, both
    base_lines = base.splitlines(keepends=True)
    sides = (ours.splitlines(keepends=True), theirs.splitlines(keepends=True))
    kept = [_kept(base_lines, lines) for lines in sides]  # base line -> its line in the side
    origin = [{j: i for i, j in lines.items()} for lines in kept]  # and back
    newline = _newline(theirs, ours, base)  # to end a side's unterminated line with
    out: list[str] = []
    b, o, t = 0, 0, 0  # where the chunk after the last stable line starts in each text
    # A stable line is a base line both sides kept; the chunk between two is taken from
    # the side that changed it, or merged when both did (a conflict).
    for stable in [*sorted(kept[0].keys() & kept[1].keys()), len(base_lines)]:
        o_end = kept[0].get(stable, len(sides[0]))
        t_end = kept[1].get(stable, len(sides[1]))
        our_lines, their_lines = sides[0][o:o_end], sides[1][t:t_end]
        if _bare(our_lines) == _bare(their_lines) or their_lines == base_lines[b:stable]:
            _put(out, our_lines, newline)
        elif our_lines == base_lines[b:stable]:
            _put(out, their_lines, newline)
        else:
            merged, kept_both = _conflict(
                _added(origin[0], range(o, o_end), sides[0], b, stable),
                _added(origin[1], range(t, t_end), sides[1], b, stable),
                newline,
            )
            both += [len(out) + 1 + n for n in kept_both]
            _put(out, merged, newline)
        if stable < len(base_lines):  # as the side that changed its line ending has it
            ours_line = sides[0][o_end]
            _put(out, [ours_line if ours_line != base_lines[stable] else sides[1][t_end]], newline)
        b, o, t = stable + 1, o_end + 1, t_end + 1
    return "".join(out), both


def _kept(base: list[str], lines: list[str]) -> dict[int, int]:
    """Which base lines a side kept (a longest-blocks diff), and where they are in it.
    Lines are compared without their line ending: a last line with none (``"b"``) that
    a side ended to add lines after it (``"b\n"``) is kept, not replaced (both sides
    doing so gave it twice)."""
    matcher = difflib.SequenceMatcher(None, _bare(base), _bare(lines), autojunk=False)
    return {i + n: j + n for i, j, size in matcher.get_matching_blocks() for n in range(size)}


def _bare(lines: list[str]) -> list[str]:
    return [line.rstrip("\r\n") for line in lines]


def _added(
    origin: dict[int, int], span: range, lines: list[str], start: int, end: int
) -> list[list[str]]:
    """The lines a side added in a chunk (``span`` of its lines, base lines ``start`` to
    ``end``), by where they go: before base line ``start``, ..., ``end`` (or the chunk's
    end). An added line goes right after the base line before it that the side kept."""
    gaps: list[list[str]] = [[] for _ in range(end - start + 1)]
    gap = 0
    for n in span:
        if n in origin:
            gap = origin[n] - start + 1
        else:
            gaps[gap].append(lines[n])
    return gaps


def _conflict(
    ours: list[list[str]], theirs: list[list[str]], newline: str
) -> tuple[list[str], list[int]]:
    """A chunk both sides changed, from the lines each added there (by gap, see
    :func:`_added`). Its base lines are left out: none was kept by both sides (it would
    be stable), so each was deleted by one. Added lines are all kept, once each. Also
    where (0-based, in the chunk) both versions of a place were kept."""
    our_new = [line for gap in ours for line in gap]
    their_new = [line for gap in theirs for line in gap]
    if _within(our_new, their_new):  # e.g. the document has the file's edit and more
        return their_new, []
    if _within(their_new, our_new):
        return our_new, []
    out: list[str] = []
    both: list[int] = []
    for our_gap, their_gap in zip(ours, theirs, strict=True):
        if _within(our_gap, their_gap):
            _put(out, their_gap, newline)
        elif _within(their_gap, our_gap):
            _put(out, our_gap, newline)
        else:  # both added different lines at one place: theirs, then ours
            both.append(len(out))
            _put(out, their_gap, newline)
            _put(out, our_gap, newline)
    return out, both


def _within(short: list[str], long: list[str]) -> bool:
    """Whether ``short`` is a subsequence of ``long`` (in order, gaps allowed; lines
    compared without their line ending)."""
    rest = iter(_bare(long))
    return all(line in rest for line in _bare(short))


def _put(out: list[str], lines: list[str], newline: str) -> None:
    """Add ``lines`` to ``out``, first ending its last line with ``newline`` if it has no
    line ending (a file's last line, from one side): a line put after it stays a line of
    its own."""
    if out and lines and out[-1].splitlines() == [out[-1]]:
        out[-1] += newline
    out += lines


def _newline(*texts: str) -> str:
    """The line ending of the first line that has one in ``texts`` (``\n`` if none)."""
    for text in texts:
        for line in text.splitlines(keepends=True):
            ending = line[len(line.rstrip("\r\n")) :]
            if ending:
                return ending
    return "\n"
