"""The local file side of ``weft restore``: the export's tar stream read back as it
arrives (through a server), and the :class:`Folder` the documents are written into.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from client.caseless import fold
from client.timetravel_errors import Failed
from crdt.errors import BadPath
from crdt.keys import normalise_path

if TYPE_CHECKING:  # imported where a command runs (see client.timetravel_cli)
    import aiohttp


class Folder:
    """Where a restore writes: every file inside ``root``, no symlink or file followed on
    the way (each folder is checked once), a file that exists replaced atomically, but
    not one this restore wrote under a name that differs only in case (on a
    case-insensitive file system, macOS's or Windows', ``a.md`` is ``A.md``: the second
    of two such documents went over the first)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready: set[str] = set()
        self._written: dict[str, str] = {}  # name, case folded -> name

    def write(self, name: str, data: bytes) -> None:
        try:
            rel = normalise_path(name)
        except BadPath as exc:
            raise Failed(f"refusing to write {name!r}: {exc}") from None
        parts = rel.split("/")
        folder = ""
        for part in ["", *parts[:-1]]:
            folder = f"{folder}/{part}" if folder else part
            if folder not in self._ready:
                self._folder(self.root / folder, rel)
                self._ready.add(folder)
        target = self.root / rel
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except FileExistsError:
            other = self._written.get(fold(rel), rel)
            if other != rel:
                raise Failed(
                    f"cannot write {rel}: {other} is there, the same name in another case "
                    "on this file system (which does not tell them apart)"
                ) from None
            self._replace(target, rel, data)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        self._written.setdefault(fold(rel), rel)

    def _folder(self, path: Path, rel: str) -> None:
        if path == self.root:  # the folder asked for may be a symlink to a folder
            path.mkdir(parents=True, exist_ok=True)
            return
        try:
            info = path.lstat()
        except FileNotFoundError:
            path.mkdir()
            return
        if not stat.S_ISDIR(info.st_mode):
            raise Failed(f"cannot write {rel}: {path} is a file or a symlink")

    def _replace(self, target: Path, rel: str, data: bytes) -> None:
        if not stat.S_ISREG(target.lstat().st_mode):
            raise Failed(f"cannot write {rel}: a folder or a symlink is in the way")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".weft-restore-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


async def _untar(stream: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """Regular files of a tar stream, one at a time (PAX headers for long names)."""
    pending_name: str | None = None
    while True:
        header = await _read_exactly(stream, 512)
        if header is None or header == b"\0" * 512:
            return
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise Failed(f"the export is not a tar stream: {exc}") from None
        data = await _read_exactly(stream, info.size + (-info.size % 512))
        if data is None:
            raise Failed("the export stream ended in the middle of a file")
        data = data[: info.size]
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            pending_name = _pax_path(data) or pending_name
            continue
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise Failed(f"the export holds a non-file member {info.name!r}")
        yield pending_name or info.name, data
        pending_name = None


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a PAX extended header (``LEN key=value\\n`` records)."""
    pos = 0
    try:
        while pos < len(data):
            length = int(data[pos : data.index(b" ", pos)])
            if length <= 0:
                raise ValueError("empty record")
            record = data[pos : pos + length]
            key, _, value = record[record.index(b" ") + 1 : -1].partition(b"=")
            if key == b"path":
                return value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError as exc:
        raise Failed(f"the export has a malformed tar header: {exc}") from None
    return None


async def _read_exactly(stream: aiohttp.StreamReader, n: int) -> bytes | None:
    import asyncio

    try:
        return await stream.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise Failed("the export stream ended in the middle of a file") from None
        return None
