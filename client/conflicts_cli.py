"""``weft conflicts list|show|resolve``: the conflict records of a project.

Through a server (``--server URL --tenant T --project P [--token TOKEN]``) or straight
from a store (``--store URL --tenant T --project P``, for an operator on the server's
machine). Flags also read ``WEFT_SERVER``, ``WEFT_STORE``, ``WEFT_TENANT``,
``WEFT_PROJECT`` and ``WEFT_TOKEN``, as the time-travel commands do. ``--json`` prints
the records as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from crdt.errors import StoreError, WeftError
from crdt.logsafe import printable

if TYPE_CHECKING:
    import aiohttp

STATUSES = ("open", "resolved")
TIMEOUT = 30.0
"""Seconds a request to the server may take, answer included (exit 1 after)."""


class CliError(Exception):
    """A user error: printed as one line, exit code 2 (or 1 for server/network trouble)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def http_base(server: str) -> str:
    """The REST base of ``--server`` as every command takes it (``ws://h:p/weft`` →
    ``http://h:p/weft``): its path kept, for a server a proxy serves under one (it was
    dropped, so the records were asked of ``http://h:p/api/v1/...``)."""
    from client.remote import ServerURL

    try:
        return ServerURL.parse(server).http
    except ValueError as exc:
        raise CliError(f"--server: {exc}") from None


def _count(text: str) -> int:
    """``--limit``: a whole number from 1."""
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, not {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "conflicts",
        help="list, show and resolve conflict records",
        description="Conflict records: where offline branches changed the same lines.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--server", help="server URL, e.g. http://127.0.0.1:8765 (WEFT_SERVER)")
        where.add_argument(
            "--store", help="store URL, e.g. sqlite:///./weft-data/weft.db (WEFT_STORE)"
        )
        p.add_argument("--tenant", default=os.environ.get("WEFT_TENANT"), help="(WEFT_TENANT)")
        p.add_argument("--project", default=os.environ.get("WEFT_PROJECT"), help="(WEFT_PROJECT)")
        p.add_argument(
            "--token", default=os.environ.get("WEFT_TOKEN"), help="access token (WEFT_TOKEN)"
        )
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=run)

    listing = actions.add_parser(
        "list", help="the project's conflicts (table: oldest first; --json: in id order)"
    )
    common(listing)
    listing.add_argument("--path", help="only this document")
    listing.add_argument("--status", choices=STATUSES, help="only open or resolved ones")
    listing.add_argument(
        "--limit", type=_count, metavar="N", help="only the first N (default: all of them)"
    )
    show = actions.add_parser("show", help="one conflict with both sides of every region")
    common(show)
    show.add_argument("id", help="conflict id (24 hex digits)")
    resolve = actions.add_parser(
        "resolve", help="mark a conflict resolved (one already resolved is left as it is)"
    )
    common(resolve)
    resolve.add_argument("id", help="conflict id (24 hex digits)")
    resolve.add_argument("--note", default="", help="how it was resolved")
    resolve.add_argument(
        "--user",
        help="who resolved it (--store only: a server takes the token's user; default operator)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio  # here, not at the top: ``weft conflicts --help`` need not load it

    try:
        _where(args)
        work = _via_server if args.server else _via_store
        if args.action == "list":  # printed a page at a time (JSON), or at the end
            asyncio.run(_list(args))
            return 0
        if args.action == "resolve":  # the first resolution stays: say so, change nothing
            result = asyncio.run(work(args, "show"))
            args.already = result["status"] == "resolved"
            # Through a server, asked all the same: a token that may not resolve is
            # refused (exit 1) whether or not someone else resolved the record first.
            if not args.already or args.server:
                result = asyncio.run(work(args, "resolve"))
        else:
            result = asyncio.run(work(args, "show"))
    except CliError as exc:
        print(f"weft conflicts: {exc}", file=sys.stderr)
        return exc.code
    except (StoreError, OSError) as exc:  # the store failed (or could not be opened)
        print(f"weft conflicts: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    except WeftError as exc:
        print(f"weft conflicts: {exc}", file=sys.stderr)
        return 2
    _print(args, result)
    return 0


def _where(args: argparse.Namespace) -> None:
    """Fill ``--server``/``--store`` from WEFT_SERVER/WEFT_STORE when neither was given,
    as the other commands do; refuse what names no project, a malformed tenant, project
    or conflict id, and ``--user`` through a server (as ``weft revert`` does).

    Checked here for both places: through a server they went into the URL as typed,
    so ``resolve ../../other/conflicts/ID --project mine`` resolved a record of project
    ``other``."""
    from client.remote import missing_flags
    from client.timetravel_cli import where
    from crdt.keys import check_name
    from crdt.versionstamp import Versionstamp

    args.server, args.store = where(args)  # its BadInput is a WeftError: exit 2
    missing = missing_flags(args, ("tenant", "project"))
    if missing is not None:
        raise CliError(missing)
    check_name("tenant", args.tenant)  # BadPath, a WeftError: exit 2
    check_name("project", args.project)
    if args.action != "list":
        try:
            Versionstamp.from_hex(args.id)
        except ValueError:
            raise CliError(f"a conflict id is 24 hex digits, not {args.id!r}") from None
    if args.action == "resolve" and args.server and args.user is not None:
        raise CliError("--user is for --store: through a server, the token names who resolved it")


def _session() -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))


