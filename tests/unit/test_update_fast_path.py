"""The hot path for update frames reads exactly what the general decoder reads.

``codec.read_update_frame`` reads a canonical syncStep2/update frame without a Decoder;
anything else (other messages, malformed frames, a non-minimal length) is left to
``codec.decode``. The session relays the client's own frame only when it is the very
frame ``encode(SyncUpdate(update))`` would make.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Text

from crdt import codec
from crdt.codec import Awareness, AwarenessEntry, SyncStep1, SyncStep2, SyncUpdate
from crdt.errors import ProtocolError
from server.quotas import Limits, Quotas
from server.session import Close, Commit, Session


def frame_of(kind: int, sub: int, length: bytes, payload: bytes) -> bytes:
    return bytes([kind, sub]) + length + payload


@given(st.binary(max_size=300), st.sampled_from([SyncStep2, SyncUpdate]))
def test_a_canonical_update_frame_reads_as_decode_reads_it(
    update: bytes, kind: type[SyncStep2] | type[SyncUpdate]
) -> None:
    frame = codec.encode(kind(update))
    assert codec.read_update_frame(frame) == update == codec.decode(frame).update  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 70_000])
def test_lengths_across_varuint_widths(size: int) -> None:
    update = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert codec.read_update_frame(codec.encode(SyncUpdate(update))) == update


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00",
        b"\x00\x02",
        codec.encode(SyncStep1(b"\x00")),  # a state vector, not an update
        codec.encode(Awareness(codec.encode_awareness([AwarenessEntry(1, 1, "{}")]))),
        frame_of(0, 3, b"\x01", b"x"),  # unknown sync subtype
        frame_of(0, 2, b"\x03", b"ab"),  # truncated
        frame_of(0, 2, b"\x01", b"ab"),  # trailing byte
        frame_of(0, 2, b"\x81", b""),  # truncated varUint
        frame_of(0, 2, b"\x81\x00", b"a"),  # non-minimal length: valid, but not canonical
        frame_of(0, 2, b"\xff" * 9 + b"\x01", b""),  # a varUint longer than 8 bytes
    ],
)
def test_anything_else_is_left_to_decode(frame: bytes) -> None:
    assert codec.read_update_frame(frame) is None


def test_a_non_minimal_length_still_decodes_through_the_general_path() -> None:
    frame = frame_of(0, 2, b"\x81\x00", b"a")
    assert codec.decode(frame) == SyncUpdate(b"a")
    with pytest.raises(ProtocolError):
        codec.decode(frame_of(0, 2, b"\x01", b"ab"))


# --- the session ------------------------------------------------------------------------


class Room:
    size = 0
    inflight = 0

    def state_vector(self) -> bytes:
        return b"\x00"

    def sync_step2_frame(self, state_vector: bytes) -> bytes:
        return codec.encode(SyncStep2(b"\x00\x00"))

    def awareness_payload(self) -> bytes | None:
        return None

    def awareness_clock(self, client: int) -> int | None:
        return None

    cursor = None

    def holds_deletions(self, update: bytes) -> bool:
        return False


def session(max_frame: int = codec.DEFAULT_MAX_FRAME) -> Session:
    limits = Limits(
        max_update_bytes=10_000,
        max_doc_bytes=50_000,
        updates_per_second=1000,
        updates_burst=1000,
        max_connections=10,
    )
    return Session(
        Room(), tenant="acme", can_write=True, quotas=Quotas(limits), max_frame=max_frame
    )


def an_update(text: str = "hi") -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


def test_an_update_frame_is_committed_with_the_frame_to_relay() -> None:
    update = an_update()
    frame = codec.encode(SyncUpdate(update))
    [commit] = session().receive_frame(frame, 0.0)
    assert isinstance(commit, Commit)
    assert commit.update == update and commit.frame == frame


def test_a_sync_step2_is_relayed_as_an_update_encoded_by_the_server() -> None:
    update = an_update()
    [commit] = session().receive_frame(codec.encode(SyncStep2(update)), 0.0)
    assert isinstance(commit, Commit)
    assert commit.update == update and commit.frame is None


def test_a_non_canonical_frame_is_committed_and_re_encoded() -> None:
    update = an_update()
    n = len(update)
    length = bytes([0x80 | (n & 0x7F), n >> 7]) if n >= 128 else bytes([0x80 | n, 0])
    [commit] = session().receive_frame(frame_of(0, 2, length, update), 0.0)
    assert isinstance(commit, Commit)
    assert commit.update == update and commit.frame is None


def test_the_frame_size_limit_holds_on_the_fast_path() -> None:
    frame = codec.encode(SyncUpdate(an_update("x" * 200)))
    actions = session(max_frame=len(frame) - 1).receive_frame(frame, 0.0)
    assert [a.code for a in actions if isinstance(a, Close)] == [1009]


def test_an_update_that_does_not_decode_is_refused_on_the_fast_path() -> None:
    actions = session().receive_frame(codec.encode(SyncUpdate(b"\x01\x02\x03")), 0.0)
    assert [a.code for a in actions if isinstance(a, Close)] == [1007]
