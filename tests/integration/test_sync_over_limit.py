"""A synced file that grows past the size limit (4 MiB) stops syncing, and says so on
every device; back under the limit, it syncs again (README, "Syncing a folder";
:mod:`client.overlimit`). Real ``weft sync`` processes on a real server, and folder
workspaces on a server in this process for the cases that need a smaller limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from client.events import Event
from client.folder import MAX_FILE_BYTES
from client.overlimit import OVER_LIMIT
from client.testing import get_text, start_sync, sync_once
from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import ServerProcess, StartServer, serve_in_process, until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
TEXT = "line 1\nline 2\n"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def sync(server: ServerProcess, folder: Path, project: str) -> tuple[int, str]:
    result = sync_once(folder, server.ws_url, TENANT, project, args=["--device-id", folder.name])
    return result.returncode, result.stdout


def server_text(server: ServerProcess, project: str, path: str) -> str | None:
    return get_text(f"{server.url}/api/v1/{TENANT}/{project}/docs/{path}")


def test_a_file_grown_past_the_limit_is_not_in_sync_and_every_device_says_so(
    server: ServerProcess, tmp_path: Path
) -> None:
    """It was "skipping big.txt" on the writing device, and "in sync" on both."""
    project = "grown"
    laptop, desk = tmp_path / "laptop", tmp_path / "desk"
    laptop.mkdir()
    desk.mkdir()
    (laptop / "big.txt").write_text(TEXT)
    (laptop / "small.txt").write_text(TEXT)
    for folder in (laptop, desk):
        assert sync(server, folder, project)[0] == 0
    over = TEXT + "x" * MAX_FILE_BYTES + "\n"
    (laptop / "big.txt").write_text(over)

    code, out = sync(server, laptop, project)
    assert code == 1, out
    assert "1 file(s) NOT in sync" in out and "in sync:" not in out, out
    limit = f"over the {MAX_FILE_BYTES}-byte limit"
    assert f"big.txt is {len(over)} bytes, {limit}: no longer synced" in out, out
    assert f"big.txt: {len(over)} bytes, {limit}: not synced" in out, out
    assert "skipping" not in out, out
    assert (laptop / "big.txt").read_text() == over  # never written over
    code, again = sync(server, laptop, project)  # a later run: still not in sync, said once
    assert code == 1 and again.count("no longer synced") == 1, again

    (desk / "small.txt").write_text(TEXT + "line 3 from desk\n")  # still syncs
    code, out = sync(server, desk, project)
    assert code == 0 and "in sync:" in out, out
    assert "big.txt is over the size limit on device laptop" in out, out
    assert "this copy holds its last synced text" in out, out
    assert (desk / "big.txt").read_text() == TEXT
    (desk / "big.txt").write_text(TEXT + "line 3 from desk\n")  # edited elsewhere meanwhile
    assert sync(server, desk, project)[0] == 0

    # Back under the limit: synced again, merged with the edit made elsewhere.
    (laptop / "big.txt").write_text("line 0 from laptop\n" + TEXT)
    code, out = sync(server, laptop, project)
    assert code == 0 and "in sync:" in out, out
    merged = "line 0 from laptop\n" + TEXT + "line 3 from desk\n"
    assert (laptop / "big.txt").read_text() == merged
    assert server_text(server, project, "big.txt") == merged
    assert (laptop / "small.txt").read_text() == TEXT + "line 3 from desk\n"
    code, out = sync(server, desk, project)
    assert code == 0 and "over the size limit" not in out, out
    assert (desk / "big.txt").read_text() == merged


def test_a_running_sync_says_once_and_syncs_the_file_again_once_under_the_limit(
    server: ServerProcess, tmp_path: Path
) -> None:
    project = "running"
    laptop, desk = tmp_path / "laptop", tmp_path / "desk"
    laptop.mkdir()
    desk.mkdir()
    (laptop / "big.txt").write_text(TEXT)
    assert sync(server, laptop, project)[0] == 0
    args = ["--device-id", "laptop", "--poll", "0.2"]
    running = start_sync(laptop, server.ws_url, TENANT, project, args=args)
    other = start_sync(desk, server.ws_url, TENANT, project, args=["--device-id", "desk"])
    try:
        running.wait_for("in sync")
        other.wait_for("in sync")
        # saved past the limit at once (a temporary file renamed over it: a growth in
        # steps is synced up to the limit, as any edit)
        (tmp_path / "saved").write_text(TEXT + "y" * MAX_FILE_BYTES + "\n")
        (tmp_path / "saved").rename(laptop / "big.txt")
        running.wait_for("no longer synced")
        other.wait_for("big.txt is over the size limit on device laptop")
        assert server_text(server, project, "big.txt") == TEXT
        (laptop / "big.txt").write_text(TEXT + "line 3\n")
        running.wait_for("big.txt is back under")
        deadline = time.monotonic() + 10
        while (desk / "big.txt").read_text() != TEXT + "line 3\n":
            assert time.monotonic() < deadline, other.output()
            time.sleep(0.05)
        assert running.output().count("no longer synced") == 1, running.output()
        assert "not writing" not in running.output()
    finally:
        running.terminate()
        other.terminate()


async def test_deleting_a_file_over_the_limit_clears_the_flag(tmp_path: Path) -> None:
    """The flag (``weft.over_limit``) names the device; deleting its file clears it, so
    the document, brought back later, is not said to be over the limit anywhere."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f.txt").write_text(TEXT)
    said: list[Event] = []
    async with serve_in_process(app) as srv:
        url = srv.ws_url
        ws_a = Workspace(a, url, TENANT, "p", device_id="a", max_file_bytes=100)
        ws_b = Workspace(b, url, TENANT, "p", device_id="b", on_event=said.append)
        async with ws_a, ws_b:
            await ws_a.sync(10)
            await ws_b.sync(10)
            (a / "f.txt").write_text("x" * 200)
            ws_a.changed({"f.txt"})
            await ws_a.sync(10)
            assert ws_a.device.entries["f.txt"].meta.get(OVER_LIMIT) == "a"
            await ws_b.sync(10)
            await until(lambda: any("on device a" in e.message for e in said))
            (a / "f.txt").unlink()
            ws_a.changed({"f.txt"})
            await ws_a.sync(10)
            assert OVER_LIMIT not in ws_a.device.entries["f.txt"].meta
            assert ws_a.over_limit.files == {}
            await until(lambda: not (b / "f.txt").exists())
            assert OVER_LIMIT not in ws_b.device.entries["f.txt"].meta
