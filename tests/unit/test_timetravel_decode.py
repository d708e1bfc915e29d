"""The pure parts of time travel: version parsing, the Yjs update decoder, the item
order it rebuilds (checked against pycrdt/yrs), clock ranges, text edits, diffs."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt import timetravel as tt
from crdt.carriers import _RECORD_NO_STRUCTS, _RECORD_ONE_STRING
from crdt.records import encode_record
from crdt.textedits import NotText
from crdt.versionstamp import Versionstamp
from crdt.ydecode import _Reader

NOW = 1_750_000_000_000  # a fixed "now" for parse_version


# --- versions ----------------------------------------------------------------------------


def test_a_versionstamp_parses_in_either_case() -> None:
    v = tt.parse_version("00000000000000070004000A", now_ms=NOW)
    assert v.stamp == Versionstamp(bytes.fromhex("00000000000000070004000a"))
    assert (v.ms, str(v), v.is_head) == (None, "00000000000000070004000a", False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-15T12:00:00Z", datetime(2025, 6, 15, 12, tzinfo=UTC)),
        ("2025-06-15T12:00:00", datetime(2025, 6, 15, 12, tzinfo=UTC)),  # naive: UTC
        ("2025-06-15T14:00:00+02:00", datetime(2025, 6, 15, 12, tzinfo=UTC)),
        ("2025-06-15", datetime(2025, 6, 15, tzinfo=UTC)),
        ("2025-06-15T12:00:00.1239", datetime(2025, 6, 15, 12, 0, 0, 123000, tzinfo=UTC)),
        # RFC 3339 allows lowercase separators: "z" and "t", as in the CLI and REST
        ("2025-06-15T12:00:00z", datetime(2025, 6, 15, 12, tzinfo=UTC)),
        ("2025-06-15t12:00:00.5z", datetime(2025, 6, 15, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2025-06-15t14:00:00+02:00", datetime(2025, 6, 15, 12, tzinfo=UTC)),
    ],
)
def test_iso_times_become_unix_milliseconds(text: str, expected: datetime) -> None:
    now = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    v = tt.parse_version(text, now_ms=now)
    assert v.ms == (expected - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert v.stamp is None and str(v) == text


def test_millisecond_times_are_exact_not_float_rounded() -> None:
    v = tt.parse_version("2024-01-01T00:00:00.124Z", now_ms=NOW)
    assert v.ms == 1_704_067_200_124
    assert tt.iso_time(1_704_067_200_124) == "2024-01-01T00:00:00.124+00:00"


@pytest.mark.parametrize("text", ["head", "HEAD", " head "])
def test_head(text: str) -> None:
    assert tt.parse_version(text).is_head


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "not a version"),
        ("12345", "not a version"),
        ("00000000000000070004000", "not a version"),  # 23 digits
        ("0000000000000007000400zz", "not a version"),
        ("", "not a version"),
        ("2025-13-01", "not a version"),
        ("1969-12-31T23:59:59Z", "before 1970"),
    ],
)
def test_malformed_versions_are_refused(text: str, message: str) -> None:
    with pytest.raises(tt.BadVersion, match=message):
        tt.parse_version(text, now_ms=NOW)


@pytest.mark.parametrize(
    "text",
    ["2016-12-31T23:59:60Z", "2016-12-31t23:59:60.25z", "2017-01-01T00:59:60+01:00",
     "2016-12-31 23:59:60"],
)  # fmt: skip
def test_a_leap_second_is_read_as_the_last_millisecond_of_its_minute(text: str) -> None:
    """RFC 3339 allows second 60 for a leap second; it was "not a version". Unix time
    (the log's clock) has none: it means the last millisecond of the minute."""
    v = tt.parse_version(text, now_ms=NOW)
    assert tt.iso_time(v.ms or 0) == "2016-12-31T23:59:59.999+00:00"
    assert str(v) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2023-02-29T12:00:00Z", "day is out of range for month"),
        ("2025-13-01", "month must be in 1..12"),
        ("2025-06-15T24:30:00Z", "hour must be in 0..23"),
        ("2025-06-15T12:00:00+25:00", "a UTC offset must be under 24 hours"),
    ],
)
def test_an_impossible_date_or_time_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(tt.BadVersion) as caught:
        tt.parse_version(text, now_ms=NOW)
    assert str(caught.value).startswith(f"not a version: {text!r} ({why}; use a versionstamp")


