"""Conflict detection: where two offline branches touched the same lines.

The CRDT merge always converges, but two devices that rewrote the same line offline
converge to an interleaving nobody wrote. Given the text at the branch's base, the text
others committed since (theirs), the text the branch made (ours) and the merged result,
:func:`detect` compares the line ranges each side changed, in base coordinates, and
reports every overlap as a region a person should look at. Pure code: texts in, values out.
"""

from __future__ import annotations

import difflib
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from crdt.merge3 import merge3

PAGE = 100
"""Records a page of a project's conflict list holds when the caller names no limit."""
MAX_PAGE = 1000
"""The most records one page of a project's conflict list holds (``?limit=`` at most)."""
COUNT_HEADER = "X-Weft-Conflicts"
"""The document list's header: how many times a record of the project's conflict list
was made or resolved (see ``crdt.conflict_store``), for a client polling the list."""


@dataclass(frozen=True, slots=True)
class Change:
    """Base lines ``[base_start, base_end)`` became lines ``[start, end)`` of one side."""

    base_start: int
    base_end: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Region:
    """One overlap: the base lines both sides changed and what each side made of them."""

    base_start: int
    base_end: int
    base_text: str
    ours_text: str
    theirs_text: str


@dataclass(slots=True)
class Side:
    """Who made one side of a conflict."""

    users: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    versionstamps: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ConflictRecord:
    """What weft stores for a conflict (msgpack/JSON friendly)."""

    id: str
    path: str
    base: str
    ours: Side
    theirs: Side
    regions: list[Region]
    merged_text: str
    created_ms: int
    status: str = "open"
    resolved_by: str = ""
    resolved_ms: int = 0
    resolution: str = ""
    # "ours" or "theirs": that side deleted the document the other side edited (one
    # region spans the whole base; the deleting side's text is empty); "" otherwise.
    deleted: str = ""
    restored: bool = False  # such a document was brought back (weft.deleted unset)
    # The deletion emptied the text too (weft sync before 2026-12-04, a revert to a
    # deleted version): bringing the document back would show only the other side's
    # edits, so it stays deleted.
    emptied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConflictRecord:
        return cls(
            id=str(data["id"]),
            path=str(data["path"]),
            base=str(data["base"]),
            ours=Side(**data["ours"]),
            theirs=Side(**data["theirs"]),
            regions=[Region(**r) for r in data["regions"]],
            merged_text=str(data["merged_text"]),
            created_ms=int(data["created_ms"]),
            status=str(data.get("status", "open")),
            resolved_by=str(data.get("resolved_by", "")),
            resolved_ms=int(data.get("resolved_ms", 0)),
            resolution=str(data.get("resolution", "")),
            deleted=str(data.get("deleted", "")),
            restored=bool(data.get("restored", False)),
            emptied=bool(data.get("emptied", False)),
        )

    @property
    def report(self) -> bool:
        """Whether this is a client's report of a local file that met a different
        document (no base, nothing deleted), not a branch's or an online edit's record."""
        return not self.base and not self.deleted

    def summary(self) -> str:
        """One line saying what the conflict is, for a person of the ``ours`` side."""
        if self.deleted:
            what = (
                "deleted here while edited elsewhere"
                if self.deleted == "ours"
                else "edited here while deleted elsewhere"
            )
            return f"{what}: {self._deletion_outcome()}"
        return self._regions_label()

    def their_summary(self, device: str = "") -> str:
        """One line saying what the conflict is, for ``device``, of the ``theirs`` side
        (a device whose edits met ``ours``'s offline branch, or whose deletion met its
        edit; not for a report): which device ``ours`` was, and where the text is. When
        ``theirs`` deleted and names other devices too, the record does not say which of
        them deleted (the others edited): the line names them all."""
        who = ", ".join(self.ours.clients or self.ours.users) or "another device"
        if self.deleted:
            others = [c for c in self.theirs.clients if c != device]
            where = f"here or on {', '.join(others)}" if others else "here"
            what = (
                f"edited here while deleted on {who}"
                if self.deleted == "ours"
                else f"deleted {where} while edited on {who}"
            )
            return f"{what}: {self._deletion_outcome()}"
        return (
            f"edits made here met {who}'s offline changes: {self._regions_label()}; "
            "both sides' text is in this record"
        )

    def _deletion_outcome(self) -> str:
        if self.restored:
            return "the document was brought back with the edits"
        return "the document stays deleted; the edited text is in this record"

    def _regions_label(self) -> str:
        spans = ", ".join(_lines_label(r) for r in self.regions[:3])
        more = f" and {len(self.regions) - 3} more" if len(self.regions) > 3 else ""
        n = len(self.regions)
        return f"{n} region{'s' if n != 1 else ''} changed on both sides (base {spans}{more})"