async def _request(
    args: argparse.Namespace,
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    params: dict[str, str],
    body: Any = None,
) -> Any:
    """The server's JSON answer; an error answer, or none, is a :class:`CliError`."""
    import aiohttp

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        async with http.request(method, url, params=params, json=body, headers=headers) as response:
            try:
                data = await response.json(content_type=None)
            except ValueError:
                raise CliError(f"{url}: HTTP {response.status}, not JSON", 1) from None
            if response.status >= 400:
                error = data.get("error", {}) if isinstance(data, dict) else {}
                message = error.get("message") or f"HTTP {response.status}"
                if response.status == 401 and not args.token:
                    from client.remote import NO_TOKEN

                    message = NO_TOKEN
                # as the time-travel commands: a refused token or a server error is a
                # failure (1), anything else the request got wrong is bad input (2)
                failed = response.status in (401, 403) or response.status >= 500
                raise CliError(message, 1 if failed else 2)
            return data
    except aiohttp.ClientConnectorError as exc:
        from client.remote import unreachable

        raise CliError(unreachable(args.server, exc), 1) from None
    except aiohttp.ClientError as exc:
        raise CliError(f"cannot reach {args.server}: {exc}", 1) from None
    except TimeoutError:  # a server that took the connection and never answered
        raise CliError(f"{args.server} did not answer within {TIMEOUT:g} s", 1) from None


def _list_url(args: argparse.Namespace) -> str:
    # each name one path segment ('/' quoted too), checked by _where ('.' and '..' too)
    tenant, project = quote(args.tenant, safe=""), quote(args.project, safe="")
    return f"{http_base(args.server)}/api/v1/{tenant}/{project}/conflicts"


async def _via_server(args: argparse.Namespace, action: str) -> Any:
    """One record, shown (``show``) or resolved (``resolve``), through the server."""
    url = f"{_list_url(args)}/{quote(args.id, safe='')}"
    async with _session() as http:
        if action == "show":
            data = await _request(args, http, "GET", url, {})
        else:
            note = {"resolution": args.note}
            data = await _request(args, http, "POST", f"{url}/resolve", {}, note)
    return data["conflict"]


