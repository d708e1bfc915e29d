"""The same new file created on two running devices at the same moment: both decide
with the server's version at hand ("none", or "deleted") before either one's document
reaches the server. The first one stored wins; the other is refused (its creation is
conditional on the server's version it decided on: a ``Create``, see README
"Protocol") and decides again: the same text is adopted (the file holds it once, no
record), a different text goes into a conflict record and a ``.weft/conflicts/`` copy,
said on that device. Before, both were stored: the same text came out twice, and two
texts one after the other, with no record and no copy.

Real server processes (one, or two instances on one SQLite file); the two devices are
workspaces in this process, so a barrier can hold each one's creation until both have
decided (as two devices within one round trip), instead of leaving the race to timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

import server.session
import server.ws
from client.connection import DocLink
from client.entry import DocEntry
from client.events import Event
from client.newfiles import NewFiles
from client.testing import folder_files, get_json, get_text
from client.workspace import Workspace
from crdt.codec import Refused
from crdt.history import Append, Appended, History
from crdt.kv import open_engine
from crdt.versionstamp import Versionstamp
from server.app import create_app
from server.config import Settings
from server.testing import Listening, StartServer, serve_in_process

pytestmark = [pytest.mark.functional, pytest.mark.slow]

TENANT = "acme"
PATH = "gen/out.txt"


class Devices:
    """Two workspaces, a and b, each on its own folder (and server, when given two)."""

    def __init__(self, tmp_path: Path, servers: list[Listening], project: str) -> None:
        self.project = project
        self.folders = [tmp_path / "a", tmp_path / "b"]
        self.servers = servers
        self.said: list[list[Event]] = [[], []]
        for folder in self.folders:
            folder.mkdir()

    def workspace(self, n: int) -> Workspace:
        server = self.servers[n % len(self.servers)]
        return Workspace(
            self.folders[n],
            server.ws_url,
            TENANT,
            self.project,
            poll_seconds=0.1,
            device_id="ab"[n],
            on_event=self.said[n].append,
        )

    def server_text(self) -> str | None:
        server = self.servers[0]
        return get_text(f"{server.url}/api/v1/{TENANT}/{self.project}/docs/{PATH}")

    def records(self) -> list[dict[str, Any]]:
        url = f"{self.servers[0].url}/api/v1/{TENANT}/{self.project}/conflicts"
        records: list[dict[str, Any]] = get_json(url)["conflicts"]
        return records

    def copies(self, n: int) -> list[Path]:
        return sorted((self.folders[n] / ".weft" / "conflicts" / "gen").glob("out.txt.*"))


@contextlib.contextmanager
def both_decided(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Hold each device's new document until both devices have decided: the list of
    decisions made. A ``Create`` waits at the barrier; so does, for a client or server
    without it, the edit that takes the file's text in (the second decision makes both)."""
    decided: list[str] = []
    both = asyncio.Event()
    create, adopt = DocLink.create, NewFiles._adopt_local
    held: list[tuple[NewFiles, DocEntry, str]] = []

    async def held_create(
        self: DocLink, state_vector: bytes, update: bytes
    ) -> Versionstamp | Refused:
        decided.append(self.entry.path)
        if len(decided) == 2:
            both.set()
        await both.wait()
        return await create(self, state_vector, update)

    def held_adopt(self: NewFiles, entry: DocEntry, text: str) -> None:
        decided.append(entry.path)
        held.append((self, entry, text))
        if len(decided) == 2:
            for args in held:
                adopt(*args)

    monkeypatch.setattr(DocLink, "create", held_create)
    monkeypatch.setattr(NewFiles, "_adopt_local", held_adopt)
    yield decided


