"""Time travel over the history: versions, history pages, show, diff, blame, restore, revert.

Pure data layer (no aiohttp, no files): the CLI (``client/timetravel_cli.py``) and the
REST API (``server/timetravel_api.py``) are thin shells over these functions.

- A *version* argument is a versionstamp (24 hex digits), an ISO-8601 time (naive times
  are UTC; a time in the future is refused) or ``head``. For one document, a time means
  the document's last version committed at or before it; for a whole project it means a
  *cut*: the newest versionstamp any of its documents committed at or before it, and
  every document is read at that same versionstamp.
- A document's text is its root ``Y.Text`` ``content``; it is deleted while its root
  ``Y.Map`` ``weft`` has ``deleted`` set to True. A project's files at a cut are the
  documents that existed then and were not deleted.
- Blame maps each visible character to the update that inserted it: the document's state
  at the version is decoded and its items put in Yjs order (YATA, as Yjs integrates
  them) with their ids, and each id ``(client, clock)`` is looked up in the clock ranges
  that the updates of the log carry (the first update that carried an id wrote it). A
  line belongs to the newest update that wrote any of its characters (its newline
  included). Deleting text is not attributed.
- Revert is a new forward update (never a rewrite): the document is loaded at head, the
  minimal ``Y.Text`` edits to the target text are made, ``weft.deleted`` is set to the
  target's value, and the update is appended with its author. A project revert does that
  for every document (created after the target: deleted; deleted since: restored).

Bad input raises :class:`BadVersion` (malformed, future) or :class:`VersionNotFound`
(unknown document, a version before it existed) before anything is written.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import struct
import time
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
from blake3 import blake3
from pycrdt import Doc, Map, Text

from crdt import keys
from crdt.errors import NotFound, ProtocolError, StoreError, WeftError
from crdt.history import Append, Appended, DocRef, History
from crdt.kv.base import ReadTransaction
from crdt.records import CHUNK
from crdt.versionstamp import Versionstamp

CONTENT = "content"
META = "weft"
DELETED = "deleted"
HEAD = "head"
MANIFEST_NAME = ".weft-manifest.json"
MANIFEST_FORMAT = 1
REVERT_SESSION = "revert"
LOG_PAGE = 20_000
RESTORE_CONCURRENCY = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadVersion(ProtocolError):
    """A version argument that is neither a versionstamp nor an ISO-8601 time, or a time
    in the future (HTTP 400, CLI exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 1007)


class VersionNotFound(NotFound):
    """A document with no history, or a version before it existed (HTTP 404, exit 2)."""


# --- versions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Version:
    """A point in a history: a versionstamp, a wall-clock time (Unix ms) or head."""

    stamp: Versionstamp | None = None
    ms: int | None = None
    label: str = HEAD

    @property
    def is_head(self) -> bool:
        return self.stamp is None and self.ms is None

    def __str__(self) -> str:
        return self.label


HEAD_VERSION = Version()


