"""``weft`` starts fast: help loads no heavy library, and the lazy parser says what the full one says.

Checked by what a fresh interpreter has in ``sys.modules`` after ``main(argv)``, not by
wall time (which flakes on a loaded CI machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import client.cli as cli
import client.timetravel_cli
import crdt.timetravel
import server.auth
import server.cli

# What running a command may load, but no help (``weft --help``, ``weft history --help``,
# ``weft token create --help``...) may: the packages, and these modules. asyncio alone is
# most of a 0.05 s start.
HEAVY = ("aiohttp", "pycrdt", "pydantic", "jwt", "cryptography", "rich", "blake3", "msgpack")
ROOT = Path(cli.__file__).parents[1]  # `python -m client.cli` imports this checkout
HEAVY_MODULES = ("asyncio", "crdt.history", "crdt.timetravel", "crdt.kv", "server.app")

# Runs weft's main(ARGS) in a fresh interpreter, then writes its exit code and the loaded
# modules to FILE.
LOADED_AFTER_MAIN = """
import json, sys
from client.cli import main
out, argv = sys.argv[1], sys.argv[2:]
try:
    code = main(argv)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def run_main(tmp_path: Path, *argv: str) -> tuple[int, set[str], str]:
    """``main(argv)`` in a fresh interpreter: exit code, loaded modules, stdout + stderr."""
    out = tmp_path / "loaded.json"
    done = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER_MAIN, str(out), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"]), done.stdout + done.stderr


def heavy_in(modules: set[str]) -> set[str]:
    """The heavy packages and modules among ``modules``."""
    return {m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY_MODULES}


def command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command and nested subcommand of ``parser``: ``("token",), ("token", "create")``."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += [(*prefix, name), *command_paths(child, (*prefix, name))]
    return out


COMMAND_PATHS = command_paths(cli.build_parser(full=True))
HELP_RUNS = [["--help"], [], ["bogus"], *([*path, "--help"] for path in COMMAND_PATHS)]


def test_every_command_is_in_the_help_runs() -> None:
    """So a command added later is checked too (and the walk does reach nested ones)."""
    listed = {name for commands in cli.COMMANDS.values() for name, _ in commands}
    assert {path[0] for path in COMMAND_PATHS} == listed
    assert {("token", "create"), ("conflicts", "list"), ("conflicts", "resolve")} <= set(
        COMMAND_PATHS
    )


@pytest.mark.parametrize("argv", HELP_RUNS, ids=" ".join)
def test_help_loads_no_heavy_library(tmp_path: Path, argv: list[str]) -> None:
    code, modules, output = run_main(tmp_path, *argv)
    assert "usage: weft" in output
    assert code == (0 if "--help" in argv else 2)
    assert heavy_in(modules) == set()


def test_the_control_a_command_loads_its_module(tmp_path: Path) -> None:
    """The check above can fail: a command that runs (``weft show`` on a real, empty
    SQLite store: unknown tenant, exit 2) loads what its help does not."""
    store = tmp_path / "weft.db"
    store.touch()
    argv = ["show", "a.md", "--store", f"sqlite:///{store}", "--tenant", "acme", "--project", "p"]
    code, modules, output = run_main(tmp_path, *argv)
    assert code == 2 and "unknown tenant" in output
    assert {"aiohttp", "pycrdt", "rich", "asyncio", "crdt.history", "crdt.timetravel"} <= (
        heavy_in(modules)
    )


def test_the_head_default_is_the_time_travel_head() -> None:
    """timetravel_cli spells ``head`` itself so that its help need not load crdt.timetravel."""
    assert client.timetravel_cli.HEAD == crdt.timetravel.HEAD


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str | None]]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(str(choice.dest), choice.help) for choice in sub._choices_actions]


def test_commands_table_matches_what_the_modules_register() -> None:
    listed = [command for commands in cli.COMMANDS.values() for command in commands]
    full = cli.build_parser(full=True)
    assert subcommands(full) == listed
    assert cli.build_parser().format_help() == full.format_help()
    for module, commands in cli.COMMANDS.items():
        parser = argparse.ArgumentParser()
        __import__(module, fromlist=["register"]).register(parser.add_subparsers())
        assert subcommands(parser) == list(commands), module


def command_help(parser: argparse.ArgumentParser, command: str) -> str:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = sub.choices[command]
    return chosen.format_help()


@pytest.mark.parametrize("command", [name for c in cli.COMMANDS.values() for name, _ in c])
def test_each_command_help_is_its_modules_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main([command, "--help"])
    assert stopped.value.code == 0
    expected = command_help(cli.build_parser(full=True), command)
    assert capsys.readouterr().out == expected
    assert "--help" in expected  # the real parser, not a placeholder


def test_a_wrong_guess_of_the_command_still_runs_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Should a top-level option ever take a value, main parses again with the module."""
    monkeypatch.setattr(cli, "_command", lambda argv: None)
    assert cli.main(["token"]) == 2  # token's own handler: its usage on stderr
    assert "usage: weft token" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        cli.main(["token", "create", "--tenant", "acme", "--bogus"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["show", "notes.md", "--bogus"], "usage: weft show "),
        (["token", "create", "--tenant", "acme", "--bogus"], "usage: weft token create "),
        (["conflicts", "list", "--bogus"], "usage: weft conflicts list "),
    ],
)
def test_an_unknown_option_shows_the_usage_of_its_subcommand(
    capsys: pytest.CaptureFixture[str], argv: list[str], usage: str
) -> None:
    """It showed the top-level ``usage: weft [-h] COMMAND``."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and err.endswith("error: unrecognized arguments: --bogus\n")


