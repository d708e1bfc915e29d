"""The y-websocket wire protocol as pure functions: bytes in, messages out, and back.

Grammar (lib0 encoding: varUint is unsigned LEB128, low 7-bit group first, high bit set on
every byte but the last; varByteArray := varUint(len) • bytes; varString := varByteArray
of UTF-8)::

    frame           := varUint(type) • payload
    syncStep1(sv)   := varUint(0) • varUint(0) • varByteArray(sv)
    syncStep2(u)    := varUint(0) • varUint(1) • varByteArray(u)
    update(u)       := varUint(0) • varUint(2) • varByteArray(u)
    awareness(a)    := varUint(1) • varByteArray(a)
      a             := varUint(n) • n * (varUint(clientID) • varUint(clock) • varString(json))
    authDenied(r)   := varUint(2) • varUint(0) • varString(r)
    queryAwareness  := varUint(3)
    -- weft's extension, only for clients that sent hello --
    hello(v)        := varUint(100) • varUint(0) • varUint(v)
    ack(h, vs)      := varUint(100) • varUint(1) • varByteArray(h: 16) • varByteArray(vs: 12)
    base(vs)        := varUint(100) • varUint(2) • varByteArray(vs: 12)
    refused(h,c,r)  := varUint(100) • varUint(3) • varByteArray(h: 16) • varUint(c) • varString(r)
    checked(vs, s)  := varUint(100) • varUint(4) • varByteArray(vs: 12) • varString(s)
    conflict(id, s) := varUint(100) • varUint(5) • varByteArray(id: 12) • varString(s)

Decoding is bounds-checked: any malformed or oversized frame raises ``ProtocolError`` with
the WebSocket close code to use, and a length prefix is checked against the bytes left
before anything is sliced, so decoding never allocates more than the frame holds.
Non-minimal varUints are accepted (lib0 never writes them); encoding is always canonical.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NoReturn, TypeAlias, assert_never

from crdt import versionstamp
from crdt.errors import ProtocolError
from crdt.versionstamp import Versionstamp

MSG_SYNC: Final = 0
MSG_AWARENESS: Final = 1
MSG_AUTH: Final = 2
MSG_QUERY_AWARENESS: Final = 3
MSG_WEFT: Final = 100

SYNC_STEP1: Final = 0
SYNC_STEP2: Final = 1
SYNC_UPDATE: Final = 2
AUTH_PERMISSION_DENIED: Final = 0
WEFT_HELLO: Final = 0
WEFT_ACK: Final = 1
WEFT_BASE: Final = 2
WEFT_REFUSED: Final = 3
WEFT_CHECKED: Final = 4
WEFT_CONFLICT: Final = 5
WEFT_CREATE: Final = 6
WEFT_EXTENSION_VERSION: Final = 4
"""The weft extension version this code speaks (``Hello``, ``?weft=``): 2 added
``Checked``, sent only to clients that connected with ``?weft=2`` or later; 3 added
``Conflict``, only for ``?weft=3`` or later; 4 added ``Create``, which a client sends
only to a server that said 4 or later."""

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_INVALID_PAYLOAD: Final = 1007
CLOSE_MESSAGE_TOO_BIG: Final = 1009

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
MAX_AWARENESS: Final = 1024 * 1024
"""Largest awareness payload accepted (1009 above it). Awareness states are cursors and
user names; checking the JSON of a large one costs many times its size in memory."""
MAX_UINT: Final = 2**53 - 1
"""Largest varUint accepted: lib0 decodes into a JS number, exact up to 2**53 - 1."""
MAX_VAR_UINT_LEN: Final = 8
"""Bytes a varUint may take (8 groups of 7 bits hold 53 bits)."""
HASH_LEN: Final = 16
"""Length of the blake3 digest of an update that Ack and Refused carry."""
_MIN_AWARENESS_ENTRY: Final = 3  # clientID, clock and string length: one byte each at least

Buffer: TypeAlias = bytes | bytearray | memoryview


# --- primitives ------------------------------------------------------------------------


class Decoder:
    """A position-tracking reader of lib0 values; every misread raises ``ProtocolError``."""

    __slots__ = ("_buf", "pos")

    def __init__(self, buf: Buffer) -> None:
        self._buf = memoryview(buf).cast("B")
        self.pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._buf) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self._buf)

    def finish(self) -> None:
        """Raise (1002) if bytes are left after a complete message."""
        if not self.at_end():
            _fail(f"{self.remaining} trailing bytes at offset {self.pos}")

    def read_var_uint(self) -> int:
        """Read an unsigned LEB128 integer of at most 8 bytes and at most 2**53 - 1."""
        buf, pos, end = self._buf, self.pos, len(self._buf)
        value = 0
        for shift in range(0, 7 * MAX_VAR_UINT_LEN, 7):
            if pos >= end:
                _fail(f"truncated varUint at offset {self.pos}")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > MAX_UINT:
                    _fail(f"varUint at offset {self.pos} exceeds 2**53 - 1")
                self.pos = pos
                return value
        _fail(f"varUint at offset {self.pos} is longer than {MAX_VAR_UINT_LEN} bytes")

    def read_bytes(self, n: int) -> bytes:
        """Read exactly ``n`` bytes, checking they are there before copying anything."""
        return bytes(self._take(n))

    def read_var_bytes(self) -> bytes:
        """Read a varByteArray: a varUint length, then that many bytes."""
        return self.read_bytes(self.read_var_uint())

    def read_var_view(self) -> memoryview:
        """Read a varByteArray as a view into the frame, without copying it."""
        return self._take(self.read_var_uint())

    def read_var_string(self) -> str:
        """Read a varString; invalid UTF-8 raises with close code 1007."""
        start = self.pos
        view = self.read_var_view()
        try:
            return str(view, "utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(
                f"string at offset {start} is not UTF-8: {e.reason}", CLOSE_INVALID_PAYLOAD
            ) from e

    def _take(self, n: int) -> memoryview:
        if not 0 <= n <= self.remaining:
            _fail(f"length {n} at offset {self.pos} exceeds the {self.remaining} bytes left")
        start = self.pos
        self.pos += n
        return self._buf[start : self.pos]


def write_var_uint(out: bytearray, n: int) -> None:
    """Append ``n`` as a canonical varUint; ``ValueError`` outside 0 ≤ n ≤ 2**53 - 1."""
    if not 0 <= n <= MAX_UINT:
        raise ValueError(f"varUint out of range: {n}")
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)


def write_var_bytes(out: bytearray, data: bytes) -> None:
    """Append a varByteArray: the length as a varUint, then the bytes."""
    write_var_uint(out, len(data))
    out += data


def write_var_string(out: bytearray, text: str) -> None:
    """Append a varString (UTF-8 bytes with their length in bytes, not characters)."""
    write_var_bytes(out, text.encode("utf-8"))


def _fail(message: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> NoReturn:
    raise ProtocolError(message, close_code)


def _check_uint(name: str, n: int) -> None:
    if not 0 <= n <= MAX_UINT:
        raise ValueError(f"{name} must be a varUint (0 to 2**53 - 1), got {n}")


def _check_hash(update_hash: bytes) -> None:
    if len(update_hash) != HASH_LEN:
        raise ValueError(f"update_hash must be {HASH_LEN} bytes, got {len(update_hash)}")


# --- messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """A state vector: "send me what I am missing"."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The reply to SyncStep1: an update with everything the peer was missing."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class Awareness:
    """An awareness update; ``payload`` holds its exact bytes, so it relays unchanged.

    ``decode`` has already checked its structure; ``decode_awareness`` lists its entries.
    """

    payload: bytes


