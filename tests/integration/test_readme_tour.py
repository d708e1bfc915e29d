"""The README's "First tour", run as written.

Its ``sh`` blocks run in order in one ``bash`` (errexit, pipefail: a command that fails,
a flag renamed say, stops the tour) in an empty folder, against a real server process.
Only the ports change: ``8765`` becomes this test's server's and ``8766`` (the tour's
own server with auth on) another free port. ``weft`` is this checkout's CLI and
``python3`` this interpreter, as in a shell where the clone's ``.venv`` is activated.

After each block the test checks what the tour says it does (files converge, a conflict
is said, listed and resolved, the restored folder holds the old text, ...), and that
every phrase the block's comments quote (``# ... "in sync: ..."``; ``...`` stands for
any text) is in what the block printed or in a log file it wrote (``desk.log``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.testing import REPO, get_json
from server.testing import ServerProcess, free_port, start_server

pytestmark = pytest.mark.functional

BLOCK_SECONDS = 20.0
"""The longest one block may take (the whole tour takes about 15 s)."""

RESOLVED = "eggs\noat milk\nsoy milk\nbread\n"
"""The text the tour resolves its conflict with."""


def tour_section(readme: str) -> str:
    start = readme.index("\n## First tour\n")
    return readme[start : readme.index("\n## ", start + 1)]


def tour_blocks(readme: str) -> list[str]:
    """The ``sh`` blocks of the tour, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", tour_section(readme), re.S | re.M)


def on_ports(block: str, port: int, auth_port: int) -> str:
    return re.sub(r"\b8766\b", str(auth_port), re.sub(r"\b8765\b", str(port), block))


def quoted(block: str) -> list[list[str]]:
    """The phrases the block's comments quote, each split at its ``...``."""
    phrases = []
    for line in block.splitlines():
        comment = re.split(r"(?:^|\s)#\s", line, maxsplit=1)
        if len(comment) == 2:
            for phrase in re.findall(r'"([^"]+)"', comment[1]):
                phrases.append([part for part in phrase.split("...") if part.strip()])
    return phrases


@dataclass
class Shell:
    """One ``bash`` process the blocks are fed to, so that variables and background
    jobs carry from one block to the next, as in a reader's shell."""

    proc: subprocess.Popen[bytes]
    folder: Path
    work: Path

    def run(self, number: int, block: str) -> str:
        script = self.work / f"block{number}.sh"
        output = self.work / f"block{number}.out"
        done = self.work / f"block{number}.done"
        script.write_text(block)
        assert self.proc.stdin is not None
        line = f". {shlex.quote(str(script))} > {shlex.quote(str(output))} 2>&1\n"
        self.proc.stdin.write((line + f": > {shlex.quote(str(done))}\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + BLOCK_SECONDS
        while not done.exists():
            printed = output.read_text() if output.exists() else ""
            assert self.proc.poll() is None, f"block {number} failed:\n{block}\n{printed}"
            hangs = f"block {number} hangs:\n{block}\n{printed}\nlogs:\n{self.logs()}"
            assert time.monotonic() < deadline, hangs
            time.sleep(0.05)
        return output.read_text()

    def logs(self) -> str:
        return "".join(path.read_text() for path in sorted(self.folder.glob("*.log")))


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    folder, work, bin_dir = tmp_path / "tour", tmp_path / "shell", tmp_path / "bin"
    for path in (folder, work, bin_dir):
        path.mkdir()
    weft = bin_dir / "weft"
    weft.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m client.cli "$@"\n')
    weft.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with (work / "bash.log").open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
            start_new_session=True,  # its background jobs too: stopped together below
        )
    try:
        yield Shell(proc, folder, work)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):  # what a failed tour left running
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def said(shell: Shell, output: str, phrases: list[list[str]]) -> None:
    """Every quoted phrase is in ``output`` or, soon (a background job writes them), in
    the tour's log files."""
    deadline = time.monotonic() + 10
    while True:
        text = output + shell.logs()
        missing = [p for p in phrases if not all(part in text for part in p)]
        if not missing:
            return
        assert time.monotonic() < deadline, f"not printed: {missing}\n{text}"
        time.sleep(0.05)


