"""``weft sync DIR``: keep a folder and a project in step.

::

    weft sync DIR --server ws://HOST:PORT --tenant T --project P [--token TOKEN] [--once]

Without ``--once`` it keeps running: it watches the folder, shows the connection state
and what it syncs, and goes on working offline (edits are recorded in ``DIR/.weft/`` and
sent when the server is back). With ``--once`` it syncs until the folder and the server
agree, then exits 0 (1 on failure, ``--timeout``, or read-only edits left unsent; 2 on
bad input: the same list as ``--help`` and the README); a server it cannot reach is
given up after ``QUOTA_PATIENCE`` x ``--max-backoff`` (exit 1). Every flag also
reads an environment variable: ``WEFT_SERVER``, ``WEFT_TENANT``, ``WEFT_PROJECT``,
``WEFT_TOKEN``, ``WEFT_SYNC_MAX_BACKOFF``, ``WEFT_SYNC_POLL``, ``WEFT_SYNC_IDLE_CLOSE``,
``WEFT_DEVICE_ID``.

``weft sync --help`` stays fast: rich, the device and the workspace (aiohttp, pycrdt, the
history) are imported by the code that runs the command, not by this module.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crdt.logsafe import printable

if TYPE_CHECKING:  # imported where the command runs (see the module docstring)
    import asyncio

    from rich.console import Console
    from rich.text import Text

    from client.device import Event
    from client.remote import ServerURL
    from client.said import SaidConflicts
    from client.workspace import Workspace

STYLES = {
    "online": "green",
    "offline": "yellow",
    "read_only": "yellow",
    "warning": "yellow",
    "error": "bold red",
    "conflict": "bold magenta",
    "local": "cyan",
    "remote": "blue",
    "deleted": "blue",
}
QUIET_DURING_FIRST_SYNC = {"local", "remote", "deleted"}


_ENV_SECONDS = {  # flag dest -> (environment variable, default)
    "max_backoff": ("WEFT_SYNC_MAX_BACKOFF", 10.0),
    "poll": ("WEFT_SYNC_POLL", 1.0),
    "idle_close": ("WEFT_SYNC_IDLE_CLOSE", 60.0),
}


def _seconds_from_env(args: argparse.Namespace) -> str | None:
    """Fill the flags left out from their environment variables (or defaults); the
    error for a variable that is not a number (read when the command runs, so a bad
    value never breaks another command)."""
    for dest, (name, default) in _ENV_SECONDS.items():
        if getattr(args, dest) is not None:
            continue
        raw = os.environ.get(name)
        try:
            setattr(args, dest, float(raw) if raw else default)
        except ValueError:
            return f"{name}={raw!r} is not a number of seconds"
    return None


DESCRIPTION = """\
Keep a folder and a project in step: text files <-> documents.

Without --once it keeps running: it watches the folder, shows the connection state and
what it syncs, and goes on working offline (edits are recorded in DIR/.weft/ and sent
when the server is back). With --once it syncs until the folder and the server agree,
then exits 0 in sync; 1 on failure (a file not in sync, the server refusing this device
or unreachable), --timeout, or read-only edits left unsent; 2 on bad input. A server it
cannot reach is given up after 6 x --max-backoff (60 s by default) with --once (exit
1): the edits stay on this device and are sent on the next run; without --once it
retries for ever. Stopped by Ctrl-C (SIGINT) or SIGTERM before the first sync ended
(with --once: before in sync), it says so and exits 130 (SIGINT) or 143 (SIGTERM):
what it found is recorded and sent on the next run. A running sync stopped after its
first sync exits 0 ("stopped; local state saved", and which local changes are not sent
yet, if any).

