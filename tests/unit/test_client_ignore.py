"""What a folder workspace syncs: not .git/, not .weft/, not .weftignore patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.folder import Folder
from client.ignore import Ignore
from crdt.errors import BadPath
from crdt.keys import check_new_path


def test_git_and_weft_folders_are_always_ignored(tmp_path: Path) -> None:
    (tmp_path / ".weftignore").write_text("!.git/\n!.weft/\n")
    ignore = Ignore(tmp_path)
    assert ignore(".git/HEAD") and ignore(".weft/state.db")
    assert ignore(".git", is_dir=True) and ignore(".weft", is_dir=True)
    assert not ignore(".gitignore") and not ignore("src/.git-notes")


def test_gitignore_syntax_and_reload(tmp_path: Path) -> None:
    ignore = Ignore(tmp_path)
    assert not ignore("debug.log")
    (tmp_path / ".weftignore").write_text("# comment\n*.log\nbuild/\n!keep.log\n/top.txt\n")
    ignore.reload()
    assert ignore("debug.log") and ignore("sub/trace.log")
    assert not ignore("keep.log")
    assert ignore("build", is_dir=True) and ignore("build/out.txt") and ignore("a/build/x")
    assert ignore("top.txt") and not ignore("sub/top.txt")
    assert not ignore(".weftignore")


def test_an_unreadable_ignore_file_means_no_patterns(tmp_path: Path) -> None:
    (tmp_path / ".weftignore").write_bytes(b"\xff\xfe*.log\n")
    ignore = Ignore(tmp_path)
    assert not ignore("a.log")


def test_a_pattern_written_in_nfd_ignores_the_nfc_path(tmp_path: Path) -> None:
    """Document paths are NFC: a pattern in NFD (a name copied from macOS, say) matched
    nothing."""
    (tmp_path / ".weftignore").write_text("cafe\u0301/\n*.bro\u0302ill\n", encoding="utf-8")
    ignore = Ignore(tmp_path)
    assert ignore("café", is_dir=True) and ignore("café/menu.md")
    assert ignore("notes/x.brôill") and not ignore("notes/x.md")


def test_git_and_weft_are_ignored_in_any_case_at_any_depth(tmp_path: Path) -> None:
    """On a case-insensitive file system (macOS's and Windows' defaults) ``.GIT/config``
    is ``.git/config``: it was synced, so a project writer could put a git config in
    every checkout of the project. The server refuses to create such documents too."""
    (tmp_path / ".weftignore").write_text("!.GIT/\n!.Weft\n")
    ignore = Ignore(tmp_path)
    for path in (".GIT/config", ".Git/hooks/pre-commit", ".WEFT/state.db",
                 "sub/.git/config", "sub/.GIT/config", "a/b/.Weft/x", "sub/.git",
                 ".git./config", "git~1/config"):  # fmt: skip
        assert ignore(path), path
    assert ignore(".GIT", is_dir=True) and ignore("sub/.Weft", is_dir=True)
    assert not ignore(".github/x") and not ignore("a/.gitattributes")


def test_a_scan_never_lists_files_under_git_in_another_case(tmp_path: Path) -> None:
    for name in (".GIT/config", "sub/.Git/config", ".Weft/x", "sub/.git", "a.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert Folder(tmp_path, warn=lambda *_: None).scan() == ["a.md"]


def test_the_restore_manifest_at_the_top_is_ignored_as_the_server_refuses_it(
    tmp_path: Path,
) -> None:
    """``weft restore`` writes .weft-manifest.json at the folder's top; the server refuses
    that name for a new document (4400), so a sync of a restored folder never got in
    sync. Ignored at the top, in any case, whatever the patterns say; elsewhere, or as a
    folder's name, it is an ordinary name."""
    (tmp_path / ".weftignore").write_text("!.weft-manifest.json\n")
    ignore = Ignore(tmp_path)
    for path in (".weft-manifest.json", ".WEFT-Manifest.json", ".weft-manifest.json."):
        assert ignore(path), path
        with pytest.raises(BadPath, match="restore's manifest"):
            check_new_path(path)
    assert not ignore("sub/.weft-manifest.json") and not ignore(".weft-manifest.json.bak")
    assert not ignore(".weft-manifest.json", is_dir=True)
    assert check_new_path(".weft-manifest.json/x") == ".weft-manifest.json/x"
    assert not ignore(".weft-manifest.json/x")
    (tmp_path / ".weft-manifest.json").write_text("{}")
    (tmp_path / "a.md").write_text("a")
    assert Folder(tmp_path, warn=lambda *_: None).scan() == [".weftignore", "a.md"]


def test_editors_autosave_lock_and_safe_write_files_are_ignored(tmp_path: Path) -> None:
    """An Emacs autosave (``#notes.md#``, there while the buffer is unsaved), a
    LibreOffice lock (it made every other device's LibreOffice take the document for
    locked) and a JetBrains or GIO safe write's temporary and old copies went to every
    device as documents; a ``!pattern`` brings one back, as for swap files."""
    ignore = Ignore(tmp_path)
    for path in ("#notes.md#", "sub/#notes.md#", ".~lock.report.odt#", "~$report.docx",
                 "a.md___jb_tmp___", "sub/a.md___jb_old___", ".goutputstream-5XK1Z2",
                 "a.swp", "a.md~", ".#a.md"):  # fmt: skip
        assert ignore(path), path
    for path in ("notes.md", "#notes.md", "notes#1.md", "a#b#c.md", "issue-#12.md"):
        assert not ignore(path), path
    (tmp_path / ".weftignore").write_text("!\\#keep#\n")
    ignore.reload()
    assert not ignore("#keep#") and ignore("#other#")


def test_answers_are_remembered_until_the_patterns_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a running sync asks about every document it has not opened at each poll (once a
    # second): 5,000 ignored ones were matched anew each time, 4% of a CPU while idle
    (tmp_path / ".weftignore").write_text("node_modules/\n")
    ignore = Ignore(tmp_path)
    matched: list[str] = []
    spec_match = type(ignore._spec).match_file

    def counted(spec: object, path: str) -> bool:
        matched.append(path)
        return bool(spec_match(spec, path))  # type: ignore[arg-type]

    monkeypatch.setattr(type(ignore._spec), "match_file", counted)
    for _ in range(3):
        assert ignore("node_modules/a/index.js") and not ignore("src/a.js")
        ignore.reload()  # (a rescan reloads: nothing changed)
    assert matched == ["node_modules/a/index.js", "src/a.js"]
    (tmp_path / ".weftignore").write_text("src/\n")
    ignore.reload()
    assert not ignore("node_modules/a/index.js") and ignore("src/a.js")
