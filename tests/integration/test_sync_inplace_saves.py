"""A save in place (``cmd > file``, ``cp`` over a file, an editor that writes the file
itself) empties the file first and writes the text later. Found in an audit (5 runs of 5):
a running ``weft sync`` read the empty file, sent it as "delete every line", and wrote
another device's edit over the file the save was still writing (a rename: the save went
on into the unlinked file). The old text was gone on every device, the new one never
existed anywhere. Real server, two running ``weft sync`` processes."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.testing import SyncProcess, get_text, start_sync, sync_once, wait_until
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
BODY = "".join(f"line {i}\n" for i in range(50))


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


@contextlib.contextmanager
def two_devices(server: ServerProcess, tmp_path: Path, project: str) -> Iterator[SyncProcess]:
    """Folders ``a`` and ``b`` synced with s.txt (BODY), then a running ``weft sync`` on
    each; yields a's."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    (a / "s.txt").write_text(BODY)
    for folder in (a, b):
        assert sync_once(folder, server.ws_url, TENANT, project).returncode == 0
    devices = [
        start_sync(folder, server.ws_url, TENANT, project, args=["--poll", "0.3"])
        for folder in (a, b)
    ]
    try:
        for device in devices:
            device.wait_for("in sync")
        yield devices[0]
    finally:
        for device in devices:
            device.terminate()
    assert "Traceback" not in devices[0].output() + devices[1].output()


class Watch:
    """Reads a file every 20 ms in a thread; ``texts`` is every text it read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.texts: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                self.texts.add(self.path.read_text())
            time.sleep(0.02)

    def close(self) -> set[str]:
        self.stop.set()
        self.thread.join(5)
        return self.texts


def append(path: Path, line: str) -> None:
    """What an editor that saves by rename does."""
    text = path.read_text()
    path.with_suffix(".tmp~").write_text(text + line)
    path.with_suffix(".tmp~").replace(path)


def settled_everywhere(server: ServerProcess, tmp_path: Path, project: str) -> list[str]:
    """The lines of s.txt once a, b and the server agree on it."""
    url = f"{server.url}/api/v1/{TENANT}/{project}/docs/s.txt"
    copies: list[str | None] = []

    def agree() -> bool:
        copies[:] = [(tmp_path / d / "s.txt").read_text() for d in "ab"] + [get_text(url)]
        return len(set(copies)) == 1

    wait_until(agree, 20, f"a, b and the server agree ({copies})")
    return (copies[0] or "").splitlines()


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_a_slow_save_in_place_meeting_an_edit_from_elsewhere_loses_nothing(
    server: ServerProcess, tmp_path: Path, delay: float
) -> None:
    """The audit's case: ``(sleep 1; cat body) > s.txt`` on a while b appends a line
    (here for 0.3 s, and for 1.5 s: longer than ``SAVE_SETTLE_SECONDS``, b's edit waits
    for the emptied file's re-check)."""
    project = f"slow-save-{delay}".replace(".", "")
    with two_devices(server, tmp_path, project):
        a, b = tmp_path / "a", tmp_path / "b"
        (tmp_path / "new").write_text(BODY + "A line\n")
        seen_on_b = Watch(b / "s.txt")
        save = subprocess.Popen(
            ["sh", "-c", f"(sleep {delay}; cat {tmp_path / 'new'}) > {a / 's.txt'}"]
        )
        time.sleep(delay / 2)
        append(b / "s.txt", "B line\n")
        assert save.wait(10) == 0
        lines = settled_everywhere(server, tmp_path, project)
        assert sorted(lines) == sorted([*BODY.splitlines(), "A line", "B line"]), lines
        assert "" not in seen_on_b.close()  # never emptied elsewhere meanwhile


def test_a_save_in_place_is_not_sent_as_an_emptied_file(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The file is empty for 0.5 s (opened for writing, written later): before, b's file
    was emptied meanwhile and the text then inserted again as new text."""
    with two_devices(server, tmp_path, "truncated") as device_a:
        a, b = tmp_path / "a", tmp_path / "b"
        seen_on_b = Watch(b / "s.txt")
        with (a / "s.txt").open("w") as file:  # the editor begins its save
            file.flush()
            time.sleep(0.5)
            file.write(BODY + "A line\n")
        assert settled_everywhere(server, tmp_path, "truncated") == [*BODY.splitlines(), "A line"]
        assert "" not in seen_on_b.close()
        assert "s.txt: +0 -" not in device_a.output()


def test_a_save_in_place_that_pauses_midway_is_not_written_over(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The save writes its first line, then its second 0.6 s later; b's edit arriving
    in between was renamed over the file, and the second line went into the unlinked
    file: lost everywhere."""
    with two_devices(server, tmp_path, "pause"):
        a, b = tmp_path / "a", tmp_path / "b"
        save = subprocess.Popen(
            ["sh", "-c", f"(echo first; sleep 0.6; echo second) > {a / 's.txt'}"]
        )
        time.sleep(0.15)
        append(b / "s.txt", "B line\n")
        assert save.wait(10) == 0
        lines = settled_everywhere(server, tmp_path, "pause")
        assert "first" in lines and "second" in lines, lines
        assert "B line" in lines, lines


def test_an_emptied_file_is_synced_once_it_stayed_empty(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Emptying a file on purpose still syncs, after ``EMPTIED_SETTLE_SECONDS``."""
    with two_devices(server, tmp_path, "emptied") as device_a:
        a, b = tmp_path / "a", tmp_path / "b"
        (a / "s.txt").write_text("")
        time.sleep(1.2)
        assert (b / "s.txt").read_text() == BODY  # not yet: a save may be under way
        assert settled_everywhere(server, tmp_path, "emptied") == []
        assert "s.txt: +0 -390" in device_a.output()


def test_sync_once_waits_for_an_emptied_file_and_sends_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """``--once`` does not say "in sync" while an emptied file waits for its re-check."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    (a / "s.txt").write_text(BODY)
    for folder in (a, b):
        assert sync_once(folder, server.ws_url, TENANT, "once").returncode == 0
    (a / "s.txt").write_text("")
    result = sync_once(a, server.ws_url, TENANT, "once")
    assert result.returncode == 0, result.stdout
    assert get_text(f"{server.url}/api/v1/{TENANT}/once/docs/s.txt") == ""
    assert sync_once(b, server.ws_url, TENANT, "once").returncode == 0
    assert (b / "s.txt").read_text() == ""
