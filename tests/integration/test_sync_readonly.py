"""A device with a read-only token never changes the server; its edits stay local."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.testing import get_json, get_text, sync_once
from server.auth import issue_token
from server.testing import StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

SECRET = "sync-test-secret-0123456789abcdef"
TENANT, PROJECT = "acme", "docs"


def token(scope: str, user: str) -> str:
    return issue_token(
        secret=SECRET, tenant=TENANT, projects=None, user=user, scope=scope, ttl_seconds=600
    )


def test_read_only_device_keeps_its_edits_and_says_so(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    server = weft_server_factory(env={"WEFT_SECRET": SECRET})
    writer, reader = token("write", "ada"), token("read", "bob")
    w, r = tmp_path / "w", tmp_path / "r"
    w.mkdir()
    r.mkdir()
    (w / "doc.txt").write_text("one\ntwo\n")

    def once(folder: Path, tok: str) -> tuple[int, str]:
        result = sync_once(folder, server.ws_url, TENANT, PROJECT, token=tok)
        return result.returncode, result.stdout

    assert once(w, writer)[0] == 0
    code, out = once(r, reader)
    assert code == 0, out  # nothing local to send: in sync
    assert (r / "doc.txt").read_text() == "one\ntwo\n"
    docs_url = f"{server.url}/api/v1/{TENANT}/{PROJECT}/docs"
    before = get_json(docs_url, writer)["docs"]

    (r / "doc.txt").write_text("one\ntwo\nthree, by the reader\n")
    (r / "mine.txt").write_text("local only\n")
    code, out = once(r, reader)
    assert code == 1, out
    assert "read-only" in out and "stay on this device" in out
    assert get_json(docs_url, writer)["docs"] == before  # not one update more
    doc_url = f"{docs_url}/doc.txt"
    assert get_text(doc_url, writer) == "one\ntwo\n"
    assert (r / "doc.txt").read_text() == "one\ntwo\nthree, by the reader\n"
    assert (r / "mine.txt").read_text() == "local only\n"

    # the writer goes on; the reader still receives, keeping its own edits on top
    (w / "doc.txt").write_text("ONE\ntwo\n")
    assert once(w, writer)[0] == 0
    code, out = once(r, reader)
    assert code == 1, out
    assert (r / "doc.txt").read_text() == "ONE\ntwo\nthree, by the reader\n"
    assert get_text(doc_url, writer) == "ONE\ntwo\n"
    assert sorted(d["path"] for d in get_json(docs_url, writer)["docs"]) == ["doc.txt"]
