"""Which files a folder workspace takes in when the watcher or a rescan names paths
(:meth:`client.workspace.Workspace.changed`); no server, the workspace not started."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from client.workspace import Workspace


def ingesting(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files ``ws`` is asked to take in, in order (none is read)."""
    ingested: list[str] = []

    def ingest(path: str) -> bool:
        ingested.append(path)
        return True

    monkeypatch.setattr(ws, "ingest", ingest)
    return ingested


def test_a_folder_gone_from_disk_takes_in_the_known_files_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(tmp_path, "ws://127.0.0.1:9", "acme", "notes")
    ws.tracked = {"gone/a.md", "gone/sub/b.md", "gone.md", "gonezo/c.md", "kept/d.md"}
    ingested = ingesting(ws, monkeypatch)
    ws.changed({"gone"})
    assert sorted(ingested) == ["gone/a.md", "gone/sub/b.md"]
    ingested.clear()
    ws.changed({"gone.md", "kept/d.md"})
    assert sorted(ingested) == ["gone.md", "kept/d.md"]


def test_a_rescan_of_many_files_takes_time_in_proportion_to_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan names every file: each was matched against every known file, so a
    rescan took 0.5 s of the event loop every 10 s with 2,000 files (an idle weft sync
    used 7% of a CPU), 12 s with 10,000 (about 8 s with these 8,000)."""
    ws = Workspace(tmp_path, "ws://127.0.0.1:9", "acme", "notes")
    ws.tracked = {f"notes/n{i}.md" for i in range(8000)}
    ingested = ingesting(ws, monkeypatch)
    started = time.monotonic()
    ws.changed(set(ws.tracked), rescan=True)
    assert time.monotonic() - started < 2.0
    assert len(ingested) == 8000  # (none on disk: each one is looked at)
