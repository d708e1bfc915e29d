"""A device's state file: versioned format, one project per data directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from client.state import Ahead, BindingMismatch, DeviceState, DocState, FileState
from crdt.errors import FormatError
from crdt.versionstamp import ZERO, Versionstamp


def test_docs_and_files_round_trip(tmp_path: Path) -> None:
    state = DeviceState(tmp_path / "state.db")
    vs = Versionstamp(bytes(range(12)))
    state.save_docs({"a.txt": DocState(vs, None), "b.txt": DocState(None, vs)})
    state.save_files({"a.txt": FileState("text"), "gone.txt": FileState(None, deleted=True)})
    state.save_files({"b.txt": FileState("x"), "b.txt ": None})
    state.close()
    state = DeviceState(tmp_path / "state.db")
    assert state.docs() == {"a.txt": DocState(vs, None), "b.txt": DocState(None, vs)}
    assert state.files()["gone.txt"] == FileState(None, deleted=True)
    assert state.files()["a.txt"].shadow == "text"
    state.close()


def test_device_id_is_kept_and_can_be_named(tmp_path: Path) -> None:
    state = DeviceState(tmp_path / "state.db")
    first = state.device_id()
    assert first.startswith("dev-") and state.device_id() == first
    assert state.device_id("laptop") == "laptop" and state.device_id() == "laptop"
    state.close()


def test_a_data_directory_syncs_one_project(tmp_path: Path) -> None:
    state = DeviceState(tmp_path / "state.db")
    state.bind("ws://h:1", "acme", "typo")
    # never synced with acme/typo (a first run the server refused): no one's yet
    state.save_docs({"a.md": DocState()})
    state.bind("ws://h:1", "acme", "site")
    state.save_docs({"a.md": DocState(acked=Versionstamp(b"\x00" * 11 + b"\x01"))})
    state.bind("ws://h:2", "acme", "site")  # a new address for the same project is fine
    with pytest.raises(BindingMismatch, match="already syncs project acme/site"):
        state.bind("ws://h:1", "acme", "other")
    state.close()


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    DeviceState(tmp_path / "state.db").close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE meta SET value = '2.0' WHERE name = 'format'")
    conn.close()
    with pytest.raises(FormatError, match="newer than this weft understands"):
        DeviceState(tmp_path / "state.db")


def test_a_file_state_names_the_last_local_update_it_accounts_for(tmp_path: Path) -> None:
    state = DeviceState(tmp_path / "state.db")
    vs = Versionstamp(bytes(range(12)))
    state.save_files({"a.txt": FileState("one", local=vs), "b.txt": FileState("x", local=ZERO)})
    state.save_files({"a.txt": FileState("two", local=None)})
    assert state.files() == {"a.txt": FileState("two"), "b.txt": FileState("x", local=ZERO)}
    state.close()


def test_a_format_1_0_state_is_upgraded_its_files_local_unknown(tmp_path: Path) -> None:
    """Format 1.0 had no ``files.local``: such states are read as not saying (None),
    which a restart takes as they are (client.shadows)."""
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.executescript(
            "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);"
            "CREATE TABLE files (path TEXT PRIMARY KEY NOT NULL, shadow TEXT, "
            "deleted INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
            "INSERT INTO meta VALUES ('format', '1.0');"
            "INSERT INTO files VALUES ('a.txt', 'text', 0);"
        )
    conn.close()
    state = DeviceState(tmp_path / "state.db")
    assert state.files() == {"a.txt": FileState("text")}
    assert state.meta("format") == "1.3"
    assert state.aheads() == {}
    assert state.said() == set()
    state.save_files({"a.txt": FileState("new", local=ZERO)})
    assert state.files()["a.txt"].local == ZERO
    state.close()


def test_ahead_texts_are_kept_until_a_file_state_accounts_for_their_edits(
    tmp_path: Path,
) -> None:
    """A file's ``ahead`` texts (read for local edits, saved before the edits are
    recorded) survive a reopen and accumulate; a file state naming a later local update
    drops those older than it; forgetting the file drops them all."""
    state = DeviceState(tmp_path / "state.db")
    one, two = Versionstamp(bytes(12)[:-1] + b"\x01"), Versionstamp(bytes(12)[:-1] + b"\x02")
    state.save_aheads([("a.txt", Ahead("first", ZERO, 1)), ("b.txt", Ahead(None, one, 1))])
    state.save_aheads([("a.txt", Ahead("second", one, 1)), ("a.txt", Ahead("third", one, 2))])
    state.close()
    state = DeviceState(tmp_path / "state.db")
    assert state.aheads() == {
        "a.txt": [Ahead("first", ZERO, 1), Ahead("second", one, 1), Ahead("third", one, 2)],
        "b.txt": [Ahead(None, one, 1)],
    }
    state.save_files({"a.txt": FileState("third", local=one), "b.txt": None})
    assert state.aheads() == {"a.txt": [Ahead("second", one, 1), Ahead("third", one, 2)]}
    state.save_files({"a.txt": FileState("later", local=two)})
    assert state.aheads() == {}
    state.close()


def test_an_ahead_table_of_one_row_per_file_is_made_anew(tmp_path: Path) -> None:
    """A development build of format 1.2 kept one ``ahead`` row per file, which cannot
    tell which edit its text goes with: such a table is made anew, empty (its folder
    used to fail to start: "no such column: nth")."""
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.executescript(
            "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);"
            "CREATE TABLE ahead (path TEXT PRIMARY KEY NOT NULL, text TEXT, "
            "after BLOB NOT NULL) WITHOUT ROWID;"
            "INSERT INTO meta VALUES ('format', '1.2');"
            "INSERT INTO ahead VALUES ('a.txt', 'text', zeroblob(12));"
        )
    conn.close()
    state = DeviceState(tmp_path / "state.db")
    assert state.aheads() == {}
    state.save_aheads([("a.txt", Ahead("new", ZERO, 1))])
    assert state.aheads() == {"a.txt": [Ahead("new", ZERO, 1)]}
    state.close()


def test_conflict_ids_said_are_remembered_and_forgotten(tmp_path: Path) -> None:
    """``said`` (format 1.3) keeps the conflict ids weft sync said, across reopens,
    until it forgets them (their records no longer open)."""
    state = DeviceState(tmp_path / "state.db")
    state.save_said({"a" * 24: True, "b" * 24: True})
    state.save_said({"a" * 24: True})  # (said again: kept once)
    state.close()
    state = DeviceState(tmp_path / "state.db")
    assert state.said() == {"a" * 24, "b" * 24}
    state.save_said({"a" * 24: False, "c" * 24: True})
    assert state.said() == {"b" * 24, "c" * 24}
    state.close()


def test_a_format_1_2_state_gets_an_empty_said_table(tmp_path: Path) -> None:
    """A state from before 1.3 has no ``said``: it is made, empty, and the format
    raised (the next weft sync then says each open record of the device once)."""
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.executescript(
            "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('format', '1.2');"
        )
    conn.close()
    state = DeviceState(tmp_path / "state.db")
    assert state.meta("format") == "1.3"
    assert state.said() == set()
    state.close()
