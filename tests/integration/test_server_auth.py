"""Auth and tenants against a real server with a secret: tokens decide who reaches what."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest
import yarl
from multidict import CIMultiDict

from client.cli import main as weft
from crdt.codec import SyncUpdate
from server.auth import TWO_TOKENS, issue_token
from server.testing import ConnectionClosed, ServerProcess, StartServer, YPeer, client_session

pytestmark = pytest.mark.functional

SECRET = "test-secret-0123456789abcdef-long-enough"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env={"WEFT_SECRET": SECRET})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def token(
    tenant: str = "acme",
    scope: str = "write",
    projects: list[str] | None = None,
    ttl: int = 600,
    secret: str = SECRET,
) -> str:
    return issue_token(
        secret=secret, tenant=tenant, projects=projects, user="ada", scope=scope, ttl_seconds=ttl
    )


def expired() -> str:
    return jwt.encode(
        {"sub": "ada", "tenant": "acme", "projects": "*", "scope": "write", "exp": 1},
        SECRET,
        algorithm="HS256",
    )


async def refused_before_any_read(
    http: aiohttp.ClientSession, url: str, token: str | None
) -> tuple[int | None, str]:
    """Connect; the first and only thing the server sends must be the close frame."""
    peer = await YPeer.connect(http, url, handshake=False, token=token)
    code, reason = await peer.closed()
    assert peer.received == []  # no SyncStep1: nothing was read for this connection
    return code, reason


async def test_valid_token_syncs_and_creates_its_tenant_on_first_use(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    url = f"{server.ws_url}/{tenant}/site/a.txt"
    a = await YPeer.connect(http, url, token=token(tenant), weft=True)
    b = await YPeer.connect(http, url, headers={"Authorization": f"Bearer {token(tenant)}"})
    await a.edit(0, "hi")
    await b.wait_text("hi")
    await a.until(lambda: len(a.acks) == 1)
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda: None, 4401, "missing token"),
        (lambda: "not-a-jwt", 4401, "malformed token"),
        (expired, 4401, "token expired"),
        (lambda: token(secret="some-other-secret-0123456789abcdef"), 4401, "invalid token"),
        (lambda: token(tenant="other"), 4403, "acme/site"),
        (lambda: token(projects=["blog"]), 4403, "acme/site"),
    ],
    ids=["missing", "malformed", "expired", "bad-signature", "other-tenant", "other-project"],
)
async def test_bad_tokens_are_refused_before_any_read(
    make: object, code: int, words: str, server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    assert callable(make)
    got = await refused_before_any_read(http, f"{server.ws_url}/acme/site/a.txt", make())
    assert got[0] == code
    assert words in got[1]


async def test_read_only_token_syncs_but_its_updates_are_refused(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    path = f"{uuid.uuid4().hex}.txt"
    url = f"{server.ws_url}/acme/site/{path}"
    writer = await YPeer.connect(http, url, token=token(), weft=True)
    await writer.edit(0, "shared")
    await writer.until(lambda: len(writer.acks) == 1)
    reader = await YPeer.connect(http, url, token=token(scope="read"), weft=True)
    plain_reader = await YPeer.connect(http, url, token=token(scope="read"))
    assert str(reader) == "shared"  # it can sync
    await reader.edit(0, "evil ")
    await reader.until(lambda: bool(reader.refused) and bool(reader.denied))
    assert reader.refused[0].code == 4403
    await plain_reader.edit(0, "also evil ")
    await plain_reader.until(lambda: bool(plain_reader.denied))
    assert not plain_reader.refused  # standard clients get only the y-protocols message
    # Nothing stored, nothing broadcast: the writer's next edit is the only news.
    await writer.edit(len(writer.text), "!")
    await writer.until(lambda: len(writer.acks) == 2)
    headers = {"Authorization": f"Bearer {token(scope='read')}"}
    async with http.get(f"{server.url}/api/v1/acme/site/docs/{path}", headers=headers) as r:
        assert await r.text() == "shared!"
    assert str(writer) == "shared!"
    # The refused connection stays open and keeps receiving.
    await reader.until(lambda: "!" in str(reader))
    for peer in (writer, reader, plain_reader):
        await peer.close()


async def test_read_only_token_refused_for_raw_update_frames(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    reader = await YPeer.connect(
        http, f"{server.ws_url}/acme/site/raw.txt", token=token(scope="read")
    )
    await reader.send(SyncUpdate(b"\x01\x02"))  # not even decoded: refused first
    await reader.until(lambda: bool(reader.denied))
    await reader.close()


async def test_rest_api_requires_a_token_for_the_right_tenant(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    base = f"{server.url}/api/v1/acme/site/docs"
    async with http.get(base) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"
    async with http.get(base, params={"token": expired()}) as response:
        assert response.status == 401
        assert "expired" in (await response.json())["error"]["message"]
    async with http.get(base, params={"token": token(tenant="other")}) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "forbidden"
    async with http.get(base, params={"token": token(scope="read")}) as response:
        assert response.status == 200


async def test_tokens_never_reach_the_log(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """The official client sends its token in the query string; the access log leaves
    the query out, so no live token is written (it still logs each request's path)."""
    marker = uuid.uuid4().hex
    secret_token = token()
    async with http.get(
        f"{server.url}/api/v1/acme/{marker}/docs", params={"token": secret_token}
    ) as response:
        assert response.status in (200, 404)
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/{marker}/a.txt", token=secret_token)
    await peer.close()
    for _ in range(50):
        if f"/ws/acme/{marker}/a.txt" in server.log():
            break
        await asyncio.sleep(0.1)
    log = server.log()
    assert f"/api/v1/acme/{marker}/docs" in log
    assert f"/ws/acme/{marker}/a.txt" in log
    assert secret_token not in log


async def test_control_characters_in_a_path_cannot_forge_a_log_line(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """The log wrote the decoded path raw: ``%0a`` in a URL started a line of the
    client's making (NUL too). Control characters are escaped in every line that echoes
    the path: access log, refused API calls and refused WebSocket connections."""
    marker = uuid.uuid4().hex
    forged = f"%0a2026-12-04%2000:00:00,000%20INFO%20weft.access:%20FORGED{marker}%00"
    for url in (
        f"{server.url}/api/v1/acme/notes/docs/x{forged}",  # no such route: 404
        f"{server.url}/api/v1/acme{forged}/notes/docs",  # a bad tenant name: 400
    ):
        async with http.get(yarl.URL(url, encoded=True), params={"token": token()}) as response:
            assert response.status in (400, 404)
    ws_url = yarl.URL(f"{server.ws_url}/acme{forged}/notes/x", encoded=True)
    async with http.ws_connect(ws_url, params={"token": token()}) as ws:
        await ws.receive()
    assert ws.close_code == 4400
    for _ in range(50):  # 3 access log lines, the API's and the WebSocket's refusals
        if server.log().count(f"FORGED{marker}") >= 5:
            break
        await asyncio.sleep(0.1)
    lines = [line for line in server.log().splitlines() if f"FORGED{marker}" in line]
    assert len(lines) == 5, lines
    for line in lines:
        assert f"\\n2026-12-04 00:00:00,000 INFO weft.access: FORGED{marker}\\x00" in line, line
        assert not line.startswith("2026-12-04 00:00:00,000")
    assert "\0" not in server.log()


def has_acks(peer: YPeer, count: int) -> bool:
    return len(peer.acks) == count


async def test_a_connection_is_closed_when_its_token_expires_and_keeps_what_it_acked(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A token checked only at connect would let a connection outlive it for good. At
    its ``exp`` the server stops reading, acknowledges what is in flight, and closes
    with 4401 "token expired"; every acknowledged update is stored and reached the
    other peer, whose connection (a longer token) stays open."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    url = f"{server.ws_url}/{tenant}/site/a.txt"
    short = token(tenant, ttl=2)
    opened = time.monotonic()
    a = await YPeer.connect(http, url, token=short, weft=True)
    b = await YPeer.connect(http, url, token=token(tenant))
    sent = 0
    with pytest.raises(ConnectionClosed) as closed:
        while True:  # edit until the server closes, each edit waiting for its ack
            await a.append(f"{sent},")
            sent += 1
            await a.until(functools.partial(has_acks, a, sent), timeout=5)
            await asyncio.sleep(0.05)
            assert time.monotonic() - opened < 10, "still open 10 s after connecting"
    assert (closed.value.code, closed.value.reason) == (4401, "token expired")
    assert 1.0 <= time.monotonic() - opened < 6  # exp is whole seconds: 1-2 s from now
    acked = "".join(f"{n}," for n in range(len(a.acks)))
    assert len(a.acks) >= 10
    await b.until(lambda: str(b).startswith(acked))
    async with http.get(
        f"{server.url}/api/v1/{tenant}/site/docs/a.txt", params={"token": token(tenant)}
    ) as response:
        assert (await response.text()).startswith(acked)
    await b.append("still open")
    await b.until(lambda: str(b).endswith("still open"))
    assert not b.ws.closed
    assert await refused_before_any_read(http, url, short) == (4401, "token expired")
    await b.close()


async def test_token_create_makes_tokens_for_a_server_that_checks_audience_and_issuer(
    weft_server_factory: StartServer,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in a walkthrough: `weft token create` had no way to set `aud` or `iss`, so
    none of its tokens reached a server run with WEFT_JWT_AUDIENCE / WEFT_JWT_ISSUER
    ("Token is missing the "iss" claim"). The flags, or the variables `weft serve` reads."""
    claims = {"WEFT_JWT_AUDIENCE": "weft-api", "WEFT_JWT_ISSUER": "https://id.example"}
    server = weft_server_factory(env={"WEFT_SECRET": SECRET, **claims})
    url = f"{server.url}/api/v1/acme/site/docs"
    for name in (*claims, "WEFT_PRIVATE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEFT_SECRET", SECRET)
    create = ["token", "create", "--tenant", "acme", "--user", "ada"]

    def created(*argv: str) -> str:
        assert weft([*create, *argv]) == 0
        return capsys.readouterr().out.strip()

    async def status(token: str) -> tuple[int, str]:
        async with http.get(url, params={"token": token}) as response:
            return response.status, await response.text()

    async def accepted(token: str) -> bool:
        """Past the token check: a 404 (no room opened yet, so no tenant), not a 401."""
        code, text = await status(token)
        assert code in (401, 404), (code, text)
        return code == 404 and "unknown tenant" in text

    code, text = await status(created())
    assert code == 401, text
    assert json.loads(text)["error"]["message"] == 'invalid token: Token is missing the "iss" claim'
    assert await accepted(created("--audience", "weft-api", "--issuer", "https://id.example"))
    assert not await accepted(created("--audience", "other", "--issuer", "https://id.example"))
    for name, value in claims.items():
        monkeypatch.setenv(name, value)
    assert await accepted(created())
    assert not await accepted(created("--audience", "other-api"))  # the flag wins


async def test_a_token_with_an_audience_is_refused_by_a_server_run_without_one(
    server: ServerProcess,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without WEFT_JWT_AUDIENCE the server did not check ``aud`` at all: a token issued
    for another service by the same identity provider (same key) was taken. It is
    refused now, over REST and WebSocket, with a reason that tells the operator what to
    set; `weft token create --audience` makes such a token, and without it one that is
    taken."""
    for name in ("WEFT_JWT_AUDIENCE", "WEFT_JWT_ISSUER", "WEFT_PRIVATE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEFT_SECRET", SECRET)
    create = ["token", "create", "--tenant", "acme", "--user", "ada"]
    assert weft([*create, "--audience", "other-service"]) == 0
    other = capsys.readouterr().out.strip()
    assert jwt.decode(other, options={"verify_signature": False})["aud"] == "other-service"
    reason = "invalid token: it has an 'aud' claim and this server expects none "
    reason += "(set WEFT_JWT_AUDIENCE to accept it)"
    url = f"{server.url}/api/v1/acme/site/docs"
    async with http.get(url, params={"token": other}) as response:
        assert response.status == 401
        assert (await response.json())["error"] == {"code": "unauthorized", "message": reason}
    assert await refused_before_any_read(http, f"{server.ws_url}/acme/site/a.txt", other) == (
        4401,
        reason,
    )
    assert weft(create) == 0
    plain = capsys.readouterr().out.strip()
    async with http.get(url, params={"token": plain}) as response:
        assert response.status in (200, 404), await response.text()  # past the token check


async def test_two_different_tokens_in_one_request_are_refused(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """The query's token used to win, silently, over the Authorization header's (which a
    proxy in front may be the one to have checked), and the first ``?token=`` over a
    second on a WebSocket."""
    mine, other = token(projects=["site"]), token(tenant="other")
    docs = f"{server.url}/api/v1/other/site/docs"
    bearer = {"Authorization": f"Bearer {mine}"}
    async with http.get(docs, params={"token": other}, headers=bearer) as response:
        assert response.status == 401
        assert "two different tokens" in (await response.json())["error"]["message"]
    same = {"Authorization": f"Bearer {other}"}
    async with http.get(docs, params={"token": other}, headers=same) as response:
        assert response.status in (200, 404)  # 404: tenant "other" has nothing yet
    url = f"{server.ws_url}/other/site/a.txt?token={other}&token={mine}"
    assert await refused_before_any_read(http, url, None) == (4401, TWO_TOKENS)


async def test_two_authorization_headers_with_different_tokens_are_refused(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """The first of two ``Authorization: Bearer`` headers was used and the second ignored,
    silently (a proxy in front may have checked the second): read with the first's tenant."""
    mine, other = token(tenant="other"), token(tenant="acme", projects=["site"])
    two = CIMultiDict([("Authorization", f"Bearer {mine}"), ("Authorization", f"Bearer {other}")])
    async with http.get(f"{server.url}/api/v1/other/site/docs", headers=two) as response:
        assert response.status == 401, await response.text()
        assert "two different tokens" in (await response.json())["error"]["message"]
    peer = await YPeer.connect(
        http, f"{server.ws_url}/other/site/a.txt", handshake=False, headers=two
    )
    assert await peer.closed() == (4401, TWO_TOKENS)
    assert peer.received == []
    same = CIMultiDict([("Authorization", f"Bearer {mine}"), ("Authorization", f"Bearer {mine}")])
    async with http.get(f"{server.url}/api/v1/other/site/docs", headers=same) as response:
        assert response.status in (200, 404)  # past the token check
