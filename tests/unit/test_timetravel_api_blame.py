"""The blame route's JSON (``server.timetravel_api.blame_json``): what ``json.dumps`` of
the blame gives, encoded so that the event loop keeps running while a worker thread
encodes a long one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crdt import timetravel as tt
from crdt.versionstamp import Versionstamp
from server.timetravel_api import blame_json


def _blame(lines: int) -> tt.Blame:
    author = tt.Author(Versionstamp(bytes(12)), "ada", "laptop", 1_700_000_000_000)
    rows = [tt.BlameLine(n + 1, f'line \u00e9 {n} "q"', author) for n in range(lines)]
    rows.append(tt.BlameLine(lines + 1, "no author", None))
    return tt.Blame('a "b".md', Versionstamp(bytes(12)), "", [], rows)


def test_it_is_the_json_of_the_blame() -> None:
    for lines in (0, 1, 5):
        blame = _blame(lines)
        assert json.loads(blame_json(blame)) == blame.to_dict()
        assert blame_json(blame) == json.dumps(blame.to_dict())


def test_a_long_blame_is_encoded_one_line_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoded as one value, a blame of 330,000 lines held the GIL (so the server's event
    loop, even with the encoding in a worker thread) for the 0.5 s json's C encoder took:
    each call encodes one line at most, so the GIL changes hands between them. (Counted,
    not timed: a timed check of the loop's gaps would depend on the machine's load.)"""
    real = json.dumps
    sizes: list[int] = []

    def dumps(value: Any, *args: Any, **kwargs: Any) -> str:
        sizes.append(len(value.get("lines", ())) if isinstance(value, dict) else 0)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", dumps)
    blame = _blame(1_000)
    assert real(blame.to_dict()) == blame_json(blame)
    assert len(sizes) > 1_000 and max(sizes) == 0
