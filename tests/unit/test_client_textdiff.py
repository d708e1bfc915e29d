"""File edits become minimal Y.Text operations; three-way merges never lose text."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Text, XmlElement, XmlFragment, XmlText

from client.textdiff import (
    CHAR_DIFF_LIMIT,
    NotText,
    Op,
    apply,
    apply_ops,
    diff,
    line_diff,
    merge3,
    merge3_both,
)
from crdt.textedits import INSERT_CHUNK
from crdt.ydecode import decode_update

ALPHABET = st.sampled_from(["a", "b", " ", "\n", "é", "😀", "\r\n", "中"])
TEXT = st.lists(ALPHABET, max_size=60).map("".join)


def ytext(value: str) -> Text:
    doc: Doc[Text] = Doc()
    text = doc.get("content", type=Text)
    text.insert(0, value)
    return text


def test_an_edit_in_the_middle_is_one_small_op() -> None:
    old = "".join(f"line {i}\n" for i in range(1000))
    new = old.replace("line 500\n", "line five hundred\n")
    ops = diff(old, new)
    assert sum(op.end - op.start + len(op.insert) for op in ops) <= len("500five hundred")
    assert apply_ops(old, ops) == new


def test_big_rewrites_fall_back_to_lines_and_stay_correct() -> None:
    old = "".join(f"old line {i}\n" for i in range(2000))
    new = "".join(f"new line {i}\n" if i % 3 else f"old line {i}\n" for i in range(2000))
    assert len(old) + len(new) > CHAR_DIFF_LIMIT
    ops = diff(old, new)
    assert apply_ops(old, ops) == new
    untouched = sum(1 for i in range(2000) if i % 3 == 0)
    assert sum(op.end - op.start for op in ops) <= len(old) - untouched * len("old line 0\n")


def test_no_change_no_ops_and_pure_insert_or_delete() -> None:
    assert diff("same", "same") == []
    assert diff("ac", "abc") == [Op(1, 1, "b")]
    assert diff("abc", "ac") == [Op(1, 2, "")]
    assert diff("", "new") == [Op(0, 0, "new")]


def test_inserted_and_deleted_lines_stay_whole() -> None:
    """An appended or removed line is one whole line (starting at a line start, ending
    with its newline), not a newline of the line before plus the rest."""
    old = "l1 alice\nl2 alice\nl3 alice\n"
    new = "l1 alice\nl2 bob\nl3 alice\nl4 bob\n"
    assert diff(old, new)[-1] == Op(len(old), len(old), "l4 bob\n")
    assert diff("a\nb\nb\nc\n", "a\nb\nc\n") in ([Op(2, 4, "")], [Op(4, 6, "")])
    assert diff("a\nc\n", "a\nb\nc\n") == [Op(2, 2, "b\n")]
    assert diff("x\n", "x\nx\n") in ([Op(0, 0, "x\n")], [Op(2, 2, "x\n")])
    assert diff("p\nq", "p\nx\nq") == [Op(2, 2, "x\n")]
    assert diff("ab", "abab") == [Op(2, 2, "ab")]  # no newline: left where it was


LINES = st.lists(st.sampled_from(["a\n", "b\n", "\n", "a b\n", "ab\n"]), max_size=12)


@settings(max_examples=300)
@given(lines=LINES, added=LINES, at=st.integers(0, 12), cut=st.integers(0, 12))
def test_whole_line_edits_give_whole_line_ops(
    lines: list[str], added: list[str], at: int, cut: int
) -> None:
    """Inserting whole lines, or deleting whole lines, anywhere (repeated lines make the
    place ambiguous) gives ops that insert or delete whole lines only."""
    at = min(at, len(lines))
    old = "".join(lines)
    inserted = "".join(lines[:at] + added + lines[at:])
    removed = "".join(lines[:at] + lines[at + cut :])
    for new in (inserted, removed):
        ops = diff(old, new)
        assert apply_ops(old, ops) == new
        for op in ops:
            assert op.start == 0 or old[op.start - 1] == "\n", (old, new, ops)
            assert op.end == 0 or old[op.end - 1] == "\n", (old, new, ops)
            assert not op.insert or op.insert.endswith("\n"), (old, new, ops)


def test_apply_converts_characters_to_utf8_offsets() -> None:
    old = "a😀b é\n中"
    new = "a😀Xb é!\n中文"
    text = ytext(old)
    inserted, deleted = apply(text, old, diff(old, new))
    assert str(text) == new
    assert (inserted, deleted) == (3, 0)


def with_embeds(value: str, at: list[int]) -> Text:
    """A ``Y.Text`` holding ``value`` with an embed (as Quill puts an image) before each
    character position of ``at`` (several at one position: one after the other)."""
    text = ytext(value)
    for n, pos in enumerate(sorted(at, reverse=True)):
        text.insert_embed(len(value[:pos].encode("utf-8")), {"image": f"i{n}"})
    return text


def embeds_of(text: Text) -> list[tuple[int, Any]]:
    """(character position in ``str(text)``, embed), in order."""
    out, at = [], 0
    for chunk, _attributes in text.diff():
        if isinstance(chunk, str):
            at += len(chunk)
        else:
            out.append((at, chunk))
    return out


def test_apply_counts_embeds_str_leaves_out() -> None:
    """A rich-text editor's embed (Quill's image) is one position of the ``Y.Text`` that
    ``str()`` leaves out: an edit after it landed one place early ('Hello weft' edited to
    'Hello weft!' by a file save became 'Hello wef!t')."""
    text = with_embeds("Hello weft", [5])
    apply(text, "Hello weft", diff("Hello weft", "Hello weft!"))
    assert str(text) == "Hello weft!"
    assert embeds_of(text) == [(5, {"image": "i0"})]
    # Edits next to an embed leave it where it is; a deletion across it takes it along.
    apply(text, "Hello weft!", [Op(4, 5, "O"), Op(5, 6, "_")])
    assert str(text) == "HellO_weft!"
    assert embeds_of(text) == [(5, {"image": "i0"})]
    apply(text, "HellO_weft!", [Op(5, 5, "+")])
    assert (str(text), embeds_of(text)) == ("HellO+_weft!", [(5, {"image": "i0"})])
    apply(text, "HellO+_weft!", [Op(3, 7, "")])
    assert (str(text), embeds_of(text)) == ("Helweft!", [])


@settings(max_examples=200)
@given(old=TEXT, new=TEXT, data=st.data())
def test_diff_and_apply_reproduce_the_new_text_around_embeds(
    old: str, new: str, data: st.DataObject
) -> None:
    """Whatever the embeds, the text comes out as the file's, and every embed outside
    the deleted ranges stays (in order)."""
    at = data.draw(st.lists(st.integers(0, len(old)), max_size=4))
    text = with_embeds(old, at)
    ops = diff(old, new)
    apply(text, old, ops)
    assert str(text) == new
    kept = [pos for pos in sorted(at) if not any(op.start < pos < op.end for op in ops)]
    assert len(embeds_of(text)) == len(kept)


def _array_root(doc: Doc[Any]) -> None:
    doc.get("content", type=Array).append("item")


def _fragment_root(doc: Doc[Any]) -> None:
    paragraph = XmlElement("paragraph")
    doc.get("content", type=XmlFragment).children.append(paragraph)
    paragraph.children.append(XmlText("hello"))


def _string_embed(doc: Doc[Any]) -> None:
    text = doc.get("content", type=Text)
    text.insert(0, "ab")
    text.insert_embed(1, "s")  # (pycrdt only: Yjs makes a string embed a string)


@pytest.mark.parametrize("build", [_array_root, _fragment_root, _string_embed])
def test_apply_refuses_a_root_that_is_not_a_text(build: Any) -> None:
    """A ``content`` root another editor made a ``Y.Array`` or a ``Y.XmlFragment`` of
    (as a replica sees it: read as a ``Y.Text``): characters inserted into it landed
    among its values (the array gained one element per character), and an embed that
    is a string put every edit after it a place off. Now nothing is written."""
    made: Doc[Any] = Doc()
    build(made)
    doc: Doc[Any] = Doc()
    doc.apply_update(made.get_update())
    text = doc.get("content", type=Text)
    old = str(text)
    state = doc.get_update()
    with pytest.raises(NotText):
        apply(text, old, [Op(len(old), len(old), "edited\n")])
    assert doc.get_update() == state


def test_one_file_change_is_one_update() -> None:
    doc: Doc[Text] = Doc()
    text = doc.get("content", type=Text)
    text.insert(0, "one\ntwo\nthree\n")
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    apply(text, "one\ntwo\nthree\n", diff("one\ntwo\nthree\n", "ONE\ntwo\nthree!\n"))
    assert len(updates) == 1


@settings(max_examples=300)
@given(old=TEXT, new=TEXT)
def test_diff_and_apply_reproduce_the_new_text(old: str, new: str) -> None:
    ops = diff(old, new)
    assert apply_ops(old, ops) == new
    assert all(a.end <= b.start for a, b in itertools.pairwise(ops))
    text = ytext(old)
    apply(text, old, ops)
    assert str(text) == new


def test_concurrent_edits_to_different_lines_both_survive_the_crdt_merge() -> None:
    base = "".join(f"line {i}\n" for i in range(10))
    a: Doc[Text] = Doc()
    b: Doc[Text] = Doc()
    ta, tb = a.get("content", type=Text), b.get("content", type=Text)
    ta.insert(0, base)
    b.apply_update(a.get_update())
    new_a = base.replace("line 2\n", "line 2 from a\n")
    new_b = base.replace("line 8\n", "line 8 from b\n")
    apply(ta, base, diff(base, new_a))
    apply(tb, base, diff(base, new_b))
    a.apply_update(b.get_update())
    b.apply_update(a.get_update())
    assert (
        str(ta)
        == str(tb)
        == base.replace("line 2\n", "line 2 from a\n").replace("line 8\n", "line 8 from b\n")
    )


def test_merge3_takes_each_sides_changes() -> None:
    base = "a\nb\nc\n"
    assert merge3(base, "a\nB\nc\n", "a\nb\nC\n") == "a\nB\nC\n"
    assert merge3(base, base, "x\n") == "x\n"
    assert merge3(base, "x\n", base) == "x\n"


def test_merge3_same_change_once_and_containing_change_wins() -> None:
    assert merge3("a\n", "a\nX\n", "a\nX\n") == "a\nX\n"
    # the document already holds the file's edit plus a remote one (a crash in between)
    assert merge3("a\n", "a\nX\n", "a\nX\nY\n") == "a\nX\nY\n"


def test_merge3_keeps_both_versions_of_a_contested_region() -> None:
    merged = merge3("a\nb\nc\n", "a\nmine\nc\n", "a\ntheirs\nc\n")
    assert merged == "a\ntheirs\nmine\nc\n"


@settings(max_examples=200)
@given(
    base=st.lists(st.sampled_from(["a\n", "b\n", "c\n", "d\n"]), max_size=8),
    ours=st.lists(st.sampled_from(["a\n", "b\n", "X\n", "d\n"]), max_size=8),
    theirs=st.lists(st.sampled_from(["a\n", "Y\n", "c\n", "d\n"]), max_size=8),
)
def test_merge3_never_loses_a_line_only_one_side_added(
    base: list[str], ours: list[str], theirs: list[str]
) -> None:
    merged = merge3("".join(base), "".join(ours), "".join(theirs)).splitlines(keepends=True)
    assert merged.count("X\n") >= ours.count("X\n")
    assert merged.count("Y\n") >= theirs.count("Y\n")


def test_merge3_audit_cases_neither_repeat_nor_bring_back_lines() -> None:
    # theirs deleted everything, ours appended a line
    assert merge3("a\nb\nc\n", "a\nb\nc\nd\n", "") == "d\n"
    # theirs deleted one of two equal lines, ours inserted two lines between them
    assert merge3("a\na\n", "a\nO1\nO2\na\n", "a\n") in ("a\nO1\nO2\n", "O1\nO2\na\n")
    # theirs deleted h, ours inserted a line before it and deleted c
    assert merge3("g\nh\nf\nc\n", "g\nO\nh\nf\n", "g\nf\nc\n") == "g\nO\nf\n"


def test_merge3_changes_next_to_each_other() -> None:
    base = "a\nb\nc\n"
    assert merge3(base, "a\nc\n", "a\nb\nX\nc\n") == "a\nX\nc\n"  # delete | insert
    assert merge3(base, "a\nc\n", "a\nB\nc\n") == "a\nB\nc\n"  # an edit beats a delete
    assert merge3(base, "a\nc\n", "a\nb\n") == "a\n"  # both deletions
    assert merge3(base, "a\nB\nc\n", "a\nB\n") == "a\nB\n"  # same edit, and a delete


def test_merge3_the_document_holds_the_files_edit_and_a_remote_one_inside_it() -> None:
    assert merge3("a\n", "a\nX1\nX2\n", "a\nX1\nR\nX2\n") == "a\nX1\nR\nX2\n"


def test_merge3_keeps_a_last_line_without_newline_a_line_of_its_own() -> None:
    assert merge3("a\n", "a\nmine", "a\ntheirs") == "a\ntheirs\nmine"
    assert merge3("a\nb\n", "a\nb\nmine\n", "a\ntheirs") == "a\ntheirs\nmine\n"


def lines(alphabet: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from([f"{c}\n" for c in alphabet]), max_size=8)


@settings(max_examples=200)
@given(base=lines("abcd"), ours=lines("abXd"), theirs=lines("aYcd"))
def test_merge3_one_sided_or_identical_changes_are_taken(
    base: list[str], ours: list[str], theirs: list[str]
) -> None:
    b, x, y = "".join(base), "".join(ours), "".join(theirs)
    assert merge3(b, x, b) == x
    assert merge3(b, b, y) == y
    assert merge3(b, x, x) == x


@settings(max_examples=300)
@given(base=lines("abcd"), ours=lines("abXd"), theirs=lines("aYcd"))
def test_merge3_lines_come_from_the_sides_and_the_sides_only_order_a_conflict(
    base: list[str], ours: list[str], theirs: list[str]
) -> None:
    """A line is in the merge at most as many times as in both sides together (each
    line is a stable one, in both, or one a side has); a line neither had in the base
    as many times as in the side with the most. Swapping sides only reorders."""
    merged = merge3("".join(base), "".join(ours), "".join(theirs)).splitlines(keepends=True)
    for line in set(merged) | set(ours) | set(theirs):
        assert merged.count(line) <= ours.count(line) + theirs.count(line)
        if line not in base:
            assert merged.count(line) >= max(ours.count(line), theirs.count(line))
    swapped = merge3("".join(base), "".join(theirs), "".join(ours))
    assert sorted(swapped.splitlines(keepends=True)) == sorted(merged)


def edited(base: list[str], tag: str) -> st.SearchStrategy[list[str]]:
    """``base`` with some lines deleted and lines ``<tag>0``..``<tag>2`` added anywhere."""
    added = st.lists(st.sampled_from([f"{tag}{n}\n" for n in range(3)]), max_size=2)
    gaps = st.lists(added, min_size=len(base) + 1, max_size=len(base) + 1)
    kept = st.lists(st.booleans(), min_size=len(base), max_size=len(base))
    return st.builds(edit, st.just(base), gaps, kept)


def edit(base: list[str], gaps: list[list[str]], kept: list[bool]) -> list[str]:
    out = list(gaps[0])
    for line, keep, gap in zip(base, kept, gaps[1:], strict=True):
        out += [line] * keep + gap
    return out


@settings(max_examples=300)
@given(data=st.data(), size=st.integers(0, 8))
def test_merge3_of_distinct_lines_is_both_edits(data: st.DataObject, size: int) -> None:
    """Base lines all different, each side adding its own lines: a base line is kept when
    both sides kept it, and each side's lines, less the base lines the other deleted, are
    in the merge in their order, so the merge holds both sides' edits and nothing else."""
    base = [f"b{n}\n" for n in range(size)]
    ours = data.draw(edited(base, "O"))
    theirs = data.draw(edited(base, "T"))
    merged = merge3("".join(base), "".join(ours), "".join(theirs)).splitlines(keepends=True)
    assert [line for line in merged if line in base] == [
        line for line in base if line in ours and line in theirs
    ]
    for mine, other, tag in ((ours, theirs, "T"), (theirs, ours, "O")):
        expected = [line for line in mine if line not in base or line in other]
        assert [line for line in merged if not line.startswith(tag)] == expected


