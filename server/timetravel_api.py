"""Time travel over REST, under ``/api/v1/{tenant}/{project}/`` (see :mod:`crdt.timetravel`).

A version (``since``, ``until``, ``from``, ``to``, ``at``) is a versionstamp (24 hex
digits; not beyond the store's latest commit), an ISO-8601 time (naive: UTC; the future
is refused) or ``head``. ``?limit=`` is a whole number from 1 to 10000.

- ``GET history/{path}?limit=50&since=&until=``: ``{"path", "versions": [{"versionstamp",
  "time", "ms", "user", "device", "size", "deleted", "revert"}], "next_until"}``, newest
  first; ``since`` is exclusive, ``until`` inclusive; ``next_until`` (or null) continues.
- ``GET diff/{path}?from=&to=``: a unified diff, ``text/plain`` (``?format=json``:
  ``{"path", "from", "to", "diff"}`` with the two versionstamps; another format is a 400).
- ``GET blame/{path}?at=``: ``{"path", "versionstamp", "lines": [{"line", "text",
  "versionstamp", "user", "device", "time"}]}``.
- ``GET export?at=``: the project at that cut as a tar stream (``application/x-tar``),
  its last member ``.weft-manifest.json`` (path, blake3, versionstamp per file); in
  ``X-Weft-Documents`` the number of documents that existed at the cut, deleted ones
  included (counted without replaying any: see :func:`crdt.versions.documents_at`).
- ``POST revert`` (write scope), body ``{"to", "path"?, "device"?}``: a new update per
  document that makes it what it was at ``to`` (without ``path``: the whole project;
  documents created after ``to`` are deleted, deleted ones restored). ``{"to",
  "reverted": [{"path", "target", "versionstamp", "changed", "deleted"}]}``. The updates
  go through the group-commit writer and carry a ``revert/<instance>`` session, so every
  loaded room (of every instance) applies them from the log and broadcasts them to its
  editors.

The text at a version is ``GET docs/{path}?at=`` (:mod:`server.api`). Read scope for
reads, write scope for revert; errors are the JSON errors of :mod:`server.api`. A query
parameter a route does not take (or one given twice) is a 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tarfile
import time
from typing import Any

from aiohttp import web

from crdt import timetravel as tt
from crdt.errors import ProtocolError
from crdt.history import Append, Appended
from crdt.keys import DEVICE_ID, DEVICE_ID_RULE
from crdt.kv.base import ReadTransaction, read_counter
from server.api import _names, error_response, refuse_unknown_params, response_format
from server.appkeys import HISTORY, QUOTAS, SETTINGS, WRITER
from server.auth import require
from server.bodies import json_object
from server.logsafe import printable
from server.writer import WriterClosed

log = logging.getLogger("weft.timetravel")
_TAR_BLOCK = 512


def takes(request: web.Request, what: str, *names: str) -> None:
    """A 400 naming a query parameter ``what`` does not take (a mistyped ``?version=``
    on a blame answered head, as if nothing had been asked) or one given twice."""
    hint = f"it takes {', '.join(names)} and token"
    refuse_unknown_params(request, (*names, "token"), what, hint)


def _version(request: web.Request, name: str, default: str | None = None) -> tt.Version:
    value = request.query.get(name, default)
    if value is None:
        raise ProtocolError(f"?{name}= is required (a versionstamp, an ISO-8601 time or head)")
    return tt.parse_version(value)


async def history(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    takes(request, "the history", "limit", "since", "until")
    raw_limit = request.query.get("limit", "50")
    # ASCII digits only ("²".isdigit() holds, and int() refuses it), and few of them
    digits = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 9
    if not digits or not 1 <= int(raw_limit) <= tt.MAX_LIMIT:
        raise ProtocolError(
            f"?limit= must be a whole number from 1 to {tt.MAX_LIMIT}, not {raw_limit[:20]!r}"
        )
    since = _version(request, "since") if "since" in request.query else None
    until = _version(request, "until") if "until" in request.query else None
    ref = await request.app[HISTORY].doc(tenant, project, request.match_info["path"])
    page = await tt.history_page(
        request.app[HISTORY], ref, limit=int(raw_limit), since=since, until=until
    )
    body = await asyncio.to_thread(history_json, page)
    return web.Response(text=body, content_type="application/json")


def history_json(page: tt.Page) -> str:
    """``json.dumps(page.to_dict())``, for a worker thread: a page of 10,000 versions
    took ~40 ms to build and encode on the event loop. One version at a time, as
    :func:`blame_json`, so the loop runs between them."""
    head = json.dumps({"path": page.path})
    versions = ", ".join(json.dumps(entry.to_dict()) for entry in page.entries)
    next_until = json.dumps(page.next_until.hex() if page.next_until else None)
    return f'{head[:-1]}, "versions": [{versions}], "next_until": {next_until}}}'


async def diff(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    takes(request, "a diff", "from", "to", "format")
    fmt = response_format(request)
    old, new = _version(request, "from"), _version(request, "to", tt.HEAD)
    store = request.app[HISTORY]
    ref = await store.doc(tenant, project, request.match_info["path"])
    a = await tt.doc_at(store, ref, old)
    b = await tt.doc_at(store, ref, new)
    # difflib over two big versions is CPU work for seconds (4 MB: 4.8 s): not on the loop
    text = await asyncio.to_thread(tt.unified_diff, ref.path, a, b)
    stamps = {"from": a.versionstamp.hex(), "to": b.versionstamp.hex()}
    if fmt == "json":
        return web.json_response({"path": ref.path, **stamps, "diff": text})
    headers = {"X-Weft-From": stamps["from"], "X-Weft-To": stamps["to"]}
    return web.Response(text=text, headers=headers)


async def blame(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    takes(request, "a blame", "at")
    version = _version(request, "at", tt.HEAD)
    ref = await request.app[HISTORY].doc(tenant, project, request.match_info["path"])
    result = await tt.blame(request.app[HISTORY], ref, version)
    body = await asyncio.to_thread(blame_json, result)
    return web.Response(text=body, content_type="application/json")


def blame_json(result: tt.Blame) -> str:
    """``json.dumps(result.to_dict())``, for a worker thread: a long document's blame is
    seconds of work (330,000 lines: 2.8 s, when it held the event loop), and encoded as
    one value its 0.5 s in json's C encoder held the GIL, so the loop, throughout. One
    line at a time lets the loop run between them."""
    head = json.dumps({"path": result.path, "versionstamp": result.versionstamp.hex()})
    lines = ", ".join(json.dumps(line.to_dict()) for line in result.lines)
    return f'{head[:-1]}, "lines": [{lines}]}}'


def tar_member(name: str, data: bytes, mtime: float) -> bytes:
    """One regular file of a tar stream: its header (PAX for long or non-ASCII names),
    its data, padding to the 512-byte block."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    padding = -len(data) % _TAR_BLOCK
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data + b"\0" * padding


