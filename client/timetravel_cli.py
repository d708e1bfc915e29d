"""Time travel from the command line: ``weft history | show | diff | blame | restore | revert``.

Every command reads a project either through a server's REST API (``--server URL
--tenant T --project P [--token TOKEN]``) or straight from a store (``--store URL
--tenant T --project P``, for operators), and prints data as JSON with ``--json``.
Flags also read ``WEFT_SERVER``, ``WEFT_STORE``, ``WEFT_TENANT``, ``WEFT_PROJECT`` and
``WEFT_TOKEN`` (a flag wins; ``--server`` and ``--store`` together are refused).

A version (``--at``, ``--since``, ``--until``, ``--from``, ``--to``) is a versionstamp
(24 hex digits; not beyond the store's latest commit), an ISO-8601 time (naive: UTC; not
in the future) or ``head``.

Exit codes: 0 ok, 1 failure (server unreachable, refused token, store error), 2 bad input
(malformed version, unknown path, a version before the document existed, a non-empty
``--out`` without ``--force``): a message on stderr, nothing written.

``weft <command> --help`` stays fast: aiohttp, rich, pycrdt and the history are imported
by the code that runs a command, not by this module (tests/unit/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import stat
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crdt.errors import BadPath, NotFound, PermissionDenied, ProtocolError, WeftError
from crdt.keys import DEVICE_ID, DEVICE_ID_RULE, check_name, normalise_path, restore_refusal
from crdt.logsafe import printable

if TYPE_CHECKING:  # imported where a command runs (see the module docstring)
    import aiohttp
    from rich.console import Console

    from client.remote import ServerURL
    from crdt import timetravel as tt
    from crdt.history import History

COMMANDS = ("history", "show", "diff", "blame", "restore", "revert")
HEAD = "head"  # crdt.timetravel.HEAD, which loads pycrdt (a test checks they are equal)
FLAG_PAGE = 500  # versions read per request when looking back for the deleted flag


class BadInput(WeftError, ValueError):
    """The user's input is wrong (exit 2)."""


class Failed(WeftError):
    """The operation could not be done (exit 1)."""