def parse_version(text: str, *, now_ms: int | None = None) -> Version:
    """A version argument: 24 hex digits, an ISO-8601 time or ``head``.

    Naive times are UTC; times are truncated to the millisecond (the log's resolution).
    A time after ``now_ms`` (default: now) is refused: the log cannot know it yet.
    """
    value = text.strip()
    if value.lower() == HEAD:
        return HEAD_VERSION
    if len(value) == 24 and all(c in "0123456789abcdefABCDEF" for c in value):
        return Version(stamp=Versionstamp.from_hex(value), label=value.lower())
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadVersion(
            f"not a version: {text!r} (use a versionstamp of 24 hex digits, an ISO-8601 "
            "time such as 2024-05-01T12:00:00Z, or 'head')"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = (when - _EPOCH) // timedelta(milliseconds=1)
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if ms > now:
        raise BadVersion(f"{text!r} is in the future (now is {iso_time(now)})")
    if ms < 0:
        raise BadVersion(f"{text!r} is before 1970")
    return Version(ms=ms, label=value)


def iso_time(ms: int) -> str:
    """Unix milliseconds as an ISO-8601 UTC time with milliseconds."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def predecessor(vs: Versionstamp) -> Versionstamp:
    """The versionstamp just before ``vs`` (for inclusive paging bounds)."""
    n = int.from_bytes(vs.raw, "big")
    return Versionstamp(max(n - 1, 0).to_bytes(len(vs.raw), "big"))


async def doc_version(history: History, ref: DocRef, version: Version) -> Versionstamp:
    """The document's last versionstamp at ``version``; :class:`VersionNotFound` if it
    has no history at all or did not exist yet then."""
    head = await history.head(ref)
    if head is None:
        raise VersionNotFound(f"no document {ref.path!r} in {ref.tenant}/{ref.project}")
    if version.is_head:
        return head
    if version.ms is not None:
        found = await history.version_at_time(ref, version.ms)
    else:
        assert version.stamp is not None
        records = await history.updates(ref, until=version.stamp, limit=1, reverse=True)
        found = records[0].versionstamp if records else None
    if found is None:
        first = await history.updates(ref, limit=1)
        since = f" (its first version is {first[0].versionstamp} at {iso_time(first[0].ms)})"
        raise VersionNotFound(f"{ref.path!r} did not exist at {version}{since if first else ''}")
    return found


async def project_cut(
    history: History, tenant: str, project: str, version: Version
) -> Versionstamp:
    """The versionstamp every document of a project is read at for ``version``."""
    return (await cut_at(history, tenant, project, version)).versionstamp


async def _time_cut(
    history: History, tenant: str, project: str, paths: list[str], ms: int
) -> Versionstamp | None:
    """The newest versionstamp any of the documents committed at or before ``ms``: what
    ``History.project_cut`` gives, with every document's time index read in one
    transaction (one read per document would cost more than restoring them)."""
    refs = [await history.doc(tenant, project, path) for path in paths]

    def newest(tr: ReadTransaction) -> Versionstamp | None:
        found: Versionstamp | None = None
        for ref in refs:  # the time index: D + (t, ms, vs) -> b"" (see History.version_at_time)
            rows = tr.get_range(ref.key("t"), keys.pack(("t", ms + 1), ref.space), 1, True)
            if rows:
                vs = keys.unpack(rows[0][0], ref.space)[2]
                found = vs if found is None or vs > found else found
        return found

    result: Versionstamp | None = await history.kv.read(newest)
    return result


# --- one document at a version -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocVersion:
    """A document's text at a version; ``versionstamp`` is its last update then."""

    path: str
    versionstamp: Versionstamp
    text: str
    deleted: bool


def read_doc(doc: Doc[Any]) -> tuple[str, bool]:
    """The text and the deletion flag of a rebuilt document."""
    text = str(doc.get(CONTENT, type=Text))
    deleted = doc.get(META, type=Map).get(DELETED) is True
    return text, deleted


async def doc_at(history: History, ref: DocRef, version: Version) -> DocVersion:
    """The document at ``version`` (see :func:`doc_version` for the errors)."""
    vs = await doc_version(history, ref, version)
    replayed = await history.replay(ref, vs)
    text, deleted = read_doc(replayed.doc)
    return DocVersion(ref.path, replayed.versionstamp or vs, text, deleted)


# --- history pages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One version of a document: the update that made it and who made it."""

    versionstamp: Versionstamp
    ms: int
    user: str
    device: str
    session: str
    size: int
    deleted: bool | None  # the update set weft.deleted to this (None: did not touch it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "versionstamp": self.versionstamp.hex(),
            "time": iso_time(self.ms),
            "ms": self.ms,
            "user": self.user,
            "device": self.device,
            "size": self.size,
            "deleted": self.deleted,
            "revert": self.session.split("/")[0] == REVERT_SESSION,
        }


