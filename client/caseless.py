"""Names as a case-insensitive file system spells them (part of :mod:`client.folder`).

On macOS's APFS (by default) and Windows' NTFS a lookup ignores case: ``readme.md``
opens, stats and unlinks ``README.md``. Only a folder's listing says which spelling is
on disk, so :class:`Spellings` reads listings and keeps each while its folder's inode
and modification time stay the same, with two rules that keep a kept listing right and
cheap:

- it is trusted only once that modification time was at least ``RACY_NS`` older than
  the clock when the folder was listed: a change made within the same clock step
  leaves the time as it was (``COARSE_RACY_NS`` when the time is in whole milliseconds,
  as FAT's 2 s and exFAT's 10 ms steps are);
- this folder's own writes and removals update the listing of their folder, which is
  then trusted (:meth:`Spellings.changing`): each of them makes the folder's time new,
  and a download of many files into one folder re-listed it at every lookup
  (quadratic). A change made by another program within the same step of the file
  system's clock as one of these is then not seen until the folder changes again, or
  until the kept listings are dropped (:meth:`Spellings.forget`, at each full scan).
"""

from __future__ import annotations

import contextlib
import os
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RACY_NS = 50_000_000
COARSE_RACY_NS = 2_000_000_000

# A folder as listed: (inode, modification time in ns).
FolderKey = tuple[int, int]


def caseless(folder: Path) -> bool:
    """Whether the file system of ``folder`` (which must exist) ignores case in names:
    its name in another case is the same folder."""
    other = folder.with_name(folder.name.swapcase())
    try:
        mine, theirs = os.lstat(folder), os.lstat(other)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def fold(name: str) -> str:
    """``name`` as a case-insensitive file system compares it (roughly: APFS and NTFS
    fold case with tables of their own)."""
    return unicodedata.normalize("NFC", name).casefold()


@dataclass
class _Listing:
    """A folder's names on disk, by their NFC form and by their folded form."""

    key: FolderKey
    trusted: bool
    exact: dict[str, set[str]] = field(default_factory=dict)
    folded: dict[str, set[str]] = field(default_factory=dict)

    def add(self, name: str) -> None:
        self.exact.setdefault(unicodedata.normalize("NFC", name), set()).add(name)
        self.folded.setdefault(fold(name), set()).add(name)

    def discard(self, name: str) -> None:
        for index, key in (
            (self.exact, unicodedata.normalize("NFC", name)),
            (self.folded, fold(name)),
        ):
            names = index.get(key, set())
            names.discard(name)
            if not names:
                index.pop(key, None)


class Spellings:
    """The names on disk of a folder on a case-insensitive file system (see the module
    docstring); names are POSIX paths relative to ``root``, as named on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[str, _Listing] = {}

    def otherwise(self, name: str) -> str | None:
        """The name on disk, spelled otherwise, that a lookup of ``name`` takes for it or
        for one of its folders (``README.md`` for ``readme.md``, ``Docs`` for
        ``docs/a.md``); None when every part is spelled so, or is not there."""
        found = self.on_disk(name)
        if found is None:
            return None
        parts = found.split("/")
        for depth, part in enumerate(name.split("/")):
            if unicodedata.normalize("NFC", part) != unicodedata.normalize("NFC", parts[depth]):
                return "/".join(parts[: depth + 1])
        return None

    def on_disk(self, name: str) -> str | None:
        """The name on disk that a lookup of ``name`` finds, each part as its folder
        lists it (spelled so when it can be: ``README.md`` for ``readme.md``); None when
        it is not there."""
        folder = ""
        for part in name.split("/"):
            listing = self._listing(folder)
            if listing is None:
                return None
            found = listing.exact.get(unicodedata.normalize("NFC", part))
            found = found or listing.folded.get(fold(part))
            if not found:
                return None
            leaf = part if part in found else min(found)
            folder = f"{folder}/{leaf}" if folder else leaf
        return folder

    def named(self, folder: str, name: str) -> list[str]:
        """The names in ``folder`` whose NFC form is ``name`` (an NFC name), sorted."""
        listing = self._listing(folder)
        return [] if listing is None else sorted(listing.exact.get(name, ()))

    def forget(self) -> None:
        """Drop the kept listings (each folder is listed again when next looked up)."""
        self._listings.clear()

    @contextlib.contextmanager
    def changing(self, name: str, *, there: bool) -> Iterator[None]:
        """Around this folder's own change of ``name``: it is there after it
        (``there``), or not; a kept listing of its folder is updated rather than read
        again, when nothing else changed the folder since it was listed."""
        folder = name.rpartition("/")[0]
        before = self._key(folder)
        yield
        listing = self._listings.get(folder)
        if listing is None or listing.key != before:
            return
        after = self._key(folder)
        if after is None:
            del self._listings[folder]
            return
        leaf = name.rpartition("/")[2]
        if there:
            listing.add(leaf)
        else:
            listing.discard(leaf)
        listing.key = after
        listing.trusted = True

    def _key(self, folder: str) -> FolderKey | None:
        try:
            info = os.lstat(self.root / folder)
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns

    def _listing(self, folder: str) -> _Listing | None:
        now = time.time_ns()
        key = self._key(folder)
        if key is None:
            return None
        kept = self._listings.get(folder)
        if kept is not None and kept.key == key and kept.trusted:
            return kept
        try:
            names = os.listdir(self.root / folder)
        except OSError:
            return None
        racy = COARSE_RACY_NS if key[1] % 1_000_000 == 0 else RACY_NS
        listing = _Listing(key, trusted=now - key[1] >= racy)
        for name in names:
            listing.add(name)
        self._listings[folder] = listing
        return listing
