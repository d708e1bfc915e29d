"""A bounds-checked decoder of Yjs v1 updates: the structs they carry, with their ids.

Pure code (no pycrdt): time travel reads which ids an update carries (to attribute text
to the update that wrote it), the entries it sets in maps (to see deletions) and, through
:mod:`crdt.itemorder`, the order of a whole document's items. Every misread raises
:class:`UpdateDecodeError`, never ``IndexError``.

::

    update        := varUint(n) • n x clientStructs • deleteSet
    clientStructs := varUint(k) • varUint(client) • varUint(clock) • k x struct
    struct        := info:u8 • (GC | Skip: varUint(length)) | item
    item          := [origin: id, if info & 0x80] • [rightOrigin: id, if info & 0x40]
                     • [if neither: parent := varUint(1) • varString(root) | varUint(0) • id,
                        then parentSub := varString, if info & 0x20]
                     • content(info & 0x1f)
    deleteSet     := varUint(n) • n x (varUint(client) • varUint(k) • k x (varUint(clock) • varUint(len)))
    id            := varUint(client) • varUint(clock)

Clocks count structs' lengths: a string's length is in UTF-16 code units, as in Yjs.
"""

from __future__ import annotations

import bisect
import struct
from typing import Any

from crdt.errors import WeftError

ID = tuple[int, int]
_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = range(11)
_NAMED_TYPES = (3, 5)  # XmlElement and XmlHook carry a name
_MAX_TYPE_REF = 6
_MAX_DEPTH = 64


class UpdateDecodeError(WeftError, ValueError):
    """Bytes that are not a Yjs v1 update (or use content this decoder does not know)."""


class _Reader:
    """Bounds-checked lib0 reads over one buffer; every misread raises UpdateDecodeError."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def uint(self) -> int:
        data, pos = self.data, self.pos
        if pos < self.end and data[pos] < 0x80:  # one byte: most lengths and flags
            self.pos = pos + 1
            return data[pos]
        value = shift = 0
        while True:
            if pos >= self.end:
                raise UpdateDecodeError(f"truncated varUint at offset {self.pos}")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
            if shift > 63:
                raise UpdateDecodeError(f"varUint too long at offset {self.pos}")

    def count(self) -> int:
        """A count of elements that take at least one byte each: checked against the rest."""
        n = self.uint()
        if n > self.end - self.pos:
            raise UpdateDecodeError(f"count {n} at offset {self.pos} exceeds the data")
        return n

    def signed(self) -> int:
        first = self.u8()
        value, shift, byte = first & 0x3F, 6, first
        while byte & 0x80:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 70:
                raise UpdateDecodeError(f"varInt too long at offset {self.pos}")
        return -value if first & 0x40 else value

    def u8(self) -> int:
        if self.pos >= self.end:
            raise UpdateDecodeError(f"truncated at offset {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise UpdateDecodeError(f"{n} bytes at offset {self.pos} exceed the data")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def raw_string(self) -> bytes:
        return self.take(self.uint())

    def string(self) -> str:
        raw = self.raw_string()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UpdateDecodeError(f"a string before offset {self.pos} is not UTF-8") from None

    def id(self) -> ID:
        return self.uint(), self.uint()

    def any(self, depth: int = 0) -> Any:
        """A lib0 ``Any`` value."""
        if depth > _MAX_DEPTH:
            raise UpdateDecodeError("a value is nested too deeply")
        kind = self.u8()
        if kind in (120, 121):
            return kind == 120
        if kind in (126, 127):
            return None
        if kind == 125:
            return self.signed()
        if kind in (122, 123, 124):
            fmt, size = {122: (">q", 8), 123: (">d", 8), 124: (">f", 4)}[kind]
            return struct.unpack(fmt, self.take(size))[0]
        if kind == 119:
            return self.string()
        if kind == 118:
            return {self.string(): self.any(depth + 1) for _ in range(self.count())}
        if kind == 117:
            return [self.any(depth + 1) for _ in range(self.count())]
        if kind == 116:
            return self.raw_string()
        raise UpdateDecodeError(f"unknown value type {kind} at offset {self.pos - 1}")

    def content(self, ref: int) -> tuple[int, Any]:
        """An item's content: its length in clock units, and its value (str for strings,
        the list of values for ``Any``, None otherwise)."""
        if ref == _STRING:
            raw = self.raw_string()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UpdateDecodeError(f"a string before offset {self.pos} is not UTF-8") from None
            return utf16_len(text), text
        if ref == _DELETED:
            return self.uint(), None
        if ref == _ANY:
            n = self.count()
            return n, [self.any() for _ in range(n)]
        if ref == _JSON:
            n = self.count()
            for _ in range(n):
                self.raw_string()
            return n, None
        if ref in (_BINARY, _EMBED):
            self.raw_string()
        elif ref == _FORMAT:
            self.raw_string()
            self.raw_string()
        elif ref == _TYPE:
            type_ref = self.uint()
            if type_ref > _MAX_TYPE_REF:
                raise UpdateDecodeError(f"unsupported shared type {type_ref}")
            if type_ref in _NAMED_TYPES:
                self.raw_string()
        elif ref == _DOC:
            self.raw_string()
            self.any()
        else:
            raise UpdateDecodeError(f"unsupported content type {ref} at offset {self.pos}")
        return 1, None


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (the unit of Yjs clocks)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def split_units(text: str, units: int) -> tuple[str, str]:
    """``text`` split after ``units`` UTF-16 code units."""
    if text.isascii():
        return text[:units], text[units:]
    count = 0
    for i, ch in enumerate(text):
        if count >= units:
            return text[:i], text[i:]
        count += 2 if ord(ch) > 0xFFFF else 1
    return text, ""


class Item:
    """One struct of a document being rebuilt: a node of its parent's list, as in Yjs."""

    __slots__ = (
        "client", "clock", "deleted", "gc", "left", "length", "origin", "parent",
        "right", "right_origin", "sub", "text", "value",
    )  # fmt: skip

    def __init__(self, client: int, clock: int, length: int) -> None:
        self.client, self.clock, self.length = client, clock, length
        self.origin: ID | None = None
        self.right_origin: ID | None = None
        self.parent: str | ID | None = None
        self.sub: str | None = None
        self.text: str | None = None
        self.value: Any = None
        self.deleted = self.gc = False
        self.left: Item | None = None
        self.right: Item | None = None


