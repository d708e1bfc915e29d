"""Time travel over the history: versions, history pages, show, diff, blame, restore, revert.

Pure data layer (no aiohttp, no files): the CLI (``client/timetravel_cli.py``) and the
REST API (``server/timetravel_api.py``) are thin shells over these functions.

- A *version* argument is a versionstamp (24 hex digits), an ISO-8601 time (naive times
  are UTC; a time in the future is refused) or ``head``. A versionstamp in the future
  (beyond the store's latest commit) is refused as well. For one document, a time means
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

The functions live in small modules; this one is the entry point that callers import
(``from crdt import timetravel as tt``), and itself holds the history listing and diffs:

- :mod:`crdt.versions`: parsing versions, resolving them for a document or a project cut;
- :mod:`crdt.blame` over :mod:`crdt.itemorder` (Yjs item order), :mod:`crdt.carriers`
  (which update carried which ids) and :mod:`crdt.ydecode` (the Yjs v1 update decoder);
- :mod:`crdt.restore`: a project's files at a cut and the manifest;
- :mod:`crdt.revert` over :mod:`crdt.textedits` (minimal text edits, shared with the
  client).
"""

from __future__ import annotations

import asyncio
import difflib
from dataclasses import dataclass
from typing import Any

from crdt.blame import Author, Blame, BlameLine, blame
from crdt.carriers import ClockIndex, carried
from crdt.conflicts import lines as split_lines
from crdt.history import DocRef, History
from crdt.itemorder import ItemOrder
from crdt.restore import MANIFEST_NAME, RESTORE_CONCURRENCY, File, files, manifest
from crdt.revert import (
    REVERT_SESSION,
    Commit,
    Reverted,
    apply_edits,
    revert_doc,
    revert_project,
    revert_update,
    text_edits,
)
from crdt.versions import (
    CONTENT,
    DELETED,
    HEAD,
    HEAD_VERSION,
    META,
    BadVersion,
    Cut,
    DocVersion,
    Version,
    VersionNotFound,
    check_committed,
    cut_at,
    doc_at,
    doc_version,
    documents_at,
    iso_time,
    parse_version,
    predecessor,
    project_cut,
    read_doc,
)
from crdt.versionstamp import Versionstamp
from crdt.ydecode import (
    ID,
    UpdateDecodeError,
    decode_update,
    map_entries,
    struct_ranges,
    utf16_len,
)

# --- history pages -------------------------------------------------------------------------

MAX_LIMIT = 10_000
"""The most versions one history page lists."""


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
    if not 1 <= limit <= MAX_LIMIT:
        raise BadVersion(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
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
    flags = await deletion_flags(history, ref, [r.update for r in records])
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
    await check_committed(history, version)
    return version.stamp


async def deletion_flags(history: History, ref: DocRef, updates: list[bytes]) -> list[bool | None]:
    """Per update, the value it gave ``weft.deleted`` (None: it did not set it).

    Only a key's first entry names its map; later ones point at the entry they replace,
    so the entries are looked up in the document's items at head. The decoding is done
    in worker threads: on the event loop, a page of 10,000 updates held it ~55 ms.
    """
    try:
        entries = await asyncio.to_thread(_entries_of, updates)
    except UpdateDecodeError:
        return [None] * len(updates)
    if not any(entries):
        return [None] * len(updates)
    head = await history.replay(ref)
    try:
        return await asyncio.to_thread(_flags, head.doc.get_update(), entries)
    except UpdateDecodeError:
        return [None] * len(updates)


def _entries_of(updates: list[bytes]) -> list[list[tuple[ID, Any]]]:
    return [map_entries(u) for u in updates]


def _flags(state: bytes, entries: list[list[tuple[ID, Any]]]) -> list[bool | None]:
    """Per update's entries, the ``weft.deleted`` value they set, looked up in the
    items of ``state`` (the document at head)."""
    order = ItemOrder()
    order.apply_state(state)
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
    lines = split_lines(text)  # as blame and conflict regions split them
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


async def diff(history: History, ref: DocRef, old: Version, new: Version) -> str:
    a = await doc_at(history, ref, old)
    b = await doc_at(history, ref, new)
    return unified_diff(ref.path, a, b)


__all__ = [
    "CONTENT",
    "DELETED",
    "HEAD",
    "HEAD_VERSION",
    "MANIFEST_NAME",
    "MAX_LIMIT",
    "META",
    "RESTORE_CONCURRENCY",
    "REVERT_SESSION",
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
    "apply_edits",
    "blame",
    "carried",
    "check_committed",
    "cut_at",
    "decode_update",
    "deletion_flags",
    "diff",
    "doc_at",
    "doc_version",
    "documents_at",
    "files",
    "history_page",
    "iso_time",
    "manifest",
    "map_entries",
    "parse_version",
    "predecessor",
    "project_cut",
    "read_doc",
    "revert_doc",
    "revert_project",
    "revert_update",
    "struct_ranges",
    "text_edits",
    "unified_diff",
    "utf16_len",
]