# --- arguments ----------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("where the project lives (one of --server or --store)")
    g.add_argument("--server", help="server URL, http(s):// or ws(s):// (WEFT_SERVER)")
    g.add_argument("--store", help="a store URL, e.g. sqlite:///weft-data/weft.db (WEFT_STORE)")
    g.add_argument("--tenant", default=os.environ.get("WEFT_TENANT"), help="(WEFT_TENANT)")
    g.add_argument("--project", default=os.environ.get("WEFT_PROJECT"), help="(WEFT_PROJECT)")
    g.add_argument(
        "--token", default=os.environ.get("WEFT_TOKEN"), help="with --server (WEFT_TOKEN)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``history``, ``show``, ``diff``, ``blame``, ``restore`` and ``revert``."""
    common = [_common()]
    fmt = argparse.RawDescriptionHelpFormatter
    version = "a versionstamp (24 hex digits), an ISO-8601 time or head"

    p = sub.add_parser(
        "history", parents=common, formatter_class=fmt, help="list a document's versions"
    )
    p.add_argument("path", metavar="PATH", type=doc_path)
    p.add_argument("--limit", type=int, default=50, help="versions per page (default 50)")
    p.add_argument("--since", help=f"only versions after this one: {version}")
    p.add_argument("--until", help=f"only versions up to this one: {version}")
    p.set_defaults(handler=_handler(run_history))

    p = sub.add_parser("show", parents=common, help="print a document as it was")
    p.add_argument("path", metavar="PATH", type=doc_path)
    p.add_argument("--at", default=HEAD, help=f"{version} (default head)")
    p.set_defaults(handler=_handler(run_show))

    p = sub.add_parser("diff", parents=common, help="unified diff between two versions")
    p.add_argument("path", metavar="PATH", type=doc_path)
    p.add_argument("--from", dest="old", required=True, help=version)
    p.add_argument("--to", dest="new", default=HEAD, help=f"{version} (default head)")
    p.set_defaults(handler=_handler(run_diff))

    p = sub.add_parser("blame", parents=common, help="who wrote each line")
    p.add_argument("path", metavar="PATH", type=doc_path)
    p.add_argument("--at", default=HEAD, help=f"{version} (default head)")
    p.set_defaults(handler=_handler(run_blame))

    p = sub.add_parser(
        "restore",
        parents=common,
        help="write the whole project as it was into a folder",
        description="Write every document as it was at --at into DIR, with a manifest "
        "(.weft-manifest.json) each written file is checked against. A file that cannot be "
        "written (a file and a folder of one name then: documents 'a' and 'a/b') is named "
        "and left out, the rest is written, and it exits 1. A document under .git/ or "
        ".weft/ (any case), or named .weft-manifest.json, is never written: it is skipped "
        "with a warning.",
    )
    p.add_argument("--at", required=True, help=version)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the folder to write")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    p.set_defaults(handler=_handler(run_restore))

    p = sub.add_parser(
        "revert",
        parents=common,
        help="make a document (or, without PATH, the project) what it was",
        description="A new update (history is never rewritten) that makes PATH's content "
        "what it was at --to; without PATH every document of the project (documents "
        "created since are deleted, deleted ones restored). Undo it with another revert.",
    )
    p.add_argument("path", metavar="PATH", nargs="?", type=doc_path)
    p.add_argument("--to", required=True, help=version)
    p.add_argument("--user", help="author, with --store (default: your login name)")
    p.add_argument(
        "--device",
        type=_device,
        default=_default_device(),
        help=f"device name ({DEVICE_ID_RULE}; default: this host's name)",
    )
    p.set_defaults(handler=_handler(run_revert))


Run = Callable[[argparse.Namespace, "Backend", "Console"], Coroutine[Any, Any, int]]


def _handler(run: Run) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        import asyncio

        import aiohttp
        from rich.console import Console

        err = Console(stderr=True, highlight=False, soft_wrap=True)
        name = f"weft {args.command}"
        try:
            return asyncio.run(_with_backend(args, run, err))
        except BadInput as exc:
            err.print(f"{name}: {exc}", markup=False)
            return 2
        except (ProtocolError, BadPath, NotFound) as exc:  # bad versions, paths, names
            err.print(f"{name}: {exc}", markup=False)
            return 2
        except aiohttp.ClientConnectorError as exc:
            from client.remote import unreachable

            server = args.server or os.environ.get("WEFT_SERVER", "")
            err.print(f"{name}: {unreachable(server, exc)}", markup=False)
            return 1
        except BrokenPipeError:
            raise  # the reader went away (`| head`): main() ends quietly
        except PermissionDenied as exc:
            from client.remote import NO_TOKEN

            err.print(f"{name}: {exc if args.token or args.store else NO_TOKEN}", markup=False)
            return 1
        except (Failed, WeftError, OSError, aiohttp.ClientError, TimeoutError) as exc:
            err.print(f"{name}: {exc or type(exc).__name__}", markup=False)
            return 1

    return handle


async def _with_backend(args: argparse.Namespace, run: Run, err: Console) -> int:
    async with open_backend(args) as backend:
        return await run(args, backend, err)


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

    from client.remote import ServerURL
    from crdt.history import History
    from crdt.kv import open_engine

    server, store = where(args)
    missing = [f"--{n}" for n in ("tenant", "project") if not getattr(args, n)]
    if missing:
        raise BadInput(f"missing {' and '.join(missing)}")
    tenant, project = check_name("tenant", args.tenant), check_name("project", args.project)
    if server:
        try:
            url = ServerURL.parse(server)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)
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


def _version(text: str | None) -> tt.Version | None:
    from crdt import timetravel as tt

    return None if text is None else tt.parse_version(text)


# --- backends: the same data from the API or from the store -------------------------------


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
        progress(len(cut.paths))
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


