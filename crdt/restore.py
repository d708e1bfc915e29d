"""A project's files at a cut, and the manifest a restore or an export writes.

A project's files at a cut are the documents that existed then and were not deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from crdt.history import History
from crdt.keys import MANIFEST_NAME as MANIFEST_NAME  # its home is the key rules now
from crdt.versions import Cut, read_doc
from crdt.versionstamp import Versionstamp

MANIFEST_FORMAT = 1
RESTORE_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class File:
    """A project file at a cut: its path, UTF-8 bytes and last versionstamp."""

    path: str
    data: bytes
    versionstamp: Versionstamp

    @property
    def digest(self) -> str:
        return blake3(self.data).hexdigest()

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "blake3": self.digest,
            "versionstamp": self.versionstamp.hex(),
            "size": len(self.data),
        }


async def files(history: History, cut: Cut) -> AsyncIterator[File]:
    """The project's files at ``cut``, in path order (documents created after it, or
    deleted at it, are left out). Reads up to RESTORE_CONCURRENCY documents at a time."""
    slots = asyncio.Semaphore(RESTORE_CONCURRENCY)

    async def one(path: str) -> File | None:
        async with slots:
            ref = await history.doc(cut.tenant, cut.project, path)
            replayed = await history.replay(ref, cut.versionstamp)
        if replayed.versionstamp is None:
            return None
        text, deleted = read_doc(replayed.doc)
        return None if deleted else File(path, text.encode("utf-8"), replayed.versionstamp)

    window = RESTORE_CONCURRENCY * 2
    tasks: list[asyncio.Task[File | None]] = []
    try:
        for path in cut.paths:
            tasks.append(asyncio.create_task(one(path)))
            if len(tasks) >= window:
                found = await tasks.pop(0)
                if found is not None:
                    yield found
        while tasks:
            found = await tasks.pop(0)
            if found is not None:
                yield found
    finally:
        for task in tasks:
            task.cancel()


def manifest(cut: Cut, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a restore or an export wrote: the cut, and per file (``File.manifest_entry``)
    its path, blake3, versionstamp and size."""
    return {
        "format": MANIFEST_FORMAT,
        "tenant": cut.tenant,
        "project": cut.project,
        "at": cut.version.label,
        "versionstamp": cut.versionstamp.hex(),
        "files": list(entries),
    }
