"""Durability: restart, kill -9 while clients stream, SIGTERM drain.

The promise under test: every update a client saw broadcast or acknowledged is in the
store afterwards, whatever happened to the server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from crdt.codec import SyncUpdate
from crdt.history import update_hash
from server.testing import ConnectionClosed, ServerProcess, StartServer, YPeer, client_session

pytestmark = pytest.mark.functional
PATH = "src/stream.txt"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


async def text_of(http: aiohttp.ClientSession, server: ServerProcess, path: str = PATH) -> str:
    async with http.get(f"{server.url}/api/v1/acme/site/docs/{path}") as response:
        assert response.status == 200, await response.text()
        return await response.text()


@dataclass
class Stream:
    """A weft client streaming small inserts (≤ 64 unacked), and a plain observer."""

    writer: YPeer
    observer: YPeer
    tokens: dict[bytes, str] = field(default_factory=dict)  # update hash -> inserted text
    close_code: int | None = None

    async def write(self) -> None:
        n = 0
        try:
            while True:
                await self.writer.until(lambda: len(self.tokens) - len(self.writer.acks) < 64)
                token = f"<{n}>"
                update = await self.writer.append(token)
                self.tokens[update_hash(update)] = token
                n += 1
        except ConnectionClosed as exc:
            self.close_code = exc.code
        except (aiohttp.ClientError, ConnectionError):  # sent while the close was under way
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
                self.close_code = (await self.writer.closed(5))[0]

    async def observe(self) -> None:
        with contextlib.suppress(ConnectionClosed, aiohttp.ClientError, ConnectionError):
            await self.observer.until(lambda: False, timeout=60)

    def acked(self) -> set[str]:
        return {self.tokens[a.update_hash] for a in self.writer.acks}

    def broadcast(self) -> set[str]:
        seen = {update_hash(m.update) for m in self.observer.received if isinstance(m, SyncUpdate)}
        return {self.tokens[h] for h in seen if h in self.tokens}


async def start_stream(http: aiohttp.ClientSession, server: ServerProcess) -> Stream:
    url = f"{server.ws_url}/acme/site/{PATH}"
    stream = Stream(await YPeer.connect(http, url, weft=True), await YPeer.connect(http, url))
    return stream


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_documents_survive_a_restart(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    first = weft_server_factory(workdir=tmp_path / "a")
    peer = await YPeer.connect(http, f"{first.ws_url}/acme/site/{PATH}", weft=True)
    await peer.edit(0, "persisted")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    assert first.terminate() == 0
    second = weft_server_factory(workdir=tmp_path / "b", store=first.store)
    joiner = await YPeer.connect(http, f"{second.ws_url}/acme/site/{PATH}")
    assert str(joiner) == "persisted"
    await joiner.close()


async def test_kill_9_while_streaming_loses_nothing_acknowledged_or_broadcast(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = weft_server_factory(workdir=tmp_path / "a")
    stream = await start_stream(http, server)
    tasks = [asyncio.create_task(stream.write()), asyncio.create_task(stream.observe())]
    await wait_for(lambda: len(stream.writer.acks) >= 200)
    server.kill()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    promised = stream.acked() | stream.broadcast()
    restarted = weft_server_factory(workdir=tmp_path / "b", store=server.store)
    text = await text_of(http, restarted)
    missing = [t for t in promised if t not in text]
    print(
        f"\nkill -9 after {len(stream.tokens)} sent, {len(stream.acked())} acked, "
        f"{len(stream.broadcast())} broadcast; {len(missing)} missing after restart"
    )
    assert not missing
    assert len(stream.acked()) >= 200


async def test_sigterm_drains_commits_accepted_updates_and_exits_cleanly(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = weft_server_factory(workdir=tmp_path / "a")
    stream = await start_stream(http, server)
    tasks = [asyncio.create_task(stream.write()), asyncio.create_task(stream.observe())]
    await wait_for(lambda: len(stream.writer.acks) >= 100)
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert await asyncio.to_thread(server.proc.wait, 15) == 0
    assert stream.close_code == 1001  # "server shutting down"
    assert "drained" in server.log()
    with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
        await YPeer.connect(http, f"{server.ws_url}/acme/site/{PATH}")
    restarted = weft_server_factory(workdir=tmp_path / "b", store=server.store)
    text = await text_of(http, restarted)
    promised = stream.acked() | stream.broadcast()
    assert [t for t in promised if t not in text] == []
    # Draining acknowledged (nearly) everything that was in flight when the signal came.
    print(f"\nSIGTERM: {len(stream.tokens)} sent, {len(stream.acked())} acked before close")