def _lines_label(region: Region) -> str:
    """Base lines as a person counts them: ``lines 3-4``, ``line 3``, ``after line 3``."""
    if region.base_end == region.base_start:
        return f"after line {region.base_start}" if region.base_start else "at the start"
    if region.base_end - region.base_start == 1:
        return f"line {region.base_start + 1}"
    return f"lines {region.base_start + 1}-{region.base_end}"


Sides = tuple[tuple[list[str], list[Change]], tuple[list[str], list[Change]]]
"""Ours and theirs: each side's lines and its changes from the base."""


def lines(text: str) -> list[str]:
    """Lines with their endings kept, so joining them gives the text back."""
    return text.splitlines(keepends=True)


def changes(base: list[str], new: list[str]) -> list[Change]:
    """The line ranges of ``base`` that ``new`` replaced, deleted or inserted into."""
    matcher = difflib.SequenceMatcher(None, base, new, autojunk=False)
    return [
        Change(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"
    ]


def overlaps(a: Change, b: Change) -> bool:
    """Whether two changes touch the same base lines.

    Ranges overlap when they share a line; an insertion (empty base range) conflicts
    with a change that starts, ends or lies around the same point, and with another
    insertion at the same point (both sides added text in the same place).
    """
    if a.base_start < b.base_end and b.base_start < a.base_end:
        return True
    a_empty, b_empty = a.base_start == a.base_end, b.base_start == b.base_end
    if a_empty and b_empty:
        return a.base_start == b.base_start
    if a_empty:
        return b.base_start < a.base_start < b.base_end
    if b_empty:
        return a.base_start < b.base_start < a.base_end
    return False


def detect(
    base: str,
    ours: str,
    theirs: str,
    merged: str | None = None,
    same_place: Callable[[], Iterable[int]] | None = None,
    known: dict[str, list[Change]] | None = None,
) -> list[Region]:
    """Every region where ``ours`` and ``theirs`` both changed the same lines of ``base``,
    differently: where both sides made the same change (one device's update counted on
    both sides, e.g. re-sent after a lost ack), nothing is contested, unless ``merged``
    (the text the CRDT merged the two into) is not the line merge of the two
    (:func:`crdt.merge3.merge3`) and does not have that change there. Two devices that
    made the same change apart (both fixed ``teh`` to ``the``, both added the same
    line) made two updates, and the merge has both: ``thhe``, the line twice
    (:mod:`crdt.samechange` then keeps it once where it can). (Checked
    region by region alone, a merge with nothing wrong was taken for one when the other
    side's disjoint edits lay two lines away among repeated lines: difflib lined the
    merged text up otherwise; a review saw 1 in 1,595 cases.)

    Overlapping changes are merged into one region spanning both, so a person sees each
    contested passage once.

    ``same_place``: where both sides inserted text at one place of the base (base text
    offsets, :func:`crdt.sameplace.same_place`), asked only when a change of each side
    borders the other's and both added lines (so either may have inserted there): line
    diffs read an insertion at the end of a block the other side rewrote as disjoint,
    though both inserted at that point and the CRDT put the two in either order.

    ``known``: each side's changes by its text, kept by a caller that judges several
    merges of the same base and sides (diffing a long text is the costly part).
    """
    base_lines, our_lines, their_lines = lines(base), lines(ours), lines(theirs)
    known = {} if known is None else known
    for text, side_lines in ((ours, our_lines), (theirs, their_lines)):
        if text not in known:
            known[text] = changes(base_lines, side_lines)
    our_changes, their_changes = known[ours], known[theirs]
    pairs = [(o, t) for o in our_changes for t in their_changes if overlaps(o, t)]
    regions: list[Region] = []
    merged_side: tuple[list[str], list[Change]] | None = None  # (read once, if needed)
    if merged is not None and merged == merge3(base, ours, theirs):
        merged = None  # as a line merge has it: nothing garbled

    def apart(start: int, end: int) -> bool:
        nonlocal merged_side
        if merged_side is None:
            assert merged is not None
            merged_lines = lines(merged)
            merged_side = (merged_lines, changes(base_lines, merged_lines))
        ours_side = (our_lines, our_changes)
        return _merged_apart(base_lines, ours_side, merged_side, start, end)

    sides = ((our_lines, our_changes), (their_lines, their_changes))
    for group in _merge_groups(pairs):
        os_ = [o for o, _ in group]
        ts = [t for _, t in group]
        start = min(c.base_start for c in os_ + ts)
        end = max(c.base_end for c in os_ + ts)
        our_text = "".join(our_lines[_side_start(os_, start) : _side_end(os_, end)])
        their_text = "".join(their_lines[_side_start(ts, start) : _side_end(ts, end)])
        if our_text != their_text or (merged is not None and apart(start, end)):
            # Each side's text there is every change of it within those lines, those
            # at their edges too: an insertion where the other side's change starts
            # overlaps nothing, so it is in no pair of the group, yet it is in the
            # passage (base p q, ours x p, theirs z: ours' text there is x p, not p).
            regions.append(_region(base_lines, sides, start, end))
    if same_place is not None and _bordering(our_changes, their_changes):
        regions = _with_same_place(regions, base_lines, sides, same_place())
    if merged is None:
        return regions
    return _with_garbled(regions, base_lines, sides, lines(merged))


def _bordering(ours: list[Change], theirs: list[Change]) -> bool:
    """Whether a change of one side ends where one of the other side starts, both adding
    lines (each may have inserted at that point, which :func:`overlaps` does not see)."""
    ends = {c.base_end for c in ours if c.end > c.start}
    starts = {c.base_start for c in ours if c.end > c.start}
    return any(c.base_start in ends or c.base_end in starts for c in theirs if c.end > c.start)


def _with_same_place(
    regions: list[Region],
    base_lines: list[str],
    sides: Sides,
    places: Iterable[int],
) -> list[Region]:
    """``regions`` and a region for each place (a base text offset) where both sides
    inserted, unless a region holds it already or the sides' texts there are the same
    (a change made on both sides; :func:`detect` judges those by the merge). Each place
    is widened to every change of either side touching it."""
    starts: list[int] = []
    at = 0
    for text in base_lines:
        starts.append(at)
        at += len(text)
    spans: list[tuple[int, int]] = []
    for place in places:
        line = bisect_right(starts, place) - 1
        if place >= at:
            line = end = len(base_lines)
        elif starts[line] == place:
            end = line
        else:
            end = line + 1
        start, end = _touching(max(line, 0), end, sides)
        if any(r.base_start <= start and end <= r.base_end for r in regions):
            continue
        region = _region(base_lines, sides, start, end)
        if region.ours_text != region.theirs_text:
            spans.append((start, end))
    return _joined(regions, base_lines, sides, spans) if spans else regions


def _joined(
    regions: list[Region],
    base_lines: list[str],
    sides: Sides,
    spans: list[tuple[int, int]],
) -> list[Region]:
    """``regions`` and a region for each of ``spans`` (base lines), those that overlap or
    border each other made one (a region kept as it is where nothing joined it)."""
    out: list[Region] = []
    for start, end in _union(spans + [(r.base_start, r.base_end) for r in regions]):
        same = [r for r in regions if (r.base_start, r.base_end) == (start, end)]
        out.append(same[0] if same else _region(base_lines, sides, start, end))
    return out


def _with_garbled(
    regions: list[Region],
    base_lines: list[str],
    sides: Sides,
    merged_lines: list[str],
) -> list[Region]:
    """``regions`` and a region for each passage where the merge is no line merge of
    the sides' changes: it holds a line that neither side nor the base has (a line
    nobody wrote, ``filled by A- two by B``, is an interleaving), or it holds a line
    more or fewer times than any line merge would (:func:`_miscounted`: part of an
    edit kept, a line's ending lost), whatever the line diffs say. The sides' changes
    are lined up by difflib, the CRDT's by the edits each device made; where a text
    repeats lines, or one side filled a blank line the other added a line before, the
    two disagree: changes difflib calls disjoint (a deletion of one of two equal lines,
    an insertion just before a changed line) touched the same characters. A passage
    holding a line nobody wrote spans the base lines the merge changed there; one
    holding a miscounted line spans each change of a side that deleted or added that
    line (the merge's changes holding it, when no side's does). Each is widened to
    every change of either side touching it; overlapping regions become one."""
    texts = (base_lines, sides[0][0], sides[1][0])
    known = {_bare(line) for text in texts for line in text}
    garbled = {j for j, line in enumerate(merged_lines) if _bare(line) not in known}
    miscounted = _miscounted(texts, merged_lines, regions)
    if not garbled and not miscounted:
        return regions
    holding = [
        (c, set(base_lines[c.base_start : c.base_end]) | set(side_lines[c.start : c.end]))
        for side_lines, side_changes in sides
        for c in side_changes
    ]
    spans = [(c.base_start, c.base_end) for c, held in holding if not miscounted.isdisjoint(held)]
    unheld = miscounted.difference(*(held for _, held in holding))
    for change in changes(base_lines, merged_lines):
        at = range(change.start, change.end)
        if garbled.intersection(at) or any(merged_lines[j] in unheld for j in at):
            spans.append((change.base_start, change.base_end))
    spans = [_touching(start, end, sides) for start, end in spans]
    return _joined(regions, base_lines, sides, spans)


def _miscounted(
    texts: tuple[list[str], list[str], list[str]], merged_lines: list[str], regions: list[Region]
) -> set[str]:
    """The lines (with their endings) that ``merged_lines`` holds a number of times no
    line merge of the sides (``texts``: base, ours, theirs) gives, leaving out the lines
    of ``regions`` (a contested passage merges as it may). A line merge holds a line as
    often as the base, less each side's deletions of it, plus each side's additions of
    it, a change both sides made counted once or twice; as a side may be taken to have
    deleted and added back any line it has, that is from the most either side has less
    the base's to the sum of both sides'. So a line only one side added is there as
    often as that side added it, whatever the alignment."""
    base, ours, theirs = (Counter(text) for text in texts)
    merged = Counter(merged_lines)
    contested = {
        line
        for r in regions
        for text in (r.base_text, r.ours_text, r.theirs_text)
        for line in lines(text)
    }
    return {
        line
        for line in (merged.keys() | ours.keys() | theirs.keys()) - contested
        if not max(ours[line], theirs[line]) - base[line]
        <= merged[line]
        <= ours[line] + theirs[line]
    }


def _bare(line: str) -> str:
    """A line without its ending (any that ``str.splitlines`` ends a line with)."""
    return (line.splitlines() or [""])[0]


def _touching(
    start: int, end: int, sides: tuple[tuple[list[str], list[Change]], ...]
) -> tuple[int, int]:
    """Base lines ``[start, end)`` widened to every change of either side that overlaps
    or borders them."""
    while True:
        near = [c for _, side in sides for c in side if c.base_start <= end and start <= c.base_end]
        wider = (
            min([start] + [c.base_start for c in near]),
            max([end] + [c.base_end for c in near]),
        )
        if wider == (start, end):
            return start, end
        start, end = wider


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Base line spans, those that overlap or border each other made one, in order."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _region(
    base_lines: list[str],
    sides: Sides,
    start: int,
    end: int,
) -> Region:
    """The region of base lines ``[start, end)``: each side's text there (its changes
    touching them, or the base's lines where it changed none)."""
    texts = []
    for side_lines, side_changes in sides:
        span = Change(start, end, start, end)
        mine = [c for c in side_changes if overlaps(c, span) or _borders(c, start, end)]
        texts.append(_over(base_lines, side_lines, mine, start, end))
    return Region(start, end, "".join(base_lines[start:end]), texts[0], texts[1])


