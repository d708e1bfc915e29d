"""Versions of a time-travel request, and what they resolve to in a history.

A *version* argument is a versionstamp (24 hex digits), an ISO-8601 time (naive times are
UTC; a time in the future is refused) or ``head``. A versionstamp in the future (its
commit version above the store's latest committed version) is refused too, when it is
resolved (:func:`check_committed`): what is at it is not known yet. One between a
document's head and the store's latest commit is a valid, stable cut. For one document,
a time means the document's last version committed at or before it; for a whole project
it means a *cut*: the newest versionstamp any of its documents committed at or before
it, and every document is read at that same versionstamp.

A document's text is its root ``Y.Text`` ``content``; it is deleted while its root
``Y.Map`` ``weft`` has ``deleted`` set to True.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pycrdt import Doc, Map, Text

from crdt import keys
from crdt.errors import NotFound, ProtocolError
from crdt.history import DocRef, History
from crdt.kv.base import ReadTransaction
from crdt.versionstamp import Versionstamp

CONTENT = "content"
META = "weft"
DELETED = "deleted"
HEAD = "head"
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

CUT_PAGE = 500
"""Documents whose versions :func:`cut_at` reads in one transaction (one round trip each)."""


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
        when = _iso_time(value)
    except ValueError as exc:
        raise BadVersion(
            f"not a version: {text!r} ({_why(exc)}use a versionstamp of 24 hex digits, an "
            f"ISO-8601 time such as 2024-05-01T12:00:00Z, or 'head'){_plus_hint(value)}"
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


_LEAP_SECOND = re.compile(r"([Tt ]\d{2}:\d{2}):60([.,]\d+)?")


def _iso_time(value: str) -> datetime:
    """An ISO-8601 time as RFC 3339 allows it: a lowercase "z" (and "t"), which
    ``fromisoformat`` refuses, and a leap second (``23:59:60``), which ``datetime``
    cannot hold: it is read as ``23:59:59.999`` (Unix time, the log's clock, has no
    leap seconds)."""
    value = value[:-1] + "Z" if value.endswith("z") else value
    return datetime.fromisoformat(_LEAP_SECOND.sub(r"\1:59.999", value, count=1))


def _why(exc: ValueError) -> str:
    """What ``fromisoformat`` found wrong with a time (``day is out of range for
    month``), when it is more than "not ISO-8601"."""
    why = str(exc)
    if why.startswith("Invalid isoformat string"):
        return ""
    if "offset" in why:
        return "a UTC offset must be under 24 hours; "
    return f"{why}; "


_LOST_PLUS = re.compile(r"[T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)? \d{2}(:?\d{2})?$")


def _plus_hint(value: str) -> str:
    """A hint for a time whose UTC offset's "+" became a space: in a URL query an
    unencoded "+" means a space (``?at=...T10:00:00+01:00`` arrives as ``10:00:00 01:00``)."""
    if _LOST_PLUS.search(value):
        return '; in a URL, "+" means a space: write a UTC offset\'s "+" as %2B'
    return ""


async def check_committed(history: History, version: Version) -> None:
    """Refuse a versionstamp from the future: one whose commit version (its first 8
    bytes) is above the store's latest committed version. What a project or a document
    is at it is not known yet (a cut there would change as commits arrive). One between
    a document's head and the store's latest commit is fine: nothing can be committed
    there any more. Times and head need no check (a future time is refused when parsed)."""
    stamp = version.stamp
    if stamp is None:
        return
    latest: int = await history.kv.read(lambda tr: tr.read_version())
    if stamp.commit_version > latest:
        raise BadVersion(
            f"versionstamp {stamp} is in the future: the store's latest commit version is "
            f"{latest:016x}: a versionstamp may be at most {latest:016x}ffffffff"
        )


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
        await check_committed(history, version)
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


async def _newest_at(
    history: History, tenant: str, project: str, paths: list[str], version: Version
) -> Versionstamp | None:
    """For a time, the newest versionstamp any of the documents committed at or before it:
    what ``History.project_cut`` gives, with every document's time index read in one
    transaction (one read per document would cost more than restoring them). For a
    versionstamp, the first document's last versionstamp at or before it (the cut is the
    versionstamp itself: only whether any document had committed matters, and each log
    row read holds an update). ``None``: no document had committed yet.

    At most CUT_PAGE documents per transaction: each is one range read, a round trip on
    FoundationDB, and a transaction that outlives FDB's 5 seconds fails however often it
    is run again. (A commit landing between two pages is seen by the later ones only,
    as it would be by a single transaction that began after it.)"""
    refs = [await history.doc(tenant, project, path) for path in paths]

    def bounds(ref: DocRef) -> tuple[bytes, bytes, int]:  # begin, end, the vs's place in a key
        if version.ms is not None:  # the time index: D + (t, ms, vs) -> b""
            return ref.key("t"), keys.pack(("t", version.ms + 1), ref.space), 2
        assert version.stamp is not None  # the log: D + (u, vs, part)
        return ref.key("u"), ref.key("u", version.stamp) + b"\xff", 1

    def newest(tr: ReadTransaction, page: list[DocRef]) -> Versionstamp | None:
        found: Versionstamp | None = None
        for ref in page:
            begin, end, place = bounds(ref)
            rows = tr.get_range(begin, end, 1, True)
            if rows:
                vs = keys.unpack(rows[0][0], ref.space)[place]
                found = vs if found is None or vs > found else found
                if version.stamp is not None:
                    break
        return found

    found: Versionstamp | None = None
    for start in range(0, len(refs), CUT_PAGE):
        page = refs[start : start + CUT_PAGE]
        vs: Versionstamp | None = await history.kv.read(functools.partial(newest, page=page))
        if vs is not None and (found is None or vs > found):
            found = vs
            if version.stamp is not None:
                break
    return found


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


# --- a project at a version -------------------------------------------------------------


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
    versionstamp committed at or before it) or head (the newest of all).
    :class:`VersionNotFound` if no document of it had committed by then, whether
    ``version`` is a time or a versionstamp."""
    infos = await history.docs(tenant, project)
    heads = [info.head for info in infos if info.head is not None]
    if not heads:
        raise VersionNotFound(f"project {tenant}/{project} has no documents")
    paths = [info.path for info in infos]
    if version.is_head:
        return Cut(tenant, project, max(heads), version, paths)
    await check_committed(history, version)
    found = await _newest_at(history, tenant, project, paths, version)
    if found is None:  # by time or by versionstamp alike (a revert must not delete all)
        raise VersionNotFound(f"project {tenant}/{project} had no documents at {version}")
    return Cut(tenant, project, version.stamp or found, version, paths)


