"""A conflict report the server will not take: tried a few times, one backup of the
text however many tries, then the file fails (left as it is, unsynced) and ``weft sync
--once`` exits 1 naming it. Found in a walkthrough: a report the server could not
store was retried every second for ever, with a new backup on every try (596 copies,
77 MB in 10 minutes)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from client import sync_cli
from client.newfiles import REPORT_SERVER_ERRORS
from client.workspace import Workspace
from crdt import branches
from crdt.errors import ProtocolError, TransactionTooLarge, WeftError
from server.app import create_app
from server.config import Settings
from server.testing import serve_in_process

pytestmark = pytest.mark.functional


@pytest.mark.parametrize(
    ("error", "tries"),
    [
        (TransactionTooLarge("value of 125852 bytes is over the 100000-byte limit"), 5),
        (ProtocolError("refused"), 1),  # a 400: retrying will not help
    ],
)
async def test_a_report_the_server_keeps_refusing_fails_the_file_with_one_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: WeftError, tries: int
) -> None:
    assert REPORT_SERVER_ERRORS == 5
    calls = 0

    async def refusing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        raise error

    monkeypatch.setattr(branches, "save_report", refusing)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        (a / "plan.txt").write_text("the server's plan\n")
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as first:
            await first.sync(10)
        (b / "plan.txt").write_text("my own plan\n")
        out = io.StringIO()
        ui = sync_cli._Ui(Console(file=out, width=400), quiet=False, verbose=False)
        async with Workspace(
            b, server.ws_url, "acme", "p", on_event=ui.event, poll_seconds=0.1
        ) as second:
            code = await asyncio.wait_for(sync_cli._once(second, ui, 60, asyncio.Event()), 60)
            assert set(second.failed) == {"plan.txt"}, out.getvalue()
    printed = out.getvalue()
    assert code == 1, printed
    assert calls == tries
    assert (b / "plan.txt").read_text() == "my own plan\n"  # left as it is
    backups = list((b / ".weft" / "conflicts").iterdir())
    assert [p.read_text() for p in backups] == ["my own plan\n"]
    assert "plan.txt: the server could not record its conflict" in printed
    assert "1 file(s) NOT in sync" in printed and str(backups[0]) in printed


def fail_reports_twice(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The server fails its first two conflict reports (as a full transaction would);
    returns the count of reports tried, kept up to date."""
    save_report = branches.save_report
    calls = [0]

    async def failing_twice(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= 2:
            raise TransactionTooLarge("not yet")
        return await save_report(*args, **kwargs)

    monkeypatch.setattr(branches, "save_report", failing_twice)
    return calls


async def test_a_report_retried_after_a_server_error_keeps_one_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fail_reports_twice(monkeypatch)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        (a / "plan.txt").write_text("the server's plan\n")
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as first:
            await first.sync(10)
        (b / "plan.txt").write_text("my own plan\n")
        async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as second:
            await second.sync(30)
            assert len(second.conflicts) == 1
    assert calls[0] == 3
    assert (b / "plan.txt").read_text() == "the server's plan\n"
    backups = sorted((b / ".weft" / "conflicts").iterdir())
    assert [p.read_text() for p in backups] == ["my own plan\n"]
    assert not second.failed


async def test_the_next_run_after_a_refused_report_does_not_push_the_file_over_the_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed run opened the document (local history) but saved no file state; the
    next run took the local file in as an edit over the server's version, which then
    lived only in history (found by the helper who wrote the tests above). It is now
    decided again, as a new local file: the report is made once the server takes it."""
    save_report = branches.save_report
    refuse = True

    async def refusing_at_first(*args: Any, **kwargs: Any) -> Any:
        if refuse:
            raise ProtocolError("refused")
        return await save_report(*args, **kwargs)

    monkeypatch.setattr(branches, "save_report", refusing_at_first)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        (a / "plan.txt").write_text("the server's plan\n")
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as first:
            await first.sync(10)
        (b / "plan.txt").write_text("my own plan\n")
        async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as second:
            await second.sync(30)
            assert set(second.failed) == {"plan.txt"}
        refuse = False
        async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as third:
            await third.sync(30)
            assert len(third.conflicts) == 1 and not third.failed
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as first:
            await first.sync(10)
    assert (a / "plan.txt").read_text() == "the server's plan\n"
    assert (b / "plan.txt").read_text() == "the server's plan\n"


async def test_a_report_for_a_file_where_a_deleted_document_was_is_retried_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file written where this device saw its document deleted is decided as a new
    file is (see test_sync_revivals): its report, when another device brought the
    document back first, is retried after a server error as a new file's is."""
    calls = fail_reports_twice(monkeypatch)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()

        async def sync(folder: Path) -> Workspace:
            async with Workspace(folder, server.ws_url, "acme", "p", poll_seconds=0.1) as ws:
                await ws.sync(30)
            return ws

        (a / "plan.txt").write_text("the old plan\n")
        await sync(a)
        await sync(b)
        (a / "plan.txt").unlink()
        await sync(a)
        await sync(b)
        assert not (b / "plan.txt").exists()
        (a / "plan.txt").write_text("a's new plan\n")
        (b / "plan.txt").write_text("my own plan\n")
        await sync(a)
        second = await sync(b)
    assert len(second.conflicts) == 1 and calls[0] == 3
    assert (b / "plan.txt").read_text() == "a's new plan\n"
    backups = sorted((b / ".weft" / "conflicts").iterdir())
    assert [p.read_text() for p in backups] == ["my own plan\n"]