SPAN = st.integers(0, 3)


@settings(max_examples=300)
@given(
    spans=st.tuples(SPAN, SPAN, st.integers(1, 3), SPAN, SPAN),
    first=lines("XYZ"),
    second=lines("XYZ"),
    ours_first=st.booleans(),
)
def test_merge3_edits_of_separate_regions_are_both_applied(
    spans: tuple[int, int, int, int, int],
    first: list[str],
    second: list[str],
    ours_first: bool,
) -> None:
    """Each side replaces a region of the base (maybe empty, maybe with nothing), with at
    least one untouched line between them: the merge is the base with both replaced."""
    a, b, c, d, size = itertools.accumulate(spans)
    base = [f"b{n}\n" for n in range(size)]
    one = base[:a] + first + base[b:]
    two = base[:c] + second + base[d:]
    ours, theirs = (one, two) if ours_first else (two, one)
    merged = merge3("".join(base), "".join(ours), "".join(theirs))
    assert merged == "".join(base[:a] + first + base[b:c] + second + base[d:])


def string_items(doc: Doc[Any]) -> list[str]:
    """The strings of the document's text items, as its update encodes them."""
    structs, _ = decode_update(doc.get_update())
    return [item.text for items in structs.values() for item in items if item.text is not None]


def test_a_long_insert_is_kept_as_pieces_that_stay_apart() -> None:
    """yrs splits an item, or finds an offset in it, in time proportional to its length:
    a 4 MB file inserted as one item made every later scattered edit of it (and every
    replay of those edits) scan it again. Its pieces stay separate items, here and in a
    document that loads its update."""
    value = "".join(f"line {i}: é😀中\n" for i in range(20_000))
    text = ytext("head\ntail\n")
    assert text.doc is not None
    assert apply(text, str(text), diff(str(text), "head\n" + value + "tail\n")) == (len(value), 0)
    assert str(text) == "head\n" + value + "tail\n"
    pieces = string_items(text.doc)
    assert len(pieces) >= len(value) // INSERT_CHUNK + 2
    assert max(len(piece) for piece in pieces) <= INSERT_CHUNK
    loaded: Doc[Any] = Doc()
    loaded.apply_update(text.doc.get_update())
    assert string_items(loaded) == pieces
    assert str(loaded.get("content", type=Text)) == str(text)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3 * INSERT_CHUNK), st.booleans())
