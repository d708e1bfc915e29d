"""Where a weft server is and the few REST calls a device makes to it.

``--server`` may be given as ``ws://HOST:PORT`` (or ``wss://``, ``http://``,
``https://``, with or without a trailing ``/ws``); rooms are
``ws://HOST:PORT/ws/{tenant}/{project}/{path}`` and the REST API is under
``http://HOST:PORT/api/v1/{tenant}/{project}/``. Tokens travel in the
``Authorization: Bearer`` header, never in a URL that could end up in a log.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt

from crdt.conflicts import COUNT_HEADER, MAX_PAGE
from crdt.errors import NotFound, PermissionDenied, WeftError
from crdt.keys import check_name
from crdt.versionstamp import Versionstamp

REST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2)
_SCHEMES = {
    "ws": ("ws", "http"),
    "wss": ("wss", "https"),
    "http": ("ws", "http"),
    "https": ("wss", "https"),
}


class ApiError(WeftError):
    """The server answered a REST call with an error (``status``, ``code``, ``message``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class ApiDenied(ApiError, PermissionDenied):
    """401 or 403: the token is missing, invalid, or does not allow this."""


class ApiNotFound(ApiError, NotFound):
    """404."""


def missing_flags(args: object, names: tuple[str, ...]) -> str | None:
    """What a command says when some of the settings ``names`` (``--NAME`` or
    ``WEFT_NAME``) are not given, one wording for every command; None when all are."""
    missing = [name for name in names if not getattr(args, name)]
    if not missing:
        return None
    flags = _listed([f"--{name}" for name in missing])
    variables = _listed([f"WEFT_{name.upper()}" for name in missing])
    return f"missing {flags} (or {variables})"


def _listed(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


@dataclass(frozen=True, slots=True)
class ServerURL:
    """A server's WebSocket and HTTP base URLs (no trailing slash, no ``/ws``)."""

    ws: str
    http: str

    @classmethod
    def parse(cls, url: str) -> ServerURL:
        """Accept ``ws://``, ``wss://``, ``http://``, ``https://``; ValueError otherwise."""
        parts = urlsplit(url.strip())
        if parts.scheme not in _SCHEMES or not parts.netloc:
            raise ValueError(
                f"server URL must look like ws://HOST:PORT (or wss://, http://, https://), not {url!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"server URL must not carry a query or fragment: {url!r}")
        path = parts.path.rstrip("/")
        if path.endswith("/ws"):
            path = path[: -len("/ws")]
        ws_scheme, http_scheme = _SCHEMES[parts.scheme]
        return cls(f"{ws_scheme}://{parts.netloc}{path}", f"{http_scheme}://{parts.netloc}{path}")

    def room(self, tenant: str, project: str, path: str) -> str:
        return f"{self.ws}/ws/{quote(tenant)}/{quote(project)}/{quote(path, safe='/')}"

    def api(self, tenant: str, project: str, *parts: str) -> str:
        tail = "/".join(quote(p, safe="") for p in parts)
        return f"{self.http}/api/v1/{quote(tenant)}/{quote(project)}/{tail}"

    def __str__(self) -> str:
        return self.ws


NO_TOKEN = "the server needs a token: pass --token or set WEFT_TOKEN"
"""What the commands say for a 401 when no token was given (the server's own message
names the HTTP ways, ``?token=`` and ``Authorization: Bearer``)."""


def unreachable(server: str, exc: BaseException) -> str:
    """``cannot reach the server at URL: why``, in plain words (aiohttp's own message
    reads "Cannot connect to host h:p ssl:default [Connect call failed ...]")."""
    cause = getattr(exc, "os_error", None) or exc
    if isinstance(cause, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(cause, socket.gaierror):
        why = "unknown host"
    elif isinstance(cause, TimeoutError):
        why = "no answer (timed out)"
    elif isinstance(cause, OSError) and cause.strerror:
        why = cause.strerror[:1].lower() + cause.strerror[1:]
    else:
        why = str(cause) or type(cause).__name__
    return f"cannot reach the server at {server}: {why}"


def next_after(body: dict[str, Any], after: str | None) -> str | None:
    """The ``after`` of the next page of a conflict list whose page after ``after`` was
    ``body``: None when there is no more, as from a server before pages (it sends no
    ``next_after``). One that is not a conflict id after ``after`` is a ValueError
    (following it could go round for ever)."""
    found = body.get("next_after")
    if found is None:
        return None
    try:
        cid = Versionstamp.from_hex(found if isinstance(found, str) else "").hex()
    except ValueError:
        raise ValueError(
            f"the conflict list's next_after is not a conflict id: {found!r}"
        ) from None
    if after is not None and cid <= after:
        raise ValueError(f"the conflict list's next_after {found!r} is not after {after!r}")
    return cid


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class Api:
    """The REST calls of one device for one project."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        server: ServerURL,
        tenant: str,
        project: str,
        token: str | None = None,
    ) -> None:
        self.http = http
        self.server = server
        self.tenant = check_name("tenant", tenant)
        self.project = check_name("project", project)
        self.headers = auth_headers(token)
        # The heads last read and the documents listed deleted, with the list's ETag
        self._heads: tuple[str, dict[str, Versionstamp | None], dict[str, Versionstamp]] | None
        self._heads = None
        # The documents the last list said deleted (``"deleted": true``), each with the
        # head it was listed deleted at; a document not in it may be deleted or not.
        self.gone: dict[str, Versionstamp] = {}
        self._deltas = True  # whether to ask for what changed since (a server may not know)
        # The conflict count the last answer of the list said (None: it said none, as a
        # server from before X-Weft-Conflicts)
        self.conflicts: int | None = None

    async def healthy(self) -> bool:
        """Whether the server answers ``/healthz`` with 200 (False when draining/down)."""
        try:
            async with self.http.get(
                f"{self.server.http}/healthz", timeout=PROBE_TIMEOUT
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def heads(self) -> dict[str, Versionstamp | None]:
        """Every document of the project with its head versionstamp. Asked again with
        the list's ETag: while nothing was appended to the project the server answers
        304, with no body, and the heads read last time are the answer (a copy). Asked
        with ``?since=`` that ETag too: the server answers only the documents changed
        since (``"complete": false``), merged into the heads read last time (documents
        never leave the list), or the whole list when it cannot tell them. A server
        before ``?since=`` refuses it (a 400 naming it): the list is then asked whole,
        and from then on without it; after another 400 it is asked whole once. The
        answer's conflict count (200 or 304) is kept in ``conflicts``, and the documents
        it says are deleted in ``gone``."""
        held = self._heads
        headers = {"If-None-Match": held[0]} if held is not None else {}
        since = _marker(held[0]) if held is not None and self._deltas else None
        url = self.server.api(self.tenant, self.project, "docs")
        try:
            body, etag = await self._get_unless(url, headers, since)
        except ApiError as exc:
            if since is None or exc.status != 400:
                raise
            # A server before ?since= names it in its 400: never sent it again. Another
            # 400 (a proxy's, say) costs this poll the whole list, not every later one.
            self._deltas = not _refuses_since(exc)
            body, etag = await self._get_unless(url, headers, None)
        if body is None and held is not None:
            self.gone = dict(held[2])
            return dict(held[1])
        body = body or {}
        docs = body.get("docs", [])
        heads = {
            str(d["path"]): Versionstamp.from_hex(d["head"]) if d.get("head") else None
            for d in docs
        }
        gone = {
            path: head
            for d in docs
            if d.get("deleted") is True and (head := heads[path := str(d["path"])]) is not None
        }
        if body.get("complete") is False:
            if held is None or since is None or body.get("since") != since:
                self._heads = None  # the next poll reads the whole list
                raise ApiError(200, "bad_response", "a partial document list for no ETag of ours")
            gone = {p: vs for p, vs in held[2].items() if p not in heads} | gone
            heads = held[1] | heads
        self._heads = (etag, dict(heads), dict(gone)) if etag else None
        self.gone = gone
        return heads

    async def conflict_pages(
        self, status: str | None = None, device: str | None = None, side: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The project's conflict records (``status``: only ``open`` or ``resolved``
        ones; ``device``: only those whose ``side`` names it, ``ours``, ``theirs`` or
        ``either``, the server's default ``ours``: those said to it live), a page at a
        time, in id order, following ``next_after`` to the end (see :func:`next_after`).
        The first request names no ``limit`` (a server before pages refuses the
        parameter, and sends the whole list); the next ones ask ``MAX_PAGE`` records a
        page."""
        given = (("status", status), ("device", device), ("side", side))
        params = {k: v for k, v in given if v is not None}
        after = None
        while True:
            body = await self._call(
                "GET", self.server.api(self.tenant, self.project, "conflicts"), params=params
            )
            records = body.get("conflicts")
            if not isinstance(records, list):
                raise ApiError(200, "bad_response", "the conflict list holds no list")
            yield [r for r in records if isinstance(r, dict)]
            try:
                after = next_after(body, after)
            except ValueError as exc:
                raise ApiError(200, "bad_response", str(exc)) from None
            if after is None:
                return
            params |= {"after": after, "limit": str(MAX_PAGE)}

    async def report_conflict(self, path: str, text: str, device: str) -> dict[str, Any]:
        """Record a local file that met a different document with no shared history."""
        body = await self._call(
            "POST",
            self.server.api(self.tenant, self.project, "conflicts"),
            json={"path": path, "text": text, "device": device},
        )
        conflict: dict[str, Any] = body["conflict"]
        return conflict

    def conflict_url(self, cid: str) -> str:
        return self.server.api(self.tenant, self.project, "conflicts", cid)

    async def _get_unless(
        self, url: str, headers: dict[str, str], since: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """GET ``url`` with ``headers`` (If-None-Match) and ``?since=``: the body, or
        None for a 304; and the answer's ETag. Its conflict count (``COUNT_HEADER``) is
        kept in ``conflicts``."""
        params = {"since": since} if since is not None else {}
        async with self.http.get(
            url, headers=self.headers | headers, params=params, timeout=REST_TIMEOUT
        ) as response:
            etag = response.headers.get("ETag")
            body = None if response.status == 304 else await _body(response, "GET", url)
            self.conflicts = _count(response.headers.get(COUNT_HEADER))
            return body, etag

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        async with self.http.request(
            method, url, headers=self.headers, timeout=REST_TIMEOUT, **kwargs
        ) as response:
            return await _body(response, method, url)


def _count(value: str | None) -> int | None:
    """A conflict count header's number (None: none, or not a number)."""
    if value is None or not (value.isascii() and value.isdecimal()):
        return None
    return int(value)


def _marker(etag: str) -> str | None:
    """The change marker an ETag of the document list names (36 hex digits, in quotes,
    maybe made weak by a proxy), or None for another ETag (one a proxy changed so)."""
    text = etag.removeprefix("W/").strip('"')
    return text if len(text) == 36 and all(c in _HEX for c in text) else None


_HEX = frozenset("0123456789abcdef")


def _refuses_since(error: ApiError) -> bool:
    """Whether a 400 is a server's refusal of ``?since=`` (one from before it says "the
    document list takes no 'since' parameter"), not some other 400 (a proxy's; the
    name in quotes, as a project named since-2020 is in the URL a message may hold)."""
    return "'since'" in error.message


async def _body(response: aiohttp.ClientResponse, method: str, url: str) -> dict[str, Any]:
    """A REST answer's JSON object; the error it says as an ApiError (ApiDenied for 401
    and 403, ApiNotFound for 404)."""
    try:
        body = await response.json(content_type=None)
    except ValueError:
        body = None
    if response.status >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code = str(error.get("code", response.reason or "error"))
        message = str(error.get("message", "")) or f"{method} {url} failed"
        kind = ApiError
        if response.status in (401, 403):
            kind = ApiDenied
        elif response.status == 404:
            kind = ApiNotFound
        raise kind(response.status, code, message)
    if not isinstance(body, dict):
        raise ApiError(response.status, "bad_response", f"{method} {url}: not JSON")
    return body


def token_scope(token: str | None) -> str | None:
    """The scope a token claims (unverified: the server decides; this only informs)."""
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    scope = claims.get("scope")
    if not isinstance(scope, str):
        return None
    named = set(scope.split())
    for level in ("admin", "write", "read"):
        if level in named:
            return level
    return None
