"""Where the time-travel commands read and write: the same data from a server's REST API
(:class:`ApiBackend`) or straight from a store (:class:`StoreBackend`), behind the
:class:`Backend` protocol; :func:`open_backend` picks one from ``--server`` / ``--store``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from client.timetravel_errors import BadInput, Failed
from client.timetravel_files import _untar
from crdt.errors import PermissionDenied
from crdt.keys import check_name, normalise_path

if TYPE_CHECKING:  # imported where a command runs (see client.timetravel_cli)
    import aiohttp

    from client.remote import ServerURL
    from crdt import timetravel as tt
    from crdt.history import History


READ_TIMEOUT = 120.0
"""Seconds the server may go without sending a byte before a command gives up (exit 1)."""


def where(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``--server`` or ``--store``, else WEFT_SERVER or WEFT_STORE; BadInput if none or
    both (``weft conflicts`` shares it)."""
    server, store = args.server, args.store
    if server and store:
        raise BadInput("give either --server or --store, not both")
    if not server and not store:
        server, store = os.environ.get("WEFT_SERVER"), os.environ.get("WEFT_STORE")
        if server and store:
            raise BadInput("WEFT_SERVER and WEFT_STORE are both set: pass --server or --store")
    if not server and not store:
        raise BadInput("say where the project is: --server URL or --store URL")
    return server, store


@asynccontextmanager
async def open_backend(args: argparse.Namespace) -> AsyncIterator[Backend]:
    """The API or the store, checked before anything is read."""
    import aiohttp

    from client.remote import ServerURL, missing_flags
    from crdt.history import History
    from crdt.kv import open_engine

    server, store = where(args)
    missing = missing_flags(args, ("tenant", "project"))
    if missing is not None:
        raise BadInput(missing)
    tenant, project = check_name("tenant", args.tenant), check_name("project", args.project)
    if server:
        try:
            url = ServerURL.parse(server)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=READ_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield ApiBackend(http, url, tenant, project, args.token)
    else:
        assert store is not None
        check_store(store)
        async with open_engine(store) as kv:
            history = History(kv)
            await history.init()
            yield StoreBackend(history, tenant, project)


def check_store(url: str) -> None:
    """A SQLite store must exist: reading from a mistyped path must not create one."""
    if url.startswith("sqlite:///"):
        path = Path(url.split("?", 1)[0][len("sqlite:///") :])
        if not path.is_file():
            raise BadInput(f"no store at {path} (from --store {url})")


class Backend(Protocol):
    async def history(
        self, path: str, limit: int, since: tt.Version | None, until: tt.Version | None
    ) -> dict[str, Any]: ...

    async def show(self, path: str, at: tt.Version) -> dict[str, Any]: ...

    async def diff(self, path: str, old: tt.Version, new: tt.Version) -> dict[str, Any]: ...

    async def blame(self, path: str, at: tt.Version) -> dict[str, Any]: ...

    def restore(self, at: tt.Version, progress: Callable[[int], None]) -> AsyncIterator[Restored]:
        """Files as ``("file", path, data, vs)``, then ``("manifest", ...)`` once."""
        ...

    async def revert(
        self, path: str | None, to: tt.Version, user: str | None, device: str
    ) -> dict[str, Any]: ...


Restored = tuple[str, str, bytes, str]


class StoreBackend:
    """Straight from the store (an operator's view: no token, no server needed)."""

    def __init__(self, history: History, tenant: str, project: str) -> None:
        self.store, self.tenant, self.project = history, tenant, project

    async def _ref(self, path: str) -> Any:
        return await self.store.doc(self.tenant, self.project, path)

    async def history(
        self, path: str, limit: int, since: tt.Version | None, until: tt.Version | None
    ) -> dict[str, Any]:
        from crdt import timetravel as tt

        page = await tt.history_page(
            self.store, await self._ref(path), limit=limit, since=since, until=until
        )
        return page.to_dict()

    async def show(self, path: str, at: tt.Version) -> dict[str, Any]:
        from crdt import timetravel as tt

        found = await tt.doc_at(self.store, await self._ref(path), at)
        return {
            "path": found.path,
            "versionstamp": found.versionstamp.hex(),
            "text": found.text,
            "deleted": found.deleted,
        }

    async def diff(self, path: str, old: tt.Version, new: tt.Version) -> dict[str, Any]:
        from crdt import timetravel as tt

        ref = await self._ref(path)
        a, b = await tt.doc_at(self.store, ref, old), await tt.doc_at(self.store, ref, new)
        return {
            "path": ref.path,
            "from": a.versionstamp.hex(),
            "to": b.versionstamp.hex(),
            "diff": tt.unified_diff(ref.path, a, b),
        }

    async def blame(self, path: str, at: tt.Version) -> dict[str, Any]:
        from crdt import timetravel as tt

        return (await tt.blame(self.store, await self._ref(path), at)).to_dict()

    async def restore(
        self, at: tt.Version, progress: Callable[[int], None]
    ) -> AsyncIterator[Restored]:
        from crdt import timetravel as tt

        cut = await tt.cut_at(self.store, self.tenant, self.project, at)
        progress(await tt.documents_at(self.store, cut))
        entries = []
        async for file in tt.files(self.store, cut):
            entries.append(file.manifest_entry())
            yield "file", file.path, file.data, file.versionstamp.hex()
        body = json.dumps(tt.manifest(cut, entries), indent=2) + "\n"
        yield "manifest", tt.MANIFEST_NAME, body.encode(), cut.versionstamp.hex()

    async def revert(
        self, path: str | None, to: tt.Version, user: str | None, device: str
    ) -> dict[str, Any]:
        from crdt import timetravel as tt

        who = user or _login()
        if path is not None:
            ref = await self._ref(path)
            done = [await tt.revert_doc(self.store, ref, to, user=who, device=device)]
        else:
            done = await tt.revert_project(
                self.store, self.tenant, self.project, to, user=who, device=device
            )
        return {"to": str(to), "reverted": [r.to_dict() for r in done]}