@pytest.mark.parametrize(
    "text",
    ["2025-06-15T10:00:00 01:00", "2025-06-15T10:00 0100", "2025-06-15 10:00:00.250 05:30"],
)
def test_a_utc_offset_whose_plus_became_a_space_gets_a_hint(text: str) -> None:
    """In a URL query an unencoded "+" arrives as a space."""
    with pytest.raises(tt.BadVersion, match="not a version") as caught:
        tt.parse_version(text, now_ms=NOW)
    assert str(caught.value).endswith(
        'in a URL, "+" means a space: write a UTC offset\'s "+" as %2B'
    )


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "2025-06-15T10:00:00 x", "1 2"])
def test_other_malformed_versions_get_no_plus_hint(text: str) -> None:
    with pytest.raises(tt.BadVersion) as caught:
        tt.parse_version(text, now_ms=NOW)
    assert "%2B" not in str(caught.value)


def test_a_time_in_the_future_is_refused() -> None:
    later = tt.iso_time(NOW + 1)
    with pytest.raises(tt.BadVersion, match="in the future"):
        tt.parse_version(later, now_ms=NOW)
    assert tt.parse_version(tt.iso_time(NOW), now_ms=NOW).ms == NOW
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    with pytest.raises(tt.BadVersion, match="in the future"):
        tt.parse_version(tomorrow)


def test_bad_versions_are_400_errors_and_value_errors() -> None:
    from crdt.errors import ProtocolError, WeftError

    assert issubclass(tt.BadVersion, ProtocolError)
    assert issubclass(tt.BadVersion, ValueError)
    assert issubclass(tt.VersionNotFound, LookupError)
    assert issubclass(tt.VersionNotFound, WeftError)


def test_predecessor_is_the_versionstamp_just_before() -> None:
    vs = Versionstamp(bytes.fromhex("000000000000000700040000"))
    assert tt.predecessor(vs).hex() == "00000000000000070003ffff"
    zero = Versionstamp(bytes(12))
    assert tt.predecessor(zero) == zero


# --- decoding updates -------------------------------------------------------------------


