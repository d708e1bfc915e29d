"""A server run with auth off on a loopback address, against web pages of other sites: it
takes every caller on this machine as an admin, and a browser here is such a caller for
any page it shows (server.loopback)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from server.testing import ServerProcess, StartServer, YPeer

pytestmark = pytest.mark.functional

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()  # auth off, on 127.0.0.1


async def handshake(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    """The status a WebSocket handshake with ``headers`` gets (101: accepted)."""
    try:
        async with http.ws_connect(url, headers=headers):
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},  # a sandboxed frame, or a page opened from a file
        {"Origin": "file://"},  # an Electron app's page, as some send it
        {"Origin": "chrome-extension://abcdefghijklmnop"},  # no host of this machine
        {"Origin": "http://127.0.0.1.evil.example:8765"},
        {"Host": "rebound.evil.example:8765"},  # DNS rebinding: the page's own name
        {"Host": "localhost.evil.example.:8765"},
        {"Origin": "http://localhost..:5173"},
    ],
)
async def test_a_web_page_of_another_site_cannot_reach_a_server_with_auth_off(
    server: ServerProcess, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    url = f"{server.ws_url}/acme/site/secret.txt"
    assert await handshake(http, url, headers) == 403
    revert = f"{server.url}/api/v1/acme/site/revert"
    body = json.dumps({"to": "head"})  # text/plain: a "simple" request, no preflight
    plain = {**headers, "Content-Type": "text/plain"}
    async with http.post(revert, data=body, headers=plain) as response:
        assert response.status == 403
        error = (await response.json())["error"]
        assert error["code"] == "forbidden" and "auth is off" in error["message"]
    async with http.get(f"{server.url}/api/v1/acme/site/docs", headers=headers) as response:
        assert response.status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},  # weft sync, Node's y-websocket: no Origin
        {"Origin": "http://localhost:5173"},  # a page served from this machine
        {"Origin": "http://127.0.0.1:3000", "Host": "localhost:8765"},
        {"Origin": "https://app.localhost", "Host": "[::1]:8765"},
        # a fully qualified name, with its root's dot: the same host (it was refused)
        {"Origin": "http://localhost.:5173", "Host": "LOCALHOST.:8765"},
        {"Origin": "http://app.localhost.:3000", "Host": "127.0.0.1:8765"},
        # a page python -m http.server serves (it prints http://0.0.0.0:8000/; was refused)
        {"Origin": "http://0.0.0.0:8000", "Host": "0.0.0.0:8765"},
        {"Origin": "http://[::]:8000", "Host": "[::]:8765"},
    ],
)
async def test_this_machine_still_reaches_a_server_with_auth_off(
    server: ServerProcess, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    assert await handshake(http, f"{server.ws_url}/acme/site/a.txt", headers) == 101
    async with http.get(f"{server.url}/api/v1/acme/site/docs", headers=headers) as response:
        assert response.status in (200, 404)  # 404: no such tenant yet


async def test_insecure_lets_other_sites_in_as_it_lets_other_machines(
    weft_server_factory: StartServer, http: aiohttp.ClientSession
) -> None:
    server = weft_server_factory(args=["--insecure"])
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/a.txt", headers={"Origin": EVIL})
    await peer.close()
