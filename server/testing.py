"""Helpers for tests that talk to a real server: start ``python -m server`` processes,
tokens for a server started with :data:`AUTH_ENV`, REST calls (:func:`call_api`), and a
y-websocket peer (aiohttp's WebSocket client + :mod:`crdt.codec` + a ``pycrdt.Doc``).

Not imported by the server itself. ``tests/integration/conftest.py`` wraps these in
fixtures (``weft_server``, ``weft_server_factory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pycrdt import Doc, Text

from crdt import codec
from crdt.codec import (
    Ack,
    AuthDenied,
    Awareness,
    Message,
    Refused,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from server.app import create_app
from server.auth import issue_token
from server.config import Settings

REPO = Path(__file__).resolve().parents[1]
TEST_SECRET = "weft-test-secret-0123456789abcdef-long-enough"
AUTH_ENV = {"WEFT_SECRET": TEST_SECRET}
"""``start_server(env=AUTH_ENV)``: auth on, tokens from :func:`token_for`."""


def token_for(
    user: str = "ada",
    *,
    tenant: str = "acme",
    scope: str = "write",
    projects: list[str] | None = None,
    ttl: int = 600,
    secret: str = TEST_SECRET,
) -> str:
    """A token (HS256) for a server started with :data:`AUTH_ENV`, valid ``ttl`` seconds,
    for all of the tenant's projects unless ``projects`` names some."""
    return issue_token(
        secret=secret, tenant=tenant, projects=projects, user=user, scope=scope, ttl_seconds=ttl
    )


async def call_api(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    **params: str,
) -> tuple[int, Any]:
    """One REST call, ``body`` sent as JSON, with ``Authorization: Bearer`` when a
    ``token`` is given. The status, and the reply: decoded if it is JSON, else bytes."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, params=params, json=body, headers=headers) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.read()


def api_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app under ``/api/v1/`` (e.g.
    ``("GET", "/api/v1/{tenant}/{project}/docs/{path}")``), read from its router, so a
    route added later is covered by the tests that use this. Building the application
    opens nothing (its store, in ``tmp_path``, would open when it starts)."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'unopened.db'}"))
    routes = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method != "HEAD" and path.startswith("/api/v1/"):
            routes.append((route.method, path))
    return routes


class Listening:
    """A server on ``127.0.0.1:port``: its URLs."""

    port: int

    @property
    def url(self) -> str:
        """Base HTTP URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The y-websocket server URL: ``ws://127.0.0.1:PORT/ws`` (+ ``/tenant/project/path``)."""
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class InProcessServer(Listening):
    """An app served by this process's event loop (see :func:`serve_in_process`)."""

    app: web.Application
    port: int


@contextlib.asynccontextmanager
async def serve_in_process(app: web.Application) -> AsyncIterator[InProcessServer]:
    """Run ``app`` (e.g. ``server.app.create_app(settings)``) on a free port of 127.0.0.1
    in the running loop; on exit it shuts down like on SIGTERM (drain, then cleanup)."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield InProcessServer(app, int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()


async def until(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    """Wait (polling every 10 ms) until ``predicate()`` is true; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChildProcess:
    """A process a test started, to stop gently or to crash."""

    proc: subprocess.Popen[bytes]

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (a server drains) and wait; returns the exit code. Still running after
        ``timeout``: SIGKILL, and ``subprocess.TimeoutExpired``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup (a crash)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class ServerProcess(ChildProcess, Listening):
    """One ``python -m server`` child process listening on 127.0.0.1."""

    port: int
    store: str
    log_path: Path
    env: dict[str, str]
    args: tuple[str, ...]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


StartServer = Callable[..., ServerProcess]
"""The type of the ``weft_server_factory`` fixture: ``start(**kwargs of start_server)``."""


def start_server(
    workdir: Path,
    *,
    store: str | None = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    timeout: float = 20.0,
) -> ServerProcess:
    """Start ``python -m server`` on a free port with a SQLite store in ``workdir`` (unless
    ``store`` is given) and wait until ``/healthz`` answers. ``WEFT_*`` variables of the
    calling environment are not passed on; ``env`` adds variables. Refused connections
    are closed at once unless ``env`` sets ``WEFT_REFUSAL_HOLD_SECONDS``."""
    if port is not None:
        return _start_server(workdir, store, env, args, port, timeout)
    # A port free a moment ago may be taken before the server binds it (the suite runs
    # in parallel processes): then try another.
    for _ in range(4):
        with contextlib.suppress(PortTaken):
            return _start_server(workdir, store, env, args, free_port(), timeout)
    return _start_server(workdir, store, env, args, free_port(), timeout)


class PortTaken(RuntimeError):
    """The server could not listen: its port was taken."""


