"""Key layout and path rules: ``crdt.keys`` is the one module that builds keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fdb.tuple
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crdt import keys
from crdt.errors import BadPath, ProtocolError
from crdt.history import History
from crdt.kv import Engine, open_engine
from crdt.versionstamp import INCOMPLETE_TR, Versionstamp

# --- document paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("README.md", "README.md"),
        ("src/app.js", "src/app.js"),
        ("docs/a..b/notes with spaces.txt", "docs/a..b/notes with spaces.txt"),
        (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
        ("cafe\u0301.md", "caf\u00e9.md"),  # NFC: one spelling, one key
        ("x" * 255, "x" * 255),
        ("/".join(["d" * 200] * 5)[:1024], "/".join(["d" * 200] * 5)[:1024]),
    ],
)
def test_good_paths_are_normalised(given: str, stored: str) -> None:
    assert keys.normalise_path(given) == stored


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("//server/share", "relative"),
        ("..", "'..' segment"),
        ("../secrets", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/./b", "'.' or '..' segment"),
        (".", "'.' or '..' segment"),
        ("a//b", "empty, '.' or '..' segment"),
        ("a/", "empty, '.' or '..' segment"),
        ("a\\b", "'/' separators"),
        ("..\\windows", "'/' separators"),
        ("a\x00b", "control character"),
        ("notes\n.md", "control character"),
        ("del\x7f", "control character"),
        ("a/" + "b" * 1023, "longer than 1024 bytes"),
        ("\u00e9" * 513, "longer than 1024 bytes"),  # 1026 bytes in UTF-8
        ("s" * 256, "segment longer than 255 bytes"),
        ("bad\ud800surrogate", "not valid Unicode"),
    ],
)
def test_bad_paths_raise_bad_path(path: str, reason: str) -> None:
    with pytest.raises(BadPath, match=reason.replace(".", r"\.")):
        keys.normalise_path(path)


def test_bad_path_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        keys.normalise_path("../x")


# Paths a new document may not have, and why (``check_new_path``): each is a path
# ``normalise_path`` takes, so documents stored with one before stay readable.
REFUSED_FOR_NEW = [
    (".git/config", "never synced"),
    (".GIT/config", "never synced"),
    (".Git", "never synced"),
    ("src/vendor/.git/hooks/post-checkout", "never synced"),
    ("sub/.git", "never synced"),  # a .git file points git at a repository
    (".git./config", "never synced"),  # Windows drops trailing dots and spaces
    (".git /config", "never synced"),
    (".g\u200cit/config", "never synced"),  # HFS+ ignores U+200C
    ("git~1/config", "never synced"),  # Windows' short name of .git
    ("WEFT~1/state.db", "never synced"),  # and of .weft
    (".git::$INDEX_ALLOCATION/config", "never synced"),  # NTFS: a stream of .git
    (".weft:x/state.db", "never synced"),
    (".weft/state.db", "never synced"),
    ("a/.WEFT/x", "never synced"),
    (".weft-manifest.json", "restore's manifest"),
    (".Weft-Manifest.JSON", "restore's manifest"),
    ("a\x80b", "U\\+0080"),
    ("a\x9fb", "U\\+009F"),
    ("report\u202efdp.exe", "U\\+202E"),
    ("x\u202a.md", "U\\+202A"),
    ("x\u2066.md", "U\\+2066"),
    ("x\u2069.md", "U\\+2069"),
    ("x\u200e.md", "U\\+200E"),
    ("x\u200f.md", "U\\+200F"),
    ("x\u061c.md", "U\\+061C"),
    ("\ufeffREADME.md", "U\\+FEFF"),
    (" ", "only whitespace"),
    ("notes/ /a.md", "only whitespace"),
    ("a/\u3000\u00a0", "only whitespace"),
]


@pytest.mark.parametrize(("path", "reason"), REFUSED_FOR_NEW)
def test_new_documents_may_not_have_disguised_or_never_synced_paths(path: str, reason: str) -> None:
    with pytest.raises(BadPath, match=f"not allowed for a new document: .*{reason}"):
        keys.check_new_path(path)
    # ...while the key of one stored before the rule is still built (read, write, delete)
    assert keys.normalise_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "README.md",
        ".gitignore",
        ".github/workflows/ci.yml",
        ".gitmodules",
        "src/.git-notes",
        ".weftignore",
        "sub/.weft-manifest.json",  # only the top-level name is the manifest's
        "notes with spaces/a b.md",
        "trailing space .md",
        "\u05e9\u05dc\u05d5\u05dd.md",  # right-to-left text itself is fine
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467.md",  # ZWJ joins emoji
        "cafe\u0301.md",
        "menu\u2028.txt",  # a line break to some log viewers, escaped in weft's logs
        "notes:2026.md",  # a colon (an NTFS stream only after .git/.weft matters)
        ".github:x",
    ],
)
def test_ordinary_paths_are_allowed_for_new_documents(path: str) -> None:
    assert keys.check_new_path(path) == keys.normalise_path(path)


def test_restore_refuses_only_never_synced_and_manifest_paths() -> None:
    assert keys.restore_refusal(".git/config") is not None
    assert keys.restore_refusal("a/.GIT/config") is not None
    assert keys.restore_refusal(".weft-manifest.json") is not None
    assert keys.restore_refusal("a\u202eb.md") is None  # disguised, but harmless to write
    assert keys.restore_refusal("sub/.weft-manifest.json") is None


@pytest.mark.parametrize("name", ["acme", "ACME-2", "site.v2", "a_b", "x" * 64])
def test_good_names(name: str) -> None:
    assert keys.check_name("tenant", name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a/b", "..", ".", "caf\u00e9", "a b", "a\x00"])
def test_bad_names(name: str) -> None:
    with pytest.raises(BadPath, match="project"):
        keys.check_name("project", name)


# --- nothing is written for a bad path -----------------------------------------------


async def _dump(kv: Engine) -> list[tuple[bytes, bytes]]:
    return await kv.read(lambda tr: tr.get_range(b"", b"\xff"))


@pytest.mark.parametrize(
    ("tenant", "project", "path"),
    [
        ("acme", "site", "../escape.md"),
        ("acme", "site", "/abs.md"),
        ("acme", "site", "nul\x00.md"),
        ("acme", "site", "a//b.md"),
        ("acme", "site", "x" * 1025),
        ("acme", "../site", "ok.md"),
        ("../acme", "site", "ok.md"),
        ("new-tenant", "site", "../escape.md"),  # not even the tenant gets created
    ],
)
async def test_a_bad_path_writes_nothing(
    tmp_path: Path, tenant: str, project: str, path: str
) -> None:
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        history = History(kv)
        await history.init()
        await history.create_tenant("acme")
        before = await _dump(kv)
        with pytest.raises(BadPath):
            await history.doc(tenant, project, path, create=True)
        assert await _dump(kv) == before
        assert await history.tenants() == ["acme"]


# --- packing -------------------------------------------------------------------------


def test_pack_round_trips_and_matches_the_tuple_layer() -> None:
    vs = Versionstamp(bytes(range(12)))
    items = ("u", vs, 3, b"\x00\xff", "é", None, -5)
    key = keys.pack(items, b"P")
    assert key.startswith(b"P")
    assert keys.unpack(key, b"P") == items
    native = fdb.tuple.unpack(key[1:])
    assert native[1].tr_version == vs.tr_version and native[1].user_version == vs.user
    assert keys.pack(("a", 1)) == fdb.tuple.pack(("a", 1))
    with pytest.raises(ValueError):
        keys.unpack(key, b"Q")


def test_versionstamp_keys_sort_in_versionstamp_order() -> None:
    stamps = sorted(Versionstamp(bytes([a, b]) * 6) for a in (0, 1, 255) for b in (0, 7, 200))
    packed = [keys.pack(("u", vs, 0)) for vs in stamps]
    assert packed == sorted(packed)


def test_pack_incomplete_marks_the_placeholder() -> None:
    key, offset = keys.pack_incomplete(("u",), 7, (2,), b"T")
    assert key[offset : offset + 10] == INCOMPLETE_TR
    tr_version = b"\x00\x00\x00\x00\x00\x00\x01\x02\x00\x03"
    filled = key[:offset] + tr_version + key[offset + 10 :]
    assert filled == keys.pack(("u", Versionstamp.of(tr_version, 7), 2), b"T")


def test_ranges_and_successors() -> None:
    prefix = keys.pack(("d", "site"))
    begin, end = keys.prefix_range(prefix)
    inside = keys.pack(("d", "site", 1))
    outside = keys.pack(("d", "sitf"))
    assert begin <= inside < end and not begin <= outside < end
    assert keys.strinc(b"ab\xff\xff") == b"ac"
    assert keys.key_after(b"k") == b"k\x00"
    with pytest.raises(ValueError):
        keys.strinc(b"\xff")


def test_tenants_have_separate_prefixes() -> None:
    one, two = keys.tenant_prefix(1), keys.tenant_prefix(2)
    assert not one.startswith(two) and not two.startswith(one)
    assert not keys.doc_space(one, "p", 5).startswith(two)
    assert keys.tenant_prefix(1) == keys.pack(("t", 1))


@pytest.mark.parametrize("part", [0, 1, 7, 255, 256, 70_000])
def test_unpack_stamped_matches_unpack(part: int) -> None:
    vs = Versionstamp(bytes(range(20, 32)))
    prefix = keys.pack(("d", "p", 3, "u"))
    key = keys.pack((vs, part), prefix)
    assert keys.unpack_stamped(key, prefix) == keys.unpack(key, prefix) == (vs, part)


@pytest.mark.parametrize(
    "items",
    [
        ("h", b"\x00\xff\x00digest\x00"),
        ("h", b""),
        ("a", 1, b"\x00"),
        (b"only bytes",),
        ("n",),
        (),
        (True,),
        (1.5,),
        (-0.0,),
        ("a", None),
        ("a", ("nested", b"\x00")),
    ],
)
def test_pack_fast_paths_match_the_tuple_layer(items: tuple[Any, ...]) -> None:
    for _ in range(2):  # second time from the cache
        assert keys.pack(items, b"T") == b"T" + fdb.tuple.pack(items)


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 100_000),
    st.binary(max_size=40),
    st.text(max_size=8),
)
def test_the_fast_key_builders_pack_what_pack_packs(
    user: int, part: int, digest: bytes, name: str
) -> None:
    prefix = keys.pack(("t", 3, "d", name, 7))
    assert keys.IncompleteKeys(("u",), prefix).key(user, part) == keys.pack_incomplete(
        ("u",), user, (part,), prefix
    )
    assert keys.pack_bytes_after(keys.pack(("h",), prefix), digest) == keys.pack(
        ("h", digest), prefix
    )


@given(st.integers(0, 1 << 80), st.integers(0, 1 << 64))
@example(client=0, clock=(1 << 64) - 1)  # the tuple layer's big-int boundary
def test_pack_uint_is_the_tuple_layers_int(client: int, clock: int) -> None:
    head = keys.pack(("i",), b"D")
    assert head + keys.pack_uint(client) + keys.pack_uint(clock) == keys.pack(
        ("i", client, clock), b"D"
    )


@pytest.mark.parametrize(
    "text", ["", "0" * 23, "0" * 25, "0" * 24 + "\n", "g" * 24, " " + "0" * 23]
)
def test_a_versionstamp_is_exactly_24_hex_digits(text: str) -> None:
    """``0…0\\n`` passed (``$`` matches before a final newline): a conflict id typed
    with one went into a URL as it was."""
    with pytest.raises(ProtocolError):
        Versionstamp.from_hex(text)
    assert Versionstamp.from_hex("00" * 11 + "Ab").raw == bytes(11) + b"\xab"
