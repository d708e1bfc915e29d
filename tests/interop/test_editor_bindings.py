"""Yjs editor bindings, unchanged, against a real weft server with auth on: CodeMirror 6
with y-codemirror.next (``codemirror.mjs``), ProseMirror with y-prosemirror
(``prosemirror.mjs``) and Quill 2 with y-quill (``quill.mjs``), each editor a real editor
in jsdom (``dom.mjs``) on its own ``Y.Doc`` and ``WebsocketProvider``; Monaco with y-monaco
(``monaco.mjs``, ``monaco_page.mjs``) in pages of a real headless Chromium, typed into
with real keystrokes.

The texts asserted are exact: an edit the server dropped, duplicated or reordered makes
a script time out waiting for the other view, or fails an equality here.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from server.testing import AUTH_ENV, ServerProcess, StartServer, token_for

pytestmark = [pytest.mark.interop, pytest.mark.functional]

PROJECT = "site"
RunScript = Callable[..., dict[str, Any]]  # the run_script fixture (conftest.py)


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(env=AUTH_ENV)


@pytest.fixture
def tenant() -> str:
    """A tenant of its own for each test, so the module's server is shared safely."""
    return f"t{uuid.uuid4().hex[:10]}"


def options(server: ServerProcess, tenant: str, room: str) -> dict[str, Any]:
    return {
        "url": f"{server.ws_url}/{tenant}/{PROJECT}",
        "room": room,
        "token": token_for(tenant=tenant),
    }


def stored_text(server: ServerProcess, tenant: str, path: str) -> str:
    """The document's ``content`` text, read back through ``GET docs/{path}``."""
    request = urllib.request.Request(
        f"{server.url}/api/v1/{tenant}/{PROJECT}/docs/{path}",
        headers={"Authorization": f"Bearer {token_for(tenant=tenant, scope='read')}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text: str = response.read().decode()
        return text


def test_codemirror_views_edit_one_document_through_weft(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """Typing in one CodeMirror view shows in the other and in the REST read; a plain
    provider's edit shows in both views; one view's cursor is drawn in the other."""
    result = run_script("codemirror", options(server, tenant, "src/main.js"))
    assert result["typed"] == "const x = 12\n"  # a paste, two keystrokes, a backspace
    expected = "const x = 12\n// from a plain provider\n"
    assert result["a"] == result["b"] == result["plain"] == expected
    assert "ada" in result["caretName"]  # yCollab's caret label: the remote user's name
    assert result["closes"] == []
    assert stored_text(server, tenant, "src/main.js") == expected


def test_prosemirror_views_edit_one_fragment_through_weft(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """Structure, marks and text edited in one ProseMirror view show in the other (and
    back); a provider joining later gets the same document; the ``Y.XmlFragment`` root
    ``prosemirror`` is stored whole although REST reads only ``content``."""
    result = run_script("prosemirror", options(server, tenant, "notes/intro"))
    heading = {
        "type": "heading",
        "attrs": {"level": 1},
        "content": [
            {"type": "text", "text": "Hello "},
            {"type": "text", "marks": [{"type": "strong"}], "text": "weft"},
        ],
    }

    def paragraph(text: str) -> dict[str, Any]:
        return {"type": "paragraph", "content": [{"type": "text", "text": text}]}

    assert result["typed"] == {"type": "doc", "content": [heading, paragraph("Second")]}
    expected = {
        "type": "doc",
        "content": [heading, paragraph("Second line"), paragraph("From a plain provider")],
    }
    assert result["a"] == result["b"] == result["late"] == expected
    assert result["lateXml"] == (
        '<heading level="1">Hello <strong>weft</strong></heading>'
        "<paragraph>Second line</paragraph><paragraph>From a plain provider</paragraph>"
    )
    assert "ada" in result["caretName"]  # yCursorPlugin's caret label
    assert result["closes"] == []
    assert stored_text(server, tenant, "notes/intro") == ""  # no `content` text


def test_quill_editors_edit_one_formatted_text_through_weft(
    server: ServerProcess, tenant: str, run_script: RunScript
) -> None:
    """Text, a format and an image embed made in one Quill editor show in the other; a
    provider joining later gets the formatted text, and its italic edit shows in both
    editors; one editor's cursor is drawn in the other. The REST read of ``content`` is
    the plain text: formats and the embed left out."""
    result = run_script("quill", options(server, tenant, "notes/quill"))
    image = {"insert": {"image": "https://example.com/logo.png"}}
    hello = [{"insert": "Hello "}, {"attributes": {"bold": True}, "insert": "weft"}, image]
    assert result["typed"] == {"ops": [*hello, {"insert": "\n"}]}
    assert result["received"] == [
        {"insert": "Hello "},
        {"insert": "weft", "attributes": {"bold": True}},
        image,
    ]
    more = {"attributes": {"italic": True}, "insert": " and more"}
    assert result["a"] == result["b"] == {"ops": [*hello, more, {"insert": "\n"}]}
    assert result["plain"] == [
        *result["received"],
        {"insert": " and more", "attributes": {"italic": True}},
    ]
    assert result["caretName"] == "ada"  # quill-cursors' flag: the remote user's name
    assert result["closes"] == []
    assert stored_text(server, tenant, "notes/quill") == "Hello weft and more"


def test_monaco_editors_in_chromium_edit_one_document_through_weft(
    server: ServerProcess, tenant: str, run_script: RunScript, chromium: str
) -> None:
    """Keystrokes typed into one Monaco editor in headless Chromium show in another page's
    editor and in the REST read; the first editor's selection is drawn in the second; a
    plain provider's line shows in both editors, keystrokes in the second reach the
    first, and a page opened last shows the whole text."""
    browser = {"chromium": chromium, "deadlineMs": 50000}  # a browser starts slower on a busy CI
    result = run_script("monaco", {**options(server, tenant, "src/notes.txt"), **browser})
    assert result["typed"] == "Hello from Monaco\nline 2"  # keystrokes, Enter, a Backspace
    # a's selection of its second line (Shift+Home), decorated and drawn in b
    line_2 = {"startLineNumber": 2, "startColumn": 1, "endLineNumber": 2, "endColumn": 7}
    assert result["selection"] == {
        "range": line_2,
        "drawn": True,
        "user": {"name": "ada", "color": "#ff0000"},
    }
    expected = "Hello from Monaco\nline 2\n// from a plain provider\nbob was here"
    assert result["a"] == result["b"] == result["late"] == result["plain"] == expected
    assert result["workers"] and result["workerErrors"] == []  # Monaco's editor worker
    assert result["pageErrors"] == []
    assert result["closes"] == []
    assert stored_text(server, tenant, "src/notes.txt") == expected
