"""The server's update validation (``server.session.validate_update``) decodes without
building a document; its verdict must be the one applying the update to an empty ``Doc``
gives (what it did before, at about 30 times the cost): whatever the bytes, valid
updates pass and everything else is refused with a ProtocolError (close code 1007).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt import ydoc
from crdt.errors import ProtocolError
from server.session import CLOSE_INVALID, validate_update

FAST = settings(max_examples=300, deadline=None, database=None)


def _updates() -> list[bytes]:
    """Real updates: text inserts and deletes, map sets, array pushes."""
    doc: Doc[Any] = Doc(client_id=7)
    text = doc.get("content", type=Text)
    meta = doc.get("meta", type=Map)
    items = doc.get("items", type=Array)
    out = []
    for i in range(40):
        before = doc.get_state()
        if i % 4 == 0:
            text.insert(len(text) // 2, "héllo €")
        elif i % 4 == 1 and len(text) > 2:
            del text[1:2]
        elif i % 4 == 2:
            meta[f"k{i}"] = {"n": i, "s": "x" * i}
        else:
            items.append(i)
        out.append(doc.get_update(before))
    out.append(doc.get_update())
    return out


UPDATES = _updates()


def applies_to_an_empty_doc(update: bytes) -> bool:
    """False if it does not decode; a pycrdt panic means it decoded but could not be
    integrated, which the room handles (crdt.ydoc.apply), not validation."""
    try:
        Doc().apply_update(update)
    except ValueError:
        return False
    except BaseException as exc:
        if not ydoc.is_panic(exc):
            raise
    return True


def accepted(update: bytes) -> bool:
    try:
        validate_update(update)
    except ProtocolError as exc:
        assert exc.close_code == CLOSE_INVALID
        return False
    return True


# Ids by index: a map's entries are encoded in a per-process order, and pytest-xdist
# needs every worker to collect the same tests.
@pytest.mark.parametrize("update", UPDATES, ids=[str(n) for n in range(len(UPDATES))])
def test_real_updates_are_accepted(update: bytes) -> None:
    assert accepted(update)


@FAST
@given(
    index=st.integers(0, len(UPDATES) - 1),
    cut=st.integers(0, 400),
    position=st.integers(0, 400),
    byte=st.integers(0, 255),
    how=st.sampled_from(["truncate", "flip", "insert", "append"]),
)
def test_mutated_updates_get_the_same_verdict_as_applying_them(
    index: int, cut: int, position: int, byte: int, how: str
) -> None:
    data = bytearray(UPDATES[index])
    if how == "truncate":
        del data[cut % (len(data) + 1) :]
    elif how == "flip" and data:
        data[position % len(data)] = byte
    elif how == "insert":
        data.insert(position % (len(data) + 1), byte)
    else:
        data.append(byte)
    update = bytes(data)
    assert accepted(update) == applies_to_an_empty_doc(update)


@FAST
@given(st.binary(max_size=64))
def test_random_bytes_get_the_same_verdict_as_applying_them(update: bytes) -> None:
    assert accepted(update) == applies_to_an_empty_doc(update)
