"""What only the SQLite engine has: its own on-disk format and other writers on the file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from crdt import keys
from crdt.errors import FormatError, StoreError
from crdt.kv import open_engine
from crdt.kv.sqlite import FORMAT_MAJOR


def _format_major(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT value FROM engine WHERE name = 'format_major'").fetchone()
    return int(row[0])


async def test_a_newer_store_format_major_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    async with open_engine(f"sqlite:///{path}") as kv:
        await kv.transact(lambda tr: tr.set(b"k", b"v"))
    assert _format_major(path) == FORMAT_MAJOR
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE engine SET value = ? WHERE name = 'format_major'", (FORMAT_MAJOR + 1,))
    with pytest.raises(FormatError, match="newer than this weft understands"):
        async with open_engine(f"sqlite:///{path}"):
            pass
    assert _format_major(path) == FORMAT_MAJOR + 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT v FROM kv WHERE k = ?", (b"k",)).fetchone() == (b"v",)


async def test_a_commit_waits_for_another_writer_on_the_file(tmp_path: Path) -> None:
    """A second process holding SQLite's write lock delays a commit; it does not fail it."""
    path = tmp_path / "kv.db"
    async with open_engine(f"sqlite:///{path}") as kv:
        locked, held = threading.Event(), 0.5

        def other_writer() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (keys.pack(("other",)), b"o"))
            locked.set()
            time.sleep(held)
            conn.execute("COMMIT")
            conn.close()

        holder = asyncio.ensure_future(asyncio.to_thread(other_writer))
        assert await asyncio.to_thread(locked.wait, 5)
        started = time.monotonic()
        committed = await kv.transact(lambda tr: tr.set(keys.pack(("mine",)), b"m"))
        assert time.monotonic() - started > held / 2
        await holder
        assert committed.versionstamp is not None
        assert await kv.read(lambda tr: tr.get(keys.pack(("other",)))) == b"o"
        assert await kv.read(lambda tr: tr.get(keys.pack(("mine",)))) == b"m"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///x.db?journal=off", "unknown sqlite store option"),
        ("sqlite:///x.db?synchronous=SOMETIMES", "synchronous must be one of"),
        ("postgres://db", "unknown store URL"),
    ],
)
def test_bad_sqlite_urls_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_engine(url)
