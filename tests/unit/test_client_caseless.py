"""client.caseless: names as a case-insensitive file system spells them, read from
listings. The listings are checked here on the plain disk (a listing is a listing);
the case-insensitive file system itself is in
``tests/integration/test_sync_case_insensitive.py``."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from client.caseless import Spellings, caseless
from client.folder import Folder


def test_a_name_spelled_otherwise_is_found_and_one_spelled_so_or_absent_is_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "README.md").write_text("")
    (tmp_path / "Docs").mkdir()
    (tmp_path / "Docs" / "a.md").write_text("")
    nfd = unicodedata.normalize("NFD", "café.md")
    (tmp_path / nfd).write_text("")
    names = Spellings(tmp_path)
    assert names.otherwise("readme.md") == "README.md"
    assert names.otherwise("README.md") is None
    assert names.otherwise("docs/a.md") == "Docs"
    assert names.otherwise("Docs/A.md") == "Docs/a.md"
    assert names.otherwise("Docs/a.md") is None
    assert names.otherwise(unicodedata.normalize("NFC", "café.md")) is None  # (a form)
    assert names.otherwise("CAFÉ.md") == nfd
    assert names.otherwise("absent.md") is None
    assert names.otherwise("absent/README.md") is None


def test_a_case_sensitive_folder_is_not_taken_for_a_caseless_one(tmp_path: Path) -> None:
    (tmp_path / ".weft").mkdir()
    assert not caseless(tmp_path / ".weft")
    (tmp_path / ".WEFT").mkdir()  # another folder here, not the same one
    assert not caseless(tmp_path / ".weft")


def test_a_rename_within_the_clock_step_of_a_listing_is_seen(tmp_path: Path) -> None:
    """A folder listed just after it changed is listed again at the next lookup: another
    change in the same clock step leaves its modification time as it was."""
    (tmp_path / "readme.md").write_text("")
    names = Spellings(tmp_path)
    assert names.otherwise("README.md") == "readme.md"
    mtime = os.lstat(tmp_path).st_mtime_ns
    os.rename(tmp_path / "readme.md", tmp_path / "README.md")
    os.utime(tmp_path, ns=(mtime, mtime))  # (the same clock step)
    assert names.otherwise("README.md") is None


def test_a_settled_listing_is_kept_and_own_changes_update_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder whose time is old is listed once while it stays so; this folder's own
    writes update that listing instead of listing the folder again (a download of many
    files into one folder listed it at every lookup)."""
    (tmp_path / "a.md").write_text("")
    os.utime(tmp_path, ns=(0, 10**9))
    listed: list[Path] = []
    listdir = os.listdir

    def counting(path: Path) -> list[str]:
        listed.append(path)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    names = Spellings(tmp_path)
    assert names.otherwise("A.md") == "a.md"
    assert names.otherwise("a.md") is None
    assert len(listed) == 1
    for i in range(3):
        with names.changing(f"B{i}.md", there=True):
            (tmp_path / f"B{i}.md").write_text("")
        assert names.otherwise(f"b{i}.md") == f"B{i}.md"
    with names.changing("a.md", there=False):
        (tmp_path / "a.md").unlink()
    assert names.otherwise("A.md") is None
    assert len(listed) == 1
    (tmp_path / "c.md").write_text("")  # another program's change: listed again
    assert names.otherwise("C.md") == "c.md"
    assert len(listed) == 2


def test_a_listing_kept_wrongly_lasts_until_the_next_full_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename in the same clock step as a listing this folder trusts (its own change,
    say) is not seen from the listing; a full scan (every 10 s) drops the listings."""
    monkeypatch.setattr("client.folder.caseless", lambda _folder: True)
    files = Folder(tmp_path, warn=lambda *_: None)
    files.state_dir.mkdir()
    files.pin()
    (tmp_path / "readme.md").write_text("hello\n")
    os.utime(tmp_path, ns=(0, 10**9))
    assert files.read("readme.md") == "hello\n"
    os.rename(tmp_path / "readme.md", tmp_path / "README.md")
    os.utime(tmp_path, ns=(0, 10**9))  # (its time as it was)
    assert files.read("README.md") is None  # (the kept listing)
    assert files.scan() == ["README.md"]
    assert files.read("README.md") == "hello\n"
    assert files.read("readme.md") is None
