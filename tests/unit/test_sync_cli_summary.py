"""``weft sync``'s console (``client.sync_cli._Ui``): what its summary line counts."""

from __future__ import annotations

import io

from rich.console import Console

from client import sync_cli
from client.events import Event


def test_a_file_written_twice_from_elsewhere_counts_once() -> None:
    """The first sync's line says "N file(s) written or removed": files, not writes. A
    server update arriving during the first sync wrote one file twice, and it said 2."""
    ui = sync_cli._Ui(Console(file=io.StringIO(), width=200), quiet=False, verbose=False)
    for message in ("notes.md new (remote)", "notes.md updated (remote)"):
        ui.event(Event("remote", message, "notes.md"))
    ui.event(Event("remote", "old.md deleted (remote)", "old.md"))
    ui.event(Event("local", "plan.md: +3 chars", "plan.md"))
    assert ui.written == {"notes.md", "old.md"}
