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

This module parses the arguments and turns errors into exit codes; the rest lives beside
it: ``client.timetravel_commands`` (what each command does and prints),
``client.timetravel_backends`` (a server's API or a store), ``client.timetravel_files``
(the export's tar stream, the folder a restore writes) and ``client.timetravel_errors``.
What other code imports from here (``where``, ``check_store``, ``StoreBackend``,
``Folder``...) is re-exported.

``weft <command> --help`` stays fast: aiohttp, rich, pycrdt and the history are imported
by the code that runs a command, not by these modules (tests/unit/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The "X as X" names are re-exported: conflicts_cli, bench/replay.py and tests import
# them from here.
from client.timetravel_backends import StoreBackend as StoreBackend
from client.timetravel_backends import check_store as check_store
from client.timetravel_backends import open_backend
from client.timetravel_backends import where as where
from client.timetravel_commands import _deleted_notes as _deleted_notes
from client.timetravel_commands import (
    run_blame,
    run_diff,
    run_history,
    run_restore,
    run_revert,
    run_show,
)
from client.timetravel_errors import BadInput
from client.timetravel_errors import Failed as Failed
from client.timetravel_files import Folder as Folder
from client.timetravel_files import _untar as _untar
from crdt.errors import BadPath, NotFound, PermissionDenied, ProtocolError, WeftError
from crdt.keys import DEVICE_ID, DEVICE_ID_RULE
from crdt.logsafe import printable

if TYPE_CHECKING:  # imported where a command runs (see the module docstring)
    from rich.console import Console

    from client.timetravel_backends import Backend

COMMANDS = ("history", "show", "diff", "blame", "restore", "revert")
HEAD = "head"  # crdt.timetravel.HEAD, which loads pycrdt (a test checks they are equal)


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
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty DIR (its files the version lacks are left, and named)",
    )
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
        except aiohttp.ServerTimeoutError as exc:  # it printed "weft show: TimeoutError"
            err.print(f"{name}: {_timed_out(args, exc)}", markup=False)
            return 1
        except PermissionDenied as exc:
            from client.remote import NO_TOKEN

            err.print(f"{name}: {exc if args.token or args.store else NO_TOKEN}", markup=False)
            return 1
        except (Failed, WeftError, OSError, aiohttp.ClientError, TimeoutError) as exc:
            err.print(f"{name}: {exc or type(exc).__name__}", markup=False)
            return 1

    return handle


def _timed_out(args: argparse.Namespace, exc: BaseException) -> str:
    """What a command says when the server did not answer in time."""
    import aiohttp

    from client.remote import unreachable
    from client.timetravel_backends import READ_TIMEOUT

    server = args.server or os.environ.get("WEFT_SERVER", "")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return unreachable(server, exc)
    return f"the server at {server} sent nothing for {READ_TIMEOUT:g} s"


async def _with_backend(args: argparse.Namespace, run: Run, err: Console) -> int:
    async with open_backend(args) as backend:
        return await run(args, backend, err)


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
