"""Client-supplied text in a log line: nothing in it may start a line or reorder one."""

from __future__ import annotations

from server.logsafe import printable


def test_line_breaks_and_bidi_controls_are_escaped() -> None:
    for char in "\n\r\0\x1b\x85\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        assert printable(f"a{char}b") == f"a{ascii(char)[1:-1]}b"
    assert printable("café ünïcode ✓ 😀 a b") == "café ünïcode ✓ 😀 a b"
