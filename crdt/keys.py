"""The key layout: the one module that builds keys, all of them tuple-packed (``fdb.tuple``).

``fdb.tuple`` is used only for its pure encoding; a versionstamp element is written here
as the tuple layer's code 0x33 followed by 12 bytes, because packing an incomplete
``fdb.tuple.Versionstamp`` needs libfdb_c loaded. The bytes are identical to what FDB's
``pack_with_versionstamp`` produces, so keys written by either engine read the same.

Layout (see README for the table)::

    (format,)                          -> layer format {major, minor}
    (dirseq,)                          -> last allocated tenant number
    (dir, tenant)                      -> tenant record {n, created}
    T = (t, n)                         tenant prefix; nothing outside it but the above
    (unborn, tenant)                   never written: where a read-only reader of a tenant
                                       not in the directory reads (and finds nothing)
    T + (doc, project, path)           -> doc meta {id, created}
    D = T + (d, project, doc_id)
    D + (u, vs, part)                  -> chunk of msgpack {update, user, client, session, ms}
    D + (s, vs, part)                  -> chunk of snapshot state as of vs (inclusive)
    D + (g, vs, part)                  -> chunk of a segment: diff of consecutive updates
                                          ending at vs, {after, update, count}
    D + (t, ms, vs)                    -> b''  time index (one per doc per transaction)
    D + (i, client, clock, blake3-16)  -> vs   idempotency index (format 1.3): an update
                                          filed under the id of its first struct (the
                                          client as its varuint bytes), so one client's
                                          entries are written in order
    D + (h, blake3-16)                 -> vs   idempotency index of an update without
                                          structs, and of every update before 1.3
    D + (head,)                        -> vs + count (8 bytes LE): last update, and how
                                          many updates the doc holds (format 1.2)
    D + (n,) / D + (bytes,)            -> 8-byte little-endian counters
    D + (gone,)                        -> vs: a head at which the doc was seen deleted
                                          (written by a server's room as it unloads;
                                          the list says "deleted" while it is the head)
    D + (aw, instance)                 -> msgpack {v, ms, gen}: one server instance's
                                          awareness entry for the doc (ephemeral, never
                                          history: see server.awareness)
    D + (aw, instance, client)         -> msgpack [clock, JSON state] of that entry
    D + (awv,)                         -> 8-byte counter bumped by every awareness publish
    (instances, name)                  -> msgpack {ms, conns: {tenant: n}}: a running
                                          server's heartbeat and connection counts; an
                                          instance shares awareness and counts only while
                                          another one is alive (ephemeral, like aw)
    (instancesv,)                      -> 8-byte counter bumped when one comes or goes
    T + (changed, project)             -> the project's change marker: the commit of its
                                          last append, then 8 random bytes (format 1.5
                                          only; read while the change index is empty)
    T + (changes, project, vs)         -> the append's 8 random bytes, then the path of
                                          the doc whose last update in that append is vs
                                          (format 1.6: the change index; its newest entry
                                          is the project's change marker)
    T + (conflict, project, vs)        -> conflict head: {body, path, status, resolved_by,
                                          resolved_ms, resolution, ours_clients} (format
                                          1.4; ours_clients since 2026-12-05, a head
                                          without it still read; before 1.4: the whole
                                          record, still read)
    T + (conflictbody, project, vs, tag, part)
                                       -> chunk of the record (``records.stored_parts``);
                                          ``tag``: 8 bytes of blake3 of its parts
    T + (conflictv, project)           -> 8-byte counter: conflict records made or
                                          resolved in the project, added to in the
                                          transaction that writes a record's head (the
                                          document list says it: ``X-Weft-Conflicts``)
"""

from __future__ import annotations

import functools
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence
from typing import Any

import fdb.tuple as _tuple

from crdt.errors import BadPath
from crdt.versionstamp import INCOMPLETE_TR, Versionstamp

VS_CODE = b"\x33"
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_NAME_LEN = 64
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

Element = None | bytes | str | int | bool | float | tuple[Any, ...] | Versionstamp


# A device id (a weft client's ``?device=``; see server.ws and client.state)
DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
DEVICE_ID_RULE = "1-64 of A-Z a-z 0-9 . _ : -"


