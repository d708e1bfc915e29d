"""The project's change index (format 1.6): its change marker, and which documents
changed after a marker.

Every append transaction writes, per document it appended to, one entry
``T + (changes, project, vs)`` -> 8 random bytes (one draw per transaction), then the
document's path (``vs``: the document's last update in it, so entries are unique and
in commit order). A blind versionstamped write: appends never read it, so they never
conflict on it. Entries are never rewritten or deleted, as the log is not.

The project's change marker (the document list's ETag) is its newest entry's
transaction versionstamp (10 bytes) and random bytes. (Format 1.5 wrote it to a key of
its own, ``T + (changed, project)``, in every append: a second key far from where the
index grows, which cost a SQLite commit another page; it is read only while the index
is empty: a project not appended to since the store became 1.6.) The random bytes:
a store restored from an older backup makes commits again with the versionstamps of
the lost ones, and a marker from before the restore must never name a later list.

"What changed after marker M" is the range of entries after M's transaction. It is
answered only when M is proven to be a marker this project's index holds: an entry of
M's own transaction must hold M's random bytes. That one check refuses a marker from
another store (its random bytes differ), from before a restore of an older backup,
from before the store became 1.6 (that transaction wrote no entry), of another project
(unless the same transaction moved both: then it is this project's marker too), and
one made up. The caller then reads the whole list.
"""

from __future__ import annotations

import msgpack

from crdt import keys
from crdt.kv.base import ReadTransaction
from crdt.versionstamp import TR_LEN

NONCE_LEN = 8
MARKER_LEN = TR_LEN + NONCE_LEN
"""A change marker: its transaction's versionstamp, then its 8 random bytes."""


def current_marker(tr: ReadTransaction, prefix: bytes, project: str) -> bytes | None:
    """The project's change marker (see the module's docstring); None when nothing was
    appended to it since its store became format 1.5."""
    index = keys.project_changes(prefix, project)
    newest = tr.get_range(*keys.prefix_range(index), limit=1, reverse=True)
    if not newest:
        return tr.get(keys.project_changed(prefix, project))  # written by format 1.5
    key, value = newest[0]
    start = len(index) + len(keys.VS_CODE)
    return key[start : start + TR_LEN] + value[:NONCE_LEN]


def changed_docs(
    tr: ReadTransaction, prefix: bytes, project: str, since: bytes, limit: int
) -> list[tuple[str, bytes]] | None:
    """``(path, space)`` of every document of ``project`` appended to after the change
    marker ``since``, by path; None when that cannot be told: ``since`` is not a
    marker of this project's index (see the module's docstring) or more than
    ``limit`` entries follow it (the caller reads the whole list instead). Read in
    ``tr``, with the project's current marker, so the two agree."""
    if len(since) != MARKER_LEN:
        return None
    index = keys.project_changes(prefix, project)
    commit, nonce = since[:TR_LEN], since[TR_LEN:]
    own = tr.get_range(*keys.changes_of_commit(index, commit), limit=1)
    if not own or own[0][1][:NONCE_LEN] != nonce:
        return None
    rows = tr.get_range(*keys.changes_after(index, commit), limit=limit + 1)
    if len(rows) > limit:
        return None
    paths = sorted({value[NONCE_LEN:].decode() for _, value in rows})
    metas = tr.get_many([keys.doc_meta(prefix, project, path) for path in paths])
    return [
        (path, bytes(msgpack.unpackb(meta)["space"]))
        for path, meta in zip(paths, metas, strict=True)
        if meta is not None  # written with the doc's first update: always there
    ]
