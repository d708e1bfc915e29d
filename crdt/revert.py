"""Revert: a new forward update (never a rewrite) that brings back an old version.

The document is loaded at head, the minimal ``Y.Text`` edits to the target text are made
(:mod:`crdt.textedits`), ``weft.deleted`` is set to the target's value, and the update is
appended with its author. A deleted target sets the flag and leaves the text, as a
deletion does. A project revert does that for every document (created after
the target: deleted; deleted since: restored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map, Text

from crdt.errors import StoreError
from crdt.history import Append, Appended, DocRef, History
from crdt.restore import RESTORE_CONCURRENCY
from crdt.textedits import NotText, Op, apply, diff
from crdt.versions import CONTENT, DELETED, META, Version, cut_at, doc_at, read_doc
from crdt.versionstamp import Versionstamp

REVERT_SESSION = "revert"
REVERT_CHAR_LIMIT = 2_000
"""Changed regions up to this many characters are reverted per character (the client's
file edits use :data:`crdt.textedits.CHAR_DIFF_LIMIT`)."""


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
    try:
        update = await asyncio.to_thread(
            revert_update, head.doc, None if deleted else text, deleted
        )
    except NotText as exc:
        raise NotText(f"{ref.path}: {exc}: it takes no text edits") from None
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


def revert_update(doc: Doc[Any], text: str | None, deleted: bool) -> bytes | None:
    """The update that turns ``doc`` (modified in place) into ``text`` with
    ``weft.deleted == deleted``: minimal text edits; None when nothing changes.

    ``text`` None leaves the text as it is: a revert to a deleted version sets the flag
    only, as a deletion does (the text stays, so the document can come back whole and an
    edit made meanwhile merges into it; emptying it made a document brought back later
    show only what was typed after the revert, and turned "revert a deleted document to
    head" into a change)."""
    content = doc.get(CONTENT, type=Text)
    meta = doc.get(META, type=Map)
    current = str(content)
    if text is None:
        text = current
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


def text_edits(old: str, new: str) -> list[Op]:
    """Edits ``(start, end, insert)`` in ``old``'s characters, ascending and disjoint,
    that turn ``old`` into ``new`` (what a revert makes)."""
    return diff(old, new, char_limit=REVERT_CHAR_LIMIT)


apply_edits = apply
"""Apply character edits of ``old`` to a ``Y.Text`` (pycrdt indexes by UTF-8 byte)."""