@dataclass(frozen=True, slots=True)
class Page:
    """Versions newest first; ``next_until`` continues the listing (``--until``)."""

    path: str
    entries: list[Entry]
    next_until: Versionstamp | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "versions": [e.to_dict() for e in self.entries],
            "next_until": self.next_until.hex() if self.next_until else None,
        }


async def history_page(
    history: History,
    ref: DocRef,
    *,
    limit: int = 50,
    since: Version | None = None,
    until: Version | None = None,
) -> Page:
    """The document's versions newer than ``since`` and at or before ``until``."""
    if not 1 <= limit <= 10_000:
        raise BadVersion(f"limit must be between 1 and 10000, not {limit}")
    head = await history.head(ref)
    if head is None:
        raise VersionNotFound(f"no document {ref.path!r} in {ref.tenant}/{ref.project}")
    after = await _bound(history, ref, since) if since is not None else None
    upto = await _bound(history, ref, until) if until is not None else head
    if upto is None or (after is not None and after >= upto):
        return Page(ref.path, [], None)
    records = await history.updates(ref, after=after, until=upto, limit=limit + 1, reverse=True)
    more = len(records) > limit
    records = records[:limit]
    flags = await _deletion_flags(history, ref, [r.update for r in records])
    entries = [
        Entry(r.versionstamp, r.ms, r.user, r.client, r.session, r.size, flag)
        for r, flag in zip(records, flags, strict=True)
    ]
    next_until = predecessor(records[-1].versionstamp) if more and records else None
    return Page(ref.path, entries, next_until)


async def _bound(history: History, ref: DocRef, version: Version) -> Versionstamp | None:
    if version.is_head:
        return await history.head(ref)
    if version.ms is not None:
        return await history.version_at_time(ref, version.ms)
    return version.stamp


async def _deletion_flags(history: History, ref: DocRef, updates: list[bytes]) -> list[bool | None]:
    """Per update, the value it gave ``weft.deleted`` (None: it did not set it).

    Only a key's first entry names its map; later ones point at the entry they replace,
    so the entries are looked up in the document's items at head.
    """
    try:
        entries = [map_entries(u) for u in updates]
    except UpdateDecodeError:
        return [None] * len(updates)
    if not any(entries):
        return [None] * len(updates)
    head = await history.replay(ref)
    order = ItemOrder()
    try:
        await asyncio.to_thread(order.apply_state, head.doc.get_update())
    except UpdateDecodeError:
        return [None] * len(updates)
    out: list[bool | None] = []
    for found in entries:
        flag = None
        for item_id, value in found:
            item = order.find(item_id)
            if item is not None and item.parent == META and item.sub == DELETED:
                flag = value is True
        out.append(flag)
    return out


# --- diff ----------------------------------------------------------------------------------


def unified_diff(
    path: str, old: DocVersion | None, new: DocVersion | None, context: int = 3
) -> str:
    """A unified diff (``git diff`` style, deleted documents as /dev/null)."""
    a = old.text if old is not None and not old.deleted else None
    b = new.text if new is not None and not new.deleted else None
    a_name = f"a/{path}" if a is not None else "/dev/null"
    b_name = f"b/{path}" if b is not None else "/dev/null"
    lines = difflib.unified_diff(
        _diff_lines(a or ""),
        _diff_lines(b or ""),
        a_name,
        b_name,
        old.versionstamp.hex() if old else "",
        new.versionstamp.hex() if new else "",
        n=context,
    )
    return "".join(lines)


def _diff_lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


async def diff(history: History, ref: DocRef, old: Version, new: Version) -> str:
    a = await doc_at(history, ref, old)
    b = await doc_at(history, ref, new)
    return unified_diff(ref.path, a, b)


# --- blame ---------------------------------------------------------------------------------


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
    texts = text.split("\n")
    if texts[-1] == "":
        texts.pop()
    lines = [
        BlameLine(n + 1, line, authors.get(record))
        for n, (line, record) in enumerate(zip(texts, best, strict=True))
    ]
    return Blame(ref.path, at, text, spans, lines)


