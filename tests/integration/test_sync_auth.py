"""``weft sync`` against a server with auth on: what it says when the token is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.testing import sync_once
from server.testing import AUTH_ENV, ServerProcess, StartServer, token_for

pytestmark = pytest.mark.functional

TENANT = "acme"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


def test_a_refused_token_is_said_once_and_the_device_never_claims_online(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The health probe answers any caller: "online" came before the refusal, which was
    printed twice (the device's error, then weft sync's)."""
    (tmp_path / "a.txt").write_text("a\n")
    result = sync_once(tmp_path, server.ws_url, TENANT, "refused", token="bad.token.x")
    assert result.returncode == 1, result.stdout
    assert result.stdout.count("the server refused this device (401): malformed token") == 1
    assert "online" not in result.stdout
    result = sync_once(tmp_path, server.ws_url, TENANT, "refused", token=token_for())
    assert result.returncode == 0, result.stdout
    assert result.stdout.count(f"online: ws://127.0.0.1:{server.port}\n") == 1
