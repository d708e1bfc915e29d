"""The files of a synced folder: which ones, their text, and writing them safely.

Pure file-system work, no syncing: scanning (``.weftignore`` rules applied, symlinked
folders not followed, with a warning), reading a file as UTF-8 text or saying why it is
skipped (one warning per file and reason: binary, undecodable, too big, a symlink, a
path a document cannot have; a file that is synced already and is now over the size
limit, not UTF-8 text or a symbolic link is :class:`TooBig`, :class:`NotTextFile` or
:class:`Symlink` with no warning: the workspace says it stops syncing), writing
atomically (a temporary file in ``.weft/tmp`` renamed over the target, keeping its
mode) and removing files (empty parent folders go too).

Nothing is read, written or removed through a symbolic link: neither the file's own nor
one on the way (a link to a folder elsewhere would make a document path name a file
outside the folder). Every folder on the way is opened without following links
(:mod:`client.safepath`); a path through a link is skipped when read and refused
(:class:`PathBlocked`) when written.

A document path is in Unicode NFC; the file may have its name in another form (NFD, as
macOS makes). Every operation goes to the name on disk (remembered from scans, looked up
in the folders on the way when unknown), so a file is synced under its NFC path and the
server's text goes to the file that is there, never to a second, look-alike one. Two
names on disk for one document path are skipped with a warning.

Scans and watch events are trusted to say which folders hold a name in another form:
once the whole folder has been scanned, a lookup lists only those (a stat does for the
others), so a file that is not there yet costs no listing. A name in another form that
appears unseen by the watcher is found by the next scan.

On a case-insensitive file system (macOS's APFS by default, Windows' NTFS; found at
:meth:`Folder.pin`: ``.WEFT`` is ``.weft``) a lookup of ``readme.md`` finds
``README.md``. There a file is the document's only when its name on disk is spelled as
the document path is (up to Unicode form), read from its folder's listing: after a
case-only rename (``readme.md`` -> ``README.md``) the old name's file is gone (its
document is deleted, the new name is a new one) rather than found again under the new
name, a deletion of ``readme.md`` does not remove ``README.md``, and a document that
would land on a file (or pass a folder) spelled otherwise is not written
(:class:`PathBlocked`): on such a file system two names that differ only in case are
one file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from blake3 import blake3

from client.caseless import Spellings, caseless
from client.ignore import IGNORE_FILE, Ignore
from client.safepath import PathBlocked, folder_of, read_at
from crdt.errors import BadPath
from crdt.keys import normalise_path, restore_refusal

STATE_DIR = ".weft"
MAX_FILE_BYTES = 4 << 20


class FileChanged(Exception):
    """The file changed on disk since it was last read: it was not written over."""


class Skip:
    """A file that is not synced (binary, too big, a symlink...)."""


SKIP = Skip()


class Unfit(Skip):
    """What is at a file's path and cannot be synced: a regular file whose content cannot
    be, or a symbolic link. ``why`` says what is wrong with it ("N bytes, over the L-byte
    limit", "binary (a NUL byte at offset N)", "a symbolic link"). A synced file found so
    stops syncing (:mod:`client.unsynced`); a new one is skipped."""

    why: str


class TooBig(Unfit):
    """A file over the size limit (``limit``, ``max_file_bytes``): ``size`` bytes."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.why = f"{size} bytes, over the {limit}-byte limit"


class NotTextFile(Unfit):
    """A file that is not UTF-8 text: binary (it holds a NUL byte) or not valid UTF-8;
    ``why`` says which, with the offset of the first such byte."""

    def __init__(self, why: str) -> None:
        self.why = why


class Symlink(Unfit):
    """A symbolic link where a file is (to a file, to a folder, or to nothing): never
    followed, written through or written over."""

    why = "a symbolic link"


# A file as last read or written here: (modification time in ns, size, inode).
FileStat = tuple[int, int, int]


class Folder:
    """One folder on disk (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        warn: Callable[[str, str], None],
        max_file_bytes: int = MAX_FILE_BYTES,
        synced: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self.root = root
        # Whether a document path is a file this folder syncs already: a .weftignore
        # pattern does not stop it (see ignored)
        self.synced = synced
        self.state_dir = root / STATE_DIR
        self.tmp_dir = self.state_dir / "tmp"
        self.max_file_bytes = max_file_bytes
        self.ignore = Ignore(root)
        self._warn_cb = warn
        self._warned: dict[str, set[str]] = {}
        self._stat: dict[str, FileStat] = {}
        self._ours: dict[str, FileStat] = {}  # as this folder last wrote it (see settling)
        self._names: dict[str, str] = {}  # document path -> its other name on disk
        self._clashes: dict[str, list[str]] = {}  # document path -> its names on disk
        # folders (as named on disk) holding a name in another form; None: not scanned yet
        self._odd: set[str] | None = None
        self._pinned: tuple[tuple[int, int] | None, tuple[int, int] | None] | None = None
        # names on disk, on a case-insensitive file system (see the module docstring)
        self._spellings: Spellings | None = None

    def rel(self, path: Path) -> str | None:
        """``path`` relative to the folder (POSIX), None outside it or for the folder."""
        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            return None
        return None if rel in ("", ".") else rel

    def is_state(self, rel: str) -> bool:
        return rel.split("/", 1)[0] in (STATE_DIR, ".git")

    def warn(self, path: str, message: str, *, reason: str | None = None) -> Skip:
        """Warn once per file and ``reason`` (the message itself when not given: a
        message that names something changing, such as the file's size, gives the part
        that does not change)."""
        said = self._warned.setdefault(path, set())
        key = message if reason is None else reason
        if key not in said:
            said.add(key)
            self._warn_cb(path, message)
        return SKIP

    def unwarn(self, path: str, prefix: str) -> None:
        """Let the warnings about ``path`` that start with ``prefix`` be said again."""
        said = self._warned.get(path)
        if said:
            said.difference_update([m for m in said if m.startswith(prefix)])

    def scan(self, under: str = "") -> list[str]:
        """Document paths of the files to sync under ``under`` (all of the folder)."""
        found: dict[str, list[str]] = {}
        top = self.disk_name(under) if under else ""
        odd: set[str] = set()
        # never into a folder reached through a link (os.walk follows only its top)
        walk = os.walk(self.root / top) if not top or self._is_folder(top) else iter(())
        for dirpath, dirnames, filenames in walk:
            base = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if base == "." else base + "/"
            if not all(unicodedata.is_normalized("NFC", n) for n in (*dirnames, *filenames)):
                odd.add(base[:-1])
            dirnames[:] = sorted(d for d in dirnames if self._walked_into(dirpath, base + d))
            for name in sorted(filenames):
                path = self._path_of(base + name)
                if path is not None:
                    found.setdefault(path, []).append(base + name)
        if not under:
            self._odd = odd
            if self._spellings is not None:  # (a listing kept wrongly lasts until a rescan)
                self._spellings.forget()
        elif self._odd is not None:
            self._odd = {f for f in self._odd if f != top and not f.startswith(top + "/")}
            self._odd |= odd
            self._mark(top)
        for path, names in found.items():
            self._note(path, names)
        return sorted(found)

    def _walked_into(self, dirpath: str, name: str) -> bool:
        """Whether a scan goes into the folder ``name`` (not ignored, not a link)."""
        nfc = unicodedata.normalize("NFC", name)
        if self.ignore(nfc, is_dir=True):
            return False
        if os.path.islink(os.path.join(dirpath, os.path.basename(name))):
            if not self.synced(nfc):  # (a synced file replaced by it: the workspace says so)
                self.warn(nfc, f"skipping {nfc}: a symbolic link to a folder is not followed")
            return False
        return True

    def _is_folder(self, name: str) -> bool:
        """Whether ``name`` is a folder reached through no link."""
        info = self._lstat_name(name)
        return info is not None and stat.S_ISDIR(info.st_mode)

    def _lstat_name(self, name: str) -> os.stat_result | None:
        """``lstat`` of ``name`` (as named on disk), through no link; None if it is not
        there or a link or a file is on the way."""
        if self.spelled_otherwise(name) is not None:
            return None
        try:
            with folder_of(self.root, name) as (fd, leaf):
                return os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None

    def spelled_otherwise(self, name: str) -> str | None:
        """On a case-insensitive file system: the name on disk, spelled otherwise, that a
        lookup of ``name`` (as named on disk) takes for it or for one of its folders
        (``README.md`` for ``readme.md``; ``Docs`` for ``docs/a.md``); else None."""
        return None if self._spellings is None else self._spellings.otherwise(name)

    def spelled_as(self, name: str) -> str | None:
        """On a case-insensitive file system: the name on disk that a lookup of ``name``
        (as named on disk) finds, spelled as its folders list it; else None."""
        return None if self._spellings is None else self._spellings.on_disk(name)

    def _changing(self, name: str, *, there: bool) -> contextlib.AbstractContextManager[None]:
        """Around this folder's own change of ``name`` (see :mod:`client.caseless`)."""
        if self._spellings is None:
            return contextlib.nullcontext()
        return self._spellings.changing(name, there=there)

    def _there(self, name: str) -> bool:
        """Whether ``name`` (as named on disk) is there, spelled so."""
        return os.path.lexists(self.root / name) and self.spelled_otherwise(name) is None

    def document_path(self, rel: str) -> str | None:
        """The document path of a file (``rel`` as named on disk, or its document path as
        a rescan gives it), or None if it is ignored or cannot be one.

        A rescan passes every document path here and a watch event every file it saw, so
        the folders are listed again (for every name the path has on disk) only when
        something says the names changed: ``rel`` is a name other than the remembered
        one, the path is a known clash, or the NFC name now exists beside the remembered
        one. Listing them every time made a rescan of 10,000 NFD-named files in one
        folder take 104 s, on the event loop. A name not seen before is taken as it is
        when the NFC name is not there too (a clash of two other forms waits for the next
        scan)."""
        path = self._path_of(rel)
        if path is None:
            return None
        known = self._names.get(path)
        if path in self._clashes or rel not in (path, known or path):
            if (
                known is None
                and path not in self._clashes
                and self._there(rel)
                and not self._there(path)
            ):
                self._note(path, [rel])
            else:
                self._note(path, self._lookup(path))
        elif known is not None and self._there(path):
            self._note(path, self._lookup(path))
        return path

    def ignored(self, path: str) -> bool:
        """Whether the file ``path`` (a document path, or a name in NFC) is not synced:
        the ignore rules match it, and it is not a file this folder syncs already. As
        git does with the files it tracks, a ``.weftignore`` pattern added later does not
        stop one (it stopped syncing both ways, with no word, and ``--once`` said "in
        sync" while the file and the server differed): it goes on syncing, said once.
        ``.git``, ``.weft`` and the restore's manifest are never synced."""
        if not self.ignore(path):
            return False
        if not self.synced(path) or restore_refusal(path) is not None:
            return True
        self.warn(
            path,
            f"{path} matches {IGNORE_FILE} but was synced before: it goes on syncing both "
            "ways (delete it to stop syncing it, on every device)",
        )
        return False

    def _path_of(self, rel: str) -> str | None:
        if self.ignored(unicodedata.normalize("NFC", rel)):
            return None
        try:
            return normalise_path(rel)
        except BadPath as exc:
            self.warn(rel, f"skipping {rel}: {exc}")
            return None

    def _note(self, path: str, names: list[str]) -> None:
        """Remember the names on disk of the document ``path``."""
        self._clashes.pop(path, None)
        self._names.pop(path, None)
        for name in names:
            self._mark(name)
        if len(names) > 1:
            self._clashes[path] = sorted(names)
        elif names and names[0] != path:
            self._names[path] = names[0]

    def _mark(self, name: str) -> None:
        """Remember the folders of ``name`` (as named on disk) that hold a name in another
        form than NFC."""
        if self._odd is None or name.isascii():
            return
        parts = name.split("/")
        for depth, part in enumerate(parts):
            if not unicodedata.is_normalized("NFC", part):
                self._odd.add("/".join(parts[:depth]))

    def _lookup(self, path: str) -> list[str]:
        """The names on disk whose NFC form is ``path`` (folder by folder). Only the
        folders known to hold a name in another form are listed (all of them before the
        first scan): listing every folder on the way at each call made downloads of many
        new non-ASCII-named files quadratic (each write looks the path up 3-4 times)."""
        found = [""]
        for segment in path.split("/"):
            deeper = []
            for folder in found:
                if self._odd is not None and folder not in self._odd and self._spellings is None:
                    name = f"{folder}/{segment}" if folder else segment
                    if os.path.lexists(self.root / name):
                        deeper.append(name)
                    continue
                if self._spellings is not None:  # (its listing, indexed by NFC name)
                    names = self._spellings.named(folder, segment)
                    deeper += [f"{folder}/{name}" if folder else name for name in names]
                    continue
                try:
                    names = os.listdir(self.root / folder)
                except OSError:
                    continue
                deeper += [
                    f"{folder}/{name}" if folder else name
                    for name in sorted(names)
                    if unicodedata.normalize("NFC", name) == segment
                ]
            found = deeper
            if not found:
                break
        return found

    def disk_name(self, path: str) -> str:
        """The name on disk of the document ``path``: the one a file (or its folder) has
        in another Unicode form when there is one, else ``path`` itself."""
        name = self._names.get(path)
        if name is not None and self._there(name):
            return name
        self._names.pop(path, None)
        if (path.isascii() and self._spellings is None) or self._there(path):
            return path
        names = self._lookup(path)
        if len(names) == 1:
            self._note(path, names)
            return names[0]
        parts = path.split("/")  # no such file: create it in the folders that are there
        for depth in range(len(parts) - 1, 0, -1):
            folders = self._lookup("/".join(parts[:depth]))
            if len(folders) == 1:
                return "/".join([folders[0], *parts[depth:]])
        return path

    def clash(self, path: str) -> list[str] | None:
        """The names on disk, when more than one file has the document path ``path``."""
        if path in self._clashes:
            self._note(path, self._lookup(path))
        return self._clashes.get(path)

    def read(self, path: str) -> str | Skip | None:
        """The file's text; None if it does not exist; a :class:`Skip` if it is not
        synced (an :class:`Unfit` one when the file itself is what is wrong: its content,
        or a symbolic link in its place)."""
        names = self.clash(path)
        if names is not None:
            return self.warn(
                path,
                f"skipping {path}: {len(names)} files have this name in different Unicode "
                f"forms ({', '.join(ascii(n) for n in names)}); rename all but one",
            )
        name = self.disk_name(path)
        try:
            if self.spelled_otherwise(name) is not None:
                raise FileNotFoundError(name)  # another file's name, in another case
            with folder_of(self.root, name) as (fd, leaf):
                data = self._read_at(path, fd, leaf)
        except PathBlocked as exc:
            if exc.link:
                return self.warn(path, f"skipping {path}: {exc}")
            data = None  # a file where a folder should be: no such file
        except (FileNotFoundError, NotADirectoryError):
            data = None
        if data is None:
            self._stat.pop(path, None)  # as read: not there (see write's if_unchanged)
            return None
        if isinstance(data, Skip):
            return data
        zero = data.find(b"\0")
        if zero >= 0:
            why = f"binary (a NUL byte at offset {zero})"
            return self._not_text(path, why, "binary file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            why = f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
            return self._not_text(path, why, "not valid UTF-8 text")
        # readable again: a skip may be said again later (not other warnings, e.g.
        # "cannot record a conflict yet", said once however many tries)
        self.unwarn(path, "skipping ")
        return text

    def _not_text(self, path: str, why: str, skipped: str) -> NotTextFile:
        """The file is not UTF-8 text (``why``): a new file is skipped, said once ("skipping
        FILE: ``skipped``"); a synced one stops syncing, which the workspace says."""
        if not self.synced(path):
            self.warn(path, f"skipping {path}: {skipped}")
        return NotTextFile(why)

    def _read_at(self, path: str, fd: int, leaf: str) -> bytes | Skip | None:
        info = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            if not self.synced(path):  # (a synced one stops syncing: the workspace says so)
                self.warn(path, f"skipping {path}: symbolic links are not synced")
            return Symlink()
        if not stat.S_ISREG(info.st_mode):
            return None if stat.S_ISDIR(info.st_mode) else SKIP
        self._stat[path] = _file_stat(info)
        if info.st_size > self.max_file_bytes:
            if not self.synced(path):  # (a synced one stops syncing: the workspace says so)
                # once, not once per size: a file being written grew past the limit in a
                # warning per watch event
                self.warn(
                    path,
                    f"skipping {path}: {info.st_size} bytes, over {self.max_file_bytes}",
                    reason=f"skipping {path}: over {self.max_file_bytes} bytes",
                )
            return TooBig(info.st_size, self.max_file_bytes)
        try:
            return read_at(fd, leaf)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self.warn(path, f"skipping {path}: cannot read it ({exc})")

    def unchanged(self, path: str) -> bool:
        """Whether the file has the size, modification time and inode it had when last
        read or written here (a cheap check for periodic rescans)."""
        known = self._stat.get(path)
        if known is None:
            return False
        name = self.disk_name(path)
        try:  # (a plain lstat: nothing is read, and a rescan calls this for every file)
            info = (self.root / name).lstat()
        except OSError:
            return False
        if self.spelled_otherwise(name) is not None:
            return False
        return _file_stat(info) == known

    def seen(self, path: str) -> FileStat | None:
        """The file as last read or written here (None: not there, or not read yet)."""
        return self._stat.get(path)

    def settling(self, path: str, seconds: float) -> float:
        """How much longer the file must go unchanged before ``seconds`` have passed since
        it was last modified, as last read here (a save in place may still be writing
        it); 0 when they have, or when that modification was this folder's own write.
        A modification time more than ``seconds`` in the future (another clock, on a
        network folder) counts as long ago: the wait is bounded."""
        known = self._stat.get(path)
        if known is None or known == self._ours.get(path):
            return 0.0
        return left(known[0], seconds)

    def look(self, path: str) -> os.stat_result | None:
        """The file's ``lstat`` as it is now, reached through no link (None: not there)."""
        return self._lstat_name(self.disk_name(path))

    def exists(self, path: str) -> bool:
        """Whether the file (or a folder, a link...) is there, reached through no link."""
        return self._lstat_name(self.disk_name(path)) is not None

    def is_file(self, path: str) -> bool:
        """Whether the file is a regular file, reached through no link."""
        info = self._lstat_name(self.disk_name(path))
        return info is not None and stat.S_ISREG(info.st_mode)

    def blocked(self, path: str) -> str | None:
        """Why the file cannot be reached when a link or a file is on its way, else
        None."""
        try:
            with folder_of(self.root, self.disk_name(path)):
                return None
        except PathBlocked as exc:
            return str(exc)
        except OSError:
            return None

    def write(self, path: str, text: str, *, if_unchanged: bool = False) -> None:
        """Replace the file's content atomically (temporary file + rename).

        ``if_unchanged``: raise :class:`FileChanged` instead if the file is not as it was
        when last read or written here (size, mtime, inode; or gone, or new): a save made after
        the caller took the file in must be taken in first, not replaced. (Checked right
        before the rename: a save in the microseconds between the two is not seen.)

        Raises :class:`PathBlocked` when a link or a file is on the way, or a folder, a
        link... where the file should be: never written through or over."""
        self.state_dir.mkdir(exist_ok=True)  # (not the folder itself: it was moved?)
        self.tmp_dir.mkdir(exist_ok=True)
        name = self.disk_name(path)
        other = self.spelled_otherwise(name)
        if other is not None:
            raise PathBlocked(
                f"{other} is there, the same name in another case on this file system "
                "(which does not tell them apart)"
            )
        tmp = self.tmp_dir / f"{secrets.token_hex(8)}.tmp"
        try:
            tmp.write_bytes(text.encode("utf-8"))
            with folder_of(self.root, name, create=True) as (fd, leaf):
                try:
                    info: os.stat_result | None = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    info = None
                if info is not None and not stat.S_ISREG(info.st_mode):
                    raise _in_the_way(path, info.st_mode)
                if info is not None:
                    os.chmod(tmp, stat.S_IMODE(info.st_mode))
                now = None if info is None else _file_stat(info)
                if if_unchanged and now != self._stat.get(path):
                    raise FileChanged(path)
                with self._changing(name, there=True):
                    os.replace(tmp, leaf, dst_dir_fd=fd)
                info = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
            self._stat[path] = self._ours[path] = _file_stat(info)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, path: str) -> bool:
        """Delete the file (not a symlink or folder) and the folders it leaves empty."""
        name = self.disk_name(path)
        if self.spelled_otherwise(name) is not None:
            return False  # another file's name, in another case: not this one
        try:
            with folder_of(self.root, name) as (fd, leaf):
                if not stat.S_ISREG(os.stat(leaf, dir_fd=fd, follow_symlinks=False).st_mode):
                    return False
                with self._changing(name, there=False):
                    os.unlink(leaf, dir_fd=fd)
        except (FileNotFoundError, NotADirectoryError, PathBlocked):
            return False
        self._stat.pop(path, None)
        self._ours.pop(path, None)
        folders = name.split("/")[:-1]
        while folders:
            try:
                with folder_of(self.root, "/".join(folders)) as (fd, leaf):
                    os.rmdir(leaf, dir_fd=fd)
            except OSError:
                break
            folders.pop()
        return True

    def pin(self) -> None:
        """Remember which folder (and state folder) this is, for :meth:`moved`, and
        whether its file system tells names apart by case (see the module docstring)."""
        self._pinned = (_identity(self.root), _identity(self.state_dir))
        if self._pinned[1] is not None and caseless(self.state_dir):
            self._spellings = Spellings(self.root)

    def moved(self) -> str | None:
        """Why the folder is not the one :meth:`pin` saw any more (moved away, deleted,
        replaced; or its state folder), None while it is. Files missing then are not
        deleted files."""
        if self._pinned is None:
            return None
        root, state = self._pinned
        now = _identity(self.root)
        if now is None:
            return f"{self.root} is gone (moved or deleted)"
        if now != root:
            return f"{self.root} is not the folder this sync started in (moved or replaced)"
        now = _identity(self.state_dir)
        if now != state:
            return f"{self.state_dir} is {'gone' if now is None else 'a different folder'}"
        return None

    def copy_base(self, path: str) -> Path:
        """Where the copies of ``path`` go: ``.weft/conflicts/PATH``, its last part cut
        (and told apart by a hash) if it would leave no room for the ``.STAMP.N`` a copy
        adds under the 255-byte name limit (a long name's copy failed, ENAMETOOLONG)."""
        base = self.state_dir / "conflicts" / path
        name = base.name.encode()
        if len(name) <= _COPY_NAME_BYTES:
            return base
        cut = name[: _COPY_NAME_BYTES - 9].decode("utf-8", "ignore")
        return base.with_name(f"{cut}~{blake3(name).hexdigest()[:8]}")

    def backup(self, path: str, text: str) -> Path:
        """Keep a copy of ``text`` under ``.weft/conflicts/`` (for a conflict)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        base = self.copy_base(path)
        target = first = base.with_name(f"{base.name}.{stamp}")
        copies = 1
        while target.exists():  # another copy this second: never overwrite one
            copies += 1
            target = first.with_name(f"{first.name}.{copies}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target


# A copy's name is its file's, then ".YYYYMMDDTHHMMSS" and maybe ".N": 255 bytes in all.
_COPY_NAME_BYTES = 255 - len(".20260101T000000.999")


def left(mtime_ns: int, seconds: float) -> float:
    """How much longer until ``seconds`` have passed since ``mtime_ns``; 0 once they
    have, or when it is more than ``seconds`` in the future (another clock: bounded)."""
    age = (time.time_ns() - mtime_ns) / 1e9
    return seconds - age if -seconds < age < seconds else 0.0


def _file_stat(info: os.stat_result) -> FileStat:
    return info.st_mtime_ns, info.st_size, info.st_ino


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _in_the_way(path: str, mode: int) -> PathBlocked:
    if stat.S_ISDIR(mode):
        return PathBlocked(f"{path} is a folder")
    if stat.S_ISLNK(mode):
        return PathBlocked(f"{path} is a symbolic link (not followed)", link=True)
    return PathBlocked(f"{path} is not a regular file")
