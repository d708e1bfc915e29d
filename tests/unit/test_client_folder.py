"""A synced folder's files under their names on disk: a document path is NFC, the file
may be named in NFD (as macOS names files)."""

from __future__ import annotations

from pathlib import Path

from client.folder import SKIP, Folder

NFD = "cafe\u0301/me\u0301nu.md"
NFC = "café/ménu.md"


def folder(root: Path) -> tuple[Folder, list[str]]:
    warnings: list[str] = []
    return Folder(root, warn=lambda _path, message: warnings.append(message)), warnings


def test_a_file_named_in_nfd_is_read_written_and_removed_under_its_nfc_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "cafe\u0301").mkdir()
    (tmp_path / NFD).write_text("croissant\n")
    files, warnings = folder(tmp_path)
    assert files.scan() == [NFC]
    assert files.read(NFC) == "croissant\n" and files.exists(NFC) and files.unchanged(NFC)
    files.write(NFC, "brioche\n")
    assert (tmp_path / NFD).read_text() == "brioche\n" and not (tmp_path / NFC).exists()
    assert files.remove(NFC) and not (tmp_path / "cafe\u0301").exists()
    assert files.read(NFC) is None and warnings == []


def test_names_on_disk_are_found_without_a_scan(tmp_path: Path) -> None:
    (tmp_path / "cafe\u0301").mkdir()
    (tmp_path / NFD).write_text("croissant\n")
    files, _ = folder(tmp_path)
    assert files.document_path(NFD) == NFC  # as a watch event names it
    assert Folder(tmp_path, warn=lambda *_: None).read(NFC) == "croissant\n"
    files.write("café/new.md", "new\n")  # a new file goes into the folder that is there
    assert (tmp_path / "cafe\u0301" / "new.md").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".weft", "cafe\u0301"]


def test_two_names_for_one_document_path_are_skipped_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "café.md").write_text("composed\n")
    (tmp_path / "cafe\u0301.md").write_text("decomposed\n")
    files, warnings = folder(tmp_path)
    assert files.scan() == ["café.md"]
    assert files.read("café.md") is SKIP
    assert warnings == [
        "skipping café.md: 2 files have this name in different Unicode forms "
        "('cafe\\u0301.md', 'caf\\xe9.md'); rename all but one"
    ]
    (tmp_path / "café.md").unlink()
    assert files.read("café.md") == "decomposed\n"