Ignored: .git/, .weft/, .weft-manifest.json at the top (weft restore writes it), editors'
swap, backup, autosave, lock and safe-write files (*.swp, *~, #*#, .~lock.*#,
*___jb_tmp___...) and the patterns of DIR/.weftignore (gitignore syntax; only the folder's top
.weftignore; as git does, a file synced before goes on syncing when a pattern added
later matches it, said once a run: delete it to stop). Binary, non-UTF-8 and oversized
files (over 4 MiB) and symbolic links are skipped with a warning; nothing is read,
written or deleted through a link (to a folder either). A synced file that grows past
4 MiB, is no longer UTF-8 text (binary, another encoding) or is replaced by a symbolic
link stops syncing: said once, it is not in sync (--once names it and exits 1), and
the other devices keep its last synced text and say so; back under the limit, text
again or a regular text file again, it syncs again. A new
file is taken in once quiet (last changed 0.1 s ago, 1 s when over 64 KiB; at most 30
s), so a file still being written (a cp, a download) is not sent in part. A document
that cannot be written (its path goes through such a link, a file and a folder have
its name, or a file there that was never synced cannot be: binary, over 4 MiB, a link)
is said once and is not in sync (--once exits 1); nothing is written over that file.
If DIR or DIR/.weft is moved or deleted while it runs, it stops (exit 1) and sends no
deletions.

A local file that meets a different document at the same path, with no shared history,
is recorded as a conflict: the server's version stays, and yours is kept in the
conflict record and in DIR/.weft/conflicts/. So is a file written where a document was
deleted that another device brought back first (with another text). Offline edits that touched the same lines
as someone else's edits since, and a file edited on one side while deleted on the other
(the deletion stands unless the server sets WEFT_BRING_BACK_EDITED; the edited text is
in the record), are recorded as conflicts too; each is printed (see weft conflicts):
when the server says it, or, for one of this device's records it missed (cut off
before the verdict, or --once gone first), and for one where this device's edits were
the other side (another device's offline branch met them, or an edit met a deletion
made here), from the project's conflict list, which is read after the first sync
(--once: just before it exits), after a reconnect (at most once a minute), and within
a few seconds of a record being made or resolved in the project, as the document list
it polls says ("found in the project's conflict list"; said once, across runs too).
A file deleted elsewhere while it held edits made here that the server had not yet
acknowledged is removed, and its text kept in DIR/.weft/conflicts/ (the line says where).

A line "FILE: +N -M chars" says a change found here: N characters inserted and M
deleted (characters, not lines); "FILE: new (+N chars)" a new file sent, "FILE: brought
back (+N chars)" one written where a deleted document was. A save of a
line that another device changed at the same time (its change waiting because the file
was saved less than a second ago) keeps both versions of the line, theirs first, with
no conflict record: "FILE: line N: changed here and elsewhere at once; both versions
kept" says where to look.