def pack(items: Sequence[Element], prefix: bytes = b"") -> bytes:
    """Tuple-pack ``items`` after ``prefix``; a Versionstamp element is packed completed."""
    if type(items) is tuple and all(type(item) in _CACHED_TYPES for item in items[:-1]):
        last = items[-1] if items else None
        if type(last) in _CACHED_TYPES:
            return _pack_cached(items, prefix)
        if type(last) is bytes:  # e.g. (h, digest): a cached head, then the bytes
            return _pack_cached(items[:-1], prefix) + _pack_bytes(last)
    out = bytearray(prefix)
    run: list[Any] = []
    for item in items:
        if isinstance(item, Versionstamp):
            if run:
                out += _tuple.pack(tuple(run))
                run = []
            out += VS_CODE + item.raw
        else:
            run.append(item)
    if run:
        out += _tuple.pack(tuple(run))
    return bytes(out)


_CACHED_TYPES = frozenset({str, int})  # exact types: True == 1 and 0.0 == -0.0 pack apart


@functools.lru_cache(maxsize=4096)
def _pack_cached(items: tuple[str | int, ...], prefix: bytes) -> bytes:
    """The hot keys (a doc's head and counters, record prefixes) are packed once."""
    packed: bytes = _tuple.pack(items, prefix=prefix)
    return packed


def _pack_bytes(value: bytes) -> bytes:
    """The tuple layer's byte-string element: 0x01, the bytes with 0x00 escaped as
    0x00 0xff, then 0x00 (tests check it against ``fdb.tuple.pack``)."""
    return b"\x01" + value.replace(b"\x00", b"\x00\xff") + b"\x00"


def pack_incomplete(
    items: Sequence[Element], user: int, suffix: Sequence[Element] = (), prefix: bytes = b""
) -> tuple[bytes, int]:
    """Key ``prefix + items + <versionstamp placeholder> + suffix`` and the placeholder's offset.

    The 10-byte placeholder is filled with the commit's transaction versionstamp by
    ``Transaction.set_versionstamped_key``; ``user`` fills the 2 user bytes.
    """
    head, tail = _incomplete_parts(tuple(items), tuple(suffix), prefix)
    return head + INCOMPLETE_TR + user.to_bytes(2, "big") + tail, len(head)


class IncompleteKeys:
    """:func:`pack_incomplete` for many keys ``prefix + items + <vs> + (n,)`` that differ
    only in the user version and ``n``: the parts are packed once (an append writes one
    such key per update)."""

    __slots__ = ("_tails", "head")

    def __init__(self, items: Sequence[Element], prefix: bytes = b"") -> None:
        self.head, _ = _incomplete_parts(tuple(items), (), prefix)
        self._tails: dict[int, bytes] = {}

    def key(self, user: int, n: int) -> tuple[bytes, int]:
        """The key for ``user`` and ``n``, and the placeholder's offset."""
        tail = self._tails.get(n)
        if tail is None:
            tail = self._tails[n] = pack((n,))
        return self.head + INCOMPLETE_TR + user.to_bytes(2, "big") + tail, len(self.head)


def pack_uint(value: int) -> bytes:
    """The tuple layer's encoding of a non-negative int, without the tuple machinery
    (tests check it against ``fdb.tuple.pack``)."""
    if value == 0:
        return b"\x14"
    if value < 0xFFFF_FFFF_FFFF_FFFF:  # the tuple layer writes 2**64 - 1 up as a big int
        size = (value.bit_length() + 7) // 8
        return bytes((0x14 + size,)) + value.to_bytes(size, "big")
    packed: bytes = _tuple.pack((value,))
    return packed


def pack_bytes_after(prefix: bytes, value: bytes) -> bytes:
    """``pack((value,), prefix)`` for a byte string, without the tuple machinery."""
    return prefix + _pack_bytes(value)


def _incomplete_parts(
    items: tuple[Element, ...], suffix: tuple[Element, ...], prefix: bytes
) -> tuple[bytes, bytes]:
    if all(type(item) in _CACHED_TYPES for item in (*items, *suffix)):
        return _incomplete_parts_cached(items, suffix, prefix)
    return pack(items, prefix) + VS_CODE, pack(suffix)


@functools.lru_cache(maxsize=1024)
def _incomplete_parts_cached(
    items: tuple[Element, ...], suffix: tuple[Element, ...], prefix: bytes
) -> tuple[bytes, bytes]:
    return pack(items, prefix) + VS_CODE, pack(suffix)


def clear_caches() -> None:
    """Forget the packed hot keys (they are packed again on use): after many documents
    were unloaded, their cached keys only hold memory."""
    _pack_cached.cache_clear()
    _incomplete_parts_cached.cache_clear()


