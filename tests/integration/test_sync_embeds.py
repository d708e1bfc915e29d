"""A document a rich-text editor wrote (Quill through y-quill: formats and an image embed
in the root ``content``) synced as a file: the file holds its text (embeds left out), and
an edit of the file lands where it was made, the embed and the formats kept. ``pycrdt``
counts an embed as one position that ``str()`` leaves out: an edit after one landed a
place early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
