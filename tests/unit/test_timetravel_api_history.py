"""The history route's JSON (``server.timetravel_api.history_json``): what ``json.dumps``
of the page gives, encoded so that the event loop keeps running while a worker thread
encodes a long one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crdt import timetravel as tt
from crdt.versionstamp import Versionstamp
from server.timetravel_api import history_json


def _page(versions: int, more: bool = True) -> tt.Page:
    entries = [
        tt.Entry(
            Versionstamp(n.to_bytes(12, "big")),
            1_700_000_000_000 + n,
            'ad"a\u00e9',
            "laptop",
            "revert/1" if n % 3 == 0 else "s",
            n,
            (None, True, False)[n % 3],
        )
        for n in range(versions)
    ]
    next_until = Versionstamp(bytes(11) + b"\x01") if more else None
    return tt.Page('a "b" \u00fc.md', entries, next_until)


def test_it_is_the_json_of_the_page() -> None:
    for versions, more in ((0, False), (1, True), (5, False), (5, True)):
        page = _page(versions, more)
        assert history_json(page) == json.dumps(page.to_dict())
        assert json.loads(history_json(page)) == page.to_dict()


def test_a_long_page_is_encoded_one_version_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoded as one value, a page of 10,000 versions held the GIL for all of json's C
    encoder's work on it: each call encodes one version at most, so the GIL changes
    hands between them. (Counted, not timed: a timed check of the loop's gaps would
    depend on the machine's load.)"""
    real = json.dumps
    sizes: list[int] = []

    def dumps(value: Any, *args: Any, **kwargs: Any) -> str:
        sizes.append(len(value.get("versions", ())) if isinstance(value, dict) else 0)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", dumps)
    page = _page(1_000)
    assert real(page.to_dict()) == history_json(page)
    assert len(sizes) > 1_000 and max(sizes) == 0