def test_a_concurrent_insert_goes_before_or_after_all_the_pieces(size: int, lower: bool) -> None:
    """As for one insert: never between two pieces, and both sides converge."""
    ours: Doc[Any] = Doc(client_id=10)
    theirs: Doc[Any] = Doc(client_id=5 if lower else 20)
    ours.get("content", type=Text).insert(0, "ab")
    theirs.apply_update(ours.get_update())
    value = "".join(chr(ord("c") + n % 20) for n in range(size))
    apply(ours.get("content", type=Text), "ab", [Op(1, 1, value)])
    theirs.get("content", type=Text).insert(1, "X")
    ours_update, theirs_update = ours.get_update(), theirs.get_update()
    ours.apply_update(theirs_update)
    theirs.apply_update(ours_update)
    merged = str(ours.get("content", type=Text))
    assert merged == str(theirs.get("content", type=Text))
    assert merged in ("a" + value + "Xb", "aX" + value + "b")


def test_merge3_a_last_line_without_newline_is_kept_once() -> None:
    # Both sides end the unterminated last line to add after it: "b" and "b\n" are
    # the same line (it came twice, from each side), and one side's edit of it wins.
    assert merge3("a\nb", "a\nb\nc", "a\nb\nd") == "a\nb\nd\nc"
    assert merge3("x", "x\ny", "x\nz") == "x\nz\ny"
    assert merge3("a\nb", "a\nB", "a\nb\nc") == "a\nB\nc"  # b is not brought back
    # A side's last line without newline, followed by the other side's additions,
    # stays a line of its own.
    assert merge3("b0\nb1", "b0\no9", "t8\nb0") == "t8\nb0\no9"
    assert merge3("b0\nb1\nb2\nb3", "b0\nb1\nb2", "t9\nb0\nb1\nt7\nb2\nb3\nt8") == (
        "t9\nb0\nb1\nt7\nb2\nt8"
    )