def _start_server(
    workdir: Path,
    store: str | None,
    env: Mapping[str, str] | None,
    args: Sequence[str],
    port: int,
    timeout: float,
) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    store = store or f"sqlite:///{workdir / 'weft.db'}"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    child_env.setdefault("WEFT_LOG_LEVEL", "INFO")
    # Tests refuse one client many times in a row, from one address: no hold before the
    # close (server.backoff) unless a test asks for one.
    child_env.setdefault("WEFT_REFUSAL_HOLD_SECONDS", "0")
    child_env.update(env or {})
    log_path = workdir / f"server-{port}.log"
    command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--store", store, *args]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=child_env, stdout=log, stderr=subprocess.STDOUT
        )
    server = ServerProcess(proc, port, store, log_path, child_env, tuple(args))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            error = PortTaken if "Address already in use" in server.log() else RuntimeError
            raise error(f"server exited with {proc.returncode}:\n{server.log()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{server.url}/healthz", timeout=1) as response,
        ):
            if response.status == 200:
                return server
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"server did not become healthy in {timeout} s:\n{server.log()}")


_peers: weakref.WeakKeyDictionary[aiohttp.ClientSession, list[YPeer]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session; every :class:`YPeer` opened through it is closed on exit
    (so a test that stops early leaves no socket behind)."""
    async with aiohttp.ClientSession() as session:
        try:
            yield session
        finally:
            for peer in _peers.pop(session, []):
                with contextlib.suppress(Exception):
                    await peer.close()


class ConnectionClosed(Exception):
    """The server closed the WebSocket."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass
class YPeer:
    """A y-websocket peer over aiohttp with a pycrdt document (text root ``content``)."""

    ws: aiohttp.ClientWebSocketResponse
    doc: Doc[Any] = field(default_factory=Doc)
    received: list[Message] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    awareness: list[bytes] = field(default_factory=list)
    synced: bool = False

    @classmethod
    async def connect(
        cls,
        session: aiohttp.ClientSession,
        url: str,
        *,
        token: str | None = None,
        weft: bool = False,
        handshake: bool = True,
        headers: Mapping[str, str] | None = None,
        device: str | None = None,
    ) -> YPeer:
        """Connect to ``url`` (``ws://host:port/ws/tenant/project/path``) and, unless
        ``handshake`` is False, sync with the server (both steps)."""
        params = {}
        if token is not None:
            params["token"] = token
        if weft:
            params["weft"] = "1"
        if device is not None:
            params["device"] = device
        ws = await session.ws_connect(url, params=params, headers=headers, max_msg_size=0)
        peer = cls(ws)
        _peers.setdefault(session, []).append(peer)
        if handshake:
            await peer.handshake()
        return peer

    @property
    def text(self) -> Text:
        text: Text = self.doc.get("content", type=Text)
        return text

    def __str__(self) -> str:
        return str(self.text)

    async def send(self, message: Message) -> None:
        await self.ws.send_bytes(codec.encode(message))

    async def handshake(self, timeout: float = 5.0) -> None:
        """Answer the server's SyncStep1, ask with ours, wait for its SyncStep2."""
        await self.send(SyncStep1(self.doc.get_state()))
        await self.until(lambda: self.synced, timeout)

    async def next(self, timeout: float = 5.0) -> Message:
        """The next message from the server (sync messages are applied to ``doc``)."""
        msg = await self.ws.receive(timeout)
        if msg.type == aiohttp.WSMsgType.CLOSE:  # msg.data: the code the server sent
            raise ConnectionClosed(int(msg.data), str(msg.extra or ""))
        if msg.type == aiohttp.WSMsgType.CLOSING:
            raise ConnectionClosed(self.ws.close_code, "")
        if msg.type == aiohttp.WSMsgType.CLOSED:
            raise ConnectionClosed(self.ws.close_code, "")
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"unexpected frame {msg.type}: {msg.data!r}")
        message = codec.decode(msg.data)
        self.received.append(message)
        match message:
            case SyncStep1(state_vector=sv):
                await self.send(SyncStep2(self.doc.get_update(sv)))
            case SyncStep2(update=update):
                self.doc.apply_update(update)
                self.synced = True
            case SyncUpdate(update=update):
                self.doc.apply_update(update)
            case Ack():
                self.acks.append(message)
            case Refused():
                self.refused.append(message)
            case AuthDenied(reason=reason):
                self.denied.append(reason)
            case Awareness(payload=payload):
                self.awareness.append(payload)
        return message

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Read messages until ``predicate()`` holds (TimeoutError after ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            await self.next(left)

    async def wait_text(self, expected: str, timeout: float = 5.0) -> None:
        await self.until(lambda: str(self.text) == expected, timeout)

    async def edit(self, index: int, text: str) -> bytes:
        """Insert ``text`` at ``index`` locally and send the update; returns its bytes."""
        before = self.doc.get_state()
        self.text.insert(index, text)
        update = self.doc.get_update(before)
        await self.send(SyncUpdate(update))
        return update

    async def append(self, text: str) -> bytes:
        return await self.edit(len(self.text), text)

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Read until the server closes; its close code and reason."""
        try:
            await self.until(lambda: False, timeout)
        except ConnectionClosed as exc:
            return exc.code, exc.reason
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        await self.ws.close()
