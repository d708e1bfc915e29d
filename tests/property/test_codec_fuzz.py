"""Codec properties: messages round-trip, and no input makes decode fail other than cleanly.

Whatever bytes arrive, ``decode`` returns a message or raises ``ProtocolError``; it never
raises anything else and never allocates more than a small multiple of the frame.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.codec import (
    CLOSE_PROTOCOL_ERROR,
    MAX_UINT,
    Ack,
    AuthDenied,
    Awareness,
    AwarenessEntry,
    Base,
    Checked,
    Conflict,
    Hello,
    Message,
    QueryAwareness,
    Refused,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    _scan_json,
    decode,
    decode_awareness,
    encode,
    encode_awareness,
    write_var_uint,
)
from crdt.errors import ProtocolError
from crdt.versionstamp import Versionstamp

FAST = settings(max_examples=150, deadline=None, database=None)

uints = st.one_of(st.integers(0, 300), st.integers(0, MAX_UINT))
blobs = st.binary(max_size=40)
texts = st.text(max_size=20)
hashes = st.binary(min_size=16, max_size=16)
stamps = st.binary(min_size=12, max_size=12).map(Versionstamp)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
entries = st.builds(AwarenessEntry, uints, uints, json_values.map(json.dumps))
awareness_payloads = st.lists(entries, max_size=3).map(encode_awareness)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(SyncStep1, blobs),
    st.builds(SyncStep2, blobs),
    st.builds(SyncUpdate, blobs),
    st.builds(Awareness, awareness_payloads),
    st.builds(AuthDenied, texts),
    st.just(QueryAwareness()),
    st.builds(Hello, uints),
    st.builds(Ack, hashes, stamps),
    st.builds(Base, stamps),
    st.builds(Refused, hashes, uints, texts),
    st.builds(Checked, stamps, texts),
    st.builds(Conflict, stamps, texts),
)


def var_uint(n: int) -> bytes:
    out = bytearray()
    write_var_uint(out, n)
    return bytes(out)


def decodes_cleanly(frame: bytes) -> None:
    """decode either succeeds (and then round-trips) or raises ProtocolError, nothing else."""
    try:
        msg = decode(frame)
    except ProtocolError as e:
        assert e.close_code in {1002, 1003, 1007}
    else:
        assert decode(encode(msg)) == msg


@FAST
@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    frame = encode(msg)
    assert decode(frame) == msg
    assert encode(decode(frame)) == frame


@FAST
@given(st.lists(entries, max_size=5))
def test_awareness_entries_round_trip(items: list[AwarenessEntry]) -> None:
    assert decode_awareness(encode_awareness(items)) == items


@FAST
@given(messages, st.integers(1, 7))
def test_padded_varints_decode_to_the_same_message(msg: Message, pad: int) -> None:
    frame = encode(msg)  # the type is one byte (0..100); re-spell it with `pad` more bytes
    padded = bytes([frame[0] | 0x80]) + b"\x80" * (pad - 1) + b"\x00" + frame[1:]
    assert decode(padded) == msg
    assert encode(decode(padded)) == frame


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_protocol_error(frame: bytes) -> None:
    decodes_cleanly(frame)


@FAST
@given(st.sampled_from([0, 1, 2, 3, 100]), st.integers(0, 4), st.binary(max_size=40))
def test_plausible_headers_with_arbitrary_bodies(kind: int, sub: int, body: bytes) -> None:
    decodes_cleanly(var_uint(kind) + var_uint(sub) + body)


@FAST
@given(messages, st.data())
def test_mutated_frames_decode_or_raise_protocol_error(msg: Message, data: st.DataObject) -> None:
    frame = encode(msg)
    at = data.draw(st.integers(0, len(frame)), label="at")
    mutation = data.draw(st.sampled_from(["truncate", "flip", "insert length", "append"]))
    if mutation == "truncate":
        mutated = frame[:at]
    elif mutation == "flip" and at < len(frame):
        byte = data.draw(st.integers(0, 255), label="byte")
        mutated = frame[:at] + bytes([byte]) + frame[at + 1 :]
    elif mutation == "insert length":
        mutated = frame[:at] + var_uint(data.draw(uints, label="length")) + frame[at:]
    else:
        mutated = frame + data.draw(st.binary(min_size=1, max_size=4), label="tail")
    decodes_cleanly(mutated)


@FAST
@given(messages)
def test_every_strict_prefix_of_a_frame_is_refused(msg: Message) -> None:
    frame = encode(msg)
    for end in range(len(frame)):
        try:
            decode(frame[:end])
        except ProtocolError as e:
            assert e.close_code == CLOSE_PROTOCOL_ERROR
        else:
            raise AssertionError(f"prefix {frame[:end]!r} of {frame!r} decoded")


def peak_allocation(frame: bytes) -> int:
    """Bytes allocated at peak while decoding ``frame`` (which must be refused)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            decode(frame)
        except ProtocolError:
            pass
        else:
            raise AssertionError("a forged frame decoded")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_forged_lengths_allocate_nothing_like_what_they_claim() -> None:
    body = bytes(1 << 20)
    forged = [
        b"\x00\x02" + var_uint(MAX_UINT) + body,  # update claiming 8 PiB
        b"\x00\x02" + var_uint(len(body) + 1) + body,  # one byte short
        b"\x01" + var_uint(len(body) + 1) + b"\x00" + body,  # awareness payload
        b"\x01" + var_uint(len(body) + 8) + var_uint(MAX_UINT) + body,  # awareness count
        b"\x02\x00" + var_uint(MAX_UINT) + body,  # auth reason
        b"\x64\x01" + var_uint(MAX_UINT) + body,  # ack hash
    ]
    for frame in forged:
        assert peak_allocation(frame) < len(frame) // 8  # refused before copying the body

    # a valid frame of the same size copies its body once: bounded by the frame, not a claim
    valid = encode(SyncUpdate(body))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert decode(valid) == SyncUpdate(body)
        assert tracemalloc.get_traced_memory()[1] < 2 * len(valid)
    finally:
        tracemalloc.stop()


