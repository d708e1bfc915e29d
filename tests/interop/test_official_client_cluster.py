"""The official Yjs client against two weft instances on one store: awareness.

Two real ``weft serve`` processes (dev mode) on one SQLite file; ``awareness_cluster.mjs``
runs y-websocket providers on both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.testing import StartServer

pytestmark = [pytest.mark.interop, pytest.mark.functional]

RunScript = Callable[..., dict[str, Any]]  # the run_script fixture (conftest.py)
REMOVAL_MS = 3000  # the client's own awareness timeout is 30 s


def test_a_leaving_provider_is_removed_promptly_on_the_other_instance(
    weft_server_factory: StartServer, tmp_path: Path, run_script: RunScript
) -> None:
    """y-websocket echoes the states it receives; an instance must not take the other
    instance's clients for its own: they outlived their connection there until the
    client-side 30 s timeout, and their updates stopped reaching it."""
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    a_server = weft_server_factory(workdir=tmp_path / "a", store=store)
    b_server = weft_server_factory(workdir=tmp_path / "b", store=store)
    result = run_script(
        "awareness_cluster",
        {
            "urlA": f"{a_server.ws_url}/acme/site",
            "urlB": f"{b_server.ws_url}/acme/site",
            "room": "src/app.js",
            "removalTimeoutMs": REMOVAL_MS,
        },
    )
    print(
        f"\nremovals: a on A {result['aGoneOnA']} ms, a on B {result['aGoneOnB']} ms, "
        f"c on B {result['cGoneOnB']} ms; b's update on A {result['bUpdateOnA']} ms"
    )
    assert result["aGoneOnA"] < REMOVAL_MS
    assert result["aGoneOnB"] < REMOVAL_MS  # c still on A
    assert result["bUpdateOnA"] < REMOVAL_MS
    assert result["cGoneOnB"] < REMOVAL_MS  # nobody left on A
    assert result["bStates"] == 1  # b sees only itself
