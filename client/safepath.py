"""Reaching a file inside a folder without following a symbolic link on the way.

A synced folder may hold a link to a folder elsewhere (``notes -> ~/private``); a
document path through it names a file outside the synced folder, which sync must never
read, write or delete. So each folder on the way is opened relative to the one before
it with ``O_NOFOLLOW`` (``openat``): a link is refused even if it appears between a
check and the write, and the file itself is then reached relative to its folder's
descriptor. The top folder (the root) is opened by its path. It costs one ``open`` and
one ``close`` per folder on the way.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from crdt.errors import WeftError

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


class PathBlocked(WeftError, OSError):
    """A path cannot be used as it is: a symbolic link (``link``) or a file is where a
    folder should be, or a folder where a file should be."""

    def __init__(self, message: str, *, link: bool = False) -> None:
        super().__init__(message)
        self.link = link


def in_the_way(fd: int, name: str) -> str | None:
    """What ``name`` in the folder ``fd`` is, when it is not a folder: "a symbolic
    link", "a file"; None for a folder or nothing."""
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(info.st_mode):
        return None
    return "a symbolic link" if stat.S_ISLNK(info.st_mode) else "a file"


@contextlib.contextmanager
def folder_of(root: Path, name: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """An open descriptor of the folder holding ``name`` (a POSIX path relative to
    ``root``) and ``name``'s last part.

    A folder on the way that is missing raises FileNotFoundError, or is made with
    ``create``; one that is a symbolic link or a file raises :class:`PathBlocked`."""
    *folders, leaf = name.split("/")
    fd = os.open(root, FOLDER_FLAGS)
    try:
        for depth, part in enumerate(folders):
            inner = _enter(fd, part, create, "/".join(folders[: depth + 1]))
            os.close(fd)
            fd = inner
        yield fd, leaf
    finally:
        os.close(fd)


def _enter(fd: int, part: str, create: bool, shown: str) -> int:
    flags = FOLDER_FLAGS | os.O_NOFOLLOW
    try:
        return os.open(part, flags, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:  # ENOTDIR (Linux, for a link too), ELOOP, EMLINK (BSD)
        _refuse(fd, part, shown, exc)
    with contextlib.suppress(FileExistsError):
        os.mkdir(part, dir_fd=fd)
    try:
        return os.open(part, flags, dir_fd=fd)
    except OSError as exc:
        _refuse(fd, part, shown, exc)


def _refuse(fd: int, part: str, shown: str, exc: OSError) -> NoReturn:
    """Raise :class:`PathBlocked` if a link or a file is the reason ``exc`` was raised
    opening the folder ``part``, else ``exc``."""
    what = in_the_way(fd, part)
    if what is None:
        raise exc
    link = what == "a symbolic link"
    raise PathBlocked(f"{shown} is {what}{' (not followed)' if link else ''}", link=link) from exc


def read_at(fd: int, name: str) -> bytes:
    """The bytes of the regular file ``name`` in the folder ``fd`` (never through a
    link; a FIFO put there meanwhile does not block)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    with open(os.open(name, flags, dir_fd=fd), "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise PathBlocked(f"{name} is not a regular file")
        return file.read()