async def _server_pages(args: argparse.Namespace) -> AsyncIterator[list[dict[str, Any]]]:
    """The records through the server, a page at a time, following ``next_after`` (a
    server before pages sends none: its one answer is the whole list). The first request
    asks ``limit`` only for ``--limit`` (a server before pages refuses the parameter);
    the next ones ask as many as are left, up to ``MAX_PAGE``."""
    from client.remote import next_after
    from crdt.conflicts import MAX_PAGE

    left = args.limit
    params = {k: v for k, v in (("path", args.path), ("status", args.status)) if v}
    if left is not None:
        params["limit"] = str(min(left, MAX_PAGE))
    after = None
    async with _session() as http:
        while True:
            data = await _request(args, http, "GET", _list_url(args), params)
            records = data.get("conflicts") if isinstance(data, dict) else None
            if not isinstance(records, list):
                raise CliError("the server's conflict list holds no list", 1)
            yield records
            try:
                after = next_after(data, after)
            except ValueError as exc:
                raise CliError(str(exc), 1) from None
            left = None if left is None else left - len(records)
            if after is None or (left is not None and left <= 0):
                return
            params |= {"after": after, "limit": str(min(left or MAX_PAGE, MAX_PAGE))}


async def _store_pages(args: argparse.Namespace) -> AsyncIterator[list[dict[str, Any]]]:
    """The records from the store, a page at a time (see :func:`_server_pages`)."""
    from client.timetravel_cli import check_store
    from crdt import branches
    from crdt.conflicts import MAX_PAGE
    from crdt.history import History
    from crdt.kv import open_engine

    check_store(args.store)  # reading a mistyped path must not create a store there
    async with open_engine(args.store) as kv:
        history = History(kv)
        await history.init()
        left, after = args.limit, None
        while left is None or left > 0:
            page = await branches.list_conflicts(
                history,
                args.tenant,
                args.project,
                path=args.path,
                status=args.status,
                after=after,
                limit=min(left or MAX_PAGE, MAX_PAGE),
            )
            yield [r.to_dict() for r in page.records]
            if page.next_after is None:
                return
            after = page.next_after
            left = None if left is None else left - len(page.records)


async def _list(args: argparse.Namespace) -> None:
    """Print the records, all of them or the first ``--limit``, a page read at a time:
    as JSON, each page once read (a list too long to hold is never held whole); as a
    table, their rows (no texts) at the end, when the columns' widths are known, oldest
    first (pages come in id order, which is not the order the records were made in)."""
    pages = _server_pages(args) if args.server else _store_pages(args)
    rows: list[tuple[int, tuple[str, ...]]] = []
    count = 0
    async for page in pages:
        for record in page[: None if args.limit is None else args.limit - count]:
            if args.json:
                # as json.dumps(list, indent=2) (not textwrap: it splits at U+2028 too)
                text = json.dumps(record, indent=2, ensure_ascii=False).replace("\n", "\n  ")
                print(("[\n  " if count == 0 else ",\n  ") + text, end="")
            else:
                rows.append((record["created_ms"], _row(record)))
            count += 1
    if args.json:
        print("\n]" if count else "[]")
    else:
        rows.sort(key=lambda row: row[0])  # stable: id order among equal times
        _table([row for _, row in rows])


async def _via_store(args: argparse.Namespace, action: str) -> Any:
    from client.timetravel_cli import check_store
    from crdt import branches
    from crdt.history import History
    from crdt.kv import open_engine

    check_store(args.store)  # reading a mistyped path must not create a store there
    async with open_engine(args.store) as kv:
        history = History(kv)
        await history.init()
        if action == "show":
            record = await branches.get_conflict(history, args.tenant, args.project, args.id)
        else:
            user = args.user or "operator"  # (_where refused --user through a server)
            record = await branches.resolve(
                history, args.tenant, args.project, args.id, user=user, resolution=args.note
            )
        return record.to_dict()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _lines(record: dict[str, Any], region: dict[str, Any]) -> str:
    """Which base lines a region is about: none when the sides share no history (a
    local file that met a different document), else a range or an insertion point."""
    if not record["base"]:
        return "no shared history"
    start, end = region["base_start"], region["base_end"]
    if start == end:
        return f"after base line {start}" if start else "before base line 1"
    if end == start + 1:
        return f"base line {end}"
    return f"base lines {start + 1}-{end}"


def _names(names: list[str], sep: str = ", ") -> str:
    """Users or devices, each escaped (see :func:`_print`)."""
    return sep.join(map(printable, names))