def test_token_choices_mirror_server_auth() -> None:
    assert server.cli.SCOPES == server.auth.SCOPES
    assert server.cli.KEY_ALGORITHMS == server.auth.KEY_ALGORITHMS
    assert server.cli.MAX_TTL_SECONDS == server.auth.MAX_TTL_SECONDS


STORE = ["--store", "sqlite:///nowhere/weft.db", "--tenant", "acme", "--project", "p"]


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["conflicts", "resolve", "0" * 24, *STORE, "--note", "bad\udcff"], "--note"),
        (["conflicts", "resolve", "0" * 24, *STORE, "--note=bad\udcff"], "--note"),
        (["conflicts", "list", "--server", "http://h:1", "--tenant", "bad\udcff"], "--tenant"),
        (["revert", "--to", "head", *STORE, "--user", "bad\udcff"], "--user"),
        (["history", "bad\udcff", *STORE], "PATH"),
        (["sync", "d", "--server", "ws://h:1", "--project", "bad\udcff"], "--project"),
        (["token", "create", "--tenant", "acme", "--user", "bad\udcff"], "--user"),
        (["serve", "--host", "bad\udcff"], "--host"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]),
)
def test_a_text_argument_that_is_not_utf8_is_refused_and_named(
    capsys: pytest.CaptureFixture[str], argv: list[str], refused: str
) -> None:
    """Python gives a byte that is not UTF-8 (``$'bad\\xff'`` in a shell) as a lone
    surrogate: ``--note`` failed in msgpack, ``--tenant`` in ``quote()``, ``--user`` in
    revert's update, each with a traceback. Every command refuses it while parsing
    (exit 2), before anything is read or written, and says which argument."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {refused}: b'bad\\xff' is not valid UTF-8\n" in err, err


def test_a_variable_that_is_not_utf8_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEFT_TENANT", "bad\udcff")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["conflicts", "list", "--server", "http://h:1", "--project", "p"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "argument --tenant: b'bad\\xff' is not valid UTF-8 (from WEFT_TENANT)\n" in err, err


@pytest.mark.parametrize(
    ("argv", "variable", "flag"),
    [
        (
            ["-m", "client.cli", "show", "a.md", "--tenant", "t", "--project", "p"],
            "WEFT_SERVER",
            "--server",
        ),
        (
            ["-m", "client.cli", "history", "a.md", "--tenant", "t", "--project", "p"],
            "WEFT_STORE",
            "--store",
        ),
        (
            ["-m", "client.cli", "conflicts", "list", "--tenant", "t", "--project", "p"],
            "WEFT_STORE",
            "--store",
        ),
        (["-m", "client.cli", "serve", "--port", "0"], "WEFT_STORE", "--store"),
        (["-m", "server", "--port", "0"], "WEFT_STORE", "--store"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[1:3]),
)
def test_a_location_variable_that_is_not_utf8_is_a_usage_error(
    tmp_path: Path, argv: list[str], variable: str, flag: str
) -> None:
    """``WEFT_SERVER`` and ``WEFT_STORE`` are read after parsing (the time-travel and
    conflicts commands) or by the server's settings: bytes that are not UTF-8 there were
    a plain error ("unknown store URL '\\udcff'", exit 1), not the usage error
    ``weft sync`` and the other variables get."""
    done = run_with_variable(tmp_path, argv, variable, b"sqlite:///\xff")
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 2, err
    assert err.startswith("usage: "), err
    assert (
        f"error: argument {flag}: b'sqlite:///\\xff' is not valid UTF-8 (from {variable})\n" in err
    )


def test_a_location_variable_the_command_does_not_read_is_not_checked(tmp_path: Path) -> None:
    """With ``--server`` given, ``WEFT_STORE`` is not read: whatever it holds."""
    argv = ["show", "a.md", "--server", "http://127.0.0.1:1", "--tenant", "t", "--project", "p"]
    done = run_with_variable(tmp_path, ["-m", "client.cli", *argv], "WEFT_STORE", b"\xff")
    assert (done.returncode, done.stderr) == (
        1,
        b"weft show: cannot reach the server at http://127.0.0.1:1: connection refused\n",
    )


def run_with_variable(
    cwd: Path, argv: list[str], variable: str, value: bytes
) -> subprocess.CompletedProcess[bytes]:
    """``python ARGV`` in ``cwd`` (a store it creates goes there), importing this
    checkout, with ``variable`` set to ``value`` (any bytes) and no other ``WEFT_*``."""
    env = {k: v for k, v in os.environb.items() if not k.startswith(b"WEFT_")}
    env[b"PYTHONPATH"] = bytes(ROOT)
    env[variable.encode()] = value
    return subprocess.run(
        [sys.executable, *argv], env=env, cwd=cwd, capture_output=True, timeout=60
    )


def test_a_file_name_may_hold_any_bytes(tmp_path: Path) -> None:
    """A folder or key file whose name is not UTF-8 is a name Linux allows (`weft sync`
    syncs such a folder): it is not refused as text, it is looked for."""
    missing = f"{tmp_path}/not-utf8-\udcff"
    sync = ["sync", missing, "--server", "ws://127.0.0.1:1", "--tenant", "a", "--project", "p"]
    code, _, output = run_main(tmp_path, *sync)
    assert code == 2 and "is not a directory" in output, output
    token = ["token", "create", "--tenant", "a", "--private-key", missing]
    code, _, output = run_main(tmp_path, *token)
    assert code == 2 and "No such file or directory" in output, output
    # a store's file (the review of the check: refused; so was --public-key's)
    store = ["history", "a.txt", "--store", f"sqlite:///{missing}/weft.db", "--tenant", "a"]
    code, _, output = run_main(tmp_path, *store, "--project", "p")
    assert code == 2 and "not valid UTF-8" not in output, output
