"""A synced folder's files under their names on disk: a document path is NFC, the file
may be named in NFD (as macOS names files)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.folder import SKIP, FileChanged, Folder, NotTextFile, Symlink, TooBig, left
from client.safepath import PathBlocked

NFD = "cafe\u0301/me\u0301nu.md"
NFC = "café/ménu.md"


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The folders listed (os.listdir and os.scandir, which os.walk uses) while a test runs."""
    calls: list[str] = []
    listdir, scandir = os.listdir, os.scandir

    def counted(real: Any) -> Any:
        def call(path: Any = ".") -> Any:
            calls.append(os.fsdecode(path))
            return real(path)

        return call

    monkeypatch.setattr(os, "listdir", counted(listdir))
    monkeypatch.setattr(os, "scandir", counted(scandir))
    yield calls


def folder(root: Path) -> tuple[Folder, list[str]]:
    warnings: list[str] = []
    return Folder(root, warn=lambda _path, message: warnings.append(message)), warnings


@pytest.fixture(params=["case-sensitive", "caseless"])
def spelled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each test twice: as on Linux, and with names checked against listings as on a
    case-insensitive file system (client.caseless; detected at pin)."""
    on = bool(request.param == "caseless")
    monkeypatch.setattr("client.folder.caseless", lambda _folder: on)
    return on


def pinned(root: Path) -> tuple[Folder, list[str]]:
    files, warnings = folder(root)
    files.state_dir.mkdir(exist_ok=True)
    files.pin()
    return files, warnings


def test_a_file_named_in_nfd_is_read_written_and_removed_under_its_nfc_path(
    tmp_path: Path, spelled: bool
) -> None:
    (tmp_path / "cafe\u0301").mkdir()
    (tmp_path / NFD).write_text("croissant\n")
    files, warnings = pinned(tmp_path)
    assert files.scan() == [NFC]
    assert files.read(NFC) == "croissant\n" and files.exists(NFC) and files.unchanged(NFC)
    files.write(NFC, "brioche\n")
    assert (tmp_path / NFD).read_text() == "brioche\n" and not (tmp_path / NFC).exists()
    assert files.remove(NFC) and not (tmp_path / "cafe\u0301").exists()
    assert files.read(NFC) is None and warnings == []


def test_names_on_disk_are_found_without_a_scan(tmp_path: Path, spelled: bool) -> None:
    (tmp_path / "cafe\u0301").mkdir()
    (tmp_path / NFD).write_text("croissant\n")
    files, _ = pinned(tmp_path)
    assert files.document_path(NFD) == NFC  # as a watch event names it
    assert Folder(tmp_path, warn=lambda *_: None).read(NFC) == "croissant\n"
    files.write("café/new.md", "new\n")  # a new file goes into the folder that is there
    assert (tmp_path / "cafe\u0301" / "new.md").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".weft", "cafe\u0301"]


def test_two_names_for_one_document_path_are_skipped_with_a_warning(
    tmp_path: Path, spelled: bool
) -> None:
    (tmp_path / "café.md").write_text("composed\n")
    (tmp_path / "cafe\u0301.md").write_text("decomposed\n")
    files, warnings = pinned(tmp_path)
    assert files.scan() == ["café.md"]
    assert files.read("café.md") is SKIP
    assert warnings == [
        "skipping café.md: 2 files have this name in different Unicode forms "
        "('cafe\\u0301.md', 'caf\\xe9.md'); rename all but one"
    ]
    (tmp_path / "café.md").unlink()
    assert files.read("café.md") == "decomposed\n"


def test_a_rescan_or_watch_event_of_remembered_nfd_names_lists_no_folder(
    tmp_path: Path, listings: list[str]
) -> None:
    """A rescan passes every document path to document_path, a watch event every file
    it saw: with the names on disk remembered from the scan, neither lists a folder (each
    call listed the folder: a rescan of 10,000 NFD-named files took 104 s)."""
    for i in range(50):
        (tmp_path / f"cafe\u0301-{i}.md").write_text(f"{i}\n")
    files, warnings = folder(tmp_path)
    paths = files.scan()
    listings.clear()
    assert paths == sorted(f"café-{i}.md" for i in range(50))
    for path in paths:
        assert files.document_path(path) == path  # as a rescan names it
        assert files.document_path(path.replace("é", "e\u0301")) == path  # a watch event
        assert files.read(path) == path[5:-3] + "\n" and files.unchanged(path)
    (tmp_path / "cafe\u0301-new.md").write_text("new\n")  # seen first by the watcher
    assert files.document_path("cafe\u0301-new.md") == "café-new.md"
    assert files.read("café-new.md") == "new\n"
    assert listings == []
    (tmp_path / "café-0.md").write_text("composed\n")  # the NFC name appears beside it
    assert files.document_path("café-0.md") == "café-0.md"
    assert files.read("café-0.md") is SKIP and "2 files have this name" in warnings[0]


def test_new_non_ascii_files_are_written_without_listing_a_folder(
    tmp_path: Path, listings: list[str]
) -> None:
    """A non-ASCII path not on disk listed every folder on its way at each call, and a
    download looks it up 3-4 times: downloads of many files named café-N.txt grew
    quadratically. After a scan only the folders known to hold a name in another form are
    listed; those the watcher shows later are known too."""
    (tmp_path / "thé").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "cre\u0300me.md").write_text("crème\n")
    files, _ = folder(tmp_path)
    assert files.scan() == ["notes/crème.md"]
    listings.clear()
    paths = [f"café-{i}.txt" for i in range(50)] + [f"thé/café-{i}.txt" for i in range(50)]
    for path in paths:  # as Workspace._write downloads a new file
        assert files.read(path) is None and files.read(path) is None
        assert not files.exists(path)
        files.write(path, "new\n")
    for path in paths:  # deleted: a rescan still passes their document paths
        assert files.remove(path)
        assert files.document_path(path) == path and not files.unchanged(path)
    assert listings == []
    files.write("notes/crème.md", "written\n")
    assert (tmp_path / "notes" / "cre\u0300me.md").read_text() == "written\n"
    (tmp_path / "cafe\u0301").mkdir()  # a folder in NFD the watcher shows
    (tmp_path / "cafe\u0301" / "menu.md").write_text("menu\n")
    assert files.document_path("cafe\u0301/menu.md") == "café/menu.md"
    files.write("café/new.md", "new\n")
    assert sorted(p.name for p in (tmp_path / "cafe\u0301").iterdir()) == ["menu.md", "new.md"]
    assert "café" not in os.listdir(tmp_path)


def test_a_write_if_unchanged_does_not_replace_a_save_made_since_the_read(tmp_path: Path) -> None:
    f, _ = folder(tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    assert f.read("a.txt") == "one\n"
    f.write("a.txt", "one\ntwo\n", if_unchanged=True)  # as read: written
    assert (tmp_path / "a.txt").read_text() == "one\ntwo\n"
    f.write("a.txt", "one\ntwo\nthree\n", if_unchanged=True)  # as written here: written
    with (tmp_path / "a.txt").open("a") as file:
        file.write("saved\n")
    with pytest.raises(FileChanged):
        f.write("a.txt", "remote\n", if_unchanged=True)
    assert (tmp_path / "a.txt").read_text() == "one\ntwo\nthree\nsaved\n"
    assert not list(f.tmp_dir.iterdir())  # no temporary file left behind
    (tmp_path / "a.txt").unlink()  # deleted since: not brought back either
    with pytest.raises(FileChanged):
        f.write("a.txt", "remote\n", if_unchanged=True)
    assert not (tmp_path / "a.txt").exists()
    f.write("new.txt", "new\n", if_unchanged=True)  # never there: written
    assert (tmp_path / "new.txt").read_text() == "new\n"


def test_a_file_read_as_gone_is_written_if_unchanged(tmp_path: Path) -> None:
    """Deleted here and read so, then brought back by the server: written (it looped)."""
    f, _ = folder(tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    assert f.read("a.txt") == "one\n"
    (tmp_path / "a.txt").unlink()
    assert f.read("a.txt") is None
    f.write("a.txt", "back\n", if_unchanged=True)
    assert (tmp_path / "a.txt").read_text() == "back\n"


def test_a_file_replaced_with_the_same_size_and_time_is_not_unchanged(tmp_path: Path) -> None:
    """Another file renamed over it, same size and modification time: its inode says."""
    f, _ = folder(tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    assert f.read("a.txt") == "one\n"
    info = (tmp_path / "a.txt").stat()
    (tmp_path / "b.tmp").write_text("two\n")
    os.utime(tmp_path / "b.tmp", ns=(info.st_atime_ns, info.st_mtime_ns))
    (tmp_path / "b.tmp").replace(tmp_path / "a.txt")
    assert not f.unchanged("a.txt")
    with pytest.raises(FileChanged):
        f.write("a.txt", "remote\n", if_unchanged=True)


def test_settling_counts_from_a_change_made_elsewhere_not_from_its_own_write(
    tmp_path: Path,
) -> None:
    f, _ = folder(tmp_path)
    (tmp_path / "a.txt").write_text("saved just now\n")
    assert f.read("a.txt") is not None
    assert 0.5 < f.settling("a.txt", 1.0) <= 1.0  # a save in place may still be writing
    f.write("a.txt", "written here\n")
    assert f.read("a.txt") is not None and f.settling("a.txt", 1.0) == 0.0
    now = (tmp_path / "a.txt").stat().st_mtime_ns
    for offset, settling in ((-5.0, False), (0.5, True), (5.0, False)):  # old, new, skewed
        os.utime(tmp_path / "a.txt", ns=(now, now + int(offset * 1e9)))
        assert f.read("a.txt") is not None
        assert (f.settling("a.txt", 1.0) > 0) is settling, offset
    assert f.settling("gone.txt", 1.0) == 0.0


def test_a_warning_is_said_once_and_a_skip_again_once_the_file_was_readable(
    tmp_path: Path,
) -> None:
    f, warnings = folder(tmp_path)
    (tmp_path / "a.txt").write_bytes(b"\0binary")
    f.read("a.txt")
    f.warn("a.txt", "a.txt: cannot record a conflict yet (500); will retry")
    (tmp_path / "a.txt").write_text("text\n")
    assert f.read("a.txt") == "text\n"
    f.warn("a.txt", "a.txt: cannot record a conflict yet (500); will retry")  # said before
    (tmp_path / "a.txt").write_bytes(b"\0binary again")
    f.read("a.txt")  # a skip after the file was readable: said again
    assert warnings == [
        "skipping a.txt: binary file",
        "a.txt: cannot record a conflict yet (500); will retry",
        "skipping a.txt: binary file",
    ]


def test_a_file_growing_past_the_size_limit_is_said_once(tmp_path: Path) -> None:
    # a file being written (cp, a download) is read at every watch event: it was said
    # once per size it had, a warning a line
    warnings: list[str] = []
    f = Folder(tmp_path, warn=lambda _path, message: warnings.append(message), max_file_bytes=8)
    (tmp_path / "big.txt").write_text("12345")
    assert f.read("big.txt") == "12345"
    for size in (10, 20, 30):
        (tmp_path / "big.txt").write_text("x" * size)
        read = f.read("big.txt")
        assert isinstance(read, TooBig) and read.size == size
    assert warnings == ["skipping big.txt: 10 bytes, over 8"]
    (tmp_path / "big.txt").write_text("small")  # readable again: said again when over
    assert f.read("big.txt") == "small"
    (tmp_path / "big.txt").write_text("x" * 40)
    assert isinstance(f.read("big.txt"), TooBig)
    assert warnings[1:] == ["skipping big.txt: 40 bytes, over 8"]


def test_a_synced_file_over_the_size_limit_is_not_said_skipped(tmp_path: Path) -> None:
    # the workspace says that it stops syncing (client.unsynced): "skipping" said the
    # file was never synced
    warnings: list[str] = []
    f = Folder(
        tmp_path,
        warn=lambda _path, message: warnings.append(message),
        max_file_bytes=8,
        synced=lambda path: path == "synced.txt",
    )
    for name in ("synced.txt", "new.txt"):
        (tmp_path / name).write_text("x" * 20)
        read = f.read(name)
        assert isinstance(read, TooBig) and read.size == 20
    assert warnings == ["skipping new.txt: 20 bytes, over 8"]


def test_a_file_that_is_not_text_says_what_is_wrong_and_where(tmp_path: Path) -> None:
    # a synced one stops syncing, which the workspace says (client.unsynced): "skipping"
    # said the file was never synced; a new one is skipped as before
    warnings: list[str] = []
    f = Folder(
        tmp_path,
        warn=lambda _path, message: warnings.append(message),
        synced=lambda path: path.startswith("synced"),
    )
    files = {
        "binary": (b"\x89PNG\r\n\x1a\n\0\0", "binary (a NUL byte at offset 8)"),
        "latin1": ("na\u00efve\n".encode("latin-1"), "not valid UTF-8 (byte 0xef at offset 2)"),
    }
    for name, (data, why) in files.items():
        for prefix in ("synced-", "new-"):
            (tmp_path / f"{prefix}{name}.md").write_bytes(data)
            read = f.read(f"{prefix}{name}.md")
            assert isinstance(read, NotTextFile) and read.why == why
    assert warnings == [
        "skipping new-binary.md: binary file",
        "skipping new-latin1.md: not valid UTF-8 text",
    ]


def test_a_link_in_a_files_place_is_a_symlink_never_followed(tmp_path: Path) -> None:
    # to a file, to a folder, to nothing: a synced one stops syncing, which the workspace
    # says (client.unsynced), with no "skipping" (nor the scan's, for a link to a folder)
    warnings: list[str] = []
    f = Folder(
        tmp_path,
        warn=lambda _path, message: warnings.append(message),
        synced=lambda path: path.startswith("synced"),
    )
    (tmp_path / "target.md").write_text("text\n")
    (tmp_path / "folder").mkdir()
    for target in ("target.md", "folder", "nowhere"):
        for prefix in ("synced-", "new-"):
            (tmp_path / f"{prefix}{target}").symlink_to(target)
            read = f.read(f"{prefix}{target}")
            assert isinstance(read, Symlink) and read.why == "a symbolic link"
    links = ["new-nowhere", "new-target.md", "synced-nowhere", "synced-target.md"]
    assert f.scan() == [*links, "target.md"]  # (not into a folder through a link)
    assert warnings == [
        "skipping new-target.md: symbolic links are not synced",
        "skipping new-folder: symbolic links are not synced",
        "skipping new-nowhere: symbolic links are not synced",
        "skipping new-folder: a symbolic link to a folder is not followed",
    ]


def test_left_says_how_long_until_a_time_is_that_long_ago() -> None:
    now = time.time_ns()
    assert 0.69 < left(now - 300_000_000, 1.0) <= 0.7
    assert left(now - 2_000_000_000, 1.0) == 0.0
    assert left(now + 60_000_000_000, 1.0) == 0.0  # another clock: bounded


def test_nothing_is_read_written_or_removed_through_a_symlinked_folder(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.md").write_text("private\n")
    (root / "notes").symlink_to(outside)
    f, warnings = folder(root)
    assert f.scan() == [] and f.scan("notes") == [] and f.scan("notes/deep") == []
    assert f.read("notes/secret.md") is SKIP
    assert f.blocked("notes/new.md") == "notes is a symbolic link (not followed)"
    assert not f.exists("notes/secret.md") and not f.unchanged("notes/secret.md")
    for path in ("notes/secret.md", "notes/new.md", "notes/deep/new.md", "notes/made/new.md"):
        with pytest.raises(PathBlocked, match="notes is a symbolic link"):
            f.write(path, "from elsewhere\n")
        assert not f.remove(path)
    assert (outside / "secret.md").read_text() == "private\n"
    assert sorted(p.name for p in outside.rglob("*")) == ["deep", "secret.md"]
    f.scan()
    assert warnings == [
        "skipping notes: a symbolic link to a folder is not followed",
        "skipping notes/secret.md: notes is a symbolic link (not followed)",
    ]


def test_a_file_and_a_folder_in_each_others_way_are_refused_not_looped_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "coll").mkdir()
    (tmp_path / "coll" / "in.md").write_text("inside\n")
    (tmp_path / "file").write_text("a file\n")
    f, _ = folder(tmp_path)
    assert f.read("coll") is None and f.read("file/in.md") is None  # no such files
    with pytest.raises(PathBlocked, match="coll is a folder"):
        f.write("coll", "text\n", if_unchanged=True)  # not FileChanged: it looped
    with pytest.raises(PathBlocked, match="file is a file"):
        f.write("file/in.md", "text\n")
    assert f.blocked("file/in.md") == "file is a file" and f.blocked("coll") is None
    assert not f.remove("coll") and (tmp_path / "coll" / "in.md").exists()


def test_a_moved_or_replaced_folder_or_state_folder_is_noticed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".weft").mkdir(parents=True)
    f, _ = folder(root)
    f.pin()
    assert f.moved() is None
    root.rename(tmp_path / "away")
    assert f.moved() == f"{root} is gone (moved or deleted)"
    (root / ".weft").mkdir(parents=True)
    assert f.moved() == f"{root} is not the folder this sync started in (moved or replaced)"
    (root / ".weft").rmdir()
    root.rmdir()
    (tmp_path / "away").rename(root)
    assert f.moved() is None
    (root / ".weft").rename(tmp_path / "state")
    assert f.moved() == f"{root / '.weft'} is gone"