def unpack(key: bytes, prefix: bytes = b"") -> tuple[Any, ...]:
    """Unpack a key written by :func:`pack`; versionstamps come back as :class:`Versionstamp`."""
    if not key.startswith(prefix):
        raise ValueError("key is outside the given prefix")
    items = _tuple.unpack(key[len(prefix) :])
    return tuple(
        Versionstamp(item.tr_version + item.user_version.to_bytes(2, "big"))
        if isinstance(item, _tuple.Versionstamp)
        else item
        for item in items
    )


def unpack_stamped(key: bytes, prefix: bytes) -> tuple[Versionstamp, int]:
    """``(vs, part)`` from a ``prefix + (vs, part)`` key (log records, snapshot chunks).

    Replay reads a thousand of these per call, so the usual shapes (part < 256) are
    decoded here directly; anything else goes through :func:`unpack`.
    """
    n = len(prefix)
    if key.startswith(prefix) and key[n : n + 1] == VS_CODE:
        tail = key[n + 13 :]
        if tail == b"\x14":  # the tuple layer's integer 0
            return Versionstamp(key[n + 1 : n + 13]), 0
        if len(tail) == 2 and tail[0] == 0x15:  # a one-byte positive integer
            return Versionstamp(key[n + 1 : n + 13]), tail[1]
    vs, part = unpack(key, prefix)
    return vs, part


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """The range of keys strictly inside a tuple prefix (FDB's ``range()`` convention)."""
    return prefix + b"\x00", prefix + b"\xff"


def key_after(key: bytes) -> bytes:
    """The first key after ``key`` in memcmp order."""
    return key + b"\x00"


def strinc(prefix: bytes) -> bytes:
    """The first key that does not start with ``prefix`` (FDB's ``strinc``)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("prefix of only 0xff bytes has no successor")
    return stripped[:-1] + bytes([stripped[-1] + 1])


# --- names and paths -----------------------------------------------------------------


def check_name(kind: str, name: str) -> str:
    """Validate a tenant or project name: 1-64 of ``[A-Za-z0-9._-]``, not ``.``/``..``."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LEN:
        raise BadPath(f"{kind} name must be 1 to {MAX_NAME_LEN} characters")
    if not set(name) <= _NAME_CHARS:
        raise BadPath(f"{kind} name {name!r} may only use letters, digits, '.', '_' and '-'")
    if name in {".", ".."}:  # a path segment of its own: no name
        raise BadPath(f"{kind} name {name!r} may not be '.' or '..'")
    return name


def check_url_utf8(raw_path: str) -> None:
    """Refuse (:class:`BadPath`) a URL path whose percent-escapes do not decode to UTF-8.

    The router (yarl) leaves an escape it cannot decode as it stands: ``/docs/%ff`` and
    ``/docs/%25ff`` both matched the name ``%ff``, and ``%c0%af`` (an overlong ``/``)
    was stored as those six characters. ``raw_path`` is the path as sent, not decoded.
    """
    raw = raw_path.encode("utf-8", "surrogateescape")
    try:
        urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath(
            "the URL path is not valid UTF-8: its %-escapes must encode UTF-8 text"
        ) from None