def _attribute(
    runs: Iterable[tuple[int, int, str]], index: ClockIndex, text: str
) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Spans ``(start, end, record)`` of the visible runs, and per line (its newline
    included) the newest record among its characters."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    best = [-1] * (len(newlines) + (0 if not text or text.endswith("\n") else 1))
    ends = [*newlines, len(text)]  # where each line ends (its newline, or the text's end)
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
            while ends[line] < end - 1:  # the span goes on past this line's newline
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


def _line_records(text: str, spans: list[tuple[int, int, int]]) -> list[int]:
    """Per line (its newline included), the newest record among its characters' spans."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    count = len(newlines) + (0 if not text or text.endswith("\n") else 1)
    best = [-1] * count
    for start, end, record in spans:
        first = bisect_left(newlines, start)
        last = bisect_left(newlines, end - 1)
        for line in range(first, last + 1):
            if record > best[line]:
                best[line] = record
    return best


# --- restore and export ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class File:
    """A project file at a cut: its path, UTF-8 bytes and last versionstamp."""

    path: str
    data: bytes
    versionstamp: Versionstamp

    @property
    def digest(self) -> str:
        return blake3(self.data).hexdigest()

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "blake3": self.digest,
            "versionstamp": self.versionstamp.hex(),
            "size": len(self.data),
        }


@dataclass(frozen=True, slots=True)
class Cut:
    """A project at one versionstamp: the documents to read and what was asked for."""

    tenant: str
    project: str
    versionstamp: Versionstamp
    version: Version
    paths: list[str]


async def cut_at(history: History, tenant: str, project: str, version: Version) -> Cut:
    """The project at ``version``: a versionstamp (as given), a time (the newest
    versionstamp committed at or before it) or head (the newest of all)."""
    infos = await history.docs(tenant, project)
    heads = [info.head for info in infos if info.head is not None]
    if not heads:
        raise VersionNotFound(f"project {tenant}/{project} has no documents")
    paths = [info.path for info in infos]
    if version.stamp is not None:
        vs = version.stamp
    elif version.ms is not None:
        found = await _time_cut(history, tenant, project, paths, version.ms)
        if found is None:
            raise VersionNotFound(f"project {tenant}/{project} had no documents at {version}")
        vs = found
    else:
        vs = max(heads)
    return Cut(tenant, project, vs, version, paths)


async def files(history: History, cut: Cut) -> AsyncIterator[File]:
    """The project's files at ``cut``, in path order (documents created after it, or
    deleted at it, are left out). Reads up to RESTORE_CONCURRENCY documents at a time."""
    slots = asyncio.Semaphore(RESTORE_CONCURRENCY)

    async def one(path: str) -> File | None:
        async with slots:
            ref = await history.doc(cut.tenant, cut.project, path)
            replayed = await history.replay(ref, cut.versionstamp)
        if replayed.versionstamp is None:
            return None
        text, deleted = read_doc(replayed.doc)
        return None if deleted else File(path, text.encode("utf-8"), replayed.versionstamp)

    window = RESTORE_CONCURRENCY * 2
    tasks: list[asyncio.Task[File | None]] = []
    try:
        for path in cut.paths:
            tasks.append(asyncio.create_task(one(path)))
            if len(tasks) >= window:
                found = await tasks.pop(0)
                if found is not None:
                    yield found
        while tasks:
            found = await tasks.pop(0)
            if found is not None:
                yield found
    finally:
        for task in tasks:
            task.cancel()


def manifest(cut: Cut, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a restore or an export wrote: the cut, and per file (``File.manifest_entry``)
    its path, blake3, versionstamp and size."""
    return {
        "format": MANIFEST_FORMAT,
        "tenant": cut.tenant,
        "project": cut.project,
        "at": cut.version.label,
        "versionstamp": cut.versionstamp.hex(),
        "files": list(entries),
    }


# --- revert --------------------------------------------------------------------------------


