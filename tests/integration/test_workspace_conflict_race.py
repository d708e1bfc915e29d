"""A folder's file that differs from the server's becomes a conflict: the server's text
is written over the file once the conflict is recorded, and the local text kept in a
backup. A save that lands while the report is on its way must be kept too."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from client.workspace import Workspace
from server.app import create_app
from server.config import Settings
from server.testing import serve_in_process


@contextlib.asynccontextmanager
async def reported_while_saving(
    tmp_path: Path, save: Callable[[Path], object]
) -> AsyncIterator[tuple[Path, Workspace]]:
    """Folder ``a`` syncs plan.txt; folder ``b`` holds another plan.txt, a conflict,
    and ``save(b / "plan.txt")`` runs while its report is on its way. Yields ``b`` and
    its workspace once synced (still open)."""
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
            report = second.device.api.report_conflict

            async def saving_meanwhile(path: str, text: str, device: str) -> dict[str, object]:
                save(b / "plan.txt")
                return await report(path, text, device)

            second.device.api.report_conflict = saving_meanwhile  # type: ignore[method-assign]
            await second.sync(10)
            yield b, second


async def test_a_save_during_the_conflict_report_is_kept(tmp_path: Path) -> None:
    def save(path: Path) -> None:
        path.write_text("my own plan, with a paragraph saved meanwhile\n")

    async with reported_while_saving(tmp_path, save) as (b, _):
        pass
    assert (b / "plan.txt").read_text() == "the server's plan\n"
    backups = sorted(p.read_text() for p in (b / ".weft" / "conflicts").rglob("*.txt*"))
    assert backups == [
        "my own plan\n",
        "my own plan, with a paragraph saved meanwhile\n",
    ]


async def test_a_binary_file_saved_during_the_conflict_report_is_not_written_over(
    tmp_path: Path,
) -> None:
    """A save during the report that is not text (an image saved at that path) has no
    text to keep in a backup: the server's text was written over it, and it was gone.
    It is left as it is now, as any file at a document's path that this device never
    synced and cannot sync (client.writes: not written, not in sync)."""
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    async with reported_while_saving(tmp_path, lambda path: path.write_bytes(png)) as (
        b,
        second,
    ):
        assert (b / "plan.txt").read_bytes() == png
        assert "plan.txt" in second.unwritable, second.unwritable
    assert (b / "plan.txt").read_bytes() == png
    backups = sorted(p.read_text() for p in (b / ".weft" / "conflicts").rglob("*.txt*"))
    assert backups == ["my own plan\n"]


async def test_a_save_just_before_a_remote_write_is_taken_in_not_written_over(
    tmp_path: Path,
) -> None:
    """A remote change is written to the file; a save that lands after the workspace
    took the file in, and before it writes, used to be replaced (a line typed on one
    device while the other appended every 0.1 s was lost everywhere, seen in a
    walkthrough). The write now notices the save, takes it in, then writes."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as server:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        (a / "f.txt").write_text("one\n")
        async with Workspace(a, server.ws_url, "acme", "p", poll_seconds=0.1) as first:
            await first.sync(10)
            async with Workspace(b, server.ws_url, "acme", "p", poll_seconds=0.1) as second:
                await second.sync(10)
                assert (b / "f.txt").read_text() == "one\n"
                write = second.folder.write
                saved: list[bool] = []

                def saving_first(path: str, text: str, **kwargs: bool) -> None:
                    if path == "f.txt" and not saved:  # the user saves right now
                        saved.append(True)
                        with (b / "f.txt").open("a") as file:
                            file.write("b's line\n")
                    write(path, text, **kwargs)

                second.folder.write = saving_first  # type: ignore[method-assign]
                (a / "f.txt").write_text("one\na's line\n")
                first.ingest("f.txt")
                await first.sync(10)
                await second.sync(10)
                assert saved
                await second.sync(10)  # b's line goes out
                await first.sync(10)
                assert (b / "f.txt").read_text() == "one\na's line\nb's line\n"
        assert (a / "f.txt").read_text() == "one\na's line\nb's line\n"
