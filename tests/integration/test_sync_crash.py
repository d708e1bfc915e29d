"""kill -9 of a ``weft sync`` in the middle of a sync: after a restart nothing is lost
and nothing is duplicated (real processes, real sockets)."""

from __future__ import annotations

import urllib.error
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.testing import folder_files, get_json, get_text, start_sync, sync_once, wait_until
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT, PROJECT = "acme", "crash"
FILES = 250


def server_docs(server: ServerProcess) -> int:
    try:
        return len(get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs")["docs"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the tenant has no document yet
            return 0
        raise


def server_text(server: ServerProcess, path: str) -> str | None:
    return get_text(f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs/{urllib.parse.quote(path)}")


def assert_server_matches(server: ServerProcess, folder: Path) -> None:
    files = folder_files(folder)
    assert len(files) == FILES + 1
    with ThreadPoolExecutor(8) as pool:
        texts = dict(zip(files, pool.map(lambda p: server_text(server, p), files), strict=True))
    for path, data in files.items():
        assert texts[path] == data.decode(), path


def test_kill_9_mid_sync_loses_nothing_and_duplicates_nothing(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory()
    a = tmp_path / "a"
    a.mkdir()
    for i in range(FILES):
        (a / f"f{i:03}.txt").write_text("".join(f"file {i} line {n}\n" for n in range(20)))
    args = ["--poll", "0.2"]

    devices = []
    try:
        # 1. killed during the first sync
        device = start_sync(a, server.ws_url, TENANT, PROJECT, args=args)
        devices.append(device)
        wait_until(lambda: server_docs(server) >= 1, 30, "first documents on the server")
        device.kill()
        assert server_docs(server) < FILES, "the first sync finished before the kill"
        for i in range(0, FILES, 7):  # edited while the device was dead
            with (a / f"f{i:03}.txt").open("a") as f:
                f.write("edited while the device was down\n")
        (a / "new.txt").write_text("created while the device was down\n")
        result = sync_once(a, server.ws_url, TENANT, PROJECT)
        assert result.returncode == 0, result.stdout
        assert_server_matches(server, a)

        # 2. killed while a burst of edits is being sent
        device = start_sync(a, server.ws_url, TENANT, PROJECT, args=args)
        devices.append(device)
        device.wait_for("in sync")
        for i in range(FILES):
            path = a / f"f{i:03}.txt"
            text = path.read_text()
            path.write_text(text.replace("line 10\n", f"line 10 (burst {i})\n"))
        wait_until(lambda: "burst" in (server_text(server, "f000.txt") or ""), 20, "first edit")
        device.kill()
    finally:
        for started in devices:
            started.kill()
    result = sync_once(a, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert_server_matches(server, a)

    # a fresh device gets exactly the same folder
    b = tmp_path / "b"
    b.mkdir()
    result = sync_once(b, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout
    assert folder_files(b) == folder_files(a)
