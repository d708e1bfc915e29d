"""The y-websocket codec, as a specification: hand-built frames in, messages out, and back.

Frames are spelled byte by byte from the grammar in ``crdt/codec.py``; every way a frame
can be wrong has its close code.
"""

from __future__ import annotations

import json

import pycrdt
import pytest

from crdt.codec import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    MAX_AWARENESS,
    MAX_UINT,
    Ack,
    AuthDenied,
    Awareness,
    AwarenessEntry,
    Base,
    Checked,
    Conflict,
    Create,
    Decoder,
    Hello,
    Message,
    QueryAwareness,
    Refused,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    decode_awareness,
    encode,
    encode_awareness,
    write_var_bytes,
    write_var_string,
    write_var_uint,
)
from crdt.errors import ProtocolError, WeftError
from crdt.versionstamp import Versionstamp

H = bytes(range(16))  # a 16-byte update hash
VS = Versionstamp(bytes(range(100, 112)))
AWARE = b"\x01\x07\x02\x04null"  # one entry: client 7, clock 2, state null


def var_uint(n: int) -> bytes:
    out = bytearray()
    write_var_uint(out, n)
    return bytes(out)


# --- varUint -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "wire"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (MAX_UINT, b"\xff\xff\xff\xff\xff\xff\xff\x0f"),
    ],
)
def test_var_uint_is_little_endian_base_128(n: int, wire: bytes) -> None:
    assert var_uint(n) == wire
    dec = Decoder(wire)
    assert dec.read_var_uint() == n
    assert dec.at_end()