def _read_item(r: _Reader, info: int, client: int, clock: int) -> Item:
    ref = info & 0x1F
    if ref == _GC:
        item = Item(client, clock, r.uint())
        item.gc = item.deleted = True
    else:
        origin = r.id() if info & 0x80 else None
        right_origin = r.id() if info & 0x40 else None
        parent: str | ID | None = None
        sub = None
        if not info & 0xC0:
            parent = r.string() if r.uint() == 1 else r.id()
            if info & 0x20:
                sub = r.string()
        length, value = r.content(ref)
        item = Item(client, clock, length)
        item.origin, item.right_origin, item.parent, item.sub = origin, right_origin, parent, sub
        if ref == _STRING:
            item.text = value
        elif ref == _DELETED:
            item.deleted = True
        else:
            item.value = value
    if item.length <= 0:
        raise UpdateDecodeError(f"an empty struct at ({client}, {clock})")
    return item


def decode_update(update: bytes) -> tuple[dict[int, list[Item]], list[tuple[int, int, int]]]:
    """Every struct of ``update`` by client (clock order) and its deletions
    ``(client, clock, length)``."""
    r = _Reader(update)
    structs: dict[int, list[Item]] = {}
    for _ in range(r.count()):
        n = r.count()
        client = r.uint()
        clock = r.uint()
        items = structs.setdefault(client, [])
        for _ in range(n):
            info = r.u8()
            if info & 0x1F == _SKIP:
                clock += r.uint()
                continue
            item = _read_item(r, info, client, clock)
            items.append(item)
            clock += item.length
    deletes: list[tuple[int, int, int]] = []
    for _ in range(r.count()):
        client = r.uint()
        for _ in range(r.count()):
            deletes.append((client, r.uint(), r.uint()))
    if r.pos != r.end:
        raise UpdateDecodeError(f"{r.end - r.pos} bytes after the end of the update")
    return structs, deletes


def deletes_within(deletes: list[tuple[int, int, int]], known: list[tuple[int, int, int]]) -> bool:
    """Whether every range of ``deletes`` ``(client, clock, length)`` lies inside the
    union of ``known``'s (a delete set the document has already)."""
    spans: dict[int, list[list[int]]] = {}
    for client, clock, length in sorted(known):
        merged = spans.setdefault(client, [])
        if merged and clock <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], clock + length)
        elif length > 0:
            merged.append([clock, clock + length])
    starts = {client: [start for start, _ in merged] for client, merged in spans.items()}
    for client, clock, length in deletes:
        if length == 0:
            continue
        found = spans.get(client)
        if found is None:
            return False
        i = bisect.bisect_right(starts[client], clock) - 1
        if i < 0 or found[i][1] < clock + length:
            return False
    return True


def ranges_within(ranges: list[tuple[int, int, int]], known: list[tuple[int, int, int]]) -> bool:
    """Whether every clock range ``(client, start, end)`` of ``ranges`` lies inside the
    union of ``known``'s (as :func:`struct_ranges` gives them)."""
    return deletes_within(
        [(c, start, end - start) for c, start, end in ranges],
        [(c, start, end - start) for c, start, end in known],
    )


def map_entries(update: bytes) -> list[tuple[ID, Any]]:
    """``(id, last value)`` of every ``Any`` item of ``update`` (map entries, mostly)."""
    structs, _ = decode_update(update)
    return [
        ((item.client, item.clock), item.value[-1])
        for items in structs.values()
        for item in items
        if isinstance(item.value, list) and item.value
    ]


def struct_ranges(update: bytes) -> list[tuple[int, int, int]]:
    """``(client, start, end)``: the clock ranges of the structs ``update`` carries."""
    out: list[tuple[int, int, int]] = []
    for client, items in decode_update(update)[0].items():
        for item in items:
            if out and out[-1][0] == client and out[-1][2] == item.clock:
                out[-1] = (client, out[-1][1], item.clock + item.length)
            else:
                out.append((client, item.clock, item.clock + item.length))
    return out
