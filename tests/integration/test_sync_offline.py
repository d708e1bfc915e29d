"""Three ``weft sync`` processes edit one file while the server is down (real processes,
real sockets, three folders and three local stores)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
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
        # the device whose branch was judged second is told (and only that one)
        wait_until(
            lambda: any(f"weft conflicts show {record['id']}" in d.output() for d in devices),
            10,
            "a device saying the conflict",
        )
        said = [d for d in devices if "conflict: notes.txt: 1 region changed" in d.output()]
        assert len(said) == 1, [d.output() for d in devices]
    finally:
        for device in devices:
            device.terminate()


def test_an_offline_edit_of_a_file_deleted_offline_elsewhere_is_kept(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Found in a walkthrough: A appended a line offline while B deleted the file
    offline; after both synced the file was gone from both folders, with no conflict
    record and no word said. Now the edit wins over the deletion: the file comes back
    with A's text in both folders, a conflict record says B deleted it, and the device
    whose branch was judged second says so (with ``WEFT_BRING_BACK_EDITED``; by default
    only the record is made, see test_edit_delete_conflicts)."""
    server = weft_server_factory(env={"WEFT_BRING_BACK_EDITED": "1"})
    folders = [tmp_path / name for name in ("a", "b")]
    for folder in folders:
        folder.mkdir()
    (folders[0] / "notes.md").write_text(BASE)
    for folder in folders:
        assert sync_once(folder, server.ws_url, TENANT, PROJECT).returncode == 0
    args = ["--max-backoff", "0.5", "--poll", "0.2"]
    devices = [start_sync(f, server.ws_url, TENANT, PROJECT, args=args) for f in folders]
    try:
        for device in devices:
            device.wait_for("in sync")
        server.terminate()
        for device in devices:
            device.wait_for("offline")
        with (folders[0] / "notes.md").open("a") as f:
            f.write("A important offline work\n")
        (folders[1] / "notes.md").unlink()
        devices[0].wait_for("notes.md: +")
        devices[1].wait_for("deleted notes.md")

        restarted = weft_server_factory(
            store=server.store, port=server.port, env={"WEFT_BRING_BACK_EDITED": "1"}
        )
        expected = (BASE + "A important offline work\n").encode()
        wait_until(
            lambda: all(folder_files(f).get("notes.md") == expected for f in folders),
            30,
            "the edited file in both folders",
        )
        url = f"{restarted.url}/api/v1/{TENANT}/{PROJECT}/conflicts"
        wait_until(lambda: len(get_json(url)["conflicts"]) >= 1, 10, "a conflict record")
        [record] = get_json(url)["conflicts"]
        assert record["path"] == "notes.md" and record["deleted"] in ("ours", "theirs")
        assert record["merged_text"] == expected.decode()
        wait_until(
            lambda: any(f"weft conflicts show {record['id']}" in d.output() for d in devices),
            10,
            "a device saying the conflict",
        )
        doc = get_json(f"{restarted.url}/api/v1/{TENANT}/{PROJECT}/docs/notes.md?format=json")
        assert doc["text"] == expected.decode() and not doc["deleted"]
        assert record["restored"] and not record["emptied"]
        show = subprocess.run(
            [sys.executable, "-m", "client.cli", "conflicts", "show", record["id"],
             "--server", restarted.url, "--tenant", TENANT, "--project", PROJECT],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert show.returncode == 0, show.stderr
        assert "edited by the other side: brought back with the other side's edits" in show.stdout
    finally:
        for device in devices:
            device.terminate()


def test_sync_once_says_the_conflict_its_branch_made(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Found in a walkthrough: two ``weft sync --once`` runs each sent an edit of the
    same line made since their last sync; the server recorded a conflict, and neither
    run said a word of it. The run whose branch is judged second waits for the verdict
    and prints it, and its summary counts it."""
    server = weft_server_factory()
    folders = [tmp_path / name for name in ("a", "b")]
    for folder in folders:
        folder.mkdir()
    (folders[0] / "notes.txt").write_text(BASE)
    for folder in folders:
        assert sync_once(folder, server.ws_url, TENANT, PROJECT).returncode == 0
    _replace_line(folders[0] / "notes.txt", 2, "line 2 edited by A")
    _replace_line(folders[1] / "notes.txt", 2, "line 2 edited by B")
    first = sync_once(folders[0], server.ws_url, TENANT, PROJECT)
    assert first.returncode == 0 and "conflict" not in first.stdout, first.stdout
    second = sync_once(folders[1], server.ws_url, TENANT, PROJECT)
    assert second.returncode == 0, second.stdout
    [record] = get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts")["conflicts"]
    assert "conflict: notes.txt: 1 region changed on both sides (base line 2)" in second.stdout
    assert f"weft conflicts show {record['id']}" in second.stdout
    assert "1 conflict(s) recorded" in second.stdout, second.stdout


def _saved_base(folder: Path, path: str) -> str | None:
    """The base ``weft sync`` saved for ``path`` (hex), read from its state file."""
    db = sqlite3.connect(f"file:{folder / '.weft' / 'state.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT base FROM docs WHERE path = ?", (path,)).fetchone()
    finally:
        db.close()
    return None if row is None or row[0] is None else bytes(row[0]).hex()


def test_an_offline_deletion_is_not_judged_against_an_edit_already_written(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Found in CI (the NFD test's last step, under load): a device wrote another's edit
    to its folder, its base stayed before that edit, and its offline deletion was judged
    against it: a conflict record, and with WEFT_BRING_BACK_EDITED the file came back.
    Here b's poller would not read the heads for an hour: b's base still reaches the
    edit it received live, soon after it came, and the deletion stands, unrecorded."""
    env = {"WEFT_BRING_BACK_EDITED": "1"}
    server = weft_server_factory(env=env)
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    (a / "notes.md").write_text(BASE)
    for folder in (a, b):
        assert sync_once(folder, server.ws_url, TENANT, PROJECT).returncode == 0
    device = start_sync(b, server.ws_url, TENANT, PROJECT, args=["--poll", "3600"])
    try:
        device.wait_for("in sync")
        with (a / "notes.md").open("a") as f:
            f.write("A's edit\n")
        assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0
        expected = (BASE + "A's edit\n").encode()
        wait_until(lambda: folder_files(b).get("notes.md") == expected, 10, "the edit in b")
        docs = get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs")["docs"]
        [head] = [d["head"] for d in docs if d["path"] == "notes.md"]
        wait_until(lambda: _saved_base(b, "notes.md") == head, 10, "b's base at the edit")

        server.terminate()
        device.wait_for("offline")
        (b / "notes.md").unlink()
        device.wait_for("deleted notes.md")
        restarted = weft_server_factory(store=server.store, port=server.port, env=env)
        doc = f"{restarted.url}/api/v1/{TENANT}/{PROJECT}/docs/notes.md?format=json"
        wait_until(lambda: get_json(doc)["deleted"], 30, "the deletion on the server")
        time.sleep(1.0)  # the branch has ended and been judged by now
        assert get_json(f"{restarted.url}/api/v1/{TENANT}/{PROJECT}/conflicts")["conflicts"] == []
        assert get_json(doc)["deleted"] and "notes.md" not in folder_files(b)
        assert "conflict" not in device.output()
    finally:
        device.terminate()
