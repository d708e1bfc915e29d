"""A test file system that treats names as macOS's APFS (its default) and Windows' NTFS do:
case-insensitive and case-preserving.

Linux's own file systems here cannot do it (the kernel has no ``CONFIG_UNICODE``, so no
ext4 or tmpfs casefold), so this is a passthrough FUSE file system (mfusepy, libfuse 3)
over a plain folder: a name is looked up ignoring case and Unicode form (``README.md``
opens ``readme.md``; an NFD name opens its NFC one), a listing shows each name as it was
created, a case-only rename (``readme.md`` -> ``README.md``) renames the entry, and a
rename onto a name that differs only in case from an existing entry replaces that entry,
the new name as given.

The kernel caches no name, attribute or negative lookup (``*_timeout=0``): two spellings
of a name are two kernel entries of one file, and a cached stat through one would lag a
write through the other. Files are removed at once (``hard_remove``: no
``.fuse_hidden*`` file appears in a listing).

Run: ``python tests/caseless_fs.py BACKING MOUNTPOINT`` (foreground, Linux; SIGTERM, or
``fusermount3 -u MOUNTPOINT``, unmounts it; so does the end of the process that started
it).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import threading
import unicodedata
from typing import Any

import mfusepy as fuse


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class CaselessFS(fuse.Operations):  # type: ignore[misc]
    """See the module docstring: every path is resolved to the entry it names in the
    backing folder, ignoring case."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self.names_lock = threading.Lock()  # a lookup and the change it leads to, together

    def _resolve(self, path: str) -> str:
        """The backing path of ``path``: each part as named in its folder (ignoring case),
        the last one as given when no entry has it."""
        real = self.backing
        parts = [p for p in path.split("/") if p]
        for depth, part in enumerate(parts):
            found = self._entry(real, part)
            if found is None:
                if depth < len(parts) - 1:
                    raise fuse.FuseOSError(errno.ENOENT)
                found = part
            real = os.path.join(real, found)
        return real

    @staticmethod
    def _entry(folder: str, name: str) -> str | None:
        try:
            names = os.listdir(folder)
        except NotADirectoryError as exc:
            raise fuse.FuseOSError(errno.ENOTDIR) from exc
        except FileNotFoundError as exc:
            raise fuse.FuseOSError(errno.ENOENT) from exc
        if name in names:
            return name
        key = _key(name)
        return next((n for n in names if _key(n) == key), None)

    # --- attributes and listings -----------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        info = os.fstat(fh) if fh is not None else os.lstat(self._resolve(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size")
        attrs: dict[str, Any] = {k: getattr(info, k) for k in keys}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            attrs[k] = getattr(info, k + "_ns")
        return attrs

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # (with its inode: with use_ino, an entry of inode 0 is left out of a listing)
        found = [(".", self.getattr(path)), ("..", {"st_mode": 0o40755, "st_ino": 1})]
        with os.scandir(self._resolve(path)) as entries:
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                found.append((entry.name, {"st_mode": mode, "st_ino": entry.inode()}))
        return [(name, attrs, 0) for name, attrs in found]

    def readlink(self, path: str) -> str:
        return os.readlink(self._resolve(path))

    def statfs(self, path: str) -> dict[str, int]:
        info = os.statvfs(self._resolve(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
        return {k: getattr(info, k) for k in (*keys, "f_files", "f_flag", "f_frsize", "f_namemax")}

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._resolve(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.lchown(self._resolve(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._resolve(path), follow_symlinks=False)
        else:
            os.utime(self._resolve(path), ns=times, follow_symlinks=False)
        return 0

    # --- names ---------------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> int:
        with self.names_lock:
            os.mkdir(self._resolve(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        with self.names_lock:
            os.rmdir(self._resolve(path))
        return 0

    def unlink(self, path: str) -> int:
        with self.names_lock:
            os.unlink(self._resolve(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        with self.names_lock:
            os.symlink(source, self._resolve(target))
        return 0

    def rename(self, old: str, new: str) -> int:
        """A case-only rename renames the entry; onto another entry of the same name in
        another case, that entry is replaced and the new name is the one given."""
        with self.names_lock:
            src = self._resolve(old)
            dst = self._resolve(new)
            wanted = os.path.join(os.path.dirname(dst), os.path.basename(new))
            if dst != wanted and os.path.lexists(dst) and not os.path.samefile(src, dst):
                if os.path.isdir(dst) and not os.path.islink(dst):
                    os.rmdir(dst)  # (only when empty, as rename(2) would)
                else:
                    os.unlink(dst)
            os.rename(src, wanted)
        return 0

    # --- contents ------------------------------------------------------------------------------

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        with self.names_lock:
            return os.open(self._resolve(path), flags | os.O_CREAT, mode)

    def open(self, path: str, flags: int) -> int:
        return os.open(self._resolve(path), flags & ~os.O_CREAT)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._resolve(path), length)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        os.fsync(fh)
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0


def main(argv: list[str]) -> int:
    backing, mountpoint = argv
    # SIGTERM when the process that started it dies (a test run killed): libfuse then
    # unmounts, and leaves no dead mount behind (PR_SET_PDEATHSIG)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    fuse.FUSE(
        CaselessFS(backing),
        mountpoint,
        foreground=True,
        hard_remove=True,
        use_ino=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
