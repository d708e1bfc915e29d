"""``weft`` starts fast: help loads no heavy library, and the lazy parser says what the full one says."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import client.cli as cli
import server.auth
import server.cli

# What a command's own module may load, but ``weft --help`` must not.
HEAVY = ("aiohttp", "pycrdt", "pydantic", "jwt", "cryptography", "rich")

# Runs weft's main(ARGS) in a fresh interpreter, then writes the loaded modules to FILE.
LOADED_AFTER_MAIN = """
import json, sys
from client.cli import main
out, argv = sys.argv[1], sys.argv[2:]
try:
    main(argv)
except SystemExit:
    pass
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def loaded_by(tmp_path: Path, *argv: str) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER_MAIN, str(out), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "usage: weft" in done.stdout + done.stderr
    return {name.split(".")[0] for name in json.loads(out.read_text())}


@pytest.mark.parametrize(
    "argv", [["--help"], [], ["bogus"], ["token", "create", "--help"], ["serve", "--help"]]
)
def test_help_loads_no_heavy_library(tmp_path: Path, argv: list[str]) -> None:
    assert loaded_by(tmp_path, *argv).isdisjoint(HEAVY)


def test_the_control_a_command_loads_its_module(tmp_path: Path) -> None:
    """The check above can fail: ``weft history --help`` does load aiohttp and pycrdt."""
    assert {"aiohttp", "pycrdt"} <= loaded_by(tmp_path, "history", "--help")


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


def test_token_choices_mirror_server_auth() -> None:
    assert server.cli.SCOPES == server.auth.SCOPES
    assert server.cli.KEY_ALGORITHMS == server.auth.KEY_ALGORITHMS
