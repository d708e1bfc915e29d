"""What a folder workspace syncs: not .git/, not .weft/, not .weftignore patterns."""

from __future__ import annotations

from pathlib import Path

from client.ignore import Ignore


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