def test_merge3_ends_an_unterminated_line_as_the_texts_end_theirs() -> None:
    assert merge3("a\r\nb", "a\r\nb\r\nc", "a\r\nb\r\nd") == "a\r\nb\r\nd\r\nc"
    assert merge3("a\r\nb", "a\r\nB", "a\r\nb\r\nc") == "a\r\nB\r\nc"
    assert merge3("a\rb", "a\rB", "a\rb\rc") == "a\rB\rc"


def test_merge3_a_line_one_side_left_unterminated_and_the_other_ended_comes_once() -> None:
    assert merge3("a\n", "a\nx", "a\nx\n") == "a\nx"
    # the document holds the file's edit plus a remote one
    assert merge3("a\n", "a\nx", "a\nx\ny\n") == "a\nx\ny\n"


def test_merge3_both_says_where_both_versions_of_a_line_were_kept() -> None:
    """The workspace says where a merge kept both versions (weft sync prints it)."""
    base = "a\nb\nc\nd\ne\n"
    assert merge3_both(base, "a\nB2\nc\nd\nE2\n", "a\nB1\nc\nd\nE1\n") == (
        "a\nB1\nB2\nc\nd\nE1\nE2\n",
        [2, 6],
    )
    # one side's lines within the other's, or different regions: nothing to say
    assert merge3_both(base, "a\nB\nc\nd\ne\n", "a\nB\nc\nd\ne\nf\n") == (
        "a\nB\nc\nd\ne\nf\n",
        [],
    )
    assert merge3_both(base, "a\nB\nc\nd\ne\n", "a\nb\nc\nD\ne\n") == ("a\nB\nc\nD\ne\n", [])
    assert merge3(base, "a\nB2\nc\nd\ne\n", "a\nB1\nc\nd\ne\n") == "a\nB1\nB2\nc\nd\ne\n"


def test_line_diff_keeps_shared_lines_and_replaces_other_runs_whole() -> None:
    old = "x one\ny two\nz three\n"
    assert line_diff(old, old) == []
    assert line_diff(old, "x one\nY TWO\nz three\n") == [Op(6, 12, "Y TWO\n")]
    assert line_diff("", "new\n") == [Op(0, 0, "new\n")]
    assert line_diff(old, "") == [Op(0, len(old), "")]
    # never a character edit: "hello world" and "hello there" share no line
    assert line_diff("hello world\n", "hello there\n") == [Op(0, 12, "hello there\n")]
    for new in ("x one\r\nz three", "a\u2028x one\n", "x one\ny two\nz three"):
        assert apply_ops(old, line_diff(old, new)) == new
