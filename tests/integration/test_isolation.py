"""Tenant and project isolation on every REST route, against a real server with a secret.

The routes are read from the application's router, so a route added later is covered
without being listed here: each must refuse (401/403) a token that does not reach its
project before it reads anything, answering no ``X-Weft-*`` header, no ``ETag`` and
nothing of the document; and each write route must refuse a read-only token.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from pycrdt import Doc, Map, Text

from crdt.codec import (
    Awareness,
    AwarenessEntry,
    Base,
    Message,
    SyncStep2,
    SyncUpdate,
    encode_awareness,
)
from crdt.versionstamp import ZERO, Versionstamp
from server.testing import (
    AUTH_ENV,
    TEST_SECRET,
    ServerProcess,
    StartServer,
    YPeer,
    api_routes,
    call_api,
    client_session,
    token_for,
)

pytestmark = pytest.mark.functional

TEXT = "acme's secret text"


@dataclass(frozen=True)
class Stored:
    """What the project acme/site holds: one document and one conflict record."""

    server: ServerProcess
    conflict: str


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


@pytest.fixture
async def stored(server: ServerProcess, http: aiohttp.ClientSession) -> Stored:
    writer = token_for(projects=["site"])
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/a.txt", token=writer, weft=True)
    if str(peer) != TEXT:  # the module's first test writes it
        await peer.edit(0, TEXT)
        await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    status, body = await call_api(
        http,
        "POST",
        f"{server.url}/api/v1/acme/site/conflicts",
        token=writer,
        body={"path": "a.txt", "text": "another text"},
    )
    assert status == 201, body
    return Stored(server, body["conflict"]["id"])


def fill(path: str, conflict: str) -> str:
    return path.format(tenant="acme", project="site", path="a.txt", id=conflict)


def unsigned(**claims: object) -> str:
    """A token with ``alg: none`` (no signature)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "eve",
        "tenant": "acme",
        "projects": "*",
        "scope": "admin",
        "exp": int(time.time()) + 600,
    }
    base.update(overrides)
    return base


def signed(**overrides: object) -> str:
    return jwt.encode(claims(**overrides), TEST_SECRET, algorithm="HS256")


REFUSED: dict[str, tuple[Callable[[], str | None], int]] = {
    "no token": (lambda: None, 401),
    "another tenant": (lambda: token_for("eve", tenant="globex", scope="admin"), 403),
    "another project": (lambda: token_for("eve", projects=["docs"], scope="admin"), 403),
    "no project": (lambda: token_for("eve", projects=[], scope="admin"), 403),
    "expired": (lambda: signed(exp=int(time.time()) - 5), 401),
    "not yet valid": (lambda: signed(nbf=int(time.time()) + 600), 401),
    "alg none": (lambda: unsigned(**claims()), 401),
    "another secret": (lambda: token_for("eve", secret="x" * 40, scope="admin"), 401),
    "projects a string": (lambda: signed(projects="site"), 401),
    "scope a list": (lambda: signed(scope=["admin"]), 401),
    "tenant null": (lambda: signed(tenant=None), 401),
    "tenant *": (lambda: signed(tenant="*"), 401),
}


@pytest.mark.parametrize("kind", list(REFUSED))
async def test_every_api_route_refuses_a_token_that_does_not_reach_the_project(
    kind: str, stored: Stored, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    make, status = REFUSED[kind]
    token = make()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"to": "head", "path": "a.txt", "text": "x", "resolution": "x"}
    for method, path in api_routes(tmp_path):
        url = stored.server.url + fill(path, stored.conflict)
        json_body = body if method == "POST" else None
        async with http.request(method, url, headers=headers, json=json_body) as response:
            text = await response.text()
            said = f"{kind}: {method} {path}: {response.status} {text}"
            assert response.status == status, said
            assert json.loads(text)["error"]["code"] in ("unauthorized", "forbidden"), said
            assert TEXT not in text and stored.conflict not in text, said
            leaked = [h for h in response.headers if h.lower().startswith("x-weft-")]
            assert leaked == [] and "ETag" not in response.headers, said


async def test_a_read_only_token_is_refused_on_every_write_route(
    stored: Stored, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    reader = token_for("eve", projects=["site"], scope="read")
    base = f"{stored.server.url}/api/v1/acme/site"
    _, before = await call_api(http, "GET", f"{base}/history/a.txt", token=reader)
    writes = [(m, p) for m, p in api_routes(tmp_path) if m != "GET"]
    assert len(writes) >= 3  # revert, a conflict report, resolve
    for method, path in writes:
        url = stored.server.url + fill(path, stored.conflict)
        body = {"to": "0" * 24, "path": "a.txt", "text": "x", "resolution": "x"}
        status, answer = await call_api(http, method, url, token=reader, body=body)
        assert status == 403, (method, path, answer)
        assert "does not allow write" in answer["error"]["message"]
    _, after = await call_api(http, "GET", f"{base}/history/a.txt", token=reader)
    assert after == before
    status, record = await call_api(
        http, "GET", f"{base}/conflicts/{stored.conflict}", token=reader
    )
    assert (status, record["conflict"]["status"]) == (200, "open")


async def test_a_read_only_connection_stores_nothing_whatever_it_sends(
    stored: Stored, http: aiohttp.ClientSession
) -> None:
    """An update, a SyncStep2 answer, updates inside an offline branch (``base``), new
    deletions and the deleted flag: each refused, nothing stored or broadcast. Its
    awareness is relayed (not document data: see README "Auth and tenants")."""
    server, url = stored.server, f"{stored.server.ws_url}/acme/site/a.txt"
    reader_token = token_for("eve", projects=["site"], scope="read")
    base = f"{server.url}/api/v1/acme/site"
    _, before = await call_api(http, "GET", f"{base}/history/a.txt", token=reader_token)
    writer = await YPeer.connect(http, url, token=token_for(projects=["site"]), weft=True)
    reader = await YPeer.connect(http, url, token=reader_token, weft=True, device="eve-laptop")
    head = Versionstamp.from_hex(before["versions"][0]["versionstamp"])
    sent = 0
    for message in _read_only_attempts(reader.doc, head):
        await reader.send(message)
        sent += not isinstance(message, Base)
    await reader.send(Awareness(encode_awareness([AwarenessEntry(7, 1, '{"name": "eve"}')])))
    await reader.until(lambda: len(reader.refused) == sent)
    assert {r.code for r in reader.refused} == {4403} and reader.acks == []
    await writer.until(lambda: bool(writer.awareness))  # relayed, and nothing else
    assert str(writer) == TEXT and not any(isinstance(m, SyncUpdate) for m in writer.received)
    _, after = await call_api(http, "GET", f"{base}/history/a.txt", token=reader_token)
    assert after == before


def _read_only_attempts(doc: Doc[Any], head: Versionstamp) -> list[Message]:
    """What a read-only connection may try, made on its copy of the document."""

    def change(edit: Callable[[], None]) -> bytes:
        state = doc.get_state()
        edit()
        return doc.get_update(state)

    text = doc.get("content", type=Text)
    return [
        SyncUpdate(change(lambda: text.insert(0, "evil "))),
        SyncStep2(change(lambda: text.insert(0, "answer "))),
        Base(head),
        SyncUpdate(change(lambda: text.insert(0, "offline "))),
        Base(ZERO),
        SyncUpdate(change(lambda: text.__delitem__(slice(0, len(TEXT) // 2)))),
        SyncUpdate(change(lambda: doc.get("weft", type=Map).__setitem__("deleted", True))),
    ]
