"""Hypothesis: random edit scripts on 2-4 devices with random disconnects, reconnects and
restarts converge, and every edit survives unless a later edit that had seen it deleted it.

The devices are in-process (:class:`client.device.Device`, each with its own local
history) against one real server process over real sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Text

from client.device import Device
from client.testing import get_text
from server.testing import ServerProcess, StartServer

pytestmark = [pytest.mark.functional, pytest.mark.slow]

DOCS = ("a.txt", "dir/b.txt")
TOKEN = re.compile(r"\[[^\[\]]*\]")
_projects = itertools.count()


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory(
        env={"WEFT_UPDATES_PER_SECOND": "100000", "WEFT_UPDATES_BURST": "100000"}
    )


# A step: ("insert", device, doc, where), ("delete", device, doc, where, span),
# ("offline", device), ("online", device), ("restart", device), ("settle",)
Step = tuple[Any, ...]


def steps(devices: int) -> st.SearchStrategy[list[Step]]:
    device = st.integers(0, devices - 1)
    doc = st.sampled_from(DOCS)
    where = st.floats(0, 1)
    insert = st.tuples(st.just("insert"), device, doc, where)
    step = st.one_of(
        insert,
        insert,
        insert,
        insert,
        st.tuples(st.just("delete"), device, doc, where, st.integers(1, 3)),
        st.tuples(st.just("offline"), device),
        st.tuples(st.just("online"), device),
        st.tuples(st.just("restart"), device),
        st.tuples(st.just("settle")),
    )
    return st.lists(step, min_size=4, max_size=40)


@dataclass
class Run:
    server: ServerProcess
    root: Path
    project: str
    devices: list[Device] = field(default_factory=list)
    offline: set[int] = field(default_factory=set)
    inserted: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    async def start(self, index: int) -> Device:
        device = Device(
            self.root / f"device{index}",
            self.server.ws_url,
            "props",
            self.project,
            max_backoff=0.2,
            poll_seconds=0.2,
        )
        await device.start()
        for path in DOCS:
            await device.open(path)
        if index in self.offline:
            await device.pause()
        return device

    def text(self, index: int, path: str) -> Text:
        entry = self.devices[index].entries[path]
        return entry.text

    async def step(self, step: Step) -> None:
        kind = step[0]
        if kind == "settle":
            await asyncio.sleep(0.05)
            return
        index = int(step[1])
        device = self.devices[index]
        if kind == "offline" and index not in self.offline:
            self.offline.add(index)
            await device.pause()
        elif kind == "online" and index in self.offline:
            self.offline.discard(index)
            device.resume()
        elif kind == "restart":
            await device.close()
            self.devices[index] = await self.start(index)
        elif kind == "insert":
            self.insert(index, str(step[2]), float(step[3]))
        elif kind == "delete":
            self.delete(index, str(step[2]), float(step[3]), int(step[4]))

    def insert(self, index: int, path: str, where: float) -> None:
        """Insert a new token at a token boundary (never inside another token)."""
        text = self.text(index, path)
        value = str(text)
        bounds = [0] + [m.end() for m in TOKEN.finditer(value)]
        at = bounds[int(where * (len(bounds) - 1))]
        token = f"[{index}.{next(self.counter)}]"
        text.insert(len(value[:at].encode()), token)
        self.inserted.add(token)

    def delete(self, index: int, path: str, where: float, span: int) -> None:
        """Delete whole tokens this device sees: they were seen, so they may go."""
        text = self.text(index, path)
        value = str(text)
        found = list(TOKEN.finditer(value))
        if not found:
            return
        first = int(where * (len(found) - 1))
        gone = found[first : first + span]
        start, end = gone[0].start(), gone[-1].end()
        del text[len(value[:start].encode()) : len(value[:end].encode())]
        self.deleted |= {m.group() for m in gone}

    async def converge(self, timeout: float = 20.0) -> dict[str, str]:
        for index in list(self.offline):
            self.offline.discard(index)
            self.devices[index].resume()
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.gather(*(d.sync() for d in self.devices))
                texts = {p: {str(self.text(i, p)) for i in range(len(self.devices))} for p in DOCS}
                if all(len(v) == 1 for v in texts.values()):
                    server = {p: await asyncio.to_thread(self.server_text, p) for p in DOCS}
                    if all(server[p] in texts[p] for p in DOCS):
                        return {p: texts[p].pop() for p in DOCS}
                await asyncio.sleep(0.05)

    def server_text(self, path: str) -> str:
        url = f"{self.server.url}/api/v1/props/{self.project}/docs/{urllib.parse.quote(path)}"
        return get_text(url) or ""


async def scenario(server: ServerProcess, devices: int, script: list[Step]) -> None:
    with tempfile.TemporaryDirectory(prefix="weft-props-") as tmp:
        run = Run(server, Path(tmp), f"p{next(_projects)}")
        try:
            for index in range(devices):
                run.devices.append(await run.start(index))
            for step in script:
                await run.step(step)
            final = await run.converge()
        finally:
            await asyncio.gather(*(d.close() for d in run.devices))
        survivors = [t for text in final.values() for t in TOKEN.findall(text)]
        assert len(survivors) == len(set(survivors)), "a token was duplicated"
        assert set(survivors) == run.inserted - run.deleted


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), devices=st.integers(2, 4))
def test_random_offline_scripts_converge_and_keep_every_undeleted_edit(
    server: ServerProcess, data: st.DataObject, devices: int
) -> None:
    script = data.draw(steps(devices))
    asyncio.run(scenario(server, devices, script))