def _borders(change: Change, start: int, end: int) -> bool:
    return start <= change.base_start <= end and start <= change.base_end <= end


def _merged_apart(
    base_lines: list[str],
    ours_side: tuple[list[str], list[Change]],
    merged_side: tuple[list[str], list[Change]],
    start: int,
    end: int,
) -> bool:
    """Whether the merge made of base lines ``[start, end)`` something else than ours
    did (each side: its lines and its changes from base): both compared over the same
    base lines, widened to every change of either that touches them."""
    (ours, our_changes), (merged_lines, merged_changes) = ours_side, merged_side
    low, high = start, end
    while True:
        span = Change(low, high, low, high)
        mine = [c for c in our_changes if overlaps(c, span)]
        made = [c for c in merged_changes if overlaps(c, span)]
        wider = (
            min([low] + [c.base_start for c in mine + made]),
            max([high] + [c.base_end for c in mine + made]),
        )
        if wider == (low, high):
            break
        low, high = wider
    return _over(base_lines, ours, mine, low, high) != _over(
        base_lines, merged_lines, made, low, high
    )


def _over(
    base_lines: list[str], side: list[str], touching: list[Change], low: int, high: int
) -> str:
    if not touching:
        return "".join(base_lines[low:high])
    return "".join(side[_side_start(touching, low) : _side_end(touching, high)])


def _merge_groups(pairs: list[tuple[Change, Change]]) -> list[list[tuple[Change, Change]]]:
    """Group overlapping pairs whose base ranges touch into one region each."""
    groups: list[list[tuple[Change, Change]]] = []
    for pair in sorted(pairs, key=lambda p: min(p[0].base_start, p[1].base_start)):
        lo = min(pair[0].base_start, pair[1].base_start)
        if groups:
            hi = max(max(o.base_end, t.base_end) for o, t in groups[-1])
            if lo <= hi:
                groups[-1].append(pair)
                continue
        groups.append([pair])
    return groups


def _side_start(side: list[Change], base_start: int) -> int:
    """Where ``base_start`` falls in this side's lines (changes are in base order)."""
    first = min(side, key=lambda c: c.base_start)
    return first.start - (first.base_start - base_start)


def _side_end(side: list[Change], base_end: int) -> int:
    last = max(side, key=lambda c: c.base_end)
    return last.end + (base_end - last.base_end)
