"""Fixtures shared by every test folder: real weft server processes (``python -m server``).

- ``weft_server`` → ``str``: the base URL (``http://127.0.0.1:PORT``) of a dev-mode server
  (auth off) on a fresh SQLite store in ``tmp_path``; terminated (SIGTERM) afterwards.
- ``weft_server_factory`` → ``start(**kwargs) -> ServerProcess``: start as many servers
  as a test needs, with ``env={"WEFT_SECRET": ...}``, ``store=...`` (e.g. the same file
  for two instances), ``args=[...]``, ``workdir=...``, ``port=...`` (e.g. a restart on
  the same port); every one is stopped afterwards. ``ServerProcess`` (see
  :mod:`server.testing`) has ``url``, ``ws_url``, ``port``, ``store``, ``log()``,
  ``terminate()`` (SIGTERM, drains) and ``kill()`` (SIGKILL).
- ``weft_module_server_factory``: the same, shared by the tests of one module.

A y-websocket peer for tests is :class:`server.testing.YPeer`.

The suite starts several hundred Python processes (servers, ``weft sync``); each compiled
weft's modules from source when the environment says ``PYTHONDONTWRITEBYTECODE`` (as
this CI's does): ~0.3 s of CPU per process. They are compiled once here instead.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.testing import ServerProcess, StartServer, start_server

REPO = Path(__file__).resolve().parent.parent
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # workers and the processes they start
sys.dont_write_bytecode = False
for _package in ("crdt", "server", "client", "bench"):
    compileall.compile_dir(REPO / _package, quiet=1)


@contextlib.contextmanager
def _factory(base: Path) -> Iterator[StartServer]:
    started: list[ServerProcess] = []
    counter = 0

    def start(*, workdir: Path | None = None, **kwargs: Any) -> ServerProcess:
        nonlocal counter
        counter += 1
        server = start_server(workdir or base / f"server{counter}", **kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.terminate(timeout=10)


@pytest.fixture
def weft_server_factory(tmp_path: Path) -> Iterator[StartServer]:
    with _factory(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def weft_module_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StartServer]:
    with _factory(tmp_path_factory.mktemp("weft")) as start:
        yield start


@pytest.fixture
def weft_server(weft_server_factory: StartServer) -> str:
    """Base URL of a dev-mode server (auth off) on a fresh SQLite store."""
    return weft_server_factory().url