@dataclass(frozen=True, slots=True)
class AuthDenied:
    """The server refuses the connection (y-protocols' permission-denied auth message)."""

    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """Ask the peer to send every awareness state it knows."""


@dataclass(frozen=True, slots=True)
class Hello:
    """Client → server: opt in to weft's extension messages, at this extension version."""

    version: int

    def __post_init__(self) -> None:
        _check_uint("version", self.version)


@dataclass(frozen=True, slots=True)
class Ack:
    """Server → client: the update with this blake3-128 hash is durable under ``versionstamp``."""

    update_hash: bytes
    versionstamp: Versionstamp

    def __post_init__(self) -> None:
        _check_hash(self.update_hash)


@dataclass(frozen=True, slots=True)
class Base:
    """Client → server: the updates that follow are an offline branch made on this base."""

    versionstamp: Versionstamp


@dataclass(frozen=True, slots=True)
class Refused:
    """Server → client: the update with this hash was refused (read-only, quota…)."""

    update_hash: bytes
    code: int
    reason: str

    def __post_init__(self) -> None:
        _check_hash(self.update_hash)
        _check_uint("code", self.code)


@dataclass(frozen=True, slots=True)
class Checked:
    """Server → client (extension version 2): an offline branch this connection ended
    was checked for conflicts. ``conflict``: the record's id, or ``ZERO`` for none;
    ``summary``: one line for a person (empty for none; with ``ZERO``, why no verdict)."""

    conflict: Versionstamp
    summary: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """Server → client (extension version 3): an update this connection sent online was
    recorded as a conflict (an edit of a document another device deleted meanwhile).
    Unlike ``Checked`` it answers no ``Base``: it comes on its own, once per record.
    ``conflict``: the record's id; ``summary``: one line for a person."""

    conflict: Versionstamp
    summary: str


