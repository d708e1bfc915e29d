"""Conflicts about big files, with ``weft sync --once`` against a real server process.
Found in a walkthrough: a conflict record holds whole texts (an edit against a deletion
holds the file about three times), and one over the store's 100 kB value limit could
not be stored: an edit of a 42 kB file against its deletion left no record (the file
deleted everywhere, the edit only in history), and a 135 kB file meeting a different
one with no shared history was reported again every second for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from client.testing import get_json, sync_once
from server.testing import ServerProcess, StartServer

pytestmark = pytest.mark.functional
TENANT = "acme"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def big_text(lines: int, word: str = "y") -> str:
    return "".join(f"line {i} " + word * 50 + "\n" for i in range(lines))


def once(server: ServerProcess, folder: Path, project: str, device: str) -> str:
    result = sync_once(folder, server.ws_url, TENANT, project, args=["--device-id", device])
    assert result.returncode == 0, result.stdout
    return result.stdout


def weft_conflicts(server: ServerProcess, project: str, *args: str) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "client.cli", "conflicts", *args,
         "--server", server.url, "--tenant", TENANT, "--project", project],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return shown.stdout


def test_an_edit_against_the_deletion_of_a_big_file_is_recorded(
    server: ServerProcess, tmp_path: Path
) -> None:
    x, y = tmp_path / "x", tmp_path / "y"
    x.mkdir()
    y.mkdir()
    text = big_text(700)  # 42 kB
    (x / "big.txt").write_text(text)
    once(server, x, "bigdel", "x")
    once(server, y, "bigdel", "y")
    assert (y / "big.txt").read_text() == text
    edited = text.replace("line 9 " + "y" * 50, "line 9 edited by X")
    (x / "big.txt").write_text(edited)
    (y / "big.txt").unlink()

    once(server, x, "bigdel", "x")
    out = once(server, y, "bigdel", "y")

    assert "could not check" not in out
    assert "conflict: big.txt: deleted here while edited elsewhere" in out, out
    [record] = get_json(f"{server.url}/api/v1/{TENANT}/bigdel/conflicts")["conflicts"]
    assert record["deleted"] == "ours" and record["path"] == "big.txt"
    [region] = record["regions"]
    assert (region["base_text"], region["theirs_text"]) == (text, edited)
    assert f"weft conflicts show {record['id']}" in out
    shown = weft_conflicts(server, "bigdel", "show", record["id"])
    assert f"conflict {record['id']} on big.txt: open" in shown
    assert "  | line 9 edited by X\n" in shown and "  | line 699 " in shown


def test_a_big_file_with_no_shared_history_is_recorded_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    x, y = tmp_path / "x", tmp_path / "y"
    x.mkdir()
    y.mkdir()
    theirs, ours = big_text(2_300, "x"), big_text(2_300, "y")  # 135 kB each
    (x / "n.txt").write_text(theirs)
    (y / "n.txt").write_text(ours)
    once(server, x, "bignew", "x")

    out = once(server, y, "bignew", "y")  # exits: no retrying for ever

    assert "conflict: n.txt differs from the server's version" in out, out
    assert "1 file(s) written or removed" in out, out  # the server's text went over it
    assert "will retry" not in out
    assert (y / "n.txt").read_text() == theirs  # the server's version stays
    backups = list((y / ".weft" / "conflicts").iterdir())
    assert [p.read_text() for p in backups] == [ours]
    [record] = get_json(f"{server.url}/api/v1/{TENANT}/bignew/conflicts")["conflicts"]
    [region] = record["regions"]
    assert (region["ours_text"], region["theirs_text"]) == (ours, theirs)
    listed = weft_conflicts(server, "bignew", "list")
    assert record["id"] in listed and "n.txt" in listed
