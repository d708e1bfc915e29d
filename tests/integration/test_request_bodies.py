"""The JSON bodies of ``POST revert``, ``conflicts`` and ``conflicts/{id}/resolve``
against a real server: whatever a client sends is a JSON 400 that says what is wrong,
never a 500 with an ERROR traceback in the log, and nothing is written.

Found in an audit: a body nested 100,000 deep (``[[[[...``) raised ``RecursionError``, a
charset Python does not know raised ``LookupError``, and a lone surrogate in a string
(``"\\ud800"``: valid JSON, no valid UTF-8) failed as the record was stored
(``UnicodeEncodeError``): each a 500 and a traceback. A report's ``device`` was not held
to the device-name rule that revert's ``device`` and ``?device=`` are. A key a body does not
take was ignored: a mistyped ``"pth"`` made a revert of one document a revert of the
whole project."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from server.testing import AUTH_ENV, ServerProcess, StartServer, YPeer, call_api, token_for

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


async def post(
    http: aiohttp.ClientSession, url: str, data: bytes, content_type: str = "application/json"
) -> tuple[int, str, Any]:
    headers = {"Authorization": f"Bearer {token_for()}", "Content-Type": content_type}
    async with http.post(url, data=data, headers=headers) as response:
        reply = await response.json() if response.content_type == "application/json" else None
        return response.status, response.content_type, reply


async def a_conflict(server: ServerProcess, http: aiohttp.ClientSession, project: str) -> str:
    """A project with one document, ``a.md``, and one open conflict on it: its id."""
    peer = await YPeer.connect(
        http, f"{server.ws_url}/acme/{project}/a.md", token=token_for(), weft=True
    )
    await peer.append("server text")
    await peer.until(lambda: len(peer.acks) == 1)
    await peer.close()
    url = f"{server.url}/api/v1/acme/{project}/conflicts"
    status, reply = await call_api(
        http, "POST", url, token=token_for(), body={"path": "a.md", "text": "mine"}
    )
    assert status == 201, reply
    return str(reply["conflict"]["id"])


async def state(http: aiohttp.ClientSession, server: ServerProcess, project: str) -> Any:
    """What these requests could have written: the document's history, the conflicts."""
    api = f"{server.url}/api/v1/acme/{project}"
    _, history = await call_api(http, "GET", f"{api}/history/a.md", token=token_for())
    _, conflicts = await call_api(http, "GET", f"{api}/conflicts", token=token_for())
    return history, conflicts


def errors(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if " ERROR " in line or "Traceback" in line]


DEEP = [b"[" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000, b"[" * 2_000 + b"]" * 2_000]


@pytest.mark.parametrize("route", ["revert", "conflicts", "resolve"])
async def test_a_body_nested_too_deeply_or_in_an_unknown_charset_is_a_400(
    server: ServerProcess, http: aiohttp.ClientSession, route: str
) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    cid = await a_conflict(server, http, project)
    path = f"conflicts/{cid}/resolve" if route == "resolve" else route
    url = f"{server.url}/api/v1/acme/{project}/{path}"
    before = await state(http, server, project)
    for body in DEEP:
        status, kind, reply = await post(http, url, body)
        assert (status, kind) == (400, "application/json"), (body[:20], reply)
        assert reply["error"] == {
            "code": "bad_request",
            "message": "the request body must be a JSON object: this one is nested too deeply",
        }
    for charset in ("nonsense", "rot13"):
        status, _, reply = await post(http, url, b"{}", f"application/json; charset={charset}")
        assert (status, reply["error"]["code"]) == (400, "bad_request"), reply
        assert f"unknown charset '{charset}'" in reply["error"]["message"]
    assert await state(http, server, project) == before
    assert errors(server) == []


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("conflicts", b'{"path": "a.md", "text": "\\ud800"}', "text"),
        ("conflicts", b'{"path": "a.md", "text": "fine \\udfff then"}', "text"),
        ("resolve", b'{"resolution": "\\ud800"}', "resolution"),
    ],
)
async def test_a_lone_surrogate_in_a_string_is_a_400_naming_the_field(
    server: ServerProcess, http: aiohttp.ClientSession, route: str, body: bytes, field: str
) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    cid = await a_conflict(server, http, project)
    path = f"conflicts/{cid}/resolve" if route == "resolve" else route
    before = await state(http, server, project)
    status, _, reply = await post(http, f"{server.url}/api/v1/acme/{project}/{path}", body)
    assert (status, reply["error"]["code"]) == (400, "bad_request"), reply
    assert reply["error"]["message"].startswith(f'"{field}" is not valid Unicode'), reply
    assert await state(http, server, project) == before
    assert errors(server) == []


