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


def _exit_codes(text: str) -> str:
    """The "then exits ... bad input." sentence of ``weft sync``, words only."""
    words = " ".join(text.replace("`", "").split())
    found = re.search(r"then exits (.*?bad input)", words)
    assert found is not None, "no exit codes said"
    return found.group(1)


def test_weft_sync_help_and_the_readme_list_the_same_exit_codes() -> None:
    """--help said "1 on failure or --timeout" while the README also listed read-only
    edits left unsent (found in a walkthrough)."""
    from client.sync_cli import DESCRIPTION

    readme = (ROOT / "README.md").read_text().split("\n## Syncing a folder", 1)[1]
    assert _exit_codes(DESCRIPTION) == _exit_codes(readme)
    assert "read-only edits left unsent" in _exit_codes(DESCRIPTION)


def test_no_asyncio_wait_for_in_weft_code() -> None:
    """``asyncio.wait_for`` swallows a cancel that lands as its wait ends on Python 3.11
    (fixed in 3.12): a link's sender woken just as its connection was refused ran on,
    and weft sync --once hung. weft's own code waits with ``asyncio.timeout``."""
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in ("client", "server", "crdt")
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line and not line.lstrip().startswith("#")
    ]
    assert found == [], found


def _readme_env_table() -> dict[str, str]:
    """The environment-only settings table of "Running the server": name -> default."""
    section = (ROOT / "README.md").read_text().split("\n## Running the server", 1)[1]
    section = section.split("\n### ", 1)[0]
    defaults: dict[str, str] = {}
    for row in re.findall(r"^\| (`[A-Z_]+`.*?) \| (.*?) \|", section, flags=re.M):
        names = re.findall(r"`([A-Z_]+)`", row[0])
        values = [v.strip() for v in row[1].split(" / ")]
        if len(values) != len(names):  # `A`, `B` | one default for both
            values = values[:1] * len(names)
        defaults.update(zip(names, values, strict=True))
    return defaults


def _said(value: object) -> str:
    """A setting's default as the README writes it."""
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float) and value == int(value):
        whole = int(value)
        return f"{whole >> 20} MiB" if whole >= 1 << 20 and whole % (1 << 20) == 0 else str(whole)
    return str(value)


def test_every_server_setting_is_in_the_readme_with_its_default() -> None:
    """Every ``WEFT_*`` setting the server reads is named in the README, and the ones in
    its table of environment-only settings with their real default (the README sent
    operators to server/config.py for most of them)."""
    from server.config import Settings

    readme = (ROOT / "README.md").read_text()
    table = _readme_env_table()
    for name, field in Settings.model_fields.items():
        env = name.upper()
        assert f"WEFT_{env}" in readme or f"`{env}`" in readme, env
        if env in table and field.default_factory is None:
            assert table[env] == _said(field.default), (env, table[env], field.default)
    assert {"COMMIT_MAX_UPDATES", "SEND_QUEUE_FRAMES", "REFUSAL_HOLD_SECONDS"} <= set(table)


def test_every_weft_variable_the_readme_names_exists() -> None:
    """A ``WEFT_*`` name in the README is a setting of the server or a variable the
    client, the tests or the bench read."""
    from server.config import Settings

    named = set(re.findall(r"WEFT_[A-Z0-9_]*[A-Z0-9]", (ROOT / "README.md").read_text()))
    known = {f"WEFT_{name.upper()}" for name in Settings.model_fields}
    for package in ("client", "server", "crdt", "bench", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            known |= set(re.findall(r"[\"'](WEFT_[A-Z0-9_]+)[\"']", path.read_text()))
    assert named - known == set()
