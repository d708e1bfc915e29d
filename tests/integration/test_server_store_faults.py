"""The store failing under a running server: clients are told (1011), /healthz says
it, the log says it in a few lines (not a traceback per failed commit), and nothing is
acknowledged that is not stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdt.kv.sqlite import FilesMoved, SQLiteEngine
from server import writer as server_writer
from server.app import create_app
from server.appkeys import HISTORY, WRITER
from server.config import Settings
from server.testing import ServerProcess, StartServer, YPeer, serve_in_process

pytestmark = pytest.mark.functional
PATH = "src/a.txt"


async def health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/healthz") as response:
        return response.status, await response.json()


async def refused_with(peer: YPeer, text: str) -> tuple[int | None, str]:
    """Send an edit that the server cannot store: its Refused code, then the close."""
    acks = len(peer.acks)
    await peer.append(text)
    await peer.until(lambda: bool(peer.refused))
    assert len(peer.acks) == acks
    code, reason = await peer.closed()
    assert peer.refused[0].code == code == 1011
    return code, reason


def errors(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if " ERROR " in line]


async def test_a_store_file_deleted_under_a_running_server_is_said_not_acknowledged(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = weft_server_factory(workdir=tmp_path)
    url = f"{server.ws_url}/acme/site/{PATH}"
    peer = await YPeer.connect(http, url, weft=True)
    await peer.append("stored")
    await peer.until(lambda: len(peer.acks) == 1)
    for name in ("weft.db", "weft.db-wal", "weft.db-shm"):
        (tmp_path / name).unlink()
    await asyncio.sleep(0.15)  # the engine looks at its files at most every 0.1 s
    _, reason = await refused_with(peer, " lost")
    assert "deleted or replaced while open" in reason
    status, body = await health(http, server.url)
    assert (status, body["status"]) == (503, "store_failing")
    assert "deleted or replaced while open" in body["store"]
    for n in range(20):  # clients retrying: a few log lines, not one traceback each
        await refused_with(await YPeer.connect(http, url, weft=True), f" retry {n}")
    assert server.terminate() == 0
    assert "Traceback" not in server.log()
    said = errors(server)
    assert any("was deleted or replaced while the store was open" in line for line in said)
    assert len(said) <= 6, said


async def test_healthz_says_a_failing_store_until_a_commit_succeeds(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A full database (SQLite's max_page_count: SQLITE_FULL, as a full disk gives)."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        url = f"{server.ws_url}/acme/site/{PATH}"
        peer = await YPeer.connect(http, url, weft=True)
        status, body = await health(http, server.url)
        assert (status, body["status"]) == (200, "ok")
        kv = app[HISTORY].kv
        assert isinstance(kv, SQLiteEngine)
        writer_conn = kv._writer_conn
        pages = writer_conn.execute("PRAGMA page_count").fetchone()[0]
        writer_conn.execute(f"PRAGMA max_page_count={pages}")
        _, reason = await refused_with(peer, "x" * 20_000)
        assert "database or disk is full" in reason
        status, body = await health(http, server.url)
        assert (status, body["status"]) == (503, "store_failing")
        assert "database or disk is full" in body["store"]
        writer_conn.execute(f"PRAGMA max_page_count={1 << 30}")
        peer = await YPeer.connect(http, url, weft=True)
        await peer.append("room again")
        await peer.until(lambda: len(peer.acks) == 1)
        status, body = await health(http, server.url)
        assert (status, body["status"]) == (200, "ok")
        assert "store" not in body


async def test_healthz_says_ok_again_after_a_quiet_while_unless_the_store_stopped(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure clears by itself (a lock released, space freed) while no client sends
    anything (a load balancer took the instance out): /healthz must not hold it at 503
    for ever. A store that stopped for good (its file deleted) stays at 503."""
    monkeypatch.setattr(server_writer, "FAILING_FOR", 0.3)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/{PATH}", weft=True)
        kv = app[HISTORY].kv
        assert isinstance(kv, SQLiteEngine)
        pages = kv._writer_conn.execute("PRAGMA page_count").fetchone()[0]
        kv._writer_conn.execute(f"PRAGMA max_page_count={pages}")
        await refused_with(peer, "x" * 20_000)
        assert (await health(http, server.url))[0] == 503
        await asyncio.sleep(0.4)
        assert (await health(http, server.url))[0] == 200
        app[WRITER]._failed(1, FilesMoved("the store's database file was deleted"))
        await asyncio.sleep(0.4)
        status, body = await health(http, server.url)
        assert (status, body["status"]) == (503, "store_failing")
        assert "deleted" in body["store"]
