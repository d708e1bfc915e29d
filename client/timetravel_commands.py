"""What each time-travel command does with what its backend answers: ``run_history``,
``run_show``, ``run_diff``, ``run_blame``, ``run_restore`` and ``run_revert`` print it (as
text, or as JSON with ``--json``) and return the exit code; ``weft history`` labels
versions deleted, created and restored (``_deleted_notes``, ``_flag_before``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.timetravel_errors import BadInput, Failed
from client.timetravel_files import Folder
from crdt.keys import never_synced, normalise_path, restore_refusal
from crdt.logsafe import printable

if TYPE_CHECKING:  # imported where a command runs (see client.timetravel_cli)
    from rich.console import Console

    from client.timetravel_backends import Backend
    from crdt import timetravel as tt


def _version(text: str | None) -> tt.Version | None:
    from crdt import timetravel as tt

    return None if text is None else tt.parse_version(text)


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


async def _flag_before(backend: Backend, path: str, until: tt.Version) -> tuple[bool, bool | None]:
    """(no version at or before ``until``, the deleted flag in force at ``until``).

    ``until`` is just before the oldest version listed (not --since: with --limit the
    listing ends later). The flag is read from the document as it was at ``until``: one
    replay, however long the history (looking back page by page for the newest version
    that set it took 200 requests, 3.5 s, to list 5 versions of a document edited
    100,000 times since it was created). Not the version just before: a plain edit
    there leaves the flag as it was."""
    if not (await backend.history(path, 1, None, until))["versions"]:
        return True, None
    return False, (await backend.show(path, until))["deleted"] is True


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
        assert until is not None
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
    from asyncio import CancelledError

    from blake3 import blake3
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crdt import timetravel as tt

    out: Path = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} exists and is not a folder")
    held = out.is_dir() and any(out.iterdir())  # files the version may not have
    if held and not args.force:
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
    try:
        with Progress(*columns, console=err, transient=True, disable=quiet) as bar:
            task = bar.add_task("restore", total=None, path="")
            async for kind, name, data, _vs in backend.restore(
                at, lambda n: bar.update(task, total=n)
            ):
                if kind == "manifest":
                    manifest = json.loads(data)
                    folder.write(name, data)
                    # The total counted documents deleted at the cut too: end at the files.
                    bar.update(task, total=len(written))
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
    except BaseException as exc:  # Ctrl-C (the task is cancelled) or a failure midway
        interrupted = isinstance(exc, KeyboardInterrupt | CancelledError)
        if manifest is None and (written or interrupted):  # (bad input: nothing written)
            stopped = "interrupted" if interrupted else "stopped"
            err.print(f"weft restore: {stopped}: {_incomplete(out, len(written))}", markup=False)
        raise
    if manifest is None:
        raise Failed("the restore ended without its manifest: the output is incomplete")
    left_out = not_written.keys() | skipped.keys()
    listed = {f["path"]: f["blake3"] for f in manifest["files"] if f["path"] not in left_out}
    if listed != written:
        raise Failed("the files written do not match the manifest: the output is incomplete")
    summary = {"out": str(out), "versionstamp": manifest["versionstamp"], "files": len(written)}
    ours = {*written, *not_written, *skipped, tt.MANIFEST_NAME}
    left = _left_over(out, ours) if held else []
    if args.json:
        extra = {"not_written": not_written, "skipped": skipped, "left": left}
        extra["manifest"] = manifest
        print(json.dumps({**summary, **extra}, indent=2))
    else:
        err.print(
            f"restored {len(written)} file{'' if len(written) == 1 else 's'} of "
            f"{manifest['tenant']}/{manifest['project']} at "
            f"{manifest['versionstamp']} into {out} (manifest: {tt.MANIFEST_NAME})"
            + (f"; {len(skipped)} skipped (see the warnings above)" if skipped else "")
            + (f"; {len(not_written)} file(s) NOT written:" if not_written else ""),
            markup=False,
        )
        for why in not_written.values():
            err.print(f"  {why}", markup=False)
    if left:
        names = ", ".join(printable(name) for name in left[:LEFT_NAMED])
        more = f" and {len(left) - LEFT_NAMED} more" if len(left) > LEFT_NAMED else ""
        err.print(
            f"warning: {len(left)} file(s) in {out} are not in this version and were left "
            f"as they were: {names}{more}",
            markup=False,
        )
    return 1 if not_written else 0


def _incomplete(out: Path, written: int) -> str:
    """What an interrupted restore left in ``out`` (the manifest is written last)."""
    return (
        f"{written} file(s) written into {out} and no manifest: the folder is incomplete "
        "(run the restore again with --force to finish it)"
    )


LEFT_NAMED = 10  # files left over that a restore names (``--json`` lists them all)


def _left_over(root: Path, ours: set[str]) -> list[str]:
    """The files under ``root`` a restore did not write (nor name): ones that were there
    before and are not in the version (``--force``), in path order. ``.git`` and
    ``.weft`` folders are not looked into: no document is ever written there."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if never_synced(d) is None]
        rel = Path(folder).relative_to(root)
        found += [(rel / name).as_posix() for name in names]
    return sorted(name for name in found if unicodedata.normalize("NFC", name) not in ours)


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