The flags that read an environment variable: WEFT_SERVER, WEFT_TENANT, WEFT_PROJECT,
WEFT_TOKEN, WEFT_SYNC_MAX_BACKOFF, WEFT_SYNC_POLL, WEFT_SYNC_IDLE_CLOSE, WEFT_DEVICE_ID.
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``weft sync``."""
    p = sub.add_parser(
        "sync",
        help="keep a folder and a project in step",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    # (a Path: a folder's name may hold any bytes, text arguments must be UTF-8)
    a("dir", metavar="DIR", type=Path, help="the folder to sync (its state goes to DIR/.weft/)")
    a("--server", default=os.environ.get("WEFT_SERVER"), help="ws://HOST:PORT (WEFT_SERVER)")
    a("--tenant", default=os.environ.get("WEFT_TENANT"), help="tenant name (WEFT_TENANT)")
    a("--project", default=os.environ.get("WEFT_PROJECT"), help="project name (WEFT_PROJECT)")
    a("--token", default=os.environ.get("WEFT_TOKEN"), help="access token (WEFT_TOKEN)")
    a("--once", action="store_true", help="sync until folder and server agree, then exit")
    a("--timeout", type=float, default=None, help="with --once: give up after SECONDS (exit 1)")
    a(
        "--max-backoff",
        type=float,
        default=None,
        help="longest wait between reconnection attempts, seconds (WEFT_SYNC_MAX_BACKOFF, "
        "default 10)",
    )
    a(
        "--poll",
        type=float,
        default=None,
        help="how often to check the project's document list, seconds (WEFT_SYNC_POLL, default 1)",
    )
    a(
        "--idle-close",
        type=float,
        default=None,
        help="close a document's connection after SECONDS without activity; changes to it "
        "are still noticed through the document list (WEFT_SYNC_IDLE_CLOSE, default 60)",
    )
    a(
        "--device-id",
        default=os.environ.get("WEFT_DEVICE_ID"),
        help="name this device (WEFT_DEVICE_ID; default: the name it was given before, or a "
        "random one)",
    )
    a("-q", "--quiet", action="store_true", help="print only warnings, conflicts and errors")
    a("-v", "--verbose", action="store_true", help="print every file synced, and debug logs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from rich.console import Console

    from client.device import DataDirBusy
    from client.remote import ServerURL, missing_flags
    from client.state import BindingMismatch
    from crdt.errors import BadPath, FormatError
    from crdt.keys import DEVICE_ID, DEVICE_ID_RULE, check_name

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    missing = missing_flags(args, ("server", "tenant", "project"))
    if missing is not None:
        err.print(f"weft sync: {missing}")
        return 2
    try:
        server = ServerURL.parse(args.server)
        check_name("tenant", args.tenant)
        check_name("project", args.project)
    except (ValueError, BadPath) as exc:
        err.print(f"weft sync: {exc}")
        return 2
    problem = _seconds_from_env(args)
    if problem is not None:
        err.print(f"weft sync: {problem}")
        return 2
    root = Path(args.dir).expanduser()
    if not root.is_dir():
        err.print(f"weft sync: {root} is not a directory")
        return 2
    if args.device_id is not None and not DEVICE_ID.fullmatch(args.device_id):
        err.print(f"weft sync: --device-id {args.device_id!r}: use {DEVICE_ID_RULE}")
        return 2
    if min(args.max_backoff, args.poll, args.idle_close) <= 0 or (
        args.timeout is not None and args.timeout <= 0
    ):  # (a --timeout of 0 gave up at once, saying "offline?"; --idle-close 0 thrashed)
        err.print("weft sync: --max-backoff, --poll, --timeout and --idle-close must be positive")
        return 2
    # Warnings show without -v (and with -q, which prints only warnings, conflicts and
    # errors): the device's events are printed by _Ui, and logged only at INFO.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(_sync(args, root, server))
    except BindingMismatch as exc:
        err.print(f"weft sync: {exc}")
        return 2
    except DataDirBusy as exc:
        err.print(f"weft sync: {exc}")
        return 1
    except FormatError as exc:
        err.print(f"weft sync: {exc}")
        return 1


class _Ui:
    """What ``weft sync`` shows: events as lines, a progress bar on the first sync, and
    (on a terminal) a status line while it keeps running."""

    def __init__(self, console: Console, quiet: bool, verbose: bool, token: bool = True) -> None:
        self.console = console
        self.token = token  # whether a token was given
        self.quiet = quiet
        self.verbose = verbose
        self.first_sync = True
        self.counts = {"local": 0, "remote": 0, "deleted": 0, "conflict": 0}
        # the files written or removed from elsewhere: one each, however many times (an
        # update arriving during the first sync wrote one file twice: "2 file(s)")
        self.written: set[str] = set()
        # The "device ..." line, said once, before the first event: an event can come
        # while the workspace starts (a refusal: 401 came before it)
        self.heading: Callable[[], str | None] | None = None

    def say_heading(self) -> None:
        """Say :attr:`heading` if not said yet (and it is ready: not None)."""
        text = self.heading() if self.heading is not None else None
        if text is not None:
            self.heading = None
            self.info(text, "dim")

    def event(self, event: Event) -> None:
        self.say_heading()
        if event.kind in self.counts:
            self.counts[event.kind] += 1
        if event.kind == "remote":
            self.written.add(event.path or event.message)
        # (a file removed with a copy of its text kept is always said: where the copy is)
        kept = "kept" in event.data
        loud = ("warning", "error", "conflict", "read_only")
        if self.quiet and event.kind not in loud and not kept:
            return
        first = self.first_sync and not self.verbose
        if first and event.kind in QUIET_DURING_FIRST_SYNC and not kept:
            return
        message, code = event.message, event.data.get("refused")
        if code in (401, 4401) and not self.token:
            from client.remote import NO_TOKEN

            message = f"the server refused this device ({code}): {NO_TOKEN}"
        # a file name may hold a newline, a tab, a bidi control: one event, one line
        self.line(printable(message), STYLES.get(event.kind, ""))

    def info(self, message: str, style: str = "") -> None:
        """A line that ``--quiet`` leaves out (no warning, conflict or error)."""
        if not self.quiet:
            self.line(message, style)

    def line(self, message: str, style: str = "") -> None:
        from rich.text import Text

        stamp = time.strftime("%H:%M:%S")
        self.console.print(Text(f"{stamp} ", style="dim") + Text(message, style=style))

    @contextlib.asynccontextmanager
    async def progress(self, ws: Workspace) -> AsyncIterator[None]:
        """A progress bar (a line per second when not on a terminal) while inside."""
        import asyncio

        task = asyncio.create_task(self._progress(ws))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _progress(self, ws: Workspace) -> None:
        import asyncio

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        started = time.monotonic()
        if self.console.is_terminal and not self.quiet:
            columns = (
                TextColumn("first sync"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files"),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=self.console, transient=True) as bar:
                tid = bar.add_task("sync", total=None)
                while True:
                    done, total = ws.progress()
                    bar.update(tid, completed=done, total=total or None)
                    await asyncio.sleep(0.1)
        last = -1
        while True:
            await asyncio.sleep(1.0)
            done, total = ws.progress()
            if done != last and not self.quiet:
                if ws.device.online:
                    pace = _rate(done, time.monotonic() - started)
                else:  # (a rate of 0 files/s said nothing useful)
                    pace = "offline: waiting for the server"
                self.line(f"syncing: {done}/{total} files ({pace})", "dim")
                last = done

    def status(self, ws: Workspace) -> Text:
        from rich.text import Text

        device = ws.device
        if device.failure is not None:
            state, style = "failed", "bold red"
        elif device.paused or not device.online:
            state, style = "offline (retrying)", "yellow"
        else:
            state, style = "online", "green"
        pending = device.pending()
        parts = [f"{len(ws.tracked)} files", f"{pending} local changes pending"]
        if device.crowded:
            parts.append(f"{len(device.crowded)} waiting for a connection")
        if device.read_only:
            parts.append("read-only")
        if ws.conflicts:
            parts.append(f"{len(ws.conflicts)} conflicts")
        if ws.unwritable:  # (a link, a folder, a file never synced in the way)
            parts.append(f"{len(ws.unwritable)} not written")
        parts += ws.unsynced.counts()  # over the size limit, not text, replaced by a link
        return Text("● ", style=style) + Text(state, style=style) + Text("  " + " · ".join(parts))


async def _sync(args: argparse.Namespace, root: Path, server: ServerURL) -> int:
    import asyncio
    import signal

    from rich.console import Console

    from client.connection import QUOTA_PATIENCE
    from client.device import DeviceFailed
    from client.said import SaidConflicts
    from client.workspace import Workspace

    console = Console(highlight=False, soft_wrap=True)
    ui = _Ui(console, args.quiet, args.verbose, token=bool(args.token))

    def on_event(event: Event) -> None:
        if said.said(event):  # a verdict whose record the list said already
            return
        ui.event(event)
        said.note(event)  # (after: a crash in between says it again, never not at all)

    # --once must end: a file turned away by the connection quota for this long fails,
    # and so does the sync of a server unreachable for this long (exit 1); running, it
    # waits for as long as it takes (idle links close sooner meanwhile)
    patience = QUOTA_PATIENCE * args.max_backoff if args.once else None
    ws = Workspace(
        root,
        server,
        args.tenant,
        args.project,
        token=args.token,
        on_event=on_event,
        max_backoff=args.max_backoff,
        poll_seconds=args.poll,
        idle_seconds=0.0 if args.once else args.idle_close,
        device_id=args.device_id,
        quota_patience=patience,
        offline_patience=patience,
    )
    said = SaidConflicts(ws)
    stop = asyncio.Event()
    received: list[int] = []  # the signals that stopped it

    def stopped_by(sig: int) -> None:
        received.append(sig)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped_by, sig)
    ui.info(f"weft sync {root} <-> {server} {args.tenant}/{args.project}", "bold")
    ui.heading = lambda: (
        f"device {ws.device.device_id}; state in {ws.state_dir}" if ws.device.device_id else None
    )
    async with ws:
        ui.say_heading()
        await said.load()  # (before a live conflict is said: one said before is not again)
        try:
            if args.once:
                code = await _once(ws, ui, args.timeout, stop, said)
            else:
                code = await _keep(ws, ui, stop, said)
        except DeviceFailed:  # the device's error event said why, once
            unsent = _unsent(ws)
            if unsent is not None:
                ui.line(printable(f"NOT in sync: {unsent}"), "yellow")
            return 1
    if code is None:  # stopped before the first sync ended (said once the state is saved)
        code = _interrupted(ui, received)
    return code


def _interrupted(ui: _Ui, received: list[int]) -> int:
    """Say that a signal stopped the first sync (the folder and the server may differ),
    and give its exit code: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    import signal

    sig = received[0] if received else signal.SIGINT
    name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
    ui.line(
        f"stopped ({name}) before the first sync ended: NOT in sync; local state saved "
        "(changes found here are recorded and sent on the next run)",
        "yellow",
    )
    return 128 + sig


