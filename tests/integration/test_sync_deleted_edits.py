"""A file edited on one device and deleted on another: when the deletion reaches the
editing device, ``weft sync`` keeps a copy of the edited text in ``DIR/.weft/conflicts/``
before it removes the file, if the deletion cannot have seen those edits (they had not
been acknowledged by the server when it arrived). Ordinary deletions keep no copy.
Real server process, real ``weft sync --once`` processes, two folders (the online race
is in test_online_edit_delete_sync).

Found in a user walkthrough: the edited file vanished from the editor's disk, its text
left only in the server's conflict record and the document's history."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.testing import folder_files, get_json, sync_once
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT, PROJECT = "acme", "site"
BASE = "".join(f"line {i}\n" for i in range(1, 11))


def _copies(folder: Path, path: str) -> list[Path]:
    return sorted((folder / ".weft" / "conflicts").glob(f"{path}.*"))


def _two_folders(server: ServerProcess, tmp_path: Path, *names: str) -> tuple[Path, Path]:
    """Folders a and b, both synced with the files ``names`` (text BASE) a made."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    for name in names:
        (a / name).write_text(BASE)
    for folder in (a, b):
        assert sync_once(folder, server.ws_url, TENANT, PROJECT).returncode == 0
    return a, b


def test_an_offline_edit_of_a_file_deleted_elsewhere_is_kept_in_a_copy(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory()
    a, b = _two_folders(server, tmp_path, "notes.md")
    with (b / "notes.md").open("a") as f:  # b edits while no weft sync runs
        f.write("B offline work\n")
    (a / "notes.md").unlink()
    assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0

    result = sync_once(b, server.ws_url, TENANT, PROJECT)

    assert result.returncode == 0, result.stdout
    assert "notes.md" not in folder_files(b)  # the deletion stands
    [copy] = _copies(b, "notes.md")
    assert copy.read_text() == BASE + "B offline work\n"
    assert "notes.md deleted (remote)" in result.stdout
    assert f"your text is kept in {copy}" in result.stdout, result.stdout
    [record] = get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts")["conflicts"]
    assert record["deleted"] == "theirs"
    # a later run keeps no second copy, and says nothing more of it
    again = sync_once(b, server.ws_url, TENANT, PROJECT)
    assert again.returncode == 0 and "kept" not in again.stdout, again.stdout
    assert _copies(b, "notes.md") == [copy]


def test_sync_once_quiet_still_says_where_the_copy_is(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """``-q`` prints only warnings, conflicts and errors; a copy kept is said anyway."""
    server = weft_server_factory()
    a, b = _two_folders(server, tmp_path, "notes.md")
    (b / "notes.md").write_text("B rewrote it all\n")
    (a / "notes.md").unlink()
    assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0

    result = sync_once(b, server.ws_url, TENANT, PROJECT, args=["-q"])

    assert result.returncode == 0, result.stdout
    [copy] = _copies(b, "notes.md")
    assert copy.read_text() == "B rewrote it all\n"
    assert f"your text is kept in {copy}" in result.stdout, result.stdout


def test_an_ordinary_remote_deletion_keeps_no_copy(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Files b had not changed since its last sync (one it never edited, one whose edit
    was synced before the deletion was made) are removed with no copy kept."""
    server = weft_server_factory()
    a, b = _two_folders(server, tmp_path, "notes.md", "other.md")
    with (b / "notes.md").open("a") as f:
        f.write("B's edit, synced\n")
    assert sync_once(b, server.ws_url, TENANT, PROJECT).returncode == 0
    assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0
    assert (a / "notes.md").read_text() == BASE + "B's edit, synced\n"
    (a / "notes.md").unlink()
    (a / "other.md").unlink()
    assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0

    result = sync_once(b, server.ws_url, TENANT, PROJECT)

    assert result.returncode == 0, result.stdout
    assert folder_files(b) == {}
    assert _copies(b, "notes.md") == [] and _copies(b, "other.md") == []
    assert "kept" not in result.stdout, result.stdout
    assert get_json(f"{server.url}/api/v1/{TENANT}/{PROJECT}/conflicts")["conflicts"] == []


def test_a_file_with_a_long_name_gets_its_copy_too(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """A 248-byte name is a fine file name, but its copy's name (name + ".STAMP") went
    over the 255-byte limit: the copy failed (ENAMETOOLONG), the file stayed, and the
    next run removed it with no copy (found in a review). The copy's name is cut to fit,
    and told apart by a hash."""
    server = weft_server_factory()
    name = "n" * 245 + ".md"
    a, b = _two_folders(server, tmp_path, name)
    with (b / name).open("a") as f:
        f.write("B offline work\n")
    (a / name).unlink()
    assert sync_once(a, server.ws_url, TENANT, PROJECT).returncode == 0

    result = sync_once(b, server.ws_url, TENANT, PROJECT)

    assert result.returncode == 0, result.stdout
    assert name not in folder_files(b)
    [copy] = (b / ".weft" / "conflicts").iterdir()
    assert copy.read_text() == BASE + "B offline work\n"
    assert len(copy.name.encode()) <= 255 and copy.name.startswith("n" * 200)
    assert f"your text is kept in {copy}" in result.stdout, result.stdout