def api(server: ServerProcess, route: str) -> str:
    return f"{server.url}/api/v1/acme/notes/{route}"


def check_sync(shell: Shell, server: ServerProcess, output: str) -> None:
    files = shell.folder / "laptop" / "list.md", shell.folder / "desk" / "list.md"
    assert [path.read_text() for path in files] == ["eggs\nmilk\nbread\n"] * 2


def check_conflict(shell: Shell, server: ServerProcess, output: str) -> None:
    said_line = "conflict: list.md: 1 region changed on both sides (base line 2); see `weft"
    assert said_line in output
    assert re.search(r"^(oat soy|soy oat) milk$", output, re.M), output
    conflicts = get_json(api(server, "conflicts"))["conflicts"]
    assert [(c["path"], c["status"], c["resolution"]) for c in conflicts] == [
        ("list.md", "resolved", "kept both")
    ]
    assert conflicts[0]["id"] in conflicts[0]["ours"]["versionstamps"]  # an offline branch's
    for device in ("laptop", "desk"):
        assert (shell.folder / device / "list.md").read_text() == RESOLVED
    assert get_json(api(server, "docs/list.md?format=json"))["text"] == RESOLVED


def check_time_travel(shell: Shell, server: ServerProcess, output: str) -> None:
    assert "eggs\nmilk\n" in output  # weft show at the first version
    assert "\n-milk\n" in output and "\n+bread\n" in output  # weft diff
    before = shell.folder / "before"
    assert sorted(p.name for p in before.iterdir()) == [".weft-manifest.json", "list.md"]
    assert (before / "list.md").read_text() == RESOLVED
    assert (shell.folder / "laptop" / "list.md").read_text() == RESOLVED
    newest = get_json(api(server, "history/" + urllib.parse.quote("list.md")))["versions"][0]
    assert (newest["revert"], newest["deleted"]) == (True, False)


def check_auth(shell: Shell, server: ServerProcess, output: str) -> None:
    assert output.count("in sync: ") == 1, output  # with the token; without it:
    refused = "the server refused this device (401): the server needs a token: pass --token"
    assert refused in output and output.endswith("exit 1\n"), output


CHECKS: list[Callable[[Shell, ServerProcess, str], None]] = [
    check_sync,
    check_conflict,
    check_time_travel,
    check_auth,
]


@pytest.mark.slow  # about 15 s: some 25 weft processes, each a Python start
def test_the_readme_tour_runs_as_written(shell: Shell, tmp_path: Path) -> None:
    blocks = tour_blocks((REPO / "README.md").read_text())
    assert len(blocks) == len(CHECKS), "a tour block was added or removed: check it here"
    server = start_server(tmp_path / "server")
    try:
        auth_port = free_port()
        for number, (block, check) in enumerate(zip(blocks, CHECKS, strict=True), 1):
            output = shell.run(number, on_ports(block, server.port, auth_port))
            said(shell, output, quoted(block))
            check(shell, server, output)
    finally:
        server.terminate()


def test_the_tour_blocks_name_the_ports_the_test_replaces() -> None:
    """The blocks reach the servers only through the ports the test replaces (a new
    address, such as 127.0.0.1:8765, would send the test's tour to another server)."""
    for block in tour_blocks((REPO / "README.md").read_text()):
        for address in re.findall(r"(?:localhost|127\.0\.0\.1|--port )[:\s]?(\d+)", block):
            assert address in {"8765", "8766"}, address


def test_the_next_steps_name_sections_the_readme_has() -> None:
    readme = (REPO / "README.md").read_text()
    next_steps = tour_section(readme).split("**Next**", 1)[1]
    headings = set(re.findall(r"^#+ (.+)$", readme, re.M))
    names = re.findall(r'"([^"]+)"', next_steps.replace("\n", " "))
    assert names and set(names) <= headings, set(names) - headings