async def export(request: web.Request) -> web.StreamResponse:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    takes(request, "an export", "at")
    version = _version(request, "at", tt.HEAD)
    store = request.app[HISTORY]
    cut = await tt.cut_at(store, tenant, project, version)  # bad input fails before streaming
    documents = await tt.documents_at(store, cut)  # no replay: deleted ones are counted
    mtime = version.ms / 1000 if version.ms is not None else time.time()
    vs = cut.versionstamp.hex()
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": f'attachment; filename="{project}-{vs}.tar"',
            "X-Weft-Versionstamp": vs,
            "X-Weft-Documents": str(documents),
        }
    )
    entries = []
    try:
        await response.prepare(request)  # the client may have gone while the cut was read
        async for file in tt.files(store, cut):
            await response.write(tar_member(file.path, file.data, mtime))
            entries.append(file.manifest_entry())
        body = json.dumps(tt.manifest(cut, entries), indent=2).encode() + b"\n"
        await response.write(tar_member(tt.MANIFEST_NAME, body, mtime))
        await response.write(b"\0" * (2 * _TAR_BLOCK))
    except asyncio.CancelledError:
        log.info("export of %s/%s at %s: cancelled", tenant, project, vs)
        raise
    except ConnectionError:  # the client went away (reset, or lost while we waited to send)
        log.info("export of %s/%s at %s: the client went away", tenant, project, vs)
        return response
    except Exception:  # a stream boundary: headers are sent, so cut the stream short
        log.error("export of %s/%s at %s failed", tenant, project, vs, exc_info=True)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    log.info("exported %s/%s at %s: %d files", tenant, project, vs, len(entries))
    return response


async def revert(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    principal = await require(request, tenant, project, "write")
    body = await json_object(request, ("to", "path", "device"))
    to, path, device = body.get("to"), body.get("path"), body.get("device", "api")
    if not isinstance(to, str):
        raise ProtocolError('the body needs "to": a versionstamp, an ISO-8601 time or head')
    if path is not None and not isinstance(path, str):
        raise ProtocolError('"path" must be a string')
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise ProtocolError(f'"device" must be a device name: {DEVICE_ID_RULE}')
    version = tt.parse_version(to)
    store = request.app[HISTORY]
    session = f"{tt.REVERT_SESSION}/{request.app[SETTINGS].instance}"

    quotas = request.app[QUOTAS]

    async def commit(items: list[Append]) -> list[Appended]:
        # A revert is an update like an editor's: the same size limits and rate (it
        # used to skip them, so reverting back and forth grew a document past its limit).
        size_keys = [item.doc.key("bytes") for item in items]

        def stored_sizes(tr: ReadTransaction) -> list[int]:
            return [read_counter(raw) for raw in tr.get_many(size_keys)]

        for item, size in zip(items, await store.kv.read(stored_sizes), strict=True):
            quotas.check_update(tenant, len(item.update), size)
        for _ in items:
            wait = quotas.reserve_update(tenant, time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
        writer = request.app[WRITER]
        try:
            futures = [writer.submit(item) for item in items]
        except WriterClosed as exc:
            raise _Unavailable(str(exc)) from exc
        return list(await asyncio.gather(*futures))

    author: dict[str, Any] = {"user": principal.user, "device": device, "session": session}
    try:
        if path is not None:
            ref = await store.doc(tenant, project, path)
            done = [await tt.revert_doc(store, ref, version, commit=commit, **author)]
        else:
            done = await tt.revert_project(store, tenant, project, version, commit=commit, **author)
    except _Unavailable as exc:
        return error_response(503, "unavailable", str(exc))
    changed = [r.path for r in done if r.versionstamp is not None]
    log.info(
        "%s reverted %s/%s%s to %s: %d document(s) changed",
        printable(principal.user),
        tenant,
        project,
        printable(f"/{path}") if path else "",
        version,
        len(changed),
    )
    return web.json_response({"to": str(version), "reverted": [r.to_dict() for r in done]})


class _Unavailable(Exception):
    """The writer is draining: nothing was committed."""


def setup(app: web.Application) -> None:
    """Add the time-travel routes to ``app`` (before the read API's catch-all docs route)."""
    base = "/api/v1/{tenant}/{project}"
    app.router.add_get(base + "/history/{path:.+}", history)
    app.router.add_get(base + "/diff/{path:.+}", diff)
    app.router.add_get(base + "/blame/{path:.+}", blame)
    app.router.add_get(base + "/export", export)
    app.router.add_post(base + "/revert", revert)


__all__ = ["blame_json", "history_json", "setup", "tar_member"]