Commit = Callable[[list[Append]], Awaitable[list[Appended]]]
"""How a revert's updates are committed: ``History.append`` directly, or the server's
group-commit writer (so that rooms broadcast them to live editors)."""


@dataclass(frozen=True, slots=True)
class Reverted:
    """What a revert did to one document (``versionstamp`` None: it was already there)."""

    path: str
    target: Versionstamp | None
    versionstamp: Versionstamp | None
    deleted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "target": self.target.hex() if self.target else None,
            "versionstamp": self.versionstamp.hex() if self.versionstamp else None,
            "changed": self.versionstamp is not None,
            "deleted": self.deleted,
        }


@dataclass(frozen=True, slots=True)
class _Plan:
    ref: DocRef
    target: Versionstamp | None
    update: bytes | None
    deleted: bool


async def revert_doc(
    history: History,
    ref: DocRef,
    version: Version,
    *,
    user: str,
    device: str,
    session: str = REVERT_SESSION,
    commit: Commit | None = None,
) -> Reverted:
    """Make the document's content (and deletion flag) what it was at ``version``."""
    target = await doc_at(history, ref, version)
    plan = await _plan(history, ref, target.versionstamp, target.text, target.deleted)
    return (await _commit_plans(history, [plan], user, device, session, commit))[0]


async def revert_project(
    history: History,
    tenant: str,
    project: str,
    version: Version,
    *,
    user: str,
    device: str,
    session: str = REVERT_SESSION,
    commit: Commit | None = None,
) -> list[Reverted]:
    """Revert every document of the project to the cut at ``version``: documents
    created after it are deleted, those deleted since are restored."""
    cut = await cut_at(history, tenant, project, version)
    slots = asyncio.Semaphore(RESTORE_CONCURRENCY)

    async def plan(path: str) -> _Plan:
        async with slots:
            ref = await history.doc(tenant, project, path)
            then = await history.replay(ref, cut.versionstamp)
            if then.versionstamp is None:  # created after the cut
                return await _plan(history, ref, None, "", True)
            text, deleted = read_doc(then.doc)
            return await _plan(history, ref, then.versionstamp, text, deleted)

    plans = await asyncio.gather(*(plan(path) for path in cut.paths))
    return await _commit_plans(history, list(plans), user, device, session, commit)


async def _plan(
    history: History, ref: DocRef, target: Versionstamp | None, text: str, deleted: bool
) -> _Plan:
    head = await history.replay(ref)
    update = await asyncio.to_thread(revert_update, head.doc, "" if deleted else text, deleted)
    return _Plan(ref, target, update, deleted)


async def _commit_plans(
    history: History,
    plans: list[_Plan],
    user: str,
    device: str,
    session: str,
    commit: Commit | None,
) -> list[Reverted]:
    items = [Append(p.ref, p.update, user, device, session) for p in plans if p.update]
    appended = await (commit or history.append)(items) if items else []
    stamps = iter(appended)
    return [
        Reverted(p.ref.path, p.target, next(stamps).versionstamp if p.update else None, p.deleted)
        for p in plans
    ]


def revert_update(doc: Doc[Any], text: str, deleted: bool) -> bytes | None:
    """The update that turns ``doc`` (modified in place) into ``text`` with
    ``weft.deleted == deleted``: minimal text edits; None when nothing changes."""
    content = doc.get(CONTENT, type=Text)
    meta = doc.get(META, type=Map)
    current = str(content)
    was_deleted = meta.get(DELETED) is True
    if current == text and was_deleted == deleted:
        return None
    before = doc.get_state()
    with doc.transaction():
        if current != text:
            apply_edits(content, current, text_edits(current, text))
        if was_deleted != deleted:
            meta[DELETED] = deleted
    if str(content) != text:  # never expected; a revert must land exactly
        raise StoreError("revert: the edited text does not match the target")
    return doc.get_update(before)


# --- minimal text edits ---------------------------------------------------------------------

CHAR_DIFF_LIMIT = 2_000


