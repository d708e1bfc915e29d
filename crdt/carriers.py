"""Which update of a document's log first carried each id ``(client, clock)``.

:func:`carried` reads the clock ranges of log records (most of them matched in place,
without unpacking); :class:`ClockIndex` answers, for a run of text, which record wrote
each piece. Blame is built on both.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence

import msgpack

from crdt.errors import StoreError
from crdt.ydecode import UpdateDecodeError, split_units, struct_ranges, utf16_len

_VARUINT = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
# A log record (``records.encode_record``: a msgpack map whose first entry is the update,
# as bin8 or bin16) holding an update of one client's one string item with origins: what
# editors send for each keystroke. Matched in place, without unpacking the record.
_RECORD_HEAD = rb"\x85\xa6update(?:\xc4(.)|\xc5(..))"
_RECORD_ONE_STRING = re.compile(
    _RECORD_HEAD + rb"\x01\x01(" + _VARUINT + rb")(" + _VARUINT + rb")"
    rb"(?:[\x84\x44]" + _VARUINT * 2 + rb"|\xc4" + _VARUINT * 4 + rb")(" + _VARUINT + rb")",
    re.S,
)
_RECORD_NO_STRUCTS = re.compile(_RECORD_HEAD + rb"\x00", re.S)  # a deletion only
_client_ids: dict[bytes, int] = {}


def _uint_of(raw: bytes) -> int:
    if len(raw) == 1:
        return raw[0]
    value = shift = 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        shift += 7
    return value


def carried(values: Sequence[bytes], first: int = 0) -> Iterator[tuple[int, int, int, int]]:
    """``(client, start, end, record)``: the clock ranges each log record's update carries
    (``record`` is ``first`` + the position in ``values``, which are encoded log records).

    Raises :class:`StoreError` for a record that does not decode.

    Most records are matched in place (see ``_RECORD_ONE_STRING``); the others are
    unpacked and decoded in full (:func:`struct_ranges`), so both give the same ranges.
    """
    one_string, no_structs, ids = _RECORD_ONE_STRING.match, _RECORD_NO_STRUCTS.match, _client_ids
    if len(ids) > 100_000:
        ids.clear()
    for record, value in enumerate(values, first):
        m = one_string(value)
        if m is not None:
            short, long, raw_client, raw_clock, raw_len = m.groups()
            length = raw_len[0] if len(raw_len) == 1 else _uint_of(raw_len)
            update_end = (10 + int.from_bytes(long, "big")) if long else (9 + short[0])
            if m.end() + length <= update_end:
                client = ids.get(raw_client)
                if client is None:
                    client = ids[raw_client] = _uint_of(raw_client)
                n = len(raw_clock)  # clocks of up to 2**21 take one to three bytes
                if n == 1:
                    start = raw_clock[0]
                elif n == 2:
                    start = (raw_clock[0] & 0x7F) | raw_clock[1] << 7
                elif n == 3:
                    start = (raw_clock[0] & 0x7F) | (raw_clock[1] & 0x7F) << 7 | raw_clock[2] << 14
                else:
                    start = _uint_of(raw_clock)
                raw = value[m.end() : m.end() + length]
                if raw.isascii():
                    yield client, start, start + length, record
                    continue
                try:
                    yield client, start, start + utf16_len(raw.decode("utf-8")), record
                    continue
                except UnicodeDecodeError:
                    pass  # the general path says what is wrong
        elif no_structs(value) is not None:
            continue
        try:
            found = struct_ranges(msgpack.unpackb(value)["update"])
        except (UpdateDecodeError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"an update in the store does not decode: {exc}") from exc
        for client, start, end in found:
            yield client, start, end, record


class ClockIndex:
    """Which update of a log first carried each id ``(client, clock)``.

    Built from ``(client, start, end, record)`` ranges in log order (:func:`carried`). A
    client's ranges usually arrive in clock order, one after the other; overlaps (an
    update sent again, merged with new ones) and gaps are handled by keeping the first
    carrier.
    """

    def __init__(self, ranges: Iterable[tuple[int, int, int, int]]) -> None:
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        self._records: dict[int, list[int]] = {}
        odd: dict[int, list[tuple[int, int, int]]] = {}
        for client, start, end, record in ranges:
            if client in odd:
                odd[client].append((start, end, record))
                continue
            ends = self._ends.setdefault(client, [])
            if not ends or start >= ends[-1]:
                self._starts.setdefault(client, []).append(start)
                ends.append(end)
                self._records.setdefault(client, []).append(record)
            else:
                earlier = zip(self._starts[client], ends, self._records[client], strict=True)
                odd[client] = [*earlier, (start, end, record)]
        for client, triples in odd.items():
            self._first_carriers(client, triples)

    def _first_carriers(self, client: int, triples: list[tuple[int, int, int]]) -> None:
        starts: list[int] = []
        ends: list[int] = []
        records: list[int] = []
        for start, end, record in triples:
            pos = start
            while pos < end:
                i = bisect_right(starts, pos) - 1
                if i >= 0 and pos < ends[i]:
                    pos = ends[i]  # already carried by an earlier update
                    continue
                stop = min(end, starts[i + 1]) if i + 1 < len(starts) else end
                starts.insert(i + 1, pos)
                ends.insert(i + 1, stop)
                records.insert(i + 1, record)
                pos = stop
        self._starts[client], self._ends[client], self._records[client] = starts, ends, records

    def attribute(self, client: int, clock: int, text: str) -> Iterator[tuple[int, int]]:
        """``text`` (the item at ``client``/``clock``) cut into ``(characters, record)``
        pieces; record -1 for ids no update carried."""
        starts = self._starts.get(client)
        if not starts:
            yield len(text), -1
            return
        ends, records = self._ends[client], self._records[client]
        plain = text.isascii()
        end = clock + (len(text) if plain else utf16_len(text))
        i = bisect_right(starts, clock) - 1
        if i >= 0 and end <= ends[i]:  # the usual case: one update wrote the whole run
            yield len(text), records[i]
            return
        pos = clock
        while pos < end:
            if i >= 0 and pos < ends[i]:
                stop, record = min(ends[i], end), records[i]
            else:
                stop = min(starts[i + 1], end) if i + 1 < len(starts) else end
                record = -1
            if plain:
                yield stop - pos, record
            else:
                piece, text = split_units(text, stop - pos)
                yield len(piece), record
            pos = stop
            if i + 1 < len(starts) and starts[i + 1] <= pos:
                i += 1