async def _untar(stream: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """Regular files of a tar stream, one at a time (PAX headers for long names)."""
    pending_name: str | None = None
    while True:
        header = await _read_exactly(stream, 512)
        if header is None or header == b"\0" * 512:
            return
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise Failed(f"the export is not a tar stream: {exc}") from None
        data = await _read_exactly(stream, info.size + (-info.size % 512))
        if data is None:
            raise Failed("the export stream ended in the middle of a file")
        data = data[: info.size]
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            pending_name = _pax_path(data) or pending_name
            continue
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise Failed(f"the export holds a non-file member {info.name!r}")
        yield pending_name or info.name, data
        pending_name = None


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a PAX extended header (``LEN key=value\\n`` records)."""
    pos = 0
    try:
        while pos < len(data):
            length = int(data[pos : data.index(b" ", pos)])
            if length <= 0:
                raise ValueError("empty record")
            record = data[pos : pos + length]
            key, _, value = record[record.index(b" ") + 1 : -1].partition(b"=")
            if key == b"path":
                return value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError as exc:
        raise Failed(f"the export has a malformed tar header: {exc}") from None
    return None


async def _read_exactly(stream: aiohttp.StreamReader, n: int) -> bytes | None:
    import asyncio

    try:
        return await stream.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise Failed("the export stream ended in the middle of a file") from None
        return None


# --- commands ------------------------------------------------------------------------------


def _deleted_notes(
    versions: list[dict[str, Any]], complete: bool, before: bool | None = None
) -> list[str]:
    """Per version (newest first) what it did to the document's deleted flag: "deleted",
    "created" (the first version, unless it deletes), "restored" (cleared
    after a delete, or after versions not listed here), "" (did not change it).
    ``complete``: the listing reaches back to the document's first version; ``before``:
    the flag in force before the listing (set by the newest older version that set it)."""
    notes: list[str] = []
    for n, v in enumerate(reversed(versions)):  # ``before``: the flag before version n
        flag = v["deleted"]
        if n == 0 and complete and flag is not True:
            note = "created"  # also a document that never had the flag (a plain Yjs client's)
        elif flag is True:
            note = "" if before is True else "deleted"
        elif flag is False:
            if before is True:
                note = "restored"
            elif n == 0 and complete:
                note = "created"
            elif before is None and not complete:  # set before the listing starts: most
                note = "restored"  # likely a delete (a new document's first version clears it)
            else:
                note = ""  # it was clear already
        else:
            note = ""
        notes.append(note)
        if flag is not None:
            before = flag
    return notes[::-1]


async def _flag_before(
    backend: Backend, path: str, until: tt.Version | None
) -> tuple[bool, bool | None]:
    """(no version at or before ``until``, the deleted flag in force at ``until``).

    ``until`` is just before the oldest version listed (not --since: with --limit the
    listing ends later). Read backwards page by page to the newest version that set the
    flag: the version just before may be a plain edit that leaves it (None), and guessing
    from that labelled a later clear "restored" where the full list says "". Back to the
    first version without one: the flag was never set, the document never deleted."""
    first = True
    while until is not None:
        page = await backend.history(path, FLAG_PAGE, None, until)
        if first and not page["versions"]:
            return True, None
        first = False
        for v in page["versions"]:
            if v["deleted"] is not None:
                return False, v["deleted"]
        until = _version(page["next_until"])
    return False, False


async def run_history(args: argparse.Namespace, backend: Backend, err: Console) -> int:
    if not 1 <= args.limit <= 10_000:
        raise BadInput("--limit must be between 1 and 10000")
    since = _version(args.since)
    page = await backend.history(args.path, args.limit, since, _version(args.until))
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    complete, before = True, None
    if page["versions"] and (page["next_until"] or since is not None):
        # Versions older than the oldest listed: at or before next_until (--limit), else at
        # or before --since. The labels must not depend on where the listing starts.
        until = _version(page["next_until"]) if page["next_until"] else since
        complete, before = await _flag_before(backend, args.path, until)
    notes = _deleted_notes(page["versions"], complete, before)
    for v, note in zip(page["versions"], notes, strict=True):
        note += (" revert" if note else "revert") if v["revert"] else ""
        print(
            f"{v['versionstamp']}  {v['time']}  {printable(v['user']):<12} "
            f"{printable(v['device']):<14} "
            f"{v['size']:>7} B  {note}".rstrip()
        )
    if page["next_until"]:
        err.print(f"(more: --until {page['next_until']})", markup=False)
    return 0


async def run_show(args: argparse.Namespace, backend: Backend, err: Console) -> int:
    from crdt import timetravel as tt

    found = await backend.show(args.path, tt.parse_version(args.at))
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        if found.get("deleted"):  # a deletion keeps the text, unless it was emptied
            held = "below is the text it held" if found["text"] else "it held no text"
            err.print(
                f"({found['path']} is deleted at {found['versionstamp']}; {held})",
                markup=False,
            )
        sys.stdout.write(found["text"])
        sys.stdout.flush()
    return 0


async def run_diff(args: argparse.Namespace, backend: Backend, err: Console) -> int:
    from crdt import timetravel as tt

    old, new = tt.parse_version(args.old), tt.parse_version(args.new)
    found = await backend.diff(args.path, old, new)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        sys.stdout.write(found["diff"])
    return 0


async def run_blame(args: argparse.Namespace, backend: Backend, err: Console) -> int:
    from crdt import timetravel as tt

    found = await backend.blame(args.path, tt.parse_version(args.at))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    width = len(str(len(found["lines"])))
    out = []
    for line in found["lines"]:
        if line["versionstamp"] is None:
            who = f"{'?' * 24} ({'unknown':<12} {'':<14} {'':<29})"
        else:
            user, device = printable(line["user"]), printable(line["device"])
            who = f"{line['versionstamp']} ({user:<12} {device:<14} {line['time']})"
        out.append(f"{who} {line['line']:>{width}}) {line['text']}\n")
    sys.stdout.write("".join(out))
    return 0


async def run_restore(args: argparse.Namespace, backend: Backend, err: Console) -> int:
    from blake3 import blake3
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crdt import timetravel as tt

    out: Path = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise BadInput(f"--out {out} is not empty (use --force to write into it)")
    at = tt.parse_version(args.at)
    columns = (
        TextColumn("restoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[path]}"),
        TimeElapsedColumn(),
    )  # fmt: skip
    written: dict[str, str] = {}
    not_written: dict[str, str] = {}  # a file and a folder of one name at that time...
    skipped: dict[str, str] = {}  # documents never written into a folder (see below)
    manifest: dict[str, Any] | None = None
    folder = Folder(out)
    quiet = args.json or not err.is_terminal  # a bar only where a person watches
    with Progress(*columns, console=err, transient=True, disable=quiet) as bar:
        task = bar.add_task("restore", total=None, path="")
        async for kind, name, data, _vs in backend.restore(at, lambda n: bar.update(task, total=n)):
            if kind == "manifest":
                manifest = json.loads(data)
                folder.write(name, data)
                continue
            why = restore_refusal(name)
            if why is not None:  # .git/config could run a command in a git checkout
                skipped[name] = f"skipped {printable(name)}: {why}"
                err.print(f"warning: {skipped[name]}", markup=False)
                continue
            try:
                folder.write(name, data)
            except Failed as exc:  # the others are still written
                not_written[name] = str(exc)
                continue
            written[name] = blake3(data).hexdigest()
            bar.update(task, advance=1, path=name)
    if manifest is None:
        raise Failed("the restore ended without its manifest: the output is incomplete")
    left_out = not_written.keys() | skipped.keys()
    listed = {f["path"]: f["blake3"] for f in manifest["files"] if f["path"] not in left_out}
    if listed != written:
        raise Failed("the files written do not match the manifest: the output is incomplete")
    summary = {"out": str(out), "versionstamp": manifest["versionstamp"], "files": len(written)}
    if args.json:
        extra = {"not_written": not_written, "skipped": skipped, "manifest": manifest}
        print(json.dumps({**summary, **extra}, indent=2))
    else:
        err.print(
            f"restored {len(written)} files of {manifest['tenant']}/{manifest['project']} at "
            f"{manifest['versionstamp']} into {out} (manifest: {tt.MANIFEST_NAME})"
            + (f"; {len(skipped)} skipped (see the warnings above)" if skipped else "")
            + (f"; {len(not_written)} file(s) NOT written:" if not_written else ""),
            markup=False,
        )
        for why in not_written.values():
            err.print(f"  {why}", markup=False)
    return 1 if not_written else 0


class Folder:
    """Where a restore writes: every file inside ``root``, no symlink or file followed on
    the way (each folder is checked once), a file that exists replaced atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready: set[str] = set()

    def write(self, name: str, data: bytes) -> None:
        try:
            rel = normalise_path(name)
        except BadPath as exc:
            raise Failed(f"refusing to write {name!r}: {exc}") from None
        parts = rel.split("/")
        folder = ""
        for part in ["", *parts[:-1]]:
            folder = f"{folder}/{part}" if folder else part
            if folder not in self._ready:
                self._folder(self.root / folder, rel)
                self._ready.add(folder)
        target = self.root / rel
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except FileExistsError:
            self._replace(target, rel, data)
            return
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def _folder(self, path: Path, rel: str) -> None:
        if path == self.root:  # the folder asked for may be a symlink to a folder
            path.mkdir(parents=True, exist_ok=True)
            return
        try:
            info = path.lstat()
        except FileNotFoundError:
            path.mkdir()
            return
        if not stat.S_ISDIR(info.st_mode):
            raise Failed(f"cannot write {rel}: {path} is a file or a symlink")

    def _replace(self, target: Path, rel: str, data: bytes) -> None:
        if not stat.S_ISREG(target.lstat().st_mode):
            raise Failed(f"cannot write {rel}: a folder or a symlink is in the way")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".weft-restore-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


async def run_revert(args: argparse.Namespace, backend: Backend, err: Console) -> int:
    from crdt import timetravel as tt

    to = tt.parse_version(args.to)
    path = normalise_path(args.path) if args.path is not None else None
    found = await backend.revert(path, to, args.user, args.device)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    changed = [r for r in found["reverted"] if r["changed"]]
    for r in found["reverted"]:
        if not r["changed"]:
            continue
        what = "deleted" if r["deleted"] else f"reverted to {r['target']}"
        print(f"{r['path']}: {what} (new version {r['versionstamp']})")
    if not changed:
        target = path or "the project"
        err.print(f"nothing to revert: {target} is already as it was at {to}", markup=False)
    return 0


def doc_path(value: str) -> str:
    """A PATH argument as typed in a shell: a leading ``./`` (tab completion writes
    one) is dropped; the rest is checked where it is used (``normalise_path``)."""
    while value.startswith("./"):
        value = value[2:].lstrip("/")
    return value


def _device(value: str) -> str:
    if not DEVICE_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{printable(value)!r} is not a device name: {DEVICE_ID_RULE}"
        )
    return value


def _default_device() -> str:
    name = socket.gethostname()
    return name if DEVICE_ID.fullmatch(name) else "cli"


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "weft"