async def _first_sync(ws: Workspace, ui: _Ui, stop: asyncio.Event, timeout: float | None) -> bool:
    """Wait for the first full sync; False if stopped first."""
    import asyncio

    started = time.monotonic()
    async with ui.progress(ws):
        waiter = asyncio.create_task(ws.sync(timeout))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if waiter not in done:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            return False
        waiter.result()
    ui.first_sync = False
    seconds = time.monotonic() - started
    files = sum(1 for path in ws.tracked if ws.disk.get(path) is not None)  # not deleted ones
    failed = _failed(ws)
    (ui.line if failed else ui.info)(
        f"{'synced' if failed else 'in sync'}: {files} file{'' if files == 1 else 's'} in "
        f"{seconds:.2f} s "
        f"({_rate(files, seconds)}); "
        f"{ui.counts['local'] + ui.counts['deleted']} local change(s) found, "
        f"{ws.device.updates_acked} update(s) sent, "
        f"{len(ui.written)} file(s) written or removed"
        + (f", {ui.counts['conflict']} conflict(s) recorded" if ui.counts["conflict"] else "")
        + (f"; {len(failed)} file(s) NOT in sync, see below" if failed else ""),
        "yellow" if failed else "green",
    )
    for path, why in sorted(failed.items()):  # (escaped as the event lines are)
        ui.line(printable(f"  {path}: {why}"), "bold red")
    return True