async def race(devices: Devices, texts: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Both devices write ``PATH`` (``texts``) and sync, deciding at once; then both sync
    until their files agree."""
    for folder, text in zip(devices.folders, texts, strict=True):
        (folder / PATH).parent.mkdir()
        (folder / PATH).write_text(text)
    with both_decided(monkeypatch) as decided:
        async with devices.workspace(0) as a, devices.workspace(1) as b:
            await asyncio.gather(a.sync(30), b.sync(30))
            assert decided == [PATH, PATH]
            async with asyncio.timeout(10):
                while len({(f / PATH).read_text() for f in devices.folders}) > 1:
                    await asyncio.sleep(0.05)
            await asyncio.gather(a.sync(30), b.sync(30))


def messages(events: list[Event]) -> str:
    return "\n".join(event.message for event in events)


@pytest.mark.parametrize("instances", [1, 2])
async def test_the_same_new_file_made_on_two_devices_at_once_comes_out_once(
    weft_server_factory: StartServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    instances: int,
) -> None:
    """A generator run on two devices: the file holds its text once on both, with no
    record and no copy (it held it twice). ``instances``: the devices on one server, or
    on two instances of one SQLite file."""
    first = weft_server_factory()
    servers: list[Listening] = [first]
    servers += [weft_server_factory(store=first.store) for _ in range(instances - 1)]
    devices = Devices(tmp_path, servers, "same")
    text = "generated line 1\ngenerated line 2\n"
    await race(devices, (text, text), monkeypatch)
    assert devices.server_text() == text
    for n in (0, 1):
        assert folder_files(devices.folders[n]) == {PATH: text.encode()}
        assert devices.copies(n) == []
        assert "conflict" not in messages(devices.said[n])
    assert devices.records() == []
    made = [n for n in (0, 1) if f"{PATH}: new (+" in messages(devices.said[n])]
    assert len(made) == 1  # the other adopted it


@pytest.mark.parametrize("instances", [1, 2])
async def test_two_new_files_made_on_two_devices_at_once_the_first_wins_the_other_is_kept(
    weft_server_factory: StartServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    instances: int,
) -> None:
    """Different texts: the first stored is the document's text everywhere; the other
    device's text is in one conflict record and a copy there, and that device says so
    (the two texts were both in the file, one after the other, with no record)."""
    first = weft_server_factory()
    servers: list[Listening] = [first]
    servers += [weft_server_factory(store=first.store) for _ in range(instances - 1)]
    devices = Devices(tmp_path, servers, "differ")
    texts = ("from a\n", "from b\n")
    await race(devices, texts, monkeypatch)
    winner = devices.server_text()
    assert winner in texts
    loser = 1 - texts.index(winner)
    for n in (0, 1):
        assert folder_files(devices.folders[n]) == {PATH: winner.encode()}
    [copy] = devices.copies(loser)
    assert copy.read_text() == texts[loser]
    assert devices.copies(1 - loser) == []
    [record] = devices.records()
    [region] = record["regions"]
    assert (region["ours_text"], region["theirs_text"]) == (texts[loser], winner)
    said = messages(devices.said[loser])
    assert f"conflict: {PATH} differs from the server's version, which stays" in said, said
    assert f"and in {copy}" in said, said
    assert "conflict" not in messages(devices.said[1 - loser])
    assert f"{PATH}: new (+" in messages(devices.said[1 - loser])
    assert f"{PATH}: new (+" not in said


async def test_against_a_server_older_than_create_a_new_file_syncs_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that says extension version 3 is sent no ``Create`` (it would close the
    connection): the file's text goes into its document at once and reaches the other
    device, as before."""
    monkeypatch.setattr(server.session, "WEFT_VERSION", 3)
    monkeypatch.setattr(server.ws, "WEFT_VERSION", 3)

    async def no_create(self: DocLink, state_vector: bytes, update: bytes) -> None:
        raise AssertionError("a Create sent to a server of version 3")

    monkeypatch.setattr(DocLink, "create", no_create)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 'weft.db'}"))
    async with serve_in_process(app) as older:
        devices = Devices(tmp_path, [older], "older")
        (devices.folders[0] / "new.txt").write_text("made here\n")
        async with devices.workspace(0) as a:
            await a.sync(30)
            assert a.device.entries["new.txt"].link.server_weft == 3
        async with devices.workspace(1) as b:
            await b.sync(30)
        assert folder_files(devices.folders[1]) == {"new.txt": b"made here\n"}
        assert "new.txt: new (+10 chars)" in messages(devices.said[0])


async def test_a_creation_committed_by_another_instance_after_the_rooms_check_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance stores the same new file between this instance's look at its
    room (which has not got it yet) and its group commit: the append, conditional on
    the head the room was at, is refused, the room catches up, and the device adopts
    the text (the file holds it once). Made to happen here by the other instance's
    append, on the same SQLite file, right before the batch holding this one's."""
    store = f"sqlite:///{tmp_path / 'weft.db'}"
    text = "generated\n"
    other: Doc[Any] = Doc()
    other.get("weft", type=Map)["deleted"] = False
    other.get("content", type=Text).insert(0, text)
    append_then = History.append_then
    raced: list[Appended] = []
    racing: set[asyncio.Task[None]] = set()

    def after_the_other(self: History, items: Sequence[Append], done: Any) -> None:
        if raced or all(item.expect is None for item in items):
            append_then(self, items, done)
            return

        async def race() -> None:
            async with open_engine(store) as kv:
                elsewhere = History(kv)
                ref = await elsewhere.doc(TENANT, "elsewhere", PATH)
                append = Append(ref, other.get_update(), "b", "b", "other-instance/1")
                raced.extend(await elsewhere.append([append]))
            append_then(self, items, done)

        racing.add(asyncio.ensure_future(race()))

    monkeypatch.setattr(History, "append_then", after_the_other)
    async with serve_in_process(create_app(Settings(store=store))) as one:
        devices = Devices(tmp_path, [one], "elsewhere")
        (devices.folders[0] / PATH).parent.mkdir()
        (devices.folders[0] / PATH).write_text(text)
        async with devices.workspace(0) as a:
            await a.sync(30)
        assert len(raced) == 1
        assert await asyncio.to_thread(devices.server_text) == text  # (in this loop)
        assert folder_files(devices.folders[0]) == {PATH: text.encode()}
        assert await asyncio.to_thread(devices.records) == [] and devices.copies(0) == []
