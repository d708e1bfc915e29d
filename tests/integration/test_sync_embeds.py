"""A document a rich-text editor wrote (Quill through y-quill: formats and an image embed
in the root ``content``) synced as a file: the file holds its text (embeds left out), and
an edit of the file lands where it was made, the embed and the formats kept. ``pycrdt``
counts an embed as one position that ``str()`` leaves out: an edit after one landed a
place early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Map

from client.testing import sync_once
from crdt.codec import SyncUpdate
from server.testing import ServerProcess, StartServer, YPeer, client_session

pytestmark = pytest.mark.functional

TENANT = "acme"
PROJECT = "rich"
BOLD = {"bold": True}
IMAGE = {"image": "logo.png"}


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def once(server: ServerProcess, folder: Path) -> None:
    result = sync_once(folder, server.ws_url, TENANT, PROJECT)
    assert result.returncode == 0, result.stdout


async def test_a_file_edit_after_an_embed_lands_where_it_was_made(
    server: ServerProcess, tmp_path: Path
) -> None:
    url = f"{server.ws_url}/{TENANT}/{PROJECT}/post.txt"
    async with client_session() as http:
        editor = await YPeer.connect(http, url, weft=True)
        before = editor.doc.get_state()
        with editor.doc.transaction():
            editor.text.insert(0, "Hello weft\n")
            editor.text.format(6, 10, BOLD)
            editor.text.insert_embed(5, IMAGE)  # "Hello[image] weft"
        await editor.send(SyncUpdate(editor.doc.get_update(before)))
        await editor.until(lambda: len(editor.acks) == 1)

        folder = tmp_path / "desk"
        folder.mkdir()
        once(server, folder)
        assert (folder / "post.txt").read_text() == "Hello weft\n"
        (folder / "post.txt").write_text("Hello weft!\nBye\n")
        once(server, folder)

        await editor.wait_text("Hello weft!\nBye\n")
        chunks: list[tuple[Any, Any]] = list(editor.text.diff())
        assert chunks == [
            ("Hello", None),
            (IMAGE, None),
            (" ", None),
            ("weft!\nBye", BOLD),  # (typed where a bold run ends: Yjs carries it on)
            ("\n", None),
        ]


async def test_a_file_of_a_document_whose_content_is_not_a_text_is_not_sent(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Another editor made the root ``content`` a ``Y.Array``: the file reads empty, and
    an edit of it is not sent (said, and the file kept as written). Sent, each of its
    characters became an element of the array."""
    url = f"{server.ws_url}/{TENANT}/{PROJECT}/list.json"
    async with client_session() as http:
        app = await YPeer.connect(http, url, weft=True)
        before = app.doc.get_state()
        app.doc.get("content", type=Array).append("item")
        await app.send(SyncUpdate(app.doc.get_update(before)))
        await app.until(lambda: len(app.acks) == 1)

        folder = tmp_path / "desk"
        folder.mkdir()
        once(server, folder)
        assert (folder / "list.json").read_text() == ""
        (folder / "list.json").write_text("edited\n")
        result = sync_once(folder, server.ws_url, TENANT, PROJECT)
        assert "not syncing list.json: its content holds values" in result.stdout

        reader = await YPeer.connect(http, url)
        assert reader.doc.get("content", type=Array).to_py() == ["item"]
        assert (folder / "list.json").read_text() == "edited\n"


async def test_a_file_where_a_deleted_document_not_a_text_was_is_not_sent(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The same for a file written where such a document was deleted: neither its text
    nor the document's return is sent (checked only in ``apply``, the flag was cleared
    and the file's task failed)."""
    url = f"{server.ws_url}/{TENANT}/{PROJECT}/gone.json"
    async with client_session() as http:
        app = await YPeer.connect(http, url, weft=True)
        before = app.doc.get_state()
        with app.doc.transaction():
            app.doc.get("content", type=Array).append("item")
            app.doc.get("weft", type=Map)["deleted"] = True
        await app.send(SyncUpdate(app.doc.get_update(before)))
        await app.until(lambda: len(app.acks) == 1)

        folder = tmp_path / "desk"
        folder.mkdir()
        (folder / "gone.json").write_text("new\n")
        result = sync_once(folder, server.ws_url, TENANT, PROJECT)
        assert "not syncing gone.json: its content holds values" in result.stdout

        reader = await YPeer.connect(http, url)
        assert reader.doc.get("content", type=Array).to_py() == ["item"]
        assert reader.doc.get("weft", type=Map).to_py() == {"deleted": True}
