"""The ``weft`` command: one entry point, one subcommand per concern.

Each concern registers its subcommands from its own module (``register(subparsers)``),
and each subcommand's handler returns the exit code: 0 ok, 1 failure, 2 bad input.

Startup stays fast: only the module of the command being run is imported (the others
load aiohttp, pycrdt, pydantic...); ``weft --help`` lists the commands from
:data:`COMMANDS` without importing any of them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

# Modules that add subcommands (each has register(subparsers) -> None), with the
# subcommands each one adds and their one-line help, in order: what ``weft --help`` lists
# without importing them. tests/unit/test_cli_startup.py checks it against the modules.
COMMANDS: dict[str, tuple[tuple[str, str], ...]] = {
    "server.cli": (("serve", "run the sync server"), ("token", "issue access tokens")),
    "client.timetravel_cli": (
        ("history", "list a document's versions"),
        ("show", "print a document as it was"),
        ("diff", "unified diff between two versions"),
        ("blame", "who wrote each line"),
        ("restore", "write the whole project as it was into a folder"),
        ("revert", "make a document (or, without PATH, the project) what it was"),
    ),
    "client.sync_cli": (("sync", "keep a folder and a project in step"),),
    "client.conflicts_cli": (("conflicts", "list, show and resolve conflict records"),),
}
COMMAND_MODULES = tuple(COMMANDS)
_UNLOADED = "_weft_unloaded"  # set by a placeholder: the module its command lives in

Handler = Callable[[argparse.Namespace], int]


def build_parser(command: str | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The ``weft`` parser, with the module that adds ``command`` imported (all, if ``full``).

    The commands of the modules left out are placeholders with the same name and help
    (and no arguments), so the top-level help and errors read the same.
    """
    parser = argparse.ArgumentParser(
        prog="weft", description="Conflict-first collaborative sync for projects of files."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, commands in COMMANDS.items():
        if full or any(name == command for name, _ in commands):
            importlib.import_module(module).register(sub)
            continue
        for name, summary in commands:
            placeholder = sub.add_parser(name, help=summary, add_help=False)
            placeholder.set_defaults(**{_UNLOADED: module})
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand argparse will pick: the first argument that is not an option
    (``weft`` itself takes only ``-h``, so no option of its own takes a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the deepest subcommand ``args`` picked (``weft token create``)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None or name not in subs[0].choices:
            return parser
        parser = subs[0].choices[name]


NAMES_A_FILE = {"store", "public_key"}  # text arguments that may name a file (see below)


def _refuse_non_utf8(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]
) -> None:
    """Exit 2, naming it, on a text argument (or the ``WEFT_*`` variable it defaults to)
    that is not valid UTF-8.

    Python hands such bytes over as lone surrogates (``$'op\\xff'`` is ``'op\\udcff'``),
    which no encoder takes: a note, a user or a tenant failed deep in a command
    (msgpack, ``quote()``), with a traceback, where the time-travel commands' own
    checks (``normalise_path``, ``check_name``) refused only paths and names. A file
    name may hold any bytes: an argument that names one is a :class:`~pathlib.Path`
    (``type=Path``), which is not checked, and so are ``--store`` (a URL holding a
    file's path: ``sqlite:///DIR/weft.db``) and ``--public-key`` (a key's text or file).
    """
    for action in parser._actions:
        if action.dest in NAMES_A_FILE:
            continue
        value = getattr(args, action.dest, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not _is_utf8(item):
                parser.error(str(argparse.ArgumentError(action, _not_utf8(item, argv))))


LOCATION_VARIABLES = {"server": "WEFT_SERVER", "store": "WEFT_STORE"}


def refuse_non_utf8_locations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2, naming it, on a ``WEFT_SERVER`` or ``WEFT_STORE`` that is not valid UTF-8
    and that the command reads: one of ``--server`` and ``--store`` it takes, when it
    was given neither.

    The time-travel and conflicts commands read these variables after parsing (when
    neither flag is given: :func:`client.timetravel_backends.where`), ``serve`` reads
    ``WEFT_STORE`` through its settings: such bytes were a plain error from the command
    ("unknown store URL '\\udcff'", exit 1 or 2), where ``weft sync``'s ``--server``, which
    defaults to ``WEFT_SERVER``, was refused as an argument. (A store URL that is not
    UTF-8 names no store SQLite can open either.)
    """
    flags = [action for action in parser._actions if action.dest in LOCATION_VARIABLES]
    if any(getattr(args, action.dest, None) for action in flags):
        return
    for action in flags:
        name = LOCATION_VARIABLES[action.dest]
        value = os.environ.get(name)
        if value is not None and not _is_utf8(value):
            message = f"{os.fsencode(value)!r} is not valid UTF-8 (from {name})"
            parser.error(str(argparse.ArgumentError(action, message)))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_utf8(text: str, argv: Sequence[str]) -> str:
    """Why ``text`` is refused: the bytes given, and the variable they came from."""
    try:
        message = f"{os.fsencode(text)!r} is not valid UTF-8"  # b'op\xff'
    except UnicodeEncodeError:  # a surrogate not from bytes (main(argv) was given it)
        message = f"{text!a} is not valid UTF-8"
    if not any(text in arg for arg in argv):  # a default
        names = [k for k, v in os.environ.items() if k.startswith("WEFT_") and v == text]
        message += f" (from {' or '.join(names) or 'the environment'})"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    args, extra = parser.parse_known_args(argv)
    if getattr(args, _UNLOADED, None) is not None:  # _command guessed wrong: load and retry
        parser = build_parser(args.command)
        args, extra = parser.parse_known_args(argv)
    if extra:  # as parse_args does, with the usage of the (sub)command that was run
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    _refuse_non_utf8(_chosen(parser, args), args, argv)
    refuse_non_utf8_locations(_chosen(parser, args), args)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of our output went away (`weft history | head`)
        with contextlib.suppress(OSError):  # no second error when stdout is flushed at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE (128 + 13) reports it


def run() -> NoReturn:
    """The ``weft`` command: :func:`main`, then exit. Everything left is moved out of the
    garbage collector's reach first: the interpreter's teardown collects once per stage,
    each pass walking all of it (~0.19 s of the ~0.7 s a `weft sync --once` took)."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