@pytest.mark.parametrize("n", [-1, MAX_UINT + 1])
def test_only_js_safe_unsigned_integers_can_be_written(n: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        write_var_uint(bytearray(), n)


def test_non_minimal_var_uint_is_accepted_on_input() -> None:
    assert Decoder(b"\x81\x80\x80\x00").read_var_uint() == 1


def test_decoder_reads_a_sequence_and_tracks_its_position() -> None:
    out = bytearray()
    write_var_uint(out, 300)
    write_var_bytes(out, b"abc")
    write_var_string(out, "héllo")  # length counts UTF-8 bytes, not characters
    assert bytes(out) == b"\xac\x02\x03abc\x06h\xc3\xa9llo"
    dec = Decoder(memoryview(out))
    assert dec.read_var_uint() == 300
    assert dec.pos == 2
    assert dec.read_var_bytes() == b"abc"
    assert dec.remaining == 7
    assert dec.read_var_string() == "héllo"
    assert dec.at_end()
    dec.finish()


# --- every message, both ways ------------------------------------------------------------

FRAMES: list[tuple[bytes, Message]] = [
    (b"\x00\x00\x03sv!", SyncStep1(b"sv!")),
    (b"\x00\x01\x02up", SyncStep2(b"up")),
    (b"\x00\x02\x00", SyncUpdate(b"")),
    (b"\x01\x08" + AWARE, Awareness(AWARE)),
    (b"\x02\x00\x04nope", AuthDenied("nope")),
    (b"\x03", QueryAwareness()),
    (b"\x64\x00\x01", Hello(1)),
    (b"\x64\x01\x10" + H + b"\x0c" + VS.raw, Ack(H, VS)),
    (b"\x64\x02\x0c" + VS.raw, Base(VS)),
    (b"\x64\x03\x10" + H + b"\xad\x02\x05quota", Refused(H, 301, "quota")),
    (b"\x64\x04\x0c" + VS.raw + b"\x02hi", Checked(VS, "hi")),
    (b"\x64\x05\x0c" + VS.raw + b"\x02hi", Conflict(VS, "hi")),
    (b"\x64\x06\x01\x00\x02up", Create(b"\x00", b"up")),
]


@pytest.mark.parametrize(("frame", "msg"), FRAMES, ids=[type(m).__name__ for _, m in FRAMES])
def test_each_message_decodes_from_and_encodes_to_its_frame(frame: bytes, msg: Message) -> None:
    assert decode(frame) == msg
    assert encode(msg) == frame


def test_a_long_update_has_a_multi_byte_length() -> None:
    update = bytes(300)
    frame = b"\x00\x02\xac\x02" + update
    assert decode(frame) == SyncUpdate(update)
    assert encode(SyncUpdate(update)) == frame


def test_bytearray_and_memoryview_frames_decode_too() -> None:
    assert decode(bytearray(b"\x00\x00\x01x")) == SyncStep1(b"x")
    assert decode(memoryview(b"..\x00\x00\x01x")[2:]) == SyncStep1(b"x")


def test_non_canonical_varints_decode_and_re_encode_canonically() -> None:
    frame = b"\x80\x00\x80\x00\x81\x00x"  # type 0, sub 0, length 1, each padded
    assert decode(frame) == SyncStep1(b"x")
    assert encode(decode(frame)) == b"\x00\x00\x01x"


def test_awareness_payload_is_kept_byte_for_byte_for_relaying() -> None:
    payload = b"\x01\x87\x80\x00\x02\x02{}"  # client 7 written non-minimally
    frame = b"\x01" + var_uint(len(payload)) + payload
    assert decode(frame) == Awareness(payload)
    assert decode_awareness(payload) == [AwarenessEntry(7, 2, "{}")]


# --- awareness updates -------------------------------------------------------------------


def test_awareness_entries_round_trip() -> None:
    entries = [
        AwarenessEntry(1, 0, '{"user":{"name":"Ada","color":"#f00"}}'),
        AwarenessEntry(2**32, 9, "null"),
        AwarenessEntry(3, 1, '{"emoji":"☃"}'),
    ]
    payload = encode_awareness(entries)
    assert decode_awareness(payload) == entries
    assert decode(encode(Awareness(payload))) == Awareness(payload)
    assert [e.removed for e in entries] == [False, True, False]


def test_awareness_over_its_own_limit_is_too_big_before_its_json_is_read() -> None:
    state = '{"x":"' + "a" * MAX_AWARENESS + '"}'
    frame = encode(Awareness(encode_awareness([AwarenessEntry(1, 1, state)])))
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    assert info.value.close_code == CLOSE_MESSAGE_TOO_BIG
    just_fits = '{"x":"' + "a" * (MAX_AWARENESS - 100) + '"}'
    payload = encode_awareness([AwarenessEntry(1, 1, just_fits)])
    assert decode(encode(Awareness(payload))) == Awareness(payload)


def test_an_empty_awareness_update_is_valid() -> None:
    assert encode_awareness([]) == b"\x00"
    assert decode_awareness(b"\x00") == []


# --- errors, each with its close code ----------------------------------------------------


def aware(payload: bytes) -> bytes:
    return b"\x01" + var_uint(len(payload)) + payload


def entry_with_state(state: bytes) -> bytes:
    return b"\x01\x01\x00" + var_uint(len(state)) + state


ERRORS: list[tuple[str, bytes, int]] = [
    ("empty frame", b"", CLOSE_PROTOCOL_ERROR),
    ("truncated type", b"\x80", CLOSE_PROTOCOL_ERROR),
    ("truncated sub", b"\x00", CLOSE_PROTOCOL_ERROR),
    ("truncated length", b"\x00\x02\xff", CLOSE_PROTOCOL_ERROR),
    ("missing payload", b"\x00\x02", CLOSE_PROTOCOL_ERROR),
    ("var_uint of 9 bytes", b"\x80" * 8 + b"\x00", CLOSE_PROTOCOL_ERROR),
    ("var_uint over 2**53-1", b"\x00\x02" + b"\xff" * 7 + b"\x7f", CLOSE_PROTOCOL_ERROR),
    ("forged length", b"\x00\x02\xff\xff\xff\x7f" + b"ab", CLOSE_PROTOCOL_ERROR),
    ("length one past the end", b"\x00\x00\x03ab", CLOSE_PROTOCOL_ERROR),
    ("trailing bytes after sync", b"\x00\x00\x01ab", CLOSE_PROTOCOL_ERROR),
    ("trailing bytes after query", b"\x03\x00", CLOSE_PROTOCOL_ERROR),
    ("short hash", b"\x64\x01\x0f" + H[:15] + b"\x0c" + VS.raw, CLOSE_PROTOCOL_ERROR),
    ("long versionstamp", b"\x64\x02\x0d" + VS.raw + b"!", CLOSE_PROTOCOL_ERROR),
    ("refused without reason", b"\x64\x03\x10" + H + b"\x01", CLOSE_PROTOCOL_ERROR),
    ("hello without version", b"\x64\x00", CLOSE_PROTOCOL_ERROR),
    ("unknown type", b"\x04", CLOSE_UNSUPPORTED_DATA),
    ("unknown type 99", b"\x63\x00", CLOSE_UNSUPPORTED_DATA),
    ("unknown sync sub", b"\x00\x03\x00", CLOSE_UNSUPPORTED_DATA),
    ("unknown auth sub", b"\x02\x01\x00", CLOSE_UNSUPPORTED_DATA),
    ("unknown weft sub", b"\x64\x07", CLOSE_UNSUPPORTED_DATA),
    ("conflict short id", b"\x64\x05\x0b" + VS.raw[:11] + b"\x00", CLOSE_PROTOCOL_ERROR),
    ("checked short versionstamp", b"\x64\x04\x0b" + VS.raw[:11] + b"\x00", CLOSE_PROTOCOL_ERROR),
    ("bad UTF-8 reason", b"\x02\x00\x02\xc3\x28", CLOSE_INVALID_PAYLOAD),
    ("surrogate in reason", b"\x64\x03\x10" + H + b"\x00\x03\xed\xa0\x80", CLOSE_INVALID_PAYLOAD),
    ("awareness truncated entry", aware(b"\x01\x01\x00"), CLOSE_PROTOCOL_ERROR),
    ("awareness forged count", aware(b"\xff\xff\x03\x01\x00\x00"), CLOSE_PROTOCOL_ERROR),
    ("awareness trailing bytes", aware(b"\x00\x00"), CLOSE_PROTOCOL_ERROR),
    ("awareness empty payload", aware(b""), CLOSE_PROTOCOL_ERROR),
    ("awareness bad UTF-8", aware(entry_with_state(b'"\xff"')), CLOSE_INVALID_PAYLOAD),
    ("awareness not JSON", aware(entry_with_state(b"{")), CLOSE_INVALID_PAYLOAD),
    ("awareness empty state", aware(entry_with_state(b"")), CLOSE_INVALID_PAYLOAD),
    ("awareness NaN", aware(entry_with_state(b'{"x":NaN}')), CLOSE_INVALID_PAYLOAD),
    ("awareness deep nesting", aware(entry_with_state(b"[" * 100_000)), CLOSE_INVALID_PAYLOAD),
]


@pytest.mark.parametrize(("frame", "code"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_malformed_frames_raise_protocol_error_with_close_code(frame: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.close_code == code


def test_protocol_error_is_a_weft_error_and_a_value_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(b"")
    assert isinstance(caught.value, WeftError)
    assert isinstance(caught.value, ValueError)


def test_frame_size_is_checked_before_parsing() -> None:
    assert decode(b"\x00\x00\x02ab", max_size=5) == SyncStep1(b"ab")
    for frame in (b"\x00\x00\x03abc", b"\x04" * 6):  # valid, or garbage: too big either way
        with pytest.raises(ProtocolError, match="exceeds") as caught:
            decode(frame, max_size=5)
        assert caught.value.close_code == CLOSE_MESSAGE_TOO_BIG


def test_decode_awareness_checks_structure_and_json() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_awareness(entry_with_state(b"{'single': 'quotes'}"))
    assert caught.value.close_code == CLOSE_INVALID_PAYLOAD
    with pytest.raises(ProtocolError):
        decode_awareness(b"")


def test_big_json_numbers_are_valid_awareness_state() -> None:
    state = '{"n":' + "9" * 10_000 + "}"  # valid JSON; no int conversion, no digit limit
    assert decode_awareness(encode_awareness([AwarenessEntry(1, 1, state)]))[0].state == state


# --- message invariants ------------------------------------------------------------------


def test_messages_refuse_fields_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Ack(H[:8], VS)
    with pytest.raises(ValueError, match="16 bytes"):
        Refused(H + b"!", 1, "")
    with pytest.raises(ValueError, match="varUint"):
        Hello(-1)
    with pytest.raises(ValueError, match="varUint"):
        Refused(H, 2**53, "")


# --- interoperability with pycrdt's own helpers -------------------------------------------


def test_pycrdt_sync_step1_decodes_to_the_doc_state_vector() -> None:
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    doc["text"] = pycrdt.Text("hello")
    assert decode(pycrdt.create_sync_message(doc)) == SyncStep1(doc.get_state())


def test_pycrdt_update_and_step2_decode_and_our_frames_apply_in_pycrdt() -> None:
    source: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    target: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    source["text"] = text = pycrdt.Text()
    text += "héllo"
    update = source.get_update()
    assert decode(pycrdt.create_update_message(update)) == SyncUpdate(update)

    step1 = decode(pycrdt.create_sync_message(target))
    assert isinstance(step1, SyncStep1)
    reply = pycrdt.handle_sync_message(encode(step1)[1:], source)
    assert reply is not None
    step2 = decode(reply)
    assert step2 == SyncStep2(source.get_update(step1.state_vector))

    assert pycrdt.handle_sync_message(encode(step2)[1:], target) is None
    target["text"] = received = pycrdt.Text()
    assert str(received) == "héllo"


def test_pycrdt_awareness_update_decodes_to_its_entries_and_ours_applies() -> None:
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    theirs = pycrdt.Awareness(doc)
    theirs.set_local_state({"user": {"name": "Ada"}})
    frame = pycrdt.create_awareness_message(theirs.encode_awareness_update([theirs.client_id]))
    msg = decode(frame)
    assert isinstance(msg, Awareness)
    [entry] = decode_awareness(msg.payload)
    assert (entry.client_id, entry.clock) == (theirs.client_id, 1)
    assert json.loads(entry.state) == {"user": {"name": "Ada"}}

    ours = pycrdt.Awareness(pycrdt.Doc())
    ours.apply_awareness_update(encode_awareness([AwarenessEntry(42, 1, '{"a":1}')]), "test")
    assert ours.states[42] == {"a": 1}