@dataclass(frozen=True, slots=True)
class Create:
    """Client → server (extension version 4): ``update`` makes a new document of a file,
    or brings a deleted one back, decided on the document as it was at
    ``state_vector``. The server stores it only if the document holds nothing more
    (else another device created it meanwhile): ``Ack`` if stored, ``Refused`` with
    ``CREATED_MEANWHILE`` if not."""

    state_vector: bytes
    update: bytes


CREATED_MEANWHILE: Final = 4409
"""``Refused`` code of a ``Create`` the document's newer state turned down."""


Message: TypeAlias = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | Awareness
    | AuthDenied
    | QueryAwareness
    | Hello
    | Ack
    | Base
    | Refused
    | Checked
    | Conflict
    | Create
)


_SYNC_TYPES: Final = (SyncStep1, SyncStep2, SyncUpdate)
"""The sync message classes, indexed by their subtype (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE)."""


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state; ``state`` is the raw JSON text (``"null"`` = removed)."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        """Whether this entry says the client is gone (its state is JSON ``null``)."""
        return self.state.strip(" \t\r\n") == "null"


# --- encoding --------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Encode one message as a frame (canonical varUints)."""
    out = bytearray()
    match msg:
        case SyncStep1(state_vector=data) | SyncStep2(update=data) | SyncUpdate(update=data):
            _header(out, MSG_SYNC, _SYNC_TYPES.index(type(msg)))
            write_var_bytes(out, data)
        case Awareness(payload=data):
            _header(out, MSG_AWARENESS)
            write_var_bytes(out, data)
        case AuthDenied(reason=reason):
            _header(out, MSG_AUTH, AUTH_PERMISSION_DENIED)
            write_var_string(out, reason)
        case QueryAwareness():
            _header(out, MSG_QUERY_AWARENESS)
        case Hello(version=version):
            _header(out, MSG_WEFT, WEFT_HELLO)
            write_var_uint(out, version)
        case Ack(update_hash=update_hash, versionstamp=vs):
            _header(out, MSG_WEFT, WEFT_ACK)
            write_var_bytes(out, update_hash)
            write_var_bytes(out, vs.raw)
        case Base(versionstamp=vs):
            _header(out, MSG_WEFT, WEFT_BASE)
            write_var_bytes(out, vs.raw)
        case Refused(update_hash=update_hash, code=code, reason=reason):
            _header(out, MSG_WEFT, WEFT_REFUSED)
            write_var_bytes(out, update_hash)
            write_var_uint(out, code)
            write_var_string(out, reason)
        case Checked(conflict=vs, summary=summary):
            _header(out, MSG_WEFT, WEFT_CHECKED)
            write_var_bytes(out, vs.raw)
            write_var_string(out, summary)
        case Conflict(conflict=vs, summary=summary):
            _header(out, MSG_WEFT, WEFT_CONFLICT)
            write_var_bytes(out, vs.raw)
            write_var_string(out, summary)
        case Create(state_vector=sv, update=update):
            _header(out, MSG_WEFT, WEFT_CREATE)
            write_var_bytes(out, sv)
            write_var_bytes(out, update)
        case _:
            assert_never(msg)
    return bytes(out)


