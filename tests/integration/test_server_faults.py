"""Bad input and faults: the offending connection gets a clear close code and reason, no
other connection is affected, nothing is stored."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text
from yarl import URL

from crdt import codec
from crdt.codec import Ack, Awareness, AwarenessEntry, SyncStep1, SyncUpdate
from crdt.versionstamp import ZERO
from server.testing import ServerProcess, StartServer, YPeer, client_session, until

pytestmark = pytest.mark.functional

MAX_MESSAGE = 1 << 20
MAX_UPDATE = 256 << 10


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    quotas = {
        "tiny": {"max_doc_bytes": 4000, "max_connections": 2},
        "slow": {"updates_per_second": 5, "updates_burst": 1},
    }
    return weft_module_server_factory(
        env={
            "WEFT_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
            "WEFT_MAX_UPDATE_BYTES": str(MAX_UPDATE),
            "WEFT_SEND_QUEUE_FRAMES": "64",
            "WEFT_COMMIT_MAX_UPDATES": "32",
            "WEFT_TENANT_QUOTAS": json.dumps(quotas),
            "WEFT_RATE_MAX_WAIT_SECONDS": "0.5",
        }
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def text_update(text: str, client_id: int | None = None) -> bytes:
    doc: Doc[Any] = Doc() if client_id is None else Doc(client_id=client_id)
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


async def stored_updates(
    http: aiohttp.ClientSession, server: ServerProcess, tenant: str, path: str
) -> int:
    async with http.get(f"{server.url}/api/v1/{tenant}/site/docs") as response:
        if response.status == 404:
            return 0
        docs = {d["path"]: d["updates"] for d in (await response.json())["docs"]}
    return int(docs.get(path, 0))


async def stored_doc(
    http: aiohttp.ClientSession, server: ServerProcess, tenant: str, path: str
) -> dict[str, Any]:
    """The document's entry in the project's list once its stored count stays put for
    0.3 s (a closed connection's updates in flight may still be committing)."""
    seen: dict[str, Any] | None = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        async with http.get(f"{server.url}/api/v1/{tenant}/site/docs") as response:
            docs = (await response.json())["docs"] if response.status == 200 else []
        doc: dict[str, Any] | None = next((d for d in docs if d["path"] == path), None)
        if doc is not None and seen is not None and doc["updates"] == seen["updates"]:
            return doc
        seen = doc
        await asyncio.sleep(0.3)
    raise AssertionError(f"{path}: nothing stored, or still changing: {seen}")


def valid_update_of(size: int) -> bytes:
    return text_update("x" * size)


BAD_FRAMES = {
    "empty frame": (b"", 1002),
    "truncated varint": (b"\x00\x02\x80", 1002),
    "forged length": (b"\x00\x02\xff\xff\x03abc", 1002),
    "trailing bytes": (codec.encode(SyncStep1(b"\x00")) + b"\x00", 1002),
    "unknown message type": (b"\x07", 1003),
    "unknown sync message": (b"\x00\x09\x00", 1003),
    "server-only message": (codec.encode(Ack(b"\x00" * 16, ZERO)), 1003),
    "garbage update": (codec.encode(SyncUpdate(b"\x05garbage-bytes")), 1007),
    "state vector garbage": (codec.encode(SyncStep1(b"\x05\x01")), 1007),
    "awareness not JSON": (
        codec.encode(Awareness(codec.encode_awareness([AwarenessEntry(1, 1, "{nope")]))),
        1007,
    ),
    "invalid UTF-8": (b"\x02\x00\x02\xff\xfe", 1007),
    "oversized message": (b"\x00\x02" + os.urandom(MAX_MESSAGE + 10), 1009),
    "update over the size limit": (codec.encode(SyncUpdate(valid_update_of(MAX_UPDATE + 1))), 1009),
}


@pytest.mark.parametrize("case", BAD_FRAMES)
async def test_bad_frame_closes_only_that_connection(
    case: str, server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    frame, code = BAD_FRAMES[case]
    path = f"bad/{uuid.uuid4().hex}.txt"
    url = f"{server.ws_url}/acme/site/{path}"
    bystander = await YPeer.connect(http, url, weft=True)
    bad = await YPeer.connect(http, url)
    await bad.ws.send_bytes(frame)
    closed_code, reason = await bad.closed()
    assert closed_code == code, reason
    assert reason
    await bystander.edit(0, "still fine")
    await bystander.until(lambda: len(bystander.acks) == 1)
    later = await YPeer.connect(http, url)
    assert str(later) == "still fine"
    await later.close()
    await bystander.close()
    assert await stored_updates(http, server, "acme", path) == 1  # the bystander's only


async def test_text_frames_are_refused(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/text-frame")
    await peer.ws.send_str("hello")
    assert await peer.closed() == (1003, "text frames are not supported")


@pytest.mark.parametrize(
    "path",
    [
        "acme/site/a//b",
        "acme/site/a/%2E%2E/b",
        "acme/site/a/./b",
        "ac%20me/site/x",
        "acme/site/%00x",
    ],
)
async def test_bad_paths_are_refused_before_any_read(
    path: str, server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(URL(f"{server.ws_url}/{path}", encoded=True))
    msg = await ws.receive(5)
    assert msg.type == aiohttp.WSMsgType.CLOSE  # not even a SyncStep1
    assert ws.close_code == 4400, msg.extra
    await ws.close()


async def test_update_over_quota_is_refused_with_refused_for_weft_clients(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/{uuid.uuid4().hex}", weft=True)
    await peer.send(SyncUpdate(valid_update_of(MAX_UPDATE + 1)))
    code, reason = await peer.closed()
    assert code == 1009 and "limit" in reason
    assert [r.code for r in peer.refused] == [1009]


def update_frame_of(size: int, client_id: int) -> bytes:
    """A ``SyncUpdate`` frame of exactly ``size`` bytes holding a valid update, of
    ``client_id`` (a random one's varint is 1 to 5 bytes: the frame's size jumped
    between tries, and the search missed the size now and then)."""
    for n in range(size, 0, -1):
        frame = codec.encode(SyncUpdate(text_update("x" * n, client_id)))
        if len(frame) == size:
            return frame
        if len(frame) < size:
            break
    raise AssertionError(f"no update frame of exactly {size} bytes")


async def test_a_message_of_exactly_the_size_limit_is_taken(
    weft_server_factory: StartServer, http: aiohttp.ClientSession
) -> None:
    """The codec and the README take a message of up to WEFT_MAX_MESSAGE_BYTES, but
    aiohttp refused one of exactly that many bytes (1009): it checks ``>=``."""
    limit = 64 << 10
    server = weft_server_factory(
        env={"WEFT_MAX_MESSAGE_BYTES": str(limit), "WEFT_MAX_UPDATE_BYTES": str(limit)}
    )
    url = f"{server.ws_url}/acme/site/limit.txt"
    peer = await YPeer.connect(http, url, weft=True)
    await peer.ws.send_bytes(update_frame_of(limit, 4242))
    await peer.until(lambda: len(peer.acks) == 1)
    other = await YPeer.connect(http, url, weft=True)
    await other.ws.send_bytes(update_frame_of(limit + 1, 4343))
    code, reason = await other.closed()
    assert (code, reason) == (1009, f"message over the {limit}-byte limit")
    await peer.close()
    said = f"a message of {limit + 1} bytes, over the {limit}-byte limit"
    await until(lambda: said in server.log())
    assert f"exceeds limit {limit + 1}" not in server.log()  # aiohttp's limit, not weft's


async def test_document_size_quota_keeps_what_was_accepted(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    path = f"{uuid.uuid4().hex}.txt"
    peer = await YPeer.connect(http, f"{server.ws_url}/tiny/site/{path}", weft=True)
    await peer.append("a" * 1500)
    await peer.append("b" * 1500)
    await peer.until(lambda: len(peer.acks) == 2)
    await peer.append("c" * 1500)
    code, reason = await peer.closed()
    assert code == 4413, reason
    assert await stored_updates(http, server, "tiny", path) == 2
    async with http.get(f"{server.url}/api/v1/tiny/site/docs/{path}") as response:
        assert await response.text() == "a" * 1500 + "b" * 1500


async def test_document_size_quota_counts_updates_sent_back_to_back(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Updates sent without waiting are read before the first of them is committed: the
    quota counts the ones accepted and not stored yet, so the document stays under its
    limit (it was checked against the stored size alone: 4-5x the limit got in)."""
    path = f"{uuid.uuid4().hex}.txt"
    peers = [await YPeer.connect(http, f"{server.ws_url}/tiny/site/{path}") for _ in range(2)]
    for n in range(20):  # 10 x ~500 bytes from each connection, against 4000 in all
        await peers[n % 2].append(str(n % 10) * 500)
    closes = await asyncio.gather(*(p.closed(3) for p in peers), return_exceptions=True)
    doc = await stored_doc(http, server, "tiny", path)
    assert 0 < doc["size"] <= 4000, doc
    assert [c if isinstance(c, BaseException) else c[0] for c in closes] == [4413, 4413]


@pytest.mark.parametrize("refusal", [1009, 4413])
async def test_a_refused_connection_gets_the_acks_of_its_updates_stored(
    refusal: int, server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Updates sent back to back, then one refused (over the update size, or over the
    document's size): the ones before it are stored, and a weft client gets their acks
    before the close frame, with nothing but acks after the refusal (it got none: the
    close dropped them, and the client sent stored updates again on its next
    connection)."""
    tenant = "tiny" if refusal == 4413 else "acme"
    path = f"{uuid.uuid4().hex}.txt"
    peer = await YPeer.connect(http, f"{server.ws_url}/{tenant}/site/{path}", weft=True)
    for n in range(30):
        await peer.append(str(n % 10) * (200 if refusal == 4413 else 10))
    if refusal == 1009:
        await peer.append("z" * (MAX_UPDATE + 1))
    code, reason = await peer.closed()
    assert code == refusal, reason
    stored = (await stored_doc(http, server, tenant, path))["updates"]
    assert 0 < stored < 31
    assert len(peer.acks) == stored
    assert [r.code for r in peer.refused] == [refusal]
    after = peer.received[peer.received.index(peer.refused[0]) + 1 :]
    assert all(isinstance(m, Ack) for m in after), after


async def test_connection_quota(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    url = f"{server.ws_url}/tiny/site/conns"
    first = await YPeer.connect(http, url)
    second = await YPeer.connect(http, url)
    third = await YPeer.connect(http, url, handshake=False)
    code, reason = await third.closed()
    assert code == 4429 and "too many connections" in reason
    await first.close()
    await second.close()


async def test_update_rate_slows_down_then_refuses(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    path = f"{uuid.uuid4().hex}.txt"
    url = f"{server.ws_url}/slow/site/{path}"
    # One connection over the rate is slowed down (backpressure), not refused.
    peer = await YPeer.connect(http, url, weft=True)
    started = time.monotonic()
    for i in range(4):
        await peer.append(str(i))
    await peer.until(lambda: len(peer.acks) == 4)
    assert time.monotonic() - started >= 0.4  # 3 updates over the burst at 5/s
    async with http.get(f"{server.url}/metrics") as response:  # and the operator sees it
        metrics = await response.text()
    delayed = re.search(r"^weft_updates_delayed_total (\S+)$", metrics, re.M)
    waited = re.search(r"^weft_rate_wait_seconds_total (\S+)$", metrics, re.M)
    assert delayed is not None and float(delayed[1]) >= 3, metrics
    assert waited is not None and float(waited[1]) >= 0.4, metrics
    # Many connections at once push the tenant past its wait limit: some are refused.
    await asyncio.sleep(0.3)
    crowd = [await YPeer.connect(http, url, weft=True) for _ in range(6)]
    # Each its own text: the same one, sent at once, would be kept once (crdt.sameonline).
    await asyncio.gather(*(p.append(f"!{n}") for n, p in enumerate(crowd)))
    results = await asyncio.gather(*(p.closed(3) for p in crowd), return_exceptions=True)
    refused = [r for r in results if isinstance(r, tuple) and r[0] == 4429]
    assert refused, results
    acked = sum(len(p.acks) for p in crowd)
    assert await stored_updates(http, server, "slow", path) == 4 + acked
    await peer.close()


def _stalled_socket(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/acme/site/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n", 1)[0]
    return sock


async def test_slow_reader_is_disconnected_and_others_do_not_stall(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    path = f"slow-reader/{uuid.uuid4().hex}.txt"
    url = f"{server.ws_url}/acme/site/{path}"
    stalled = _stalled_socket(server.port, path)
    try:
        writer = await YPeer.connect(http, url, weft=True)
        reader = await YPeer.connect(http, url)
        chunk = "y" * 32_000
        count = 300  # ~9.6 MB: more than the stalled socket's buffers and queue hold
        started = time.monotonic()
        reading = asyncio.create_task(
            reader.until(lambda: len(reader.text) == count * len(chunk), timeout=30)
        )
        for sent in range(count):  # paced by acks like a real client's outbox
            await writer.until(lambda: sent - len(writer.acks) < 32, timeout=30)  # noqa: B023
            await writer.append(chunk)
        await reading
        elapsed = time.monotonic() - started
        print(f"\n{count} updates of 32 kB reached the live reader in {elapsed:.2f} s")
        async with http.get(f"{server.url}/metrics") as response:
            metrics = await response.text()
        assert 'weft_refusals_total{reason="slow_reader"}' in metrics
        await writer.close()
        await reader.close()
    finally:
        stalled.close()


def test_a_connection_that_never_finishes_its_request_is_closed(
    weft_server_factory: StartServer,
) -> None:
    """A client that connects and never sends a whole request (a half-open socket, a
    stalled handshake) was kept, with its file descriptor and handler task, for aiohttp's
    keep-alive default of 3,630 s: a soak's 30 such sockets were all still open after
    210 s. ``WEFT_KEEPALIVE_SECONDS`` (75 by default) bounds it."""
    server = weft_server_factory(env={"WEFT_KEEPALIVE_SECONDS": "0.5"})
    silent = socket.create_connection(("127.0.0.1", server.port))
    partial = socket.create_connection(("127.0.0.1", server.port))
    partial.sendall(b"GET /ws/acme/site/a.txt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
    for sock in (silent, partial):
        with sock:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the server
