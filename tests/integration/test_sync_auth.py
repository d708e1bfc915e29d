"""``weft sync`` and the other commands against a server with auth on: what they say when
the token is refused or missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from client.cli import main
from client.testing import start_sync, sync_once
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


def test_without_a_token_the_commands_say_how_to_give_one(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They said the server's words, "missing token: pass ?token= or Authorization:
    Bearer", which are about HTTP, not about the command."""
    hint = "the server needs a token: pass --token or set WEFT_TOKEN"
    result = sync_once(tmp_path, server.ws_url, TENANT, "tokenless")
    assert result.returncode == 1, result.stdout
    assert f"the server refused this device (401): {hint}\n" in result.stdout
    where = ["--server", server.url, "--tenant", TENANT, "--project", "tokenless"]
    with pytest.MonkeyPatch.context() as env:
        env.delenv("WEFT_TOKEN", raising=False)
        for argv in (["history", "a.txt", *where], ["conflicts", "list", *where]):
            assert main(argv) == 1
            assert capsys.readouterr().err == f"weft {argv[0]}: {hint}\n"
        assert main(["history", "a.txt", *where, "--token", "bad.token.x"]) == 1
        assert "malformed token" in capsys.readouterr().err  # a token given: the server's words


@pytest.mark.parametrize("quiet", [(), ("-q",)], ids=["default", "quiet"])
def test_a_folder_bound_to_a_refused_project_says_it_is_bound_to_the_new_one(
    server: ServerProcess, tmp_path: Path, quiet: tuple[str, ...]
) -> None:
    """A first run with a mistyped --project that the server refuses, then the right one:
    the folder is bound to the new project with a warning, said once, without -v too
    (and with -q, which prints warnings). It was said only with -v (found in a
    walkthrough)."""
    token = token_for(projects=["site"])
    (tmp_path / "a.txt").write_text("a\n")
    result = sync_once(tmp_path, server.ws_url, TENANT, "typo", token=token)
    assert result.returncode == 1, result.stdout
    assert "the server refused this device (403)" in result.stdout
    result = sync_once(tmp_path, server.ws_url, TENANT, "site", token=token, args=quiet)
    assert result.returncode == 0, result.stdout
    warning = "bound to acme/typo, which it never synced with: now acme/site"
    assert result.stdout.count(warning) == 1, result.stdout


def test_the_device_line_comes_before_a_refusal(server: ServerProcess, tmp_path: Path) -> None:
    """A folder synced before, run without a token: "the server refused this device
    (401)" was printed before the "device ..." line (the refusal came while the
    workspace reopened its documents; found in a walkthrough)."""
    for n in range(20):
        (tmp_path / f"f{n}.txt").write_text(f"{n}\n")
    result = sync_once(tmp_path, server.ws_url, TENANT, "order", token=token_for())
    assert result.returncode == 0, result.stdout
    result = sync_once(tmp_path, server.ws_url, TENANT, "order")
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert 0 <= out.find(" device dev-") < out.index("the server refused this device"), out


def test_a_token_that_expires_while_offline_edits_wait_says_what_is_not_sent(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """A running sync whose token expired stopped saying only "the server refused this
    device (401): token expired", however many edits it had not sent. Now it also says
    which, and that they stay on this device (sent by a run with a new token)."""
    server = weft_server_factory(env=AUTH_ENV)
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    short = token_for(ttl=3)
    issued = time.monotonic()
    sync = start_sync(
        folder, server.ws_url, TENANT, "expiring", token=short, args=("--max-backoff", "0.2")
    )
    try:
        sync.wait_for("in sync")
        server.terminate()
        sync.wait_for("offline")
        (folder / "a.txt").write_text("a\nedited offline\n")
        sync.wait_for("a.txt: +15 -0 chars")
        time.sleep(max(0.0, 4.0 - (time.monotonic() - issued)))  # (expired)
        restarted = weft_server_factory(store=server.store, port=server.port, env=AUTH_ENV)
        assert sync.proc.wait(15) == 1, sync.output()
    finally:
        sync.terminate()
    output = sync.output()
    assert "token expired" in output, output
    assert (
        "NOT in sync: 1 local change(s) in 1 file(s) not sent yet (a.txt): kept on this "
        "device, sent on the next run" in output
    ), output
    result = sync_once(folder, restarted.ws_url, TENANT, "expiring", token=token_for())
    assert result.returncode == 0, result.stdout
