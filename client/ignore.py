"""Which files of a folder are synced: everything but ``.git/``, ``.weft/``, editors'
swap, backup, autosave, lock and safe-write files (:data:`DEFAULTS`; a ``!pattern``
brings them back) and the patterns of a ``.weftignore`` at the folder's top (gitignore
syntax, via pathspec).

``.git`` and ``.weft`` are never synced, at any depth, as a folder or a file (a ``.git``
file points git at a repository), and in any case: on a case-insensitive file system
(macOS's and Windows' defaults) ``.GIT/config`` is ``.git/config``. Nor is the file
``.weft-manifest.json`` at the folder's top, which ``weft restore`` writes there: a
sync of a restored folder sent it, was refused (4400), and never got in sync. The
server refuses to create such documents too: both sides ask
:func:`crdt.keys.restore_refusal` (:func:`crdt.keys.check_new_path`)."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import pathspec

from crdt.keys import never_synced, restore_refusal

log = logging.getLogger("weft.workspace")

IGNORE_FILE = ".weftignore"
# Editors' own files, which are not the user's text: vim's swap files, backups (``*~``),
# Emacs's lock links (``.#*``) and autosaves (``#*#``, there for as long as the buffer
# is unsaved), the temporary and old copies of JetBrains' "safe write" and of
# GIO/gedit's, LibreOffice's and MS Office's lock files. Each one that lived longer than
# a watch event went to every device as a document (a lock file made every other
# device's LibreOffice say the document was locked), then stayed in the project's
# history.
DEFAULTS = (
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    r"\#*#",
    "*___jb_tmp___",
    "*___jb_old___",
    ".goutputstream-*",
    ".~lock.*#",
    "~$*",
)


# Answers remembered per path until the rules change (at most this many: then forgotten
# and remembered anew). A running sync asks for every document of the project it has not
# opened at each poll of the document list, once a second: 5,000 ignored ones
# (``node_modules/``) took 39 ms of matching each time, 4% of a CPU while idle.
MEMO_PATHS = 100_000


class Ignore:
    """Ignore rules of one folder; :meth:`reload` after ``.weftignore`` changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.patterns: list[str] = []
        self._spec = pathspec.GitIgnoreSpec.from_lines(DEFAULTS)
        self._memo: dict[tuple[str, bool], bool] = {}
        self.reload()

    def reload(self) -> None:
        path = self.root / IGNORE_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read %s: %s (no patterns from it)", path, exc)
            lines = []
        # the rules match document paths, which are NFC: a pattern in NFD (a name copied
        # from macOS, say) would match nothing
        patterns = [
            unicodedata.normalize("NFC", line)
            for line in lines
            if line.strip() and not line.startswith("#")
        ]
        if patterns == self.patterns:
            return  # (every rescan reloads: the answers remembered stand)
        self.patterns = patterns
        self._spec = pathspec.GitIgnoreSpec.from_lines([*DEFAULTS, *patterns])
        self._memo.clear()

    def __call__(self, rel: str, *, is_dir: bool = False) -> bool:
        """Whether the relative POSIX path ``rel`` is ignored."""
        key = (rel, is_dir)
        known = self._memo.get(key)
        if known is None:
            if len(self._memo) >= MEMO_PATHS:
                self._memo.clear()
            known = self._memo[key] = self._match(rel, is_dir=is_dir)
        return known

    def _match(self, rel: str, *, is_dir: bool) -> bool:
        # whatever the patterns say; a folder named as the manifest is not the manifest
        refused = never_synced(rel) if is_dir else restore_refusal(rel)
        if refused is not None:
            return True
        return bool(self._spec.match_file(rel + "/" if is_dir else rel))