async def documents_at(history: History, cut: Cut) -> int:
    """How many of the cut's documents existed at it (their first update at or before
    its versionstamp), those deleted at it included: telling those apart needs each
    document replayed, and this replays none. At head that is every listed document;
    before, one key is read per document, CUT_PAGE documents per transaction (as
    :func:`_newest_at`): the first entry of its time index."""
    if cut.version.is_head:  # the cut is the newest head of the documents listed
        return len(cut.paths)
    refs = [await history.doc(cut.tenant, cut.project, path) for path in cut.paths]
    at = cut.versionstamp

    def existed(tr: ReadTransaction, ref: DocRef) -> bool:
        # The time index's first entry (by ms, and a document's ms never goes back) is
        # at the last update of the document's first transaction.
        rows = tr.get_range(*keys.prefix_range(ref.key("t")), 1)
        if not rows:
            return False
        first: Versionstamp = keys.unpack(rows[0][0], ref.space)[2]
        if first <= at:
            return True
        if first.tr_version != at.tr_version:  # that whole transaction is after the cut
            return False
        # The cut is inside that transaction: whether one of its updates is at or
        # before the cut is the log's to say (a value read, in this rare case only).
        return bool(tr.get_range(ref.key("u"), ref.key("u", at) + b"\xff", 1))

    def count(tr: ReadTransaction, page: list[DocRef]) -> int:
        return sum(existed(tr, ref) for ref in page)

    total = 0
    for start in range(0, len(refs), CUT_PAGE):
        page = refs[start : start + CUT_PAGE]
        total += await history.kv.read(functools.partial(count, page=page))
    return total
