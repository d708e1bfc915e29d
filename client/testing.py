"""Helpers for tests and benchmarks that run real ``weft sync`` processes.

Not imported by the client itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycrdt import Map

from server.testing import ChildProcess, Listening, YPeer, client_session

REPO = Path(__file__).resolve().parents[1]


def sync_command(
    folder: Path,
    ws_url: str,
    tenant: str,
    project: str,
    *,
    token: str | None = None,
    once: bool = False,
    args: Sequence[str] = (),
) -> list[str]:
    command = [sys.executable, "-m", "client.cli", "sync", str(folder), "--server", ws_url]
    command += ["--tenant", tenant, "--project", project]
    if token:
        command += ["--token", token]
    if once:
        command.append("--once")
    return [*command, *args]


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class SyncProcess(ChildProcess):
    """A ``weft sync DIR`` child process, its output going to a log file (``terminate``:
    SIGTERM and wait; ``kill``: a crash)."""

    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float = 20.0, *, count: int = 1) -> None:
        """Wait until ``text`` appears ``count`` times in the output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"weft sync exited ({self.proc.returncode}):\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in weft sync output after {timeout} s:\n{self.output()}")


def start_sync(
    folder: Path,
    ws_url: str,
    tenant: str,
    project: str,
    *,
    token: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> SyncProcess:
    """Start ``weft sync`` (kept running) on ``folder``."""
    log_path = log_path or folder.parent / f"{folder.name}-sync-{time.monotonic_ns()}.log"
    command = sync_command(folder, ws_url, tenant, project, token=token, args=args)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=_env(env), stdout=log, stderr=subprocess.STDOUT
        )
    return SyncProcess(proc, log_path)


def sync_once(
    folder: Path,
    ws_url: str,
    tenant: str,
    project: str,
    *,
    token: str | None = None,
    args: Sequence[str] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``weft sync --once`` and return its result (stdout and stderr together)."""
    command = sync_command(folder, ws_url, tenant, project, token=token, once=True, args=args)
    return subprocess.run(
        command,
        cwd=REPO,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def sync_named(folder: Path, server: Listening, tenant: str, project: str) -> tuple[int, str]:
    """``weft sync --once`` on ``folder`` as the device named after it (``--device-id``
    the folder's name, so that what other devices say names it): its exit code and
    output."""
    result = sync_once(folder, server.ws_url, tenant, project, args=["--device-id", folder.name])
    return result.returncode, result.stdout


def doc_text(server: Listening, tenant: str, project: str, path: str) -> str | None:
    """The text of the document ``path`` on ``server`` (REST); None when there is none."""
    return get_text(f"{server.url}/api/v1/{tenant}/{project}/docs/{urllib.parse.quote(path)}")


def doc_flags(server: Listening, tenant: str, project: str, path: str) -> dict[str, Any]:
    """The ``weft`` map of the document ``path`` on ``server``, as a new peer gets it
    (``deleted``, and the flags of :mod:`client.unsynced`)."""

    async def read() -> dict[str, Any]:
        async with client_session() as session:
            peer = await YPeer.connect(session, f"{server.ws_url}/{tenant}/{project}/{path}")
            return peer.doc.get("weft", type=Map).to_py() or {}

    return asyncio.run(read())


def synced_pair(
    tmp_path: Path, server: Listening, tenant: str, project: str, files: Mapping[str, str]
) -> tuple[Path, Path]:
    """The folders ``laptop`` and ``desk`` in ``tmp_path``, both synced (with
    :func:`sync_named`) with ``files`` (path -> text), written in ``laptop`` first."""
    laptop, desk = tmp_path / "laptop", tmp_path / "desk"
    laptop.mkdir()
    desk.mkdir()
    for path, text in files.items():
        (laptop / path).parent.mkdir(parents=True, exist_ok=True)
        (laptop / path).write_text(text)
    for folder in (laptop, desk):
        code, out = sync_named(folder, server, tenant, project)
        assert code == 0, out
    return laptop, desk


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a synced folder (outside ``.weft/``) with its bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(".weft/"):
            out[rel] = path.read_bytes()
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached in {timeout} s")


def get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get_text(url: str, token: str | None = None) -> str | None:
    """A document's text over REST; None when it does not exist."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


async def weft_here(*args: str) -> subprocess.CompletedProcess[str]:
    """``client.cli.main(ARGS)`` in a thread of this process, its output captured: the
    same code as a ``weft`` child process without the start-up, for long lists of cases."""
    from client.cli import main  # (the CLI imports the whole client: only when used)

    def run() -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

    return await asyncio.to_thread(run)
