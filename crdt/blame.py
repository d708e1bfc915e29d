"""Blame: each visible character, and each line, mapped to the update that wrote it.

The document's state at the version is decoded and its items put in Yjs order (YATA, as
Yjs integrates them, :mod:`crdt.itemorder`) with their ids, and each id ``(client,
clock)`` is looked up in the clock ranges that the updates of the log carry
(:mod:`crdt.carriers`: the first update that carried an id wrote it). A line belongs to
the newest update that wrote any of its characters (its line ending included). Lines are
split as diffs and conflict regions split them (:func:`crdt.conflicts.lines`: every
ending ``str.splitlines`` knows, so ``\r\n``, a lone ``\r``, a form feed, ``\u2028``).
Deleting text is not attributed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from crdt import keys
from crdt.carriers import ClockIndex, carried
from crdt.conflicts import lines as split_lines
from crdt.errors import StoreError
from crdt.history import DocRef, History
from crdt.itemorder import ItemOrder
from crdt.kv.base import ReadTransaction
from crdt.records import CHUNK
from crdt.versions import CONTENT, HEAD_VERSION, Version, doc_version, iso_time, read_doc
from crdt.versionstamp import Versionstamp
from crdt.ydecode import UpdateDecodeError

LOG_PAGE = 20_000


@dataclass(slots=True)
class Author:
    """Who wrote an update (from its log record)."""

    versionstamp: Versionstamp
    user: str
    device: str
    ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "versionstamp": self.versionstamp.hex(),
            "user": self.user,
            "device": self.device,
            "time": iso_time(self.ms),
        }


@dataclass(slots=True)
class BlameLine:
    number: int
    text: str
    author: Author | None  # None: no update of the log carries these characters

    def to_dict(self) -> dict[str, Any]:
        author = self.author.to_dict() if self.author else None
        return {"line": self.number, "text": self.text, **(author or {"versionstamp": None})}


@dataclass(frozen=True, slots=True)
class Blame:
    """Who wrote what, at one version.

    ``spans``: ``(start, end, record)`` over the text's characters, where ``record`` is
    the position in the document's log (0: its first update) of the update that inserted
    them, -1 when no update carries them. ``lines`` aggregates the spans per line.
    """

    path: str
    versionstamp: Versionstamp
    text: str
    spans: list[tuple[int, int, int]]
    lines: list[BlameLine]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "versionstamp": self.versionstamp.hex(),
            "lines": [line.to_dict() for line in self.lines],
        }


async def blame(history: History, ref: DocRef, version: Version = HEAD_VERSION) -> Blame:
    """Each line of the document at ``version`` with the update that wrote it."""
    vs = await doc_version(history, ref, version)
    replayed = await history.replay(ref, vs)
    at = replayed.versionstamp or vs
    text, _ = read_doc(replayed.doc)
    # the items' order is rebuilt, and each page of the log decoded, while the next page
    # is read (SQLite lets go of the GIL while it reads)
    ordering = asyncio.ensure_future(asyncio.to_thread(_item_order, ref, replayed.doc.get_update()))
    try:
        rows, ranges = await _log_ranges(history, ref, at)
    finally:
        order = await ordering
    return await asyncio.to_thread(_blame, ref, at, text, order, rows, ranges)


def _item_order(ref: DocRef, state: bytes) -> ItemOrder:
    order = ItemOrder()
    try:
        order.apply_state(state)
    except UpdateDecodeError as exc:
        raise StoreError(
            f"blame of {ref.path!r}: the document's state does not decode: {exc}"
        ) from exc
    return order


async def _log_ranges(
    history: History, ref: DocRef, until: Versionstamp
) -> tuple[list[tuple[bytes, bytes]], list[tuple[int, int, int, int]]]:
    """``(key, whole value)`` of every record of the log up to ``until``, in log order,
    and the clock ranges their updates carry (:func:`carried`, one page at a time in a
    worker thread while the next page is read)."""
    prefix = ref.key("u")
    end = ref.key("u", until) + b"\xff"
    begin = prefix + b"\x00"
    out: list[tuple[bytes, bytes]] = []
    ranges: list[tuple[int, int, int, int]] = []
    carry: list[tuple[bytes, bytes]] = []
    decoding: asyncio.Future[list[tuple[int, int, int, int]]] | None = None
    try:
        while True:

            def page(tr: ReadTransaction, begin: bytes = begin) -> list[tuple[bytes, bytes]]:
                return tr.get_range(begin, end, limit=LOG_PAGE)

            rows = await history.kv.read(page)
            last = len(rows) < LOG_PAGE
            first = len(out)
            carry = _join_parts(carry + rows, prefix, out, final=last)
            if decoding is not None:
                ranges += await decoding
            values = [value for _, value in out[first:]]
            decoding = asyncio.ensure_future(asyncio.to_thread(_carried_list, values, first))
            if last:
                ranges += await decoding
                decoding = None
                return out, ranges
            begin = rows[-1][0] + b"\x00"
    finally:
        if decoding is not None:
            await asyncio.gather(decoding, return_exceptions=True)


def _carried_list(values: list[bytes], first: int) -> list[tuple[int, int, int, int]]:
    return list(carried(values, first))


def _join_parts(
    rows: list[tuple[bytes, bytes]], prefix: bytes, out: list[tuple[bytes, bytes]], final: bool
) -> list[tuple[bytes, bytes]]:
    """Append whole values to ``out``; returns the rows of a value cut by the page end.

    A value is chunked only when it is longer than ``CHUNK`` and every part but the last
    is exactly ``CHUNK`` bytes, so a row shorter than that that does not follow such a
    part is a whole value: the key is decoded only around long rows.
    """
    i, n = 0, len(rows)
    while i < n:
        key, value = rows[i]
        if len(value) < CHUNK:
            out.append((key, value))
            i += 1
            continue
        vs, _ = keys.unpack_stamped(key, prefix)
        j = i
        parts: list[bytes] = []
        while j < n and keys.unpack_stamped(rows[j][0], prefix)[0] == vs:
            parts.append(rows[j][1])
            j += 1
        if j == n and not final:
            return rows[i:]
        out.append((key, b"".join(parts)))
        i = j
    return []


def _blame(
    ref: DocRef,
    at: Versionstamp,
    text: str,
    order: ItemOrder,
    rows: list[tuple[bytes, bytes]],
    ranges: list[tuple[int, int, int, int]],
) -> Blame:
    index = ClockIndex(ranges)
    spans, best = _attribute(order.text_runs(CONTENT), index, text)
    authors = _authors(rows, {record for record in best if record >= 0}, ref.key("u"))
    texts = text.splitlines()  # split_lines(text) without the endings
    lines = [
        BlameLine(n + 1, line, authors.get(record))
        for n, (line, record) in enumerate(zip(texts, best, strict=True))
    ]
    return Blame(ref.path, at, text, spans, lines)


def _attribute(
    runs: Iterable[tuple[int, int, str]], index: ClockIndex, text: str
) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Spans ``(start, end, record)`` of the visible runs, and per line (its ending
    included) the newest record among its characters."""
    ends = _line_ends(text)
    best = [-1] * len(ends)
    spans: list[tuple[int, int, int]] = []
    pieces: list[str] = []
    attribute = index.attribute
    pos = line = 0
    for client, clock, run in runs:
        pieces.append(run)
        for length, record in attribute(client, clock, run):
            end = pos + length
            spans.append((pos, end, record))
            while ends[line] < pos:
                line += 1
            if record > best[line]:
                best[line] = record
            while ends[line] < end - 1:  # the span goes on past this line's ending
                line += 1
                if record > best[line]:
                    best[line] = record
            pos = end
    if "".join(pieces) != text:
        raise StoreError("blame: the rebuilt item order does not match the document's text")
    return spans, best


def _authors(
    rows: list[tuple[bytes, bytes]], records: set[int], prefix: bytes
) -> dict[int, Author]:
    """Who wrote each of ``records`` (positions in ``rows``), from the log's metadata."""
    out: dict[int, Author] = {}
    unpack = msgpack.unpackb
    for record in records:
        key, value = rows[record]
        try:
            data = unpack(value)
            vs = keys.unpack_stamped(key, prefix)[0]
            out[record] = Author(vs, str(data["user"]), str(data["client"]), int(data["ms"]))
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            raise StoreError(f"blame: a record in the store does not decode: {exc}") from exc
    return out


def _line_ends(text: str) -> list[int]:
    """Where each line of ``text`` ends: the index of its last character, its ending
    included (lines as :func:`crdt.conflicts.lines` splits them)."""
    ends: list[int] = []
    end = -1
    for line in split_lines(text):
        end += len(line)
        ends.append(end)
    return ends
