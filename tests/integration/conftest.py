"""Fixtures for the integration tests.

The fixtures that start real weft server processes (``python -m server``) live in
``tests/conftest.py`` (shared with ``tests/interop/``) and keep these names:

- ``weft_server`` → ``str``: the base URL (``http://127.0.0.1:PORT``) of a dev-mode server
  (auth off) on a fresh SQLite store in ``tmp_path``; terminated (SIGTERM) afterwards.
- ``weft_server_factory`` → ``start(**kwargs) -> ServerProcess``: start as many servers
  as a test needs, with ``env={"WEFT_SECRET": ...}``, ``store=...`` (e.g. the same file
  for two instances), ``args=[...]``, ``workdir=...``; every one is stopped afterwards.
  ``ServerProcess`` (see :mod:`server.testing`) has ``url``, ``ws_url``, ``port``,
  ``store``, ``log()``, ``terminate()`` (SIGTERM, drains) and ``kill()`` (SIGKILL).
- ``weft_module_server_factory``: the same, shared by the tests of one module.

This folder adds ``http``: an aiohttp client session for one test, which closes every
:class:`server.testing.YPeer` opened through it.

Helpers, in :mod:`server.testing`: a y-websocket peer (``YPeer``), tokens for a server
started with ``env=AUTH_ENV`` (``token_for``), one REST call (``call_api``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from server.testing import client_session


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session
