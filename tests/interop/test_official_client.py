"""The official Yjs client (``WebsocketProvider`` from y-websocket, in Node) against a real
weft server with auth on: sync, offline edits, awareness, read-only tokens and tenants.

Each case runs one script of ``tests/interop/`` and asserts on the JSON it prints, then
checks what the server stored through the REST API.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from server.auth import issue_token
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.interop, pytest.mark.functional]

SECRET = "interop-secret-0123456789abcdef-long-enough"
PROJECT = "site"
RunScript = Callable[..., dict[str, Any]]  # the run_script fixture (conftest.py)


SMALL_UPDATES = "refusals"  # a tenant whose updates are limited to 64 KiB
SMALL_UPDATE_BYTES = 64 << 10


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    quotas = {SMALL_UPDATES: {"max_update_bytes": SMALL_UPDATE_BYTES}}
    return weft_module_server_factory(
        env={
            "WEFT_SECRET": SECRET,
            "WEFT_TENANT_QUOTAS": json.dumps(quotas),
            "WEFT_REFUSAL_HOLD_SECONDS": "10",  # the default (server.testing sets 0)
        }
    )


@pytest.fixture
def tenant() -> str:
    """A tenant of its own for each test, so the module's server is shared safely."""
    return f"t{uuid.uuid4().hex[:10]}"


def token(tenant: str, scope: str = "write") -> str:
    return issue_token(
        secret=SECRET, tenant=tenant, projects=None, user="interop", scope=scope, ttl_seconds=600
    )