def text_edits(old: str, new: str) -> list[tuple[int, int, str]]:
    """Edits ``(start, end, insert)`` in ``old``'s characters, ascending and disjoint,
    that turn ``old`` into ``new``: common ends trimmed, then lines compared, and
    characters inside small changed blocks."""
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old[prefix:], new[prefix:])
    a, b = old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]
    if not a or not b:
        return [(prefix, prefix + len(a), b)] if a or b else []
    if len(a) + len(b) <= CHAR_DIFF_LIMIT:
        return _char_edits(a, b, prefix)
    a_lines, b_lines = a.splitlines(keepends=True), b.splitlines(keepends=True)
    a_offsets = _offsets(a_lines, prefix)
    b_offsets = _offsets(b_lines, 0)
    edits: list[tuple[int, int, str]] = []
    matcher = difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        start, end = a_offsets[i1], a_offsets[i2]
        insert = b[b_offsets[j1] : b_offsets[j2]]
        if tag == "replace" and (end - start) + len(insert) <= CHAR_DIFF_LIMIT:
            edits += _char_edits(old[start:end], insert, start)
        else:
            edits.append((start, end, insert))
    return edits


def _char_edits(a: str, b: str, offset: int) -> list[tuple[int, int, str]]:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [
        (offset + i1, offset + i2, b[j1:j2])
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def _offsets(lines: list[str], start: int) -> list[int]:
    out = [start]
    for line in lines:
        out.append(out[-1] + len(line))
    return out


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on slices: fast in C for long texts
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def apply_edits(content: Text, old: str, edits: Sequence[tuple[int, int, str]]) -> None:
    """Apply character edits of ``old`` to ``content`` (pycrdt indexes by UTF-8 byte)."""
    for start, end, insert in reversed(edits):  # from the end: earlier offsets stay valid
        byte_start = len(old[:start].encode("utf-8"))
        byte_end = byte_start + len(old[start:end].encode("utf-8"))
        if byte_end > byte_start:
            del content[byte_start:byte_end]
        if insert:
            content.insert(byte_start, insert)


# --- Yjs v1 updates: the ids of their structs, and the order of a document's items -----------
#
#   update        := varUint(n) • n x clientStructs • deleteSet
#   clientStructs := varUint(k) • varUint(client) • varUint(clock) • k x struct
#   struct        := info:u8 • (GC | Skip: varUint(length)) | item
#   item          := [origin: id, if info & 0x80] • [rightOrigin: id, if info & 0x40]
#                    • [if neither: parent := varUint(1) • varString(root) | varUint(0) • id,
#                       then parentSub := varString, if info & 0x20]
#                    • content(info & 0x1f)
#   deleteSet     := varUint(n) • n x (varUint(client) • varUint(k) • k x (varUint(clock) • varUint(len)))
#   id            := varUint(client) • varUint(clock)
#
# Clocks count structs' lengths: a string's length is in UTF-16 code units, as in Yjs.

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


class _Item:
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
        self.left: _Item | None = None
        self.right: _Item | None = None


def _read_item(r: _Reader, info: int, client: int, clock: int) -> _Item:
    ref = info & 0x1F
    if ref == _GC:
        item = _Item(client, clock, r.uint())
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
        item = _Item(client, clock, length)
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


def decode_update(update: bytes) -> tuple[dict[int, list[_Item]], list[tuple[int, int, int]]]:
    """Every struct of ``update`` by client (clock order) and its deletions
    ``(client, clock, length)``."""
    r = _Reader(update)
    structs: dict[int, list[_Item]] = {}
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


def _split_units(text: str, units: int) -> tuple[str, str]:
    """``text`` split after ``units`` UTF-16 code units."""
    if text.isascii():
        return text[:units], text[units:]
    count = 0
    for i, ch in enumerate(text):
        if count >= units:
            return text[:i], text[i:]
        count += 2 if ord(ch) > 0xFFFF else 1
    return text, ""


class ItemOrder:
    """A document's items in the order Yjs gives them (YATA), with their ids.

    Built from a whole-document update (``Doc.get_update()``): structs are integrated
    dependencies first, exactly as ``Item.integrate`` in Yjs does, then the delete set is
    applied. Used to read which item each visible character belongs to.
    """

    def __init__(self) -> None:
        self._items: dict[int, list[_Item]] = {}
        self._clocks: dict[int, list[int]] = {}
        self._starts: dict[str | ID, _Item | None] = {}

    def find(self, id_: ID) -> _Item | None:
        """The item holding ``id_`` (None when the document has no such struct)."""
        clocks = self._clocks.get(id_[0])
        if clocks:
            i = bisect_right(clocks, id_[1]) - 1
            if i >= 0:
                item = self._items[id_[0]][i]
                if id_[1] < item.clock + item.length:
                    return item
        return None

    def _index(self, id_: ID) -> tuple[list[_Item], int]:
        client, clock = id_
        clocks = self._clocks.get(client)
        if clocks:
            i = bisect_right(clocks, clock) - 1
            if i >= 0:
                items = self._items[client]
                item = items[i]
                if clock < item.clock + item.length:
                    return items, i
        raise UpdateDecodeError(f"the update refers to a missing struct {id_}")

    def _split(self, items: list[_Item], i: int, diff: int) -> _Item:
        """Split ``items[i]`` after ``diff`` units; the right part (as Yjs splitItem)."""
        item = items[i]
        right = _Item(item.client, item.clock + diff, item.length - diff)
        right.origin = (item.client, item.clock + diff - 1)
        right.right_origin, right.parent, right.sub = item.right_origin, item.parent, item.sub
        right.deleted, right.gc = item.deleted, item.gc
        if item.text is not None:
            item.text, right.text = _split_units(item.text, diff)
        item.length = diff
        right.left, right.right = item, item.right
        if item.right is not None:
            item.right.left = right
        item.right = right
        items.insert(i + 1, right)
        self._clocks[item.client].insert(i + 1, right.clock)
        return right

    def _clean_end(self, id_: ID) -> _Item:
        items, i = self._index(id_)
        item = items[i]
        if id_[1] != item.clock + item.length - 1:
            self._split(items, i, id_[1] - item.clock + 1)
        return item

    def _clean_start(self, id_: ID) -> _Item:
        items, i = self._index(id_)
        item = items[i]
        if id_[1] != item.clock:
            return self._split(items, i, id_[1] - item.clock)
        return item

    def apply_state(self, update: bytes) -> None:
        """Integrate a whole-document update (no struct may be missing)."""
        structs, deletes = decode_update(update)
        queues = {client: items for client, items in structs.items() if items}
        heads = dict.fromkeys(queues, 0)
        upto = {client: items[0].clock for client, items in queues.items()}
        integrate = self._integrate
        for first in sorted(queues, reverse=True):
            stack = [first]
            while stack:
                client = stack[-1]
                items, head, needed = queues[client], heads[client], None
                while head < len(items):
                    item = items[head]
                    needed = _needs(item, upto)
                    if needed is not None:
                        break
                    head += 1
                    integrate(item)
                    upto[client] = item.clock + item.length
                    if len(stack) > 1:
                        break  # back to the client that waited for this struct
                heads[client] = head
                if needed is None:
                    stack.pop()
                elif heads.get(needed, 0) >= len(queues.get(needed, ())) or needed in stack:
                    raise UpdateDecodeError(
                        f"struct ({items[head].client}, {items[head].clock}) depends on a "
                        "missing one"
                    )
                else:
                    stack.append(needed)
        for client, clock, length in deletes:
            self._delete(client, clock, clock + length)

    def _integrate(self, item: _Item) -> None:
        left = self._clean_end(item.origin) if item.origin is not None else None
        right = self._clean_start(item.right_origin) if item.right_origin is not None else None
        if item.parent is None:
            ref = left if left is not None else right
            if ref is None:
                raise UpdateDecodeError(f"struct ({item.client}, {item.clock}) has no parent")
            item.parent, item.sub = ref.parent, ref.sub
            if ref.gc:
                item.gc = item.deleted = True
        items = self._items.setdefault(item.client, [])
        if items and item.clock < items[-1].clock + items[-1].length:
            raise UpdateDecodeError(f"struct ({item.client}, {item.clock}) overlaps another")
        items.append(item)
        self._clocks.setdefault(item.client, []).append(item.clock)
        if item.gc or item.sub is not None:
            return  # collected, or a map entry: no sequence order to keep
        parent = item.parent
        assert parent is not None
        if (left is None and (right is None or right.left is not None)) or (
            left is not None and left.right is not right
        ):
            left = self._resolve(item, left, right, parent)
        item.left = left
        if left is not None:
            item.right = left.right
            left.right = item
        else:
            item.right = self._starts.get(parent)
            self._starts[parent] = item
        if item.right is not None:
            item.right.left = item

    def _resolve(
        self, item: _Item, left: _Item | None, right: _Item | None, parent: str | ID
    ) -> _Item | None:
        """Yjs's conflict resolution: where ``item`` goes among the items inserted
        concurrently between its origins (lower client ids first, origins respected)."""
        o = left.right if left is not None else self._starts.get(parent)
        conflicting: set[_Item] = set()
        before_origin: set[_Item] = set()
        while o is not None and o is not right:
            before_origin.add(o)
            conflicting.add(o)
            if item.origin == o.origin:
                if o.client < item.client:
                    left = o
                    conflicting.clear()
                elif item.right_origin == o.right_origin:
                    break
            elif o.origin is not None and (origin := self.find(o.origin)) in before_origin:
                if origin not in conflicting:
                    left = o
                    conflicting.clear()
            else:
                break
            o = o.right
        return left

    def _delete(self, client: int, start: int, end: int) -> None:
        pos = start
        while pos < end:
            if self.find((client, pos)) is None:
                return  # deletions of structs this document never received
            items, i = self._index((client, pos))
            if items[i].clock < pos:
                self._split(items, i, pos - items[i].clock)
                i += 1
            item = items[i]
            if item.clock + item.length > end:
                self._split(items, i, end - item.clock)
            item.deleted = True
            pos = item.clock + item.length

    def text_runs(self, root: str) -> Iterator[tuple[int, int, str]]:
        """``(client, clock, text)`` of the visible strings of the root type ``root``."""
        item = self._starts.get(root)
        while item is not None:
            if not item.deleted and item.text is not None:
                yield item.client, item.clock, item.text
            item = item.right


def _needs(item: _Item, upto: dict[int, int]) -> int | None:
    """The client whose structs must be integrated before ``item`` (None: none)."""
    for ref in (item.origin, item.right_origin, item.parent):
        if isinstance(ref, tuple):
            client, clock = ref
            if client == item.client:
                if clock >= item.clock:
                    raise UpdateDecodeError(f"struct ({item.client}, {item.clock}) refers ahead")
            elif clock >= upto.get(client, 0):
                return client
    return None


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
                piece, text = _split_units(text, stop - pos)
                yield len(piece), record
            pos = stop
            if i + 1 < len(starts) and starts[i + 1] <= pos:
                i += 1


__all__ = [
    "HEAD_VERSION",
    "Author",
    "BadVersion",
    "Blame",
    "BlameLine",
    "ClockIndex",
    "Commit",
    "Cut",
    "DocVersion",
    "Entry",
    "File",
    "ItemOrder",
    "Page",
    "Reverted",
    "UpdateDecodeError",
    "Version",
    "VersionNotFound",
    "blame",
    "carried",
    "cut_at",
    "decode_update",
    "diff",
    "doc_at",
    "doc_version",
    "files",
    "history_page",
    "manifest",
    "map_entries",
    "parse_version",
    "project_cut",
    "revert_doc",
    "revert_project",
    "revert_update",
    "struct_ranges",
    "text_edits",
    "unified_diff",
    "utf16_len",
]
