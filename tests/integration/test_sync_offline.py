"""Three ``weft sync`` processes edit one file while the server is down (real processes,
real sockets, three folders and three local stores)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from client.testing import folder_files, get_json, start_sync, sync_once, wait_until
from server.testing import StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT, PROJECT = "acme", "site"
BASE = "".join(f"line {i}\n" for i in range(1, 21))


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines))


def test_three_offline_devices_converge_with_one_conflict(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory()
    folders = [tmp_path / name for name in ("a", "b", "c")]
    for folder in folders:
        folder.mkdir()
    (folders[0] / "notes.txt").write_text(BASE)
    for folder in folders:  # a creates the file, b and c get it
        result = sync_once(folder, server.ws_url, TENANT, PROJECT)
        assert result.returncode == 0, result.stdout
    assert all((f / "notes.txt").read_text() == BASE for f in folders)

    args = ["--max-backoff", "0.5", "--poll", "0.2"]
    devices = [start_sync(f, server.ws_url, TENANT, PROJECT, args=args) for f in folders]
    try:
        for device in devices:
            device.wait_for("in sync")
        server.terminate()
        for device in devices:
            device.wait_for("offline")

        _replace_line(folders[0] / "notes.txt", 3, "line 3 rewritten by A")
        _replace_line(folders[1] / "notes.txt", 3, "line 3 rewritten by B")
        _replace_line(folders[2] / "notes.txt", 18, "line 18 rewritten by C")
        for device in devices:  # each has recorded its edit locally, offline
            device.wait_for("notes.txt: +")

        restarted = weft_server_factory(store=server.store, port=server.port)

        def converged() -> bool:
            contents = [folder_files(f) for f in folders]
            text = contents[0].get("notes.txt", b"").decode()
            return contents[0] == contents[1] == contents[2] and all(
                f"rewritten by {who}" in text for who in "ABC"
            )

        wait_until(converged, 30, "three folders byte-identical with every edit")
        text = (folders[0] / "notes.txt").read_text()
        assert "line 18 rewritten by C" in text and "line 18\n" not in text
        assert "line 1\n" in text and "line 20\n" in text

        url = f"{restarted.url}/api/v1/{TENANT}/{PROJECT}/conflicts"
        wait_until(lambda: len(get_json(url)["conflicts"]) >= 1, 10, "a conflict record")
        time.sleep(1.0)  # every branch has ended by now: a second record would show
        conflicts = get_json(url)["conflicts"]
        assert len(conflicts) == 1, conflicts
        record = conflicts[0]
        assert record["path"] == "notes.txt"
        region_texts = " ".join(
            r["ours_text"] + r["theirs_text"] + r["base_text"] for r in record["regions"]
        )
        assert "rewritten by A" in region_texts and "rewritten by B" in region_texts
        assert "rewritten by C" not in region_texts
        # the merge as of the later branch: both rewrites of line 3, interleaved by the CRDT
        assert "rewritten by A" in record["merged_text"]
        assert "rewritten by B" in record["merged_text"]
    finally:
        for device in devices:
            device.terminate()