def _rate(files: int, seconds: float) -> str:
    """'12 files/s', '0.08 files/s': two significant digits under 10 (a 24 s sync of 2
    files said '0 files/s')."""
    rate = files / max(seconds, 1e-9)
    return f"{rate:.0f} files/s" if rate >= 10 else f"{rate:.2g} files/s"


def _failed(ws: Workspace) -> dict[str, str]:
    """Files the server refused for good, and why: documents (e.g. an update over its
    size limit; with how many local changes they still hold), local files whose
    conflict with the server's version it would not record, documents that could not
    be written to their file (a link or a file on the way, a folder in its place, a
    file never synced that cannot be), and synced files grown over the size limit, no
    longer text or replaced by a symbolic link (:mod:`client.unsynced`)."""
    failed = {path: why for path, (_, why) in ws.failed.items()}
    failed |= {path: f"not written: {why}" for path, why in ws.unwritable.items()}
    failed |= ws.unsynced.failed()
    for path, entry in ws.device.entries.items():
        if entry.link.error is not None:
            if path not in ws.tracked:  # never compared with the server's version
                here = ws.folder.read(path) is not None
                what = "the file was not sent" if here else "the server's version was not read"
                failed[path] = f"{entry.link.error}; {what}"
                continue
            unsent = len(entry.outbox) + entry.unrecorded_local
            failed[path] = f"{entry.link.error}; {unsent} local change(s) not sent"
    return failed


