"""The official Yjs client keeps editing while the weft server restarts: nothing is lost.

``restart.mjs`` runs two providers that stream small inserts; in the middle this test
stops the server (SIGTERM: drain; or SIGKILL: a crash) and starts a new process on the
same port and the same SQLite file. The providers reconnect on their own; afterwards
both, and the store, hold every token either of them inserted, each exactly once.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.interop, pytest.mark.functional, pytest.mark.slow]

ScriptCommand = Callable[[str, dict[str, Any]], list[str]]  # the fixture (conftest.py)
ROOM = "src/restart.txt"


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


class Script:
    """A running script whose stdout lines are read with a timeout."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_lines, args=(self.proc.stdout, self._queue), daemon=True).start()

    def next_json(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no output within {timeout} s; so far: {self.out}") from None
            if line is None:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"script ended early; stdout: {self.out}\nstderr: {stderr}")
            self.out.append(line)
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def stored_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.url}/api/v1/acme/site/docs/{ROOM}", timeout=10) as r:
        text: str = r.read().decode()
        return text


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_server_restart_in_the_middle_loses_nothing(
    stop: str, weft_server_factory: StartServer, script_command: ScriptCommand, tmp_path: Path
) -> None:
    first = weft_server_factory()
    command = script_command(
        "restart", {"url": f"{first.ws_url}/acme/site", "room": ROOM, "deadlineMs": 60000}
    )
    script = Script(command, Path(command[1]).parent)
    try:
        ready = script.next_json(timeout=30)
        assert ready == {"phase": "ready"}, ready
        time.sleep(0.3)  # edits flow to the running server
        if stop == "sigterm":
            assert first.terminate() == 0
        else:
            first.kill()
        time.sleep(0.3)  # edits pile up offline
        second = weft_server_factory(store=first.store, port=first.port)
        script.say("restarted")
        result = script.next_json(timeout=60)
    finally:
        script.stop()
    assert result["ok"], result
    assert result["sawDisconnect"], "the providers never noticed the restart"
    assert result["duringOutage"] > 0
    assert result["missing"] == []
    text = result["text"]
    for token in result["tokens"]:
        assert text.count(token) == 1, f"{token} missing or doubled"
    assert len(text) == sum(len(t) for t in result["tokens"])
    assert stored_text(second) == text
    assert "ERROR" not in second.log(), second.log()
