"""Paths no new document may have (``crdt.keys.check_new_path``), against a real server
process: ``.git/`` and ``.weft/`` (a document ``.git/config`` restored into a git
checkout could set ``core.fsmonitor`` and run a command), the export manifest's name,
and names disguised by control or bidi characters. Such documents stored before the
rule (old data) stay readable, writable and deletable, and ``weft restore`` skips the
ones it must never write."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Map, Text

from client.testing import get_json, sync_once, weft_here
from crdt.codec import SyncUpdate
from crdt.history import Append, History
from crdt.kv import open_engine
from server.testing import ConnectionClosed, ServerProcess, StartServer, YPeer, call_api

pytestmark = pytest.mark.functional

FSMONITOR = '[core]\n\tfsmonitor = "touch PWNED; false"\n'
# Documents an older server accepted, each with its text.
OLD_DATA = {
    ".git/config": FSMONITOR,
    "sub/.GIT/config": FSMONITOR,
    ".weft/state": "not weft's state",
    ".weft-manifest.json": '{"format": 1, "files": []}\n',
    "a\u202egpj.md": "disguised\n",
    "real.md": "real\n",
}


async def seed(store: str, docs: dict[str, str], project: str = "old") -> None:
    """Write ``docs`` straight into the store, as an older server would have."""
    async with open_engine(store) as kv:
        history = History(kv)
        await history.init()
        for path, text in docs.items():
            doc: Doc[Any] = Doc()
            doc.get("content", type=Text).insert(0, text)
            ref = await history.doc("acme", project, path, create=True)
            await history.append([Append(ref, doc.get_update(), "old", "1", "old/1")])


async def acked(peer: YPeer, count: int) -> None:
    await peer.until(lambda: len(peer.acks) == count)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (".git/config", ".git/ and .weft/ are never synced"),
        (".GIT/config", ".git/ and .weft/ are never synced"),
        ("src/.git/hooks/pre-commit", ".git/ and .weft/ are never synced"),
        (".weft/state.db", ".git/ and .weft/ are never synced"),
        ("sub/.Weft", ".git/ and .weft/ are never synced"),
        (".weft-manifest.json", "the name of the restore's manifest"),
        ("a\u202egpj.md", "U+202E, a control or bidi character"),
        ("a\x85b.md", "U+0085, a control or bidi character"),
        ("\ufeffreadme.md", "U+FEFF, a control or bidi character"),
        ("notes/ /a.md", "a segment of only whitespace"),
    ],
)
async def test_a_new_document_with_a_refused_path_is_closed_with_4400(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, path: str, why: str
) -> None:
    server = weft_server_factory()
    url = f"{server.ws_url}/acme/site/{path}"
    with pytest.raises(ConnectionClosed) as refused:
        await YPeer.connect(http, url, weft=True)
    assert refused.value.code == 4400
    assert "not allowed for a new document" in refused.value.reason
    assert why in refused.value.reason
    # nothing was stored, and an allowed path in the same project is written
    peer = await YPeer.connect(http, f"{server.ws_url}/acme/site/sub/.gitignore", weft=True)
    await peer.append("*.log\n")
    await peer.until(lambda: len(peer.acks) == 1)
    status, listed = await call_api(http, "GET", f"{server.url}/api/v1/acme/site/docs")
    assert status == 200
    assert [d["path"] for d in listed["docs"]] == ["sub/.gitignore"]


async def test_old_documents_with_refused_paths_stay_readable_writable_and_deletable(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'old.db'}"
    await seed(store, OLD_DATA)
    server = weft_server_factory(store=store)
    api = f"{server.url}/api/v1/acme/old/docs"
    for path, text in OLD_DATA.items():
        peer = await YPeer.connect(http, f"{server.ws_url}/acme/old/{path}", weft=True)
        await peer.wait_text(text)
        await peer.append("edited\n")
        before = peer.doc.get_state()
        peer.doc.get("weft", type=Map)["deleted"] = True
        await peer.send(SyncUpdate(peer.doc.get_update(before)))
        await acked(peer, 2)
        await peer.close()
        status, body = await call_api(http, "GET", f"{api}/{path}", format="json")
        assert status == 200, (path, body)
        assert body["deleted"] is True and body["text"] == text + "edited\n", path


@dataclass
class RestoreRun:
    result: dict[str, Any]
    stderr: str
    on_disk: list[str]


CHECKOUT_CONFIG = "[core]\n\tbare = false\n"


async def restore(store: str, server: ServerProcess, out: Path, how: str) -> RestoreRun:
    """``weft restore --json`` of project ``old`` into ``out`` (a git checkout: its
    ``.git/config`` exists), through the server or straight on the store."""
    (out / ".git").mkdir(parents=True)
    (out / ".git" / "config").write_text(CHECKOUT_CONFIG)
    where = ["--server", server.url] if how == "server" else ["--store", store]
    r = await weft_here(
        "restore", "--at", "head", "--out", str(out), "--force", "--json",
        "--tenant", "acme", "--project", "old", *where,
    )  # fmt: skip
    assert r.returncode == 0, (how, r.stderr)
    assert (out / ".git" / "config").read_text() == CHECKOUT_CONFIG
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return RestoreRun(json.loads(r.stdout), r.stderr, on_disk)


@pytest.mark.parametrize("how", ["server", "store"])
async def test_restore_never_writes_git_or_weft_documents_of_old_data(
    weft_server_factory: StartServer, tmp_path: Path, how: str
) -> None:
    old = {p: t for p, t in OLD_DATA.items() if p != ".weft-manifest.json"}
    store = f"sqlite:///{tmp_path / 'old.db'}"
    await seed(store, old)
    run = await restore(store, weft_server_factory(store=store), tmp_path / "out", how)
    assert run.on_disk == [".git/config", ".weft-manifest.json", "a\u202egpj.md", "real.md"]
    assert run.result["files"] == 2 and run.result["not_written"] == {}
    assert sorted(run.result["skipped"]) == [".git/config", ".weft/state", "sub/.GIT/config"]
    assert len(run.result["manifest"]["files"]) == len(old)  # the server's manifest, whole
    for path in run.result["skipped"]:
        assert f"warning: skipped {path}: " in run.stderr, run.stderr


@pytest.mark.parametrize("how", ["server", "store"])
async def test_restore_of_a_project_with_a_document_named_like_the_manifest(
    weft_server_factory: StartServer, tmp_path: Path, how: str
) -> None:
    """The export had two members named .weft-manifest.json (the document's, then the
    manifest), and every restore of the project failed."""
    store = f"sqlite:///{tmp_path / 'old.db'}"
    await seed(store, {".weft-manifest.json": "not even JSON", "real.md": "real\n"})
    out = tmp_path / "out"
    run = await restore(store, weft_server_factory(store=store), out, how)
    assert run.on_disk == [".git/config", ".weft-manifest.json", "real.md"]
    manifest = json.loads((out / ".weft-manifest.json").read_text())
    assert manifest == run.result["manifest"] and manifest["tenant"] == "acme"
    assert [f["path"] for f in manifest["files"]] == [".weft-manifest.json", "real.md"]
    assert run.result["files"] == 1 and list(run.result["skipped"]) == [".weft-manifest.json"]
    assert "restore's manifest" in run.stderr


def test_sync_refuses_a_new_disguised_file_and_keeps_syncing_old_documents(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """``weft sync --once``: a new file with a disguised name is refused by the server
    (4400: named, exit 1), the others sync; a document stored with such a name before
    the rule is written to the folder and stays; ``.GIT/`` is never synced, either way."""
    store = f"sqlite:///{tmp_path / 'old.db'}"
    old = {"old\u202egpj.md": "old\n", ".GIT/config": FSMONITOR}
    asyncio.run(seed(store, old))
    server = weft_server_factory(store=store)
    folder = tmp_path / "f"
    (folder / ".GIT").mkdir(parents=True)
    (folder / ".GIT" / "config").write_text(CHECKOUT_CONFIG)
    (folder / "new\u202etxt.md").write_text("new\n")
    (folder / "real.md").write_text("real\n")
    for _ in range(2):  # the second run deletes nothing it wrote in the first
        result = sync_once(folder, server.ws_url, "acme", "old")
        assert result.returncode == 1, result.stdout
        assert "1 file(s) NOT in sync" in result.stdout, result.stdout
        assert "new\\u202etxt.md: closed by the server (4400): not allowed" in result.stdout
        assert (folder / "old\u202egpj.md").read_text() == "old\n"
        assert (folder / ".GIT" / "config").read_text() == CHECKOUT_CONFIG
        docs = get_json(f"{server.url}/api/v1/acme/old/docs")["docs"]
        assert sorted((d["path"], d["updates"]) for d in docs) == [
            (".GIT/config", 1),
            ("old\u202egpj.md", 1),
            ("real.md", 1),
        ]
