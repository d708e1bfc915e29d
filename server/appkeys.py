"""Typed keys for the aiohttp application's shared state (``web.AppKey``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from aiohttp import web

if TYPE_CHECKING:
    from crdt.conflicts import ConflictRecord
    from crdt.editdelete import Editor
    from crdt.history import Appended, DocRef, History
    from crdt.versionstamp import Versionstamp
    from server.auth import Authenticator, Principal
    from server.config import Settings
    from server.connection import Connections
    from server.metrics import Metrics
    from server.quotas import Quotas
    from server.rooms import Rooms
    from server.writer import Writer

    BranchHook: TypeAlias = Callable[
        [DocRef, Versionstamp, list[Appended], Principal, str | None],
        Awaitable[ConflictRecord | None] | ConflictRecord | None,
    ]
    """Called once an offline branch (a weft client's ``Base(vs)`` and the updates after
    it) is committed: the doc, the branch's base, its updates as appended, the author,
    and the device (its ``?device=``, if it gave one). Returns the conflict record the
    branch made, if any (said to a client of extension version 2, ``Checked``)."""

    EditDeletedHook: TypeAlias = Callable[
        [DocRef, Versionstamp, Editor], Awaitable[ConflictRecord | None]
    ]
    """Called once an update sent online (outside an offline branch) changed the text of
    a document flagged deleted: the doc, the update's versionstamp and who sent it.
    Returns the conflict record it made, if it made one now (said to a client of
    extension version 3, ``Conflict``); None when the author saw the deletion or the
    record was made already."""

HISTORY: web.AppKey[History] = web.AppKey("weft.history")
AUTH: web.AppKey[Authenticator] = web.AppKey("weft.auth")
SETTINGS: web.AppKey[Settings] = web.AppKey("weft.settings")
METRICS: web.AppKey[Metrics] = web.AppKey("weft.metrics")
QUOTAS: web.AppKey[Quotas] = web.AppKey("weft.quotas")
WRITER: web.AppKey[Writer] = web.AppKey("weft.writer")
ROOMS: web.AppKey[Rooms] = web.AppKey("weft.rooms")
CONNECTIONS: web.AppKey[Connections] = web.AppKey("weft.connections")
ON_BRANCH: web.AppKey[BranchHook | None] = web.AppKey("weft.on_branch")
ON_EDIT_DELETED: web.AppKey[EditDeletedHook | None] = web.AppKey("weft.on_edit_deleted")