@pytest.mark.parametrize(
    "device",
    ["\udc00", "two words", "a" * 65, "tab\there", "new\nline", "é"],
    ids=["surrogate", "space", "65-chars", "tab", "newline", "non-ascii"],
)
async def test_a_reports_device_follows_the_device_name_rule(
    server: ServerProcess, http: aiohttp.ClientSession, device: str
) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    await a_conflict(server, http, project)
    url = f"{server.url}/api/v1/acme/{project}/conflicts"
    before = await state(http, server, project)
    body = {"path": "a.md", "text": "other", "device": device}
    status, reply = await call_api(http, "POST", url, token=token_for(), body=body)
    assert (status, reply["error"]["code"]) == (400, "bad_request"), reply
    assert (
        reply["error"]["message"] == '"device" must be a device name: 1-64 of A-Z a-z 0-9 . _ : -'
    )
    assert await state(http, server, project) == before
    # what the rule allows (and no device at all, as before) is taken
    for good in ("dev-0a1b2c3d", "laptop.home:2", "", None):
        body = {"path": "a.md", "text": f"other {good}"}
        if good is not None:
            body["device"] = good
        status, reply = await call_api(http, "POST", url, token=token_for(), body=body)
        assert status == 201, reply
        assert reply["conflict"]["ours"]["clients"] == ([good] if good else [])
    assert errors(server) == []


@pytest.mark.parametrize(
    ("route", "body", "key"),
    [
        ("revert", {"to": "TARGET", "pth": "a.md"}, "pth"),  # was a whole-project revert
        ("resolve", {"note": "kept mine"}, "note"),  # was resolved with no note, for good
        ("conflicts", {"path": "a.md", "text": "mine too", "devcie": "laptop"}, "devcie"),
    ],
)
async def test_a_key_a_body_does_not_take_is_a_400_naming_it(
    server: ServerProcess, http: aiohttp.ClientSession, route: str, body: dict[str, str], key: str
) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    cid = await a_conflict(server, http, project)
    api = f"{server.url}/api/v1/acme/{project}"
    _, history = await call_api(http, "GET", f"{api}/history/a.md", token=token_for())
    target = history["versions"][0]["versionstamp"]  # before b.md: reverting to it deletes b.md
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/{project}/b.md", token=token_for())
    await peer.append("b")
    await peer.close()
    b_md, tok = f"{api}/history/b.md", token_for()
    await until_ok(http, b_md)
    before = await state(http, server, project), await call_api(http, "GET", b_md, token=tok)
    path = f"conflicts/{cid}/resolve" if route == "resolve" else route
    sent = {k: target if v == "TARGET" else v for k, v in body.items()}
    status, reply = await call_api(http, "POST", f"{api}/{path}", token=token_for(), body=sent)
    assert (status, reply["error"]["code"]) == (400, "bad_request"), reply
    assert f"the body takes no {key!r} key: it takes " in reply["error"]["message"], reply
    after = await state(http, server, project), await call_api(http, "GET", b_md, token=tok)
    assert after == before
    assert errors(server) == []


async def until_ok(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        status, _ = await call_api(http, "GET", url, token=token_for())
        if status == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never answered 200")