def _header(out: bytearray, *values: int) -> None:
    for value in values:
        write_var_uint(out, value)


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode an awareness update (the ``payload`` of an ``Awareness`` message)."""
    items = list(entries)
    out = bytearray()
    write_var_uint(out, len(items))
    for entry in items:
        write_var_uint(out, entry.client_id)
        write_var_uint(out, entry.clock)
        write_var_string(out, entry.state)
    return bytes(out)


# --- decoding --------------------------------------------------------------------------


def decode(frame: Buffer, max_size: int = DEFAULT_MAX_FRAME) -> Message:
    """Decode one frame; raise ``ProtocolError`` carrying a close code if it is not valid.

    1009 larger than ``max_size`` (checked first); 1002 malformed (empty, truncated, bad
    varUint, forged length, wrong-size field, trailing bytes); 1003 unknown type or
    subtype; 1007 invalid UTF-8 or awareness JSON; 1009 also for an awareness payload
    over ``MAX_AWARENESS``.
    """
    dec = Decoder(frame)
    if dec.remaining > max_size:
        _fail(f"frame of {dec.remaining} bytes exceeds {max_size}", CLOSE_MESSAGE_TOO_BIG)
    if dec.at_end():
        _fail("empty frame")
    kind = dec.read_var_uint()
    msg: Message
    if kind == MSG_SYNC:
        msg = _read_sync(dec)
    elif kind == MSG_AWARENESS:
        payload = dec.read_var_view()
        if len(payload) > MAX_AWARENESS:
            _fail(
                f"awareness update of {len(payload)} bytes exceeds {MAX_AWARENESS}",
                CLOSE_MESSAGE_TOO_BIG,
            )
        for _ in _iter_awareness(Decoder(payload)):
            pass  # validate before copying; the entries themselves are not kept
        msg = Awareness(bytes(payload))
    elif kind == MSG_AUTH:
        sub = dec.read_var_uint()
        if sub != AUTH_PERMISSION_DENIED:
            _fail(f"unknown auth message {sub}", CLOSE_UNSUPPORTED_DATA)
        msg = AuthDenied(dec.read_var_string())
    elif kind == MSG_QUERY_AWARENESS:
        msg = QueryAwareness()
    elif kind == MSG_WEFT:
        msg = _read_weft(dec)
    else:
        _fail(f"unknown message type {kind}", CLOSE_UNSUPPORTED_DATA)
    dec.finish()
    return msg


def read_update_frame(frame: bytes) -> bytes | None:
    """The update of a canonical syncStep2/update frame, or ``None`` for anything else.

    The hot path of a server: nearly every frame a client sends is an update. This reads
    exactly what :func:`decode` would (``decode(frame).update``), without a
    :class:`Decoder` or a message object; it accepts only a well-formed frame whose
    header is canonical (``varUint(0) • varUint(1|2) • varUint(len)`` in its minimal
    form, as lib0 writes it) and whose length is exact, so ``encode(SyncUpdate(u))``
    gives back the same bytes for an update frame. Everything else, malformed frames
    included, returns ``None``: the caller decodes it with :func:`decode`, which says
    what is wrong. The caller checks the frame size limit first.
    """
    if len(frame) < 3 or frame[0] != MSG_SYNC or not SYNC_STEP2 <= frame[1] <= SYNC_UPDATE:
        return None
    n = frame[2]
    pos = 3
    if n & 0x80:
        n &= 0x7F
        shift = 7
        while True:
            if pos >= len(frame) or pos >= 2 + MAX_VAR_UINT_LEN:
                return None
            byte = frame[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                if byte == 0:  # a non-minimal varUint: leave it to decode()
                    return None
                break
            shift += 7
    if n > MAX_UINT or len(frame) - pos != n:
        return None
    return frame[pos:]


def _read_sync(dec: Decoder) -> SyncStep1 | SyncStep2 | SyncUpdate:
    sub = dec.read_var_uint()
    if sub >= len(_SYNC_TYPES):
        _fail(f"unknown sync message {sub}", CLOSE_UNSUPPORTED_DATA)
    return _SYNC_TYPES[sub](dec.read_var_bytes())


def _read_weft(dec: Decoder) -> Hello | Ack | Base | Refused | Checked | Conflict | Create:
    sub = dec.read_var_uint()
    if sub == WEFT_HELLO:
        return Hello(dec.read_var_uint())
    if sub == WEFT_ACK:
        update_hash = _read_fixed(dec, HASH_LEN, "update hash")
        return Ack(update_hash, Versionstamp(_read_fixed(dec, versionstamp.LEN, "versionstamp")))
    if sub == WEFT_BASE:
        return Base(Versionstamp(_read_fixed(dec, versionstamp.LEN, "versionstamp")))
    if sub == WEFT_REFUSED:
        update_hash = _read_fixed(dec, HASH_LEN, "update hash")
        return Refused(update_hash, dec.read_var_uint(), dec.read_var_string())
    if sub == WEFT_CHECKED:
        vs = Versionstamp(_read_fixed(dec, versionstamp.LEN, "versionstamp"))
        return Checked(vs, dec.read_var_string())
    if sub == WEFT_CONFLICT:
        vs = Versionstamp(_read_fixed(dec, versionstamp.LEN, "conflict id"))
        return Conflict(vs, dec.read_var_string())
    if sub == WEFT_CREATE:
        return Create(dec.read_var_bytes(), dec.read_var_bytes())
    _fail(f"unknown weft message {sub}", CLOSE_UNSUPPORTED_DATA)


def _read_fixed(dec: Decoder, size: int, what: str) -> bytes:
    n = dec.read_var_uint()
    if n != size:
        _fail(f"{what} must be {size} bytes, got {n}")
    return dec.read_bytes(n)


def decode_awareness(payload: Buffer) -> list[AwarenessEntry]:
    """List the entries of an awareness update, checking its structure and JSON."""
    return list(_iter_awareness(Decoder(payload)))


def _iter_awareness(dec: Decoder) -> Iterator[AwarenessEntry]:
    count = dec.read_var_uint()
    if count > dec.remaining // _MIN_AWARENESS_ENTRY:
        _fail(f"awareness update claims {count} entries in {dec.remaining} bytes")
    for _ in range(count):
        client_id = dec.read_var_uint()
        clock = dec.read_var_uint()
        start = dec.pos
        state = dec.read_var_string()
        _check_json(state, start)
        yield AwarenessEntry(client_id, clock, state)
    dec.finish()


def _check_json(text: str, offset: int) -> None:
    # Numbers are not converted (no cost, no digit limit); NaN and Infinity are refused,
    # as JavaScript's JSON.parse would refuse them on every client we relay this to.
    try:
        if len(text) <= JSON_LOADS_MAX:
            json.loads(text, parse_int=_skip, parse_float=_skip, parse_constant=_refuse)
        else:
            _scan_json(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(
            f"awareness state at offset {offset} is not JSON: {e}", CLOSE_INVALID_PAYLOAD
        ) from e


JSON_LOADS_MAX: Final = 4096
"""States up to this many characters are checked with ``json.loads``, which builds
every object and list it reads (~25x the text for ``[{},{},...]``: at most ~100 kB
here); longer ones by :func:`_scan_json`, which builds none."""

_JSON_TOKEN = re.compile(
    r"[ \t\n\r]*+(?:"
    r"([\[\]{}:,])"  # punctuation
    r'|("(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+")'  # string
    r"|(-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?[0-9]++)?+)"  # number
    r"|(true|false|null))"
)
_VALUE, _VALUE_OR_END, _KEY, _KEY_OR_END, _COLON, _NEXT, _DONE = range(7)


def _scan_json(text: str) -> None:
    """Check that ``text`` is one JSON value (RFC 8259, as ``json.loads`` reads it,
    NaN and Infinity refused) without building it: a token at a time, with the open
    containers in a bytearray (one byte per level, so never more than the text).
    Raises ValueError where it stops being JSON."""
    stack = bytearray()
    state, pos = _VALUE, 0
    match = _JSON_TOKEN.match
    while True:
        token = match(text, pos)
        if token is None:
            if state == _DONE and not text[pos:].strip(" \t\n\r"):
                return
            what = "extra data" if state == _DONE else "expecting a value or delimiter"
            raise ValueError(f"{what} at char {pos}")
        pos = token.end()
        punct = token.group(1)
        if state == _DONE:
            raise ValueError(f"extra data at char {token.start()}")
        if state in (_VALUE, _VALUE_OR_END):
            if punct is None:
                state = _NEXT if stack else _DONE
            elif punct == "[":
                stack.append(0x5B)
                state = _VALUE_OR_END
            elif punct == "{":
                stack.append(0x7B)
                state = _KEY_OR_END
            elif punct == "]" and state == _VALUE_OR_END:
                stack.pop()
                state = _NEXT if stack else _DONE
            else:
                raise ValueError(f"expecting a value at char {token.start()}")
        elif state in (_KEY, _KEY_OR_END):
            if token.group(2) is not None:
                state = _COLON
            elif punct == "}" and state == _KEY_OR_END:
                stack.pop()
                state = _NEXT if stack else _DONE
            else:
                raise ValueError(f"expecting a property name at char {token.start()}")
        elif state == _COLON:
            if punct != ":":
                raise ValueError(f"expecting ':' at char {token.start()}")
            state = _VALUE
        else:  # _NEXT: a value inside a container ended
            top = stack[-1]
            if punct == ",":
                state = _VALUE if top == 0x5B else _KEY
            elif (punct == "]" and top == 0x5B) or (punct == "}" and top == 0x7B):
                stack.pop()
                state = _NEXT if stack else _DONE
            else:
                raise ValueError(f"expecting ',' or a closing bracket at char {token.start()}")


def _skip(_text: str) -> None:
    return None


def _refuse(text: str) -> NoReturn:
    raise ValueError(f"{text} is not JSON")