class ApiBackend:
    """Through a server's REST API (``server/timetravel_api.py``, ``server/api.py``)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        server: ServerURL,
        tenant: str,
        project: str,
        token: str | None,
    ) -> None:
        from client.remote import auth_headers

        self.http, self.server, self.tenant, self.project = http, server, tenant, project
        self.headers = auth_headers(token)

    def _url(self, route: str, path: str | None = None) -> str:
        parts = [route, *normalise_path(path).split("/")] if path is not None else [route]
        url = self.server.api(self.tenant, self.project, *parts)
        return url

    async def _get(self, url: str, **params: str) -> Any:
        async with self.http.get(url, params=params, headers=self.headers) as response:
            return await _answer(response)

    async def history(
        self, path: str, limit: int, since: tt.Version | None, until: tt.Version | None
    ) -> dict[str, Any]:
        params = {"limit": str(limit)}
        if since is not None:
            params["since"] = since.label
        if until is not None:
            params["until"] = until.label
        result: dict[str, Any] = await self._get(self._url("history", path), **params)
        return result

    async def show(self, path: str, at: tt.Version) -> dict[str, Any]:
        params = {"format": "json"} if at.is_head else {"format": "json", "at": at.label}
        result: dict[str, Any] = await self._get(self._url("docs", path), **params)
        return result

    async def diff(self, path: str, old: tt.Version, new: tt.Version) -> dict[str, Any]:
        params = {"from": old.label, "to": new.label, "format": "json"}
        result: dict[str, Any] = await self._get(self._url("diff", path), **params)
        return result

    async def blame(self, path: str, at: tt.Version) -> dict[str, Any]:
        result: dict[str, Any] = await self._get(self._url("blame", path), at=at.label)
        return result

    async def restore(
        self, at: tt.Version, progress: Callable[[int], None]
    ) -> AsyncIterator[Restored]:
        from crdt import timetravel as tt

        url = self._url("export")
        async with self.http.get(url, params={"at": at.label}, headers=self.headers) as response:
            if response.status != 200:
                await _answer(response)
            total = response.headers.get("X-Weft-Documents", "")
            progress(int(total) if total.isdigit() else 0)
            vs = response.headers.get("X-Weft-Versionstamp", "")
            # The manifest is the export's last member: a member of its name before that
            # is a document of that name (stored before such documents were refused),
            # passed on as a file (the restore skips it).
            held: tuple[str, bytes] | None = None
            async for name, data in _untar(response.content):
                if held is not None:
                    yield "file", held[0], held[1], vs
                held = (name, data)
            if held is not None:
                kind = "manifest" if held[0] == tt.MANIFEST_NAME else "file"
                yield kind, held[0], held[1], vs

    async def revert(
        self, path: str | None, to: tt.Version, user: str | None, device: str
    ) -> dict[str, Any]:
        if user is not None:
            raise BadInput("--user is for --store: through a server, the token names the author")
        body: dict[str, Any] = {"to": to.label, "device": device}
        if path is not None:
            body["path"] = normalise_path(path)
        url = self._url("revert")
        async with self.http.post(url, json=body, headers=self.headers) as response:
            result: dict[str, Any] = await _answer(response)
            return result


async def _answer(response: aiohttp.ClientResponse) -> Any:
    """The JSON (or text) of a 2xx answer; weft's JSON errors become exceptions."""
    import aiohttp

    if response.status < 300:
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()
    try:
        error = (await response.json())["error"]
        message = f"{error['message']} ({response.status} {error['code']})"
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        message = f"the server answered {response.status} {response.reason}"
    if response.status in (400, 404, 413):
        raise BadInput(message)
    if response.status in (401, 403):
        raise PermissionDenied(message)
    raise Failed(message)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "weft"
