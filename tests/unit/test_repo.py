"""The house rules that keep the repository honest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)


def test_readme_opens_with_exactly_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", head, flags=re.S)
    assert len(commands) == 2
    assert all("\n" not in c for c in commands), "each command is one copy-paste line"
    assert "weft serve" in commands[0]
    assert "pytest" in commands[1] and "ruff check" in commands[1] and "mypy" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = readme_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_importing_crdt_loads_no_network_library() -> None:
    code = (
        "import sys, crdt, crdt.history, crdt.codec, crdt.kv, crdt.kv.sqlite;"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'aiohttp', 'server', 'client'}];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
