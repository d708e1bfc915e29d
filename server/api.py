"""The read API under ``/api/v1/{tenant}/{project}/`` and JSON errors for every route.

- ``GET /api/v1/{tenant}/{project}/docs``: ``{"tenant", "project", "complete": true,
  "docs": [{"path", "head", "updates", "size", "updated_ms", "updated"}]}`` (documents
  with at least one update, deleted ones included, by path; ``head`` is the last
  versionstamp in 24 hex digits; ``"deleted": true`` for a document known to be deleted
  at that head, see ``server.rooms``: absent, the document may be deleted or not). Its ETag is the project's change marker;
  ``?since=MARKER`` (an ETag read before, 36 hex digits) answers only the documents
  appended to after it, with ``"complete": false`` and ``"since"``, when the store can
  tell them (see ``crdt.changes``), else the whole list. It takes no other query
  parameter but ``token`` (another, e.g. ``?at=``, is a 400). Its 200 and its 304
  carry ``X-Weft-Conflicts: N``: how many times a conflict record of the project was
  made or resolved (0: never; ``crdt.conflict_store``), read in the list's own read.
  It is not part of the ETag (a new record alone still answers 304): a client that
  polls the list sees the number move, and reads the conflict list then.
- ``GET /api/v1/{tenant}/{project}/docs/{path}``: the document's text (root ``Y.Text``
  named ``content``) at head, or ``?at=VERSIONSTAMP`` (24 hex digits) or
  ``?at=ISO-8601-TIME`` (naive times are UTC). ``text/plain`` with the versionstamp in
  ``X-Weft-Versionstamp`` (and ``X-Weft-Deleted: true`` for a deleted document: the
  text is what it held); ``?format=json`` gives ``{"path", "versionstamp", "text",
  "deleted"}`` (``text``, the default, and ``json`` are the formats: another is a 400).
  A time in the future, or a versionstamp beyond the store's latest commit, is a 400,
  and so is another query parameter than ``at``, ``format`` and ``token``.

On every route a query parameter given twice (``?at=head&at=0``) is a 400 naming it.

Errors are ``{"error": {"code": "...", "message": "..."}}`` with status 400 (bad_path,
bad_request), 401 (unauthorized), 403 (forbidden), 404 (not_found), 429
(quota_exceeded), 500 (internal) or the status of an aiohttp HTTP error.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Container
from datetime import UTC, datetime

from aiohttp import web
from pycrdt import Map, Text

from crdt.changes import MARKER_LEN
from crdt.conflicts import COUNT_HEADER
from crdt.errors import BadPath, NotFound, PermissionDenied, ProtocolError, QuotaExceeded
from crdt.history import DocInfo, Replayed
from crdt.keys import check_name, check_url_utf8
from crdt.versions import HEAD_VERSION, check_committed, doc_version, parse_version
from server.appkeys import HISTORY
from server.auth import InvalidToken, require
from server.logsafe import printable

log = logging.getLogger("weft.access")
CONTENT = "content"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _status(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, BadPath):
        return 400, "bad_path"
    if isinstance(exc, ProtocolError | ValueError):
        return 400, "bad_request"
    if isinstance(exc, InvalidToken):
        return 401, "unauthorized"
    if isinstance(exc, PermissionDenied):
        return 403, "forbidden"
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, QuotaExceeded):
        return 429, "quota_exceeded"
    return 500, "internal"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn weft errors and aiohttp HTTP errors into JSON error bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        return error_response(exc.status, code, exc.text or exc.reason or "")
    except (BadPath, ProtocolError, PermissionDenied, NotFound, QuotaExceeded) as exc:
        status, code = _status(exc)
        log.info("%s %s: %d %s", request.method, printable(request.path), status, printable(exc))
        return error_response(status, code, str(exc))
    except Exception as exc:  # a request boundary: log with traceback, answer 500
        log.error("%s %s failed", request.method, printable(request.path), exc_info=True)
        return error_response(500, "internal", f"internal error: {type(exc).__name__}")


def _names(request: web.Request) -> tuple[str, str]:
    """The tenant and project of a REST route, once its whole URL path (a document path
    included) is known to be UTF-8 (a 400 ``bad_path`` otherwise): every route under
    ``/api/v1/{tenant}/{project}/`` starts here."""
    check_url_utf8(request.rel_url.raw_path)
    return (
        check_name("tenant", request.match_info["tenant"]),
        check_name("project", request.match_info["project"]),
    )


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


LIST_PARAMS = ("since", "token")


def refuse_unknown_params(
    request: web.Request, takes: tuple[str, ...], what: str, hint: str
) -> None:
    """A 400 naming each query parameter ``what`` does not take (e.g. a mistyped
    ``?At=``: said, not answered as if nothing had been asked); ``hint`` says what it
    takes instead. A parameter given twice is a 400 too (:func:`refuse_repeated_params`)."""
    unknown = sorted(set(request.query) - set(takes))
    if unknown:
        names = ", ".join(repr(printable(k)[:40]) for k in unknown)
        raise ProtocolError(f"{what} takes no {names} parameter: {hint}")
    refuse_repeated_params(request, what)


def refuse_repeated_params(request: web.Request, what: str) -> None:
    """A 400 naming each query parameter given more than once (``?at=head&at=0``): which
    one was meant is not for the server to guess (it took the first, silently)."""
    counts = Counter(k for k, _ in request.query.items())  # keys() says each key once
    repeated = sorted(k for k, n in counts.items() if n > 1)
    if repeated:
        names = ", ".join(repr(printable(k)[:40]) for k in repeated)
        raise ProtocolError(f"{what} takes each parameter once; given more than once: {names}")


async def list_docs(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    refuse_unknown_params(  # e.g. ?at=, which this list does not take: not list head
        request,
        LIST_PARAMS,
        "the document list",
        "it lists every document at head (deleted ones too; docs/{path} says whether one "
        "is deleted); for the project at a version, use export?at= or weft restore --at",
    )
    # A conditional list: the project's change marker is its ETag, and a list asked for
    # again with it (If-None-Match) while nothing was appended is a 304 with no body (a
    # device polls the list every second; 2,000 documents made 313 KB a poll). Asked
    # with ?since= an older one, only what changed after it (each change cost every
    # polling device the whole list).
    known = _etag_markers(request)
    since = _since(request)
    listed = await request.app[HISTORY].docs_since(tenant, project, since, known)
    marker, infos = listed.marker, listed.infos
    headers = {"ETag": f'"{marker.hex()}"'} if marker is not None else {}
    # Not part of the ETag: a new conflict record leaves the list as it was (a 304).
    headers[COUNT_HEADER] = str(listed.conflicts)
    if infos is None:
        return web.Response(status=304, headers=headers)
    docs = [_doc_entry(info) for info in infos]
    body: dict[str, object] = {"tenant": tenant, "project": project, "complete": listed.complete}
    if not listed.complete and since is not None:
        body["since"] = since.hex()
    body["docs"] = docs
    return web.json_response(body, headers=headers)


def _doc_entry(info: DocInfo) -> dict[str, object]:
    """One document of the list. ``"deleted": true`` only when the document is known to
    be deleted at the head listed (``DocInfo.deleted``); absent, it may be either."""
    entry: dict[str, object] = {
        "path": info.path,
        "head": info.head.hex() if info.head else None,
        "updates": info.count,
        "size": info.size,
        "updated_ms": info.updated_ms,
        "updated": _iso(info.updated_ms),
    }
    if info.deleted:
        entry["deleted"] = True
    return entry


def _since(request: web.Request) -> bytes | None:
    """``?since=``: a change marker (the list's ETag, quotes and ``W/`` allowed, as a
    client may hand the header on); a 400 when it is not 36 hex digits. One of another
    store, of before a restore, or unknown is well formed: the whole list answers it."""
    value = request.query.get("since")
    if value is None:
        return None
    text = value.removeprefix("W/").strip('"')
    if len(text) != 2 * MARKER_LEN or not all(c in _HEX_DIGITS for c in text):
        raise ProtocolError(
            f"?since= must be a change marker, the document list's ETag ({2 * MARKER_LEN} "
            f"hex digits), not {printable(value)[:60]!r}"
        )
    return bytes.fromhex(text)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class _Every:
    """``If-None-Match: *``: any marker the project has."""

    def __contains__(self, _marker: object) -> bool:
        return True


def _etag_markers(request: web.Request) -> Container[bytes]:
    """The change markers an ``If-None-Match`` names (every ETag of it that is one; all
    of them for ``*``). Weak ones count (W/"..."): If-None-Match compares weakly (RFC
    9110, 13.1.2), and a proxy that compresses the list (nginx with gzip) hands its
    clients the ETag made weak, so refusing those made every poll through it read the
    whole list."""
    markers: set[bytes] = set()
    for etag in request.if_none_match or ():
        if etag.value == "*" and not etag.is_weak:
            return _Every()
        try:
            markers.add(bytes.fromhex(etag.value))
        except ValueError:
            continue
    return markers


FORMATS = ("text", "json")
"""What ``?format=`` may be on the routes that take it (``text``: the default)."""


def response_format(request: web.Request) -> str:
    """``?format=``: ``text`` (the default) or ``json``; anything else is a 400."""
    value = request.query.get("format", "text")
    if value not in FORMATS:
        raise ProtocolError(f"?format= must be one of {', '.join(FORMATS)}, not {value[:20]!r}")
    return value


DOC_PARAMS = ("at", "format", "token")
"""The query parameters ``docs/{path}`` takes (another is a 400, as on the list)."""


async def get_doc(request: web.Request) -> web.Response:
    tenant, project = _names(request)
    await require(request, tenant, project, "read")
    refuse_unknown_params(request, DOC_PARAMS, "a document", "it takes at, format and token")
    fmt = response_format(request)
    history = request.app[HISTORY]
    ref = await history.doc(tenant, project, request.match_info["path"])
    at = request.query.get("at")
    # A malformed value, a time in the future or a versionstamp beyond the store's
    # latest commit is a 400.
    version = HEAD_VERSION if at is None else parse_version(at)
    replayed: Replayed
    if version.stamp is not None:
        await check_committed(history, version)
        replayed = await history.replay(ref, version.stamp)
    elif version.ms is not None:
        replayed = await history.replay_at_time(ref, version.ms)
    else:
        replayed = await history.replay(ref)
    if replayed.versionstamp is None:
        if at is not None:  # as the CLI says it: "did not exist at ... (its first version ...)"
            await doc_version(history, ref, version)
        when = f" at {at}" if at else ""
        raise NotFound(f"no document {ref.path!r} in {tenant}/{project}{when}")
    text = str(replayed.doc.get(CONTENT, type=Text))
    vs = replayed.versionstamp.hex()
    deleted = replayed.doc.get("weft", type=Map).get("deleted") is True
    if fmt == "json":
        return web.json_response(
            {"path": ref.path, "versionstamp": vs, "text": text, "deleted": deleted}
        )
    headers = {"X-Weft-Versionstamp": vs}
    if deleted:  # the text it held (a deletion leaves it): say it is deleted
        headers["X-Weft-Deleted"] = "true"
    return web.Response(text=text, headers=headers)


def setup(app: web.Application) -> None:
    """Add the read API routes."""
    app.router.add_get("/api/v1/{tenant}/{project}/docs", list_docs)
    app.router.add_get("/api/v1/{tenant}/{project}/docs/{path:.+}", get_doc)
