"""Running the interop scripts (``tests/interop/*.mjs``) with Node.

The scripts use the official Yjs client stack (``yjs``, ``y-websocket``'s
``WebsocketProvider``, ``ws``) and editor bindings (CodeMirror 6 with
``y-codemirror.next``, ProseMirror with ``y-prosemirror``, Quill 2 with ``y-quill``, in
``jsdom``; Monaco with ``y-monaco`` in a headless Chromium driven by ``playwright-core``):
every package that ``package.json`` lists, installed by ``npm ci --prefix tests/interop``
(the README's test command). Without Node or without those packages the tests FAIL with a
message saying what to install, and so does the Monaco test without Chromium: an interop
suite that silently skips proves nothing.

Fixtures:

- ``node`` → the path of the ``node`` executable (checked: present, version ≥ 18,
  packages installed);
- ``chromium`` → the path of Debian's Chromium (``monaco.mjs`` drives it with
  ``playwright-core``, which downloads no browser of its own);
- ``run_script`` → ``run(name, options, timeout=60) -> dict``: run ``NAME.mjs`` with the
  options as one JSON argument and return its last JSON line, asserting ``ok``;
- ``script_command`` → ``command(name, options) -> list[str]``: the command line, for
  tests that talk to a script while it runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PACKAGES = tuple(json.loads((HERE / "package.json").read_text())["dependencies"])
MIN_NODE_MAJOR = 18
INSTALL = "npm ci --prefix tests/interop (see the README's test command)"
CHROMIUM_INSTALL = "apt-get update && apt-get install chromium (see the README's test command)"

RunScript = Callable[..., dict[str, Any]]
ScriptCommand = Callable[[str, dict[str, Any]], list[str]]


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable; fails (never skips) when the interop stack is missing."""
    path = shutil.which("node")
    if path is None:
        pytest.fail(
            "node is not installed: the interop tests need Node.js "
            f">= {MIN_NODE_MAJOR} and npm (apt-get install nodejs npm), then {INSTALL}",
            pytrace=False,
        )
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_NODE_MAJOR:
        pytest.fail(
            f"node {version or '(unknown version)'} is too old: "
            f"the interop tests need Node.js >= {MIN_NODE_MAJOR}",
            pytrace=False,
        )
    missing = [p for p in PACKAGES if not (HERE / "node_modules" / p / "package.json").is_file()]
    if missing:
        pytest.fail(
            f"npm packages missing from tests/interop/node_modules: {', '.join(missing)}; "
            f"run {INSTALL}",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's ``chromium``; fails (never skips) when it is not installed."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            f"chromium is not installed: the Monaco test runs it headless; {CHROMIUM_INSTALL}",
            pytrace=False,
        )
    return path


def parse_result(stdout: str) -> dict[str, Any]:
    """The last JSON line a script printed."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise AssertionError(f"the script printed no JSON result; stdout:\n{stdout}")


@pytest.fixture
def script_command(node: str) -> ScriptCommand:
    def command(name: str, options: dict[str, Any]) -> list[str]:
        script = HERE / f"{name}.mjs"
        assert script.is_file(), f"no interop script {script}"
        return [node, str(script), json.dumps(options)]

    return command


@pytest.fixture
def run_script(script_command: ScriptCommand) -> RunScript:
    def run(name: str, options: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        done = subprocess.run(
            script_command(name, options),
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = parse_result(done.stdout) if "{" in done.stdout else {}
        assert done.returncode == 0 and result.get("ok"), (
            f"{name}.mjs failed (exit {done.returncode}): {result.get('error')}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return result

    return run
