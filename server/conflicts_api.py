"""Conflicts: detected on every offline branch, listed and resolved over REST.

- The ``on_branch`` hook: when a weft client's offline branch (``Base(vs)`` and the
  updates after it) is committed, :func:`crdt.branches.judge_branch` compares what the
  branch changed with what others committed since its base; an overlap is stored, and
  a change both sides made alike, which the merge holds twice, is kept once (the
  update deleting the branch's copy is committed first).
- The ``on_edit_deleted`` hook: when an update sent online changed the text of a
  document flagged deleted, :func:`crdt.editdelete.judge` decides whether its author
  had seen the deletion; if not, an edit/delete record is stored, one per deletion and
  device.
- ``GET /api/v1/{tenant}/{project}/conflicts[?path=P][&status=open|resolved][&device=D
  [&side=ours|theirs|either]][&after=ID][&limit=N]``: ``{"tenant", "project",
  "conflicts": [record, ...], "next_after": ID | null}``, one page in id order (the
  store's key order, not time): up to ``limit`` records (default 100, at most 1000)
  that pass the filters, from the first id after ``after`` (``device``: the records
  whose ``side``, ``ours`` when not given, names that device among its clients);
  ``next_after`` is the ``after`` of the next page, null once there is no more. A
  page may hold fewer records, even none, and still have a ``next_after`` (see
  :func:`crdt.conflict_store.list_conflicts`).
- ``GET /api/v1/{tenant}/{project}/conflicts/{id}``: ``{"conflict": record}``.
- ``POST /api/v1/{tenant}/{project}/conflicts`` (write scope), body ``{"path", "text",
  "device"?}``: record a conflict a client found itself — a local file that met a
  different document at the same path with no shared history. The server's text at head
  is the other side and stays; re-posting the same text is idempotent. 201
  ``{"conflict": record}``. ``device`` follows the device-name rule
  (``crdt.keys.DEVICE_ID``, as revert's and ``?device=``). The text may be
  ``MAX_REPORT_TEXT_BYTES`` (4 MiB, a synced file's limit), the body
  ``MAX_REPORT_BODY``; more is a 413.
- ``POST /api/v1/{tenant}/{project}/conflicts/{id}/resolve`` (write scope), body
  ``{"resolution"?: str}``: marks it resolved with who and when; the record stays.

A record: ``id`` (24 hex digits), ``path``, ``base``, ``ours``/``theirs`` (``users``,
``clients``, ``versionstamps``), ``regions`` (base line range, base/ours/theirs text),
``merged_text``, ``created_ms``, ``status``, ``resolved_by``, ``resolved_ms``,
``resolution``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pycrdt import Text

from crdt import branches, editdelete
from crdt.conflict_store import SIDES, conflict_id, save_once
from crdt.conflicts import MAX_PAGE, PAGE, ConflictRecord, Region, Side
from crdt.errors import NotFound, ProtocolError
from crdt.history import Append, Appended, DocRef, History, now_ms
from crdt.keys import DEVICE_ID, DEVICE_ID_RULE
from crdt.versions import read_doc
from crdt.versionstamp import Versionstamp
from server.api import _names, refuse_unknown_params
from server.appkeys import HISTORY, ON_BRANCH, ON_EDIT_DELETED, ROOMS, SETTINGS, WRITER
from server.auth import Principal, require
from server.bodies import json_object, unicode_text
from server.logsafe import printable

log = logging.getLogger("weft.conflicts")
# Who a document brought back after an edit/delete conflict, or a change both sides of
# a branch made alike kept once, is committed by (client, session prefix): the room
# watcher applies it like another instance's update.
CONFLICT_CLIENT = "weft:conflict"
CONFLICT_SESSION = "conflict"
CONTENT = "content"
STATUSES = ("open", "resolved")
MAX_REPORT_TEXT_BYTES = 4 << 20
"""The longest text a report takes, in UTF-8 bytes: ``weft sync``'s file limit
(``client.folder.MAX_FILE_BYTES``, which a unit test checks is the same)."""
MAX_REPORT_BODY = 6 * MAX_REPORT_TEXT_BYTES + (64 << 10)
"""The largest report body: such a text as JSON (a control character is 6 bytes,
``\\u001f``, in the ASCII JSON clients send), with room for the path and device."""


def _record_json(record: ConflictRecord) -> dict[str, Any]:
    return record.to_dict()


def on_branch(app: web.Application) -> Any:
    """The hook the WebSocket handler calls once an offline branch is committed."""

    async def hook(
        doc: DocRef,
        base: Versionstamp,
        appended: list[Appended],
        principal: Principal,
        device: str | None,
    ) -> ConflictRecord | None:
        history: History = app[HISTORY]
        own = (principal.user, device) if device is not None else None
        record, once = await branches.judge_branch(history, doc, base or None, appended, device=own)
        if once is not None:
            await _keep_once(app, doc, once, principal.user)
        if record is None:
            return None
        if record.deleted and app[SETTINGS].bring_back_edited:
            try:
                record.restored = await _bring_back(app, doc, record)
            except Exception:  # the record is saved all the same
                log.error("bringing %s back failed", printable(doc.path), exc_info=True)
        await branches.save(history, doc, record)
        _said(record, doc, "branch", principal.user)
        return record

    return hook


def on_edit_deleted(app: web.Application) -> Any:
    """The hook the WebSocket handler calls once an update sent online changed the text
    of a document flagged deleted (see :mod:`crdt.editdelete`). The record, when one is
    made now; the document is brought back as for an offline branch's record when
    ``WEFT_BRING_BACK_EDITED`` is on."""

    async def hook(
        doc: DocRef, edit: Versionstamp, editor: editdelete.Editor
    ) -> ConflictRecord | None:
        history: History = app[HISTORY]
        judged = await editdelete.judge(history, doc, edit, editor)
        if judged is None:
            return None
        record, seed = judged
        try:  # recorded already (by another connection of the device, another instance)
            await branches.get_conflict(history, doc.tenant, doc.project, conflict_id(seed))
            return None
        except NotFound:
            pass
        if app[SETTINGS].bring_back_edited:
            try:
                record.restored = await _bring_back(app, doc, record)
            except Exception:  # the record is saved all the same
                log.error("bringing %s back failed", printable(doc.path), exc_info=True)
        stored, new = await save_once(history, doc, record, seed)
        if not new:
            return None
        _said(stored, doc, "edit", editor.user)
        return stored

    return hook


def _said(record: ConflictRecord, doc: DocRef, what: str, user: str) -> None:
    log.info(
        "conflict %s on %s/%s/%s: %s; %s by %s",
        record.id,
        doc.tenant,
        doc.project,
        printable(doc.path),
        record.summary(),
        what,
        printable(user),
    )


async def _keep_once(app: web.Application, doc: DocRef, update: bytes, user: str) -> None:
    """Commit the update that keeps once each change both sides of a branch made alike
    (it deletes the branch's copy: see :mod:`crdt.samechange`), by the branch's user,
    as a document brought back is; the document's room applies it at once, so the
    branch's device has it before the verdict. A commit that fails is logged (the copy
    stays; the record, if any, is saved all the same)."""
    session = f"{CONFLICT_SESSION}/{app[SETTINGS].instance}"
    try:
        await app[WRITER].submit(Append(doc, update, user, CONFLICT_CLIENT, session))
    except Exception:
        log.error("keeping a same change once on %s failed", printable(doc.path), exc_info=True)
        return
    log.info(
        "the same change made on both sides of a branch on %s/%s/%s kept once",
        doc.tenant,
        doc.project,
        printable(doc.path),
    )
    room = app[ROOMS].get(doc)
    if room is not None:
        await app[ROOMS].catch_up_to_head(room)


async def _bring_back(app: web.Application, doc: DocRef, record: ConflictRecord) -> bool:
    """One side deleted the document the other edited: bring it back (unset
    ``weft.deleted``; edits are never dropped unseen, and deleting it again is one step)
    unless it must stay deleted (see :func:`crdt.branches.bring_back`). Committed like
    an editor's update, by the edited side's user, so rooms and devices get it. Whether
    the document is back; ``record.merged_text`` becomes its text then."""
    history: History = app[HISTORY]
    back, update = await branches.bring_back(history, doc, record)
    if update is not None:
        side = record.ours if record.deleted == "theirs" else record.theirs
        user = side.users[0] if side.users else ""
        session = f"{CONFLICT_SESSION}/{app[SETTINGS].instance}"
        await app[WRITER].submit(Append(doc, update, user, CONFLICT_CLIENT, session))
    if back:
        record.merged_text = read_doc((await history.replay(doc)).doc)[0]
    return back


LIST_PARAMS = ("path", "status", "device", "side", "after", "limit", "token")
"""The query parameters the conflict list takes (another is a 400, as on the document list)."""


def _side(raw: str | None, device: str | None) -> str:
    """``?side=``: which side of a record ``?device=`` names (``ours`` when not given)."""
    if raw is None:
        return "ours"
    if raw not in SIDES:
        raise ProtocolError(f"?side= must be one of {', '.join(SIDES)}, not {raw!r}")
    if device is None:
        raise ProtocolError("?side= needs ?device=: it says which side names that device")
    return raw


def _page_limit(raw: str | None) -> int:
    """``?limit=``: records a page holds, 1 to ``MAX_PAGE`` (``PAGE`` when not given)."""
    if raw is None:
        return PAGE
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_PAGE):
        raise ProtocolError(f"?limit= must be a whole number from 1 to {MAX_PAGE}, not {raw!r}")
    return int(raw)


def _page_after(raw: str | None) -> str | None:
    """``?after=``: the conflict id the page starts after (24 hex digits)."""
    if raw is None:
        return None
    try:
        Versionstamp.from_hex(raw)
    except ValueError:
        raise ProtocolError(f"?after= must be a conflict id (24 hex digits), not {raw!r}") from None
    return raw.lower()


async def list_conflicts(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    refuse_unknown_params(
        request,
        LIST_PARAMS,
        "the conflict list",
        "it takes path, status, device, side, after, limit and token",
    )
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise ProtocolError(f"?status= must be one of {', '.join(STATUSES)}, not {status!r}")
    device = request.query.get("device")
    if device is not None and not DEVICE_ID.fullmatch(device):
        raise ProtocolError(f"?device= must be a device name: {DEVICE_ID_RULE}")
    page = await branches.list_conflicts(
        request.app[HISTORY],
        tenant,
        project,
        path=request.query.get("path"),
        status=status,
        device=device,
        side=_side(request.query.get("side"), device),
        after=_page_after(request.query.get("after")),
        limit=_page_limit(request.query.get("limit")),
    )
    return web.json_response(
        {
            "tenant": tenant,
            "project": project,
            "conflicts": [_record_json(r) for r in page.records],
            "next_after": page.next_after,
        }
    )


def _conflict_id(request: web.Request) -> str:
    cid = request.match_info["id"]
    try:
        Versionstamp.from_hex(cid)
    except ValueError:
        raise ProtocolError(f"a conflict id is 24 hex digits, not {cid!r}") from None
    return cid.lower()


async def get_conflict(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    refuse_unknown_params(request, ("token",), "a conflict", "it takes token")
    record = await branches.get_conflict(
        request.app[HISTORY], tenant, project, _conflict_id(request)
    )
    return web.json_response({"conflict": _record_json(record)})


async def _report_body(request: web.Request) -> dict[str, Any]:
    """A report's body: a JSON object of up to ``MAX_REPORT_BODY`` bytes (a 413 says the
    limit, and what it is for)."""
    # A report carries a whole file (up to 4 MiB): more than the app's 1 MiB body limit.
    try:
        return await json_object(
            request.clone(client_max_size=MAX_REPORT_BODY), ("path", "text", "device")
        )
    except web.HTTPRequestEntityTooLarge:
        raise web.HTTPRequestEntityTooLarge(
            MAX_REPORT_BODY,
            text=f"the request body is over {MAX_REPORT_BODY} bytes "
            "(a report holds one file's text, at most 4 MiB)",
        ) from None


async def create_conflict(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    principal = await require(request, tenant, project, "write")
    body = await _report_body(request)
    path, text, device = body.get("path"), body.get("text"), body.get("device", "")
    if not isinstance(path, str) or not isinstance(text, str) or not isinstance(device, str):
        raise ProtocolError('the body must be {"path": str, "text": str, "device"?: str}')
    unicode_text("text", text)
    if device and not DEVICE_ID.fullmatch(device):  # as revert's "device" and ?device=
        raise ProtocolError(f'"device" must be a device name: {DEVICE_ID_RULE}')
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_REPORT_TEXT_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            MAX_REPORT_TEXT_BYTES,
            size,
            text=f"the text is {size} bytes, over {MAX_REPORT_TEXT_BYTES} bytes: a report "
            "holds one file's text, and weft sync syncs files of at most 4 MiB",
        )
    history = request.app[HISTORY]
    ref = await history.doc(tenant, project, path)
    replayed = await history.replay(ref)
    if replayed.versionstamp is None:
        raise NotFound(f"no document {ref.path!r} in {tenant}/{project}: nothing to conflict with")
    theirs_text = str(replayed.doc.get(CONTENT, type=Text))
    head = await history.updates(ref, limit=1, reverse=True)
    record = ConflictRecord(
        id="",
        path=ref.path,
        base="",
        ours=Side(users=[principal.user], clients=[device] if device else []),
        theirs=Side(
            users=sorted({r.user for r in head}),
            clients=sorted({r.client for r in head}),
            versionstamps=[replayed.versionstamp.hex()],
        ),
        regions=[Region(0, 0, "", text, theirs_text)],
        merged_text=theirs_text,
        created_ms=now_ms(),
    )
    seed = [ref.path, device, text, replayed.versionstamp.hex()]
    saved = await branches.save_report(history, ref, record, seed)
    return web.json_response({"conflict": _record_json(saved)}, status=201)


async def resolve_conflict(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    principal = await require(request, tenant, project, "write")
    body = await json_object(request, ("resolution",))
    resolution = body.get("resolution", "")
    if not isinstance(resolution, str):
        raise ProtocolError('"resolution" must be a string')
    unicode_text("resolution", resolution)
    record = await branches.resolve(
        request.app[HISTORY],
        tenant,
        project,
        _conflict_id(request),
        user=principal.user,
        resolution=resolution,
    )
    return web.json_response({"conflict": _record_json(record)})


def setup(app: web.Application) -> None:
    """Install the branch hook and the conflict routes."""
    app[ON_BRANCH] = on_branch(app)
    app[ON_EDIT_DELETED] = on_edit_deleted(app)
    base = "/api/v1/{tenant}/{project}/conflicts"
    app.router.add_get(base, list_conflicts)
    app.router.add_post(base, create_conflict)
    app.router.add_get(base + "/{id}", get_conflict)
    app.router.add_post(base + "/{id}/resolve", resolve_conflict)