def rest(server: ServerProcess, tenant: str, path: str) -> Any:
    """GET /api/v1/{tenant}/site/{path} with an admin token of ``tenant``; JSON or text."""
    request = urllib.request.Request(
        f"{server.url}/api/v1/{tenant}/{PROJECT}/{path}",
        headers={"Authorization": f"Bearer {token(tenant, 'admin')}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
        if response.headers.get_content_type() == "application/json":
            return json.loads(body)
        return body


def stored_text(server: ServerProcess, tenant: str, path: str) -> str:
    text: str = rest(server, tenant, f"docs/{path}")
    return text


def stored_docs(server: ServerProcess, tenant: str) -> dict[str, dict[str, Any]]:
    listing = rest(server, tenant, "docs")
    return {doc["path"]: doc for doc in listing["docs"]}


def refusals(server: ServerProcess, reason: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf'^weft_refusals_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def options(server: ServerProcess, tenant: str, room: str, **more: Any) -> dict[str, Any]:
    """The ``WebsocketProvider(serverUrl, roomname)`` split the README documents."""
    return {"url": f"{server.ws_url}/{tenant}/{PROJECT}", "room": room, **more}


def test_two_providers_converge(server: ServerProcess, tenant: str, run_script: RunScript) -> None:
    edits = 50
    result = run_script(
        "converge", options(server, tenant, "src/app.js", token=token(tenant), edits=edits)
    )
    text = result["a"]
    assert result["b"] == text and result["late"] == text
    for side in "ab":
        for i in range(edits):
            assert text.count(f"{side}{i};") == 1, f"{side}{i}; missing or doubled in {text!r}"
    assert len(text) == sum(len(f"a{i};") for i in range(edits)) * 2
    assert result["lateMeta"] == {"title": "from a", "lang": "js"}
    assert result["closes"] == []  # the server never dropped anybody
    assert stored_text(server, tenant, "src/app.js") == text
    assert stored_docs(server, tenant)["src/app.js"]["updates"] >= 2 * edits


def test_offline_edits_converge_on_connect(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    result = run_script("offline", options(server, tenant, "notes/todo.md", token=token(tenant)))
    text = result["online"]
    assert result["offline"] == text
    assert result["offlineBefore"] == "offline-1\noffline-2\n"
    for line in ("online-1\n", "online-2\n", "offline-1\n", "offline-2\n"):
        assert text.count(line) == 1, f"{line!r} missing or doubled in {text!r}"
    assert "scratch" not in text
    assert result["onlineMeta"] == {"offline": True}
    assert stored_text(server, tenant, "notes/todo.md") == text


def test_awareness_appears_and_disappears(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    result = run_script(
        "awareness",
        options(server, tenant, "src/app.js", token=token(tenant), removalTimeoutMs=5000),
    )
    assert result["bSawA"] == {"name": "ada", "cursor": 1}
    assert result["lateSaw"] == {
        "a": {"name": "ada", "cursor": 1},
        "b": {"name": "bob", "cursor": 0},
    }
    # Both removals came within the script's 5 s (the client's own timeout is 30 s).
    assert result["cleanRemovalMs"] < 5000 and result["droppedRemovalMs"] < 5000
    assert result["lateStates"] == 1  # only the late joiner itself is left
    assert "src/app.js" not in stored_docs(server, tenant)  # awareness is never stored


def test_a_provider_whose_socket_died_is_seen_again_at_once(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """Regression: the server removed the provider's state at a clock past it, and the
    provider, reconnected, sent it again at its old clock, which the others ignore: it
    stayed invisible until its second awareness renewal (30 s). The server now answers
    such a state with the removal, and y-protocols re-sends its state at a newer clock."""
    result = run_script(
        "rejoin", options(server, tenant, "src/app.js", token=token(tenant), backMs=3000)
    )
    assert result["backAfterMs"] < 3000
    assert result["closes"] == []


def test_more_providers_than_one_connections_awareness_clients(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """Regression: every provider re-sends the states it receives, and the echoes counted
    as its own clients: with 9 or more providers in a room, all were closed with 4429."""
    result = run_script(
        "crowd", options(server, tenant, "src/app.js", token=token(tenant), peers=10)
    )
    assert result["closes"] == []


def test_read_only_token_cannot_write(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    refused_before = refusals(server, "read_only")
    result = run_script(
        "readonly",
        options(
            server,
            tenant,
            "src/ro.txt",
            writeToken=token(tenant, "write"),
            readToken=token(tenant, "read"),
        ),
    )
    assert result["readerSaw"] == "seed\n"  # a reader syncs and reads
    assert result["reader"] == "READ-ONLY EDIT\nseed\n"  # its local copy diverged...
    assert result["writer"] == "seed\n"  # ...but nobody else ever saw the edit
    assert result["fresh"] == "seed\n"
    assert len(result["denied"]) >= 2  # once live, once when re-sent after reconnecting
    assert all("read-only" in reason for reason in result["denied"])
    assert result["readerConnected"]  # refused updates, not a dropped connection
    assert stored_text(server, tenant, "src/ro.txt") == "seed\n"
    assert stored_docs(server, tenant)["src/ro.txt"]["updates"] == 1  # only the seed
    assert refusals(server, "read_only") >= refused_before + 2


def test_a_read_only_provider_on_a_new_tenant_syncs_empty_then_follows_its_creation(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """A read-only token writes nothing, so its room on a tenant that does not exist
    creates no tenant: the provider syncs an empty document, and once a writer's first
    room creates the tenant it is closed with 1013 and reconnects to the document."""
    result = run_script(
        "unborn",
        options(
            server,
            tenant,
            "src/new.txt",
            writeToken=token(tenant, "write"),
            readToken=token(tenant, "read"),
        ),
    )
    assert result["readerSaw"] == ""  # synced, empty
    assert result["reader"] == "first words\n"
    assert [c["code"] for c in result["readerCloses"]] == [1013], result["readerCloses"]
    assert result["writerCloses"] == [] and result["denied"] == []
    assert stored_text(server, tenant, "src/new.txt") == "first words\n"


def test_token_for_another_tenant_is_refused(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    other = f"{tenant}x"
    result = run_script(
        "tenant",
        options(server, tenant, "src/secret.txt", ownerToken=token(tenant), token=token(other)),
    )
    assert result["ownerText"] == "tenant secret\n"
    closes = result["closes"]
    assert len(closes) >= 2
    for close in closes:
        assert close["code"] == 4403, closes
        assert tenant in close["reason"] or "tenant" in close["reason"], closes
    assert not result["everSynced"]
    assert result["messages"] == 0  # refused before any read: not even SyncStep1
    assert result["text"] == "INTRUDER\n"  # its own edit only, nothing of the room
    assert stored_text(server, tenant, "src/secret.txt") == "tenant secret\n"
    assert stored_docs(server, tenant)["src/secret.txt"]["updates"] == 1
    with pytest.raises(urllib.error.HTTPError) as missing:  # nor did it land in its own
        stored_docs(server, other)
    assert missing.value.code == 404
    assert json.loads(missing.value.read())["error"]["code"] == "not_found"


def test_refused_providers_are_not_reconnected_in_a_hot_loop(
    server: ServerProcess, run_script: RunScript
) -> None:
    """Regression: y-websocket reconnects 100 ms after every refusal and sends the refused
    update again (its SyncStep2), or the refused token: about 18 connections each in
    2 s, 18 uploads of the update. The server now holds a refused connection before its
    close frame, 0.1 s doubled per refusal in a row (0.1 + 0.2 + 0.4 + 0.8 s: at most 5
    connections in 2 s, 4 of them refused)."""
    room = f"big/{uuid.uuid4().hex}.txt"
    result = run_script(
        "refused",
        options(
            server,
            SMALL_UPDATES,
            room,
            token=token(SMALL_UPDATES),
            badToken=token(f"{SMALL_UPDATES}x"),
            size=SMALL_UPDATE_BYTES + 1000,
            watchMs=2000,
        ),
    )
    for name in ("big", "bad"):
        assert 2 <= result["opens"][name] <= 6, result
    code = {"big": 1009, "bad": 4403}
    for name in ("big", "bad"):
        closes = [c for c in result[f"{name}Closes"] if c is not None]
        assert closes and all(c["code"] == code[name] and c["reason"] for c in closes), result
    with pytest.raises(urllib.error.HTTPError):  # nothing stored
        stored_text(server, SMALL_UPDATES, room)


@pytest.mark.slow
def test_a_lone_provider_stays_connected(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """Regression: awareness was relayed to the other peers only, so a provider alone in a
    room received nothing for 30 s and y-websocket reconnected it every 30 s.

    The script's clock runs 6x fast (see lone.mjs): 8 s of real time are 48 s of
    y-websocket's, past its 30 s timeout, with three awareness renewals (every 15 s of
    its time) that the server must echo."""
    result = run_script(
        "lone",
        options(
            server,
            tenant,
            "src/alone.txt",
            token=token(tenant),
            holdMs=8000,
            warp=6,
            deadlineMs=30000,
        ),
        timeout=60,
    )
    assert result["clock"] >= 45000, result  # the warp took: y-websocket's 30 s went by
    assert result["closes"] == [], result
    assert result["statuses"] == ["connected"]
    assert result["connected"]
    assert result["text"] == "still here\n"


def test_editors_keep_working_on_a_deleted_document(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """An editor that had the document open, and one that opens it after another device
    deleted it, both type into it: nothing is refused or closed, every edit reaches the
    server and a late reader, and each editor's edits are one edit/delete record."""
    keystrokes = 20
    result = run_script(
        "deleted", options(server, tenant, "gone.md", token=token(tenant), keystrokes=keystrokes)
    )
    typed = "o" * 9 + "\n" + "o" * 9 + "\n" + "l" * 9 + "\n" + "l" * 9 + "\n"
    assert result["text"] == "line 1\nline 2\n" + typed
    assert result["deleted"] is True and result["lateSawDeleted"]
    assert result["connected"] and result["closes"] == [] and result["denied"] == []
    assert stored_text(server, tenant, "gone.md") == result["text"]
    records = _conflicts_eventually(server, tenant, 2)
    assert [r["deleted"] for r in records] == ["theirs", "theirs"]
    assert len({r["ours"]["clients"][0] for r in records}) == 2
    assert {r["regions"][0]["base_text"] for r in records} == {"line 1\nline 2\n"}


def _conflicts_eventually(server: ServerProcess, tenant: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        records: list[Any] = rest(server, tenant, "conflicts")["conflicts"]
        if len(records) >= count or time.monotonic() > deadline:
            time.sleep(0.3)  # one more, if it were coming, shows
            again: list[Any] = rest(server, tenant, "conflicts")["conflicts"]
            assert len(again) == count, again
            return again
        time.sleep(0.05)