class Device:
    """A pycrdt doc that records the update of each of its transactions."""

    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.text = self.doc.get("content", type=Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def insert(self, at: int, s: str, **attrs: Any) -> None:
        current = str(self.text)
        self.text.insert(len(current[:at].encode()), s, attrs or None)

    def delete(self, start: int, end: int) -> None:
        current = str(self.text)
        b = len(current[:start].encode())
        del self.text[b : b + len(current[start:end].encode())]


def sync(a: Device, b: Device) -> None:
    a.doc.apply_update(b.doc.get_update(a.doc.get_state()))
    b.doc.apply_update(a.doc.get_update(b.doc.get_state()))


def visible(state: bytes) -> str:
    order = tt.ItemOrder()
    order.apply_state(state)
    return "".join(text for _, _, text in order.text_runs("content"))


WORDS = ["a", "bc", "\n", "é", "日本", "😀", "x😀y", "𝄞\n", " "]


@given(st.randoms(use_true_random=False), st.integers(2, 4), st.integers(5, 60))
@settings(max_examples=60, deadline=None)
def test_the_rebuilt_item_order_is_the_order_yrs_gives(
    rnd: random.Random, devices: int, steps: int
) -> None:
    peers = [Device(rnd.choice([n + 1, 1000 - n, 2**40 + n])) for n in range(devices)]
    for _ in range(steps):
        p = rnd.choice(peers)
        n = len(str(p.text))
        roll = rnd.random()
        if roll < 0.55 or n == 0:
            p.insert(rnd.randint(0, n), rnd.choice(WORDS))
        elif roll < 0.75:
            start = rnd.randrange(n)
            p.delete(start, rnd.randint(start + 1, min(n, start + 4)))
        elif roll < 0.8:
            p.insert(rnd.randint(0, n), "f", bold=True)  # format items in the list
        elif roll < 0.85:
            p.doc.get("weft", type=Map)["deleted"] = rnd.random() < 0.5
        else:
            sync(p, rnd.choice(peers))
    merged: Doc[Any] = Doc()
    for p in peers:
        merged.apply_update(p.doc.get_update())
    assert visible(merged.get_update()) == str(merged.get("content", type=Text))
    for p in peers:  # each device's own (partial) view too
        assert visible(p.doc.get_update()) == str(p.text)


@given(st.randoms(use_true_random=False), st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_struct_ranges_are_the_clocks_each_update_added(rnd: random.Random, steps: int) -> None:
    a, b = Device(7), Device(300)
    for _ in range(steps):
        p = rnd.choice([a, b])
        n = len(str(p.text))
        if rnd.random() < 0.7 or n == 0:
            p.insert(rnd.randint(0, n), rnd.choice(WORDS))
        else:
            p.delete(rnd.randrange(n), n)
        if rnd.random() < 0.2:
            sync(a, b)
    for p in (a, b):
        clock = 0
        for update in p.updates:
            for client, start, end in tt.struct_ranges(update):
                if client == p.doc.client_id:  # updates a device made itself
                    assert start == clock
                    clock = end
        assert clock == _clock_of(p.doc, p.doc.client_id)


def _clock_of(doc: Doc[Any], client: int) -> int:
    data = doc.get_state()
    r = _Reader(data)
    for _ in range(r.count()):
        c, clock = r.uint(), r.uint()
        if c == client:
            return clock
    return 0


def test_the_fast_record_path_gives_what_full_decoding_gives() -> None:
    a = Device(2**50 + 3)
    a.insert(0, "hello")
    a.insert(5, " wörld 😀")
    a.insert(0, "x" * 300)  # a string over one varUint byte
    a.insert(2, "y" * 70_000)  # bin16 no more: the record is bin32
    a.delete(1, 4)
    a.doc.get("weft", type=Map)["deleted"] = True
    b = Device(5)
    b.doc.apply_update(a.doc.get_update())
    b.insert(3, "z")
    updates = [*a.updates, *b.updates, a.doc.get_update()]
    records = [encode_record(u, "ada", "laptop", "s", 1) for u in updates]
    fast = list(tt.carried(records))
    full = [(c, s, e, n) for n, u in enumerate(updates) for c, s, e in tt.struct_ranges(u)]
    assert fast == full
    assert any(_RECORD_ONE_STRING.match(r) for r in records)  # the fast path is taken


def test_map_entries_give_each_any_item_and_its_value() -> None:
    a = Device(9)
    meta = a.doc.get("weft", type=Map)
    meta["deleted"] = True
    meta["deleted"] = False
    entries = [tt.map_entries(u) for u in a.updates]
    assert entries == [[((9, 0), True)], [((9, 1), False)]]


@pytest.mark.parametrize(
    "update",
    [
        b"",
        b"\x01",
        b"\x01\x01",
        b"\x05\x01\x01\x00",  # 5 clients announced, data for none
        b"\x01\x01\x01\x00\x04\x01\x07content\xff\xff\xff\xff\x0fa",  # string longer than data
        b"\x01\x01\x01\x00\x04\x01\x07conte",  # truncated root name
        b"\x01\x01\x01\x00\x1f\x01\x07content\x01",  # unknown content type 31
        b"\x01\x01\x01\x00\x04\x01\x07content\x02\xff\xfe\x00",  # not UTF-8
        b"\x01\x01\x01\x00\x08\x01\x04weft\x01\x70\x00",  # unknown Any type 0x70
        b"\x01\x01\x01\x00\x01\x01\x07content\x00\x00",  # empty deleted struct
        b"\x00\x00\x00",  # trailing bytes
        b"\x01\x01" + b"\xff" * 12,  # endless varUint
    ],
)
def test_malformed_updates_raise_a_decode_error(update: bytes) -> None:
    with pytest.raises(tt.UpdateDecodeError):
        tt.decode_update(update)


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_no_input_makes_the_decoder_raise_anything_else(data: bytes) -> None:
    for fn in (tt.decode_update, tt.struct_ranges, tt.map_entries, tt.ItemOrder().apply_state):
        with contextlib.suppress(tt.UpdateDecodeError):
            fn(data)


def test_truncating_a_real_update_anywhere_is_a_decode_error() -> None:
    a = Device(77)
    a.insert(0, "héllo\n😀")
    a.doc.get("weft", type=Map)["deleted"] = True
    a.doc.get("list", type=Array).append(1.5)
    update = a.doc.get_update()
    tt.decode_update(update)
    for cut in range(len(update)):
        with pytest.raises(tt.UpdateDecodeError):
            tt.decode_update(update[:cut])


def test_an_update_missing_a_dependency_is_refused_by_the_item_order() -> None:
    a = Device(1)
    a.insert(0, "ab")
    a.insert(1, "X")  # depends on the first update
    with pytest.raises(tt.UpdateDecodeError, match="missing"):
        tt.ItemOrder().apply_state(a.updates[1])


# --- which update carried which clocks ----------------------------------------------------------


def test_the_first_update_carrying_an_id_wrote_it() -> None:
    index = tt.ClockIndex(
        [
            (1, 0, 5, 0),
            (1, 5, 8, 1),
            (2, 0, 3, 2),
            (1, 3, 12, 3),  # sent again merged with new clocks 8..12
            (1, 20, 22, 4),  # a gap before it
            (1, 12, 20, 5),  # arrives late
        ]
    )
    pieces = list(index.attribute(1, 0, "x" * 22))
    assert pieces == [(5, 0), (3, 1), (4, 3), (8, 5), (2, 4)]
    assert list(index.attribute(2, 1, "ab")) == [(2, 2)]
    assert list(index.attribute(9, 0, "??")) == [(2, -1)]
    assert list(index.attribute(1, 21, "q😀")) == [(1, 4), (1, -1)]  # 😀 is 2 units


# --- text edits and diffs -------------------------------------------------------------------


@given(
    st.text(alphabet="ab\né😀", max_size=60),
    st.text(alphabet="ab\né😀", max_size=60),
)
@settings(max_examples=200)
def test_text_edits_turn_one_text_into_the_other(old: str, new: str) -> None:
    edits = tt.text_edits(old, new)
    out, last = [], 0
    for start, end, insert in edits:
        assert last <= start <= end <= len(old)
        out += [old[last:start], insert]
        last = end
    assert "".join([*out, old[last:]]) == new
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    text.insert(0, old)
    tt.apply_edits(text, old, edits)
    assert str(text) == new


def test_text_edits_of_big_texts_stay_small() -> None:
    old = "".join(f"line {n}\n" for n in range(5000))
    new = old.replace("line 2500\n", "line 2500!\n").replace("line 10\n", "")
    edits = tt.text_edits(old, new)
    assert sum(end - start + len(insert) for start, end, insert in edits) <= 12


def test_revert_update_edits_in_place_and_sets_the_flag() -> None:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, "one two three")
    base = doc.get_update()
    update = tt.revert_update(doc, "one 2 three", False)
    assert update is not None and str(doc.get("content", type=Text)) == "one 2 three"
    assert tt.revert_update(doc, "one 2 three", False) is None  # nothing to do
    gone = tt.revert_update(doc, "", True)
    assert gone is not None and tt.read_doc(doc) == ("", True)
    fresh: Doc[Any] = Doc()
    fresh.apply_update(base)
    fresh.apply_update(update)
    assert tt.read_doc(fresh) == ("one 2 three", False)
    fresh.apply_update(gone)
    assert tt.read_doc(fresh) == ("", True)


def test_revert_update_of_a_text_with_an_embed() -> None:
    """A Quill image is a position of the text that ``str()`` leaves out: a revert's
    edits after it landed a place early, and the revert failed ('does not match')."""
    doc: Doc[Any] = Doc()
    content = doc.get("content", type=Text)
    content.insert(0, "one two three")
    content.insert_embed(3, {"image": "a.png"})
    assert tt.revert_update(doc, "one 2 three", False) is not None
    assert content.diff() == [("one", None), ({"image": "a.png"}, None), (" 2 three", None)]


def test_revert_update_of_a_text_it_cannot_edit_is_refused() -> None:
    """An embed that is a string (pycrdt makes one) is a position ``diff()`` gives as
    text: the revert's edits landed a place off and it failed as a store error (a 500).
    Now it is refused, nothing written."""
    doc: Doc[Any] = Doc()
    content = doc.get("content", type=Text)
    content.insert(0, "one two")
    content.insert_embed(2, "s")
    state = doc.get_update()
    with pytest.raises(NotText):
        tt.revert_update(doc, "one 2", False)
    assert doc.get_update() == state


def _version(text: str, deleted: bool = False, vs: int = 1) -> tt.DocVersion:
    return tt.DocVersion("a.md", Versionstamp(vs.to_bytes(12, "big")), text, deleted)


def test_unified_diff_looks_like_git() -> None:
    out = tt.unified_diff("a.md", _version("one\ntwo\n"), _version("one\n2\nthree", vs=2))
    assert out.splitlines() == [
        "--- a/a.md\t000000000000000000000001",
        "+++ b/a.md\t000000000000000000000002",
        "@@ -1,2 +1,3 @@",
        " one",
        "-two",
        "+2",
        "+three",
        "\\ No newline at end of file",
    ]
    gone = tt.unified_diff("a.md", _version("x\n"), _version("", deleted=True))
    assert gone.splitlines()[:4] == [
        "--- a/a.md\t000000000000000000000001",
        "+++ /dev/null\t000000000000000000000001",
        "@@ -1 +0,0 @@",
        "-x",
    ]
    assert tt.unified_diff("a.md", _version("same"), _version("same", vs=2)) == ""


def test_msgpack_records_are_what_the_fast_path_expects() -> None:
    record = encode_record(b"\x00\x00", "u", "c", "s", 5)
    assert msgpack.unpackb(record)["update"] == b"\x00\x00"
    assert _RECORD_NO_STRUCTS.match(record)