def normalise_path(path: str) -> str:
    """A document path as stored: a relative POSIX path in Unicode NFC.

    Rejected with :class:`BadPath` (before any key is built): empty paths, absolute
    paths, backslashes, NUL and other control characters, empty segments (``a//b``,
    trailing ``/``), ``.`` and ``..`` segments, over-long paths or segments.
    """
    if not isinstance(path, str) or not path:
        raise BadPath("document path is empty")
    path = unicodedata.normalize("NFC", path)
    if path.startswith("/"):
        raise BadPath(f"document path must be relative: {path!r}")
    if "\\" in path:
        raise BadPath(f"document path must use '/' separators: {path!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadPath(f"document path contains a control character: {path!r}")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadPath(f"document path is longer than {MAX_PATH_BYTES} bytes")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPath(f"document path is not valid Unicode: {path!r}") from None
    for segment in path.split("/"):
        if segment in {"", ".", ".."}:
            raise BadPath(f"document path has an empty, '.' or '..' segment: {path!r}")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise BadPath(f"document path segment longer than {MAX_SEGMENT_BYTES} bytes")
    return path


# Folders a folder sync never syncs (``client.ignore``) and a restore never writes: git's
# (a document ``.git/config`` with ``core.fsmonitor`` set would run a command in the
# checkout of whoever restores into one) and weft's own state. Any segment counts, as
# in ``client.ignore``; compared as a case-insensitive file system compares names.
NEVER_SYNCED = (".git", ".weft")
MANIFEST_NAME = ".weft-manifest.json"
"""The last member of an export, and the file a restore writes beside the project's."""

# Characters that make a name look like another: C1 controls, the bidi marks and
# embeddings/overrides/isolates (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069)
# and U+FEFF (a BOM, zero width). U+2028/U+2029 stay allowed (weft's logs escape them).
_SPOOFING = re.compile("[\x80-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# Code points HFS+ ignores in names (so ``.g\u200cit`` is ``.git`` there), as git's
# ``is_hfs_dotgit`` lists them.
_HFS_IGNORED = re.compile("[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]")


def _as_filesystems_see(segment: str) -> str:
    """A path segment as case-insensitive file systems compare it: case folded, the
    code points HFS+ ignores dropped, trailing dots and spaces dropped (Windows)."""
    return _HFS_IGNORED.sub("", segment).rstrip(". ").casefold()


def never_synced(path: str) -> str | None:
    """The segment of ``path`` that names ``.git`` or ``.weft`` on some file system, or
    None: ``.GIT``, ``.git.``, ``git~1`` and ``weft~1`` (Windows' short names), and
    ``.git::$DATA`` (NTFS reads what follows a colon as a stream of ``.git``)."""
    for segment in path.split("/"):
        seen = _as_filesystems_see(segment.split(":", 1)[0])
        if seen in NEVER_SYNCED or seen in ("git~1", "weft~1"):
            return segment
    return None


def restore_refusal(path: str) -> str | None:
    """Why a restore must not write the document ``path`` into a folder, or None: one
    under ``.git/`` or ``.weft/`` (see :data:`NEVER_SYNCED`), or the manifest's name."""
    segment = never_synced(path)
    if segment is not None:
        return f"{segment!r}: .git/ and .weft/ are never synced or restored"
    if _as_filesystems_see(path) == MANIFEST_NAME:
        return f"{MANIFEST_NAME} is the name of the restore's manifest"
    return None


def check_new_path(path: str) -> str:
    """:func:`normalise_path`, stricter: the path a NEW document may have.

    Also refused: a segment naming ``.git`` or ``.weft`` (in any case: see
    :func:`never_synced`), ``.weft-manifest.json`` at the top (the export's manifest),
    C1 controls, bidi controls and U+FEFF (a name that looks like
    another), and segments of only whitespace. Documents that already have such a path
    stay readable, writable and deletable: keys are built by :func:`normalise_path`,
    which stays as lenient as it was when they were stored. The message says why
    first (a WebSocket close reason holds 123 bytes), then the path.
    """
    path = normalise_path(path)
    why = restore_refusal(path)
    if why is not None:
        raise BadPath(f"not allowed for a new document: {why} (path {path!r})")
    found = _SPOOFING.search(path)
    if found is not None:
        raise BadPath(
            f"not allowed for a new document: U+{ord(found.group()):04X}, a control or bidi "
            f"character that can disguise a name (path {path!r})"
        )
    if any(segment.isspace() for segment in path.split("/")):
        raise BadPath(
            f"not allowed for a new document: a segment of only whitespace (path {path!r})"
        )
    return path


# --- the layout ----------------------------------------------------------------------

FORMAT = pack(("format",))
DIR_SEQ = pack(("dirseq",))
INSTANCES_BUMP = pack(("instancesv",))
"""Changed whenever a server instance registers or leaves (the others watch it)."""


def instance(name: str) -> bytes:
    """``(instances, name)``: a running server instance's heartbeat (ephemeral)."""
    return pack(("instances", name))


def instances_range() -> tuple[bytes, bytes]:
    return prefix_range(pack(("instances",)))


def directory(tenant: str) -> bytes:
    return pack(("dir", check_name("tenant", tenant)))


def directory_range() -> tuple[bytes, bytes]:
    return prefix_range(pack(("dir",)))


def tenant_prefix(number: int) -> bytes:
    return pack(("t", number))


def unborn_prefix(tenant: str) -> bytes:
    """``(unborn, tenant)``: the prefix a reader of a tenant that is not in the directory
    reads under (``History.unborn_doc``), and finds empty. Nothing is ever written
    under it (a read-only token creates no tenant); one of its own per tenant name, so
    two such tenants' readers never share a room."""
    return pack(("unborn", check_name("tenant", tenant)))


def doc_meta(tenant: bytes, project: str, path: str) -> bytes:
    return pack(("doc", check_name("project", project), normalise_path(path)), tenant)


def project_docs(tenant: bytes, project: str) -> tuple[bytes, bytes]:
    return prefix_range(pack(("doc", check_name("project", project)), tenant))


def project_changed(tenant: bytes, project: str) -> bytes:
    """``T + (changed, project)``: the versionstamp of the last append to any document of
    the project and 8 random bytes, written by format 1.5 only (from 1.6 the project's
    change index holds its marker): read for a project not appended to since."""
    return pack(("changed", check_name("project", project)), tenant)


def project_changes(tenant: bytes, project: str) -> bytes:
    """``T + (changes, project)``: the prefix of the project's change index (from 1.6).
    Each append transaction adds ``+ (vs,)`` per document it appended to (``vs``: that
    document's last update in it) -> the 8 random bytes of the change marker it wrote,
    then the document's path (see ``crdt.changes``)."""
    return pack(("changes", check_name("project", project)), tenant)


def changes_of_commit(changes: bytes, tr_version: bytes) -> tuple[bytes, bytes]:
    """The entries of the change index ``changes`` (:func:`project_changes`) that the
    transaction ``tr_version`` (10 bytes) wrote."""
    head = changes + VS_CODE + tr_version
    return head, head + b"\xff\xff\x00"


def changes_after(changes: bytes, tr_version: bytes) -> tuple[bytes, bytes]:
    """The entries of the change index ``changes`` written after the transaction
    ``tr_version`` (10 bytes)."""
    return changes + VS_CODE + tr_version + b"\xff\xff\x00", changes + b"\xff"


def doc_space(tenant: bytes, project: str, doc_id: int) -> bytes:
    return pack(("d", check_name("project", project), doc_id), tenant)


def awareness_entry(space: bytes, instance: str) -> bytes:
    """``D + (aw, instance)``: the header of one instance's awareness entry for a doc."""
    return pack(("aw", instance), space)


def awareness_client(space: bytes, instance: str, client: int) -> bytes:
    """``D + (aw, instance, client)``: one client's state in that entry."""
    return pack(("aw", instance, client), space)


def awareness_range(space: bytes) -> tuple[bytes, bytes]:
    """Every instance's awareness entry of the doc at ``space`` (headers and clients)."""
    return prefix_range(pack(("aw",), space))


def awareness_bump(space: bytes) -> bytes:
    """``D + (awv,)``: changed by every awareness publish; other instances watch it."""
    return pack(("awv",), space)


def unpack_awareness(key: bytes, space: bytes) -> tuple[str, int | None]:
    """``(instance, client)`` of a key in :func:`awareness_range` (client ``None``: the
    entry's header); ValueError for anything else."""
    items = unpack(key, space)
    if len(items) == 2 and items[0] == "aw" and isinstance(items[1], str):
        return items[1], None
    ok = len(items) == 3 and items[0] == "aw" and isinstance(items[1], str)
    if ok and type(items[2]) is int and items[2] >= 0:
        return items[1], items[2]
    raise ValueError(f"not an awareness key: {items!r}")


def conflict(tenant: bytes, project: str, vs: Versionstamp) -> bytes:
    return pack(("conflict", check_name("project", project), vs), tenant)


def conflicts(tenant: bytes, project: str) -> tuple[bytes, bytes]:
    return prefix_range(pack(("conflict", check_name("project", project)), tenant))


def conflicts_bump(tenant: bytes, project: str) -> bytes:
    """``T + (conflictv, project)``: counts the writes of the project's conflict heads
    (a record made, a record resolved); see ``crdt.conflict_store``."""
    return pack(("conflictv", check_name("project", project)), tenant)


def conflict_body(tenant: bytes, project: str, vs: Versionstamp, tag: bytes) -> bytes:
    """``T + (conflictbody, project, vs, tag)``: the prefix of one record body's parts
    (each at ``+ (part,)``, see :func:`conflict_part`)."""
    return pack(("conflictbody", check_name("project", project), vs, tag), tenant)


def conflict_part(body: bytes, part: int) -> bytes:
    """The key of part ``part`` of the record body at ``body`` (:func:`conflict_body`)."""
    return body + pack_uint(part)


def conflict_bodies(tenant: bytes, project: str, vs: Versionstamp) -> tuple[bytes, bytes]:
    """Every body ever written for the record ``vs`` (one per tag)."""
    return prefix_range(pack(("conflictbody", check_name("project", project), vs), tenant))