def _read_only_note(ws: Workspace, ui: _Ui) -> None:
    pending = ws.device.pending()
    if ws.device.read_only and pending:
        ui.line(
            f"read-only token: {pending} local change(s) stay on this device and were not sent",
            "yellow",
        )


async def _once(
    ws: Workspace,
    ui: _Ui,
    timeout: float | None,
    stop: asyncio.Event,
    said: SaidConflicts | None = None,
) -> int | None:
    """The exit code; None if stopped (a signal) first. Its one sync is its first and
    its last: the conflict list is read once, after it (see :mod:`client.said`)."""
    import asyncio

    from client.said import ONCE_TIMEOUT

    started = time.monotonic()
    try:
        if not await _first_sync(ws, ui, stop, timeout):
            return None
    except TimeoutError:
        ui.line(f"weft sync: not in sync after {timeout} s (offline?)", "bold red")
        return 1
    if said is not None:
        # bounded by what is left of --timeout (a stalled server kept it 30 s more)
        bound = ONCE_TIMEOUT
        if timeout is not None:
            bound = max(0.0, min(bound, timeout - (time.monotonic() - started)))
        listing = asyncio.create_task(said.catch_up(bound))
        stopper = asyncio.create_task(stop.wait())  # (a signal does not wait for the read)
        await asyncio.wait({listing, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (listing, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    _read_only_note(ws, ui)
    if _failed(ws):
        return 1
    return 1 if ws.device.read_only and ws.device.pending() else 0


async def _keep(
    ws: Workspace, ui: _Ui, stop: asyncio.Event, said: SaidConflicts | None = None
) -> int | None:
    """0 once stopped (a signal); None if stopped before the first sync ended. The
    conflict list is read after the first sync, after reconnects, and when the project's
    conflict count moves (client.said)."""
    import asyncio

    from rich.live import Live

    watcher = asyncio.create_task(ws.watch(stop))
    lister: asyncio.Task[None] | None = None
    live: Live | None = None
    if ui.console.is_terminal and not ui.quiet:
        live = Live(ui.status(ws), console=ui.console, refresh_per_second=4, transient=True)
    try:
        if not await _first_sync(ws, ui, stop, None):
            return None
        if said is not None:
            lister = asyncio.create_task(said.follow())
        _read_only_note(ws, ui)
        with live or contextlib.nullcontext():
            while not stop.is_set():
                if live is not None:
                    live.update(ui.status(ws))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await stop.wait()
                if ws.device.failure is not None:
                    raise ws.device.failure
    finally:
        stop.set()
        for task in (watcher, lister):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    unsent = _unsent(ws)
    if unsent is None:
        ui.info("stopped; local state saved", "dim")
    else:
        ui.line(printable(f"stopped; local state saved; NOT in sync: {unsent}"), "yellow")
    return 0


def _unsent(ws: Workspace, named: int = 5) -> str | None:
    """What a stop leaves unsent (the local changes the server has not acknowledged,
    and in which files), None if nothing: a running sync stopped while offline said
    only "stopped; local state saved"."""
    device = ws.device
    files = {p for p, e in device.entries.items() if len(e.outbox) + e.unrecorded_local}
    files |= ws.creating
    if not files:
        return None
    shown = sorted(files)[:named]
    more = f" and {len(files) - named} more" if len(files) > named else ""
    later = "read-only token" if device.read_only else "sent on the next run"
    return (
        f"{device.pending()} local change(s) in {len(files)} file(s) not sent yet "
        f"({', '.join(shown)}{more}): kept on this device, {later}"
    )
