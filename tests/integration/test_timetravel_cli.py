"""``weft history | show | diff | blame | restore | revert`` as subprocesses, against a real
server (``--server``) and straight on its store while it runs (``--store``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from blake3 import blake3
from pycrdt import Map

from client import timetravel_backends
from client.cli import main
from client.testing import weft_here
from crdt import timetravel as tt
from crdt.codec import SyncUpdate
from crdt.versionstamp import Versionstamp
from server.auth import issue_token
from server.testing import ServerProcess, StartServer, YPeer, client_session, free_port

pytestmark = pytest.mark.functional
SECRET = "timetravel-cli-secret-0123456789abcdef"
WEFT = Path(sys.executable).with_name("weft")


def token(user: str = "ada", scope: str = "write", tenant: str = "acme") -> str:
    return issue_token(
        secret=SECRET, tenant=tenant, projects=None, user=user, scope=scope, ttl_seconds=600
    )


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env={"WEFT_SECRET": SECRET})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def weft(*args: str) -> subprocess.CompletedProcess[str]:
    """``weft ARGS`` in a subprocess (about a second each: most of it imports)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    command = [str(WEFT)] if WEFT.exists() else [sys.executable, "-m", "client.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=60)


async def run_weft(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(weft, *args)


def via_server(server: ServerProcess, project: str, tok: str | None = None) -> list[str]:
    return ["--server", server.url, "--tenant", "acme", "--project", project,
            "--token", tok or token()]  # fmt: skip


def via_store(server: ServerProcess, project: str) -> list[str]:
    return ["--store", server.store, "--tenant", "acme", "--project", project]


async def edit(peer: YPeer, change: Any) -> Versionstamp:
    before = peer.doc.get_state()
    change()
    count = len(peer.acks)
    await peer.send(SyncUpdate(peer.doc.get_update(before)))
    await peer.until(lambda: len(peer.acks) > count)
    return peer.acks[-1].versionstamp


async def open_peer(
    http: aiohttp.ClientSession, server: ServerProcess, project: str, path: str, user: str
) -> YPeer:
    url = f"{server.ws_url}/acme/{project}/{path}"
    return await YPeer.connect(http, url, token=token(user), weft=True)


@pytest.mark.slow
async def test_read_commands_through_the_server_and_the_store(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ada = await open_peer(http, server, "cli", "doc.md", "ada")
    bob = await open_peer(http, server, "cli", "doc.md", "bob")
    v1 = await edit(ada, lambda: ada.text.insert(0, "alpha\nbeta\n"))
    await bob.wait_text("alpha\nbeta\n")
    v2 = await edit(bob, lambda: bob.text.insert(11, "gamma\n"))
    v3 = await edit(bob, lambda: bob.text.insert(6, "BETA-"))
    for where, first in (
        (via_server(server, "cli"), run_weft),
        (via_store(server, "cli"), weft_here),
    ):
        cli = weft_here  # most calls in-process; the first of each command as `weft` too
        r = await first("history", "doc.md", *where)
        assert r.returncode == 0, r.stderr
        rows = [line.split() for line in r.stdout.splitlines()]
        assert [(row[0], row[2]) for row in rows] == [
            (v3.hex(), "bob"),
            (v2.hex(), "bob"),
            (v1.hex(), "ada"),
        ]
        r = await cli("history", "doc.md", "--limit", "1", "--json", *where)
        page = json.loads(r.stdout)
        assert [v["versionstamp"] for v in page["versions"]] == [v3.hex()]
        r = await cli("history", "doc.md", "--until", page["next_until"], "--json", *where)
        assert [v["versionstamp"] for v in json.loads(r.stdout)["versions"]] == [v2.hex(), v1.hex()]

        r = await first("show", "doc.md", "--at", v2.hex(), *where)
        assert (r.returncode, r.stdout) == (0, "alpha\nbeta\ngamma\n")
        assert (await cli("show", "doc.md", *where)).stdout == "alpha\nBETA-beta\ngamma\n"
        shown = json.loads((await cli("show", "doc.md", "--json", "--at", v1.hex(), *where)).stdout)
        assert shown == {
            "path": "doc.md",
            "versionstamp": v1.hex(),
            "text": "alpha\nbeta\n",
            "deleted": False,
        }

        r = await first("diff", "doc.md", "--from", v1.hex(), "--to", v2.hex(), *where)
        assert r.returncode == 0 and r.stdout.splitlines()[2:] == [
            "@@ -1,2 +1,3 @@",
            " alpha",
            " beta",
            "+gamma",
        ]

        r = await first("blame", "doc.md", *where)
        assert r.returncode == 0, r.stderr
        blamed = [
            (line.split()[0], line.split()[1].lstrip("("), line.rsplit(") ", 1)[1])
            for line in r.stdout.splitlines()
        ]
        assert blamed == [
            (v1.hex(), "ada", "alpha"),
            (v3.hex(), "bob", "BETA-beta"),
            (v2.hex(), "bob", "gamma"),
        ]
        r = await cli("blame", "doc.md", "--json", "--at", v2.hex(), *where)
        lines = json.loads(r.stdout)["lines"]
        assert [(b["line"], b["user"]) for b in lines] == [(1, "ada"), (2, "ada"), (3, "bob")]
    await ada.close()
    await bob.close()


async def test_restore_writes_the_cut_with_a_manifest(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a = await open_peer(http, server, "tree", "a.txt", "ada")
    await edit(a, lambda: a.text.insert(0, "A\n"))
    b = await open_peer(http, server, "tree", "sub/b.md", "ada")
    cut = await edit(b, lambda: b.text.insert(0, "B 😀\n"))

    def delete() -> None:
        del b.text[0 : len(b.text)]
        b.doc.get("weft", type=Map)["deleted"] = True

    await edit(b, delete)
    await edit(a, lambda: a.text.insert(0, "later "))
    expected = {"a.txt": "A\n", "sub/b.md": "B 😀\n"}
    for n, where in enumerate((via_server(server, "tree"), via_store(server, "tree"))):
        out = tmp_path / f"out{n}"
        restore = run_weft if n == 0 else weft_here
        r = await restore("restore", "--at", cut.hex(), "--out", str(out), *where)
        assert r.returncode == 0, r.stderr
        assert "restored 2 files" in r.stderr
        files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
        manifest = json.loads(files.pop(".weft-manifest.json"))
        assert files == expected
        assert manifest["versionstamp"] == cut.hex()
        assert {f["path"]: f["blake3"] for f in manifest["files"]} == {
            p: blake3(t.encode()).hexdigest() for p, t in expected.items()
        }
        # a non-empty folder is refused (exit 2, nothing touched) unless --force
        (out / "a.txt").write_text("mine")
        r = await weft_here("restore", "--at", "head", "--out", str(out), *where)
        assert r.returncode == 2 and "not empty" in r.stderr
        assert (out / "a.txt").read_text() == "mine"
        r = await weft_here("restore", "--at", "head", "--out", str(out), "--force", *where)
        assert r.returncode == 0, r.stderr
        assert (out / "a.txt").read_text() == "later A\n"
        assert json.loads((out / ".weft-manifest.json").read_text())["at"] == "head"
        # sub/b.md is deleted at head: the file stays, and it is said (it was not)
        assert (out / "sub" / "b.md").exists()
        assert r.stderr.endswith(
            f"warning: 1 file(s) in {out} are not in this version and were left as they "
            "were: sub/b.md\n"
        ), r.stderr
        (out / ".git").mkdir()
        (out / ".git" / "config").write_text("not looked into")
        args = ("restore", "--at", "head", "--out", str(out), "--force", "--json", *where)
        r = await weft_here(*args)
        assert r.returncode == 0 and json.loads(r.stdout)["left"] == ["sub/b.md"], r
    await a.close()
    await b.close()


@pytest.mark.slow
async def test_revert_through_the_server_and_the_store_reaches_live_editors(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ada = await open_peer(http, server, "rev", "r.md", "ada")
    good = await edit(ada, lambda: ada.text.insert(0, "good\n"))
    await edit(ada, lambda: ada.text.insert(0, "bad "))
    live = await open_peer(http, server, "rev", "r.md", "carol")
    await live.wait_text("bad good\n")

    r = await run_weft(
        "revert",
        "r.md",
        "--to",
        good.hex(),
        "--device",
        "laptop",
        *via_server(server, "rev", token("dan")),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"r.md: reverted to {good.hex()} (new version ")
    await live.wait_text("good\n")
    r = await run_weft("history", "r.md", "--json", *via_server(server, "rev"))
    page = json.loads(r.stdout)
    assert (page["versions"][0]["user"], page["versions"][0]["device"]) == ("dan", "laptop")

    await edit(ada, lambda: ada.text.insert(0, "worse "))
    await live.wait_text("worse good\n")
    r = await run_weft(
        "revert", "r.md", "--to", good.hex(), "--user", "ops", "--json", *via_store(server, "rev")
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reverted"][0]["changed"]
    await live.wait_text("good\n", timeout=10)  # written by another process: the room's watch
    await ada.wait_text("good\n", timeout=10)
    r = await run_weft("revert", "r.md", "--to", good.hex(), *via_store(server, "rev"))
    assert r.returncode == 0 and "nothing to revert" in r.stderr
    await ada.close()
    await live.close()


async def test_history_labels_do_not_depend_on_since(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A revert that brings a deleted document back is "restored revert" in the full list;
    with ``--since`` the listing no longer reaches the first version, and it said
    "created revert" (whatever came first in a window that ended at head was "created")."""
    ada = await open_peer(http, server, "labels", "l.md", "ada")
    meta = ada.doc.get("weft", type=Map)

    def create() -> None:
        meta["deleted"] = False
        ada.text.insert(0, "hello\n")

    def delete() -> None:
        meta["deleted"] = True
        del ada.text[0 : len(ada.text)]

    v1 = await edit(ada, create)
    v2 = await edit(ada, delete)
    v3 = await edit(ada, lambda: ada.text.insert(0, "x"))  # leaves the flag as it is
    r = await weft_here("revert", "l.md", "--to", v1.hex(), *via_server(server, "labels"))
    assert r.returncode == 0, r.stderr
    await ada.close()

    async def labels(*args: str) -> list[str]:
        r = await weft_here("history", "l.md", *args, *via_server(server, "labels"))
        assert r.returncode == 0, r.stderr
        return [" ".join(line.split()[6:]) for line in r.stdout.splitlines()]

    everything = ["restored revert", "", "deleted", "created"]
    assert await labels() == everything
    assert await labels("--since", v1.hex()) == ["restored revert", "", "deleted"]
    assert await labels("--since", v2.hex()) == ["restored revert", ""]
    assert await labels("--since", v3.hex()) == ["restored revert"]
    assert await labels("--since", "1970-01-02T00:00:00Z") == everything  # before the first


async def test_a_deleted_document_says_so_where_its_text_is_shown(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A deletion leaves the text (since 2026-12-04): the read API and ``weft show``
    give it, and say the document is deleted, instead of looking like a live one."""
    ada = await open_peer(http, server, "gone", "g.md", "ada")
    await edit(ada, lambda: ada.text.insert(0, "kept text\n"))
    deleted = await edit(ada, lambda: ada.doc.get("weft", type=Map).__setitem__("deleted", True))
    await ada.close()
    url = f"{server.url}/api/v1/acme/gone/docs/g.md"
    async with http.get(url, headers={"Authorization": f"Bearer {token()}"}) as response:
        assert (await response.text(), response.headers.get("X-Weft-Deleted")) == (
            "kept text\n",
            "true",
        )
    for where in (via_server(server, "gone"), via_store(server, "gone")):
        r = await weft_here("show", "g.md", *where)
        assert r.returncode == 0 and r.stdout == "kept text\n", r
        assert f"g.md is deleted at {deleted.hex()}" in r.stderr, r.stderr


async def test_a_project_revert_deletes_a_later_document_and_keeps_its_text(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A project revert deletes a document created after its target and leaves its text,
    as a deletion does (it emptied it: a document brought back later showed only what
    was typed after the revert): ``weft show`` says it is deleted and prints the text it
    held, or says it held none. Times with a lowercase "z" are accepted too."""
    ada = await open_peer(http, server, "emptied", "keep.md", "ada")
    target = await edit(ada, lambda: ada.text.insert(0, "kept\n"))
    await asyncio.sleep(0.01)
    since = (datetime.now(UTC) - timedelta(seconds=60)).strftime("%Y-%m-%dt%H:%M:%S.%fz")
    late = await open_peer(http, server, "emptied", "late.md", "ada")
    await edit(late, lambda: late.text.insert(0, "created after the target\n"))
    blank = await open_peer(http, server, "emptied", "blank.md", "ada")
    await edit(blank, lambda: blank.text.insert(0, "x"))
    await edit(blank, lambda: blank.text.__delitem__(slice(0, 1)))
    r = await weft_here("revert", "--to", target.hex(), *via_store(server, "emptied"))
    assert r.returncode == 0 and "late.md: deleted" in r.stdout, r
    assert "blank.md: deleted" in r.stdout, r
    for where in (via_server(server, "emptied"), via_store(server, "emptied")):
        r = await weft_here("show", "late.md", *where)
        assert r.returncode == 0 and r.stdout == "created after the target\n", r
        assert r.stderr.startswith("(late.md is deleted at ") and r.stderr.endswith(
            "; below is the text it held)\n"
        ), r.stderr
        r = await weft_here("show", "blank.md", *where)
        assert r.returncode == 0 and r.stdout == "", r
        assert r.stderr.endswith("; it held no text)\n"), r.stderr
        r = await weft_here("history", "keep.md", "--since", since, "--json", *where)
        assert r.returncode == 0, r.stderr
        assert [v["versionstamp"] for v in json.loads(r.stdout)["versions"]] == [target.hex()]
        r = await weft_here("revert", "late.md", "--to", "head", *where)
        assert r.returncode == 0 and r.stdout == "", r
        assert r.stderr.startswith("nothing to revert: late.md is already as it was"), r


async def test_history_labels_do_not_depend_on_limit_or_a_plain_edit_before_the_window(
    server: ServerProcess, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flag a window starts from was taken from the version just before --since: with
    --limit the listing ends later than that ("revert" instead of "restored revert"), and
    a plain edit there sets no flag (a later clear was "restored" instead of "")."""
    ada = await open_peer(http, server, "labels2", "a.md", "ada")
    meta = ada.doc.get("weft", type=Map)

    def create() -> None:
        meta["deleted"] = False
        ada.text.insert(0, "hello\n")

    def delete() -> None:
        meta["deleted"] = True
        del ada.text[0 : len(ada.text)]

    v1 = await edit(ada, create)
    await edit(ada, delete)
    r = await weft_here("revert", "a.md", "--to", v1.hex(), *via_server(server, "labels2"))
    assert r.returncode == 0, r.stderr
    bob = await open_peer(http, server, "labels2", "b.md", "bob")
    bob_meta = bob.doc.get("weft", type=Map)

    def create_b() -> None:
        bob_meta["deleted"] = False
        bob.text.insert(0, "hello\n")

    def clear_again() -> None:
        bob_meta["deleted"] = False
        bob.text.insert(0, "x")

    await edit(bob, create_b)
    e1 = await edit(bob, lambda: bob.text.insert(0, "a"))  # plain edits: no flag
    await edit(bob, lambda: bob.text.insert(0, "b"))
    await edit(bob, clear_again)
    await ada.close()
    await bob.close()

    async def labels(path: str, *args: str) -> list[str]:
        r = await weft_here("history", path, *args, *via_server(server, "labels2"))
        assert r.returncode == 0, r.stderr
        return [" ".join(line.split()[6:]) for line in r.stdout.splitlines()]

    assert await labels("a.md") == ["restored revert", "deleted", "created"]
    assert await labels("a.md", "--limit", "1") == ["restored revert"]
    assert await labels("a.md", "--since", v1.hex(), "--limit", "1") == ["restored revert"]
    assert await labels("a.md", "--since", v1.hex(), "--limit", "2") == [
        "restored revert", "deleted",
    ]  # fmt: skip
    assert await labels("b.md") == ["", "", "", "created"]
    assert await labels("b.md", "--since", e1.hex()) == ["", ""]
    assert await labels("b.md", "--limit", "1") == [""]


FUTURE = "00000000ffffffff00000000"  # 2^32 commits ahead of any store these tests make


def future_versionstamp_cases(path: str) -> list[tuple[str, ...]]:
    """Every command given a versionstamp beyond the store's latest commit."""
    far = "ffffffffffffffff00000000"
    return [
        ("show", path, "--at", FUTURE),
        ("show", path, "--at", far),
        ("blame", path, "--at", FUTURE),
        ("diff", path, "--from", FUTURE),
        ("diff", path, "--from", "head", "--to", far),
        ("history", path, "--until", far),
        ("history", path, "--since", FUTURE),
        ("revert", path, "--to", FUTURE),
        ("revert", "--to", far),
    ]


async def test_a_future_versionstamp_is_refused_and_names_the_latest_commit(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A versionstamp beyond the store's latest commit is refused like a future time: what
    is at it is not known yet. One between the document's head and the store's latest
    commit (another document committed since) is a valid cut, and gives the same answer
    after more commits."""
    ada = await open_peer(http, server, "future", "f.md", "ada")
    head = await edit(ada, lambda: ada.text.insert(0, "then\n"))
    other = await open_peer(http, server, "future", "g.md", "ada")
    later = await edit(other, lambda: other.text.insert(0, "other\n"))
    for where in (via_server(server, "future"), via_store(server, "future")):
        r = await weft_here("show", "f.md", "--at", later.hex(), "--json", *where)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["versionstamp"] == head.hex()
        for case in future_versionstamp_cases("f.md"):
            r = await weft_here(*case, *where)
            assert r.returncode == 2 and r.stdout == "", (case, r)
            said = f"weft {case[0]}: versionstamp {case[-1]} is in the future: the store's"
            assert r.stderr.startswith(f"{said} latest commit version is "), (case, r.stderr)
    await edit(ada, lambda: ada.text.insert(0, "now "))
    r = await weft_here("show", "f.md", "--at", later.hex(), *via_store(server, "future"))
    assert r.returncode == 0 and r.stdout == "then\n", r
    r = await run_weft("show", "f.md", "--at", FUTURE, *via_store(server, "future"))
    assert r.returncode == 2 and "is in the future" in r.stderr, r.stderr


async def test_bad_input_exits_2_and_writes_nothing(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    peer = await open_peer(http, server, "bad", "x.md", "ada")
    await edit(peer, lambda: peer.text.insert(0, "x"))
    await peer.close()
    before = (await weft_here("history", "x.md", "--json", *via_store(server, "bad"))).stdout
    cases = [
        ("show", "x.md", "--at", "yesterday"),
        ("show", "x.md", "--at", "2999-01-01T00:00:00"),
        ("show", "missing.md"),
        ("show", "a/../b"),
        ("blame", "x.md", "--at", "2001-01-01"),
        ("diff", "x.md", "--from", "00000000000000000000000g"),
        ("history", "x.md", "--limit", "0"),
        ("revert", "x.md", "--to", "2999-01-01"),
        ("revert", "x.md", "--to", "2001-01-01"),
        ("revert", "missing.md", "--to", "head"),
        ("revert", "--to", "2001-01-01"),
        *future_versionstamp_cases("x.md"),
    ]
    for case in cases:
        for where in (via_server(server, "bad"), via_store(server, "bad")):
            r = await weft_here(*case, *where)
            assert r.returncode == 2, (case, r.stdout, r.stderr)
            assert r.stderr.startswith(f"weft {case[0]}: ") and r.stdout == ""
    for case in cases[1], cases[-1]:  # the same through a real process
        r = await run_weft(*case, *via_server(server, "bad"))
        assert r.returncode == 2 and r.stderr.startswith(f"weft {case[0]}: "), r.stderr
    for device in ("bad device!", "\u202eevil\nline"):  # printed raw by history and blame
        r = await run_weft("revert", "x.md", "--to", "head", "--device", device,
                           *via_server(server, "bad"))  # fmt: skip
        assert r.returncode == 2 and "is not a device name: 1-64 of" in r.stderr, r
    after = (await weft_here("history", "x.md", "--json", *via_store(server, "bad"))).stdout
    assert after == before
    out = tmp_path / "never"
    r = await weft_here(
        "restore", "--at", "2001-01-01", "--out", str(out), *via_server(server, "bad")
    )
    assert r.returncode == 2 and not out.exists()
    for where in (via_server(server, "bad"), via_store(server, "bad")):  # the walkthrough's
        r = await weft_here("restore", "--at", FUTURE, "--out", str(out), *where)
        assert r.returncode == 2 and not out.exists(), r
        assert f"versionstamp {FUTURE} is in the future" in r.stderr
    missing = tmp_path / "no.db"
    r = await weft_here(
        "show", "x.md", "--store", f"sqlite:///{missing}", "--tenant", "acme", "--project", "bad"
    )
    assert r.returncode == 2 and "no store" in r.stderr and not missing.exists()
    r = await weft_here("show", "x.md", *via_server(server, "bad"), "--store", server.store)
    assert r.returncode == 2 and "either --server or --store" in r.stderr
    r = await weft_here("show", "x.md", "--server", server.url, "--project", "bad")
    assert r.returncode == 2 and "--tenant" in r.stderr
    r = await weft_here("show", "x.md", "--tenant", "acme", "--project", "bad")
    assert r.returncode == 2 and "--server URL or --store URL" in r.stderr


async def test_restore_and_revert_to_before_the_projects_first_document_exit_2(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Before a project's first document there is nothing to restore or revert to, whether
    the moment is a time or a versionstamp: exit 2, nothing written or deleted (by
    versionstamp, restore wrote an empty folder and the revert deleted every document)."""
    then = datetime.now(UTC).isoformat(timespec="milliseconds")
    await asyncio.sleep(0.01)
    peers = [await open_peer(http, server, "firstdoc", path, "ada") for path in ("a.md", "b.md")]
    first = [await edit(peer, lambda peer=peer: peer.text.insert(0, "x\n")) for peer in peers]
    just_before = tt.predecessor(first[0]).hex()
    for n, where in enumerate((via_server(server, "firstdoc"), via_store(server, "firstdoc"))):
        for at in (then, just_before):
            said = f"project acme/firstdoc had no documents at {at}"
            out = tmp_path / f"out{n}"
            r = await weft_here("restore", "--at", at, "--out", str(out), *where)
            assert r.returncode == 2 and r.stdout == "" and not out.exists(), r
            assert r.stderr.startswith(f"weft restore: {said}"), r.stderr
            r = await weft_here("revert", "--to", at, *where)
            assert r.returncode == 2 and r.stdout == "", r
            assert r.stderr.startswith(f"weft revert: {said}"), r.stderr
    for path, stamp in zip(("a.md", "b.md"), first, strict=True):  # nothing reverted
        r = await weft_here("history", path, "--json", *via_store(server, "firstdoc"))
        assert [v["versionstamp"] for v in json.loads(r.stdout)["versions"]] == [stamp.hex()]
    for peer in peers:
        await peer.close()


async def test_failures_exit_1(server: ServerProcess) -> None:
    read_only = via_server(server, "bad", token(scope="read"))
    r = await run_weft("revert", "x.md", "--to", "head", *read_only)
    assert r.returncode == 1 and "403" in r.stderr
    r = await weft_here("show", "x.md", *via_server(server, "bad", token(tenant="other")))
    assert r.returncode == 1 and "403" in r.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: plain words, not aiohttp's
    unreachable = ("--server", nowhere, "--tenant", "a", "--project", "b")
    r = await weft_here("show", "x.md", *unreachable)
    assert r.returncode == 1
    assert r.stderr == f"weft show: cannot reach the server at {nowhere}: connection refused\n"
    r = await weft_here("conflicts", "list", *unreachable)
    assert r.returncode == 1
    assert r.stderr == f"weft conflicts: cannot reach the server at {nowhere}: connection refused\n"


async def test_output_cut_short_by_its_reader_ends_quietly(tmp_path: Path) -> None:
    """`weft history ... | head -1`: printed "weft history: [Errno 32] Broken pipe"
    (and `weft conflicts list | head` a traceback). Now it ends quietly with 141, as a
    process killed by SIGPIPE."""
    from pycrdt import Doc, Text

    from crdt.history import Append, History
    from crdt.kv import open_engine

    store = f"sqlite:///{tmp_path / 'weft.db'}"
    async with open_engine(store) as kv:
        history = History(kv)
        await history.init()
        ref = await history.doc("acme", "p", "long.txt", create=True)
        doc: Doc[Any] = Doc()
        text = doc.get("content", type=Text)
        updates = []
        for n in range(3000):  # ~200 kB of listing: more than a pipe holds
            before = doc.get_state()
            text.insert(len(text), f"line {n}\n")
            updates.append(Append(ref, doc.get_update(before), "ada", "laptop"))
        for at in range(0, len(updates), 500):
            await history.append(updates[at : at + 500])
    command = [sys.executable, "-m", "client.cli", "history", "long.txt", "--store", store]
    proc = subprocess.Popen(
        [*command, "--tenant", "acme", "--project", "p", "--limit", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    with proc.stderr:
        err = await asyncio.to_thread(proc.stderr.read)
    assert await asyncio.to_thread(proc.wait, 60) == 141
    assert err == b"", err


async def test_history_and_blame_escape_control_characters_in_names(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A user name is free text (a token's ``sub``, ``--user``): a newline or a bidi
    control in it broke the table or reordered the line."""
    peer = await open_peer(http, server, "names", "n.md", "ada")
    first = await edit(peer, lambda: peer.text.insert(0, "one\n"))
    await edit(peer, lambda: peer.text.__delitem__(slice(0, 4)))
    await peer.close()
    # a byte that is not UTF-8 (a lone surrogate to Python) was a traceback in the update
    r = await run_weft("revert", "--to", first.hex(), *via_store(server, "names"),
                       "--user", "op\udcff")  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "error: argument --user: b'op\\xff' is not valid UTF-8\n" in r.stderr, r
    evil = "eve\u202e\nline"
    r = await weft_here("revert", "n.md", "--to", first.hex(), "--user", evil,
                        *via_store(server, "names"))  # fmt: skip
    assert r.returncode == 0, r
    for command in ("history", "blame"):
        r = await weft_here(command, "n.md", *via_server(server, "names"))
        assert r.returncode == 0, r
        assert "eve\\u202e\\nline" in r.stdout and "\u202e" not in r.stdout, r.stdout
    r = await weft_here("history", "n.md", *via_server(server, "names"))
    assert len(r.stdout.splitlines()) == 3, r.stdout  # one line per version: op wrote none


async def test_a_path_typed_with_a_leading_dot_slash_is_the_document(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Tab completion in a synced folder writes ``./notes/a.md``: it was refused (a '.'
    segment). A '.' or '..' anywhere else still is."""
    peer = await open_peer(http, server, "dotted", "notes/a.md", "ada")
    await edit(peer, lambda: peer.text.insert(0, "here\n"))
    await peer.close()
    for command in ("show", "history", "blame"):
        r = await weft_here(command, "./notes/a.md", *via_server(server, "dotted"))
        assert r.returncode == 0 and r.stdout, (command, r)
    r = await weft_here("show", "notes/./a.md", *via_server(server, "dotted"))
    assert r.returncode == 2 and "'.' or '..' segment" in r.stderr, r


async def test_blame_numbers_lines_as_the_diff_does(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A file with old Mac line endings (a lone ``\\r``), a form feed and ``\\u2028``: `weft
    blame` showed it as one line holding the raw endings; it is the diff's lines."""
    peer = await open_peer(http, server, "endings", "mac.txt", "ada")
    v1 = await edit(peer, lambda: peer.text.insert(0, "one\r"))
    v2 = await edit(peer, lambda: peer.text.insert(4, "two\r\nthree\fpage\u2028end"))
    await peer.close()
    texts = ["one", "two", "three", "page", "end"]
    for where in (via_server(server, "endings"), via_store(server, "endings")):
        r = await weft_here("diff", "mac.txt", "--from", v1.hex(), *where)
        assert r.returncode == 0 and "@@ -1 +1,5 @@" in r.stdout, r
        r = await weft_here("blame", "mac.txt", "--json", *where)
        assert r.returncode == 0, r
        lines = json.loads(r.stdout)["lines"]
        assert [(b["line"], b["text"], b["versionstamp"]) for b in lines] == [
            (n, text, (v1 if n == 1 else v2).hex()) for n, text in enumerate(texts, 1)
        ]
        r = await weft_here("blame", "mac.txt", *where)
        assert r.returncode == 0, r
        shown = [line.split(") ")[1:] for line in r.stdout.split("\n")[:-1]]
        assert shown == [[str(n), text] for n, text in enumerate(texts, 1)], r.stdout


def test_a_server_that_goes_quiet_is_a_failure_that_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that took the request and never answered: "weft show: Timeout on
    reading data from socket" after two minutes, not naming the server."""
    monkeypatch.setattr(timetravel_backends, "READ_TIMEOUT", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        where = ["--server", url, "--tenant", "acme", "--project", "p"]
        assert main(["show", "a.md", *where]) == 1
    assert capsys.readouterr().err == f"weft show: the server at {url} sent nothing for 0.3 s\n"


async def test_an_interrupted_restore_says_its_folder_is_incomplete(tmp_path: Path) -> None:
    """Ctrl-C during a long `weft restore` (or its server going away) left some files and
    no manifest, and said nothing (exit 130): the folder looked like a restore. It now
    says how many files it wrote and that the folder is incomplete."""
    from aiohttp import web

    from server.testing import serve_in_process
    from server.timetravel_api import tar_member

    done = asyncio.Event()

    async def export(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Weft-Documents": "3"})
        await response.prepare(request)
        for name in ("a.md", "b.md"):  # (a member is written once the next one arrives)
            await response.write(tar_member(name, b"text\n", 0))
        await done.wait()  # the third document takes long
        return response

    app = web.Application()
    app.router.add_get("/api/v1/acme/p/export", export)
    out = tmp_path / "out"
    async with serve_in_process(app) as server:
        command = [sys.executable, "-m", "client.cli", "restore", "--at", "head"]
        where = ["--server", server.url, "--tenant", "acme", "--project", "p"]
        proc = await asyncio.create_subprocess_exec(
            *command, *where, "--out", str(out), stderr=subprocess.PIPE
        )
        async with asyncio.timeout(30):
            while not (out / "a.md").exists():
                await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = await proc.communicate()
        done.set()
    assert proc.returncode == 130
    assert err.decode() == (
        f"weft restore: interrupted: 1 file(s) written into {out} and no manifest: the folder "
        "is incomplete (run the restore again with --force to finish it)\n"
    )
    assert [p.name for p in out.iterdir()] == ["a.md"]


async def test_history_labels_cost_one_replay_not_a_walk_back_through_the_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """To label the versions it lists (created, deleted, restored), `weft history` read
    back 500 versions per request to the newest one that set the deleted flag: 200
    requests, 3.5 s, for `--limit 5` on a document edited 100,000 times since it was
    created. It now reads the flag from the document at the version before the listing."""
    from pycrdt import Doc, Text

    from crdt.history import Append, History
    from crdt.kv import open_engine

    store = f"sqlite:///{tmp_path / 'weft.db'}"
    async with open_engine(store) as kv:
        history = History(kv)
        await history.init()
        ref = await history.doc("acme", "p", "a.md", create=True)
        doc: Doc[Any] = Doc()
        text, meta = doc.get("content", type=Text), doc.get("weft", type=Map)
        updates = []
        for n in range(1200):
            before = doc.get_state()
            if n in (0, 1190):
                meta["deleted"] = n != 0  # created, then deleted near the end
            text.insert(len(text), "x")
            updates.append(Append(ref, doc.get_update(before), "ada", "laptop"))
        await history.append(updates)
    pages: list[int] = []
    page = timetravel_backends.StoreBackend.history

    async def counted(self: Any, *args: Any) -> dict[str, Any]:
        pages.append(args[1])
        return await page(self, *args)

    monkeypatch.setattr(timetravel_backends.StoreBackend, "history", counted)
    where = ["--store", store, "--tenant", "acme", "--project", "p"]
    assert await asyncio.to_thread(main, ["history", "a.md", "--limit", "20", *where]) == 0
    labels = [" ".join(line.split()[6:]) for line in capsys.readouterr().out.splitlines()]
    assert labels == [""] * 9 + ["deleted"] + [""] * 10
    assert len(pages) == 2  # the listing, and whether a version is before it
    monkeypatch.setattr(timetravel_backends.StoreBackend, "history", page)
    assert await asyncio.to_thread(main, ["history", "a.md", "--limit", "5", *where]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [" ".join(line.split()[6:]) for line in out] == [""] * 5  # deleted before them