# --- awareness JSON: checked without building what it describes ------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
JSON_PIECES = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    '"',
    "\\",
    "u",
    "0",
    "1",
    "-",
    ".",
    "e",
    "+",
    "true",
    "false",
    "null",
    "NaN",
    " ",
    "\n",
    "\x01",
    "a",
    "\u00e9",
    '"k"',
]


def json_verdict(text: str) -> bool:
    try:
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError):
        return False
    return True


def scan_verdict(text: str) -> bool:
    try:
        _scan_json(text)
    except ValueError:
        return False
    return True


@FAST
@given(json_values, st.sampled_from([None, 0, 2]))
def test_the_json_scanner_accepts_what_json_dumps_writes(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    assert scan_verdict(text)


@FAST
@given(st.lists(st.sampled_from(JSON_PIECES), max_size=12))
def test_the_json_scanner_agrees_with_json_loads(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert scan_verdict(text) == json_verdict(text), text


@FAST
@given(json_values, st.data())
def test_the_json_scanner_agrees_with_json_loads_on_damaged_json(
    value: Any, data: st.DataObject
) -> None:
    text = json.dumps(value)
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 3))
    insert = data.draw(st.sampled_from(["", *JSON_PIECES]))
    damaged = text[:at] + insert + text[at + cut :]
    assert scan_verdict(damaged) == json_verdict(damaged), damaged


def test_a_large_awareness_state_is_checked_without_building_it() -> None:
    state = "[" + ",".join(["{}"] * 300_000) + "]"  # ~0.9 MB: json.loads built ~25x that
    payload = encode_awareness([AwarenessEntry(1, 1, state)])
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        (entry,) = decode_awareness(payload)
        assert entry.state == state
        assert tracemalloc.get_traced_memory()[1] < 2 * len(payload)
    finally:
        tracemalloc.stop()
    for bad in (state[:-1], state + "]", state.replace("{}", "{,}", 1)):
        with pytest.raises(ProtocolError, match="not JSON"):
            decode_awareness(encode_awareness([AwarenessEntry(1, 1, bad)]))