def _who(side: dict[str, Any]) -> str:
    """A side's users and the devices they edited on (``ada on laptop``; one person's
    two devices differ only there)."""
    users = _names(side["users"], "+")
    return f"{users} on {_names(side['clients'], '+')}" if side["clients"] else users


def _row(r: dict[str, Any]) -> tuple[str, ...]:
    """A record's row in the list (escaped, see :func:`_print`)."""
    spans = (
        _lines(r, g).removeprefix("base lines ").removeprefix("base line ") for g in r["regions"]
    )
    span = ",".join(spans)
    who = f"{_who(r['ours'])} / {_who(r['theirs'])}"
    return r["id"], r["status"], _when(r["created_ms"]), span, f"{printable(r['path'])}  ({who})"


def _table(rows: list[tuple[str, ...]]) -> None:
    if not rows:
        print("no conflicts")
        return
    width = max(9, *(len(row[3]) for row in rows))
    print(
        f"{'ID':24}  {'STATUS':8}  {'CREATED (UTC)':19}  {'LINES':{width}}  PATH  (OURS / THEIRS)"
    )
    for cid, status, created, span, where in rows:
        print(f"{cid:24}  {status:8}  {created:19}  {span:{width}}  {where}")


def _text(text: str) -> None:
    """A side's text, a ``| `` per line; no text at all (an insertion point's base, a
    side that deleted the lines) is ``(nothing)``, not one ``| `` as a blank line is."""
    if not text:
        print("  (nothing)")
    for line in text.splitlines():
        print(f"  | {line}")


def _print(args: argparse.Namespace, result: Any) -> None:
    """The records for a person (or as JSON, as they are, with ``--json``). Names, paths
    and the note are free text a token's user or an API caller chose: they are escaped
    as ``weft history`` escapes them (an ESC or OSC sequence reached the terminal). The
    texts are printed as ``weft show`` prints a document."""
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    r = result
    if args.action == "resolve":  # the record was shown by `show`: say only what happened
        _resolved(r, already=args.already)
        return
    print(f"conflict {r['id']} on {printable(r['path'])}: {r['status']}")
    print(f"  base       {r['base'] or '(no shared history)'}")
    for side in ("ours", "theirs"):
        s = r[side]
        print(f"  {side:10} {_names(s['users'])} on {_names(s['clients']) or '?'}")
    if r.get("deleted"):
        deleter = "ours" if r["deleted"] == "ours" else "theirs"
        if r.get("restored"):
            then = "brought back with the other side's edits"
        elif r.get("emptied"):
            then = "it stays deleted (the deletion emptied its text; the edited text is below)"
        else:
            # (the server brings it back only with WEFT_BRING_BACK_EDITED, and not after
            # a later delete: "deleted again since" was said for the default too)
            then = "it stays deleted (the edited text is below: write it back to restore the file)"
        print(f"  deleted    by {deleter}, edited by the other side: {then}")
    if r["status"] == "resolved":
        print(f"  resolved   by {printable(r['resolved_by'])} at {_when(r['resolved_ms'])} UTC")
        if r["resolution"]:
            print(f"  note       {printable(r['resolution'])}")
    for g in r["regions"]:
        print(f"\n  {_lines(r, g)}:")
        base = [("base", "base_text")] if r["base"] else []  # none: no shared history
        for label, key in [*base, ("ours", "ours_text"), ("theirs", "theirs_text")]:
            print(f"  --- {label}")
            _text(g[key])
    print("\n  merged text (what the document held once both sides were in):")
    _text(r["merged_text"])


def _resolved(r: dict[str, Any], *, already: bool) -> None:
    """``resolve``'s one line: marked now, or already (by whom, when, the note)."""
    where = f"conflict {r['id']} on {printable(r['path'])}"
    note = f", note {r['resolution']!r}" if r["resolution"] else ""  # (repr escapes)
    by = printable(r["resolved_by"])
    if already:
        print(
            f"{where}: already resolved by {by} at {_when(r['resolved_ms'])} UTC{note}: left as it was"
        )
    else:
        print(f"{where}: marked resolved{note}")
